//! The witness service: cosigns checkpoints of the logs it trusts only when they
//! are consistent with everything it cosigned before, over gRPC (the gateway
//! serves the HTTP tlog-witness API on top of it), and pulls checkpoints from
//! logs that cannot push.
//!
//! The verification itself is the pure core of this crate; this module adds the
//! I/O around it: durable state ([`store`]), the signer client, pull feeders
//! ([`feeder`]), re-cosigning and the checkpoint archive ([`archive`]), metrics
//! and the gRPC server.

pub mod airgap;
pub mod archive;
pub mod config;
pub mod dev_stack;
pub mod feeder;
pub mod grpc;
pub mod metrics;
pub mod mirror;
pub mod recosign;
pub mod server;
pub mod signer_client;
pub mod store;
pub mod telemetry;
pub mod witness;

/// The most threads the witness's runtime runs blocking work on: SQLite reads
/// (at most four at once), archive spool calls, local-archive writes (at most
/// eight at once) and `syncfs`. Tokio's default of 512 let a burst of requests
/// start a thread for nearly every queued task, each kept alive 10 s with its
/// own stack: about 60 threads under load at 40,000 logs, 20 with this bound
/// (peak RSS 3 MiB lower). No blocking task here waits for another one, so a
/// bound cannot deadlock; past it, work queues for a thread about to be free.
pub const MAX_BLOCKING_THREADS: usize = 16;

/// The runtime of `rekor-witness serve` and `quickstart`: tokio's multi-thread
/// scheduler (a worker per core) with at most [`MAX_BLOCKING_THREADS`] threads
/// for blocking work.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Deserializes a `humantime` duration ("10s", "1h", "1day") from a string.
pub(crate) fn duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<std::time::Duration, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_blocking_reads_runs_on_a_bounded_set_of_threads() {
        let runtime = runtime().unwrap();
        let threads = runtime.block_on(async {
            let tasks: Vec<_> = (0..4 * MAX_BLOCKING_THREADS)
                .map(|_| {
                    tokio::task::spawn_blocking(|| {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        std::thread::current().id()
                    })
                })
                .collect();
            let mut threads = std::collections::HashSet::new();
            for task in tasks {
                threads.insert(task.await.unwrap());
            }
            threads
        });
        assert!(
            threads.len() <= MAX_BLOCKING_THREADS,
            "{} blocking threads",
            threads.len()
        );
    }
}
