//! Faults of the machinery around the witness, injected into the real
//! deployment (`signer-svc`, `rekor-witness serve` and `rekor-witness-gateway`
//! as processes, integration/src/stack.rs):
//!
//! - the signer down (killed) or hung (SIGSTOPped past the witness's signer
//!   timeout): `add-checkpoint` is a 503 with `Retry-After`, counted, and
//!   changes nothing; the retry once the signer is back succeeds and advances
//!   the state exactly once;
//! - the witness's SQLite state on a full disk (a tmpfs filled up), or locked
//!   by another process's EXCLUSIVE transaction: a clean 503, no signature,
//!   the state unchanged, and recovery without a restart once space is freed
//!   or the lock released;
//! - a pulled log that redirects (301, 302, 307, 308) to another origin, or
//!   in a loop: never followed off the configured origin, nothing cosigned,
//!   counted, and an honest log of the same witness unaffected;
//! - the signer's clock skewed (the real `signer-svc` under libfaketime), into
//!   the past and into the future: the witness refuses a cosignature whose
//!   time is more than a minute off its own clock, or before the log's
//!   previous cosignature, so a log's cosignature times never go backwards.
//!
//! Covered elsewhere and not repeated here: garbage, oversized and endless
//! bodies from a log (witness-core/tests/feeders.rs:
//! `malformed_or_oversized_log_info_is_an_error_that_changes_nothing`,
//! `endless_log_info_body_is_cut_off_at_the_cap`, `malformed_answer_does_not_stop_the_loop`),
//! stalled and slowloris logs and backoff
//! (integration/tests/misbehaving_log.rs:
//! `stalled_and_trickling_logs_do_not_hold_up_other_logs`; feeders.rs:
//! `failing_log_is_polled_with_capped_exponential_backoff_then_recovers`), and
//! the archive's object storage outage (witness-core/tests/archive.rs).

#![allow(clippy::unwrap_used)]

mod attack_support;
#[path = "../../witness-core/tests/witness_support/mod.rs"]
mod witness_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use attack_support::{fork_guard_record, witness_state};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use integration::misbehaving_log::MisbehavingLog;
use integration::stack::{Service, Stack};
use witness_core::note::{VerifierKey, parse_note, verify_note};
use witness_core::witness_api::{AddCheckpointRequest, serialize_add_checkpoint_body};
use witness_support::TestLog;

const ORIGIN: &str = "faults.example/log";

/// The witness's signer timeout in the hung-signer test (the default is 10 s).
const SIGNER_TIMEOUT: &str = "1s";

/// A gateway answer with the headers a fault test looks at.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

/// An HTTP client that outlasts the witness's SQLite busy timeout (10 s) and
/// the gateway's upstream deadline (10 s).
fn patient_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn add_checkpoint(
    http: &reqwest::Client,
    stack: &Stack,
    log: &TestLog,
    old: u64,
    new: u64,
) -> Answer {
    let body = serialize_add_checkpoint_body(&AddCheckpointRequest {
        old_size: old,
        consistency_proof: log.proof(old, new),
        checkpoint: log.signed(new),
    });
    let response = http
        .post(format!("{}/add-checkpoint", stack.gateway_url()))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    Answer {
        status,
        retry_after,
        body: response.text().await.unwrap(),
    }
}

/// The sum of every sample of `name` whose labels include `labels`.
fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((series_name, rest)) => (series_name, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let matches = series_name == name
                && labels
                    .iter()
                    .all(|(key, value)| series_labels.contains(&format!("{key}=\"{value}\"")));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

async fn metric(stack: &Stack, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_sum(&stack.metrics().await.unwrap(), name, labels)
}

/// `witness_cosignatures_total` of [`ORIGIN`] with `outcome`.
async fn cosignatures(stack: &Stack, outcome: &str) -> f64 {
    metric(
        stack,
        "witness_cosignatures_total",
        &[("log", ORIGIN), ("outcome", outcome)],
    )
    .await
}

/// The witness's stored size of [`ORIGIN`] and the signer's recorded size.
fn sizes(stack: &Stack) -> (Option<i64>, Option<i64>) {
    (
        witness_state(stack).get(ORIGIN).map(|(size, _)| *size),
        fork_guard_record(stack).get(ORIGIN).map(|(size, _)| *size),
    )
}

/// A 503 that tells the client when to retry and carries no cosignature.
fn assert_unavailable(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 503, "{what}: {answer:?}");
    let seconds: u64 = answer
        .retry_after
        .as_deref()
        .unwrap_or_else(|| panic!("{what}: no Retry-After: {answer:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("{what}: Retry-After is not seconds: {answer:?}"));
    assert!((1..=60).contains(&seconds), "{what}: {answer:?}");
    assert!(
        !answer.body.contains('\u{2014}'),
        "{what}: a signature line in a failure: {answer:?}"
    );
}

/// A 200 whose cosignature verifies over the checkpoint of `size`; its
/// timestamp.
fn assert_cosigned(stack: &Stack, log: &TestLog, size: u64, answer: &Answer) -> u64 {
    assert_eq!(answer.status, 200, "{answer:?}");
    let key = VerifierKey::parse_vkey(stack.witness_vkey()).unwrap();
    let note = format!("{}\n{}", log.checkpoint(size).to_text(), answer.body);
    verify_note(
        parse_note(note.as_bytes()).unwrap(),
        std::slice::from_ref(&key),
    )
    .unwrap();
    cosignature_time(&answer.body)
}

/// The timestamp of a cosignature/v1 line: key ID (4 bytes), then the
/// big-endian u64 time, then the signature.
fn cosignature_time(body: &str) -> u64 {
    let line = body.lines().next().unwrap();
    let blob = base64::engine::general_purpose::STANDARD
        .decode(line.rsplit(' ').next().unwrap())
        .unwrap();
    u64::from_be_bytes(blob[4..12].try_into().unwrap())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn logs_toml(log: &TestLog) -> String {
    format!(
        "[[log]]\norigin = \"{ORIGIN}\"\nkey = \"{}\"\n",
        log.verifier.to_vkey()
    )
}

fn test_log() -> TestLog {
    let mut log = TestLog::new(ORIGIN, 71);
    log.grow(16);
    log
}

/// Inserts `line` right after the `[table]` header of the configuration
/// file `config` (`witness.toml`, `gateway.toml`).
fn set_option(stack: &Stack, config: &str, table: &str, line: &str) {
    let path = stack.dir().join("config").join(config);
    let text = std::fs::read_to_string(&path).unwrap();
    let header = format!("\n[{table}]\n");
    assert!(text.contains(&header), "{text}");
    let text = text.replacen(&header, &format!("{header}{line}\n"), 1);
    std::fs::write(&path, text).unwrap();
}

async fn restart(stack: &mut Stack, service: Service) {
    assert!(
        stack.stop_service(service).await,
        "{service:?} exits cleanly"
    );
    stack.restart(service).await.unwrap();
    stack.wait_ready().await.unwrap();
}

fn signal(stack: &Stack, service: Service, signal: rustix::process::Signal) {
    let pid = stack.pid(service).unwrap();
    let pid = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
}

/// The retry after recovery: the same checkpoint from the same old size
/// succeeds once, and the state advanced exactly once (a second identical
/// submission is a 409 naming the new size).
async fn assert_retry_advances_once(stack: &Stack, log: &TestLog, old: u64, new: u64) -> u64 {
    let http = patient_client();
    let retried = add_checkpoint(&http, stack, log, old, new).await;
    let time = assert_cosigned(stack, log, new, &retried);
    let new_i = i64::try_from(new).unwrap();
    assert_eq!(sizes(stack), (Some(new_i), Some(new_i)));
    let again = add_checkpoint(&http, stack, log, old, new).await;
    assert_eq!(again.status, 409, "{again:?}");
    assert_eq!(again.body, format!("{new}\n"));
    time
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signer_down_is_503_with_retry_after_and_changes_nothing_until_it_is_back() {
    let log = test_log();
    let mut stack = Stack::start("faults-signer-down", &logs_toml(&log))
        .await
        .unwrap();
    let http = patient_client();
    assert_cosigned(
        &stack,
        &log,
        4,
        &add_checkpoint(&http, &stack, &log, 0, 4).await,
    );
    let before = (
        metric(
            &stack,
            "gateway_upstream_errors_total",
            &[("upstream", "witness"), ("kind", "unavailable")],
        )
        .await,
        cosignatures(&stack, "signer").await,
    );

    stack.kill(Service::Signer).await;
    for _ in 0..2 {
        let answer = add_checkpoint(&http, &stack, &log, 4, 8).await;
        assert_unavailable(&answer, "signer killed");
    }
    assert_eq!(sizes(&stack), (Some(4), Some(4)), "nothing changed");
    let after = (
        metric(
            &stack,
            "gateway_upstream_errors_total",
            &[("upstream", "witness"), ("kind", "unavailable")],
        )
        .await,
        cosignatures(&stack, "signer").await,
    );
    assert_eq!(after.0 - before.0, 2.0, "the gateway counts each 503");
    assert_eq!(
        after.1 - before.1,
        2.0,
        "the witness counts each signer failure"
    );

    stack.restart(Service::Signer).await.unwrap();
    stack.wait_ready().await.unwrap();
    assert_retry_advances_once(&stack, &log, 4, 8).await;
    assert!(stack.stop().await, "every service exits cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_signer_past_the_timeout_is_503_and_the_retry_advances_exactly_once() {
    let log = test_log();
    let mut stack = Stack::start("faults-signer-hung", &logs_toml(&log))
        .await
        .unwrap();
    set_option(
        &stack,
        "witness.toml",
        "signer",
        &format!("timeout = \"{SIGNER_TIMEOUT}\""),
    );
    restart(&mut stack, Service::Witness).await;
    let http = patient_client();
    assert_cosigned(
        &stack,
        &log,
        4,
        &add_checkpoint(&http, &stack, &log, 0, 4).await,
    );
    let failures = cosignatures(&stack, "signer").await;

    signal(&stack, Service::Signer, rustix::process::Signal::STOP);
    let started = Instant::now();
    let answer = add_checkpoint(&http, &stack, &log, 4, 8).await;
    let waited = started.elapsed();
    // The witness's state is read while the signer is still stopped: its
    // fork-guard record cannot be read then (a SIGSTOPped writer may hold it).
    let witness_size = witness_state(&stack).get(ORIGIN).map(|(size, _)| *size);
    signal(&stack, Service::Signer, rustix::process::Signal::CONT);
    assert_unavailable(&answer, "signer stopped");
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(8),
        "the witness gives up after its signer timeout ({SIGNER_TIMEOUT}), not the \
         gateway's deadline: {waited:?}"
    );
    assert_eq!(witness_size, Some(4), "nothing stored");
    assert_eq!(cosignatures(&stack, "signer").await - failures, 1.0);

    // The resumed signer may have recorded the checkpoint the witness gave up
    // on; the retry is cosigned all the same, and only once.
    assert_retry_advances_once(&stack, &log, 4, 8).await;
    assert!(stack.stop().await, "every service exits cleanly");
}

/// A tmpfs mounted over a directory for the guard's life (lazily unmounted on
/// drop, so the processes holding files there do not keep it).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "mount -t tmpfs (root is needed) failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }

    /// Writes zeros to `filler` until the filesystem is full.
    fn fill(&self, filler: &Path) {
        use std::io::Write as _;
        let mut file = std::fs::File::create(filler).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling {}: {e}", filler.display()),
            }
        }
        let _ = file.sync_all();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_state_disk_is_a_clean_503_and_recovers_when_space_is_freed() {
    let name = "faults-disk-full";
    // A run killed mid-test leaves its tmpfs mounted in the artifacts.
    let leftover = integration::target_dir().join(format!("e2e/{name}/stack/witness"));
    let _ = std::process::Command::new("umount")
        .arg("-l")
        .arg(&leftover)
        .status();
    let log = test_log();
    let mut stack = Stack::start(name, &logs_toml(&log)).await.unwrap();

    // The witness's state directory moves onto a small tmpfs.
    let state_dir = stack.dir().join("witness");
    assert!(stack.stop_service(Service::Witness).await);
    let saved = stack.dir().join("witness-saved");
    std::fs::rename(&state_dir, &saved).unwrap();
    std::fs::create_dir(&state_dir).unwrap();
    let tmpfs = Tmpfs::mount(&state_dir, "4m");
    for entry in std::fs::read_dir(&saved).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), state_dir.join(entry.file_name())).unwrap();
    }
    stack.restart(Service::Witness).await.unwrap();
    stack.wait_ready().await.unwrap();
    let witness_pid = stack.pid(Service::Witness);

    let http = patient_client();
    assert_cosigned(
        &stack,
        &log,
        4,
        &add_checkpoint(&http, &stack, &log, 0, 4).await,
    );
    let storage_failures = cosignatures(&stack, "storage").await;

    let filler = state_dir.join("filler");
    tmpfs.fill(&filler);
    let answer = add_checkpoint(&http, &stack, &log, 4, 8).await;
    assert_unavailable(&answer, "state disk full");
    assert_eq!(
        witness_state(&stack).get(ORIGIN).map(|(size, _)| *size),
        Some(4),
        "nothing stored"
    );
    assert_eq!(
        cosignatures(&stack, "storage").await - storage_failures,
        1.0
    );
    stack.check_running().unwrap();

    std::fs::remove_file(&filler).unwrap();
    assert_retry_advances_once(&stack, &log, 4, 8).await;
    assert_eq!(stack.pid(Service::Witness), witness_pid, "no restart");
    assert!(stack.stop().await, "every service exits cleanly");
    drop(tmpfs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_locked_by_another_process_is_a_clean_503_and_recovers_when_released() {
    let log = test_log();
    let mut stack = Stack::start("faults-state-locked", &logs_toml(&log))
        .await
        .unwrap();
    // The gateway waits out the witness's SQLite busy timeout (10 s), so the
    // client gets the witness's own answer, not the gateway's deadline.
    set_option(&stack, "gateway.toml", "witness", "timeout = \"20s\"");
    restart(&mut stack, Service::Gateway).await;
    let http = patient_client();
    assert_cosigned(
        &stack,
        &log,
        4,
        &add_checkpoint(&http, &stack, &log, 0, 4).await,
    );
    let storage_failures = cosignatures(&stack, "storage").await;

    let mut locker = rusqlite::Connection::open(stack.dir().join("witness/state.db")).unwrap();
    let lock = locker
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .unwrap();
    let answer = add_checkpoint(&http, &stack, &log, 4, 8).await;
    let stored: i64 = lock
        .query_row(
            "SELECT size FROM state WHERE origin = ?1",
            [ORIGIN],
            |row| row.get(0),
        )
        .unwrap();
    lock.rollback().unwrap();
    drop(locker);
    assert_unavailable(&answer, "state locked");
    assert_eq!(stored, 4, "nothing stored while locked");
    assert_eq!(
        cosignatures(&stack, "storage").await - storage_failures,
        1.0
    );
    assert_eq!(
        witness_state(&stack).get(ORIGIN).map(|(size, _)| *size),
        Some(4),
        "the write the lock held up was not applied late"
    );

    assert_retry_advances_once(&stack, &log, 4, 8).await;
    assert!(stack.stop().await, "every service exits cleanly");
}

/// A server that answers every request with a redirect: to `target` (same
/// path), cycling through 301, 302, 307 and 308, or, without a target, to
/// itself (a loop). Counts what it served.
struct Redirector {
    url: String,
    served: Arc<RedirectCounts>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct RedirectCounts {
    by_code: [AtomicU64; 4],
}

const REDIRECT_CODES: [StatusCode; 4] = [
    StatusCode::MOVED_PERMANENTLY,
    StatusCode::FOUND,
    StatusCode::TEMPORARY_REDIRECT,
    StatusCode::PERMANENT_REDIRECT,
];

#[derive(Clone)]
struct RedirectState {
    target: Option<String>,
    served: Arc<RedirectCounts>,
    total: Arc<AtomicU64>,
}

async fn redirect(State(state): State<RedirectState>, uri: Uri) -> Response {
    let n = state.total.fetch_add(1, Ordering::SeqCst);
    let i = usize::try_from(n % 4).unwrap();
    state.served.by_code[i].fetch_add(1, Ordering::SeqCst);
    let location = match &state.target {
        Some(target) => format!("{}{}", target.trim_end_matches('/'), uri),
        // Same origin, a new path each hop, forever.
        None => format!("/loop/{n}{}", uri.path()),
    };
    (REDIRECT_CODES[i], [("location", location)]).into_response()
}

impl Redirector {
    async fn start(target: Option<String>) -> Redirector {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let served = Arc::new(RedirectCounts::default());
        let state = RedirectState {
            target,
            served: served.clone(),
            total: Arc::new(AtomicU64::new(0)),
        };
        let app = Router::new().fallback(redirect).with_state(state);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Redirector {
            url,
            served,
            server,
        }
    }

    fn served(&self) -> Vec<u64> {
        self.served
            .by_code
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect()
    }
}

impl Drop for Redirector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_off_the_configured_origin_or_in_loops_are_never_followed_or_cosigned() {
    // `moved`'s configured URL redirects to the real `moved` log on another
    // port: a witness that followed it would cosign it.
    let moved = MisbehavingLog::start("faults-moved", 8).await.unwrap();
    let looping = MisbehavingLog::start("faults-looping", 8).await.unwrap();
    let honest = MisbehavingLog::start("faults-honest", 8).await.unwrap();
    let to_moved = Redirector::start(Some(moved.url())).await;
    let in_a_loop = Redirector::start(None).await;
    let pulled = |log: &MisbehavingLog, url: &str| {
        format!(
            "[[log]]\nkey = \"{}\"\nfeed = \"tiles\"\nurl = \"{url}\"\n",
            log.tiles_vkey()
        )
    };
    let logs_toml = format!(
        "{}\n{}\n{}\n",
        pulled(&moved, &to_moved.url),
        pulled(&looping, &in_a_loop.url),
        honest.tiles_log_toml()
    );
    let stack = Stack::start("faults-redirects", &logs_toml).await.unwrap();

    // The honest log is cosigned, and again after it grows: its feeder runs
    // on beside the failing ones.
    stack
        .wait_cosigned(honest.tiles_origin(), 8, Duration::from_secs(30))
        .await
        .unwrap();
    // Every redirect code was refused at least once (the redirector cycles).
    let deadline = Instant::now() + Duration::from_secs(30);
    while to_moved.served().contains(&0) {
        assert!(
            Instant::now() < deadline,
            "not every redirect code was tried: {:?}",
            to_moved.served()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    honest.grow(4);
    stack
        .wait_cosigned(honest.tiles_origin(), 12, Duration::from_secs(30))
        .await
        .unwrap();

    for log in [&moved, &looping] {
        assert_eq!(
            stack.cosigned_checkpoint(log.tiles_origin()).await.unwrap(),
            None,
            "{} was cosigned through a redirect",
            log.tiles_origin()
        );
        assert_eq!(
            log.requests(),
            0,
            "{} was reached through a redirect",
            log.tiles_origin()
        );
        let failures = metric(
            &stack,
            "witness_log_fetches_total",
            &[("log", log.tiles_origin()), ("outcome", "fetch")],
        )
        .await;
        assert!(failures >= 1.0, "{}: {failures}", log.tiles_origin());
    }
    // Same-origin redirects are followed up to the limit (5), then refused.
    let hops: u64 = in_a_loop.served().iter().sum();
    assert!(hops >= 6, "the loop was followed {hops} times");
    let attempts_to_moved: u64 = to_moved.served().iter().sum();
    let witness_log = std::fs::read_to_string(stack.artifacts().join("witness.log")).unwrap();
    assert!(
        witness_log.contains("redirect to another origin"),
        "the refusal says why"
    );
    assert!(
        witness_log.contains("more than 5 redirects"),
        "the loop's refusal says why"
    );
    // Backoff: a failing log is not polled every second (poll_interval) for
    // the whole test.
    println!("redirects refused: {attempts_to_moved} to another origin, {hops} loop hops");
    assert!(stack.stop().await, "every service exits cleanly");
    for log in [moved, looping, honest] {
        log.stop().await;
    }
}

/// libfaketime's preload library: `$WITNESS_TEST_FAKETIME` (scripts/test
/// exports it), else the Debian package's path. Missing is a failure.
fn libfaketime() -> PathBuf {
    let path = std::env::var_os("WITNESS_TEST_FAKETIME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"));
    assert!(
        path.is_file(),
        "libfaketime is missing at {} (Debian package faketime; scripts/test installs it \
         and sets WITNESS_TEST_FAKETIME)",
        path.display()
    );
    path
}

/// The stack with its signer under libfaketime: the signer's clock is the
/// real one shifted by the offset in the returned file ("+0", "-600",
/// "+600"), re-read on every clock read, so the test moves it at run time.
async fn stack_with_skewable_signer(name: &str, log: &TestLog) -> (Stack, PathBuf) {
    let library = libfaketime();
    let mut stack = Stack::start(name, &logs_toml(log)).await.unwrap();
    let offset = stack.dir().join("signer-clock-offset");
    std::fs::write(&offset, "+0\n").unwrap();
    assert!(stack.stop_service(Service::Signer).await);
    for (key, value) in [
        ("LD_PRELOAD", library.display().to_string()),
        ("FAKETIME_TIMESTAMP_FILE", offset.display().to_string()),
        ("FAKETIME_NO_CACHE", "1".to_owned()),
        // Timers and timeouts keep the real monotonic clock.
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
    ] {
        stack.set_env(Service::Signer, key, &value);
    }
    stack.restart(Service::Signer).await.unwrap();
    stack.wait_ready().await.unwrap();
    (stack, offset)
}

/// Sets the signer's clock offset (libfaketime's syntax: "+600", "-30").
fn skew(offset_file: &Path, offset: &str) {
    std::fs::write(offset_file, format!("{offset}\n")).unwrap();
}

async fn skewed_signer_is_refused_and_times_never_go_backwards(name: &str, far_off: &str) {
    let log = test_log();
    let (stack, offset) = stack_with_skewable_signer(name, &log).await;
    let http = patient_client();
    let first = add_checkpoint(&http, &stack, &log, 0, 4).await;
    let first_time = assert_cosigned(&stack, &log, 4, &first);
    assert!(first_time.abs_diff(now()) <= 5, "{first_time}");
    let refused = cosignatures(&stack, "signer_clock").await;

    // Ten minutes off the witness's clock: refused, counted, nothing stored.
    skew(&offset, far_off);
    let answer = add_checkpoint(&http, &stack, &log, 4, 8).await;
    assert_unavailable(&answer, &format!("signer clock {far_off}s"));
    assert_eq!(cosignatures(&stack, "signer_clock").await - refused, 1.0);
    assert_eq!(
        witness_state(&stack).get(ORIGIN).map(|(size, _)| *size),
        Some(4)
    );

    // Within the tolerance, but before the log's previous cosignature: the
    // log's cosignature times would go backwards. Refused too.
    skew(&offset, "-30");
    let answer = add_checkpoint(&http, &stack, &log, 4, 8).await;
    assert_unavailable(&answer, "signer clock 30s behind the last cosignature");
    assert_eq!(cosignatures(&stack, "signer_clock").await - refused, 2.0);

    // The clock is right again: the retry is cosigned, once, at a time not
    // before the previous one.
    skew(&offset, "+0");
    let time = assert_retry_advances_once(&stack, &log, 4, 8).await;
    assert!(time >= first_time, "{time} < {first_time}");
    assert!(time.abs_diff(now()) <= 5, "{time}");
    assert!(stack.stop().await, "every service exits cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signer_clock_in_the_past_is_refused_and_cosignature_times_never_go_backwards() {
    skewed_signer_is_refused_and_times_never_go_backwards("faults-clock-past", "-600").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signer_clock_in_the_future_is_refused_and_cosignature_times_never_go_backwards() {
    skewed_signer_is_refused_and_times_never_go_backwards("faults-clock-future", "+600").await;
}
