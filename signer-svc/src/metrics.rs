//! The signer's metrics, kept with OpenTelemetry and exported in the Prometheus
//! text format through the `Metrics` call (so a scrape travels over the same
//! mutual TLS as every other call).

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, MeterProvider as _, ObservableCounter};
use opentelemetry_sdk::metrics::SdkMeterProvider;

use crate::error::{Error, Result};
use crate::fork_guard::CommitCounters;

/// Instruments of the signer.
pub struct Metrics {
    registry: prometheus::Registry,
    // Kept alive: dropping the provider stops collection.
    _provider: SdkMeterProvider,
    operations: Counter<u64>,
    refusals: Counter<u64>,
    signing_seconds: Histogram<f64>,
    // Read from the fork guard's writer at each scrape; kept with the provider.
    _guard_transactions: ObservableCounter<u64>,
    _guard_records: ObservableCounter<u64>,
    tls: witness_core::tls_reload::TlsReloadMetrics,
}

impl Metrics {
    /// A fresh set of instruments with its own registry, observing the fork
    /// guard's commits through `guard`.
    pub fn new(guard: Arc<CommitCounters>) -> Result<Metrics> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .map_err(|e| Error::Config(format!("metrics: {e}")))?;
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        let meter = provider.meter("signer-svc");
        let tls = witness_core::tls_reload::TlsReloadMetrics::default();
        tls.register(&meter);
        Ok(Metrics {
            tls,
            registry,
            operations: meter
                .u64_counter("signer_operations")
                .with_description("Signer operations by operation, key and result")
                .build(),
            refusals: meter
                .u64_counter("signer_refusals")
                .with_description("Refused operations by reason")
                .build(),
            signing_seconds: meter
                .f64_histogram("signer_signing_duration")
                .with_unit("s")
                .with_description("Time spent in the key backend per signature")
                .with_boundaries(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0,
                ])
                .build(),
            _guard_transactions: {
                let guard = guard.clone();
                meter
                    .u64_observable_counter("signer_fork_guard_transactions")
                    .with_description(
                        "Fork guard transactions committed (one durable write each, shared by \
                         the calls of a group commit)",
                    )
                    .with_callback(move |observer| observer.observe(guard.transactions(), &[]))
                    .build()
            },
            _guard_records: meter
                .u64_observable_counter("signer_fork_guard_records")
                .with_description("Checkpoints recorded by the fork guard")
                .with_callback(move |observer| observer.observe(guard.records(), &[]))
                .build(),
            _provider: provider,
        })
    }

    /// The TLS reload counts and certificate expiry of the gRPC listener.
    pub fn tls(&self) -> &witness_core::tls_reload::TlsReloadMetrics {
        &self.tls
    }

    /// Counts one operation's outcome (`ok` or the error's kind).
    pub fn operation(
        &self,
        operation: &'static str,
        key: &'static str,
        result: std::result::Result<(), &Error>,
    ) {
        let outcome = match result {
            Ok(()) => "ok",
            Err(error) => {
                self.refusals
                    .add(1, &[KeyValue::new("reason", error.kind())]);
                error.kind()
            }
        };
        self.operations.add(
            1,
            &[
                KeyValue::new("operation", operation),
                KeyValue::new("key", key),
                KeyValue::new("result", outcome),
            ],
        );
    }

    /// Records one backend signature's latency.
    pub fn signing(&self, algorithm: &'static str, elapsed: Duration) {
        self.signing_seconds.record(
            elapsed.as_secs_f64(),
            &[KeyValue::new("algorithm", algorithm)],
        );
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}
