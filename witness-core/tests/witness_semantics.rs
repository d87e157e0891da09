//! c2sp.org/tlog-witness `add-checkpoint` semantics of the witness service,
//! end to end over the real signer (mutual TLS gRPC) and a real SQLite store.
//! Each refusal is checked for its exact outcome (and so its HTTP status), for
//! leaving the state unchanged, and for never producing a cosignature.

#![allow(clippy::unwrap_used)]

mod shared_support;
mod witness_support;

use std::sync::Arc;

use witness_core::Error;
use witness_core::checkpoint::Checkpoint;
use witness_core::merkle::{Hash, LeafHashes, empty_root, subtree_hash};
use witness_core::note::{SignatureType, VerifierKey, parse_note, verify_note};
use witness_core::service::store::StoredTree;
use witness_core::service::witness::{ShardedLog, SubtreeRequest};
use witness_support::{TestLog, WitnessHarness, files_under};

const ORIGIN: &str = "example.com/log";

async fn harness_with(log: &TestLog) -> WitnessHarness {
    WitnessHarness::start(vec![log.keys()], Vec::new(), true).await
}

fn test_log(leaves: u64) -> TestLog {
    let mut log = TestLog::new(ORIGIN, 7);
    log.grow(leaves);
    log
}

/// The cosignature lines verify over the checkpoint body with the witness's keys.
fn assert_cosigns(h: &WitnessHarness, checkpoint: &Checkpoint, lines: &[String]) {
    let note = format!("{}\n{}", checkpoint.to_text(), lines.concat());
    let verified = verify_note(parse_note(note.as_bytes()).unwrap(), &h.own_keys())
        .expect("cosignature verifies with the witness keys");
    let types: Vec<SignatureType> = verified
        .verified()
        .iter()
        .map(|v| v.signature_type)
        .collect();
    assert!(types.contains(&SignatureType::CosignatureV1), "{types:?}");
    assert!(types.contains(&SignatureType::MlDsa44Subtree), "{types:?}");
    for v in verified.verified() {
        if v.signature_type == SignatureType::CosignatureV1 {
            assert!(
                v.timestamp.unwrap() > 0,
                "cosignature timestamp is never zero"
            );
        }
    }
}

async fn stored(h: &WitnessHarness) -> Option<StoredTree> {
    h.store.state(ORIGIN).await.unwrap().map(|s| s.tree)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_checkpoints_are_cosigned_and_the_state_advances() {
    let mut log = test_log(10);
    let h = harness_with(&log).await;
    let lines = h
        .witness
        .add_checkpoint(0, Vec::new(), &log.signed(10))
        .await
        .unwrap();
    assert_cosigns(&h, &log.checkpoint(10), &lines);
    log.grow(7);
    let lines = h
        .witness
        .add_checkpoint(10, log.proof(10, 17), &log.signed(17))
        .await
        .unwrap();
    assert_cosigns(&h, &log.checkpoint(17), &lines);
    assert_eq!(stored(&h).await.unwrap().size, 17);
    assert_eq!(stored(&h).await.unwrap().root, log.root(17));
    h.signer.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_its_spec_status_and_changes_nothing() {
    let mut log = test_log(20);
    let h = harness_with(&log).await;
    h.witness
        .add_checkpoint(0, Vec::new(), &log.signed(8))
        .await
        .unwrap();
    let before = stored(&h).await;
    log.grow(4);

    // Unknown origin: 404.
    let stranger = TestLog::new("other.example/log", 9);
    let error = h
        .witness
        .add_checkpoint(0, Vec::new(), &stranger.signed(0))
        .await
        .unwrap_err();
    assert_eq!(error.http_status(), 404, "{error}");

    // No trusted signature: 403. A trusted key name and ID with a bad signature: 403.
    let impostor = TestLog::new(ORIGIN, 8);
    let mut forged = test_log(20);
    forged.signing = impostor.signing.clone();
    let error = h
        .witness
        .add_checkpoint(8, log.proof(8, 12), &impostor.sign(&log.checkpoint(12)))
        .await
        .unwrap_err();
    assert_eq!(error, Error::NoTrustedSignature);
    assert_eq!(error.http_status(), 403);
    let error = h
        .witness
        .add_checkpoint(8, log.proof(8, 12), &forged.sign(&log.checkpoint(12)))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidSignature { .. }), "{error}");
    assert_eq!(error.http_status(), 403);

    // Old size above the checkpoint size: 400.
    let error = h
        .witness
        .add_checkpoint(13, Vec::new(), &log.signed(12))
        .await
        .unwrap_err();
    assert_eq!(error.http_status(), 400, "{error}");

    // Old size not the stored size: 409 with the stored size.
    let error = h
        .witness
        .add_checkpoint(5, log.proof(5, 12), &log.signed(12))
        .await
        .unwrap_err();
    assert_eq!(
        error,
        Error::OldSizeMismatch {
            old_size: 5,
            stored_size: 8
        }
    );
    assert_eq!(error.http_status(), 409);

    // A proof that does not verify: 422.
    let mut proof = log.proof(8, 12);
    proof[0].0[0] ^= 1;
    let error = h
        .witness
        .add_checkpoint(8, proof, &log.signed(12))
        .await
        .unwrap_err();
    assert_eq!(error.http_status(), 422, "{error}");

    // Same size, other root: 422 (a fork).
    let mut fork = test_log(0);
    fork.leaves = log.leaves[..8].to_vec();
    fork.leaves[3] = Hash([3; 32]);
    let error = h
        .witness
        .add_checkpoint(8, Vec::new(), &log.sign(&fork.checkpoint(8)))
        .await
        .unwrap_err();
    assert_eq!(error, Error::RootMismatch { size: 8 });
    assert_eq!(error.http_status(), 422);

    assert_eq!(stored(&h).await, before, "no refusal changes the state");
    // The two inconsistent but validly signed checkpoints are kept as evidence.
    let evidence = h.store.evidence(ORIGIN).await.unwrap();
    assert_eq!(evidence.len(), 2, "{evidence:?}");
    let metrics = h.metrics.render();
    assert!(metrics.contains("witness_misbehaviour_total"), "{metrics}");
    h.signer.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_from_size_zero_and_empty_trees_follow_the_spec() {
    let log = test_log(5);
    let h = harness_with(&log).await;
    // A non-empty proof from old size 0: 422.
    let error = h
        .witness
        .add_checkpoint(0, vec![Hash([1; 32])], &log.signed(5))
        .await
        .unwrap_err();
    assert_eq!(error.http_status(), 422, "{error}");
    // A size-0 checkpoint with a root other than the empty tree's: 422.
    let wrong = Checkpoint::new(ORIGIN, 0, Hash([9; 32]), Vec::new()).unwrap();
    let error = h
        .witness
        .add_checkpoint(0, Vec::new(), &log.sign(&wrong))
        .await
        .unwrap_err();
    assert_eq!(error.http_status(), 422, "{error}");
    assert_eq!(stored(&h).await, None);
    // The empty tree itself is cosigned, then grows from it with an empty proof.
    let empty = Checkpoint::new(ORIGIN, 0, empty_root(), Vec::new()).unwrap();
    h.witness
        .add_checkpoint(0, Vec::new(), &log.sign(&empty))
        .await
        .unwrap();
    h.witness
        .add_checkpoint(0, Vec::new(), &log.signed(5))
        .await
        .unwrap();
    assert_eq!(stored(&h).await.unwrap().size, 5);
    h.signer.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_race_never_cosigns_smaller_tree() {
    let mut log = test_log(8);
    let h = harness_with(&log).await;
    h.witness
        .add_checkpoint(0, Vec::new(), &log.signed(8))
        .await
        .unwrap();
    log.grow(200);
    let log = Arc::new(log);
    let mut current = 8u64;
    for round in 0..5u64 {
        // Many requests race from the same and from stale old sizes toward
        // different new sizes; exactly one may win per round.
        let mut tasks = Vec::new();
        for i in 0..16u64 {
            let log = log.clone();
            let witness = h.witness.clone();
            let old = if i % 4 == 0 {
                current.saturating_sub(1).max(1)
            } else {
                current
            };
            let new = current + 1 + (i * 7 + round) % 30;
            tasks.push(tokio::spawn(async move {
                let result = witness
                    .add_checkpoint(old, log.proof(old, new), &log.signed(new))
                    .await;
                (old, new, result)
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            let (old, new, result) = task.await.unwrap();
            match result {
                Ok(_) => winners.push((old, new)),
                Err(error) => assert!(
                    matches!(error, Error::OldSizeMismatch { .. }),
                    "a racing request fails only as a conflict: {error}"
                ),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one request wins: {winners:?}");
        let (old, new) = winners[0];
        assert_eq!(old, current);
        let state = stored(&h).await.unwrap();
        assert_eq!(state.size, new);
        assert!(state.size > current, "the state never rolls back");
        current = new;
    }
    h.signer.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitoring_serves_log_signatures_and_cosignatures_and_recosigning_refreshes_them() {
    let log = test_log(9);
    let h = harness_with(&log).await;
    assert_eq!(
        h.witness
            .checkpoint(ORIGIN)
            .await
            .unwrap_err()
            .http_status(),
        404
    );
    // A signature from a key the witness does not know is not kept.
    let stranger = TestLog::new("someone.else", 3);
    let mut submitted = log.signed(9);
    let foreign = stranger.signed(0);
    let foreign_line = String::from_utf8(foreign).unwrap();
    let foreign_line = foreign_line.lines().last().unwrap().to_owned() + "\n";
    submitted.extend_from_slice(foreign_line.as_bytes());
    h.witness
        .add_checkpoint(0, Vec::new(), &submitted)
        .await
        .unwrap();
    let state = h.witness.checkpoint(ORIGIN).await.unwrap();
    let note = parse_note(&state.note).unwrap();
    assert!(!String::from_utf8_lossy(&state.note).contains("someone.else"));
    verify_note(note.clone(), std::slice::from_ref(&log.verifier)).expect("log signature kept");
    verify_note(note, &h.own_keys()).expect("cosignatures served");
    let first = state.cosigned_at;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let refreshed = h.witness.recosign(ORIGIN).await.unwrap().unwrap();
    assert!(refreshed > first, "re-cosigning uses a fresh timestamp");
    let state = h.witness.checkpoint(ORIGIN).await.unwrap();
    assert_eq!(state.tree.size, 9);
    assert_eq!(state.cosigned_at, refreshed);
    verify_note(parse_note(&state.note).unwrap(), &h.own_keys()).unwrap();
    h.signer.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signer_ahead_after_a_crash_is_resynced_only_at_the_same_tree() {
    let mut log = test_log(4);
    let h = harness_with(&log).await;
    h.witness
        .add_checkpoint(0, Vec::new(), &log.signed(4))
        .await
        .unwrap();
    log.grow(6);
    // The signer records size 10, and the witness "crashes" before storing.
    use witness_core::service::witness::Cosigner as _;
    h.grpc_signer
        .cosign(&log.checkpoint(10), 4, &log.proof(4, 10))
        .await
        .unwrap();
    // The log pushes the same checkpoint again: cosigned, state resynced.
    let lines = h
        .witness
        .add_checkpoint(4, log.proof(4, 10), &log.signed(10))
        .await
        .unwrap();
    assert_cosigns(&h, &log.checkpoint(10), &lines);
    assert_eq!(stored(&h).await.unwrap().size, 10);
    h.signer.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_subtree_needs_our_own_cosignature_and_a_valid_proof() {
    let log = test_log(16);
    let h = harness_with(&log).await;
    let lines = h
        .witness
        .add_checkpoint(0, Vec::new(), &log.signed(16))
        .await
        .unwrap();
    let mut cosigned = log.signed(16);
    cosigned.extend_from_slice(lines.concat().as_bytes());
    let hash = subtree_hash(&mut LeafHashes(&log.leaves), 8, 12).unwrap();
    let proof =
        witness_core::merkle::prove_subtree_consistency(&mut LeafHashes(&log.leaves), 8, 12, 16)
            .unwrap();
    let request = SubtreeRequest {
        checkpoint: cosigned,
        start: 8,
        end: 12,
        subtree_hash: hash,
        proof: proof.clone(),
    };
    let signed = h.witness.sign_subtree(request.clone()).await.unwrap();
    assert_eq!(signed.len(), 1);
    // Not cosigned by this witness: 403.
    let mut uncosigned = request.clone();
    uncosigned.checkpoint = log.signed(16);
    let error = h.witness.sign_subtree(uncosigned).await.unwrap_err();
    assert_eq!(error.http_status(), 403, "{error}");
    // A wrong subtree hash: 422; not a subtree: 400.
    let mut wrong = request.clone();
    wrong.subtree_hash.0[0] ^= 1;
    assert_eq!(
        h.witness
            .sign_subtree(wrong)
            .await
            .unwrap_err()
            .http_status(),
        422
    );
    let mut invalid = request;
    invalid.start = 9;
    assert_eq!(
        h.witness
            .sign_subtree(invalid)
            .await
            .unwrap_err()
            .http_status(),
        400
    );
    h.signer.server.stop().await;
}

/// Real Rekor v1 staging data: each shard is its own origin, trusted on first
/// sight under the configured host key, and the real consistency proof between
/// two real checkpoints is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekor_v1_shards_are_trusted_per_origin_with_real_checkpoints() {
    let pem = shared_support::read_string(&shared_support::data_path(
        "rekor/keys/rekor.sigstage.dev.pub.pem",
    ));
    let key = VerifierKey::from_pem("rekor.sigstage.dev", &pem).unwrap();
    let sharded = ShardedLog {
        origin_prefix: "rekor.sigstage.dev - ".into(),
        keys: vec![key],
        url: "https://rekor.sigstage.dev".into(),
    };
    let h = WitnessHarness::start(Vec::new(), vec![sharded], true).await;
    let old = shared_support::read(&shared_support::data_path(
        "rekor/checkpoints/valid/rekor.sigstage.dev_-_8202293616175992157.1352760.e81a8af7.txt",
    ));
    let new = shared_support::read(&shared_support::data_path(
        "rekor/checkpoints/valid/rekor.sigstage.dev_-_8202293616175992157.1352764.e3e958d9.txt",
    ));
    let proof_json = shared_support::read(&shared_support::data_path(
        "rekor/loginfo/rekor-v1-staging.GET-api-v1-log-proof.firstSize1352760.lastSize1352764.json",
    ));
    let proof = witness_core::rekor::parse_consistency_proof_response(&proof_json)
        .unwrap()
        .hashes;
    h.witness.add_checkpoint(0, Vec::new(), &old).await.unwrap();
    h.witness
        .add_checkpoint(1352760, proof, &new)
        .await
        .unwrap();
    let origin = "rekor.sigstage.dev - 8202293616175992157";
    assert_eq!(
        h.witness.checkpoint(origin).await.unwrap().tree.size,
        1352764
    );
    let logs = h.store.logs().await.unwrap();
    assert!(
        logs.iter().any(|l| l.origin == origin),
        "the shard is recorded as trusted"
    );
    // An origin that only looks like a shard of the host is unknown.
    let text = String::from_utf8(old)
        .unwrap()
        .replace("8202293616175992157", "08202293616175992157");
    assert_eq!(
        h.witness
            .add_checkpoint(0, Vec::new(), text.as_bytes())
            .await
            .unwrap_err()
            .http_status(),
        404
    );
    h.signer.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_a_trusted_logs_key_is_refused_and_logs_are_never_removed() {
    let log = test_log(3);
    let h = harness_with(&log).await;
    h.witness
        .add_checkpoint(0, Vec::new(), &log.signed(3))
        .await
        .unwrap();
    let restart = |logs| {
        let cosigner = Arc::new(h.grpc_signer.clone());
        witness_core::service::witness::Witness::new(
            logs,
            Vec::new(),
            h.own_keys(),
            h.store.clone(),
            cosigner,
            None,
            h.metrics.clone(),
        )
    };
    // The same origin under another key: refused at start-up.
    let rekeyed = TestLog::new(ORIGIN, 99);
    let error = restart(vec![rekeyed.keys()]).await.err().expect("refused");
    assert_eq!(
        error,
        Error::LogKeyChange {
            origin: ORIGIN.into()
        }
    );
    // Dropped from the configuration: still trusted, with its first key, so it
    // cannot come back with another one.
    let restarted = restart(Vec::new()).await.unwrap();
    assert!(restarted.trusted_logs().iter().any(|l| l.origin == ORIGIN
        && l.keys.len() == 1
        && l.keys[0].to_vkey() == log.verifier.to_vkey()));
    restarted
        .add_checkpoint(3, log.proof(3, 3), &log.signed(3))
        .await
        .unwrap();
    let forged = rekeyed.sign(&log.checkpoint(3));
    assert_eq!(
        restarted
            .add_checkpoint(3, Vec::new(), &forged)
            .await
            .unwrap_err(),
        Error::NoTrustedSignature
    );
    h.signer.server.stop().await;
}

/// A witness over a SQLite state in `dir` whose archive (objects under
/// `dir/objects`, spool under `dir/spool`) runs until `stop` is sent: with the
/// state's outbox, or taking submissions (the PostgreSQL state's path).
struct ArchivingWitness {
    witness: witness_core::service::witness::Witness,
    store: Arc<dyn witness_core::service::store::LogStore>,
    /// The spool's queue directory.
    queue: std::path::PathBuf,
    objects: std::path::PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    archiving: tokio::task::JoinHandle<()>,
}

async fn archiving_witness(
    h: &WitnessHarness,
    log: &TestLog,
    dir: &std::path::Path,
    with_outbox: bool,
) -> ArchivingWitness {
    use witness_core::service::archive::{Archive, ArchiveConfig};
    use witness_core::service::store::sqlite::SqliteStore;

    let config = ArchiveConfig {
        url: format!("file://{}", dir.join("objects").display()),
        spool_dir: dir.join("spool"),
        ..ArchiveConfig::default()
    };
    let sqlite = Arc::new(SqliteStore::open(&dir.join("state.db")).unwrap());
    let signer = Arc::new(h.grpc_signer.clone());
    let archive = if with_outbox {
        Archive::open_with_outbox(
            &config,
            WITNESS_NAME,
            signer,
            h.metrics.clone(),
            sqlite.clone(),
        )
        .await
        .unwrap()
    } else {
        Archive::open(&config, WITNESS_NAME, signer, h.metrics.clone()).unwrap()
    };
    let submitter = archive.submitter();
    assert_eq!(submitter.outbox().is_some(), with_outbox);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let archiving = tokio::spawn(archive.run(async move {
        let _ = stopped.await;
    }));
    let store: Arc<dyn witness_core::service::store::LogStore> = sqlite;
    let witness = witness_core::service::witness::Witness::new(
        vec![log.keys()],
        Vec::new(),
        h.own_keys(),
        store.clone(),
        Arc::new(h.grpc_signer.clone()),
        Some(Arc::new(submitter)),
        h.metrics.clone(),
    )
    .await
    .unwrap();
    ArchivingWitness {
        witness,
        store,
        queue: config.spool_dir.join("queue"),
        objects: dir.join("objects").join("checkpoints"),
        stop,
        archiving,
    }
}

const WITNESS_NAME: &str = "witness.example/semantics";

/// Turns the spool's queue directory into a file (every spool write fails),
/// or back.
fn break_spool(queue: &std::path::Path, broken: bool) {
    if broken {
        std::fs::remove_dir(queue).unwrap();
        std::fs::write(queue, b"not a directory").unwrap();
    } else {
        std::fs::remove_file(queue).unwrap();
        std::fs::create_dir(queue).unwrap();
    }
}

/// The archived objects' contents.
fn archived(objects: &std::path::Path) -> Vec<Vec<u8>> {
    files_under(objects)
        .iter()
        .map(|path| std::fs::read(path).unwrap())
        .collect()
}

/// A cosignature the archive cannot hold durably is never revealed: with
/// submissions to the spool (the path of a PostgreSQL state) and the
/// archive's spool refusing writes, the request fails with 503 and the state
/// (which the monitoring endpoint serves) stays where it was; once the spool
/// takes writes again the same checkpoint is cosigned, stored and archived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosignature_is_never_revealed_before_the_archive_holds_it() {
    let log = test_log(10);
    let h = harness_with(&log).await;
    let dir = tempfile::tempdir().unwrap();
    let w = archiving_witness(&h, &log, dir.path(), false).await;

    break_spool(&w.queue, true);
    let error = w
        .witness
        .add_checkpoint(0, Vec::new(), &log.signed(10))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "archive");
    assert_eq!(error.http_status(), 503);
    assert!(w.store.state(ORIGIN).await.unwrap().is_none());
    assert!(w.witness.checkpoint(ORIGIN).await.is_err());

    break_spool(&w.queue, false);
    let lines = w
        .witness
        .add_checkpoint(0, Vec::new(), &log.signed(10))
        .await
        .unwrap();
    assert_cosigns(&h, &log.checkpoint(10), &lines);
    let state = w.store.state(ORIGIN).await.unwrap().unwrap();
    assert_eq!(state.tree.size, 10);
    w.stop.send(()).unwrap();
    w.archiving.await.unwrap();
    // The revealed note is among the archived objects, byte for byte.
    let archived = archived(&w.objects);
    assert!(archived.contains(&state.note), "{} objects", archived.len());
    h.signer.server.stop().await;
}

/// With a SQLite state the archive's copy is written in the state's own
/// transaction (its outbox), so a cosignature is revealed only together with
/// it: while the spool refuses writes the witness still cosigns, and the
/// checkpoint waits in the outbox until the spool takes writes again, then
/// reaches the archive byte for byte. The spool is off the request path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_sqlite_state_a_revealed_cosignature_is_archived_even_if_the_spool_failed_then() {
    let log = test_log(10);
    let h = harness_with(&log).await;
    let dir = tempfile::tempdir().unwrap();
    let w = archiving_witness(&h, &log, dir.path(), true).await;

    break_spool(&w.queue, true);
    let lines = w
        .witness
        .add_checkpoint(0, Vec::new(), &log.signed(10))
        .await
        .unwrap();
    assert_cosigns(&h, &log.checkpoint(10), &lines);
    let state = w.store.state(ORIGIN).await.unwrap().unwrap();
    assert_eq!(state.tree.size, 10);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        archived(&w.objects).is_empty(),
        "nothing reached the archive yet"
    );

    break_spool(&w.queue, false);
    w.stop.send(()).unwrap();
    w.archiving.await.unwrap();
    assert_eq!(
        archived(&w.objects),
        [state.note],
        "the revealed note, archived once"
    );
    h.signer.server.stop().await;
}

/// The real signer, with another request for the same log slipping in right
/// after the witness's first call is refused (as under concurrent pushes).
struct RacingCosigner {
    signer: witness_core::service::signer_client::GrpcSigner,
    racing_request: std::sync::Mutex<Option<(Checkpoint, u64, Vec<Hash>)>>,
}

#[async_trait::async_trait]
impl witness_core::service::witness::Cosigner for RacingCosigner {
    async fn cosign(
        &self,
        checkpoint: &Checkpoint,
        old_size: u64,
        proof: &[Hash],
    ) -> witness_core::Result<witness_core::service::witness::Cosignature> {
        let answer = self.signer.cosign(checkpoint, old_size, proof).await;
        if matches!(answer, Err(Error::OldSizeMismatch { .. })) {
            let racing = self.racing_request.lock().unwrap().take();
            if let Some((checkpoint, old_size, proof)) = racing {
                self.signer
                    .cosign(&checkpoint, old_size, &proof)
                    .await
                    .unwrap();
            }
        }
        answer
    }

    async fn sign_subtree(&self, request: &SubtreeRequest) -> witness_core::Result<Vec<String>> {
        self.signer.sign_subtree(request).await
    }
}

/// Two clients push the same update and a third the next one: the loser's
/// same-size re-cosign finds the signer already further on. That is a race
/// the log resolves with the 409's size, not a disagreement between the
/// witness and its signer (which would be a 503 and an alarm).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_passing_the_loser_get_409_not_a_signer_alarm() {
    use witness_core::service::witness::{Cosigner as _, Witness};

    let mut log = test_log(10);
    log.grow(7);
    let h = harness_with(&log).await;
    // The winner of the same update reached the signer first.
    h.grpc_signer
        .cosign(&log.checkpoint(10), 0, &[])
        .await
        .unwrap();
    let cosigner = RacingCosigner {
        signer: h.grpc_signer.clone(),
        racing_request: std::sync::Mutex::new(Some((log.checkpoint(17), 10, log.proof(10, 17)))),
    };
    let store: Arc<dyn witness_core::service::store::LogStore> = Arc::new(
        witness_core::service::store::sqlite::SqliteStore::open(
            &h.state_dir.path().join("racing.db"),
        )
        .unwrap(),
    );
    let witness = Witness::new(
        vec![log.keys()],
        Vec::new(),
        h.own_keys(),
        store.clone(),
        Arc::new(cosigner),
        None,
        h.metrics.clone(),
    )
    .await
    .unwrap();
    let error = witness
        .add_checkpoint(0, Vec::new(), &log.signed(10))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::OldSizeMismatch {
                stored_size: 17,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.http_status(), 409);
    assert!(store.state(ORIGIN).await.unwrap().is_none());
    h.signer.server.stop().await;
}
