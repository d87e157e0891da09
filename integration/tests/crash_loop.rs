//! Crash consistency (issue 10): `kill -9` of any of our services, at any
//! moment, under load, never forks a log, never rolls a state back and never
//! loses a cosignature a log received.
//!
//! Clients push checkpoints of a handful of logs (each log pushed by two
//! clients, so requests for one log race) through the real gateway, witness
//! and signer processes, while the test SIGKILLs a random service at a random
//! moment, restarts it at once and goes on, for at least [`MIN_ITERATIONS`]
//! kills. After each restart it samples the witness's stored state and the
//! signer's fork-guard record; at the end, after a clean stop, it checks:
//!
//! 1. every cosigned checkpoint a client received verifies against the
//!    witness key, and those of one log are pairwise consistent (same size:
//!    same root; by size: consistency proofs from the log's own tree, checked
//!    with `witness_core::merkle::verify_consistency` against the roots the
//!    witness signed);
//! 2. the witness's state never went backwards across samples, is at least
//!    every size a client had already received when it was sampled, and is
//!    a root the log really had;
//! 3. every cosignature a client received is in the archive byte for byte
//!    (`checkpoints/<origin>/<size folder>/<size>-<time>-<sha256>.txt`) and listed in a
//!    manifest that verifies against the signer's manifest key;
//! 4. the signer's own record is never behind the witness's state and has the
//!    same root at the same size.
//!
//! The same runs with the PostgreSQL store and two `witness-core` replicas,
//! each behind a gateway of its own (a gateway forwards to one witness
//! endpoint), sharing the signer; the clients spread each log's requests over
//! both gateways, so the replicas race on the same logs.
//!
//! The seed of a run is printed (`CRASH_LOOP_SEED=<n>` replays the same kill
//! schedule; the clients' timing is the machine's). `CRASH_LOOP_ITERATIONS`
//! raises the number of kills above [`MIN_ITERATIONS`].

#![allow(clippy::unwrap_used)]

#[path = "../../witness-core/tests/witness_support/mod.rs"]
mod witness_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use sha2::Digest as _;
use witness_core::checkpoint::{Checkpoint, parse_checkpoint_text};
use witness_core::merkle::{
    Hash, RootBuilder, SubtreeHashSource, prove_consistency, verify_consistency,
};
use witness_core::note::{VerifierKey, parse_note, verify_note};
use witness_core::service::archive::{
    ManifestVerifier, origin_segment, size_folder, verify_manifest,
};
use witness_core::witness_api::{AddCheckpointRequest, serialize_add_checkpoint_body};
use witness_support::TestLog;

use integration::stack::{Service, Stack, StackOptions};

/// Kills per run, at least.
const MIN_ITERATIONS: u32 = 200;
/// Logs pushed.
const LOGS: usize = 8;
/// Concurrent clients; each pushes `LOGS * PUSHERS_PER_LOG / CLIENTS` logs.
const CLIENTS: usize = 4;
/// Clients pushing each log.
const PUSHERS_PER_LOG: usize = 2;
/// The leaves of each log's tree (pushes of 1 to 3 leaves; a log that reaches
/// the end is pushed no further).
const LOG_LEAVES: u64 = 1 << 14;
/// A kill comes after a delay drawn uniformly from 0 to this many ms.
const MAX_KILL_DELAY_MS: u64 = 400;
/// After the last kill, the load goes on this long without kills: every log
/// must get a cosignature again.
const RECOVERY: Duration = Duration::from_secs(10);
/// A request's deadline (a request to a killed service fails much sooner).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Rate limits off the way: this test is about crashes, not rate limiting.
const UNLIMITED: &str = "
[limits]
submission_concurrency = 256

[limits.submission_rate]
per_minute = 1000000
burst = 100000

[limits.per_origin_rate]
per_minute = 1000000
burst = 100000
";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_nine_of_any_service_never_forks_rolls_back_or_loses_a_cosignature_sqlite() {
    let artifacts = integration::artifacts_dir("crash_loop_sqlite").unwrap();
    crash_loop(&artifacts, StackOptions::default(), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_nine_of_any_service_never_forks_rolls_back_or_loses_a_cosignature_postgres_two_replicas()
 {
    let artifacts = integration::artifacts_dir("crash_loop_postgres").unwrap();
    let (url, client) = postgres_schema().await;
    let options = StackOptions {
        postgres_state: Some(url),
        replicas: 2,
        ..StackOptions::default()
    };
    crash_loop(&artifacts, options, Some(client)).await;
}

/// A log under test with every subtree hash of its tree precomputed, so roots
/// and proofs cost a few lookups however large the tree.
struct PushedLog {
    log: TestLog,
    /// `levels[l][i]`: the hash of the complete subtree at level `l`, index `i`.
    levels: Vec<Vec<Hash>>,
    /// `roots[n]`: the root of the first `n` leaves.
    roots: Vec<Hash>,
}

struct Levels<'a>(&'a [Vec<Hash>]);

impl SubtreeHashSource for Levels<'_> {
    fn subtree_hash(&mut self, level: u8, index: u64) -> witness_core::Result<Hash> {
        self.0
            .get(usize::from(level))
            .and_then(|level| level.get(usize::try_from(index).ok()?))
            .copied()
            .ok_or(witness_core::Error::ProofUnavailable {
                reason: "subtree beyond the test log",
            })
    }
}

impl PushedLog {
    fn new(index: usize) -> PushedLog {
        let origin = format!("crash-loop.example/log-{index}");
        let mut log = TestLog::new(&origin, 100 + u8::try_from(index).unwrap());
        log.grow(LOG_LEAVES);
        let mut levels = vec![log.leaves.clone()];
        while levels.last().unwrap().len() > 1 {
            let below = levels.last().unwrap();
            let above = below
                .chunks_exact(2)
                .map(|pair| witness_core::merkle::node_hash(&pair[0], &pair[1]))
                .collect();
            levels.push(above);
        }
        let mut roots = vec![witness_core::merkle::empty_root()];
        let mut builder = RootBuilder::new();
        for leaf in &log.leaves {
            builder.push(*leaf);
            roots.push(builder.root());
        }
        PushedLog { log, levels, roots }
    }

    fn origin(&self) -> &str {
        &self.log.origin
    }

    fn root(&self, size: u64) -> Hash {
        self.roots[usize::try_from(size).unwrap()]
    }

    /// The log-signed checkpoint note at `size`.
    fn signed(&self, size: u64) -> Vec<u8> {
        let checkpoint = Checkpoint::new(self.origin(), size, self.root(size), Vec::new()).unwrap();
        self.log.sign(&checkpoint)
    }

    /// The consistency proof from `old` to `new`, from the log's own tree.
    fn proof(&self, old: u64, new: u64) -> Vec<Hash> {
        if old == 0 || old == new {
            return Vec::new();
        }
        prove_consistency(&mut Levels(&self.levels), old, new).unwrap()
    }
}

/// A cosigned checkpoint a client received (a 200 answer).
#[derive(Clone, Debug)]
struct Received {
    origin: String,
    size: u64,
    root: Hash,
    /// The checkpoint note as the witness archives and serves it: the note the
    /// client sent, then the cosignature lines of the answer.
    note: Vec<u8>,
    /// The replica whose gateway answered.
    replica: usize,
    at: Instant,
}

/// What the clients share with the kill loop.
struct Shared {
    stop: AtomicBool,
    /// Per origin, the largest size any client has received a cosignature for.
    max_received: Mutex<BTreeMap<String, u64>>,
}

#[derive(Default)]
struct ClientReport {
    received: Vec<Received>,
    /// Answers by status (`200`, `409`, `503`, ..., `error` for no answer).
    answers: BTreeMap<String, u64>,
    /// Answers a correct witness never gives, whatever crashed.
    violations: Vec<String>,
}

async fn crash_loop(
    artifacts: &Path,
    options: StackOptions,
    postgres: Option<tokio_postgres::Client>,
) {
    let seed: u64 = std::env::var("CRASH_LOOP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    let iterations: u32 = std::env::var("CRASH_LOOP_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(MIN_ITERATIONS)
        .max(MIN_ITERATIONS);
    println!("crash loop: seed {seed} (CRASH_LOOP_SEED={seed} replays the kill schedule)");
    let started = Instant::now();

    let logs: Vec<Arc<PushedLog>> = (0..LOGS).map(|i| Arc::new(PushedLog::new(i))).collect();
    let logs_toml: String = logs
        .iter()
        .map(|log| {
            format!(
                "[[log]]\norigin = \"{}\"\nkey = \"{}\"\n\n",
                log.origin(),
                log.log.verifier.to_vkey()
            )
        })
        .collect();
    let options = StackOptions {
        gateway_extra: UNLIMITED.to_owned(),
        ..options
    };
    let mut stack = Stack::start_with(artifacts, &logs_toml, &options)
        .await
        .unwrap();
    let replicas = stack.replicas();
    let witness_key = VerifierKey::parse_vkey(stack.witness_vkey()).unwrap();
    let gateways: Vec<String> = (0..replicas).map(|r| stack.gateway_url_of(r)).collect();
    let state = match postgres {
        Some(client) => StateStore::Postgres(client),
        None => StateStore::Sqlite(stack.dir().join("witness/state.db")),
    };
    let fork_guard = stack.dir().join("signer/fork-guard.db");
    println!(
        "crash loop: stack up in {:?} ({replicas} replica(s), {} state)",
        started.elapsed(),
        state.kind()
    );

    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        max_received: Mutex::new(BTreeMap::new()),
    });
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        // Client c pushes logs c, c + CLIENTS, ... and the next client's too,
        // so each log has PUSHERS_PER_LOG pushers.
        let mine: Vec<Arc<PushedLog>> = (0..LOGS)
            .filter(|&l| (0..PUSHERS_PER_LOG).any(|p| l % CLIENTS == (client + p) % CLIENTS))
            .map(|l| logs[l].clone())
            .collect();
        let (gateways, witness_key, shared) =
            (gateways.clone(), witness_key.clone(), shared.clone());
        let client_seed = seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(client as u64 + 1));
        clients.push(tokio::spawn(push(
            mine,
            gateways,
            witness_key,
            shared,
            client_seed,
        )));
    }

    // The kill loop.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut kills: BTreeMap<String, u32> = BTreeMap::new();
    let mut samples = Samples::default();
    let mut restart_time = Duration::ZERO;
    let kill_loop_started = Instant::now();
    for iteration in 0..iterations {
        tokio::time::sleep(Duration::from_millis(
            rng.random_range(0..=MAX_KILL_DELAY_MS),
        ))
        .await;
        let service = Service::ALL[rng.random_range(0..Service::ALL.len())];
        let replica = match service {
            Service::Signer => 0,
            _ => rng.random_range(0..replicas),
        };
        stack.kill_replica(service, replica).await.unwrap();
        let restarting = Instant::now();
        stack
            .restart_replica(service, replica)
            .await
            .unwrap_or_else(|e| {
                panic!("seed {seed}, kill {iteration}: restarting {service:?}/{replica}: {e}")
            });
        restart_time += restarting.elapsed();
        *kills.entry(format!("{service:?}/{replica}")).or_default() += 1;
        stack
            .check_running()
            .unwrap_or_else(|e| panic!("seed {seed}, kill {iteration}: {e}"));
        samples
            .take(&shared, &state, &fork_guard, &logs)
            .await
            .unwrap_or_else(|e| {
                panic!("seed {seed}, after kill {iteration} ({service:?}/{replica}): {e}")
            });
    }
    let kill_loop = kill_loop_started.elapsed();
    let last_kill = Instant::now();
    tokio::time::sleep(RECOVERY).await;
    shared.stop.store(true, Ordering::SeqCst);
    let mut received = Vec::new();
    let mut answers: BTreeMap<String, u64> = BTreeMap::new();
    let mut violations = Vec::new();
    for client in clients {
        let report = client.await.unwrap();
        received.extend(report.received);
        for (status, count) in report.answers {
            *answers.entry(status).or_default() += count;
        }
        violations.extend(report.violations);
    }
    samples
        .take(&shared, &state, &fork_guard, &logs)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}, after the load: {e}"));
    println!(
        "crash loop: {iterations} kills in {kill_loop:?} (restarts until listening: {restart_time:?} in all), \
         kills {kills:?}; {} cosignatures received; answers {answers:?}; {} samples",
        received.len(),
        samples.count
    );
    assert!(
        violations.is_empty(),
        "seed {seed}: answers no crash excuses:\n{}",
        violations.join("\n")
    );

    // Every log recovered: a cosignature after the last kill.
    for log in &logs {
        assert!(
            received
                .iter()
                .any(|r| r.origin == log.origin() && r.at > last_kill),
            "seed {seed}: {} got no cosignature in the {RECOVERY:?} after the last kill",
            log.origin()
        );
    }

    // (1) The received cosigned checkpoints of each log are one history.
    for log in &logs {
        let mut mine: Vec<&Received> = received
            .iter()
            .filter(|r| r.origin == log.origin())
            .collect();
        mine.sort_by_key(|r| r.size);
        for pair in mine.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if a.size == b.size {
                assert_eq!(
                    a.root, b.root,
                    "seed {seed}: {} has two roots at size {}",
                    a.origin, a.size
                );
            } else {
                verify_consistency(a.size, b.size, &a.root, &b.root, &log.proof(a.size, b.size))
                    .unwrap_or_else(|e| {
                        panic!(
                            "seed {seed}: {} cosigned {} and {}, inconsistent: {e}",
                            a.origin, a.size, b.size
                        )
                    });
            }
        }
        // Each against the largest, too (the chain above already implies it).
        if let Some(last) = mine.last() {
            for r in &mine {
                if r.size < last.size {
                    verify_consistency(
                        r.size,
                        last.size,
                        &r.root,
                        &last.root,
                        &log.proof(r.size, last.size),
                    )
                    .unwrap_or_else(|e| {
                        panic!("seed {seed}: {} {} vs {}: {e}", r.origin, r.size, last.size)
                    });
                }
            }
        }
    }

    // (2) The monitoring answer of every gateway is the stored state, at
    // least the largest received.
    let stored = state.read().await.unwrap();
    let max_received = shared.max_received.lock().unwrap().clone();
    for replica in 0..replicas {
        stack
            .wait_ready_at(&stack.gateway_url_of(replica))
            .await
            .unwrap();
    }
    for log in &logs {
        let origin = log.origin();
        let (size, root) = stored
            .get(origin)
            .cloned()
            .unwrap_or_else(|| panic!("no state for {origin}"));
        assert!(
            size >= max_received.get(origin).copied().unwrap_or(0),
            "seed {seed}: {origin}: stored size {size} is below a received cosignature ({:?})",
            max_received.get(origin)
        );
        assert_eq!(
            root,
            log.root(size).0.to_vec(),
            "seed {seed}: {origin}: stored root at {size}"
        );
        let hash = hex::encode(sha2::Sha256::digest(origin.as_bytes()));
        for gateway in &gateways {
            let response = stack
                .http()
                .get(format!("{gateway}/{hash}/checkpoint"))
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status().as_u16(),
                200,
                "{gateway}: monitoring path of {origin}"
            );
            let served = response.bytes().await.unwrap();
            verify_note(
                parse_note(&served).unwrap(),
                std::slice::from_ref(&witness_key),
            )
            .unwrap_or_else(|e| panic!("{gateway}: {origin}: served checkpoint: {e}"));
            let text = parse_note(&served).unwrap().text().to_owned();
            let checkpoint = parse_checkpoint_text(&text).unwrap();
            assert_eq!(checkpoint.size(), size, "{gateway}: {origin}: served size");
            assert_eq!(
                *checkpoint.root_hash(),
                log.root(size),
                "{gateway}: {origin}: served root"
            );
        }
    }

    // A clean stop: every service exits 0, the archive seals its manifests.
    let replica_archives: Vec<PathBuf> = (0..replicas)
        .map(|r| stack.replica_dir(r).join("archive"))
        .collect();
    let manifest_key = stack.manifest_key_path().to_path_buf();
    assert!(
        stack.stop().await,
        "seed {seed}: every service exits 0 on SIGTERM after the crash loop"
    );

    // (4) The signer's record, read after the stop, against the final state.
    let stored = state.read().await.unwrap();
    let record = read_sqlite(&fork_guard, "SELECT origin, size, root FROM cosigned").unwrap();
    for log in &logs {
        let origin = log.origin();
        let (witness_size, witness_root) = stored[origin].clone();
        let (signer_size, signer_root) = record
            .get(origin)
            .cloned()
            .unwrap_or_else(|| panic!("seed {seed}: the signer has no record of {origin}"));
        assert!(
            signer_size >= witness_size,
            "seed {seed}: {origin}: the signer's record {signer_size} is behind the witness's state {witness_size}"
        );
        if signer_size == witness_size {
            assert_eq!(
                signer_root, witness_root,
                "seed {seed}: {origin}: roots at {signer_size}"
            );
        }
        assert_eq!(
            signer_root,
            log.root(signer_size).0.to_vec(),
            "seed {seed}: {origin}: signer root"
        );
        println!("crash loop: {origin}: witness {witness_size}, signer {signer_size}");
    }

    // (3) Every received cosignature is archived, byte for byte, and listed in
    // a manifest that verifies.
    let verifier = ManifestVerifier::from_pem(&public_pem(&manifest_key)).unwrap();
    let mut missing = Vec::new();
    let mut unlisted = Vec::new();
    let mut archived_total = 0;
    for (replica, archive) in replica_archives.iter().enumerate() {
        let objects = archived_objects(archive);
        archived_total += objects.len();
        let mut listed: BTreeSet<(String, [u8; 32])> = BTreeSet::new();
        // A kill during a manifest's upload leaves its staging file too.
        let manifests = std::fs::read_dir(archive.join("manifests"))
            .map(|dir| {
                dir.map(|e| e.unwrap().path())
                    .filter(|path| !is_staging_path(path))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for manifest in &manifests {
            let verified = verify_manifest(&std::fs::read(manifest).unwrap(), &verifier)
                .unwrap_or_else(|e| panic!("seed {seed}: {}: {e}", manifest.display()));
            for subject in verified.subjects {
                let bytes = objects.get(&subject.name).unwrap_or_else(|| {
                    panic!(
                        "{}: lists {} that is not archived",
                        manifest.display(),
                        subject.name
                    )
                });
                assert_eq!(
                    <[u8; 32]>::from(sha2::Sha256::digest(bytes)),
                    subject.sha256,
                    "{}: digest of {}",
                    manifest.display(),
                    subject.name
                );
                listed.insert((subject.name, subject.sha256));
            }
        }
        for r in received.iter().filter(|r| r.replica == replica) {
            let sha: [u8; 32] = sha2::Sha256::digest(&r.note).into();
            let prefix = format!(
                "checkpoints/{}/{:019}/{:019}-",
                origin_segment(&r.origin),
                size_folder(r.size),
                r.size
            );
            let suffix = format!("-{}.txt", hex::encode(sha));
            let found = objects.iter().find(|(name, bytes)| {
                name.starts_with(&prefix) && name.ends_with(&suffix) && **bytes == r.note
            });
            match found {
                None => missing.push(format!("replica {replica}: {} at {}", r.origin, r.size)),
                Some((name, _)) if !listed.contains(&(name.clone(), sha)) => {
                    unlisted.push(format!("replica {replica}: {name}"))
                }
                Some(_) => {}
            }
        }
        println!(
            "crash loop: replica {replica}: {} archived objects, {} listed in {} manifests",
            objects.len(),
            listed.len(),
            manifests.len()
        );
    }
    println!(
        "crash loop: {} received cosignatures, {archived_total} archived objects, {} received but not archived, \
         {} archived but in no manifest; {:?} in all",
        received.len(),
        missing.len(),
        unlisted.len(),
        started.elapsed()
    );
    assert!(
        missing.is_empty(),
        "seed {seed}: {} of {} received cosignatures are not in the archive:\n{}",
        missing.len(),
        received.len(),
        missing.join("\n")
    );
    assert!(
        unlisted.is_empty(),
        "seed {seed}: {} archived cosignatures are in no manifest:\n{}",
        unlisted.len(),
        unlisted.join("\n")
    );
}

/// One client: pushes its logs in turn, each from the size it last learned
/// the witness has (a 200 or a 409), 1 to 3 leaves at a time, through a random
/// gateway; errors and 5xx during kills are expected and retried.
async fn push(
    logs: Vec<Arc<PushedLog>>,
    gateways: Vec<String>,
    witness_key: VerifierKey,
    shared: Arc<Shared>,
    seed: u64,
) -> ClientReport {
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut report = ClientReport::default();
    let mut known = vec![0u64; logs.len()];
    let mut turn = 0usize;
    while !shared.stop.load(Ordering::SeqCst) {
        let k = turn % logs.len();
        turn += 1;
        let log = &logs[k];
        let old = known[k];
        let new = old + rng.random_range(1..=3);
        if new > LOG_LEAVES {
            continue;
        }
        let replica = rng.random_range(0..gateways.len());
        // What was received before this request is in the witness's state
        // before the request is applied: a 409 must name at least that.
        let floor = shared
            .max_received
            .lock()
            .unwrap()
            .get(log.origin())
            .copied()
            .unwrap_or(0);
        let signed = log.signed(new);
        let body = serialize_add_checkpoint_body(&AddCheckpointRequest {
            old_size: old,
            consistency_proof: log.proof(old, new),
            checkpoint: signed.clone(),
        });
        let answer = async {
            let response = http
                .post(format!("{}/add-checkpoint", gateways[replica]))
                .body(body)
                .send()
                .await?;
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            Ok::<_, reqwest::Error>((status, content_type, response.text().await?))
        }
        .await;
        let (status, content_type, text) = match answer {
            Ok(answer) => answer,
            Err(_) => {
                *report.answers.entry("error".into()).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        *report.answers.entry(status.to_string()).or_default() += 1;
        match status {
            200 => {
                let mut note = signed;
                note.extend_from_slice(text.as_bytes());
                let verified = parse_note(&note)
                    .and_then(|parsed| verify_note(parsed, std::slice::from_ref(&witness_key)))
                    .and_then(|verified| parse_checkpoint_text(verified.note().text()));
                let checkpoint = match verified {
                    Ok(checkpoint)
                        if checkpoint.size() == new && checkpoint.origin() == log.origin() =>
                    {
                        checkpoint
                    }
                    Ok(other) => {
                        report.violations.push(format!(
                            "{}: {old}->{new}: a 200 for another checkpoint: {} at {}",
                            log.origin(),
                            other.origin(),
                            other.size()
                        ));
                        continue;
                    }
                    Err(e) => {
                        report.violations.push(format!(
                            "{}: {old}->{new}: a 200 whose cosignature does not verify: {e}: {text:?}",
                            log.origin()
                        ));
                        continue;
                    }
                };
                {
                    let mut max = shared.max_received.lock().unwrap();
                    let entry = max.entry(log.origin().to_owned()).or_default();
                    *entry = (*entry).max(new);
                }
                report.received.push(Received {
                    origin: log.origin().to_owned(),
                    size: new,
                    // The root the witness cosigned, as its note says.
                    root: *checkpoint.root_hash(),
                    note,
                    replica,
                    at: Instant::now(),
                });
                known[k] = new;
            }
            409 => {
                let size = text.strip_suffix('\n').and_then(|s| s.parse::<u64>().ok());
                match size {
                    Some(size)
                        if content_type.starts_with("text/x.tlog.size") && size <= LOG_LEAVES =>
                    {
                        if size < floor {
                            report.violations.push(format!(
                                "{}: {old}->{new}: 409 names size {size}, below {floor} already received: a rollback",
                                log.origin()
                            ));
                        }
                        if size == old {
                            report.violations.push(format!(
                                "{}: {old}->{new}: 409 names the old size itself",
                                log.origin()
                            ));
                        }
                        known[k] = size;
                    }
                    _ => report.violations.push(format!(
                        "{}: {old}->{new}: 409 ({content_type}) without a size: {text:?}",
                        log.origin()
                    )),
                }
            }
            // The gateway's answer while the witness or the signer is down
            // or restarting: unavailable, retry. A 502 would say the witness
            // answered out of protocol, which a crash is not.
            503 => tokio::time::sleep(Duration::from_millis(20)).await,
            _ => report.violations.push(format!(
                "{}: {old}->{new}: HTTP {status} ({content_type}): {text:?}",
                log.origin()
            )),
        }
    }
    report
}

/// Where the witness keeps its state, read from outside.
enum StateStore {
    Sqlite(PathBuf),
    Postgres(tokio_postgres::Client),
}

impl StateStore {
    fn kind(&self) -> &'static str {
        match self {
            StateStore::Sqlite(_) => "SQLite",
            StateStore::Postgres(_) => "PostgreSQL",
        }
    }

    /// origin -> (size, root).
    async fn read(&self) -> Result<BTreeMap<String, (u64, Vec<u8>)>, String> {
        match self {
            StateStore::Sqlite(path) => read_sqlite(path, "SELECT origin, size, root FROM state"),
            StateStore::Postgres(client) => {
                let rows = client
                    .query("SELECT origin, size, root FROM state", &[])
                    .await
                    .map_err(|e| format!("reading the PostgreSQL state: {e}"))?;
                rows.iter()
                    .map(|row| {
                        let size: i64 = row.get(1);
                        Ok((
                            row.get(0),
                            (u64::try_from(size).map_err(|e| e.to_string())?, row.get(2)),
                        ))
                    })
                    .collect()
            }
        }
    }
}

/// A SQLite table of (origin, size, root), opened read-only (retried while
/// the file is busy or being recovered by a restarting service).
fn read_sqlite(path: &Path, query: &str) -> Result<BTreeMap<String, (u64, Vec<u8>)>, String> {
    let read = || -> rusqlite::Result<BTreeMap<String, (u64, Vec<u8>)>> {
        let connection = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        connection.busy_timeout(Duration::from_secs(10))?;
        let mut statement = connection.prepare(query)?;
        statement
            .query_map([], |row| {
                let size: i64 = row.get(1)?;
                Ok((row.get(0)?, (size.max(0) as u64, row.get(2)?)))
            })?
            .collect()
    };
    let mut last = None;
    for _ in 0..50 {
        match read() {
            Ok(table) => return Ok(table),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("reading {}: {last:?}", path.display()))
}

/// The witness state and signer record after each restart, checked against
/// the previous samples and what clients had received.
#[derive(Default)]
struct Samples {
    witness: BTreeMap<String, (u64, Vec<u8>)>,
    signer: BTreeMap<String, (u64, Vec<u8>)>,
    count: u32,
}

impl Samples {
    async fn take(
        &mut self,
        shared: &Shared,
        state: &StateStore,
        fork_guard: &Path,
        logs: &[Arc<PushedLog>],
    ) -> Result<(), String> {
        // Read in this order: received before the state, the state before the
        // signer's record (the signer records before the witness stores).
        let floor = shared.max_received.lock().unwrap().clone();
        let witness = state.read().await?;
        let signer = read_sqlite(fork_guard, "SELECT origin, size, root FROM cosigned")?;
        for log in logs {
            let origin = log.origin();
            let w = witness.get(origin);
            let s = signer.get(origin);
            let received = floor.get(origin).copied().unwrap_or(0);
            let w_size = w.map_or(0, |w| w.0);
            let s_size = s.map_or(0, |s| s.0);
            if w_size < received {
                return Err(format!(
                    "{origin}: the witness's state {w_size} is below {received}, already received"
                ));
            }
            if let Some((size, root)) = w
                && *root != log.root(*size).0.to_vec()
            {
                return Err(format!(
                    "{origin}: the witness stored a root the log never had at {size}"
                ));
            }
            if let Some((size, root)) = s
                && *root != log.root(*size).0.to_vec()
            {
                return Err(format!(
                    "{origin}: the signer recorded a root the log never had at {size}"
                ));
            }
            if let Some((before, _)) = self.witness.get(origin)
                && w_size < *before
            {
                return Err(format!(
                    "{origin}: the witness's state went back from {before} to {w_size}"
                ));
            }
            if let Some((before, _)) = self.signer.get(origin)
                && s_size < *before
            {
                return Err(format!(
                    "{origin}: the signer's record went back from {before} to {s_size}"
                ));
            }
            if s_size < w_size {
                return Err(format!(
                    "{origin}: the signer's record {s_size} is behind the witness's state {w_size}"
                ));
            }
        }
        self.witness = witness;
        self.signer = signer;
        self.count += 1;
        Ok(())
    }
}

/// Every object under `<archive>/checkpoints/`, by name relative to the
/// archive's root; each name's digest must be its bytes'. A file named
/// `<object>#<digits>` is not an object: it is object_store's staging file for
/// an upload (written, then renamed onto the object's name), left behind when
/// the kill lands between the two. object_store's own listing skips such names,
/// and so does every reader of the archive.
fn archived_objects(archive: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut objects = BTreeMap::new();
    let mut pending = vec![archive.join("checkpoints")];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let name = path
                .strip_prefix(archive)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            if is_staging_path(&path) {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let digest = hex::encode(sha2::Sha256::digest(&bytes));
            assert!(
                name.ends_with(&format!("-{digest}.txt")),
                "{name}: its bytes' digest is {digest}"
            );
            objects.insert(name, bytes);
        }
    }
    objects
}

/// Whether the file name `file` is an object_store staging file's: `#` and then
/// only digits (the rule of object_store's `LocalFileSystem`, which never lists
/// them).
fn is_staging_file(file: &str) -> bool {
    file.split_once('#')
        .is_some_and(|(_, suffix)| !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()))
}

/// [`is_staging_file`] of `path`'s file name.
fn is_staging_path(path: &Path) -> bool {
    path.file_name()
        .and_then(|file| file.to_str())
        .is_some_and(is_staging_file)
}

#[test]
fn staging_files_left_by_a_kill_are_told_from_archived_objects() {
    assert!(is_staging_file("20261129T182851Z-5053.txt#1"));
    assert!(is_staging_file("20261129T182851Z-5053.txt#42"));
    assert!(!is_staging_file("20261129T182851Z-5053.txt"));
    assert!(!is_staging_file("20261129T182851Z-5053.txt#"));
    assert!(!is_staging_file("20261129T182851Z-5053.txt#1a"));
}

/// The PEM public key of the P-256 private key in `path`.
fn public_pem(path: &Path) -> String {
    use p256::pkcs8::{DecodePrivateKey as _, EncodePublicKey as _, LineEnding};
    let key = p256::SecretKey::from_pkcs8_pem(&std::fs::read_to_string(path).unwrap()).unwrap();
    key.public_key().to_public_key_pem(LineEnding::LF).unwrap()
}

/// A schema of its own in the test database (`WITNESS_TEST_POSTGRES_URL`,
/// which scripts/test exports from scripts/postgres-env): the URL the
/// replicas use and a client reading the same schema.
async fn postgres_schema() -> (String, tokio_postgres::Client) {
    let base = std::env::var("WITNESS_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "WITNESS_TEST_POSTGRES_URL is not set: run scripts/postgres-env and export its output \
             as WITNESS_TEST_POSTGRES_URL (scripts/test does both)"
        )
    });
    let connect = |url: String| async move {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot connect to WITNESS_TEST_POSTGRES_URL ({e}): run scripts/postgres-env"
                )
            });
        tokio::spawn(connection);
        client
    };
    let admin = connect(base.clone()).await;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let schema = format!("crash_loop_{}_{nanos}", std::process::id());
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
    let reader = connect(url.clone()).await;
    (url, reader)
}
