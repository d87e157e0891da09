//! HTTP front door of the Rekor witness: the c2sp.org/tlog-witness API
//! (`add-checkpoint`, `sign-subtree`) and its monitoring endpoint
//! (`<monitoring prefix>/<origin hash>/checkpoint`), forwarded to the witness
//! service over gRPC.
//!
//! The gateway holds no witness state and no keys: it parses request bodies at
//! the edge ([`witness_core::witness_api`]), forwards typed requests, and maps
//! the witness's refusals to the HTTP statuses the spec prescribes. It serves
//! HTTPS (HTTP/1.1 and HTTP/2, certificate reloaded on change) or plain HTTP on
//! loopback ([`transport`]), behind rate limits, timeouts, concurrency limits
//! and load shedding ([`protect`]), and reaches the witness service over
//! mutual TLS (or plaintext gRPC on loopback).

#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod error;
pub mod metrics;
mod monitoring;
pub mod protect;
mod status;
mod submission;
pub mod transport;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{MethodRouter, get, post};
use tonic::transport::Channel;
use witness_core::witness_api::{MAX_ADD_CHECKPOINT_BODY, MAX_SIGN_SUBTREE_BODY};
use witness_proto::signer::signer_client::SignerClient;
use witness_proto::witness::witness_client::WitnessClient;

pub use config::{GatewayConfig, Upstream};
pub use error::GatewayError;

/// Shared by every handler: the witness client (cheap to clone, one HTTP/2
/// connection underneath), the signer client when configured (metrics and
/// readiness only), and the origin index of the monitoring endpoint.
#[derive(Clone)]
pub(crate) struct Gateway {
    witness: WitnessClient<Channel>,
    signer: Option<SignerClient<Channel>>,
    origins: Arc<monitoring::OriginIndex>,
}

impl Gateway {
    /// Every log the witness trusts (its `ListLogs`); callers map a refusal to
    /// the answer their route owes.
    async fn trusted_logs(&self) -> Result<Vec<witness_proto::witness::Log>, tonic::Status> {
        Ok(self
            .witness
            .clone()
            .list_logs(witness_proto::witness::ListLogsRequest {})
            .await?
            .into_inner()
            .logs)
    }
}

/// Serves the gateway on `listener` (HTTPS when `[tls]` is configured, else
/// plain HTTP, on a loopback address only) until `shutdown` completes, then
/// drains in-flight requests.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: &GatewayConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let (app, metrics) = router(config)?;
    let shutdown = metrics::serve_separately(
        config.metrics.as_ref(),
        &metrics,
        config.tls_reload_interval,
        shutdown,
    )
    .await?;
    let tls = match &config.tls {
        Some(tls) => {
            let client_ca = config.admin.as_ref().and_then(|a| a.client_ca.as_deref());
            Some(transport::ServingTls::start(tls, client_ca, metrics.tls()).await?)
        }
        None => None,
    };
    transport::serve(listener, app, tls, &config.limits, shutdown).await
}

fn router(config: &GatewayConfig) -> Result<(Router, metrics::MetricsEndpoint), GatewayError> {
    config.validate()?;
    let tls = witness_core::tls_reload::TlsReloadMetrics::default();
    let interval = config.tls_reload_interval;
    let signer = match &config.signer {
        Some(upstream) => Some(SignerClient::new(transport::upstream_channel(
            upstream,
            "signer_client",
            interval,
            &tls,
        )?)),
        None => None,
    };
    let gateway = Gateway {
        witness: WitnessClient::new(transport::upstream_channel(
            &config.witness,
            "witness_client",
            interval,
            &tls,
        )?),
        signer,
        origins: Arc::new(monitoring::OriginIndex::default()),
    };
    let metrics = metrics::MetricsEndpoint::new(&gateway, config.metrics.as_ref(), tls)?;
    let submission = &config.submission_prefix;
    let monitoring = &config.monitoring_prefix;
    let limits = &config.limits;
    // Each endpoint has its own per-origin buckets: a log's sign-subtree calls
    // do not eat into its add-checkpoint budget.
    let per_origin = |handler: MethodRouter<Gateway>| {
        handler.layer(middleware::from_fn_with_state(
            protect::PerOriginRateLimit::new(limits.per_origin_rate),
            protect::per_origin_rate_limit,
        ))
    };
    let submissions = Router::new()
        .route(
            &format!("{submission}/add-checkpoint"),
            per_origin(post(submission::add_checkpoint)),
        )
        .route(
            &format!("{submission}/sign-subtree"),
            per_origin(post(submission::sign_subtree)),
        )
        // Outside the per-origin limit, which buffers the body: an oversized
        // body is refused with 413 while it streams in, before it is buffered.
        // Sized to the largest body either endpoint accepts; the parsers check
        // their own exact caps again.
        .layer(DefaultBodyLimit::max(MAX_BODY));
    let submissions = protect::shed_and_time_out(
        submissions,
        limits.submission_concurrency,
        limits.request_timeout,
    )
    // Outermost and cheapest: refused before a slot or a byte of body is spent.
    .layer(middleware::from_fn_with_state(
        protect::GlobalRateLimit::new(limits.submission_rate, "submissions"),
        protect::global_rate_limit,
    ));
    // Limited apart from the submissions, so neither starves the other.
    let monitors = protect::shed_and_time_out(
        Router::new().route(
            &format!("{monitoring}/{{origin_hash}}/checkpoint"),
            get(monitoring::checkpoint),
        ),
        limits.monitoring_concurrency,
        limits.request_timeout,
    )
    .layer(middleware::from_fn_with_state(
        protect::GlobalRateLimit::new(limits.monitoring_rate, "monitoring"),
        protect::global_rate_limit,
    ));
    // The status reads and the admin API: each group with its own budget (the
    // monitoring numbers), so that a flood on one starves neither the
    // tlog-witness endpoints nor the other group.
    let (status_reads, probes) = status::routes(config);
    let limited = |routes: Router<Gateway>, name: &'static str| {
        protect::shed_and_time_out(
            routes,
            limits.monitoring_concurrency,
            limits.request_timeout,
        )
        .layer(middleware::from_fn_with_state(
            protect::GlobalRateLimit::new(limits.monitoring_rate, name),
            protect::global_rate_limit,
        ))
    };
    let app = Router::new()
        .merge(submissions)
        .merge(monitors)
        .merge(limited(status_reads, "status"))
        .merge(limited(admin::routes(config.admin.as_ref())?, "admin"))
        .merge(probes)
        .with_state(gateway);
    Ok((metrics.instrument(app, config.metrics.as_ref()), metrics))
}

/// The body limit of the submission endpoints.
const MAX_BODY: usize = if MAX_ADD_CHECKPOINT_BODY > MAX_SIGN_SUBTREE_BODY {
    MAX_ADD_CHECKPOINT_BODY
} else {
    MAX_SIGN_SUBTREE_BODY
};
