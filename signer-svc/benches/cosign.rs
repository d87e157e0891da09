//! Cosignatures per second: through mutual-TLS gRPC with the file backend,
//! beside the in-process bounds, in one run.
//!
//! - `in-process/ed25519-cosignature-v1`: build the cosignature/v1 message and
//!   sign it with Ed25519 in a loop (the floor for one cosignature).
//! - `in-process/fork-guard-file` and `in-process/fork-guard-memory`: the fork
//!   guard's check-and-record transaction alone, on the SQLite file
//!   (`synchronous=FULL`: one durable write per cosignature) and in memory.
//! - `in-process/service`: the service's `CosignCheckpoint` handler called
//!   directly (no gRPC, no TLS), with the file-backed guard, the audit log and
//!   metrics; `…-memory-guard` the same with the guard in memory, so the
//!   difference is the durable write; `…-ml-dsa-44` with an ML-DSA-44 key too.
//! - `grpc/sequential`: one client awaiting each call over mTLS gRPC.
//! - `grpc/16-in-flight`: 16 concurrent calls over one HTTP/2 channel (the
//!   figure per call is wall time divided by calls, i.e. 1 / throughput).
//!
//! Every call re-cosigns the recorded checkpoint of one of 16 logs (same size,
//! same root, no proof), which the guard allows and records again; growth adds
//! only a consistency proof check (a few dozen hashes). Client and server share
//! one process and one Tokio runtime. A summary with ratios is printed at the end.

#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../tests/support/pki.rs"]
mod pki;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::Criterion;
use ed25519_dalek::Signer as _;
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use signer_svc::fork_guard::ForkGuard;
use signer_svc::service::SignerService;
use signer_svc::tls::PeerIdentity;
use tokio::runtime::Runtime;
use tonic::Request;
use tonic::transport::Channel;
use witness_core::checkpoint::Checkpoint;
use witness_core::cosignature::cosignature_v1_message;
use witness_core::merkle::{Hash, leaf_hash};
use witness_proto::signer as pb;
use witness_proto::signer::signer_client::SignerClient;
use witness_proto::signer::signer_server::Signer as _;

const LOGS: u64 = 16;
const SIZE: u64 = 1000;
const IN_FLIGHT: u64 = 16;

/// Mean time per operation of each benchmark, from every timed batch.
static RESULTS: Mutex<BTreeMap<&'static str, (u64, Duration)>> = Mutex::new(BTreeMap::new());

fn record(name: &'static str, iters: u64, elapsed: Duration) -> Duration {
    let mut results = RESULTS.lock().unwrap();
    let entry = results.entry(name).or_default();
    entry.0 += iters;
    entry.1 += elapsed;
    elapsed
}

fn mean(name: &str) -> Option<Duration> {
    let results = RESULTS.lock().unwrap();
    let (iters, total) = results.get(name)?;
    Some(*total / u32::try_from(*iters).ok()?)
}

fn requests() -> Arc<Vec<pb::CosignCheckpointRequest>> {
    Arc::new(
        (0..LOGS)
            .map(|i| pb::CosignCheckpointRequest {
                origin: format!("bench.example/log-{i}"),
                size: SIZE,
                root_hash: leaf_hash(&i.to_be_bytes()).0.to_vec(),
                extension_lines: Vec::new(),
                old_size: 0,
                consistency_proof: Vec::new(),
            })
            .collect(),
    )
}

/// The re-cosign of a log already cosigned at `SIZE`.
fn again(request: &pb::CosignCheckpointRequest) -> pb::CosignCheckpointRequest {
    pb::CosignCheckpointRequest {
        old_size: SIZE,
        ..request.clone()
    }
}

fn with_peer(request: pb::CosignCheckpointRequest) -> Request<pb::CosignCheckpointRequest> {
    let mut request = Request::new(request);
    request.extensions_mut().insert(PeerIdentity {
        identities: vec![format!("uri:{}", pki::GOOD_IDENTITY)],
    });
    request
}

/// A service built from an installation's configuration, with every log
/// cosigned once at `SIZE`.
fn service(
    runtime: &Runtime,
    installation: &pki::Installation,
    memory_guard: bool,
) -> Arc<SignerService> {
    let mut service = signer_svc::build_service(&installation.config).unwrap();
    if memory_guard {
        service.guard = Arc::new(ForkGuard::in_memory().unwrap());
    }
    let service = Arc::new(service);
    runtime.block_on(async {
        for request in requests().iter() {
            service
                .cosign_checkpoint(with_peer(request.clone()))
                .await
                .unwrap();
        }
    });
    service
}

fn in_process(
    c: &mut Criterion,
    runtime: &Runtime,
    installation: &pki::Installation,
    ml_dsa: &pki::Installation,
) {
    let mut group = c.benchmark_group("cosign/in-process");

    // The signing floor: message construction and one Ed25519 signature.
    let pem = std::fs::read_to_string(installation.dir.path().join("ed25519.pem")).unwrap();
    let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).unwrap();
    let text = Checkpoint::new("bench.example/log-0", SIZE, Hash([7; 32]), Vec::new())
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
    let checkpoints: Vec<Checkpoint> = requests()
        .iter()
        .map(|r| {
            Checkpoint::new(
                &r.origin,
                r.size,
                Hash::from_slice(&r.root_hash).unwrap(),
                Vec::new(),
            )
            .unwrap()
        })
        .collect();
    let state = tempfile::tempdir().unwrap();
    for (name, guard) in [
        (
            "in-process/fork-guard-file",
            ForkGuard::open(&state.path().join("guard.sqlite")).unwrap(),
        ),
        (
            "in-process/fork-guard-memory",
            ForkGuard::in_memory().unwrap(),
        ),
    ] {
        for checkpoint in &checkpoints {
            guard.check_and_record(checkpoint, 0, &[]).unwrap();
        }
        group.bench_function(name.trim_start_matches("in-process/"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for i in 0..iters {
                    let checkpoint = &checkpoints[(i % LOGS) as usize];
                    guard.check_and_record(checkpoint, SIZE, &[]).unwrap();
                }
                record(name, iters, start.elapsed())
            });
        });
    }

    // The service's handler, without gRPC.
    group.sample_size(30);
    for (name, installation, memory_guard) in [
        ("in-process/service", installation, false),
        ("in-process/service-memory-guard", installation, true),
        ("in-process/service-ml-dsa-44", ml_dsa, false),
    ] {
        let service = service(runtime, installation, memory_guard);
        let requests: Vec<_> = requests().iter().map(again).collect();
        group.bench_function(name.trim_start_matches("in-process/"), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let start = Instant::now();
                    for i in 0..iters {
                        let request = with_peer(requests[(i % LOGS) as usize].clone());
                        black_box(service.cosign_checkpoint(request).await.unwrap());
                    }
                    record(name, iters, start.elapsed())
                })
            });
        });
    }
    group.finish();
}

/// `iters` calls, `in_flight` at a time, over clones of one channel.
async fn concurrent(
    client: &SignerClient<Channel>,
    requests: &Arc<Vec<pb::CosignCheckpointRequest>>,
    iters: u64,
    in_flight: u64,
) -> Duration {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..in_flight.min(iters) {
        let mut client = client.clone();
        let requests = requests.clone();
        let next = next.clone();
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= iters {
                    break;
                }
                black_box(
                    client
                        .cosign_checkpoint(requests[(i % LOGS) as usize].clone())
                        .await
                        .unwrap(),
                );
            }
        });
    }
    while let Some(task) = tasks.join_next().await {
        task.unwrap();
    }
    start.elapsed()
}

fn grpc(c: &mut Criterion, runtime: &Runtime, installation: &pki::Installation) {
    let server = runtime.block_on(installation.start(None));
    let mut client = runtime.block_on(installation.good_client(&server));
    runtime.block_on(async {
        for request in requests().iter() {
            client.cosign_checkpoint(request.clone()).await.unwrap();
        }
    });
    let requests: Arc<Vec<_>> = Arc::new(requests().iter().map(again).collect());

    let mut group = c.benchmark_group("cosign/grpc");
    group.sample_size(30);
    group.bench_function("sequential", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    black_box(
                        client
                            .cosign_checkpoint(requests[(i % LOGS) as usize].clone())
                            .await
                            .unwrap(),
                    );
                }
                record("grpc/sequential", iters, start.elapsed())
            })
        });
    });
    group.bench_function(format!("{IN_FLIGHT}-in-flight"), |b| {
        b.iter_custom(|iters| {
            let elapsed = runtime.block_on(concurrent(&client, &requests, iters, IN_FLIGHT));
            record("grpc/16-in-flight", iters, elapsed)
        });
    });
    group.finish();
    drop(client);
    runtime.block_on(server.stop());
}

fn per_second(time: Duration) -> f64 {
    1.0 / time.as_secs_f64()
}

fn summary() {
    let get = |name| mean(name).unwrap_or_default();
    println!(
        "\nsummary (mean per cosignature, all timed batches; 16-in-flight is wall time / calls)"
    );
    for name in RESULTS.lock().unwrap().keys() {
        let time = get(name);
        println!(
            "  {name:<38} {:>10.1} us {:>10.0} /s",
            time.as_secs_f64() * 1e6,
            per_second(time)
        );
    }
    let sign = get("in-process/ed25519-cosignature-v1");
    let service = get("in-process/service");
    let memory = get("in-process/service-memory-guard");
    let guard = get("in-process/fork-guard-file");
    let sequential = get("grpc/sequential");
    let concurrent = get("grpc/16-in-flight");
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!("ratios");
    println!(
        "  gRPC sequential / in-process service     {:>8.2}x",
        ratio(sequential, service)
    );
    println!(
        "  gRPC sequential / Ed25519 signing        {:>8.2}x",
        ratio(sequential, sign)
    );
    println!(
        "  gRPC 16-in-flight / in-process service   {:>8.2}x",
        ratio(concurrent, service)
    );
    println!(
        "  gRPC 16-in-flight / Ed25519 signing      {:>8.2}x",
        ratio(concurrent, sign)
    );
    println!(
        "  in-process service / Ed25519 signing     {:>8.2}x",
        ratio(service, sign)
    );
    println!(
        "  durable guard write in the service call  {:>8.1}% (service - memory-guard service); guard transaction alone {:.1}% of the service call, {:.1}% of a sequential gRPC call",
        100.0 * (1.0 - ratio(memory, service)),
        100.0 * ratio(guard, service),
        100.0 * ratio(guard, sequential),
    );
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys = pki::Keys {
        ml_dsa_44: false,
        manifest: false,
    };
    let installation = pki::Installation::new(keys);
    let with_ml_dsa = pki::Installation::new(pki::Keys {
        ml_dsa_44: true,
        ..keys
    });
    in_process(&mut criterion, &runtime, &installation, &with_ml_dsa);
    // A fresh installation, so the gRPC server's state starts empty.
    grpc(&mut criterion, &runtime, &pki::Installation::new(keys));
    criterion.final_summary();
    summary();
}
