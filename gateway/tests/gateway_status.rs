//! The gateway's status surface against the real stack (signer over mutual
//! TLS, the witness service in-process, the gateway in front): `/logs` and the
//! HTML status page after real cosignatures (the page rendered by a real
//! headless Chromium), `POST /verify-inclusion` with real Sigstore bundles
//! from the shared test data, and `/healthz` / `/readyz` as the witness, its
//! store and its signer fail one by one.

#![allow(clippy::unwrap_used)]

mod gateway_support;

use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gateway_support::witness_support::TestLog;
use gateway_support::{Stack, add, origin_hash, text};
use serde_json::Value;

const PUSHED: &str = "push.example/log";
/// A legal note name (no space, no `+`) full of markup: it reaches the page
/// through the configuration and must show as text, never as an element.
const HOSTILE: &str = r#"xss.example/<img/src/onerror=alert(1)>"&'</td><script>"#;
const PULLED: &str = "pulled.example/log";

/// The real Rekor v2 production log and a bundle of it.
const REKOR_V2: &str = "log2025-1.rekor.sigstore.dev";
const REKOR_V2_VKEY: &str =
    "log2025-1.rekor.sigstore.dev+cf119915+AbfK5adZJxsI323FwGD2AJJ9F4i89cfDuLdGJBIYntuO";
const REKOR_V2_BUNDLE: &str = "../../shared/testdata/rekor/bundles/rekor-v2-prod/sigstore-js.fixture.V3.MESSAGE_SIGNATURE.TLOG_HASHEDREKORDV002.json";
/// A bundle of a log this witness does not trust (Rekor v2 staging).
const UNTRUSTED_BUNDLE: &str = "../../shared/testdata/rekor/bundles/rekor-v2-staging/sigstore-python.staging-rekor-v2.sigstore.json";

fn shared(path: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The headless browser scripts/test installs; missing is a failure.
fn chromium() -> PathBuf {
    let path = PathBuf::from(
        std::env::var("WITNESS_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    assert!(
        path.is_file(),
        "Chromium not found at {} (WITNESS_TEST_CHROMIUM): run scripts/test, which installs \
         Debian's chromium",
        path.display()
    );
    path
}

/// The DOM Chromium builds from `url`, serialized.
async fn rendered_dom(url: String) -> String {
    tokio::task::spawn_blocking(move || {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--dump-dom")
            .arg(&url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut dom = String::new();
            stdout.read_to_string(&mut dom).map(|_| dom)
        });
        let deadline = Instant::now() + Duration::from_secs(90);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium did not render {url} within 90 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "chromium failed on {url}: {status}");
        reader.join().unwrap().unwrap()
    })
    .await
    .unwrap()
}

/// How a serialized DOM writes `text` in a text node.
fn dom_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The table row of the log whose origin hashes to `hash`, in serialized HTML.
fn row<'a>(html: &'a str, hash: &str) -> &'a str {
    let start = html
        .find(&format!("<tr data-origin-hash=\"{hash}\">"))
        .unwrap_or_else(|| panic!("no row for {hash} in\n{html}"));
    let end = start + html[start..].find("</tr>").unwrap();
    &html[start..end]
}

async fn get_json(stack: &Stack, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = stack.http.get(stack.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap();
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    (status, headers, value)
}

fn log_entry<'a>(logs: &'a Value, origin: &str) -> &'a Value {
    logs.as_array()
        .unwrap()
        .iter()
        .find(|log| log["origin"] == origin)
        .unwrap_or_else(|| panic!("{origin} not in {logs}"))
}

async fn post_bundle(stack: &Stack, body: Vec<u8>) -> reqwest::Response {
    stack
        .http
        .post(stack.url("/verify-inclusion"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The checkpoint note a bundle's first entry carries.
fn bundle_checkpoint(bundle: &[u8]) -> Vec<u8> {
    let json: Value = serde_json::from_slice(bundle).unwrap();
    json["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["checkpoint"]["envelope"]
        .as_str()
        .unwrap()
        .as_bytes()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_page_and_verify_inclusion_after_real_cosignatures() {
    let mut pushed = TestLog::new(PUSHED, 5);
    pushed.grow(40);
    let mut hostile = TestLog::new(HOSTILE, 6);
    hostile.grow(3);
    let pulled = TestLog::new(PULLED, 7);
    // The pulled log's URL refuses connections: it stays awaiting its first
    // checkpoint, listed as pulled.
    let extra = format!(
        "[[log]]\nkey = {REKOR_V2_VKEY:?}\n\
         [[log]]\nkey = {:?}\nfeed = \"tiles\"\nurl = \"http://127.0.0.1:1\"\n",
        pulled.verifier.to_vkey()
    );
    let mut stack = Stack::start(&[&pushed, &hostile], &extra, |_| {}).await;
    let rekor_bundle = shared(REKOR_V2_BUNDLE);

    // Before any cosignature: every log awaits its first checkpoint, and a real
    // bundle's proof verifies but cannot be compared with the witness's view.
    let (status, headers, logs) = get_json(&stack, "/logs").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert!(
        headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
    assert_eq!(logs.as_array().unwrap().len(), 4, "{logs}");
    for origin in [PUSHED, HOSTILE, PULLED, REKOR_V2] {
        let log = log_entry(&logs, origin);
        assert_eq!(log["state"], "awaiting first checkpoint", "{log}");
        assert_eq!(log["size"], 0);
        assert!(log["last_cosigned"].is_null());
    }
    assert_eq!(log_entry(&logs, PULLED)["mode"], "pull");
    assert_eq!(log_entry(&logs, PULLED)["feed"], "pull-tiles");
    let response = post_bundle(&stack, rekor_bundle.clone()).await;
    assert_eq!(response.status(), 200);
    let verdict = response.json_value().await;
    assert_eq!(verdict["inclusion_verified"], true, "{verdict}");
    assert_eq!(verdict["consistent_with_witness"], false, "{verdict}");
    assert_eq!(verdict["witness_size"], 0);
    assert!(!verdict["detail"].as_str().unwrap().is_empty());

    // Real cosignatures through the gateway: two test logs and the real Rekor
    // v2 checkpoint the bundle carries.
    let before = unix_now();
    for (body, what) in [
        (add(0, Vec::new(), pushed.signed(40)), PUSHED),
        (add(0, Vec::new(), hostile.signed(3)), HOSTILE),
        (
            add(0, Vec::new(), bundle_checkpoint(&rekor_bundle)),
            REKOR_V2,
        ),
    ] {
        let (status, _, body) = text(stack.post("/add-checkpoint", body).await).await;
        assert_eq!(status, 200, "{what}: {body}");
    }
    let after = unix_now();

    // `/logs` shows them once its short cache expires.
    let deadline = Instant::now() + Duration::from_secs(15);
    let logs = loop {
        let (_, _, logs) = get_json(&stack, "/logs").await;
        if log_entry(&logs, PUSHED)["state"] == "cosigned" {
            break logs;
        }
        assert!(
            Instant::now() < deadline,
            "/logs never showed the cosignature"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (log, size) in [(&pushed, 40), (&hostile, 3)] {
        let entry = log_entry(&logs, &log.origin);
        assert_eq!(entry["origin_hash"], origin_hash(&log.origin));
        assert_eq!(
            entry["monitoring_path"],
            format!("/{}/checkpoint", origin_hash(&log.origin))
        );
        assert_eq!(entry["keys"][0]["vkey"], log.verifier.to_vkey());
        assert_eq!(entry["keys"][0]["name"], log.origin);
        assert_eq!(
            entry["keys"][0]["key_id"],
            format!("{:08x}", log.verifier.key_id())
        );
        assert_eq!(entry["mode"], "push");
        assert_eq!(entry["feed"], "push");
        assert_eq!(entry["size"], size);
        assert_eq!(entry["state"], "cosigned");
        // The witness's own answer agrees, and the time is this run's.
        let witness_view = stack.log(&log.origin).await;
        assert_eq!(entry["size"], witness_view.size);
        let unix = entry["last_cosigned"]["unix"].as_u64().unwrap();
        assert_eq!(unix, witness_view.cosigned_at);
        assert!(
            (before..=after).contains(&unix),
            "{unix} not in {before}..={after}"
        );
        let rfc3339 = entry["last_cosigned"]["rfc3339"].as_str().unwrap();
        assert!(rfc3339.ends_with('Z'), "{rfc3339}");
        let parsed = humantime::parse_rfc3339(rfc3339).unwrap();
        assert_eq!(parsed.duration_since(UNIX_EPOCH).unwrap().as_secs(), unix);
    }
    let rekor = log_entry(&logs, REKOR_V2);
    assert_eq!(rekor["size"], 547_662);
    assert_eq!(rekor["keys"][0]["key_id"], "cf119915");
    assert_eq!(
        log_entry(&logs, PULLED)["state"],
        "awaiting first checkpoint"
    );

    // Each log's monitoring path serves its cosigned checkpoint.
    for origin in [PUSHED, HOSTILE, REKOR_V2] {
        let path = log_entry(&logs, origin)["monitoring_path"]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, _, body) = text(stack.http.get(stack.url(&path)).send().await.unwrap()).await;
        assert_eq!(status, 200, "{origin}: {body}");
        assert_eq!(body.lines().next().unwrap(), origin);
    }

    // The HTML page: served with a no-script policy, and rendered by a real
    // browser with the same facts, the hostile origin as inert text.
    let response = stack.http.get(stack.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let policy = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("default-src 'none'"), "{policy}");
    assert!(!policy.contains("script-src"), "{policy}");
    for path in ["/", "/status"] {
        let dom = rendered_dom(stack.url(path)).await;
        assert!(dom.contains("4 logs, 3 cosigned"), "{dom}");
        let pushed_row = row(&dom, &origin_hash(PUSHED));
        assert!(
            pushed_row.contains(&format!(">{PUSHED}</a>")),
            "{pushed_row}"
        );
        assert!(
            pushed_row.contains(&format!("href=\"/{}/checkpoint\"", origin_hash(PUSHED))),
            "{pushed_row}"
        );
        assert!(
            pushed_row.contains("<td class=\"size\">40</td>"),
            "{pushed_row}"
        );
        assert!(pushed_row.contains(">cosigned</td>"), "{pushed_row}");
        let cosigned_at = log_entry(&logs, PUSHED)["last_cosigned"]["rfc3339"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(pushed_row.contains(&cosigned_at), "{pushed_row}");
        let rekor_row = row(&dom, &origin_hash(REKOR_V2));
        assert!(
            rekor_row.contains("<td class=\"size\">547662</td>"),
            "{rekor_row}"
        );
        let pulled_row = row(&dom, &origin_hash(PULLED));
        assert!(
            pulled_row.contains(">awaiting first checkpoint</td>"),
            "{pulled_row}"
        );
        assert!(
            pulled_row.contains("<td class=\"size\">0</td>"),
            "{pulled_row}"
        );
        assert!(pulled_row.contains(">pull <small>"), "{pulled_row}");
        let hostile_row = row(&dom, &origin_hash(HOSTILE));
        assert!(hostile_row.contains(&dom_text(HOSTILE)), "{hostile_row}");
        assert!(
            hostile_row.contains("<td class=\"size\">3</td>"),
            "{hostile_row}"
        );
        // Nothing of the origin became markup: no element it names exists.
        assert!(!dom.contains("<img"), "{dom}");
        assert!(!dom.contains("<script"), "{dom}");
        assert_eq!(dom.matches("<tr data-origin-hash=").count(), 4, "{dom}");
    }

    // verify-inclusion with the real bundle, now that the witness cosigned the
    // same checkpoint: included and consistent.
    let response = post_bundle(&stack, rekor_bundle.clone()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let verdict = response.json_value().await;
    assert_eq!(verdict["inclusion_verified"], true, "{verdict}");
    assert_eq!(verdict["consistent_with_witness"], true, "{verdict}");
    assert_eq!(verdict["origin"], REKOR_V2);
    assert_eq!(verdict["log_index"], 547_661);
    assert_eq!(verdict["checkpoint_size"], 547_662);
    assert_eq!(verdict["witness_size"], 547_662);
    assert_eq!(verdict["detail"], "");

    // A tampered proof hash: the proof no longer verifies (an answer, not an
    // error).
    let mut tampered: Value = serde_json::from_slice(&rekor_bundle).unwrap();
    let hash =
        &mut tampered["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["hashes"][0];
    let flipped = {
        let text = hash.as_str().unwrap();
        let first = if text.starts_with('A') { "B" } else { "A" };
        format!("{first}{}", &text[1..])
    };
    *hash = Value::String(flipped);
    let verdict = post_bundle(&stack, serde_json::to_vec(&tampered).unwrap())
        .await
        .json_value()
        .await;
    assert_eq!(verdict["inclusion_verified"], false, "{verdict}");
    assert_eq!(verdict["consistent_with_witness"], false, "{verdict}");
    assert!(!verdict["detail"].as_str().unwrap().is_empty());

    // A bundle of a log this witness does not trust: refused with one line.
    let (status, _, body) = text(post_bundle(&stack, shared(UNTRUSTED_BUNDLE)).await).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body.lines().count(), 1, "{body}");

    // Malformed and oversized bodies: a one-line 400 (413 for size), never a
    // 500, and the witness's state is untouched.
    let witness_before = stack.log(REKOR_V2).await;
    let mut no_entries: Value = serde_json::from_slice(&rekor_bundle).unwrap();
    no_entries["verificationMaterial"]["tlogEntries"] = Value::Array(Vec::new());
    let mut truncated = rekor_bundle.clone();
    truncated.truncate(rekor_bundle.len() / 2);
    let mut bad_checkpoint: Value = serde_json::from_slice(&rekor_bundle).unwrap();
    bad_checkpoint["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["checkpoint"]["envelope"] =
        Value::String("not a checkpoint".into());
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("empty", Vec::new(), 400),
        ("not JSON", b"not json".to_vec(), 400),
        ("a JSON array", b"[]".to_vec(), 400),
        ("an empty object", b"{}".to_vec(), 400),
        ("truncated", truncated, 400),
        ("no entries", serde_json::to_vec(&no_entries).unwrap(), 400),
        (
            "garbage checkpoint",
            serde_json::to_vec(&bad_checkpoint).unwrap(),
            400,
        ),
        (
            "over the cap",
            [
                rekor_bundle.as_slice(),
                &vec![b' '; 256 * 1024 + 1 - rekor_bundle.len()],
            ]
            .concat(),
            413,
        ),
    ];
    for (what, body, expected) in cases {
        let (status, _, reason) = text(post_bundle(&stack, body).await).await;
        assert_eq!(status, expected, "{what}: {reason}");
        assert_eq!(reason.trim_end().lines().count(), 1, "{what}: {reason:?}");
    }
    let at_the_cap = [
        rekor_bundle.as_slice(),
        &vec![b' '; 256 * 1024 - rekor_bundle.len()],
    ]
    .concat();
    let (status, _, body) = text(post_bundle(&stack, at_the_cap).await).await;
    assert_eq!(status, 200, "a bundle padded to exactly the cap: {body}");
    let witness_after = stack.log(REKOR_V2).await;
    assert_eq!(witness_before, witness_after);
    stack.stop();
}

/// Polls `/readyz` until `done` accepts its answer.
async fn wait_for_readyz(
    http: &reqwest::Client,
    url: &str,
    what: &str,
    done: impl Fn(u16, &Value) -> bool,
) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = http.get(url).send().await.unwrap();
        let status = response.status().as_u16();
        assert_eq!(response.headers()["cache-control"], "no-store");
        let body = response.json_value().await;
        if done(status, &body) {
            return (status, body);
        }
        assert!(
            Instant::now() < deadline,
            "{what}: last answer {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn healthz(http: &reqwest::Client, url: &str) -> (u16, String) {
    let response = http.get(url).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_the_store_the_signer_and_the_witness_as_each_fails() {
    let log = TestLog::new(PUSHED, 5);
    let mut stack = Stack::start(&[&log], "", |_| {}).await;
    let http = stack.http.clone();
    let readyz = stack.url("/readyz");
    let healthz_url = stack.url("/healthz");

    assert_eq!(healthz(&http, &healthz_url).await, (200, "ok\n".into()));
    let (_, ready) = wait_for_readyz(&http, &readyz, "healthy stack", |s, _| s == 200).await;
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["store_writable"], true);
    assert_eq!(ready["signer_reachable"], true);
    assert_eq!(ready["failing"], Value::Array(Vec::new()));

    // The state store cannot commit: another connection holds SQLite's write
    // lock (as a stuck process or a full, read-only or failing disk would stop
    // commits). Running as root, file permissions would not stop the witness.
    let db = rusqlite::Connection::open(stack.dir.path().join("witness.db")).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let (status, body) = wait_for_readyz(&http, &readyz, "store locked", |s, _| s == 503).await;
    assert_eq!(status, 503);
    assert_eq!(body["failing"], serde_json::json!(["store"]), "{body}");
    assert_eq!(body["store_writable"], false);
    assert_eq!(body["signer_reachable"], true);
    assert!(body["reason"].as_str().unwrap().contains("store"), "{body}");
    assert_eq!(
        healthz(&http, &healthz_url).await.0,
        200,
        "the process is still up"
    );
    db.execute_batch("ROLLBACK").unwrap();
    drop(db);
    wait_for_readyz(&http, &readyz, "store unlocked", |s, _| s == 200).await;

    // The signer stops.
    let signer = stack.signer.server;
    signer.stop().await;
    let (_, body) = wait_for_readyz(&http, &readyz, "signer stopped", |s, _| s == 503).await;
    assert_eq!(body["failing"], serde_json::json!(["signer"]), "{body}");
    assert_eq!(body["store_writable"], true);
    assert_eq!(body["signer_reachable"], false);
    assert!(
        body["reason"].as_str().unwrap().contains("signer"),
        "{body}"
    );

    // The witness stops.
    let _ = stack.stops.remove(0).send(());
    let (_, body) = wait_for_readyz(&http, &readyz, "witness stopped", |s, b| {
        s == 503 && b["failing"] == serde_json::json!(["witness"])
    })
    .await;
    assert_eq!(body["witness_reachable"], false);
    assert!(body["store_writable"].is_null());
    assert!(
        body["reason"].as_str().unwrap().contains("witness"),
        "{body}"
    );
    assert_eq!(healthz(&http, &healthz_url).await, (200, "ok\n".into()));
    for stop in stack.stops.drain(..) {
        let _ = stop.send(());
    }
}

/// The body of a response as JSON.
trait JsonValue {
    async fn json_value(self) -> Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Value {
        let body = self.bytes().await.unwrap();
        serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body)))
    }
}
