//! The gateway in front of the real witness service (started in-process from a
//! TOML configuration, over the real signer with mutual TLS), driven with real
//! HTTP: every tlog-witness outcome with its exact status and body, malformed
//! bodies refused at the edge without touching the witness's state, and the
//! monitoring endpoint, and sign-subtree on what the witness cosigned.

#![allow(clippy::unwrap_used)]

mod gateway_support;

use gateway::GatewayConfig;
use gateway_support::witness_support::TestLog;
use gateway_support::{Stack, add, origin_hash, start_gateway, text};
use std::sync::Arc;
use witness_core::merkle::{Hash, LeafHashes, prove_subtree_consistency, subtree_hash};
use witness_core::note::{parse_note, verify_note};
use witness_core::service::metrics::WitnessMetrics;
use witness_core::witness_api::{
    MAX_ADD_CHECKPOINT_BODY, SignSubtreeRequest, serialize_sign_subtree_body,
};

const PUSHED: &str = "push.example/log";

async fn start(log: &TestLog) -> Stack {
    Stack::start(&[log], "", |_| {}).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tlog_witness_over_http_against_the_real_witness() {
    let mut log = TestLog::new(PUSHED, 5);
    log.grow(40);
    let mut stack = start(&log).await;
    let monitoring = format!("/{}/checkpoint", origin_hash(PUSHED));

    // Monitoring before anything was cosigned, and for an unknown origin.
    let (status, _, _) = text(stack.http.get(stack.url(&monitoring)).send().await.unwrap()).await;
    assert_eq!(status, 404, "nothing cosigned yet");
    let stranger_path = format!("/{}/checkpoint", origin_hash("stranger.example/log"));
    let (status, _, _) = text(
        stack
            .http
            .get(stack.url(&stranger_path))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404, "unknown origin");

    // Every malformed shape is refused at the edge, and the witness is untouched.
    let hash = Hash([7; 32]).to_base64();
    let note = log.signed(30);
    let crlf: Vec<u8> = add(0, Vec::new(), note.clone())
        .iter()
        .flat_map(|&b| {
            if b == b'\n' {
                vec![b'\r', b'\n']
            } else {
                vec![b]
            }
        })
        .collect();
    let sixty_four = {
        let mut body = b"old 0\n".to_vec();
        for _ in 0..64 {
            body.extend_from_slice(format!("{hash}\n").as_bytes());
        }
        body.push(b'\n');
        body.extend_from_slice(&note);
        body
    };
    let malformed: Vec<(&str, Vec<u8>)> = vec![
        ("empty body", Vec::new()),
        (
            "missing empty line",
            [b"old 0\n".as_slice(), &note].concat(),
        ),
        ("no checkpoint", b"old 0\n\n".to_vec()),
        ("leading zero", [b"old 00\n\n".as_slice(), &note].concat()),
        ("sign", [b"old +0\n\n".as_slice(), &note].concat()),
        (
            "non-base64",
            [b"old 0\n!!!!\n\n".as_slice(), &note].concat(),
        ),
        (
            "short hash",
            [
                b"old 0\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\n\n".as_slice(),
                &note,
            ]
            .concat(),
        ),
        ("64 proof lines", sixty_four),
        ("crlf", crlf),
        (
            "not a note",
            [b"old 0\n\n".as_slice(), b"not a note\n"].concat(),
        ),
    ];
    for (name, body) in malformed {
        let (status, content_type, reason) = text(stack.post("/add-checkpoint", body).await).await;
        assert_eq!(status, 400, "{name}: {reason}");
        assert_eq!(
            reason.lines().count(),
            1,
            "{name}: one-line reason {reason:?}"
        );
        assert!(content_type.starts_with("text/plain"), "{name}");
    }
    let oversized = vec![b'a'; MAX_ADD_CHECKPOINT_BODY + 1];
    let (status, _, _) = text(stack.post("/add-checkpoint", oversized).await).await;
    assert_eq!(status, 413);
    let (status, _, _) = text(stack.post("/sign-subtree", b"subtree 1 0\n".to_vec()).await).await;
    assert_eq!(status, 400);
    let untouched = stack.log(PUSHED).await;
    assert!(!untouched.cosigned && untouched.size == 0, "{untouched:?}");

    // Happy path: the cosignatures verify under the witness's keys.
    let (status, content_type, body) = text(
        stack
            .post("/add-checkpoint", add(0, Vec::new(), log.signed(30)))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "text/plain; charset=utf-8");
    let witness_keys = stack
        .signer
        .client(Arc::new(WitnessMetrics::new().unwrap()))
        .keys()
        .await
        .unwrap()
        .cosigning;
    let cosigned = [log.signed(30), body.into_bytes()].concat();
    let verified = verify_note(parse_note(&cosigned).unwrap(), &witness_keys).unwrap();
    assert_eq!(verified.verified().len(), 2, "Ed25519 and ML-DSA-44");

    // 409 with the stored size as the exact body.
    let (status, content_type, body) = text(
        stack
            .post("/add-checkpoint", add(0, Vec::new(), log.signed(40)))
            .await,
    )
    .await;
    assert_eq!(
        (status, content_type.as_str(), body.as_str()),
        (409, "text/x.tlog.size", "30\n")
    );

    // 422: a proof that does not verify.
    let mut bad = log.proof(30, 40);
    bad[0].0[1] ^= 4;
    let (status, _, _) = text(
        stack
            .post("/add-checkpoint", add(30, bad, log.signed(40)))
            .await,
    )
    .await;
    assert_eq!(status, 422);

    // 403: signed by a key with the log's name that the witness does not trust.
    let mut impostor = TestLog::new(PUSHED, 9);
    impostor.leaves = log.leaves.clone();
    let (status, _, _) = text(
        stack
            .post(
                "/add-checkpoint",
                add(30, log.proof(30, 40), impostor.signed(40)),
            )
            .await,
    )
    .await;
    assert_eq!(status, 403);

    // 404: an origin the witness does not trust.
    let stranger = TestLog::new("stranger.example/log", 6);
    let (status, _, _) = text(
        stack
            .post("/add-checkpoint", add(0, Vec::new(), stranger.signed(0)))
            .await,
    )
    .await;
    assert_eq!(status, 404);

    // None of the refusals moved the witness.
    assert_eq!(stack.log(PUSHED).await.size, 30);

    // Consistent growth is cosigned, and the monitoring endpoint serves it with
    // the log's signature and the witness's cosignatures.
    let (status, _, body) = text(
        stack
            .post(
                "/add-checkpoint",
                add(30, log.proof(30, 40), log.signed(40)),
            )
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let cosigned_40 = [log.signed(40), body.into_bytes()].concat();

    // sign-subtree on the checkpoint the witness just cosigned: 200 with one
    // subtree cosignature; a wrong subtree hash is 422; without the witness's
    // own cosignature, 403.
    let subtree = |checkpoint: Vec<u8>, flip: u8| {
        let mut subtree_hash = subtree_hash(&mut LeafHashes(&log.leaves), 32, 40).unwrap();
        subtree_hash.0[0] ^= flip;
        serialize_sign_subtree_body(&SignSubtreeRequest {
            start: 32,
            end: 40,
            subtree_hash,
            proof: prove_subtree_consistency(&mut LeafHashes(&log.leaves), 32, 40, 40).unwrap(),
            checkpoint,
        })
    };
    let (status, content_type, body) = text(
        stack
            .post("/sign-subtree", subtree(cosigned_40.clone(), 0))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "text/plain; charset=utf-8");
    assert_eq!(body.lines().count(), 1, "{body}");
    assert!(
        body.starts_with('\u{2014}') && body.ends_with('\n'),
        "{body}"
    );
    let (status, _, _) = text(stack.post("/sign-subtree", subtree(cosigned_40, 1)).await).await;
    assert_eq!(status, 422);
    let (status, _, _) = text(
        stack
            .post("/sign-subtree", subtree(log.signed(40), 0))
            .await,
    )
    .await;
    assert_eq!(status, 403);

    let served = stack.http.get(stack.url(&monitoring)).send().await.unwrap();
    assert_eq!(served.status().as_u16(), 200);
    assert_eq!(
        served.headers().get("cache-control").unwrap(),
        "public, max-age=60"
    );
    let note = parse_note(&served.bytes().await.unwrap()).unwrap();
    assert!(note.text().starts_with(&format!("{PUSHED}\n40\n")));
    verify_note(note.clone(), &[log.verifier.clone()]).unwrap();
    verify_note(note, &witness_keys).unwrap();

    // Wrong methods.
    let status = stack
        .http
        .get(stack.url("/add-checkpoint"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 405);
    let status = stack
        .http
        .post(stack.url(&monitoring))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 405);

    stack.stop();
}

#[tokio::test]
async fn unreachable_witness_is_503_not_500() {
    // A port that was bound and released: nothing listens there.
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let mut config = GatewayConfig::new(format!("http://{closed}"));
    config.submission_prefix = "/witness".into();
    let (addr, _stop) = start_gateway(config).await;
    let log = TestLog::new(PUSHED, 5);
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/witness/add-checkpoint"))
        .body(add(0, Vec::new(), log.signed(0)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    // Malformed input is still refused at the edge, whatever the witness's state.
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/witness/add-checkpoint"))
        .body("old 01\n\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
}
