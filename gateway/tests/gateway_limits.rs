//! The gateway's protection layers against the real stack (signer, witness,
//! gateway): rate limits per origin and global answering 429 with
//! `Retry-After` without touching the witness, monitors not starved by a
//! submission flood, the body cap admitting the largest legitimate checkpoint
//! (16 ML-DSA-44 cosignatures), and a witness that never answers met with a
//! prompt 503 (timeout) or load shedding instead of a hang or a queue.

#![allow(clippy::unwrap_used)]

mod gateway_support;

use std::time::{Duration, Instant};

use gateway::GatewayConfig;
use gateway::protect::RateLimit;
use gateway_support::witness_support::TestLog;
use gateway_support::{Stack, add, origin_hash, start_gateway, text};
use witness_core::note::{ML_DSA_44_SIGNATURE_SIZE, Note, NoteSignature, parse_note};

const FLOODED: &str = "flood.example/log";
const QUIET: &str = "quiet.example/log";

/// The `Retry-After` of a 429 or 503, in seconds.
fn retry_after(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Submits checkpoint `size` of `log`, following its previous `old` one.
async fn submit(stack: &Stack, log: &TestLog, old: u64, size: u64) -> reqwest::Response {
    stack
        .http
        .post(stack.url("/add-checkpoint"))
        .body(add(old, log.proof(old, size), log.signed(size)))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_origin_gets_429_with_retry_after_while_another_origin_gets_through() {
    let mut flooded = TestLog::new(FLOODED, 31);
    flooded.grow(10);
    let mut quiet = TestLog::new(QUIET, 32);
    quiet.grow(10);
    let mut stack = Stack::start(&[&flooded, &quiet], "", |config| {
        config.limits.per_origin_rate = RateLimit {
            per_minute: 1,
            burst: 3,
        };
    })
    .await;

    for size in 1..=3 {
        let (status, _, body) = text(submit(&stack, &flooded, size - 1, size).await).await;
        assert_eq!(status, 200, "{body}");
    }
    let refused = submit(&stack, &flooded, 3, 4).await;
    assert_eq!(refused.status().as_u16(), 429);
    let wait = retry_after(&refused);
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    assert_eq!(
        stack.log(FLOODED).await.size,
        3,
        "the refused submission reached the witness"
    );

    // Another origin has its own bucket.
    let (status, _, body) = text(submit(&stack, &quiet, 0, 10).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stack.log(QUIET).await.size, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_submission_flood_gets_429_and_monitors_are_not_starved() {
    let mut flooded = TestLog::new(FLOODED, 33);
    flooded.grow(10);
    let mut quiet = TestLog::new(QUIET, 34);
    quiet.grow(10);
    let mut stack = Stack::start(&[&flooded, &quiet], "", |config| {
        config.limits.submission_rate = RateLimit {
            per_minute: 1,
            burst: 2,
        };
    })
    .await;

    for size in 1..=2 {
        let (status, _, body) = text(submit(&stack, &flooded, size - 1, size).await).await;
        assert_eq!(status, 200, "{body}");
    }
    for (log, old) in [(&flooded, 2), (&quiet, 0)] {
        let refused = submit(&stack, log, old, 5).await;
        assert_eq!(refused.status().as_u16(), 429, "{}", log.origin);
        assert!((1..=60).contains(&retry_after(&refused)));
    }
    assert_eq!(stack.log(FLOODED).await.size, 2);
    assert_eq!(stack.log(QUIET).await.size, 0);

    // The monitoring endpoint has limits of its own.
    let monitoring = stack.url(&format!("/{}/checkpoint", origin_hash(FLOODED)));
    for _ in 0..5 {
        let (status, _, body) = text(stack.http.get(&monitoring).send().await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with(&format!("{FLOODED}\n2\n")), "{body}");
    }
}

/// signed-note requires accepting at least 16 signatures; with post-quantum
/// witnesses each is an ML-DSA-44 cosignature line of about 3.3 KB. Such a
/// checkpoint must pass the edge (no 413, no 400) and be cosigned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_with_sixteen_ml_dsa_44_cosignatures_reaches_the_witness() {
    let mut log = TestLog::new("pq.example/log", 35);
    log.grow(10);
    let mut stack = Stack::start(&[&log], "", |_| {}).await;

    let signed = parse_note(&log.signed(10)).unwrap();
    let mut signatures = signed.signatures().to_vec();
    for i in 0..16 {
        // Cosignatures from witnesses this one does not know, which signed-note
        // says to ignore; sized as ML-DSA-44 ones: timestamp and signature.
        signatures.push(
            NoteSignature::new(
                &format!("witness-{i:02}.transparency.example.org/ml-dsa-44"),
                0x1000_0000 + i,
                vec![0x5a; 8 + ML_DSA_44_SIGNATURE_SIZE],
            )
            .unwrap(),
        );
    }
    let note = Note::new(signed.text(), signatures).unwrap().to_bytes();
    let longest_line = note.split(|&b| b == b'\n').map(<[u8]>::len).max().unwrap();
    assert!(
        longest_line > 3_200,
        "cosignature line of {longest_line} bytes"
    );
    let body = add(0, Vec::new(), note);
    assert!(body.len() > 16 * 3_200, "body of {} bytes", body.len());

    let (status, _, reply) = text(stack.post("/add-checkpoint", body).await).await;
    assert_eq!(status, 200, "{reply}");
    let state = stack.log("pq.example/log").await;
    assert!(state.cosigned && state.size == 10, "{state:?}");
}

/// A witness that accepts connections and never answers.
async fn silent_witness() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (addr, task)
}

fn stuck_gateway_config(witness: std::net::SocketAddr) -> GatewayConfig {
    let mut config = GatewayConfig::new(format!("http://{witness}"));
    // The witness call's own deadline is far away: the request timeout answers.
    config.witness.timeout = Duration::from_secs(120);
    config.limits.request_timeout = Duration::from_secs(1);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_witness_gets_503_within_the_request_timeout_not_a_hang() {
    let (witness, _task) = silent_witness().await;
    let (gateway, _stop) = start_gateway(stuck_gateway_config(witness)).await;
    let mut log = TestLog::new(FLOODED, 36);
    log.grow(10);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let requests = [
        http.post(format!("http://{gateway}/add-checkpoint"))
            .body(add(0, Vec::new(), log.signed(10))),
        http.get(format!(
            "http://{gateway}/{}/checkpoint",
            origin_hash(FLOODED)
        )),
    ];
    for request in requests {
        let started = Instant::now();
        let response = request.send().await.unwrap();
        let elapsed = started.elapsed();
        assert_eq!(response.status().as_u16(), 503);
        assert!(retry_after(&response) >= 1);
        let (_, _, body) = text(response).await;
        assert_eq!(body, "request timed out; retry later\n");
        assert!(
            elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
            "answered after {elapsed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturated_submissions_are_shed_with_503_instead_of_queued() {
    let (witness, _task) = silent_witness().await;
    let mut config = stuck_gateway_config(witness);
    config.limits.submission_concurrency = 2;
    config.limits.request_timeout = Duration::from_secs(5);
    let (gateway, _stop) = start_gateway(config).await;
    let mut log = TestLog::new(FLOODED, 37);
    log.grow(10);
    let url = format!("http://{gateway}/add-checkpoint");
    let body = add(0, Vec::new(), log.signed(10));

    // Two submissions take both slots and wait on the silent witness.
    let mut stuck = Vec::new();
    for _ in 0..2 {
        let request = reqwest::Client::new().post(&url).body(body.clone());
        stuck.push(tokio::spawn(request.send()));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let shed = reqwest::Client::new()
        .post(&url)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "queued, not shed"
    );
    assert_eq!(shed.status().as_u16(), 503);
    assert!(retry_after(&shed) >= 1);
    assert_eq!(text(shed).await.2, "overloaded; retry later\n");

    // The stuck ones are answered at their deadline, and free their slots.
    for request in stuck {
        let response = request.await.unwrap().unwrap();
        assert_eq!(response.status().as_u16(), 503);
    }
    let again = reqwest::Client::new()
        .post(&url)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(text(again).await.2, "request timed out; retry later\n");
}

/// A flood of status reads (`/logs`, the status page) is refused with 429 once
/// its budget is spent, while the orchestrator's probes and the monitoring
/// endpoint, which have budgets of their own, still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_flood_gets_429_and_probes_still_answer() {
    let log = TestLog::new("status-flood.example/log", 11);
    let mut stack = Stack::start(&[&log], "", |config| {
        config.limits.monitoring_rate = RateLimit {
            per_minute: 1,
            burst: 3,
        };
    })
    .await;
    let mut statuses = Vec::new();
    for path in ["/logs", "/", "/status", "/logs", "/logs"] {
        let response = stack.http.get(stack.url(path)).send().await.unwrap();
        if response.status() == 429 {
            assert!(response.headers().contains_key("retry-after"), "{path}");
        }
        statuses.push(response.status().as_u16());
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429, 429],
        "the status budget is 3"
    );
    for probe in ["/healthz", "/readyz"] {
        let response = stack.http.get(stack.url(probe)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{probe} is not rate limited");
    }
    let monitoring = format!("/{}/checkpoint", origin_hash("status-flood.example/log"));
    let response = stack.http.get(stack.url(&monitoring)).send().await.unwrap();
    assert_eq!(response.status(), 404, "monitoring has its own budget");
    stack.stop();
}
