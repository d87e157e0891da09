//! `/metrics`: the gateway's own metrics plus the witness's and the signer's
//! (their `Metrics` RPCs, over the same mutual-TLS channels as every other
//! call), merged into one exposition with a `service` label, so one scrape
//! target covers the stack.
//!
//! Served on the API listener, or on a separate listener (`[metrics]`) that can
//! require client certificates, so a Prometheus or OpenTelemetry collector
//! scrapes over mutual TLS. A service that does not answer within
//! [`UPSTREAM_DEADLINE`], or answers with text that does not parse, does not
//! fail the scrape: its `rekor_witness_scrape_up` is 0 and its metrics are left
//! out. The gateway's own metrics can also be pushed to an OpenTelemetry
//! collector over OTLP/HTTP (`otlp_endpoint`).
//!
//! Labels are bounded: routes are the router's path templates (never the raw
//! path, so no origin hash or probe path becomes a series), statuses are
//! classes, errors are `kind()` labels.

pub mod exposition;
mod listener;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, MeterProvider as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use serde::Deserialize;
use tonic::transport::Channel;
use witness_proto::signer::signer_client::SignerClient;
use witness_proto::witness::witness_client::WitnessClient;

use crate::GatewayError;
use exposition::{Family, Kind, Sample};

/// The `[metrics]` section: where `/metrics` is served and whether the
/// gateway's own metrics are also pushed to an OpenTelemetry collector.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` on this separate address (for example
    /// `0.0.0.0:9464`) instead of on the API listener. Without `cert` and
    /// `key` it serves plain HTTP and must then be a loopback address.
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
    /// PEM certificate chain (leaf first) to serve HTTPS with.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// PEM CA certificate(s): when set, a client certificate chaining to one
    /// of them is required (mutual TLS); a client without one is refused at
    /// the TLS handshake. Needs `cert` and `key`.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Also push the gateway's own metrics to an OpenTelemetry collector over
    /// OTLP/HTTP (protobuf), to this URL (for example
    /// `https://collector:4318/v1/metrics`). The witness's and the signer's
    /// metrics stay on `/metrics`.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// How often to push to `otlp_endpoint` (default `60s`).
    #[serde(
        default = "default_otlp_interval",
        deserialize_with = "crate::config::duration"
    )]
    pub otlp_interval: Duration,
}

impl MetricsConfig {
    /// No separate listener, no OTLP export.
    pub fn new() -> MetricsConfig {
        MetricsConfig {
            listen: None,
            cert: None,
            key: None,
            client_ca: None,
            otlp_endpoint: None,
            otlp_interval: default_otlp_interval(),
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> MetricsConfig {
        MetricsConfig::new()
    }
}

fn default_otlp_interval() -> Duration {
    Duration::from_secs(60)
}

/// How long one OTLP push may take before it is abandoned (the next interval
/// sends the cumulative values again).
const OTLP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a scrape waits for each service's metrics. Prometheus's default
/// scrape timeout is 10 s; both services answer from memory in milliseconds,
/// so 2 s separates "slow" from "stuck" and leaves the scrape ample time.
pub const UPSTREAM_DEADLINE: Duration = Duration::from_secs(2);

/// The merged family reporting whether each service's metrics were fetched.
pub const SCRAPE_UP: &str = "rekor_witness_scrape_up";

/// The content type of the text format 0.0.4.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Latency buckets (seconds) of the request histogram: from a cached
/// monitoring read to a cosignature through the signer, to the upstream
/// deadline.
const LATENCY_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The route label of a request that matched no route.
const UNMATCHED_ROUTE: &str = "unmatched";

/// Marks a response caused by a failed call to the witness, so the request
/// middleware counts it as an upstream error. Carries the error's `kind()`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpstreamFailure(pub &'static str);

/// The gateway's own instruments, kept with OpenTelemetry and exported in the
/// Prometheus text format.
pub(crate) struct GatewayMetrics {
    registry: prometheus::Registry,
    // Kept alive: dropping the provider stops collection.
    _provider: SdkMeterProvider,
    requests: Counter<u64>,
    request_seconds: Histogram<f64>,
    upstream_errors: Counter<u64>,
    tls: witness_core::tls_reload::TlsReloadMetrics,
}

impl GatewayMetrics {
    fn new(
        otlp: Option<(&str, Duration)>,
        tls: witness_core::tls_reload::TlsReloadMetrics,
    ) -> Result<GatewayMetrics, GatewayError> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .map_err(|e| GatewayError::Config {
                detail: format!("metrics: {e}"),
            })?;
        let mut provider = SdkMeterProvider::builder().with_reader(exporter);
        if let Some((endpoint, interval)) = otlp {
            provider = provider.with_reader(otlp_reader(endpoint, interval)?);
        }
        let provider = provider.build();
        let meter = provider.meter("gateway");
        tls.register(&meter);
        Ok(GatewayMetrics {
            tls,
            registry,
            requests: meter
                .u64_counter("gateway_http_requests")
                .with_description("HTTP requests by route template and status class")
                .build(),
            request_seconds: meter
                .f64_histogram("gateway_http_request_duration")
                .with_unit("s")
                .with_description("HTTP request latency by route template")
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
            upstream_errors: meter
                .u64_counter("gateway_upstream_errors")
                .with_description("Failed calls to the witness or the signer by upstream and kind")
                .build(),
            _provider: provider,
        })
    }

    fn request(&self, route: &str, status: StatusCode, elapsed: Duration) {
        let class = match status.as_u16() {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests.add(
            1,
            &[
                KeyValue::new("route", route.to_owned()),
                KeyValue::new("status", class),
            ],
        );
        self.request_seconds.record(
            elapsed.as_secs_f64(),
            &[KeyValue::new("route", route.to_owned())],
        );
    }

    fn upstream_error(&self, service: &'static str, kind: &'static str) {
        self.upstream_errors.add(
            1,
            &[
                // Not `service`: that label names the metric's source in
                // the merged exposition.
                KeyValue::new("upstream", service),
                KeyValue::new("kind", kind),
            ],
        );
    }

    fn encode(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

/// What `/metrics` needs: the gateway's instruments and the clients of the
/// services it aggregates.
#[derive(Clone)]
pub(crate) struct MetricsEndpoint {
    metrics: Arc<GatewayMetrics>,
    witness: WitnessClient<Channel>,
    signer: Option<SignerClient<Channel>>,
}

impl MetricsEndpoint {
    /// Fresh instruments (pushed over OTLP if configured), scraping the
    /// gateway's witness and signer.
    pub(crate) fn new(
        gateway: &crate::Gateway,
        config: Option<&MetricsConfig>,
        tls: witness_core::tls_reload::TlsReloadMetrics,
    ) -> Result<MetricsEndpoint, GatewayError> {
        let otlp = config.and_then(|c| {
            c.otlp_endpoint
                .as_deref()
                .map(|endpoint| (endpoint, c.otlp_interval))
        });
        Ok(MetricsEndpoint {
            metrics: Arc::new(GatewayMetrics::new(otlp, tls)?),
            witness: gateway.witness.clone(),
            signer: gateway.signer.clone(),
        })
    }

    /// The TLS reload counts and certificate expiries of the gateway's
    /// listeners and clients.
    pub(crate) fn tls(&self) -> witness_core::tls_reload::TlsReloadMetrics {
        self.metrics.tls.clone()
    }

    /// Records every request of `app` (the outermost layer, so refusals by
    /// the protection layers are counted too), and serves `/metrics` on it
    /// unless `config` names a separate listener.
    pub(crate) fn instrument(&self, app: Router, config: Option<&MetricsConfig>) -> Router {
        let app = if config.and_then(|c| c.listen).is_none() {
            app.merge(self.routes())
        } else {
            app
        };
        app.layer(axum::middleware::from_fn_with_state(
            self.metrics.clone(),
            record,
        ))
    }

    fn routes(&self) -> Router {
        Router::new()
            .route("/metrics", get(scrape))
            .with_state(self.clone())
    }
}

/// Counts a request by its route template and status class, and its upstream
/// failure if it had one.
async fn record(
    State(metrics): State<Arc<GatewayMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    // Set by the router before route-level layers run; absent for the
    // fallback, whose raw path must not become a label.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.request(
        route.as_deref().unwrap_or(UNMATCHED_ROUTE),
        response.status(),
        started.elapsed(),
    );
    if let Some(UpstreamFailure(kind)) = response.extensions().get::<UpstreamFailure>() {
        metrics.upstream_error("witness", kind);
    }
    response
}

/// Why a service's metrics are missing from a scrape.
fn call_failure(status: &tonic::Status) -> &'static str {
    match status.code() {
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => "timeout",
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => "refused",
        _ => "bad_upstream",
    }
}

async fn fetch_witness(mut client: WitnessClient<Channel>) -> Result<String, &'static str> {
    let call = client.metrics(witness_proto::witness::MetricsRequest {});
    match tokio::time::timeout(UPSTREAM_DEADLINE, call).await {
        Ok(Ok(response)) => Ok(response.into_inner().prometheus_text),
        Ok(Err(status)) => Err(call_failure(&status)),
        Err(_) => Err("timeout"),
    }
}

async fn fetch_signer(mut client: SignerClient<Channel>) -> Result<String, &'static str> {
    let call = client.metrics(witness_proto::signer::MetricsRequest {});
    match tokio::time::timeout(UPSTREAM_DEADLINE, call).await {
        Ok(Ok(response)) => Ok(response.into_inner().prometheus_text),
        Ok(Err(status)) => Err(call_failure(&status)),
        Err(_) => Err("timeout"),
    }
}

/// `GET /metrics`: fetches both services concurrently, then merges.
async fn scrape(State(endpoint): State<MetricsEndpoint>) -> Response {
    let signer = endpoint.signer.clone().map(fetch_signer);
    let (witness, signer) = tokio::join!(fetch_witness(endpoint.witness.clone()), async {
        match signer {
            Some(fetch) => Some(fetch.await),
            None => None,
        }
    });
    let mut upstreams = vec![("witness", witness)];
    if let Some(signer) = signer {
        upstreams.push(("signer", signer));
    }

    let mut sources = Vec::new();
    let mut up = Vec::new();
    for (service, fetched) in upstreams {
        let parsed = fetched.and_then(|text| {
            exposition::parse(&text).map_err(|error| {
                tracing::warn!(service, %error, "malformed metrics from upstream");
                "malformed_metrics"
            })
        });
        match parsed {
            Ok(families) => {
                sources.push((service, families));
                up.push((service, 1.0));
            }
            Err(kind) => {
                endpoint.metrics.upstream_error(service, kind);
                up.push((service, 0.0));
            }
        }
    }
    // Encoded after the failures above are counted, so this scrape shows them.
    match exposition::parse(&endpoint.metrics.encode()) {
        Ok(own) => sources.insert(0, ("gateway", own)),
        Err(error) => tracing::error!(%error, "the gateway's own metrics do not parse"),
    }
    // The scrape_up family is the gateway's to write: a service's own family
    // of that name would make two blocks of one family.
    for (_, families) in &mut sources {
        families.retain(|family| family.name != SCRAPE_UP);
    }
    let (mut text, conflicts) = exposition::merge(sources);
    for conflict in conflicts {
        tracing::warn!(
            service = conflict.service,
            family = conflict.family,
            "metric family dropped: an earlier service declares it with another type"
        );
    }
    text.push_str(&exposition::serialize(&[Family {
        name: SCRAPE_UP.into(),
        help: Some("Whether the gateway fetched and parsed the service's metrics in this scrape (1) or not (0)".into()),
        kind: Kind::Gauge,
        samples: up
            .into_iter()
            .map(|(service, value)| Sample {
                name: SCRAPE_UP.into(),
                labels: vec![(exposition::SERVICE_LABEL.into(), service.into())],
                value,
                timestamp_ms: None,
            })
            .collect(),
    }]));
    ([(CONTENT_TYPE, TEXT_FORMAT)], text).into_response()
}

/// A future that completes when the gateway should stop.
pub(crate) type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Starts the separate metrics listener when `config` names one, serving
/// until `shutdown`; returns the shutdown signal for the API listener (the
/// same signal, shared).
pub(crate) async fn serve_separately(
    config: Option<&MetricsConfig>,
    endpoint: &MetricsEndpoint,
    tls_reload_interval: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Shutdown, GatewayError> {
    let Some((config, listen)) = config.and_then(|c| Some((c, c.listen?))) else {
        return Ok(Box::pin(shutdown));
    };
    let app = endpoint
        .routes()
        .layer(axum::middleware::from_fn_with_state(
            endpoint.metrics.clone(),
            record,
        ));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = listener::bind(listen, config, endpoint.tls(), tls_reload_interval).await?;
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let signal = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let metrics_stopped = signal(stopped.clone());
    tokio::spawn(async move {
        if let Err(error) = server.serve(app, metrics_stopped).await {
            tracing::error!(%error, "the metrics listener failed");
        }
    });
    Ok(Box::pin(signal(stopped)))
}

/// A periodic OTLP/HTTP push of the gateway's instruments. The reader exports
/// from its own thread, with a blocking HTTP client built on another thread,
/// so no export ever runs on (or blocks) the async runtime.
fn otlp_reader(
    endpoint: &str,
    interval: Duration,
) -> Result<
    opentelemetry_sdk::metrics::PeriodicReader<opentelemetry_otlp::MetricExporter>,
    GatewayError,
> {
    use opentelemetry_otlp::WithExportConfig as _;
    let scheme_ok = endpoint.starts_with("https://") || endpoint.starts_with("http://");
    if !scheme_ok || interval.is_zero() {
        return Err(GatewayError::Config {
            detail: format!(
                "[metrics] otlp_endpoint {endpoint:?} must be an http(s) URL and otlp_interval positive"
            ),
        });
    }
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .with_timeout(OTLP_TIMEOUT)
        .build()
        .map_err(|e| GatewayError::Config {
            detail: format!("[metrics] otlp_endpoint {endpoint:?}: {e}"),
        })?;
    Ok(
        opentelemetry_sdk::metrics::PeriodicReader::builder(exporter)
            .with_interval(interval)
            .build(),
    )
}
