//! Cosignatures per second: through mutual-TLS gRPC with the file backend,
//! beside the in-process bounds, in one run.
//!
//! - `in-process/ed25519-cosignature-v1`: build the cosignature/v1 message and
//!   sign it with Ed25519 in a loop (the floor for one cosignature).
//! - `in-process/fork-guard-*`: the fork guard's check-and-record transaction
//!   alone, on the SQLite file (`synchronous=FULL`) or in memory.
//! - `in-process/service-*`: the service's `CosignCheckpoint` handler called
//!   directly (no gRPC, no TLS), with the file-backed guard, the audit log and
//!   metrics; `memory-guard` with the guard in memory (the difference is the
//!   durable write); `ml-dsa-44` with an ML-DSA-44 key as well.
//! - `in-process/fork-guard-file-grow-batch-64`: the same transaction with 64
//!   growths in it (one fsync for all), per growth.
//! - `grpc/sequential-*`: one client awaiting each call over mTLS gRPC.
//! - `grpc/16-in-flight-*`: 16 concurrent calls over one HTTP/2 channel; the
//!   figure per call is wall time divided by calls, i.e. 1 / throughput. The
//!   fork guard's transactions are counted (through the `Metrics` call) to show
//!   how many calls each durable write served.
//! - `grpc/batch-N-grow`: one client awaiting `CosignCheckpoints` calls of N
//!   growths each (N = 1, 16, 64, 256); the figure is per cosignature.
//! - `grpc/batch-64-4-in-flight-grow`: four such calls of 64 at a time, each
//!   stream on its own logs.
//!
//! `grow` calls grow one of 16 logs by one leaf with a valid consistency proof,
//! so the guard's record changes and is written durably; `same` calls re-cosign
//! a log's recorded checkpoint (same size, same root, no proof): SQLite sees the
//! row rewritten with identical bytes, dirties no page and so writes and syncs
//! nothing. Requests are built before the timer starts. Client and server share
//! one process and one Tokio runtime. A summary with ratios is printed at the end.

#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../tests/support/pki.rs"]
mod pki;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::Criterion;
use ed25519_dalek::Signer as _;
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use signer_svc::fork_guard::{ForkGuard, Proposal};
use signer_svc::service::SignerService;
use signer_svc::tls::PeerIdentity;
use tokio::runtime::Runtime;
use tonic::Request;
use tonic::transport::Channel;
use witness_core::checkpoint::Checkpoint;
use witness_core::cosignature::cosignature_v1_message;
use witness_core::merkle::{
    Hash, SubtreeHashSource, leaf_hash, node_hash, prove_consistency, tree_root,
};
use witness_proto::signer as pb;
use witness_proto::signer::signer_client::SignerClient;
use witness_proto::signer::signer_server::Signer as _;

const LOGS: usize = 16;
const IN_FLIGHT: usize = 16;
/// Leaves of the tree every log grows along (one leaf per `grow` call).
const LEAVES: usize = 1 << 18;

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

/// Total iterations and time of each benchmark, over every timed batch.
static RESULTS: Mutex<BTreeMap<&'static str, (u64, Duration)>> = Mutex::new(BTreeMap::new());

fn record(name: &'static str, iters: u64, elapsed: Duration) -> Duration {
    let mut results = RESULTS.lock().unwrap();
    let entry = results.entry(name).or_default();
    entry.0 += iters;
    entry.1 += elapsed;
    elapsed
}

fn mean(name: &str) -> Duration {
    let results = RESULTS.lock().unwrap();
    results
        .get(name)
        .map(|(iters, total)| total.div_f64(*iters as f64))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Growing logs
// ---------------------------------------------------------------------------

/// Every complete subtree hash of one tree, so roots and proofs cost O(log n).
struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl SubtreeHashSource for &Tree {
    fn subtree_hash(&mut self, level: u8, index: u64) -> witness_core::Result<Hash> {
        Ok(self.levels[usize::from(level)][usize::try_from(index).unwrap()])
    }
}

impl Tree {
    fn new() -> Tree {
        let mut levels = vec![
            (0..LEAVES as u64)
                .map(|i| leaf_hash(&i.to_be_bytes()))
                .collect::<Vec<_>>(),
        ];
        while levels.last().unwrap().len() > 1 {
            let below = levels.last().unwrap();
            levels.push(
                below
                    .chunks_exact(2)
                    .map(|pair| node_hash(&pair[0], &pair[1]))
                    .collect(),
            );
        }
        Tree { levels }
    }

    fn root(&self, size: u64) -> Hash {
        tree_root(&mut &*self, size).unwrap()
    }

    fn proof(&self, old: u64, new: u64) -> Vec<Vec<u8>> {
        prove_consistency(&mut &*self, old, new)
            .unwrap()
            .iter()
            .map(|h| h.0.to_vec())
            .collect()
    }
}

/// `LOGS` logs, named after one benchmark, the size each was last cosigned at,
/// and the log the next request of [`Logs::batch`] goes to.
struct Logs {
    tree: Arc<Tree>,
    origins: Vec<String>,
    sizes: Vec<u64>,
    next: usize,
}

impl Logs {
    fn new(tree: &Arc<Tree>, name: &str) -> Logs {
        Logs {
            tree: tree.clone(),
            origins: (0..LOGS)
                .map(|i| format!("bench.example/{name}/{i}"))
                .collect(),
            sizes: vec![0; LOGS],
            next: 0,
        }
    }

    /// The request that cosigns log `i` at `size`, from its recorded size.
    fn to(&mut self, i: usize, size: u64) -> pb::CosignCheckpointRequest {
        let old = self.sizes[i];
        assert!(
            size <= LEAVES as u64,
            "{} grew past the benchmark tree",
            self.origins[i]
        );
        self.sizes[i] = size;
        pb::CosignCheckpointRequest {
            origin: self.origins[i].clone(),
            size,
            root_hash: self.tree.root(size).0.to_vec(),
            extension_lines: Vec::new(),
            old_size: old,
            consistency_proof: if old == 0 || old == size {
                Vec::new()
            } else {
                self.tree.proof(old, size)
            },
        }
    }

    /// Log `i` grown by one leaf.
    fn grow(&mut self, i: usize) -> pb::CosignCheckpointRequest {
        self.to(i, self.sizes[i] + 1)
    }

    /// Log `i` cosigned again at its recorded size.
    fn same(&mut self, i: usize) -> pb::CosignCheckpointRequest {
        self.to(i, self.sizes[i])
    }

    /// The first cosignature of every log, at size 1.
    fn first(&mut self) -> Vec<pb::CosignCheckpointRequest> {
        (0..LOGS).map(|i| self.to(i, 1)).collect()
    }

    /// The next `n` requests, round robin over the logs (across calls).
    fn batch(&mut self, n: u64, grow: bool) -> Vec<pb::CosignCheckpointRequest> {
        (0..n)
            .map(|_| {
                let log = self.next;
                self.next = (self.next + 1) % LOGS;
                if grow { self.grow(log) } else { self.same(log) }
            })
            .collect()
    }
}

fn checkpoint(request: &pb::CosignCheckpointRequest) -> (Checkpoint, u64, Vec<Hash>) {
    let checkpoint = Checkpoint::new(
        &request.origin,
        request.size,
        Hash::from_slice(&request.root_hash).unwrap(),
        Vec::new(),
    )
    .unwrap();
    let proof = request
        .consistency_proof
        .iter()
        .map(|h| Hash::from_slice(h).unwrap())
        .collect();
    (checkpoint, request.old_size, proof)
}

fn proposal(request: &pb::CosignCheckpointRequest) -> Proposal {
    let (checkpoint, old_size, proof) = checkpoint(request);
    Proposal {
        checkpoint,
        old_size,
        proof,
    }
}

fn with_peer(request: pb::CosignCheckpointRequest) -> Request<pb::CosignCheckpointRequest> {
    let mut request = Request::new(request);
    request
        .extensions_mut()
        .insert(PeerIdentity::verified(vec![format!(
            "uri:{}",
            pki::GOOD_IDENTITY
        )]));
    request
}

// ---------------------------------------------------------------------------
// In process
// ---------------------------------------------------------------------------

fn in_process(
    c: &mut Criterion,
    runtime: &Runtime,
    tree: &Arc<Tree>,
    installation: &pki::Installation,
    ml_dsa: &pki::Installation,
) {
    let mut group = c.benchmark_group("cosign/in-process");

    // The signing floor: message construction and one Ed25519 signature.
    let pem = std::fs::read_to_string(installation.dir.path().join("ed25519.pem")).unwrap();
    let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).unwrap();
    let text = Checkpoint::new("bench.example/log", 1000, tree.root(1000), Vec::new())
        .unwrap()
        .to_text();
    group.bench_function("ed25519-cosignature-v1", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let timestamp = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let message = cosignature_v1_message(timestamp, black_box(&text));
                black_box(key.sign(&message));
            }
            record("in-process/ed25519-cosignature-v1", iters, start.elapsed())
        });
    });

    // The fork guard's transaction alone.
    let state = tempfile::tempdir().unwrap();
    let file_guard = ForkGuard::open(&state.path().join("guard.sqlite")).unwrap();
    let memory_guard = ForkGuard::in_memory().unwrap();
    let committed = |verdicts: signer_svc::error::Result<Vec<signer_svc::error::Result<()>>>| {
        assert!(verdicts.unwrap().iter().all(Result::is_ok));
    };
    for (name, guard, grow, per_commit) in [
        ("in-process/fork-guard-file-grow", &file_guard, true, 1),
        ("in-process/fork-guard-file-same", &file_guard, false, 1),
        ("in-process/fork-guard-memory-grow", &memory_guard, true, 1),
        (
            "in-process/fork-guard-file-grow-batch-64",
            &file_guard,
            true,
            64,
        ),
    ] {
        let mut logs = Logs::new(tree, name);
        committed(guard.commit_blocking(logs.first().iter().map(proposal).collect()));
        group.bench_function(name.trim_start_matches("in-process/"), |b| {
            b.iter_custom(|iters| {
                let commits: Vec<Vec<Proposal>> = (0..iters)
                    .map(|_| logs.batch(per_commit, grow).iter().map(proposal).collect())
                    .collect();
                let start = Instant::now();
                for proposals in commits {
                    committed(guard.commit_blocking(proposals));
                }
                record(name, iters * per_commit, start.elapsed())
            });
        });
    }

    // The service's handler, without gRPC or TLS.
    group.sample_size(30);
    for (name, installation, in_memory, grow) in [
        ("in-process/service-grow", installation, false, true),
        ("in-process/service-same", installation, false, false),
        (
            "in-process/service-memory-guard-grow",
            installation,
            true,
            true,
        ),
        ("in-process/service-ml-dsa-44-grow", ml_dsa, false, true),
    ] {
        let mut service: SignerService = runtime
            .block_on(signer_svc::build_service(&installation.config))
            .unwrap();
        if in_memory {
            service.guard = Arc::new(ForkGuard::in_memory().unwrap());
        }
        let mut logs = Logs::new(tree, name);
        runtime.block_on(async {
            for request in logs.first() {
                service.cosign_checkpoint(with_peer(request)).await.unwrap();
            }
        });
        group.bench_function(name.trim_start_matches("in-process/"), |b| {
            b.iter_custom(|iters| {
                let batch: Vec<_> = logs.batch(iters, grow).into_iter().map(with_peer).collect();
                runtime.block_on(async {
                    let start = Instant::now();
                    for request in batch {
                        black_box(service.cosign_checkpoint(request).await.unwrap());
                    }
                    record(name, iters, start.elapsed())
                })
            });
        });
    }
    group.finish();
}

// ---------------------------------------------------------------------------
// Over mutual TLS
// ---------------------------------------------------------------------------

/// `iters` calls, `IN_FLIGHT` at a time over clones of one channel; each
/// in-flight stream owns one log, so its growth never races another's.
fn concurrent(
    runtime: &Runtime,
    client: &SignerClient<Channel>,
    logs: &mut Logs,
    iters: u64,
    grow: bool,
) -> Duration {
    let mut streams: Vec<Vec<pb::CosignCheckpointRequest>> = vec![Vec::new(); IN_FLIGHT];
    for k in 0..iters as usize {
        let log = k % IN_FLIGHT;
        streams[log].push(if grow { logs.grow(log) } else { logs.same(log) });
    }
    runtime.block_on(async {
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for stream in streams {
            let mut client = client.clone();
            tasks.spawn(async move {
                for request in stream {
                    black_box(client.cosign_checkpoint(request).await.unwrap());
                }
            });
        }
        while let Some(task) = tasks.join_next().await {
            task.unwrap();
        }
        start.elapsed()
    })
}

fn grpc(c: &mut Criterion, runtime: &Runtime, tree: &Arc<Tree>, installation: &pki::Installation) {
    let server = runtime.block_on(installation.start(None));
    let client = runtime.block_on(installation.good_client(&server));
    let mut group = c.benchmark_group("cosign/grpc");
    group.sample_size(30);
    for (name, grow) in [
        ("grpc/sequential-grow", true),
        ("grpc/sequential-same", false),
    ] {
        let mut logs = Logs::new(tree, name);
        let mut client = client.clone();
        runtime.block_on(async {
            for request in logs.first() {
                client.cosign_checkpoint(request).await.unwrap();
            }
        });
        group.bench_function(name.trim_start_matches("grpc/"), |b| {
            b.iter_custom(|iters| {
                let batch = logs.batch(iters, grow);
                runtime.block_on(async {
                    let start = Instant::now();
                    for request in batch {
                        black_box(client.cosign_checkpoint(request).await.unwrap());
                    }
                    record(name, iters, start.elapsed())
                })
            });
        });
    }
    for (name, grow) in [
        ("grpc/16-in-flight-grow", true),
        ("grpc/16-in-flight-same", false),
    ] {
        let mut logs = Logs::new(tree, name);
        runtime.block_on(async {
            let mut client = client.clone();
            for request in logs.first() {
                client.cosign_checkpoint(request).await.unwrap();
            }
        });
        let transactions_before = runtime.block_on(transactions(&client));
        let mut calls = 0;
        group.bench_function(name.trim_start_matches("grpc/"), |b| {
            b.iter_custom(|iters| {
                calls += iters;
                record(
                    name,
                    iters,
                    concurrent(runtime, &client, &mut logs, iters, grow),
                )
            });
        });
        let transactions = runtime.block_on(transactions(&client)) - transactions_before;
        TRANSACTIONS
            .lock()
            .unwrap()
            .insert(name, (calls, transactions));
    }
    for (name, size) in [
        ("grpc/batch-1-grow", 1),
        ("grpc/batch-16-grow", 16),
        ("grpc/batch-64-grow", 64),
        ("grpc/batch-256-grow", 256),
    ] {
        let mut logs = Logs::new(tree, name);
        let mut client = client.clone();
        runtime.block_on(async {
            for request in logs.first() {
                client.cosign_checkpoint(request).await.unwrap();
            }
        });
        group.bench_function(name.trim_start_matches("grpc/"), |b| {
            b.iter_custom(|iters| {
                let batches: Vec<_> = (0..iters).map(|_| logs.batch(size, true)).collect();
                runtime.block_on(async {
                    let start = Instant::now();
                    for items in batches {
                        cosign_batch(&mut client, items).await;
                    }
                    record(name, iters * size, start.elapsed())
                })
            });
        });
    }
    {
        const NAME: &str = "grpc/batch-64-4-in-flight-grow";
        const STREAMS: usize = 4;
        let mut streams: Vec<Logs> = (0..STREAMS)
            .map(|k| Logs::new(tree, &format!("{NAME}/{k}")))
            .collect();
        runtime.block_on(async {
            let mut client = client.clone();
            for logs in &mut streams {
                for request in logs.first() {
                    client.cosign_checkpoint(request).await.unwrap();
                }
            }
        });
        group.bench_function(NAME.trim_start_matches("grpc/"), |b| {
            b.iter_custom(|iters| {
                let work: Vec<Vec<Vec<pb::CosignCheckpointRequest>>> = streams
                    .iter_mut()
                    .map(|logs| (0..iters).map(|_| logs.batch(64, true)).collect())
                    .collect();
                let elapsed = runtime.block_on(async {
                    let start = Instant::now();
                    let mut tasks = tokio::task::JoinSet::new();
                    for batches in work {
                        let mut client = client.clone();
                        tasks.spawn(async move {
                            for items in batches {
                                cosign_batch(&mut client, items).await;
                            }
                        });
                    }
                    while let Some(task) = tasks.join_next().await {
                        task.unwrap();
                    }
                    start.elapsed()
                });
                record(NAME, iters * 64 * STREAMS as u64, elapsed)
            });
        });
    }
    group.finish();
    drop(client);
    runtime.block_on(server.stop());
}

/// One `CosignCheckpoints` call whose every item must be cosigned.
async fn cosign_batch(client: &mut SignerClient<Channel>, items: Vec<pb::CosignCheckpointRequest>) {
    let count = items.len();
    let results = client
        .cosign_checkpoints(pb::CosignCheckpointsRequest { items })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), count);
    for result in results {
        assert!(
            matches!(
                result.result,
                Some(pb::cosign_checkpoint_result::Result::Cosigned(_))
            ),
            "{result:?}"
        );
    }
}

/// Calls and fork guard transactions of the concurrent single-call benchmarks.
static TRANSACTIONS: Mutex<BTreeMap<&'static str, (u64, f64)>> = Mutex::new(BTreeMap::new());

/// The fork guard's committed transactions so far, from the `Metrics` call.
async fn transactions(client: &SignerClient<Channel>) -> f64 {
    let text = client
        .clone()
        .metrics(pb::MetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .prometheus_text;
    text.lines()
        .find_map(|line| line.strip_prefix("signer_fork_guard_transactions_total "))
        .and_then(|value| value.parse().ok())
        .unwrap()
}

// ---------------------------------------------------------------------------
// Summary
// ---------------------------------------------------------------------------

fn micros(name: &str) -> f64 {
    mean(name).as_secs_f64() * 1e6
}

fn summary() {
    let names: Vec<&str> = RESULTS.lock().unwrap().keys().copied().collect();
    println!(
        "\nsummary: mean time per cosignature over all timed batches (16-in-flight: wall time / calls)"
    );
    for name in names {
        let us = micros(name);
        println!("  {name:<40} {us:>9.1} us {:>9.0} cosignatures/s", 1e6 / us);
    }
    let sign = "in-process/ed25519-cosignature-v1";
    println!(
        "cosignatures/s against the in-process signature bound (one Ed25519 signature per \
         {:.1} us on one core = {:.0}/s; x2 for the two cores)",
        micros(sign),
        1e6 / micros(sign)
    );
    for name in [
        "grpc/sequential-grow",
        "grpc/16-in-flight-grow",
        "grpc/batch-1-grow",
        "grpc/batch-16-grow",
        "grpc/batch-64-grow",
        "grpc/batch-256-grow",
        "grpc/batch-64-4-in-flight-grow",
    ] {
        let rate = 1e6 / micros(name);
        println!(
            "  {name:<36} {rate:>9.0}/s = {:>5.1}% of one core's bound, {:>5.1}% of two",
            100.0 * rate * micros(sign) / 1e6,
            50.0 * rate * micros(sign) / 1e6
        );
    }
    for (name, (calls, transactions)) in TRANSACTIONS.lock().unwrap().iter() {
        println!(
            "  {name}: {calls} calls, {transactions} fork guard transactions ({:.1} calls per durable write)",
            *calls as f64 / transactions
        );
    }
    println!("ratios (time per cosignature; the throughput ratio is the inverse)");
    for (a, b) in [
        ("grpc/sequential-grow", "in-process/service-grow"),
        ("grpc/sequential-grow", sign),
        ("grpc/16-in-flight-grow", "in-process/service-grow"),
        ("grpc/16-in-flight-grow", sign),
        ("grpc/sequential-same", "in-process/service-same"),
        ("grpc/16-in-flight-same", "in-process/service-same"),
        ("in-process/service-grow", sign),
        ("in-process/service-same", sign),
    ] {
        println!("  {a:<28} / {b:<36} {:>7.2}", micros(a) / micros(b));
    }
    let durable =
        micros("in-process/fork-guard-file-grow") - micros("in-process/fork-guard-memory-grow");
    println!(
        "durable guard write (fork-guard-file-grow - fork-guard-memory-grow): {durable:.1} us = \
         {:.0}% of service-grow, {:.0}% of grpc/sequential-grow; \
         service-grow - service-memory-guard-grow: {:.1} us",
        100.0 * durable / micros("in-process/service-grow"),
        100.0 * durable / micros("grpc/sequential-grow"),
        micros("in-process/service-grow") - micros("in-process/service-memory-guard-grow"),
    );
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let tree = Arc::new(Tree::new());
    let keys = pki::Keys {
        ml_dsa_44: false,
        manifest: false,
    };
    let installation = pki::Installation::new(keys);
    let with_ml_dsa = pki::Installation::new(pki::Keys {
        ml_dsa_44: true,
        ..keys
    });
    in_process(&mut criterion, &runtime, &tree, &installation, &with_ml_dsa);
    grpc(&mut criterion, &runtime, &tree, &installation);
    criterion.final_summary();
    summary();
}
