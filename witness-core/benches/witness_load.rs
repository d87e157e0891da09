//! Durable `add-checkpoint` throughput and latency of the witness, in one
//! process: the witness core with a SQLite store (WAL, synchronous=FULL) and the
//! real signer (`signer-svc`, file keys, its own durable fork guard) reached over
//! mutual TLS gRPC on loopback, with many logs tracked (default 40,000, the
//! public witness network's largest capacity profile).
//!
//! Requests (log-signed checkpoints with consistency proofs) are made before
//! the clock starts, so the figures are the witness's alone: client-side
//! signing and tree hashing are not counted. Each log's checkpoints are sent in
//! order by one worker, so no request loses a race.
//!
//! `cargo bench -p witness-core --bench witness_load`; environment:
//!   WITNESS_BENCH_LOGS         logs tracked (default 40000)
//!   WITNESS_BENCH_CONCURRENCY  requests in flight (default 128)
//!   WITNESS_BENCH_ROUNDS       growth checkpoints per log (default 2)
//!   WITNESS_BENCH_ML_DSA       1 to cosign with ML-DSA-44 too (default 0)
//!   WITNESS_BENCH_BATCHING     0 to call the signer once per checkpoint

#[path = "../tests/witness_support/mod.rs"]
mod witness_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use witness_core::merkle::Hash;
use witness_core::service::metrics::WitnessMetrics;
use witness_core::service::signer_client::BatchingSigner;
use witness_core::service::store::LogStore;
use witness_core::service::store::sqlite::SqliteStore;
use witness_core::service::witness::{Cosigner, Witness};
use witness_support::{SignerHarness, TestLog};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) of this process, from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident set size in MiB, from /proc.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

struct Request {
    old_size: u64,
    proof: Vec<Hash>,
    note: Vec<u8>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Sends every log's chain of requests, `concurrency` logs at a time, and
/// returns the latency of each request.
async fn drive(
    witness: &Arc<Witness>,
    chains: Vec<Vec<Request>>,
    concurrency: usize,
) -> Vec<Duration> {
    let latencies: Vec<Vec<Duration>> = futures::stream::iter(chains)
        .map(|chain| {
            let witness = witness.clone();
            async move {
                let mut latencies = Vec::with_capacity(chain.len());
                for request in chain {
                    let started = Instant::now();
                    witness
                        .add_checkpoint(request.old_size, request.proof, &request.note)
                        .await
                        .expect("cosigned");
                    latencies.push(started.elapsed());
                }
                latencies
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    latencies.into_iter().flatten().collect()
}

fn report(phase: &str, latencies: &mut [Duration], wall: Duration, cpu: f64) {
    latencies.sort_unstable();
    let rate = latencies.len() as f64 / wall.as_secs_f64();
    println!(
        "{phase:<28} {:>7} cosignatures in {:>6.2} s: {:>7.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  CPU {:>5.2} s ({:>3.0}% of 2 cores)  peak RSS {:>6.1} MiB",
        latencies.len(),
        wall.as_secs_f64(),
        rate,
        percentile(latencies, 0.50).as_secs_f64() * 1e3,
        percentile(latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        cpu,
        cpu / wall.as_secs_f64() / 2.0 * 100.0,
        peak_rss_mib(),
    );
}

fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let logs = env("WITNESS_BENCH_LOGS", 40_000) as usize;
    let concurrency = env("WITNESS_BENCH_CONCURRENCY", 128) as usize;
    let rounds = env("WITNESS_BENCH_ROUNDS", 2);
    let ml_dsa = env("WITNESS_BENCH_ML_DSA", 0) == 1;
    let batching = env("WITNESS_BENCH_BATCHING", 1) == 1;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        println!(
            "witness load: {logs} logs, {concurrency} in flight, {rounds} growth rounds, ML-DSA-44 {ml_dsa}, signer batching {batching}"
        );
        let signer = SignerHarness::start(ml_dsa).await;
        let metrics = Arc::new(WitnessMetrics::new().expect("metrics"));
        let grpc = signer.client(metrics.clone());
        let keys = grpc.keys().await.expect("signer keys");
        let cosigner: Arc<dyn Cosigner> = if batching {
            Arc::new(BatchingSigner::new(grpc.clone()))
        } else {
            Arc::new(grpc.clone())
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn LogStore> =
            Arc::new(SqliteStore::open(&dir.path().join("witness.db")).expect("store"));

        let started = Instant::now();
        let mut test_logs: Vec<TestLog> = (0..logs)
            .map(|i| {
                let mut log = TestLog::new(&format!("bench.example/log{i}"), 0);
                // Distinct keys per log, without 40,000 key generations from the OS.
                log.signing = ed25519_dalek::SigningKey::from_bytes(&{
                    let mut seed = [7u8; 32];
                    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
                    seed
                });
                log.verifier = witness_core::note::VerifierKey::from_material(
                    &log.origin,
                    witness_core::note::SignatureType::Ed25519,
                    log.signing.verifying_key().as_bytes(),
                )
                .expect("verifier");
                log.grow(3);
                log
            })
            .collect();
        let witness = Arc::new(
            Witness::new(
                test_logs.iter().map(TestLog::keys).collect(),
                Vec::new(),
                keys.cosigning.clone(),
                store,
                cosigner,
                None,
                metrics.clone(),
            )
            .await
            .expect("witness"),
        );
        println!("setup: {logs} logs registered in {:.2} s", started.elapsed().as_secs_f64());

        // Phase 1: every log's first checkpoint (no proof).
        let first: Vec<Vec<Request>> = test_logs
            .iter()
            .map(|log| {
                vec![Request {
                    old_size: 0,
                    proof: Vec::new(),
                    note: log.signed(3),
                }]
            })
            .collect();
        let cpu = cpu_seconds();
        let started = Instant::now();
        let mut latencies = drive(&witness, first, concurrency).await;
        report("first checkpoint per log", &mut latencies, started.elapsed(), cpu_seconds() - cpu);

        // Phase 2: growth with consistency proofs.
        let chains: Vec<Vec<Request>> = test_logs
            .iter_mut()
            .enumerate()
            .map(|(i, log)| {
                let mut chain = Vec::new();
                let mut size = 3u64;
                for round in 0..rounds {
                    let grow = 1 + (i as u64 + round) % 13;
                    log.grow(grow);
                    let new = size + grow;
                    chain.push(Request {
                        old_size: size,
                        proof: log.proof(size, new),
                        note: log.signed(new),
                    });
                    size = new;
                }
                chain
            })
            .collect();
        let cpu = cpu_seconds();
        let started = Instant::now();
        let mut latencies = drive(&witness, chains, concurrency).await;
        report("growth with proof", &mut latencies, started.elapsed(), cpu_seconds() - cpu);
        signer.server.stop().await;
    });
}
