//! The pull feeders against local HTTP logs on 127.0.0.1: Rekor v1 from real
//! recorded staging responses, a synthetic Rekor v1 log with entries, and a
//! tlog-tiles log built from 70,000 random leaves. Every checkpoint goes to a
//! witness that verifies the log's signature and the consistency proof with
//! the core ([`support_feeders::MemorySink`]).

#![allow(clippy::unwrap_used)]

mod support_feeders;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use futures::StreamExt as _;
use witness_core::Error;
use witness_core::merkle::{Hash, LeafHashes, prove_consistency};
use witness_core::service::feeder::{
    Feeder, FeederConfig, LogKind, LogResult, PollOutcome, run_feeder,
};
use witness_core::service::metrics::WitnessMetrics;

use support_feeders::*;

const ACTIVE: &str = "rekor.sigstage.dev - 8202293616175992157";
const INACTIVE: [(&str, u64); 3] = [
    ("rekor.sigstage.dev - 8959784741570461564", 461),
    ("rekor.sigstage.dev - 108574341321668964", 14358),
    ("rekor.sigstage.dev - 8050909264565447525", 31667593),
];

fn loginfo_old() -> Vec<u8> {
    data("rekor/loginfo/rekor-v1-staging.GET-api-v1-log.old.json")
}

fn loginfo_new() -> Vec<u8> {
    data("rekor/loginfo/rekor-v1-staging.GET-api-v1-log.new.json")
}

fn staging_proof() -> Vec<u8> {
    data(
        "rekor/loginfo/rekor-v1-staging.GET-api-v1-log-proof.firstSize1352760.lastSize1352764.json",
    )
}

const STAGING_PROOF_KEY: (u64, u64, i64) = (1352760, 1352764, 8202293616175992157);

/// A witness trusting every staging shard with the real staging key.
fn staging_sink() -> Arc<MemorySink> {
    let key = staging_key();
    Arc::new(MemorySink::new(
        INACTIVE
            .iter()
            .map(|(origin, _)| *origin)
            .chain([ACTIVE])
            .map(|origin| (origin.to_owned(), key.clone())),
    ))
}

fn feeder_config(name: &str, url: &str, kind: LogKind, samples: usize) -> FeederConfig {
    let mut config = FeederConfig::new(name, url, kind).unwrap();
    config.inclusion_samples = samples;
    config.request_timeout = Duration::from_secs(10);
    config
}

/// The value of the sample of `name` carrying every one of `labels`.
fn metric(metrics: &WitnessMetrics, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.render().lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (label_text, value) = rest.rsplit_once("} ")?;
        labels
            .iter()
            .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
            .then(|| value.parse().unwrap())
    })
}

fn verify_failures(metrics: &WitnessMetrics, log: &str, reason: &str) -> f64 {
    metric(
        metrics,
        "witness_verify_failures_total",
        &[("log", log), ("reason", reason)],
    )
    .unwrap_or(0.0)
}

fn backlog(metrics: &WitnessMetrics, log: &str) -> Option<f64> {
    metric(metrics, "witness_backfill_queue_depth", &[("log", log)])
}

fn result<'a>(outcome: &'a PollOutcome, origin: &str) -> &'a LogResult {
    &outcome
        .log(origin)
        .unwrap_or_else(|| panic!("no outcome for {origin}: {outcome:?}"))
        .result
}

/// The reason of a failure of the feeder's own checks (or fetches).
fn failure_kind(result: &LogResult) -> &'static str {
    match result {
        LogResult::Failed(error) => error.kind(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// The reason the witness refused a submission.
fn refusal_kind(result: &LogResult) -> &'static str {
    match result {
        LogResult::Refused(error) => error.kind(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn witness_answers(metrics: &WitnessMetrics, log: &str, outcome: &str) -> f64 {
    metric(
        metrics,
        "witness_cosignatures_total",
        &[("log", log), ("outcome", outcome)],
    )
    .unwrap_or(0.0)
}

struct Staging {
    server: Arc<RekorV1Server>,
    sink: Arc<MemorySink>,
    metrics: Arc<WitnessMetrics>,
    feeder: Feeder,
}

/// A staging server answering `log_info`, the recorded proof, and the recorded
/// entry at virtual index 1688; a feeder without inclusion sampling (the
/// recorded data has no entries past the old size).
async fn staging(log_info: Vec<u8>) -> Staging {
    let (server, url) = RekorV1Server::start(log_info).await;
    server
        .proofs
        .lock()
        .unwrap()
        .insert(STAGING_PROOF_KEY, staging_proof());
    let metrics = Arc::new(WitnessMetrics::new().unwrap());
    let sink = Arc::new(
        Arc::into_inner(staging_sink())
            .unwrap()
            .counting(metrics.clone()),
    );
    let config = feeder_config("rekor.sigstage.dev", &url, LogKind::RekorV1, 0);
    let feeder = Feeder::new(&config, sink.clone(), metrics.clone()).unwrap();
    Staging {
        server,
        sink,
        metrics,
        feeder,
    }
}

// ---------------------------------------------------------------------------
// Rekor v1, real staging data
// ---------------------------------------------------------------------------

#[tokio::test]
async fn staging_shards_are_each_witnessed_as_their_own_origin_then_advance_by_one_proof() {
    let mut s = staging(loginfo_old()).await;

    let first = s.feeder.poll_once().await.unwrap();
    assert!(first.is_healthy(), "{first:?}");
    assert_eq!(first.logs.len(), 4);
    for (origin, size) in INACTIVE.iter().copied().chain([(ACTIVE, 1352760)]) {
        assert!(
            matches!(
                result(&first, origin),
                LogResult::Cosigned { old_size: 0, cosignatures } if cosignatures.len() == 1
            ),
            "{origin}: {first:?}"
        );
        assert_eq!(s.sink.tree(origin).unwrap().size, size, "{origin}");
        assert_eq!(backlog(&s.metrics, origin), Some(0.0), "{origin}");
    }
    assert!(s.server.proof_requests().is_empty());

    s.server.set_log_info(loginfo_new());
    s.server.clear_requests();
    let second = s.feeder.poll_once().await.unwrap();
    assert!(second.is_healthy(), "{second:?}");
    let proofs = s.server.proof_requests();
    assert_eq!(proofs.len(), 1, "{proofs:?}");
    assert_eq!(proofs[0]["firstSize"], "1352760");
    assert_eq!(proofs[0]["lastSize"], "1352764");
    assert_eq!(proofs[0]["treeID"], "8202293616175992157");
    assert!(matches!(
        result(&second, ACTIVE),
        LogResult::Cosigned {
            old_size: 1352760,
            ..
        }
    ));
    let root = Hash::parse_hex("c7d98fcf73e06fb3b7a6c02648dee52567a4b7b6db1dae31ec723283b379c782")
        .unwrap();
    assert_eq!(s.sink.tree(ACTIVE).unwrap().size, 1352764);
    assert_eq!(s.sink.tree(ACTIVE).unwrap().root, root);
    // The frozen shards were re-signed by Rekor but did not change: not
    // submitted again, and not even looked up.
    for (origin, _) in INACTIVE {
        assert!(matches!(result(&second, origin), LogResult::UpToDate));
    }
    let submissions = s.sink.submissions.lock().unwrap().clone();
    assert_eq!(submissions.len(), 5);
    assert_eq!(submissions[4].origin, ACTIVE);
    assert_eq!(submissions[4].size, 1352764);
    assert_eq!(submissions[4].proof.len(), 9);
    assert!(submissions.iter().all(|s| s.result.is_ok()));
    assert_eq!(backlog(&s.metrics, ACTIVE), Some(0.0));
    assert_eq!(
        metric(
            &s.metrics,
            "witness_log_fetches_total",
            &[("log", ACTIVE), ("kind", "proof"), ("outcome", "ok")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn flipped_proof_byte_is_refused_by_the_witness_and_counted_once() {
    let mut s = staging(loginfo_old()).await;
    s.feeder.poll_once().await.unwrap();
    let text = String::from_utf8(staging_proof()).unwrap();
    let flipped = text.replacen("2713ba8a", "2713ba8b", 1);
    assert_ne!(text, flipped);
    s.server
        .proofs
        .lock()
        .unwrap()
        .insert(STAGING_PROOF_KEY, flipped.into_bytes());
    s.server.set_log_info(loginfo_new());

    let outcome = s.feeder.poll_once().await.unwrap();
    assert!(!outcome.is_healthy());
    assert_eq!(
        refusal_kind(result(&outcome, ACTIVE)),
        "consistency_proof_invalid"
    );
    assert_eq!(s.sink.tree(ACTIVE).unwrap().size, 1352760);
    // Counted once, by the witness that refused it, as for a pushed checkpoint.
    assert_eq!(
        witness_answers(&s.metrics, ACTIVE, "consistency_proof_invalid"),
        1.0
    );
    assert_eq!(
        verify_failures(&s.metrics, ACTIVE, "consistency_proof_invalid"),
        0.0
    );
    // The 4 entries the witness could not cosign are still waiting.
    assert_eq!(backlog(&s.metrics, ACTIVE), Some(4.0));
}

#[tokio::test]
async fn lying_root_hash_in_proof_response_is_ignored() {
    let mut s = staging(loginfo_old()).await;
    s.feeder.poll_once().await.unwrap();
    let text = String::from_utf8(staging_proof()).unwrap();
    let lying = text.replace(
        "437afb5d68e7f875cd91311f6549f4f12324418b39bdbf96cffe3884cb9e8f26",
        &"ab".repeat(32),
    );
    assert_ne!(text, lying);
    s.server
        .proofs
        .lock()
        .unwrap()
        .insert(STAGING_PROOF_KEY, lying.into_bytes());
    s.server.set_log_info(loginfo_new());

    let outcome = s.feeder.poll_once().await.unwrap();
    assert!(outcome.is_healthy(), "{outcome:?}");
    assert_eq!(s.sink.tree(ACTIVE).unwrap().size, 1352764);
}

#[tokio::test]
async fn rolled_back_log_info_is_never_submitted() {
    let mut s = staging(loginfo_new()).await;
    s.feeder.poll_once().await.unwrap();
    assert_eq!(s.sink.tree(ACTIVE).unwrap().size, 1352764);
    let submitted = s.sink.submission_count();

    s.server.set_log_info(loginfo_old());
    let outcome = s.feeder.poll_once().await.unwrap();
    assert_eq!(
        failure_kind(result(&outcome, ACTIVE)),
        "old_size_above_size"
    );
    assert_eq!(s.sink.submission_count(), submitted);
    assert_eq!(s.sink.tree(ACTIVE).unwrap().size, 1352764);
    assert_eq!(
        verify_failures(&s.metrics, ACTIVE, "old_size_above_size"),
        1.0
    );
    assert!(s.server.proof_requests().is_empty());
}

#[tokio::test]
async fn racing_replica_state_is_retried_from_the_stored_size() {
    let mut s = staging(loginfo_old()).await;
    s.feeder.poll_once().await.unwrap();
    s.server.set_log_info(loginfo_new());
    // The active shard's state is read as empty (another replica stored it
    // after this one read): the feeder submits from 0, the witness answers
    // with its stored size, and the feeder fetches the proof from there.
    s.sink.stale_reads.store(1, Ordering::SeqCst);
    let outcome = s.feeder.poll_once().await.unwrap();
    assert!(
        matches!(
            result(&outcome, ACTIVE),
            LogResult::Cosigned {
                old_size: 1352760,
                ..
            }
        ),
        "{outcome:?}"
    );
    let submissions = s.sink.submissions.lock().unwrap().clone();
    let active: Vec<_> = submissions.iter().filter(|s| s.origin == ACTIVE).collect();
    assert_eq!(active.len(), 3);
    assert_eq!(active[1].old_size, 0);
    assert_eq!(active[1].result, Err("old_size_mismatch"));
    assert_eq!(active[2].old_size, 1352760);
    assert!(active[2].result.is_ok());
    assert_eq!(s.server.proof_requests().len(), 1);
}

#[tokio::test]
async fn untrusted_shards_are_skipped_and_never_labelled() {
    let (server, url) = RekorV1Server::start(loginfo_old()).await;
    let sink = Arc::new(MemorySink::new([(ACTIVE.to_owned(), staging_key())]));
    let metrics = Arc::new(WitnessMetrics::new().unwrap());
    let config = feeder_config("rekor.sigstage.dev", &url, LogKind::RekorV1, 0);
    let mut feeder = Feeder::new(&config, sink.clone(), metrics.clone()).unwrap();
    let outcome = feeder.poll_once().await.unwrap();
    assert!(outcome.is_healthy());
    for (origin, _) in INACTIVE {
        assert!(matches!(result(&outcome, origin), LogResult::NotTrusted));
    }
    assert!(matches!(
        result(&outcome, ACTIVE),
        LogResult::Cosigned { .. }
    ));
    assert_eq!(sink.submission_count(), 1);
    let text = metrics.render();
    assert!(!text.contains("8959784741570461564"), "{text}");
    drop(server);
}

#[tokio::test]
async fn log_info_root_disagreeing_with_its_signed_tree_head_is_refused() {
    let text = String::from_utf8(loginfo_old()).unwrap();
    let lying = text.replace(
        "e222aa53db49893334fb5a878ead1bf8b9f8f3c02ccfc0ae687f28256bd74907",
        &"cd".repeat(32),
    );
    assert_ne!(text, lying);
    let mut s = staging(lying.into_bytes()).await;
    let outcome = s.feeder.poll_once().await.unwrap();
    let active = outcome
        .logs
        .iter()
        .find(|log| matches!(log.result, LogResult::Failed(_)))
        .unwrap();
    assert_eq!(failure_kind(&active.result), "checkpoint_proof_mismatch");
    assert!(s.sink.tree(ACTIVE).is_none());
    // The origin is not vouched for by the witness yet: counted under the name.
    assert_eq!(
        verify_failures(
            &s.metrics,
            "rekor.sigstage.dev",
            "checkpoint_proof_mismatch"
        ),
        1.0
    );
}

#[tokio::test]
async fn malformed_or_oversized_log_info_is_an_error_that_changes_nothing() {
    let mut s = staging(b"{\"treeSize\": \"twelve\"".to_vec()).await;
    let error = s.feeder.poll_once().await.unwrap_err();
    assert_eq!(error.kind(), "malformed_json");
    assert_eq!(
        verify_failures(&s.metrics, "rekor.sigstage.dev", "malformed_json"),
        1.0
    );

    // A declared length over the cap is refused before the body is read.
    s.server.set_log_info(vec![b' '; (1 << 20) + 1]);
    let error = s.feeder.poll_once().await.unwrap_err();
    let Error::Fetch { detail, .. } = &error else {
        panic!("{error:?}")
    };
    assert!(
        detail.contains("over the limit of 1048576 bytes"),
        "{detail}"
    );
    assert_eq!(s.sink.submission_count(), 0);
}

#[tokio::test]
async fn endless_log_info_body_is_cut_off_at_the_cap() {
    // 1 GiB of JSON whitespace, streamed without a length: the feeder must stop
    // reading at 1 MiB instead of buffering it.
    const CHUNK: usize = 64 * 1024;
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let router = Router::new().route(
        "/api/v1/log",
        get(move || {
            let counter = counter.clone();
            async move {
                let chunks = futures::stream::iter(0..(1usize << 30) / CHUNK).map(move |_| {
                    counter.fetch_add(CHUNK, Ordering::SeqCst);
                    Ok::<_, std::io::Error>(vec![b' '; CHUNK])
                });
                Body::from_stream(chunks)
            }
        }),
    );
    let url = serve(router).await;
    let sink = staging_sink();
    let metrics = Arc::new(WitnessMetrics::new().unwrap());
    let config = feeder_config("rekor.sigstage.dev", &url, LogKind::RekorV1, 0);
    let mut feeder = Feeder::new(&config, sink.clone(), metrics.clone()).unwrap();
    let error = feeder.poll_once().await.unwrap_err();
    let Error::Fetch { detail, .. } = &error else {
        panic!("{error:?}")
    };
    assert!(detail.contains("over the limit"), "{detail}");
    // Give the server a moment to notice the closed connection.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = sent.load(Ordering::SeqCst);
    assert!(sent < 16 << 20, "server produced {sent} bytes");
    assert_eq!(
        metric(
            &metrics,
            "witness_log_fetches_total",
            &[("log", "rekor.sigstage.dev"), ("outcome", "fetch")]
        ),
        Some(1.0)
    );
    assert_eq!(sink.submission_count(), 0);
}

#[tokio::test]
async fn recorded_staging_entry_is_checked_against_its_cosigned_shard() {
    let mut s = staging(loginfo_old()).await;
    s.feeder.poll_once().await.unwrap();
    let entry = data("rekor/loginfo/rekor-v1-staging.log-entry.logIndex1688.json");
    s.server.entries.lock().unwrap().insert(1688, entry.clone());
    s.feeder.check_inclusion(1688).await.unwrap();
    assert_eq!(
        s.server.requests_to("/api/v1/log/entries"),
        ["/api/v1/log/entries?logIndex=1688"]
    );

    // The same entry with one field of its body changed ("0.0.1" to "0.0.2").
    let text = String::from_utf8(entry).unwrap();
    let tampered = text.replacen("MC4wLjEi", "MC4wLjIi", 1);
    assert_ne!(text, tampered);
    s.server
        .entries
        .lock()
        .unwrap()
        .insert(1688, tampered.into_bytes());
    let error = s.feeder.check_inclusion(1688).await.unwrap_err();
    assert_eq!(error.kind(), "inclusion_proof_invalid");
    let shard = INACTIVE[1].0;
    assert_eq!(
        verify_failures(&s.metrics, shard, "inclusion_proof_invalid"),
        1.0
    );
}

// ---------------------------------------------------------------------------
// Rekor v1, synthetic log with entries
// ---------------------------------------------------------------------------

#[tokio::test]
async fn rekor_v1_advance_checks_every_sampled_entry_and_refuses_a_tampered_one() {
    let frozen = SyntheticShard::new("rekor.test", 111, 5);
    let active = SyntheticShard::new("rekor.test", 222, 24);
    let (server, url) = RekorV1Server::start(log_info_json(
        active.shard_json(16),
        vec![frozen.shard_json(5)],
    ))
    .await;
    let sink = Arc::new(MemorySink::new([
        (frozen.origin.clone(), frozen.verifier.clone()),
        (active.origin.clone(), active.verifier.clone()),
    ]));
    let metrics = Arc::new(WitnessMetrics::new().unwrap());
    let config = feeder_config("rekor.test", &url, LogKind::RekorV1, 4);
    let mut feeder = Feeder::new(&config, sink.clone(), metrics.clone()).unwrap();
    let first = feeder.poll_once().await.unwrap();
    assert!(first.is_healthy(), "{first:?}");
    // A first checkpoint has nothing to sample.
    assert!(server.requests_to("/api/v1/log/entries").is_empty());

    // Advance 16 -> 20: all four new entries are sampled. Rekor proves them in
    // whatever tree it has at the time: 24 (newer), 19 (older) or 20.
    let offset = 5;
    let proven_at = [(16, 24), (17, 24), (18, 19), (19, 20)];
    {
        let mut entries = server.entries.lock().unwrap();
        for (local, size) in proven_at {
            let body = &active.bodies[local as usize];
            entries.insert(offset + local, active.entry_json(offset, local, size, body));
        }
        let mut proofs = server.proofs.lock().unwrap();
        for (old, new) in [(16, 20), (20, 24), (19, 20)] {
            proofs.insert((old, new, 222), active.proof_json(old, new));
        }
    }
    server.set_log_info(log_info_json(
        active.shard_json(20),
        vec![frozen.shard_json(5)],
    ));
    server.clear_requests();
    let second = feeder.poll_once().await.unwrap();
    assert!(second.is_healthy(), "{second:?}");
    let mut fetched = server.requests_to("/api/v1/log/entries");
    fetched.sort();
    assert_eq!(
        fetched,
        (21..25)
            .map(|i| format!("/api/v1/log/entries?logIndex={i}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(sink.tree(&active.origin).unwrap().size, 20);

    // Advance 20 -> 24 with every served entry body altered.
    {
        let mut entries = server.entries.lock().unwrap();
        for local in 20..24u64 {
            let mut body = active.bodies[local as usize].clone();
            body[0] ^= 1;
            entries.insert(offset + local, active.entry_json(offset, local, 24, &body));
        }
    }
    server.set_log_info(log_info_json(
        active.shard_json(24),
        vec![frozen.shard_json(5)],
    ));
    let submitted = sink.submission_count();
    let third = feeder.poll_once().await.unwrap();
    assert_eq!(
        failure_kind(result(&third, &active.origin)),
        "inclusion_proof_invalid"
    );
    assert_eq!(sink.submission_count(), submitted, "never submitted");
    assert_eq!(sink.tree(&active.origin).unwrap().size, 20);
    let line = metrics
        .render()
        .lines()
        .find(|line| line.starts_with("witness_verify_failures_total"))
        .unwrap()
        .to_owned();
    assert_eq!(
        line,
        "witness_verify_failures_total{log=\"rekor.test - 222\",reason=\"inclusion_proof_invalid\"} 1"
    );
    assert_eq!(backlog(&metrics, &active.origin), Some(4.0));
}

#[tokio::test]
async fn forked_checkpoint_at_the_cosigned_size_reaches_the_witness_as_evidence() {
    let shard = SyntheticShard::new("rekor.test", 333, 12);
    let (server, url) = RekorV1Server::start(log_info_json(shard.shard_json(12), vec![])).await;
    let metrics = Arc::new(WitnessMetrics::new().unwrap());
    let sink = Arc::new(
        MemorySink::new([(shard.origin.clone(), shard.verifier.clone())]).counting(metrics.clone()),
    );
    let config = feeder_config("rekor.test", &url, LogKind::RekorV1, 4);
    let mut feeder = Feeder::new(&config, sink.clone(), metrics.clone()).unwrap();
    feeder.poll_once().await.unwrap();
    let cosigned = sink.tree(&shard.origin).unwrap();

    // The log signs another tree of the same size: a split view. It goes to the
    // witness (which checks the signature and keeps evidence), never cosigned.
    let fork = shard.forked_at(7);
    server.set_log_info(log_info_json(fork.shard_json(12), vec![]));
    let outcome = feeder.poll_once().await.unwrap();
    assert_eq!(
        refusal_kind(result(&outcome, &shard.origin)),
        "root_mismatch"
    );
    let last = sink.submissions.lock().unwrap().last().unwrap().clone();
    assert_eq!((last.old_size, last.size), (12, 12));
    assert!(last.proof.is_empty());
    assert_eq!(sink.tree(&shard.origin), Some(cosigned));
    assert_eq!(
        witness_answers(&metrics, &shard.origin, "root_mismatch"),
        1.0
    );
    assert!(server.proof_requests().is_empty());
}

// ---------------------------------------------------------------------------
// tlog-tiles
// ---------------------------------------------------------------------------

const TILES_ORIGIN: &str = "tiles.example/log";

async fn tiles_log(
    size: usize,
    samples: usize,
) -> (
    Arc<TilesServer>,
    Arc<MemorySink>,
    Arc<WitnessMetrics>,
    Feeder,
) {
    let mut log = TilesLog::new(TILES_ORIGIN);
    log.grow(size);
    let verifier = log.verifier.clone();
    let (server, url) = TilesServer::start(log).await;
    let sink = Arc::new(MemorySink::new([(TILES_ORIGIN.to_owned(), verifier)]));
    let metrics = Arc::new(WitnessMetrics::new().unwrap());
    let config = feeder_config(TILES_ORIGIN, &url, LogKind::Tiles, samples);
    let feeder = Feeder::new(&config, sink.clone(), metrics.clone()).unwrap();
    (server, sink, metrics, feeder)
}

fn tile_requests(requests: &[String]) -> Vec<&String> {
    requests
        .iter()
        .filter(|path| path.starts_with("tile/") && !path.starts_with("tile/entries/"))
        .collect()
}

#[tokio::test]
async fn tiles_feeder_proves_growth_from_tiles_and_fetches_only_changed_tiles() {
    let (server, sink, metrics, mut feeder) = tiles_log(70_000, 0).await;

    let first = feeder.poll_once().await.unwrap();
    assert!(
        matches!(
            result(&first, TILES_ORIGIN),
            LogResult::Cosigned { old_size: 0, .. }
        ),
        "{first:?}"
    );
    assert_eq!(sink.tree(TILES_ORIGIN).unwrap().size, 70_000);
    let first_requests = server.take_requests();
    let first_tiles = tile_requests(&first_requests);
    // The right edge at 70,000: the spec's example widths.
    for path in ["tile/0/273.p/112", "tile/1/001.p/17", "tile/2/000.p/1"] {
        assert!(first_tiles.iter().any(|p| *p == path), "{first_tiles:?}");
    }

    server.log.lock().unwrap().grow(500);
    let second = feeder.poll_once().await.unwrap();
    assert!(
        matches!(
            result(&second, TILES_ORIGIN),
            LogResult::Cosigned {
                old_size: 70_000,
                ..
            }
        ),
        "{second:?}"
    );
    // The proof the witness accepted is the one a full copy of the leaves gives.
    let leaves = server.log.lock().unwrap().leaves().to_vec();
    let submitted = sink.submissions.lock().unwrap().last().unwrap().clone();
    assert_eq!(
        submitted.proof,
        prove_consistency(&mut LeafHashes(&leaves), 70_000, 70_500).unwrap()
    );
    assert_eq!(sink.tree(TILES_ORIGIN).unwrap().size, 70_500);
    let second_requests = server.take_requests();
    let second_tiles = tile_requests(&second_requests);
    // Only tiles that changed: nothing fetched twice (full tiles are cached, and
    // the level-2 tile is still one hash wide), the old partial tile of level 0
    // now fetched full.
    let before: HashSet<&String> = first_tiles.iter().copied().collect();
    for path in &second_tiles {
        assert!(!before.contains(path), "{path} fetched again");
    }
    assert!(second_tiles.iter().any(|p| *p == "tile/0/273"));
    assert!(second_tiles.iter().any(|p| *p == "tile/1/001.p/19"));
    assert!(second_tiles.len() <= 6, "{second_tiles:?}");
    eprintln!("first poll tiles: {first_tiles:?}\nsecond poll tiles: {second_tiles:?}");

    let third = feeder.poll_once().await.unwrap();
    assert!(matches!(result(&third, TILES_ORIGIN), LogResult::UpToDate));
    assert_eq!(server.take_requests(), ["checkpoint"]);
    assert_eq!(backlog(&metrics, TILES_ORIGIN), Some(0.0));
}

#[tokio::test]
async fn tampered_tile_is_caught_and_never_poisons_the_cache() {
    let (server, sink, metrics, mut feeder) = tiles_log(70_500, 0).await;
    feeder.poll_once().await.unwrap();
    server.log.lock().unwrap().grow(500);

    // The new right-edge tile is read for the root: the feeder's own check
    // catches it, and nothing reaches the witness.
    server
        .tampered_tiles
        .lock()
        .unwrap()
        .insert("tile/0/277.p/88".into());
    let submitted = sink.submission_count();
    let outcome = feeder.poll_once().await.unwrap();
    assert_eq!(
        failure_kind(result(&outcome, TILES_ORIGIN)),
        "checkpoint_proof_mismatch"
    );
    assert_eq!(sink.submission_count(), submitted);
    assert_eq!(
        verify_failures(&metrics, TILES_ORIGIN, "checkpoint_proof_mismatch"),
        1.0
    );

    // The old right-edge tile, now full, is read only for the proof: the
    // witness refuses the proof.
    server.tampered_tiles.lock().unwrap().clear();
    server
        .tampered_tiles
        .lock()
        .unwrap()
        .insert("tile/0/275".into());
    let outcome = feeder.poll_once().await.unwrap();
    assert_eq!(
        refusal_kind(result(&outcome, TILES_ORIGIN)),
        "consistency_proof_invalid"
    );
    assert_eq!(sink.tree(TILES_ORIGIN).unwrap().size, 70_500);

    // Served correctly again: the bad tiles were not kept.
    server.tampered_tiles.lock().unwrap().clear();
    server.take_requests();
    let outcome = feeder.poll_once().await.unwrap();
    assert!(outcome.is_healthy(), "{outcome:?}");
    assert_eq!(sink.tree(TILES_ORIGIN).unwrap().size, 71_000);
    assert!(server.take_requests().iter().any(|p| p == "tile/0/275"));
}

#[tokio::test]
async fn tampered_entry_bundle_fails_the_inclusion_duty() {
    let (server, sink, metrics, mut feeder) = tiles_log(1_000, 4).await;
    feeder.poll_once().await.unwrap();
    server.log.lock().unwrap().grow(300);
    server
        .tamper_entries
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let outcome = feeder.poll_once().await.unwrap();
    assert_eq!(
        failure_kind(result(&outcome, TILES_ORIGIN)),
        "inclusion_proof_invalid"
    );
    assert_eq!(sink.tree(TILES_ORIGIN).unwrap().size, 1_000);
    assert_eq!(
        verify_failures(&metrics, TILES_ORIGIN, "inclusion_proof_invalid"),
        1.0
    );
    assert_eq!(backlog(&metrics, TILES_ORIGIN), Some(300.0));
    let error = feeder.check_inclusion(999).await.unwrap_err();
    assert_eq!(error.kind(), "inclusion_proof_invalid");

    server.tamper_entries.store(false, Ordering::SeqCst);
    server.take_requests();
    let outcome = feeder.poll_once().await.unwrap();
    assert!(outcome.is_healthy(), "{outcome:?}");
    assert_eq!(sink.tree(TILES_ORIGIN).unwrap().size, 1_300);
    assert!(
        server
            .take_requests()
            .iter()
            .any(|p| p.starts_with("tile/entries/")),
    );
    feeder.check_inclusion(999).await.unwrap();
    assert_eq!(
        feeder.check_inclusion(1_300).await.unwrap_err().kind(),
        "invalid_request"
    );
}

#[tokio::test]
async fn deleted_partial_tiles_and_bundles_fall_back_to_the_full_ones() {
    let (server, sink, _metrics, mut feeder) = tiles_log(744, 64).await;
    feeder.poll_once().await.unwrap();
    // The feeder reads a cached checkpoint at 1,000 while the log is at 1,100
    // and has deleted the partial tiles it replaced by full ones.
    let pinned = {
        let mut log = server.log.lock().unwrap();
        log.grow(256);
        let pinned = log.checkpoint();
        log.grow(100);
        pinned
    };
    *server.pinned_checkpoint.lock().unwrap() = Some(pinned);
    server.partials_deleted.store(true, Ordering::SeqCst);
    server.take_requests();
    let outcome = feeder.poll_once().await.unwrap();
    assert!(outcome.is_healthy(), "{outcome:?}");
    assert_eq!(sink.tree(TILES_ORIGIN).unwrap().size, 1_000);
    let requests = server.take_requests();
    for path in [
        "tile/0/003.p/232",
        "tile/0/003",
        "tile/entries/003.p/232",
        "tile/entries/003",
    ] {
        assert!(requests.iter().any(|p| p == path), "{path}: {requests:?}");
    }
}

#[tokio::test]
async fn checkpoint_of_another_origin_is_refused() {
    let mut log = TilesLog::new("other.example/log");
    log.grow(10);
    let (_server, url) = TilesServer::start(log).await;
    let (_, verifier) = ed25519_key(TILES_ORIGIN, 1);
    let sink = Arc::new(MemorySink::new([(TILES_ORIGIN.to_owned(), verifier)]));
    let metrics = Arc::new(WitnessMetrics::new().unwrap());
    let config = feeder_config(TILES_ORIGIN, &url, LogKind::Tiles, 0);
    let mut feeder = Feeder::new(&config, sink.clone(), metrics.clone()).unwrap();
    assert_eq!(
        feeder.poll_once().await.unwrap_err().kind(),
        "origin_mismatch"
    );
    assert_eq!(
        verify_failures(&metrics, TILES_ORIGIN, "origin_mismatch"),
        1.0
    );
    assert_eq!(sink.submission_count(), 0);
}

// ---------------------------------------------------------------------------
// The polling loop
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn failing_log_is_polled_with_capped_exponential_backoff_then_recovers() {
    let (server, url) = RekorV1Server::start(loginfo_old()).await;
    server.failures_left.store(5, Ordering::SeqCst);
    let sink = staging_sink();
    let metrics = Arc::new(WitnessMetrics::new().unwrap());
    let mut config = feeder_config("rekor.sigstage.dev", &url, LogKind::RekorV1, 0);
    config.poll_interval = Duration::from_secs(10);
    config.max_backoff = Duration::from_secs(60);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run_feeder(
        config,
        sink.clone(),
        metrics.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    while server.requests_to("/api/v1/log").len() < 8 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    let times: Vec<tokio::time::Instant> = server
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|(_, at)| *at)
        .collect();
    let waits: Vec<f64> = times
        .windows(2)
        .take(7)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    // Five failures: 20 s, 40 s, then the 60 s cap; then healthy every 10 s;
    // each ±10 %.
    let expected = [20.0, 40.0, 60.0, 60.0, 60.0, 10.0, 10.0];
    for (wait, base) in waits.iter().zip(expected) {
        assert!(
            (0.9 * base - 0.01..=1.1 * base + 0.01).contains(wait),
            "waits {waits:?}"
        );
    }
    assert_eq!(sink.tree(ACTIVE).unwrap().size, 1352760);
    assert_eq!(
        metric(
            &metrics,
            "witness_log_fetches_total",
            &[("log", "rekor.sigstage.dev"), ("outcome", "fetch")]
        ),
        Some(5.0)
    );
}

#[tokio::test(start_paused = true)]
async fn malformed_answer_does_not_stop_the_loop() {
    let (server, url) = RekorV1Server::start(b"<html>busy</html>".to_vec()).await;
    let sink = staging_sink();
    let metrics = Arc::new(WitnessMetrics::new().unwrap());
    let mut config = feeder_config("rekor.sigstage.dev", &url, LogKind::RekorV1, 0);
    config.poll_interval = Duration::from_secs(10);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run_feeder(
        config,
        sink.clone(),
        metrics.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    while server.requests_to("/api/v1/log").len() < 2 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    server.set_log_info(loginfo_old());
    while sink.tree(ACTIVE).is_none() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(verify_failures(&metrics, "rekor.sigstage.dev", "malformed_json") >= 2.0);
}

#[tokio::test]
async fn invalid_feeder_configuration_is_refused() {
    let sink = staging_sink();
    let metrics = Arc::new(WitnessMetrics::new().unwrap());
    let mut config = feeder_config("log", "https://example.com", LogKind::Tiles, 0);
    config.poll_interval = Duration::ZERO;
    let error = run_feeder(config, sink, metrics, std::future::pending())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "config");
    assert_eq!(
        FeederConfig::new("log", "file:///etc", LogKind::Tiles)
            .unwrap_err()
            .kind(),
        "config"
    );
}

/// The split-view check of `VerifyInclusion` fetches consistency proofs from
/// the log on demand: for a Rekor v1 shard from `/api/v1/log/proof` (the real
/// recorded staging proof here), verified against the real checkpoints' roots;
/// a log serving a tampered proof is caught by that verification.
#[tokio::test]
async fn split_view_check_fetches_real_rekor_v1_proofs_from_the_log() {
    use witness_core::merkle::verify_consistency;
    use witness_core::service::feeder::LogProofSource;
    use witness_core::service::witness::{ConsistencyProofSource as _, Feed, LogKeys};

    const TREE_ID: i64 = 8202293616175992157;
    let (server, url) = RekorV1Server::start(data(
        "rekor/loginfo/rekor-v1-staging.GET-api-v1-log.new.json",
    ))
    .await;
    let recorded = data(
        "rekor/loginfo/rekor-v1-staging.GET-api-v1-log-proof.firstSize1352760.lastSize1352764.json",
    );
    server
        .proofs
        .lock()
        .unwrap()
        .insert((1352760, 1352764, TREE_ID), recorded.clone());
    let metrics = Arc::new(WitnessMetrics::new().unwrap());
    let source = LogProofSource::new(metrics).unwrap();
    let log = LogKeys {
        origin: format!("rekor.sigstage.dev - {TREE_ID}"),
        keys: vec![staging_key()],
        feed: Feed::RekorV1 { url: url.clone() },
    };
    let root = |file: &str| {
        let note = data(&format!("rekor/checkpoints/valid/{file}"));
        *witness_core::checkpoint::verify_checkpoint(&note, &[staging_key()], None)
            .unwrap()
            .checkpoint()
            .root_hash()
    };
    let old_root = root("rekor.sigstage.dev_-_8202293616175992157.1352760.e81a8af7.txt");
    let new_root = root("rekor.sigstage.dev_-_8202293616175992157.1352764.e3e958d9.txt");
    let proof = source
        .consistency_proof(&log, 1352760, 1352764)
        .await
        .unwrap();
    verify_consistency(1352760, 1352764, &old_root, &new_root, &proof).unwrap();
    let asked = server.proof_requests();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0]["treeID"], TREE_ID.to_string());

    // The same proof with one hash changed no longer ties the two roots.
    let tampered = String::from_utf8(recorded).unwrap();
    let first = tampered.find('[').unwrap();
    let digit = tampered[first..]
        .find(|c: char| c.is_ascii_hexdigit() && c != 'f')
        .unwrap()
        + first;
    let mut bytes = tampered.into_bytes();
    bytes[digit] = b'f';
    server
        .proofs
        .lock()
        .unwrap()
        .insert((1352760, 1352764, TREE_ID), bytes);
    let proof = source
        .consistency_proof(&log, 1352760, 1352764)
        .await
        .unwrap();
    assert!(verify_consistency(1352760, 1352764, &old_root, &new_root, &proof).is_err());

    // A log that pushes has no proof endpoint the witness knows of.
    let pushed = LogKeys {
        feed: Feed::Push,
        ..log
    };
    assert!(source.consistency_proof(&pushed, 1, 2).await.is_err());
}
