//! End-to-end load benchmark of c2sp.org/tlog-witness `add-checkpoint`, run
//! in one invocation against our stack (signer-svc, `rekor-witness serve` and
//! `rekor-witness-gateway` as three processes over mutual TLS, SQLite state
//! with durable writes) and against the real peers litewitness and omniwitness
//! (Go programs from `scripts/go-peers`, SQLite with durable writes too), with
//! the same logs and the same request bodies for all three.
//!
//! `cargo build --release --bin signer-svc --bin rekor-witness --bin rekor-witness-gateway`
//! then `cargo bench -p integration --bench witness_load_e2e`; environment:
//!   LOADGEN_LOGS                 logs of workload (a) and of the soak (default 40000)
//!   LOADGEN_ROUNDS               growth rounds of (a) after the first checkpoint (default 1)
//!   LOADGEN_CONCURRENCY          connections in flight in (a) (default 64)
//!   LOADGEN_RATE                 fixed arrival rate of (a) in requests/s; 0 = as fast as possible (default 0)
//!   LOADGEN_HOT_CLIENTS_PER_LOG  clients per hot log in (b) (default 4; 10 hot logs)
//!   LOADGEN_HOT_SECONDS          duration of (b) (default 10)
//!   LOADGEN_TARGETS              comma-separated subset of ours,litewitness,omniwitness (default all)
//!   LOADGEN_PAUSE_BEFORE_A       seconds to sleep before (a) against ours, printing the pids (for `perf record -p`)
//!   LOADGEN_WORKLOADS            comma-separated subset of a,b,c,soak (default a,b,c, plus soak when
//!                                LOADGEN_SOAK_SECONDS > 0); the first checkpoint of every log always runs
//!   LOADGEN_MALLOC_ARENA_MAX     MALLOC_ARENA_MAX of our three services (default 2, as the container
//!                                images set it; `unset` for glibc's default of 8 per core)
//!   LOADGEN_WITNESS_ENV          extra environment of our witness, KEY=VALUE pairs separated by `;`
//!                                (a heap profiler's LD_PRELOAD; README, "Benchmarks")
//!   LOADGEN_ARCHIVE_KEEP_IN      a directory to move our archive into at the end instead of
//!                                removing it: runs back to back then skip the ext4 penalty for
//!                                recently freed inodes (README, "Benchmarks"); remove it later
//!   LOADGEN_ARCHIVE_DIR          an empty directory for our local archive, on another filesystem
//!                                than the state's (a second disk, as the Helm chart and the
//!                                Compose file deploy it); emptied at the end, not kept
//!   LOADGEN_SOAK_SECONDS         duration of the soak; 0 = no soak (default 0)
//!   LOADGEN_SOAK_RATE            fixed arrival rate of the soak in requests/s (default 700: half
//!                                the 1,400/s (a) measures with every checkpoint archived, README;
//!                                set half the maximum (a) measures on the machine at hand)
//!   LOADGEN_SOAK_SAMPLE_SECONDS  sampling period of the soak (default 10)
//!   LOADGEN_SOAK_WINDOW_SECONDS  length of the windows compared by the verdict (default 60, or a
//!                                third of a shorter soak)
//!   LOADGEN_SOAK_WARMUP_SECONDS  start of the soak left out of the verdict (default: one window)
//!
//! Workloads: (a) every log updated in turn (a first checkpoint each, `old 0`,
//! then LOADGEN_ROUNDS rounds growing each log by one leaf with a consistency
//! proof); (b) 10 hot logs, each pushed by several clients at once (the
//! clients of a log share its latest size; when two send the same update one
//! wins and the other gets the protocol's 409, counted apart from errors);
//! (c) restart with every log in state: time until ready (`/readyz` for ours,
//! the first cosigned `add-checkpoint` for every target).
//!
//! Soak (issue 10; against ours only, between (a) and (b)): every log grows
//! in turn by one leaf with a consistency proof, at LOADGEN_SOAK_RATE
//! requests/s for LOADGEN_SOAK_SECONDS, open loop (each request has a
//! scheduled instant and its latency runs from that instant, so a stall
//! shows however few requests are in flight; pushback is retried as in (a)).
//! Every sample period it prints, and appends to
//! `target/e2e/soak/samples.jsonl`, the RSS (VmRSS), open file descriptors
//! and CPU of signer-svc, rekor-witness and rekor-witness-gateway, and the
//! period's answers: throughput, p50/p99/max latency, statuses, and a check
//! of the period's first cosignature. The gateway's descriptors of the load
//! generator's own keep-alive connections (established on its port, found
//! by socket inode in /proc/net/tcp) are counted apart (`+ N clients`): the
//! load generator opens as many as overlapping requests need. The summary
//! (also `target/e2e/soak/summary.json`) compares the first window after the
//! warm-up with the last: PASS needs no answer but 200 (pushback included),
//! every scheduled request answered, every sampled cosignature valid, no
//! server restarted, RSS growth under 10% (mean of the window's samples) and
//! no file-descriptor growth (the window's lowest count, the load
//! generator's connections aside: a leak raises the floor, while a file the
//! archive holds open for a moment only raises a single sample) for each
//! process, and the last window's p99 within twice the first's. FAIL makes the
//! benchmark exit non-zero. Issue 10's run: LOADGEN_TARGETS=ours
//! LOADGEN_WORKLOADS=soak LOADGEN_SOAK_SECONDS=600 LOADGEN_SOAK_RATE=<half
//! the measured maximum> (40,000 logs by default).
//!
//! Everything that needs signing or hashing on the client side is done before
//! the clock starts (the soak's bodies, rate x seconds of them, packed one
//! buffer per round of the logs: about 310 bytes each, 180 MiB for
//! 1,000/s x 600 s). The load generator
//! runs on the same machine as the servers, so its own CPU (reported)
//! competes with theirs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ed25519_dalek::Signer as _;
use integration::peers::{Litewitness, Omniwitness};
use integration::stack::{Service, Stack};
use witness_core::checkpoint::Checkpoint;
use witness_core::merkle::{Hash, SubtreeHashSource, leaf_hash, node_hash, prove_consistency};
use witness_core::note::{
    Note, NoteSignature, SignatureType, VerifierKey, parse_note, verify_note,
};
use witness_core::witness_api::{AddCheckpointRequest, serialize_add_checkpoint_body};

type Res<T> = Result<T, String>;

const HOT_LOGS: usize = 10;
/// Steps precomputed per hot log: more than (b) can use in its time.
const HOT_STEPS_PER_SECOND: u64 = 600;
/// Extra growth steps of log 0 kept for the restart probes.
const PROBE_STEPS: u64 = 4;
/// Pause before retrying a 429 or 503 in (a).
const RETRY_PAUSE: Duration = Duration::from_millis(5);
/// Attempts per request in (a), the last one's answer counted whatever it is.
const MAX_ATTEMPTS: usize = 200;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Which workloads run (the first checkpoint of every log always does).
struct Workloads {
    a: bool,
    b: bool,
    c: bool,
    soak: bool,
}

/// The soak: its duration, rate, and the windows of its verdict (seconds,
/// multiples of `sample_seconds`).
struct SoakSettings {
    seconds: u64,
    rate: u64,
    sample_seconds: u64,
    window_seconds: u64,
    warmup_seconds: u64,
}

impl SoakSettings {
    fn from_env() -> Res<SoakSettings> {
        let seconds = env_u64("LOADGEN_SOAK_SECONDS", 0);
        let sample_seconds = env_u64("LOADGEN_SOAK_SAMPLE_SECONDS", 10).max(1);
        let default_window = (seconds / 3 / sample_seconds * sample_seconds)
            .clamp(sample_seconds, 60.max(sample_seconds));
        let window_seconds = env_u64("LOADGEN_SOAK_WINDOW_SECONDS", default_window);
        let warmup_seconds = env_u64("LOADGEN_SOAK_WARMUP_SECONDS", window_seconds);
        let soak = SoakSettings {
            seconds,
            rate: env_u64("LOADGEN_SOAK_RATE", 700),
            sample_seconds,
            window_seconds,
            warmup_seconds,
        };
        if seconds == 0 {
            return Ok(soak);
        }
        if soak.rate == 0 {
            return Err("LOADGEN_SOAK_RATE must be at least 1 request/s".to_owned());
        }
        for (name, value) in [
            ("LOADGEN_SOAK_SECONDS", seconds),
            ("LOADGEN_SOAK_WINDOW_SECONDS", window_seconds),
            ("LOADGEN_SOAK_WARMUP_SECONDS", warmup_seconds),
        ] {
            if value % sample_seconds != 0 {
                return Err(format!(
                    "{name}={value} must be a multiple of the sample period ({sample_seconds} s)"
                ));
            }
        }
        if window_seconds == 0 || seconds < warmup_seconds + 2 * window_seconds {
            return Err(format!(
                "a soak of {seconds} s cannot compare two {window_seconds} s windows after a \
                 {warmup_seconds} s warm-up: lengthen LOADGEN_SOAK_SECONDS or shorten \
                 LOADGEN_SOAK_WINDOW_SECONDS / LOADGEN_SOAK_WARMUP_SECONDS"
            ));
        }
        Ok(soak)
    }

    /// Requests the soak sends.
    fn requests(&self) -> u64 {
        self.seconds * self.rate
    }
}

struct Settings {
    logs: usize,
    rounds: u64,
    concurrency: usize,
    rate: u64,
    hot_clients_per_log: usize,
    hot_seconds: u64,
    targets: Vec<String>,
    pause_before_a: u64,
    workloads: Workloads,
    soak: SoakSettings,
}

impl Settings {
    fn from_env() -> Res<Settings> {
        let soak = SoakSettings::from_env()?;
        let workloads = match std::env::var("LOADGEN_WORKLOADS") {
            Err(_) => Workloads {
                a: true,
                b: true,
                c: true,
                soak: soak.seconds > 0,
            },
            Ok(list) => {
                let mut workloads = Workloads {
                    a: false,
                    b: false,
                    c: false,
                    soak: false,
                };
                for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    match name {
                        "a" => workloads.a = true,
                        "b" => workloads.b = true,
                        "c" => workloads.c = true,
                        "soak" => workloads.soak = true,
                        other => {
                            return Err(format!(
                                "LOADGEN_WORKLOADS: unknown workload {other:?} (a, b, c, soak)"
                            ));
                        }
                    }
                }
                if workloads.soak && soak.seconds == 0 {
                    return Err(
                        "LOADGEN_WORKLOADS names the soak but LOADGEN_SOAK_SECONDS is 0".to_owned(),
                    );
                }
                workloads
            }
        };
        Ok(Settings {
            logs: env_u64("LOADGEN_LOGS", 40_000) as usize,
            rounds: env_u64("LOADGEN_ROUNDS", 1),
            concurrency: env_u64("LOADGEN_CONCURRENCY", 64).max(1) as usize,
            rate: env_u64("LOADGEN_RATE", 0),
            hot_clients_per_log: env_u64("LOADGEN_HOT_CLIENTS_PER_LOG", 4).max(1) as usize,
            hot_seconds: env_u64("LOADGEN_HOT_SECONDS", 10).max(1),
            targets: std::env::var("LOADGEN_TARGETS")
                .unwrap_or_else(|_| "ours,litewitness,omniwitness".to_owned())
                .split(',')
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect(),
            pause_before_a: env_u64("LOADGEN_PAUSE_BEFORE_A", 0),
            workloads,
            soak,
        })
    }

    /// Growth rounds of (a) (none when (a) is not selected).
    fn a_rounds(&self) -> u64 {
        if self.workloads.a { self.rounds } else { 0 }
    }

    /// Rounds of the logs the soak needs: each log grows by one leaf a round.
    fn soak_rounds(&self) -> u64 {
        if !self.workloads.soak || self.logs == 0 {
            return 0;
        }
        self.soak.requests().div_ceil(self.logs as u64)
    }
}

// ---------------------------------------------------------------------------
// Logs and their precomputed requests.

/// Every complete subtree hash of a tree, level by level, so proofs and roots
/// cost O(log n) lookups (witness_core's `LeafHashes` rehashes the leaves).
#[derive(Clone, Default)]
struct FullTree {
    levels: Vec<Vec<Hash>>,
}

impl FullTree {
    fn push(&mut self, leaf: Hash) {
        let mut level = 0;
        let mut node = leaf;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            self.levels[level].push(node);
            let row = &self.levels[level];
            if row.len() % 2 == 1 {
                return;
            }
            node = node_hash(&row[row.len() - 2], &row[row.len() - 1]);
            level += 1;
        }
    }

    fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    fn root(&mut self, size: u64) -> Res<Hash> {
        witness_core::merkle::tree_root(self, size).map_err(|e| format!("root: {e}"))
    }
}

impl SubtreeHashSource for FullTree {
    fn subtree_hash(&mut self, level: u8, index: u64) -> witness_core::Result<Hash> {
        self.levels
            .get(usize::from(level))
            .and_then(|row| row.get(index as usize))
            .copied()
            .ok_or(witness_core::Error::ProofUnavailable {
                reason: "subtree is beyond the available leaves",
            })
    }
}

/// A log of the benchmark: its own Ed25519 key and its tree.
#[derive(Clone)]
struct BenchLog {
    origin: String,
    signing: ed25519_dalek::SigningKey,
    verifier: VerifierKey,
    tree: FullTree,
}

impl BenchLog {
    fn new(origin: String, index: u64) -> Res<BenchLog> {
        // Distinct keys per log, without a key generation from the OS each.
        let mut seed = [0x5au8; 32];
        seed[..8].copy_from_slice(&index.to_le_bytes());
        seed[8] = origin.len() as u8;
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let verifier = VerifierKey::from_material(
            &origin,
            SignatureType::Ed25519,
            signing.verifying_key().as_bytes(),
        )
        .map_err(|e| format!("log key: {e}"))?;
        Ok(BenchLog {
            origin,
            signing,
            verifier,
            tree: FullTree::default(),
        })
    }

    fn vkey(&self) -> String {
        self.verifier.to_vkey()
    }

    /// The signed checkpoint note at `size`.
    fn signed(&mut self, size: u64) -> Res<Vec<u8>> {
        let root = self.tree.root(size)?;
        let text = Checkpoint::new(&self.origin, size, root, Vec::new())
            .map_err(|e| format!("checkpoint: {e}"))?
            .to_text();
        let signature = self.signing.sign(text.as_bytes()).to_bytes().to_vec();
        let line = NoteSignature::new(self.verifier.name(), self.verifier.key_id(), signature)
            .map_err(|e| format!("signature line: {e}"))?;
        Ok(Note::new(&text, vec![line])
            .map_err(|e| format!("note: {e}"))?
            .to_bytes())
    }

    /// Grows the tree by one leaf; the `add-checkpoint` body from the previous
    /// size (with its consistency proof; `old 0` and none for the first).
    fn grow_step(&mut self) -> Res<Bytes> {
        let old = self.tree.size();
        self.tree
            .push(leaf_hash(format!("{}/{old}", self.origin).as_bytes()));
        let new = old + 1;
        let consistency_proof = if old == 0 {
            Vec::new()
        } else {
            prove_consistency(&mut self.tree, old, new).map_err(|e| format!("proof: {e}"))?
        };
        let checkpoint = self.signed(new)?;
        Ok(Bytes::from(serialize_add_checkpoint_body(
            &AddCheckpointRequest {
                old_size: old,
                consistency_proof,
                checkpoint,
            },
        )))
    }
}

/// One growth step of every log, packed in one buffer: the soak's hundreds
/// of thousands of bodies without an allocation (and a `Bytes` header) each.
struct CompactRound {
    data: Bytes,
    /// ends[i]: where log i's body ends in `data`.
    ends: Vec<u32>,
}

impl CompactRound {
    fn build(logs: &mut [BenchLog]) -> Res<CompactRound> {
        let mut data = Vec::new();
        let count = logs.len();
        let mut ends = Vec::with_capacity(count);
        for log in logs.iter_mut() {
            let body = log.grow_step()?;
            if data.is_empty() {
                // Bodies of one round differ by a few bytes at most.
                data.reserve((body.len() + 16) * count);
            }
            data.extend_from_slice(&body);
            ends.push(u32::try_from(data.len()).map_err(|_| "a soak round exceeds 4 GiB")?);
        }
        data.shrink_to_fit();
        Ok(CompactRound {
            data: Bytes::from(data),
            ends,
        })
    }

    /// Log `i`'s body (shares the buffer).
    fn get(&self, i: usize) -> Option<Bytes> {
        let end = *self.ends.get(i)? as usize;
        let start = match i.checked_sub(1) {
            Some(previous) => *self.ends.get(previous)? as usize,
            None => 0,
        };
        Some(self.data.slice(start..end))
    }

    fn heap_bytes(&self) -> usize {
        self.data.len() + self.ends.len() * std::mem::size_of::<u32>()
    }
}

/// The requests of every workload, shared by all targets.
struct Workload {
    /// (origin, vkey) of every log (the N logs, then the hot ones).
    registry: Vec<(String, String)>,
    /// rounds[r][i]: log i's step from size r to r + 1.
    rounds: Vec<Vec<Bytes>>,
    /// hot[h][s]: hot log h's step from size s to s + 1.
    hot: Vec<Vec<Bytes>>,
    /// Log 0's next steps after (a), for the restart probes.
    probes: Vec<Bytes>,
    /// soak[r]: every log's soak step r (from size rounds.len() + r), in the
    /// soak's order: request k is soak[k / N].get(k % N).
    soak: Arc<Vec<CompactRound>>,
    /// Log 0's next steps after the soak, for the restart probes of the
    /// target that ran it.
    probes_after_soak: Vec<Bytes>,
    /// Log 0's key, to check a cosigned response.
    log0: VerifierKey,
}

fn probe_steps(log: Option<&BenchLog>) -> Res<Vec<Bytes>> {
    let Some(log) = log else {
        return Ok(Vec::new());
    };
    // A copy: the probes are the steps after those the workloads send.
    let mut ahead = log.clone();
    (0..PROBE_STEPS).map(|_| ahead.grow_step()).collect()
}

fn build_workload(settings: &Settings) -> Res<Workload> {
    let mut logs: Vec<BenchLog> = (0..settings.logs)
        .map(|i| BenchLog::new(format!("bench.example/log{i}"), i as u64))
        .collect::<Res<_>>()?;
    let mut hot_logs: Vec<BenchLog> = (0..HOT_LOGS)
        .map(|i| BenchLog::new(format!("bench.example/hot{i}"), 1_000_000 + i as u64))
        .collect::<Res<_>>()?;
    let mut rounds = Vec::new();
    for _ in 0..=settings.a_rounds() {
        rounds.push(
            logs.iter_mut()
                .map(BenchLog::grow_step)
                .collect::<Res<Vec<_>>>()?,
        );
    }
    let probes = probe_steps(logs.first())?;
    let soak = (0..settings.soak_rounds())
        .map(|_| CompactRound::build(&mut logs))
        .collect::<Res<Vec<_>>>()?;
    let probes_after_soak = probe_steps(logs.first())?;
    let hot_steps = if settings.workloads.b {
        HOT_STEPS_PER_SECOND * settings.hot_seconds
    } else {
        0
    };
    let hot = hot_logs
        .iter_mut()
        .map(|log| {
            (0..hot_steps)
                .map(|_| log.grow_step())
                .collect::<Res<Vec<_>>>()
        })
        .collect::<Res<Vec<_>>>()?;
    let log0 = logs
        .first()
        .map(|l| l.verifier.clone())
        .ok_or("LOADGEN_LOGS must be at least 1")?;
    let registry = logs
        .iter()
        .chain(hot_logs.iter())
        .map(|l| (l.origin.clone(), l.vkey()))
        .collect();
    Ok(Workload {
        registry,
        rounds,
        hot,
        probes,
        soak: Arc::new(soak),
        probes_after_soak,
        log0,
    })
}

// ---------------------------------------------------------------------------
// Server processes: CPU and memory from /proc.

/// A child process of this benchmark, by the base name of its program.
#[derive(Clone, Debug)]
struct ProcSample {
    name: String,
    pid: u32,
    cpu_seconds: f64,
    peak_rss_mib: f64,
}

fn proc_cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of the line, 12 and 13 after `)`.
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

fn proc_status_kib(pid: &str, field: &str) -> Option<f64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn proc_ppid(pid: &str) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// This process's direct children (our services or a peer and its agent).
fn children() -> Vec<ProcSample> {
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        let Ok(pid_number) = pid.parse::<u32>() else {
            continue;
        };
        if proc_ppid(&pid) != Some(me) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        let name = Path::new(&*String::from_utf8_lossy(argv0))
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.is_empty() {
            continue;
        }
        found.push(ProcSample {
            name,
            pid: pid_number,
            cpu_seconds: proc_cpu_seconds(&pid).unwrap_or(0.0),
            peak_rss_mib: proc_status_kib(&pid, "VmHWM:").unwrap_or(0.0) / 1024.0,
        });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

fn self_cpu_seconds() -> f64 {
    proc_cpu_seconds("self").unwrap_or(0.0)
}

/// CPU seconds each child spent between two samples (same pid only), and its
/// peak RSS at the second.
fn cpu_between(before: &[ProcSample], after: &[ProcSample]) -> Vec<ProcSample> {
    after
        .iter()
        .map(|a| {
            let start = before
                .iter()
                .find(|b| b.pid == a.pid)
                .map_or(0.0, |b| b.cpu_seconds);
            ProcSample {
                cpu_seconds: a.cpu_seconds - start,
                ..a.clone()
            }
        })
        .collect()
}

fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_file() {
        return meta.len();
    }
    if !meta.is_dir() {
        return 0;
    }
    std::fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| dir_size(&e.path())).sum())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Driving requests.

#[derive(Default)]
struct Outcome {
    latencies: Vec<Duration>,
    /// Answers by status ("200", "409", "503", "connect error", ...).
    statuses: BTreeMap<String, u64>,
    /// The first cosigned answer: (request body, response body).
    first_cosigned: Option<(Bytes, String)>,
}

impl Outcome {
    fn merge(&mut self, other: Outcome) {
        self.latencies.extend(other.latencies);
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        if self.first_cosigned.is_none() {
            self.first_cosigned = other.first_cosigned;
        }
    }

    fn ok(&self) -> u64 {
        self.statuses.get("200").copied().unwrap_or(0)
    }
}

/// POSTs one body; the status label and the response body.
async fn post(client: &reqwest::Client, url: &str, body: Bytes) -> (String, String) {
    match client.post(url).body(body).send().await {
        Ok(response) => {
            let status = response.status().as_u16().to_string();
            match response.text().await {
                Ok(text) => (status, text),
                Err(_) => ("body error".to_owned(), String::new()),
            }
        }
        Err(e) if e.is_connect() => ("connect error".to_owned(), String::new()),
        Err(e) if e.is_timeout() => ("timeout".to_owned(), String::new()),
        Err(_) => ("request error".to_owned(), String::new()),
    }
}

/// Pushback (429, 503) is retried after [`RETRY_PAUSE`], as a log would
/// (sooner than the Retry-After it may name); each refused attempt is counted
/// under `<status> retried`, and the latency of the answer that ends it runs
/// from the first attempt.
async fn post_until_answered(
    client: &reqwest::Client,
    url: &str,
    body: &Bytes,
    outcome: &mut Outcome,
) -> (String, String) {
    for _ in 1..MAX_ATTEMPTS {
        let (status, text) = post(client, url, body.clone()).await;
        if status != "429" && status != "503" {
            return (status, text);
        }
        *outcome
            .statuses
            .entry(format!("{status} retried"))
            .or_default() += 1;
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    post(client, url, body.clone()).await
}

fn record(outcome: &mut Outcome, status: String, text: String, body: &Bytes, latency: Duration) {
    if status == "200" && outcome.first_cosigned.is_none() {
        outcome.first_cosigned = Some((body.clone(), text));
    }
    *outcome.statuses.entry(status).or_default() += 1;
    outcome.latencies.push(latency);
}

/// Sends every body of `round` with `concurrency` connections, as fast as
/// they are answered (closed loop).
async fn drive_closed(
    client: &reqwest::Client,
    url: &str,
    round: &Arc<Vec<Bytes>>,
    concurrency: usize,
) -> Outcome {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, round, next) =
            (client.clone(), url.to_owned(), round.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut outcome = Outcome::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = round.get(i) else { break };
                let started = Instant::now();
                let (status, text) = post_until_answered(&client, &url, body, &mut outcome).await;
                record(&mut outcome, status, text, body, started.elapsed());
            }
            outcome
        }));
    }
    let mut outcome = Outcome::default();
    for task in tasks {
        if let Ok(part) = task.await {
            outcome.merge(part);
        }
    }
    outcome
}

/// Sends every body of `round` at `rate` per second (open loop; latency from
/// each request's scheduled time, so a stalled server is not hidden), with at
/// most `max_in_flight` outstanding.
async fn drive_open(
    client: &reqwest::Client,
    url: &str,
    round: &Arc<Vec<Bytes>>,
    rate: u64,
    max_in_flight: usize,
) -> Outcome {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
    let start = tokio::time::Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tasks = Vec::with_capacity(round.len());
    for (i, body) in round.iter().enumerate() {
        let scheduled = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled).await;
        let Ok(permit) = semaphore.clone().acquire_owned().await else {
            break;
        };
        let (client, url, body) = (client.clone(), url.to_owned(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut outcome = Outcome::default();
            let (status, text) = post_until_answered(&client, &url, &body, &mut outcome).await;
            drop(permit);
            record(&mut outcome, status, text, &body, scheduled.elapsed());
            outcome
        }));
    }
    let mut outcome = Outcome::default();
    for task in tasks {
        if let Ok(part) = task.await {
            outcome.merge(part);
        }
    }
    outcome
}

/// Workload (b): each hot log pushed by `clients_per_log` clients sharing its
/// latest size, for `seconds`.
async fn drive_hot(
    client: &reqwest::Client,
    url: &str,
    hot: &[Arc<Vec<Bytes>>],
    clients_per_log: usize,
    seconds: u64,
) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for steps in hot {
        let size = Arc::new(AtomicU64::new(0));
        for _ in 0..clients_per_log {
            let (client, url, steps, size, stop) = (
                client.clone(),
                url.to_owned(),
                steps.clone(),
                size.clone(),
                stop.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut outcome = Outcome::default();
                while !stop.load(Ordering::Relaxed) {
                    let current = size.load(Ordering::Relaxed);
                    let Some(body) = steps.get(current as usize) else {
                        break;
                    };
                    let started = Instant::now();
                    let (status, text) = post(&client, &url, body.clone()).await;
                    let latency = started.elapsed();
                    match status.as_str() {
                        "200" => {
                            size.fetch_max(current + 1, Ordering::Relaxed);
                        }
                        // The witness is ahead: its size is the body.
                        "409" => {
                            if let Ok(witness_size) = text.trim().parse::<u64>() {
                                size.fetch_max(witness_size, Ordering::Relaxed);
                            }
                        }
                        _ => {}
                    }
                    record(&mut outcome, status, text, body, latency);
                }
                outcome
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut outcome = Outcome::default();
    for task in tasks {
        if let Ok(part) = task.await {
            outcome.merge(part);
        }
    }
    outcome
}

/// Checks that a 200 answer carries a cosignature by `witness_vkey` on the
/// submitted checkpoint.
fn check_cosigned(first: &Option<(Bytes, String)>, witness_vkey: &str) -> Res<()> {
    let (body, response) = first.as_ref().ok_or("no request was cosigned")?;
    let text = String::from_utf8_lossy(body);
    let note = text
        .split_once("\n\n")
        .map(|(_, note)| note)
        .ok_or("request body has no checkpoint")?;
    let witness =
        VerifierKey::parse_vkey(witness_vkey).map_err(|e| format!("witness vkey: {e}"))?;
    let cosigned = parse_note(format!("{note}{response}").as_bytes())
        .map_err(|e| format!("cosigned note: {e}; response {response:?}"))?;
    let verified = verify_note(cosigned, &[witness]).map_err(|e| {
        format!("the cosignature does not verify with {witness_vkey}: {e}; response {response:?}")
    })?;
    if verified.verified().is_empty() {
        return Err(format!("no cosignature by {witness_vkey} in {response:?}"));
    }
    Ok(())
}

/// Polls until `probe` answers 200 (a readiness URL or a cosigned
/// add-checkpoint); the time from `started`.
async fn time_until_ok(
    client: reqwest::Client,
    url: String,
    body: Option<Bytes>,
    started: Instant,
) -> Res<Duration> {
    let deadline = started + Duration::from_secs(120);
    loop {
        let status = match &body {
            Some(body) => post(&client, &url, body.clone()).await.0,
            None => match client.get(&url).send().await {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "error".to_owned(),
            },
        };
        if status == "200" {
            return Ok(started.elapsed());
        }
        if status == "409" {
            return Err(format!("restart probe {url}: 409 (probe already applied?)"));
        }
        if Instant::now() > deadline {
            return Err(format!("{url} not ready within 120 s (last: {status})"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// ---------------------------------------------------------------------------
// Soak (issue 10).

/// Our three server programs and their short names in the soak's lines.
const SERVER_PROGRAMS: [(&str, &str); 3] = [
    ("rekor-witness-gateway", "gateway"),
    ("rekor-witness", "witness"),
    ("signer-svc", "signer"),
];
/// Requests of the soak in flight at most (more wait, their latency running).
const SOAK_MAX_IN_FLIGHT: usize = 4096;

/// Below every target's idle keep-alive close (the gateway's is 10 s).
const CLIENT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the soak waits for its last answers after its last request.
const SOAK_DRAIN_LIMIT: Duration = Duration::from_secs(120);
/// The verdict's limits: RSS growth, p99 growth.
const SOAK_MAX_RSS_GROWTH_PERCENT: f64 = 10.0;
const SOAK_MAX_P99_RATIO: f64 = 2.0;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Socket inodes of the established TCP connections whose local port is
/// `port`: the gateway's side of the load generator's connections.
fn established_inodes(port: u16) -> std::collections::HashSet<u64> {
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ... inode (the 10th field)
            let local_port = fields
                .get(1)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port)
                && fields.get(3) == Some(&"01")
                && let Some(inode) = fields.get(9).and_then(|i| i.parse().ok())
            {
                inodes.insert(inode);
            }
        }
    }
    inodes
}

/// A process's open file descriptors, and how many of them are among the
/// `clients` sockets.
fn fd_count(pid: &str, clients: &std::collections::HashSet<u64>) -> Option<(u64, u64)> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let (mut all, mut of_clients) = (0, 0);
    for entry in entries.flatten() {
        all += 1;
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        let inode = target
            .to_string_lossy()
            .strip_prefix("socket:[")
            .and_then(|rest| rest.strip_suffix(']'))
            .and_then(|i| i.parse::<u64>().ok());
        if inode.is_some_and(|i| clients.contains(&i)) {
            of_clients += 1;
        }
    }
    Some((all, of_clients))
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the soak's requests answered since the last sample.
#[derive(Default)]
struct SoakAnswers {
    latencies: Vec<Duration>,
    /// Answers by status, and refused attempts under `<status> retried`.
    statuses: BTreeMap<String, u64>,
    /// The period's first 200: (request body, response body).
    first_cosigned: Option<(Bytes, String)>,
}

/// One of our server processes at a sample.
#[derive(Clone)]
struct ServerSample {
    program: &'static str,
    short: &'static str,
    pid: u32,
    rss_kib: f64,
    /// Open file descriptors, all of them.
    fds: u64,
    /// Of those, the load generator's connections (the gateway's keep-alive
    /// clients: as many as the load generator keeps, not a server's doing).
    client_fds: u64,
    cpu_seconds: f64,
    /// CPU since the previous sample, in % of one core.
    cpu_percent: f64,
}

impl ServerSample {
    /// Open file descriptors other than the load generator's connections.
    fn own_fds(&self) -> u64 {
        self.fds - self.client_fds
    }
}

/// Our three server processes now (those running), with their CPU share
/// since `previous` (same pid) `period` seconds ago; `gateway_port` tells
/// the load generator's connections apart.
fn server_samples(previous: &[ServerSample], period: f64, gateway_port: u16) -> Vec<ServerSample> {
    let found = children();
    let clients = established_inodes(gateway_port);
    SERVER_PROGRAMS
        .iter()
        .filter_map(|&(program, short)| {
            let child = found.iter().find(|c| c.name == program)?;
            let pid = child.pid.to_string();
            let before = previous
                .iter()
                .find(|b| b.pid == child.pid)
                .map(|b| b.cpu_seconds);
            let (fds, client_fds) = fd_count(&pid, &clients).unwrap_or((0, 0));
            Some(ServerSample {
                program,
                short,
                pid: child.pid,
                rss_kib: proc_status_kib(&pid, "VmRSS:").unwrap_or(0.0),
                fds,
                client_fds,
                cpu_seconds: child.cpu_seconds,
                cpu_percent: before
                    .map_or(0.0, |b| (child.cpu_seconds - b) / period.max(1e-9) * 100.0),
            })
        })
        .collect()
}

/// One sample period of the soak.
struct SoakSample {
    index: u64,
    /// Seconds from the soak's start to this sample.
    at: f64,
    period: f64,
    /// The answers that came after the last regular sample.
    drain: bool,
    /// Requests scheduled so far, and still unanswered at the sample.
    scheduled: u64,
    in_flight: usize,
    /// Sorted.
    latencies: Vec<Duration>,
    statuses: BTreeMap<String, u64>,
    /// The check of the period's first cosigned answer (None: no 200).
    cosignature: Option<Result<(), String>>,
    servers: Vec<ServerSample>,
    loadgen_cpu_percent: f64,
}

impl SoakSample {
    fn answered(&self) -> u64 {
        answered(&self.statuses)
    }

    fn print(&self) {
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        let servers: Vec<String> = self
            .servers
            .iter()
            .map(|p| {
                format!(
                    "{} {:.1} MiB {} fd{} {:.0}%",
                    p.short,
                    p.rss_kib / 1024.0,
                    p.own_fds(),
                    if p.client_fds > 0 {
                        format!(" + {} clients", p.client_fds)
                    } else {
                        String::new()
                    },
                    p.cpu_percent
                )
            })
            .collect();
        let answers = if self.drain {
            format!("drain: {} answers in {:.2} s", self.answered(), self.period)
        } else {
            format!(
                "{:>5.0} s: {:>6.0} answers/s",
                self.at,
                self.answered() as f64 / self.period.max(1e-9)
            )
        };
        println!(
            "  soak {answers:>27}  p50 {:>6.2}  p99 {:>7.2}  max {:>8.2} ms  in flight {:>4}  [{}]  {}; loadgen {:.0}%{}",
            ms(percentile(&self.latencies, 0.50)),
            ms(percentile(&self.latencies, 0.99)),
            ms(self.latencies.last().copied().unwrap_or_default()),
            self.in_flight,
            statuses.join(" "),
            servers.join(", "),
            self.loadgen_cpu_percent,
            match &self.cosignature {
                Some(Err(e)) => format!("; COSIGNATURE CHECK FAILED: {e}"),
                _ => String::new(),
            },
        );
    }

    fn to_json(&self) -> serde_json::Value {
        let answered = self.answered();
        serde_json::json!({
            "sample": self.index,
            "at_s": self.at,
            "period_s": self.period,
            "drain": self.drain,
            "scheduled": self.scheduled,
            "in_flight": self.in_flight,
            "answered": answered,
            "answers_per_second": answered as f64 / self.period.max(1e-9),
            "statuses": self.statuses,
            "errors": errors(&self.statuses),
            "p50_ms": ms(percentile(&self.latencies, 0.50)),
            "p99_ms": ms(percentile(&self.latencies, 0.99)),
            "max_ms": ms(self.latencies.last().copied().unwrap_or_default()),
            "cosignature": match &self.cosignature {
                None => "no 200 to check".to_owned(),
                Some(Ok(())) => "valid".to_owned(),
                Some(Err(e)) => e.clone(),
            },
            "loadgen_cpu_percent": self.loadgen_cpu_percent,
            "processes": self.servers.iter().map(|p| serde_json::json!({
                "program": p.program,
                "pid": p.pid,
                "rss_kib": p.rss_kib,
                "fds": p.fds,
                "client_fds": p.client_fds,
                "cpu_seconds": p.cpu_seconds,
                "cpu_percent": p.cpu_percent,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Answers counted in `statuses` (refused attempts, `<status> retried`, are
/// not answers).
fn answered(statuses: &BTreeMap<String, u64>) -> u64 {
    statuses
        .iter()
        .filter(|(k, _)| !k.ends_with(" retried"))
        .map(|(_, v)| v)
        .sum()
}

/// Everything but 200, pushback retried included.
fn errors(statuses: &BTreeMap<String, u64>) -> u64 {
    statuses
        .iter()
        .filter(|(k, _)| k.as_str() != "200")
        .map(|(_, v)| v)
        .sum()
}

/// What the soak's request tasks share.
#[derive(Clone)]
struct SoakDriver {
    client: reqwest::Client,
    url: String,
    answers: Arc<std::sync::Mutex<SoakAnswers>>,
    scheduled: Arc<AtomicU64>,
    in_flight: Arc<AtomicUsize>,
}

impl SoakDriver {
    /// Sends request k of the soak at `start + k / rate` (open loop), from
    /// `rounds` in order, until `total`.
    async fn schedule(
        self,
        rounds: Arc<Vec<CompactRound>>,
        logs: u64,
        total: u64,
        rate: u64,
        start: tokio::time::Instant,
    ) {
        let semaphore = Arc::new(tokio::sync::Semaphore::new(SOAK_MAX_IN_FLIGHT));
        for k in 0..total {
            let at = start
                + Duration::from_nanos((u128::from(k) * 1_000_000_000 / u128::from(rate)) as u64);
            tokio::time::sleep_until(at).await;
            let Some(body) = rounds
                .get((k / logs) as usize)
                .and_then(|round| round.get((k % logs) as usize))
            else {
                break;
            };
            let Ok(permit) = semaphore.clone().acquire_owned().await else {
                break;
            };
            self.in_flight.fetch_add(1, Ordering::Relaxed);
            self.scheduled.fetch_add(1, Ordering::Relaxed);
            let driver = self.clone();
            tokio::spawn(async move {
                let mut pushback = Outcome::default();
                let (status, text) =
                    post_until_answered(&driver.client, &driver.url, &body, &mut pushback).await;
                let latency = at.elapsed();
                drop(permit);
                {
                    let mut answers = lock(&driver.answers);
                    for (k, v) in pushback.statuses {
                        *answers.statuses.entry(k).or_default() += v;
                    }
                    if status == "200" && answers.first_cosigned.is_none() {
                        answers.first_cosigned = Some((body, text));
                    }
                    *answers.statuses.entry(status).or_default() += 1;
                    answers.latencies.push(latency);
                }
                driver.in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
}

/// The soak's figures over one window of the verdict.
struct SoakWindow {
    from: u64,
    to: u64,
    p99: Duration,
    answers: u64,
    /// Per program, over the window's regular samples.
    servers: BTreeMap<&'static str, WindowServer>,
}

/// One server process over a window of the verdict.
#[derive(Clone, Copy)]
struct WindowServer {
    mean_rss_kib: f64,
    /// Lowest and highest count of file descriptors other than the load
    /// generator's connections, and the highest of all. The verdict compares
    /// the lowest: a descriptor open for a moment (an archive file being
    /// written) shows in some samples only, a leaked one in all that follow.
    min_own_fds: u64,
    max_own_fds: u64,
    max_fds: u64,
    mean_cpu_percent: f64,
}

/// The windows of `window` seconds ending at the soak's end, back to the
/// end of the warm-up, in time order.
fn soak_windows(settings: &SoakSettings, samples: &[SoakSample]) -> Vec<SoakWindow> {
    let mut bounds = Vec::new();
    let mut to = settings.seconds;
    while to >= settings.warmup_seconds + settings.window_seconds {
        bounds.push((to - settings.window_seconds, to));
        to -= settings.window_seconds;
    }
    bounds.reverse();
    let last = bounds.last().copied();
    bounds
        .into_iter()
        .map(|(from, to)| {
            // Regular sample i covers ((i - 1) * period, i * period]; the
            // drain's answers belong to the last window.
            let inside = |s: &&SoakSample| {
                let end = s.index * settings.sample_seconds;
                (!s.drain && end > from && end <= to) || (s.drain && Some((from, to)) == last)
            };
            let mut latencies: Vec<Duration> = samples
                .iter()
                .filter(inside)
                .flat_map(|s| s.latencies.iter().copied())
                .collect();
            latencies.sort_unstable();
            let regular: Vec<&SoakSample> =
                samples.iter().filter(inside).filter(|s| !s.drain).collect();
            let mut servers = BTreeMap::new();
            for &(program, _) in &SERVER_PROGRAMS {
                let of: Vec<&ServerSample> = regular
                    .iter()
                    .filter_map(|s| s.servers.iter().find(|p| p.program == program))
                    .collect();
                if of.is_empty() {
                    continue;
                }
                let n = of.len() as f64;
                servers.insert(
                    program,
                    WindowServer {
                        mean_rss_kib: of.iter().map(|p| p.rss_kib).sum::<f64>() / n,
                        min_own_fds: of.iter().map(|p| p.own_fds()).min().unwrap_or(0),
                        max_own_fds: of.iter().map(|p| p.own_fds()).max().unwrap_or(0),
                        max_fds: of.iter().map(|p| p.fds).max().unwrap_or(0),
                        mean_cpu_percent: of.iter().map(|p| p.cpu_percent).sum::<f64>() / n,
                    },
                );
            }
            SoakWindow {
                from,
                to,
                p99: percentile(&latencies, 0.99),
                answers: latencies.len() as u64,
                servers,
            }
        })
        .collect()
}

/// The soak's verdict against issue 10's criteria.
struct SoakReport {
    failures: Vec<String>,
}

impl SoakReport {
    fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Judges the samples (printing the summary) and writes summary.json.
fn judge_soak(
    settings: &SoakSettings,
    sent: u64,
    unanswered: usize,
    samples: &[SoakSample],
    baseline: &[ServerSample],
    summary_path: &Path,
) -> Res<SoakReport> {
    let mut failures = Vec::new();
    let total = settings.requests();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    for sample in samples {
        for (k, v) in &sample.statuses {
            *statuses.entry(k.clone()).or_default() += v;
        }
    }
    let answered = answered(&statuses);
    let errors = errors(&statuses);
    let status_text: Vec<String> = statuses.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    println!(
        "  soak summary: {total} requests scheduled at {}/s for {} s, {sent} sent, {answered} answered, {unanswered} unanswered; [{}]; errors {errors}",
        settings.rate,
        settings.seconds,
        status_text.join(" "),
    );
    if errors > 0 {
        failures.push(format!(
            "{errors} answers other than 200 (pushback included): [{}]",
            status_text.join(" ")
        ));
    }
    if sent != total || answered != total || unanswered > 0 {
        failures.push(format!(
            "{total} requests scheduled, {sent} sent, {answered} answered, {unanswered} unanswered"
        ));
    }
    let bad_cosignatures: Vec<String> = samples
        .iter()
        .filter_map(|s| match &s.cosignature {
            Some(Err(e)) => Some(format!("sample {}: {e}", s.index)),
            _ => None,
        })
        .collect();
    if let Some(first) = bad_cosignatures.first() {
        failures.push(format!(
            "{} sampled cosignatures did not verify; first: {first}",
            bad_cosignatures.len()
        ));
    }
    let cosignatures_checked = samples
        .iter()
        .filter(|s| matches!(s.cosignature, Some(Ok(()))))
        .count();
    for &(program, _) in &SERVER_PROGRAMS {
        let Some(started) = baseline.iter().find(|p| p.program == program) else {
            failures.push(format!("{program} was not running when the soak started"));
            continue;
        };
        let changed = samples.iter().find(|s| {
            !s.servers
                .iter()
                .any(|p| p.program == program && p.pid == started.pid)
        });
        if let Some(sample) = changed {
            failures.push(format!(
                "{program} (pid {}) exited or restarted by sample {} ({:.0} s)",
                started.pid, sample.index, sample.at
            ));
        }
    }

    let windows = soak_windows(settings, samples);
    let (Some(first), Some(last)) = (windows.first(), windows.last()) else {
        return Err("the soak has no window after its warm-up".to_owned());
    };
    let p99s: Vec<String> = windows
        .iter()
        .map(|w| format!("{}-{} s {:.2}", w.from, w.to, ms(w.p99)))
        .collect();
    let p99_min = windows.iter().map(|w| w.p99).min().unwrap_or_default();
    let p99_max = windows.iter().map(|w| w.p99).max().unwrap_or_default();
    let p99_ratio = last.p99.as_secs_f64() / first.p99.as_secs_f64().max(1e-9);
    println!(
        "  soak p99 per {} s window after the {} s warm-up (ms): {}; min {:.2}, max {:.2}",
        settings.window_seconds,
        settings.warmup_seconds,
        p99s.join(", "),
        ms(p99_min),
        ms(p99_max)
    );
    println!(
        "  soak p99 first window {:.2} ms ({} answers) -> last window {:.2} ms ({} answers): x{p99_ratio:.2} (limit x{SOAK_MAX_P99_RATIO})",
        ms(first.p99),
        first.answers,
        ms(last.p99),
        last.answers
    );
    if first.answers == 0 || last.answers == 0 {
        failures.push("a window of the verdict has no answers".to_owned());
    } else if p99_ratio > SOAK_MAX_P99_RATIO {
        failures.push(format!(
            "p99 grew x{p99_ratio:.2} from the first window ({:.2} ms) to the last ({:.2} ms)",
            ms(first.p99),
            ms(last.p99)
        ));
    }
    let mut servers_json = Vec::new();
    for &(program, short) in &SERVER_PROGRAMS {
        let (Some(&from), Some(&to)) = (first.servers.get(program), last.servers.get(program))
        else {
            failures.push(format!(
                "{program} has no sample in a window of the verdict"
            ));
            continue;
        };
        let growth = (to.mean_rss_kib - from.mean_rss_kib) / from.mean_rss_kib.max(1.0) * 100.0;
        println!(
            "  soak {short:<8} RSS {:.1} -> {:.1} MiB ({growth:+.1}%, limit +{SOAK_MAX_RSS_GROWTH_PERCENT}%)  fds lowest {} -> {}, highest {} -> {} (with the load generator's connections {} -> {})  CPU {:.0}% -> {:.0}%",
            from.mean_rss_kib / 1024.0,
            to.mean_rss_kib / 1024.0,
            from.min_own_fds,
            to.min_own_fds,
            from.max_own_fds,
            to.max_own_fds,
            from.max_fds,
            to.max_fds,
            from.mean_cpu_percent,
            to.mean_cpu_percent,
        );
        if growth >= SOAK_MAX_RSS_GROWTH_PERCENT {
            failures.push(format!(
                "{program} RSS grew {growth:+.1}% ({:.1} -> {:.1} MiB)",
                from.mean_rss_kib / 1024.0,
                to.mean_rss_kib / 1024.0
            ));
        }
        if to.min_own_fds > from.min_own_fds {
            failures.push(format!(
                "{program} open file descriptors (the load generator's connections aside) grew: the window's lowest count went from {} to {}",
                from.min_own_fds, to.min_own_fds
            ));
        }
        servers_json.push(serde_json::json!({
            "program": program,
            "rss_kib_first": from.mean_rss_kib,
            "rss_kib_last": to.mean_rss_kib,
            "rss_growth_percent": growth,
            "fds_lowest_first": from.min_own_fds,
            "fds_lowest_last": to.min_own_fds,
            "fds_highest_first": from.max_own_fds,
            "fds_highest_last": to.max_own_fds,
            "fds_with_clients_first": from.max_fds,
            "fds_with_clients_last": to.max_fds,
            "cpu_percent_first": from.mean_cpu_percent,
            "cpu_percent_last": to.mean_cpu_percent,
        }));
    }
    println!("  soak sampled cosignatures verified: {cosignatures_checked}");
    let report = SoakReport { failures };
    if report.passed() {
        println!("  soak verdict: PASS");
    } else {
        println!("  soak verdict: FAIL");
        for failure in &report.failures {
            println!("    - {failure}");
        }
    }
    let summary = serde_json::json!({
        "seconds": settings.seconds,
        "rate": settings.rate,
        "sample_seconds": settings.sample_seconds,
        "window_seconds": settings.window_seconds,
        "warmup_seconds": settings.warmup_seconds,
        "scheduled": total,
        "sent": sent,
        "answered": answered,
        "unanswered": unanswered,
        "statuses": statuses,
        "errors": errors,
        "cosignatures_verified": cosignatures_checked,
        "windows": windows.iter().map(|w| serde_json::json!({
            "from_s": w.from,
            "to_s": w.to,
            "answers": w.answers,
            "p99_ms": ms(w.p99),
        })).collect::<Vec<_>>(),
        "p99_ratio_last_first": p99_ratio,
        "processes": servers_json,
        "pass": report.passed(),
        "failures": report.failures,
    });
    std::fs::write(summary_path, format!("{summary:#}\n"))
        .map_err(|e| format!("writing {}: {e}", summary_path.display()))?;
    Ok(report)
}

/// The soak against our stack: every log grows in turn at a fixed rate,
/// sampled every period; the verdict at the end.
async fn run_soak(
    client: &reqwest::Client,
    url: &str,
    witness_vkey: &str,
    settings: &Settings,
    workload: &Workload,
) -> Res<SoakReport> {
    use std::io::Write as _;
    let soak = &settings.soak;
    let dir = integration::artifacts_dir("soak")?;
    let samples_path = dir.join("samples.jsonl");
    let mut jsonl = std::io::BufWriter::new(
        std::fs::File::create(&samples_path)
            .map_err(|e| format!("creating {}: {e}", samples_path.display()))?,
    );
    let total = soak.requests();
    let logs = settings.logs as u64;
    println!(
        "  ours         soak: {total} requests at {}/s for {} s over {logs} logs ({} rounds), a sample every {} s; verdict on {} s windows after {} s; samples in {}",
        soak.rate,
        soak.seconds,
        workload.soak.len(),
        soak.sample_seconds,
        soak.window_seconds,
        soak.warmup_seconds,
        samples_path.display(),
    );
    let driver = SoakDriver {
        client: client.clone(),
        url: url.to_owned(),
        answers: Arc::default(),
        scheduled: Arc::default(),
        in_flight: Arc::default(),
    };
    let gateway_port = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.port_or_known_default())
        .ok_or_else(|| format!("no port in {url}"))?;
    let baseline = server_samples(&[], 1.0, gateway_port);
    let mut previous = baseline.clone();
    let mut loadgen_cpu = self_cpu_seconds();
    let start = tokio::time::Instant::now();
    let mut scheduler =
        tokio::spawn(
            driver
                .clone()
                .schedule(workload.soak.clone(), logs, total, soak.rate, start),
        );
    let mut samples: Vec<SoakSample> = Vec::new();
    let periods = soak.seconds / soak.sample_seconds;
    let mut last = start;
    for index in 1..=periods + 1 {
        let drain = index > periods;
        if drain {
            let deadline = tokio::time::Instant::now() + SOAK_DRAIN_LIMIT;
            while (!scheduler.is_finished() || driver.in_flight.load(Ordering::Relaxed) > 0)
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        } else {
            tokio::time::sleep_until(start + Duration::from_secs(index * soak.sample_seconds))
                .await;
        }
        let now = tokio::time::Instant::now();
        let period = (now - last).as_secs_f64();
        last = now;
        let answers = std::mem::take(&mut *lock(&driver.answers));
        let cpu = self_cpu_seconds();
        let servers = server_samples(&previous, period, gateway_port);
        let mut latencies = answers.latencies;
        latencies.sort_unstable();
        let sample = SoakSample {
            index,
            at: (now - start).as_secs_f64(),
            period,
            drain,
            scheduled: driver.scheduled.load(Ordering::Relaxed),
            in_flight: driver.in_flight.load(Ordering::Relaxed),
            latencies,
            statuses: answers.statuses,
            cosignature: answers
                .first_cosigned
                .map(|first| check_cosigned(&Some(first), witness_vkey)),
            servers: servers.clone(),
            loadgen_cpu_percent: (cpu - loadgen_cpu) / period.max(1e-9) * 100.0,
        };
        loadgen_cpu = cpu;
        if drain && sample.statuses.is_empty() {
            break;
        }
        sample.print();
        writeln!(jsonl, "{}", sample.to_json())
            .and_then(|()| jsonl.flush())
            .map_err(|e| format!("writing {}: {e}", samples_path.display()))?;
        if !servers.is_empty() {
            previous = servers;
        }
        samples.push(sample);
    }
    if !scheduler.is_finished() {
        scheduler.abort();
    }
    let _ = (&mut scheduler).await;
    judge_soak(
        soak,
        driver.scheduled.load(Ordering::Relaxed),
        driver.in_flight.load(Ordering::Relaxed),
        &samples,
        &baseline,
        &dir.join("summary.json"),
    )
}

// ---------------------------------------------------------------------------
// Targets.

// One value per target for the whole run; boxing would only add a hop.
#[allow(clippy::large_enum_variant)]
enum Target {
    Ours(Stack),
    Litewitness(Litewitness, PathBuf),
    Omniwitness(Omniwitness, PathBuf),
}

impl Target {
    fn base_url(&self) -> String {
        match self {
            Target::Ours(stack) => stack.gateway_url(),
            Target::Litewitness(lw, _) => lw.base_url(),
            Target::Omniwitness(ow, _) => ow.base_url(),
        }
    }

    fn vkey(&self) -> String {
        match self {
            Target::Ours(stack) => stack.witness_vkey().to_owned(),
            Target::Litewitness(lw, _) => lw.vkey().to_owned(),
            Target::Omniwitness(ow, _) => ow.vkey().to_owned(),
        }
    }

    /// Bytes on disk of the durable state.
    fn state_size(&self) -> u64 {
        match self {
            Target::Ours(stack) => ["witness", "signer", "archive", "archive-spool"]
                .iter()
                .map(|d| {
                    let dir = stack.dir().join(d);
                    // LOADGEN_ARCHIVE_DIR's link counts as its directory.
                    dir_size(&std::fs::canonicalize(&dir).unwrap_or(dir))
                })
                .sum(),
            Target::Litewitness(_, dir) | Target::Omniwitness(_, dir) => std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .filter(|e| e.file_name().to_string_lossy().contains(".db"))
                        .map(|e| dir_size(&e.path()))
                        .sum()
                })
                .unwrap_or(0),
        }
    }
}

/// Removes our stack's archive (a file per cosignature: about 130,000 after
/// workload (a) at 40,000 logs) once every target has run, keeping the logs
/// and the state. Removing them at the start of the next run instead would
/// slow that run: ext4 without a journal skips inodes freed in the last few
/// minutes when it allocates one (README, Benchmarks).
fn remove_archive_objects(ours: &Path) {
    if let Some(elsewhere) = archive_elsewhere() {
        // Emptied, not kept: the next run needs it empty.
        let emptied = std::fs::read_dir(&elsewhere).and_then(|entries| {
            entries.flatten().try_for_each(|entry| {
                if entry.file_type()?.is_dir() {
                    std::fs::remove_dir_all(entry.path())
                } else {
                    std::fs::remove_file(entry.path())
                }
            })
        });
        match emptied {
            Ok(()) => println!("emptied {} (LOADGEN_ARCHIVE_DIR)", elsewhere.display()),
            Err(error) => eprintln!("cannot empty {}: {error}", elsewhere.display()),
        }
        return;
    }
    let dir = Stack::dir_in(ours).join("archive");
    if !dir.exists() {
        return;
    }
    if let Some(keep_in) = std::env::var_os("LOADGEN_ARCHIVE_KEEP_IN") {
        let kept = PathBuf::from(keep_in).join(format!(
            "archive-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        ));
        match std::fs::create_dir_all(kept.parent().unwrap_or(Path::new(".")))
            .and_then(|()| std::fs::rename(&dir, &kept))
        {
            Ok(()) => println!(
                "moved {} to {} (LOADGEN_ARCHIVE_KEEP_IN)",
                dir.display(),
                kept.display()
            ),
            Err(error) => eprintln!(
                "cannot move {} to {}: {error}",
                dir.display(),
                kept.display()
            ),
        }
        return;
    }
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => println!("removed {} (see README, Benchmarks)", dir.display()),
        Err(error) => eprintln!("cannot remove {}: {error}", dir.display()),
    }
}

/// Gateway limits high enough that the benchmark measures the witness, not
/// the rate limiter (the defaults allow 2,000 submissions/s).
const GATEWAY_BENCH_LIMITS: &str = "
[limits]
max_connections = 4096
submission_concurrency = 4096
[limits.submission_rate]
per_minute = 600000000
burst = 10000000
[limits.per_origin_rate]
per_minute = 600000000
burst = 10000000
";

/// glibc's malloc arenas, as the container images set them: without a cap,
/// each of the services' threads can take an arena of its own, whose freed
/// memory is kept and re-touched in turn (RSS swinging by 10-20 MiB under
/// steady load).
const SHIPPED_MALLOC_ARENA_MAX: &str = "2";

/// LOADGEN_ARCHIVE_DIR: our local archive in that directory instead of the
/// stack's `archive/`, which becomes a symbolic link to it (the witness
/// resolves its archive root once, at start).
fn archive_elsewhere() -> Option<PathBuf> {
    std::env::var_os("LOADGEN_ARCHIVE_DIR").map(PathBuf::from)
}

fn place_archive(ours: &Path) -> Res<()> {
    let Some(elsewhere) = archive_elsewhere() else {
        return Ok(());
    };
    let link = Stack::dir_in(ours).join("archive");
    std::fs::create_dir_all(&elsewhere).map_err(|e| format!("{}: {e}", elsewhere.display()))?;
    if std::fs::read_dir(&elsewhere).map_or(true, |mut entries| entries.next().is_some()) {
        return Err(format!(
            "LOADGEN_ARCHIVE_DIR {} must be an empty directory",
            elsewhere.display()
        ));
    }
    std::fs::create_dir_all(Stack::dir_in(ours)).map_err(|e| e.to_string())?;
    match std::fs::symlink_metadata(&link) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&link),
        Ok(_) => std::fs::remove_file(&link),
        Err(_) => Ok(()),
    }
    .map_err(|e| format!("removing {}: {e}", link.display()))?;
    std::os::unix::fs::symlink(&elsewhere, &link)
        .map_err(|e| format!("linking {} to {}: {e}", link.display(), elsewhere.display()))
}

async fn start_ours(artifacts: &Path, registry: &[(String, String)]) -> Res<Target> {
    place_archive(&artifacts.join("ours"))?;
    let mut stack = Stack::start_in(&artifacts.join("ours"), "").await?;
    // Logs are registered as the admin API's AddLog records them (the
    // store's `logs` table, read at start), with the witness stopped: 40,000
    // [[log]] tables exceed the configuration's 1 MiB limit.
    stack.stop_service(Service::Gateway).await;
    stack.stop_service(Service::Witness).await;
    let db = stack.dir().join("witness/state.db");
    let started = Instant::now();
    {
        let sql = |e: rusqlite::Error| format!("registering logs in {}: {e}", db.display());
        let mut connection = rusqlite::Connection::open(&db).map_err(sql)?;
        let transaction = connection.transaction().map_err(sql)?;
        {
            let mut insert = transaction
                .prepare("INSERT INTO logs (origin, verifier_keys) VALUES (?1, ?2)")
                .map_err(sql)?;
            for (origin, vkey) in registry {
                let keys = serde_json::to_string(&[vkey]).map_err(|e| e.to_string())?;
                insert.execute((origin, keys)).map_err(sql)?;
            }
        }
        transaction.commit().map_err(sql)?;
    }
    let gateway_config = stack.dir().join("config/gateway.toml");
    let mut text = std::fs::read_to_string(&gateway_config).map_err(|e| e.to_string())?;
    text.push_str(GATEWAY_BENCH_LIMITS);
    std::fs::write(&gateway_config, text).map_err(|e| e.to_string())?;
    // As the container images run them (deploy/container/*.Containerfile).
    stack.stop_service(Service::Signer).await;
    let arenas = std::env::var("LOADGEN_MALLOC_ARENA_MAX")
        .unwrap_or_else(|_| SHIPPED_MALLOC_ARENA_MAX.to_owned());
    if arenas != "unset" {
        for service in [Service::Signer, Service::Witness, Service::Gateway] {
            stack.set_env(service, "MALLOC_ARENA_MAX", &arenas);
        }
    }
    // Extra environment for the witness only, `KEY=VALUE` pairs separated by
    // `;`: how a heap profiler's preload library gets in (see the README's
    // "Benchmarks" for the heaptrack recipe).
    if let Ok(extra) = std::env::var("LOADGEN_WITNESS_ENV") {
        for pair in extra.split(';').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("LOADGEN_WITNESS_ENV: {pair:?} is not KEY=VALUE"))?;
            stack.set_env(Service::Witness, key, value);
        }
    }
    stack.restart(Service::Signer).await?;
    stack.restart(Service::Witness).await?;
    stack.restart(Service::Gateway).await?;
    stack.wait_ready().await?;
    println!(
        "  ours: {} logs registered and stack restarted in {:.2} s",
        registry.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(Target::Ours(stack))
}

async fn start_litewitness(artifacts: &Path, registry: &[(String, String)]) -> Res<Target> {
    // A short directory: the agent's socket path must fit in 107 bytes.
    let dir = std::env::temp_dir().join(format!("loadgen-lw-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| e.to_string())?;
    }
    let lw = Litewitness::start(&dir, artifacts, "litewitness.bench").await?;
    let started = Instant::now();
    // The rows witnessctl add-log / add-key insert (see integration/GO-PEERS.md),
    // in one transaction.
    let db = dir.join("litewitness.db");
    let sql = |e: rusqlite::Error| format!("registering logs in {}: {e}", db.display());
    let mut connection = rusqlite::Connection::open(&db).map_err(sql)?;
    connection
        .busy_timeout(Duration::from_secs(10))
        .map_err(sql)?;
    let transaction = connection.transaction().map_err(sql)?;
    {
        let mut log = transaction
            .prepare("INSERT INTO log (origin, tree_size, tree_hash) VALUES (?1, 0, ?2)")
            .map_err(sql)?;
        let mut key = transaction
            .prepare("INSERT INTO key (origin, key) VALUES (?1, ?2)")
            .map_err(sql)?;
        let empty = witness_core::merkle::empty_root().to_base64();
        for (origin, vkey) in registry {
            log.execute((origin, &empty)).map_err(sql)?;
            key.execute((origin, vkey)).map_err(sql)?;
        }
    }
    transaction.commit().map_err(sql)?;
    println!(
        "  litewitness: {} logs registered in {:.2} s",
        registry.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(Target::Litewitness(lw, dir))
}

async fn start_omniwitness(artifacts: &Path, registry: &[(String, String)]) -> Res<Target> {
    let dir = artifacts.join("omniwitness");
    let mut ow = Omniwitness::start(&dir, artifacts, "omniwitness.bench").await?;
    let started = Instant::now();
    // Its logs.yaml, as `Omniwitness::add_log` writes it, all at once; it reads
    // the file at start only.
    let quote = |s: &str| serde_json::to_string(s).map_err(|e| e.to_string());
    let mut yaml = String::from("Logs:\n");
    for (origin, vkey) in registry {
        yaml.push_str(&format!(
            "  - Origin: {}\n    URL: \"http://127.0.0.1:9/unused\"\n    PublicKey: {}\n",
            quote(origin)?,
            quote(vkey)?
        ));
    }
    std::fs::write(dir.join("logs.yaml"), yaml).map_err(|e| e.to_string())?;
    ow.process().stop().await;
    ow.process().restart()?;
    let addr = ow
        .base_url()
        .trim_start_matches("http://")
        .parse()
        .map_err(|e| format!("omniwitness address: {e}"))?;
    ow.process().wait_listening(addr).await?;
    println!(
        "  omniwitness: {} logs written to logs.yaml and restarted in {:.2} s",
        registry.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(Target::Omniwitness(ow, dir))
}

// ---------------------------------------------------------------------------
// Results.

struct Row {
    target: String,
    workload: String,
    requests: usize,
    wall: Duration,
    outcome: Outcome,
    processes: Vec<ProcSample>,
    loadgen_cpu: f64,
}

impl Row {
    fn throughput(&self) -> f64 {
        self.outcome.ok() as f64 / self.wall.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        percentile(&self.outcome.latencies, p)
    }

    fn server_cpu(&self) -> f64 {
        self.processes.iter().map(|p| p.cpu_seconds).sum()
    }

    fn print(&self) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let statuses: Vec<String> = self
            .outcome
            .statuses
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        let processes: Vec<String> = self
            .processes
            .iter()
            .map(|p| {
                format!(
                    "{} {:.2} s CPU, peak RSS {:.1} MiB",
                    p.name, p.cpu_seconds, p.peak_rss_mib
                )
            })
            .collect();
        println!(
            "  {:<12} {:<22} {:>7} req in {:>7.2} s: {:>7.0} cosigned/s  p50 {:>7.2}  p90 {:>7.2}  p99 {:>7.2}  max {:>8.2} ms  [{}]",
            self.target,
            self.workload,
            self.requests,
            self.wall.as_secs_f64(),
            self.throughput(),
            ms(self.percentile(0.50)),
            ms(self.percentile(0.90)),
            ms(self.percentile(0.99)),
            ms(self.outcome.latencies.last().copied().unwrap_or_default()),
            statuses.join(" "),
        );
        println!(
            "  {:<12} {:<22} server CPU {:.2} s ({:.0} µs/cosignature): {}; load generator {:.2} s CPU",
            "",
            "",
            self.server_cpu(),
            self.server_cpu() / self.outcome.ok().max(1) as f64 * 1e6,
            processes.join("; "),
            self.loadgen_cpu,
        );
    }
}

struct TargetSummary {
    name: String,
    rows: Vec<Row>,
    state_bytes: u64,
    peak_rss: Vec<ProcSample>,
    /// (what, time) of the restart measurements.
    restarts: Vec<(String, Duration)>,
    /// The soak's verdict, when it ran against this target.
    soak: Option<SoakReport>,
}

/// Writes out every dirty page (`sync`) before a measurement: a local
/// archive is made durable with `syncfs`, which also flushes whatever else is
/// dirty on the filesystem, so a build or a copy just before the run would
/// otherwise slow the first seconds of it.
fn flush_dirty_pages() {
    if let Err(error) = std::process::Command::new("sync").status() {
        eprintln!("sync: {error}");
    }
}

async fn measure<F>(target: &str, workload: &str, requests: usize, run: F) -> Row
where
    F: std::future::Future<Output = Outcome>,
{
    flush_dirty_pages();
    let before = children();
    let self_before = self_cpu_seconds();
    let started = Instant::now();
    let mut outcome = run.await;
    let wall = started.elapsed();
    let after = children();
    outcome.latencies.sort_unstable();
    let row = Row {
        target: target.to_owned(),
        workload: workload.to_owned(),
        requests,
        wall,
        outcome,
        processes: cpu_between(&before, &after),
        loadgen_cpu: self_cpu_seconds() - self_before,
    };
    row.print();
    row
}

async fn run_target(
    name: &str,
    settings: &Settings,
    workload: &Workload,
    artifacts: &Path,
) -> Res<TargetSummary> {
    println!("{name}:");
    let mut target = match name {
        "ours" => start_ours(artifacts, &workload.registry).await?,
        "litewitness" => start_litewitness(artifacts, &workload.registry).await?,
        "omniwitness" => start_omniwitness(artifacts, &workload.registry).await?,
        other => return Err(format!("unknown target {other:?}")),
    };
    let url = format!("{}/add-checkpoint", target.base_url());
    let vkey = target.vkey();
    // Idle connections are dropped after 5 s, before the gateway closes them
    // (it closes a keep-alive connection with no request head within its
    // handshake timeout, 10 s by default): a request sent on a connection the
    // server is closing at that instant fails, and a POST is not retried.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .pool_idle_timeout(CLIENT_POOL_IDLE_TIMEOUT)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let mut rows = Vec::new();

    if name == "ours" && settings.pause_before_a > 0 {
        let pids: Vec<String> = children()
            .iter()
            .map(|p| format!("{}={}", p.name, p.pid))
            .collect();
        println!(
            "  pausing {} s before (a): {}",
            settings.pause_before_a,
            pids.join(" ")
        );
        tokio::time::sleep(Duration::from_secs(settings.pause_before_a)).await;
    }

    // (a) every log in turn.
    for (r, round) in workload.rounds.iter().enumerate() {
        let round = Arc::new(round.clone());
        let label = if r == 0 {
            "(a) first, old 0".to_owned()
        } else {
            format!("(a) growth round {r}")
        };
        let row = if settings.rate > 0 {
            measure(
                name,
                &label,
                round.len(),
                drive_open(&client, &url, &round, settings.rate, 4096),
            )
            .await
        } else {
            measure(
                name,
                &label,
                round.len(),
                drive_closed(&client, &url, &round, settings.concurrency),
            )
            .await
        };
        check_cosigned(&row.outcome.first_cosigned, &vkey)
            .map_err(|e| format!("{name} {label}: {e}"))?;
        rows.push(row);
    }

    // The soak, against ours only.
    let mut soak = None;
    if settings.workloads.soak {
        if matches!(target, Target::Ours(_)) {
            soak = Some(run_soak(&client, &url, &vkey, settings, workload).await?);
        } else {
            println!("  {name:<12} soak: against ours only, skipped");
        }
    }

    // (b) hot logs.
    if settings.workloads.b {
        let hot: Vec<Arc<Vec<Bytes>>> = workload.hot.iter().map(|h| Arc::new(h.clone())).collect();
        let label = format!("(b) 10 hot x{} clients", settings.hot_clients_per_log);
        let row = measure(
            name,
            &label,
            0,
            drive_hot(
                &client,
                &url,
                &hot,
                settings.hot_clients_per_log,
                settings.hot_seconds,
            ),
        )
        .await;
        check_cosigned(&row.outcome.first_cosigned, &vkey)
            .map_err(|e| format!("{name} {label}: {e}"))?;
        rows.push(row);
    }

    let state_bytes = target.state_size();
    let peak_rss = children();

    // (c) restart with every log in state.
    let restarts = if settings.workloads.c {
        let probes = if soak.is_some() {
            &workload.probes_after_soak
        } else {
            &workload.probes
        };
        measure_restarts(&mut target, &url, probes).await?
    } else {
        Vec::new()
    };
    for (what, time) in &restarts {
        println!(
            "  {name:<12} (c) restart, {what}: {:.0} ms",
            time.as_secs_f64() * 1e3
        );
    }
    println!(
        "  {name:<12} state on disk: {:.1} MiB",
        state_bytes as f64 / (1 << 20) as f64
    );

    match target {
        Target::Ours(stack) => {
            stack.stop().await;
        }
        Target::Litewitness(mut lw, dir) => {
            lw.process().stop().await;
            drop(lw);
            let _ = std::fs::remove_dir_all(dir);
        }
        Target::Omniwitness(mut ow, _) => {
            ow.process().stop().await;
        }
    }
    Ok(TargetSummary {
        name: name.to_owned(),
        rows,
        state_bytes,
        peak_rss,
        restarts,
        soak,
    })
}

/// Workload (c): restarts with every log in state, probed with `probes` (log
/// 0's next steps); (what, time until ready) of each.
async fn measure_restarts(
    target: &mut Target,
    url: &str,
    probes: &[Bytes],
) -> Res<Vec<(String, Duration)>> {
    let url = url.to_owned();
    let mut restarts = Vec::new();
    let mut probes = probes.iter().cloned();
    let mut probe = || probes.next().ok_or("out of restart probes".to_owned());
    let fresh_client = || {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))
    };
    match target {
        Target::Ours(stack) => {
            let readyz = format!("{}/readyz", stack.gateway_url());
            // The witness alone (it holds the logs' state).
            stack.stop_service(Service::Witness).await;
            let started = Instant::now();
            let ready = tokio::spawn(time_until_ok(
                fresh_client()?,
                readyz.clone(),
                None,
                started,
            ));
            let cosigned = tokio::spawn(time_until_ok(
                fresh_client()?,
                url.clone(),
                Some(probe()?),
                started,
            ));
            stack.restart(Service::Witness).await?;
            let ready = ready.await.map_err(|e| e.to_string())??;
            let cosigned = cosigned.await.map_err(|e| e.to_string())??;
            restarts.push(("witness: /readyz".to_owned(), ready));
            restarts.push(("witness: first cosignature".to_owned(), cosigned));
            // All three, in order (each start waits until the previous listens,
            // polled every 100 ms).
            for service in [Service::Gateway, Service::Witness, Service::Signer] {
                stack.stop_service(service).await;
            }
            let started = Instant::now();
            let ready = tokio::spawn(time_until_ok(fresh_client()?, readyz, None, started));
            let cosigned = tokio::spawn(time_until_ok(
                fresh_client()?,
                url.clone(),
                Some(probe()?),
                started,
            ));
            for service in Service::ALL {
                stack.restart(service).await?;
            }
            let ready = ready.await.map_err(|e| e.to_string())??;
            let cosigned = cosigned.await.map_err(|e| e.to_string())??;
            restarts.push(("stack: /readyz".to_owned(), ready));
            restarts.push(("stack: first cosignature".to_owned(), cosigned));
        }
        Target::Litewitness(lw, _) => {
            lw.process().stop().await;
            let started = Instant::now();
            let cosigned = tokio::spawn(time_until_ok(
                fresh_client()?,
                url.clone(),
                Some(probe()?),
                started,
            ));
            lw.process().restart()?;
            let cosigned = cosigned.await.map_err(|e| e.to_string())??;
            restarts.push(("first cosignature".to_owned(), cosigned));
        }
        Target::Omniwitness(ow, _) => {
            ow.process().stop().await;
            let started = Instant::now();
            let cosigned = tokio::spawn(time_until_ok(
                fresh_client()?,
                url.clone(),
                Some(probe()?),
                started,
            ));
            ow.process().restart()?;
            let cosigned = cosigned.await.map_err(|e| e.to_string())??;
            restarts.push(("first cosignature".to_owned(), cosigned));
        }
    }
    Ok(restarts)
}

/// The crypto-only bound on this machine: the log signature verification,
/// the consistency proof check and the cosignature, in a loop on one core.
fn crypto_bound(workload: &Workload) -> Res<()> {
    let Some(body) = workload.rounds.get(1).and_then(|r| r.first()) else {
        println!("crypto-only bound: needs LOADGEN_ROUNDS >= 1");
        return Ok(());
    };
    let request = witness_core::witness_api::parse_add_checkpoint_body(body)
        .map_err(|e| format!("parsing a request: {e}"))?;
    let keys = [workload.log0.clone()];
    let verified = witness_core::checkpoint::verify_checkpoint(&request.checkpoint, &keys, None)
        .map_err(|e| format!("verify: {e}"))?;
    let new_root = *verified.checkpoint().root_hash();
    let old_root = {
        let mut tree = FullTree::default();
        tree.push(leaf_hash(b"bench.example/log0/0"));
        tree.root(1)?
    };
    let cosigner = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let text = verified.checkpoint().to_text();
    let iterations = 3000u32;
    let time = |f: &mut dyn FnMut() -> Res<()>| -> Res<Duration> {
        let started = Instant::now();
        for _ in 0..iterations {
            f()?;
        }
        Ok(started.elapsed() / iterations)
    };
    let verify = time(&mut || {
        witness_core::checkpoint::verify_checkpoint(&request.checkpoint, &keys, None)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })?;
    let consistency = time(&mut || {
        witness_core::merkle::verify_consistency(
            request.old_size,
            verified.checkpoint().size(),
            &old_root,
            &new_root,
            &request.consistency_proof,
        )
        .map_err(|e| e.to_string())
    })?;
    let cosign = time(&mut || {
        let message = witness_core::cosignature::cosignature_v1_message(1_700_000_000, &text);
        std::hint::black_box(cosigner.sign(&message));
        Ok(())
    })?;
    let total = verify + consistency + cosign;
    println!(
        "crypto-only bound (one core): verify {:.1} µs + consistency {:.1} µs + cosign {:.1} µs = {:.1} µs: {:.0}/s per core, {:.0}/s on 2 cores",
        verify.as_secs_f64() * 1e6,
        consistency.as_secs_f64() * 1e6,
        cosign.as_secs_f64() * 1e6,
        total.as_secs_f64() * 1e6,
        1.0 / total.as_secs_f64(),
        2.0 / total.as_secs_f64(),
    );
    Ok(())
}

fn print_comparison(summaries: &[TargetSummary]) {
    let Some(ours) = summaries.iter().find(|s| s.name == "ours") else {
        return;
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!();
    println!(
        "| workload | metric | {} |",
        summaries
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|---|{}", "---|".repeat(summaries.len()));
    for (i, row) in ours.rows.iter().enumerate() {
        let rows: Vec<Option<&Row>> = summaries.iter().map(|s| s.rows.get(i)).collect();
        let line = |metric: &str, f: &dyn Fn(&Row) -> String| {
            let cells: Vec<String> = rows.iter().map(|r| r.map_or("–".to_owned(), f)).collect();
            println!("| {} | {metric} | {} |", row.workload, cells.join(" | "));
        };
        line("cosigned/s", &|r| format!("{:.0}", r.throughput()));
        line("p50 / p90 / p99 / max ms", &|r| {
            format!(
                "{:.1} / {:.1} / {:.1} / {:.0}",
                ms(r.percentile(0.5)),
                ms(r.percentile(0.9)),
                ms(r.percentile(0.99)),
                ms(r.outcome.latencies.last().copied().unwrap_or_default())
            )
        });
        line("statuses", &|r| {
            r.outcome
                .statuses
                .iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect::<Vec<_>>()
                .join(" ")
        });
        line("server CPU µs/cosignature", &|r| {
            format!("{:.0}", r.server_cpu() / r.outcome.ok().max(1) as f64 * 1e6)
        });
    }
    let cells = |f: &dyn Fn(&TargetSummary) -> String| {
        summaries.iter().map(f).collect::<Vec<_>>().join(" | ")
    };
    println!(
        "| all | peak RSS MiB | {} |",
        cells(&|s| s
            .peak_rss
            .iter()
            .map(|p| format!("{} {:.1}", p.name, p.peak_rss_mib))
            .collect::<Vec<_>>()
            .join(", "))
    );
    println!(
        "| all | state on disk MiB | {} |",
        cells(&|s| format!("{:.1}", s.state_bytes as f64 / (1 << 20) as f64))
    );
    println!(
        "| (c) | restart: time to ready ms | {} |",
        cells(&|s| s
            .restarts
            .iter()
            .map(|(w, d)| format!("{w} {:.0}", ms(*d)))
            .collect::<Vec<_>>()
            .join(", "))
    );
    println!();
    for peer in summaries.iter().filter(|s| s.name != "ours") {
        for (a, b) in ours.rows.iter().zip(&peer.rows) {
            println!(
                "ours/{}: {:<24} throughput x{:.2}, p99 x{:.2}, server CPU per cosignature x{:.2}",
                peer.name,
                a.workload,
                a.throughput() / b.throughput().max(1e-9),
                a.percentile(0.99).as_secs_f64() / b.percentile(0.99).as_secs_f64().max(1e-9),
                (a.server_cpu() / a.outcome.ok().max(1) as f64)
                    / (b.server_cpu() / b.outcome.ok().max(1) as f64).max(1e-12),
            );
        }
        println!(
            "ours/{}: state on disk x{:.2}",
            peer.name,
            ours.state_bytes as f64 / peer.state_bytes.max(1) as f64
        );
    }
}

fn main() -> Res<()> {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let settings = Settings::from_env()?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "witness_load_e2e: {} logs, {} growth round(s), {} in flight, rate {}, hot: 10 logs x {} clients for {} s; targets {:?}; load average {}",
        settings.logs,
        settings.rounds,
        settings.concurrency,
        if settings.rate == 0 {
            "as fast as possible".to_owned()
        } else {
            format!("{}/s", settings.rate)
        },
        settings.hot_clients_per_log,
        settings.hot_seconds,
        settings.targets,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    let selected: Vec<&str> = [
        (settings.workloads.a, "a"),
        (settings.workloads.b, "b"),
        (settings.workloads.c, "c"),
        (settings.workloads.soak, "soak"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, name)| *name)
    .collect();
    println!(
        "workloads: first checkpoints, {}{}",
        selected.join(", "),
        if settings.workloads.soak {
            format!(
                "; soak {} s at {}/s",
                settings.soak.seconds, settings.soak.rate
            )
        } else {
            String::new()
        }
    );
    let started = Instant::now();
    let workload = build_workload(&settings)?;
    let soak_bytes: usize = workload.soak.iter().map(CompactRound::heap_bytes).sum();
    println!(
        "requests precomputed in {:.2} s ({} logs + {} hot; soak: {} rounds, {:.1} MiB, {:.0} bytes a request); load generator RSS {:.1} MiB",
        started.elapsed().as_secs_f64(),
        settings.logs,
        HOT_LOGS,
        workload.soak.len(),
        soak_bytes as f64 / (1 << 20) as f64,
        soak_bytes as f64 / (workload.soak.len() * settings.logs).max(1) as f64,
        proc_status_kib("self", "VmRSS:").unwrap_or(0.0) / 1024.0,
    );
    crypto_bound(&workload)?;
    let artifacts = integration::artifacts_dir("witness_load_e2e")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let summaries = runtime.block_on(async {
        let mut summaries = Vec::new();
        for name in &settings.targets {
            summaries.push(run_target(name, &settings, &workload, &artifacts).await?);
        }
        print_comparison(&summaries);
        Ok::<_, String>(summaries)
    })?;
    remove_archive_objects(&artifacts.join("ours"));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average at the end: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let failures: Vec<&String> = summaries
        .iter()
        .filter_map(|s| s.soak.as_ref())
        .flat_map(|soak| &soak.failures)
        .collect();
    if !failures.is_empty() {
        return Err(format!(
            "soak FAIL: {}",
            failures
                .iter()
                .map(|f| f.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    Ok(())
}
