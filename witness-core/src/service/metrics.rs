//! The witness's metrics, kept with OpenTelemetry and exported in the Prometheus
//! text format (the gateway scrapes and aggregates them).
//!
//! Log labels are origins of trusted logs only (a bounded, operator-chosen set);
//! reasons are `Error::kind()` labels. No client addresses or other personal
//! data ever become labels.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, MeterProvider as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;

use crate::service::now_seconds;
use crate::{Error, Result};

/// Latency buckets (seconds) shared by the latency histograms.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Per-log values read at scrape time.
#[derive(Default)]
struct Gauges {
    /// Origin → timestamp of the newest cosignature.
    cosigned_at: HashMap<String, u64>,
    /// Origin → entries of checkpoints waiting to be fetched and cosigned.
    backfill_queue_depth: HashMap<String, u64>,
    /// The archive's uploader, once running: the cosignature time of the
    /// oldest checkpoint it holds that is not archived yet, if any.
    archive_oldest_unarchived: Option<Option<u64>>,
    /// The oldest checkpoint still in the state store's archive outbox, once
    /// the outbox has been read (`Some(None)`: empty).
    archive_oldest_in_outbox: Option<Option<u64>>,
}

/// Instruments of the witness service.
pub struct WitnessMetrics {
    registry: prometheus::Registry,
    // Kept alive: dropping the provider stops collection.
    _provider: SdkMeterProvider,
    gauges: Arc<Mutex<Gauges>>,
    verify_failures: Counter<u64>,
    cosignatures: Counter<u64>,
    misbehaviour: Counter<u64>,
    request_seconds: Histogram<f64>,
    signer_seconds: Histogram<f64>,
    durable_write_seconds: Histogram<f64>,
    fetches: Counter<u64>,
    archive_writes: Counter<u64>,
    archive_batches: Counter<u64>,
    tls: crate::tls_reload::TlsReloadMetrics,
}

impl WitnessMetrics {
    /// A fresh set of instruments with its own registry.
    pub fn new() -> Result<WitnessMetrics> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .map_err(|e| Error::Config {
                detail: format!("metrics: {e}"),
            })?;
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        let meter = provider.meter("witness-core");
        let gauges = Arc::new(Mutex::new(Gauges::default()));
        let ages = gauges.clone();
        meter
            .f64_observable_gauge("witness_checkpoint_age")
            .with_unit("s")
            .with_description("Age of the newest cosignature per log")
            .with_callback(move |observer| {
                let now = now_seconds();
                if let Ok(gauges) = ages.lock() {
                    for (origin, at) in &gauges.cosigned_at {
                        observer.observe(
                            now.saturating_sub(*at) as f64,
                            &[KeyValue::new("log", origin.clone())],
                        );
                    }
                }
            })
            .build();
        let depths = gauges.clone();
        meter
            .u64_observable_gauge("witness_backfill_queue_depth")
            .with_description("Checkpoints waiting to be fetched and cosigned per pulled log")
            .with_callback(move |observer| {
                if let Ok(gauges) = depths.lock() {
                    for (origin, depth) in &gauges.backfill_queue_depth {
                        observer.observe(*depth, &[KeyValue::new("log", origin.clone())]);
                    }
                }
            })
            .build();
        let unarchived = gauges.clone();
        meter
            .u64_observable_gauge("witness_archive_oldest_unarchived_age")
            .with_unit("s")
            .with_description(
                "Age of the oldest checkpoint the archive holds and has not yet written, in the state store's outbox or read from the spool (0 when caught up)",
            )
            .with_callback(move |observer| {
                if let Ok(gauges) = unarchived.lock()
                    && (gauges.archive_oldest_unarchived.is_some()
                        || gauges.archive_oldest_in_outbox.is_some())
                {
                    let oldest = [
                        gauges.archive_oldest_unarchived,
                        gauges.archive_oldest_in_outbox,
                    ]
                    .into_iter()
                    .flatten()
                    .flatten()
                    .min();
                    let age = oldest.map_or(0, |at| now_seconds().saturating_sub(at));
                    observer.observe(age, &[]);
                }
            })
            .build();
        let tls = crate::tls_reload::TlsReloadMetrics::default();
        tls.register(&meter);
        Ok(WitnessMetrics {
            tls,
            registry,
            gauges,
            verify_failures: meter
                .u64_counter("witness_verify_failures")
                .with_description("Failed verifications by log and reason")
                .build(),
            cosignatures: meter
                .u64_counter("witness_cosignatures")
                .with_description("Cosignature requests by log and outcome (ok or the refusal)")
                .build(),
            misbehaviour: meter
                .u64_counter("witness_misbehaviour")
                .with_description(
                    "Checkpoints validly signed by their log that failed a consistency check",
                )
                .build(),
            request_seconds: meter
                .f64_histogram("witness_request_duration")
                .with_unit("s")
                .with_description("Witness request latency by method")
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
            signer_seconds: meter
                .f64_histogram("witness_signer_call_duration")
                .with_unit("s")
                .with_description("Latency of calls to the signer by operation")
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
            durable_write_seconds: meter
                .f64_histogram("witness_durable_write_duration")
                .with_unit("s")
                .with_description(
                    "Time a cosigned checkpoint waits for a durable write before it is revealed, by write (archive_spool then state with a PostgreSQL state; state alone with SQLite, whose transaction also holds the archive's copy) and result",
                )
                .with_boundaries(LATENCY_BUCKETS.to_vec())
                .build(),
            fetches: meter
                .u64_counter("witness_log_fetches")
                .with_description("Requests to pulled logs by log, endpoint kind and outcome")
                .build(),
            archive_writes: meter
                .u64_counter("witness_archive_writes")
                .with_description("Objects written to the checkpoint archive by kind and outcome")
                .build(),
            archive_batches: meter
                .u64_counter("witness_archive_upload_batches")
                .with_description(
                    "Upload batches of the checkpoint archive: each ends with one durability barrier and one journal append",
                )
                .build(),
            _provider: provider,
        })
    }

    /// Counts a failed verification of something a log served.
    pub fn verify_failure(&self, log: &str, error: &Error) {
        self.verify_failures.add(
            1,
            &[
                KeyValue::new("log", log.to_owned()),
                KeyValue::new("reason", error.kind()),
            ],
        );
    }

    /// Counts a cosignature request's outcome.
    pub fn cosignature(&self, log: &str, outcome: std::result::Result<(), &Error>) {
        let outcome = match outcome {
            Ok(()) => "ok",
            Err(error) => error.kind(),
        };
        self.cosignatures.add(
            1,
            &[
                KeyValue::new("log", log.to_owned()),
                KeyValue::new("outcome", outcome),
            ],
        );
    }

    /// Counts a checkpoint kept as evidence of misbehaviour.
    pub fn misbehaviour(&self, log: &str, error: &Error) {
        self.misbehaviour.add(
            1,
            &[
                KeyValue::new("log", log.to_owned()),
                KeyValue::new("reason", error.kind()),
            ],
        );
    }

    /// Records a request's latency.
    pub fn request(&self, method: &'static str, elapsed: Duration) {
        self.request_seconds
            .record(elapsed.as_secs_f64(), &[KeyValue::new("method", method)]);
    }

    /// Records a signer call's latency and outcome.
    pub fn signer_call(&self, operation: &'static str, ok: bool, elapsed: Duration) {
        self.signer_seconds.record(
            elapsed.as_secs_f64(),
            &[
                KeyValue::new("operation", operation),
                KeyValue::new("result", if ok { "ok" } else { "error" }),
            ],
        );
    }

    /// Records how long a cosigned checkpoint waited for one of the durable
    /// writes before its reveal (`write`: `archive_spool`, with a PostgreSQL
    /// state only, or `state`), group
    /// commit included.
    pub fn durable_write(&self, write: &'static str, ok: bool, elapsed: Duration) {
        self.durable_write_seconds.record(
            elapsed.as_secs_f64(),
            &[
                KeyValue::new("write", write),
                KeyValue::new("result", if ok { "ok" } else { "error" }),
            ],
        );
    }

    /// Counts a request to a pulled log (`kind`: checkpoint, proof, tile, entry).
    pub fn fetch(&self, log: &str, kind: &'static str, outcome: std::result::Result<(), &Error>) {
        let outcome = match outcome {
            Ok(()) => "ok",
            Err(error) => error.kind(),
        };
        self.fetches.add(
            1,
            &[
                KeyValue::new("log", log.to_owned()),
                KeyValue::new("kind", kind),
                KeyValue::new("outcome", outcome),
            ],
        );
    }

    /// Counts an archive write (`kind`: checkpoint or manifest).
    pub fn archive_write(&self, kind: &'static str, ok: bool) {
        self.archive_writes.add(
            1,
            &[
                KeyValue::new("kind", kind),
                KeyValue::new("result", if ok { "ok" } else { "error" }),
            ],
        );
    }

    /// Counts an upload batch of the archive (checkpoints written together).
    pub fn archive_batch(&self) {
        self.archive_batches.add(1, &[]);
    }

    /// Notes the cosignature time of the oldest checkpoint the archive holds
    /// unwritten (`None`: caught up), for
    /// `witness_archive_oldest_unarchived_age_seconds`.
    pub fn archive_oldest_unarchived(&self, cosigned_at: Option<u64>) {
        if let Ok(mut gauges) = self.gauges.lock() {
            gauges.archive_oldest_unarchived = Some(cosigned_at);
        }
    }

    /// Notes the cosignature time of the oldest checkpoint waiting in the state
    /// store's archive outbox (`None`: empty), also reported by
    /// `witness_archive_oldest_unarchived_age_seconds`.
    pub fn archive_oldest_in_outbox(&self, cosigned_at: Option<u64>) {
        if let Ok(mut gauges) = self.gauges.lock() {
            gauges.archive_oldest_in_outbox = Some(cosigned_at);
        }
    }

    /// Notes a log's newest cosignature time (for `witness_checkpoint_age_seconds`).
    pub fn cosigned_at(&self, log: &str, timestamp: u64) {
        if let Ok(mut gauges) = self.gauges.lock() {
            let entry = gauges.cosigned_at.entry(log.to_owned()).or_default();
            *entry = (*entry).max(timestamp);
        }
    }

    /// Sets a pulled log's backfill queue depth.
    pub fn backfill_queue_depth(&self, log: &str, depth: u64) {
        if let Ok(mut gauges) = self.gauges.lock() {
            gauges.backfill_queue_depth.insert(log.to_owned(), depth);
        }
    }

    /// The TLS reload counts and certificate expiries of the witness's
    /// listener and signer client.
    pub fn tls(&self) -> &crate::tls_reload::TlsReloadMetrics {
        &self.tls
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}
