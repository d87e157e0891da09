//! The checkpoint archive against real storage, a local directory and an S3
//! server (moto, as a child process), with manifests signed by the real signer
//! service: every cosigned checkpoint lands byte for byte, nothing is
//! overwritten or lost across outages and restarts, and the manifests verify
//! and list exactly what was stored.

#![allow(clippy::unwrap_used)]

mod support_archive;

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStoreExt as _;
use object_store::path::{Path as ObjectPath, PathPart};
use sha2::{Digest as _, Sha256};
use signer_svc::keys::Algorithm;
use support_archive::{
    Cosigned, LocalArchive, MotoServer, Running, TestSigner, archive_oldest_unarchived_age,
    archive_upload_batches, archive_writes, assert_archived_exactly, checkpoint_count, eventually,
    manifest_subjects, objects,
};
use witness_core::Error;
use witness_core::service::archive::{
    ARCHIVE_MANIFEST_SUBJECTS, ARCHIVE_UPLOAD_LINGER, Archive, ArchiveConfig, ManifestSubject,
    origin_segment, verify_manifest,
};
use witness_core::service::metrics::WitnessMetrics;

const WAIT: Duration = Duration::from_secs(30);

fn metrics() -> Arc<WitnessMetrics> {
    Arc::new(WitnessMetrics::new().unwrap())
}

/// `count` checkpoints of distinct logs, each cosigned once by `signer`.
async fn cosign_logs(signer: &TestSigner, tag: &str, count: usize) -> Vec<Cosigned> {
    let mut cosigned = Vec::new();
    for i in 0..count {
        let size = 1 + i as u64 * 7;
        cosigned.push(
            signer
                .cosign(&format!("{tag}.example/log{i}"), size, 0)
                .await,
        );
    }
    cosigned
}

fn spooled_files(dir: &std::path::Path, folder: &str) -> usize {
    std::fs::read_dir(dir.join(folder)).map_or(0, |entries| entries.count())
}

/// Checkpoints of the logs `<tag>.example/...` in the spool's queue (one line
/// each).
fn spooled_checkpoints(dir: &std::path::Path, tag: &str) -> usize {
    let origin = format!("\"origin\":\"{tag}.example/");
    std::fs::read_dir(dir.join("queue")).map_or(0, |entries| {
        entries
            .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default())
            .map(|queued| queued.lines().filter(|line| line.contains(&origin)).count())
            .sum()
    })
}

/// Submits `cosigned` to `running`, each once spooled, and waits until the
/// store holds `stored` checkpoints in all.
async fn submit_until_stored(
    running: &Running,
    cosigned: &[Cosigned],
    reader: &dyn object_store::ObjectStore,
    stored: usize,
) {
    for checkpoint in cosigned {
        checkpoint.submit(&running.submitter).await;
    }
    eventually("the checkpoints stored", WAIT, || async {
        checkpoint_count(reader).await == stored
    })
    .await;
}

fn subject_of(cosigned: &Cosigned) -> ManifestSubject {
    ManifestSubject {
        name: cosigned.object_name(),
        sha256: Sha256::digest(&cosigned.note).into(),
    }
}

/// The suite every backend passes: checkpoints of several logs and a
/// re-cosignature of the same tree a second later are each stored as their own
/// object, and the manifest of the (partial) period, written at shutdown,
/// verifies and lists exactly them.
async fn stores_every_checkpoint_and_a_manifest_listing_them(
    config: &ArchiveConfig,
    reader: &dyn object_store::ObjectStore,
    signer: Arc<TestSigner>,
) {
    let metrics = metrics();
    let running = Running::start(config, signer.clone(), metrics.clone());
    let mut expected = cosign_logs(&signer, "suite", 12).await;
    expected.push(signer.cosign("recosigned.example/log", 5, 0).await);
    // A fresh cosignature timestamp for the same tree.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    expected.push(signer.cosign("recosigned.example/log", 5, 5).await);
    assert_ne!(expected[12].object_name(), expected[13].object_name());
    submit_until_stored(&running, &expected, reader, expected.len()).await;
    running.stop().await;

    assert_archived_exactly(reader, &signer.manifest_verifier(), &expected).await;
    assert_eq!(
        archive_writes(&metrics, "checkpoint", "ok"),
        expected.len() as u64
    );
    assert_eq!(archive_writes(&metrics, "checkpoint", "error"), 0);
    assert_eq!(archive_writes(&metrics, "manifest", "ok"), 1);
    assert_eq!(spooled_files(&config.spool_dir, "queue"), 0);
    assert_eq!(spooled_files(&config.spool_dir, "periods"), 0);
}

/// A name already taken by other bytes is refused and counted, never
/// overwritten; a name holding the very same bytes (a write whose answer was
/// lost) is accepted as done.
async fn existing_objects_are_never_overwritten(
    config: &ArchiveConfig,
    reader: &dyn object_store::ObjectStore,
    signer: Arc<TestSigner>,
) {
    let taken = signer.cosign("taken.example/log", 3, 0).await;
    let retried = signer.cosign("retried.example/log", 4, 0).await;
    let fresh = signer.cosign("fresh.example/log", 5, 0).await;
    let squatted = b"not the witness's checkpoint\n".to_vec();
    reader
        .put(
            &ObjectPath::from(taken.object_name()),
            squatted.clone().into(),
        )
        .await
        .unwrap();
    reader
        .put(
            &ObjectPath::from(retried.object_name()),
            retried.note.clone().into(),
        )
        .await
        .unwrap();

    let metrics = metrics();
    let running = Running::start(config, signer.clone(), metrics.clone());
    for cosigned in [&taken, &retried, &fresh] {
        cosigned.submit(&running.submitter).await;
    }
    eventually(
        "the conflict counted and the others written",
        WAIT,
        || async {
            archive_writes(&metrics, "checkpoint", "error") == 1
                && archive_writes(&metrics, "checkpoint", "ok") == 2
        },
    )
    .await;
    running.stop().await;

    let stored = objects(reader, "checkpoints").await;
    assert_eq!(
        stored[&taken.object_name()],
        squatted,
        "object was overwritten"
    );
    assert_eq!(stored[&retried.object_name()], retried.note);
    assert_eq!(stored[&fresh.object_name()], fresh.note);
    assert_eq!(spooled_files(&config.spool_dir, "conflicts"), 1);
    assert_eq!(spooled_files(&config.spool_dir, "queue"), 0);
    let mut listed = manifest_subjects(reader, &signer.manifest_verifier()).await;
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    let mut wanted = vec![subject_of(&retried), subject_of(&fresh)];
    wanted.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(listed, wanted);
}

#[tokio::test]
async fn local_archive_stores_every_checkpoint_and_a_verifiable_manifest() {
    let local = LocalArchive::new();
    let signer = Arc::new(TestSigner::new(Some(Algorithm::EcdsaP256)).await);
    stores_every_checkpoint_and_a_manifest_listing_them(
        &local.config,
        local.reader().as_ref(),
        signer,
    )
    .await;
}

#[tokio::test]
async fn s3_archive_stores_every_checkpoint_and_a_verifiable_manifest() {
    let moto = MotoServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(TestSigner::new(Some(Algorithm::Ed25519)).await);
    stores_every_checkpoint_and_a_manifest_listing_them(
        &moto.config(dir.path(), "witness/archive"),
        moto.reader("witness/archive").as_ref(),
        signer,
    )
    .await;
    // Nothing was written outside the prefix.
    let everything = objects(moto.reader("").as_ref(), "").await;
    assert!(
        everything
            .keys()
            .all(|name| name.starts_with("witness/archive/"))
    );
}

#[tokio::test]
async fn existing_local_object_is_never_overwritten() {
    let local = LocalArchive::new();
    let signer = Arc::new(TestSigner::new(Some(Algorithm::EcdsaP256)).await);
    existing_objects_are_never_overwritten(&local.config, local.reader().as_ref(), signer).await;
}

#[tokio::test]
async fn existing_object_is_never_overwritten() {
    let moto = MotoServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(TestSigner::new(Some(Algorithm::EcdsaP256)).await);
    existing_objects_are_never_overwritten(
        &moto.config(dir.path(), "conflicts"),
        moto.reader("conflicts").as_ref(),
        signer,
    )
    .await;
}

#[tokio::test]
async fn storage_outage_loses_no_checkpoint() {
    let mut moto = MotoServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = moto.config(dir.path(), "outage");
    let reader = moto.reader("outage");
    let signer = Arc::new(TestSigner::new(Some(Algorithm::EcdsaP256)).await);
    let metrics = metrics();
    let running = Running::start(&config, signer.clone(), metrics.clone());

    let before = cosign_logs(&signer, "before", 3).await;
    submit_until_stored(&running, &before, reader.as_ref(), before.len()).await;

    moto.stop();
    let during = cosign_logs(&signer, "during", 5).await;
    for cosigned in &during {
        // Accepted at once although the store is down.
        cosigned.submit(&running.submitter).await;
    }
    eventually(
        "the outage checkpoints spooled and a write failing",
        WAIT,
        || async {
            spooled_checkpoints(&config.spool_dir, "during") == during.len()
                && archive_writes(&metrics, "checkpoint", "error") >= 1
        },
    )
    .await;
    // The outage shows: the oldest unarchived checkpoint ages.
    eventually("the unarchived age growing", WAIT, || async {
        archive_oldest_unarchived_age(&metrics).is_some_and(|age| age >= 2)
    })
    .await;

    // moto keeps objects in memory: the restarted server holds only what the
    // archive writes from now on.
    moto.restart().await;
    eventually("the outage checkpoints stored", WAIT, || async {
        checkpoint_count(reader.as_ref()).await == during.len()
    })
    .await;
    // Caught up: back to 0.
    eventually("the unarchived age back to 0", WAIT, || async {
        archive_oldest_unarchived_age(&metrics) == Some(0)
    })
    .await;
    running.stop().await;

    let stored = objects(reader.as_ref(), "checkpoints").await;
    for cosigned in &during {
        assert_eq!(stored[&cosigned.object_name()], cosigned.note);
    }
    let mut listed = manifest_subjects(reader.as_ref(), &signer.manifest_verifier()).await;
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    let mut wanted: Vec<_> = before.iter().chain(&during).map(subject_of).collect();
    wanted.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(listed, wanted);
    assert_eq!(spooled_files(&config.spool_dir, "queue"), 0);
}

#[tokio::test]
async fn restart_uploads_checkpoints_spooled_before_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut moto = MotoServer::unstarted();
    let config = moto.config(dir.path(), "restart");
    let signer = Arc::new(TestSigner::new(Some(Algorithm::Ed25519)).await);
    let cosigned = cosign_logs(&signer, "restart", 6).await;

    let running = Running::start(&config, signer.clone(), metrics());
    for checkpoint in &cosigned {
        checkpoint.submit(&running.submitter).await;
    }
    eventually("every checkpoint spooled", WAIT, || async {
        spooled_checkpoints(&config.spool_dir, "restart") == cosigned.len()
    })
    .await;
    running.crash().await;

    moto.restart().await;
    let reader = moto.reader("restart");
    assert_eq!(checkpoint_count(reader.as_ref()).await, 0);
    let running = Running::start(&config, signer.clone(), metrics());
    eventually("the spooled checkpoints stored", WAIT, || async {
        checkpoint_count(reader.as_ref()).await == cosigned.len()
    })
    .await;
    running.stop().await;
    assert_archived_exactly(reader.as_ref(), &signer.manifest_verifier(), &cosigned).await;
    assert_eq!(spooled_files(&config.spool_dir, "queue"), 0);
}

#[tokio::test]
async fn crash_mid_period_still_lists_every_checkpoint_once() {
    let local = LocalArchive::new();
    let reader = local.reader();
    let signer = Arc::new(TestSigner::new(Some(Algorithm::EcdsaP256)).await);
    let first = cosign_logs(&signer, "first", 4).await;
    let running = Running::start(&local.config, signer.clone(), metrics());
    submit_until_stored(&running, &first, reader.as_ref(), first.len()).await;
    running.crash().await;
    assert!(objects(reader.as_ref(), "manifests").await.is_empty());

    let second = cosign_logs(&signer, "second", 3).await;
    let running = Running::start(&local.config, signer.clone(), metrics());
    // Submitted again after the crash too: the witness may retry.
    let submitted: Vec<_> = second.iter().chain(&first[..1]).cloned().collect();
    submit_until_stored(
        &running,
        &submitted,
        reader.as_ref(),
        first.len() + second.len(),
    )
    .await;
    running.stop().await;
    let everything: Vec<_> = first.into_iter().chain(second).collect();
    assert_archived_exactly(reader.as_ref(), &signer.manifest_verifier(), &everything).await;
}

#[tokio::test]
async fn manifest_is_never_written_unsigned() {
    let local = LocalArchive::new();
    let reader = local.reader();
    // A real signer without a manifest key refuses SignManifest.
    let refusing = Arc::new(TestSigner::new(None).await);
    let cosigned = cosign_logs(&refusing, "unsigned", 4).await;
    let metrics = metrics();
    let running = Running::start(&local.config, refusing.clone(), metrics.clone());
    submit_until_stored(&running, &cosigned, reader.as_ref(), cosigned.len()).await;
    running.stop().await;
    assert!(objects(reader.as_ref(), "manifests").await.is_empty());
    assert!(archive_writes(&metrics, "manifest", "error") >= 1);
    assert_eq!(archive_writes(&metrics, "manifest", "ok"), 0);
    assert_eq!(spooled_files(&local.config.spool_dir, "periods"), 1);

    // Once a signer signs, the waiting period gets its manifest.
    let signing = Arc::new(TestSigner::new(Some(Algorithm::EcdsaP256)).await);
    let running = Running::start(&local.config, signing.clone(), metrics.clone());
    eventually("the manifest written", WAIT, || async {
        !objects(reader.as_ref(), "manifests").await.is_empty()
    })
    .await;
    running.stop().await;
    assert_archived_exactly(reader.as_ref(), &signing.manifest_verifier(), &cosigned).await;
    assert_eq!(spooled_files(&local.config.spool_dir, "periods"), 0);
}

/// A steady trickle of cosignatures, each its own spool group commit and
/// wake-up of the uploader, shares upload batches (each batch a `syncfs` and
/// a journal fsync): at most one read of the queue per linger, not a batch
/// per submission.
#[tokio::test]
async fn a_trickle_of_checkpoints_shares_upload_batches_instead_of_one_per_submission() {
    let local = LocalArchive::new();
    let reader = local.reader();
    let signer = Arc::new(TestSigner::new(Some(Algorithm::Ed25519)).await);
    let metrics = metrics();
    let running = Running::start(&local.config, signer.clone(), metrics.clone());
    let cosigned = cosign_logs(&signer, "trickle", 40).await;
    let started = std::time::Instant::now();
    for checkpoint in &cosigned {
        checkpoint.submit(&running.submitter).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    eventually("the trickle stored", WAIT, || async {
        checkpoint_count(reader.as_ref()).await == cosigned.len()
    })
    .await;
    let elapsed = started.elapsed();
    let batches = archive_upload_batches(&metrics);
    // One batch at the first wake-up, then at most one per linger.
    let most = 2 + (elapsed.as_millis() / ARCHIVE_UPLOAD_LINGER.as_millis()) as u64;
    assert!(
        (1..=most).contains(&batches),
        "{batches} upload batches for {} checkpoints in {elapsed:?} (at most {most})",
        cosigned.len()
    );
    running.stop().await;
    assert_archived_exactly(reader.as_ref(), &signer.manifest_verifier(), &cosigned).await;
}

#[tokio::test]
async fn a_full_manifest_closes_its_period_early_and_the_rest_goes_to_the_next() {
    let local = LocalArchive::new();
    let reader = local.reader();
    let signer = Arc::new(TestSigner::new(Some(Algorithm::Ed25519)).await);
    let running = Running::start(&local.config, signer.clone(), metrics());
    let cosigned = cosign_logs(&signer, "full", ARCHIVE_MANIFEST_SUBJECTS + 3).await;
    submit_until_stored(&running, &cosigned, reader.as_ref(), cosigned.len()).await;
    running.stop().await;
    let verifier = signer.manifest_verifier();
    let manifests = objects(reader.as_ref(), "manifests").await;
    let mut sizes: Vec<usize> = manifests
        .values()
        .map(|envelope| verify_manifest(envelope, &verifier).unwrap().subjects.len())
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [3, ARCHIVE_MANIFEST_SUBJECTS]);
    assert_archived_exactly(reader.as_ref(), &verifier, &cosigned).await;
}

#[tokio::test]
async fn every_checkpoint_is_listed_in_exactly_one_manifest_across_periods() {
    let mut local = LocalArchive::new();
    local.config.period = Duration::from_secs(1);
    let reader = local.reader();
    let signer = Arc::new(TestSigner::new(Some(Algorithm::Ed25519)).await);
    let running = Running::start(&local.config, signer.clone(), metrics());
    let mut cosigned = Vec::new();
    for round in 0..3 {
        let batch = cosign_logs(&signer, &format!("round{round}"), 3).await;
        for checkpoint in &batch {
            checkpoint.submit(&running.submitter).await;
        }
        cosigned.extend(batch);
        tokio::time::sleep(Duration::from_millis(1_200)).await;
    }
    eventually("every checkpoint stored", WAIT, || async {
        checkpoint_count(reader.as_ref()).await == cosigned.len()
    })
    .await;
    running.stop().await;
    assert!(objects(reader.as_ref(), "manifests").await.len() >= 2);
    assert_archived_exactly(reader.as_ref(), &signer.manifest_verifier(), &cosigned).await;
}

#[tokio::test]
async fn hostile_origins_stay_inside_the_archive_and_never_collide() {
    let local = LocalArchive::new();
    let reader = local.reader();
    let signer = Arc::new(TestSigner::new(Some(Algorithm::EcdsaP256)).await);
    let long = "l".repeat(254);
    let origins = [
        "../../../../outside".to_owned(),
        "/absolute/path".to_owned(),
        "a/b/../../c".to_owned(),
        "..".to_owned(),
        ".".to_owned(),
        ".hidden".to_owned(),
        "with space and tab-free text".to_owned(),
        "ünïcödé/日本語".to_owned(),
        "del\u{7f}and next line\u{85}".to_owned(),
        "Case.Example/log".to_owned(),
        "case.example/log".to_owned(),
        "_2F".to_owned(),
        "%2F..%2F".to_owned(),
        "a\\b".to_owned(),
        format!("{long}a"),
        format!("{long}b"),
    ];
    let running = Running::start(&local.config, signer.clone(), metrics());
    let mut cosigned = Vec::new();
    for origin in &origins {
        assert!(origin.len() <= 255);
        cosigned.push(signer.cosign(origin, 9, 0).await);
    }
    submit_until_stored(&running, &cosigned, reader.as_ref(), cosigned.len()).await;
    running.stop().await;
    assert_archived_exactly(reader.as_ref(), &signer.manifest_verifier(), &cosigned).await;

    // One folder per origin, directly under checkpoints/, and nothing written
    // beside the archive and the spool.
    let logs: Vec<_> = std::fs::read_dir(local.root().join("checkpoints"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(logs.len(), origins.len());
    for log in &logs {
        assert!(log.len() <= 160, "{log}");
        assert!(
            log.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-ABCDEF".contains(&b)),
            "{log}"
        );
    }
    let mut beside: Vec<_> = std::fs::read_dir(local.dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    beside.sort();
    assert_eq!(beside, ["archive", "spool"]);
}

#[test]
fn control_characters_and_traversal_never_escape_an_origin_segment() {
    let mut origins: Vec<String> = (1u8..=127).map(|b| char::from(b).to_string()).collect();
    origins.extend(
        [
            "\u{1b}[31mred",
            "a\rb",
            "a\nb",
            "a\tb",
            "..",
            "../..",
            "./",
            "a__b",
            "\u{202e}rtl",
            "\u{200b}",
        ]
        .map(str::to_owned),
    );
    origins.push("\u{1}".repeat(255));
    origins.push(format!("{}\u{2}", "\u{1}".repeat(254)));
    let mut seen = std::collections::HashSet::new();
    for origin in &origins {
        let segment = origin_segment(origin);
        PathPart::parse(&segment).unwrap_or_else(|e| panic!("{origin:?} -> {segment}: {e}"));
        assert!(
            !segment.contains(['/', '\\', '%']),
            "{origin:?} -> {segment}"
        );
        assert!(!segment.starts_with('.'), "{origin:?} -> {segment}");
        assert!(segment.len() <= 160, "{origin:?} -> {segment}");
        assert!(
            seen.insert(segment.to_ascii_lowercase()),
            "{origin:?} collides as {segment}"
        );
    }
}

#[tokio::test]
async fn forged_or_foreign_manifest_does_not_verify() {
    let local = LocalArchive::new();
    let reader = local.reader();
    let signer = Arc::new(TestSigner::new(Some(Algorithm::EcdsaP256)).await);
    let cosigned = cosign_logs(&signer, "forged", 2).await;
    let running = Running::start(&local.config, signer.clone(), metrics());
    submit_until_stored(&running, &cosigned, reader.as_ref(), cosigned.len()).await;
    running.stop().await;
    let manifests = objects(reader.as_ref(), "manifests").await;
    let envelope = manifests.values().next().unwrap();
    let verifier = signer.manifest_verifier();
    assert_eq!(
        verify_manifest(envelope, &verifier).unwrap().subjects.len(),
        2
    );

    // Another signer's manifest key.
    let other = TestSigner::new(Some(Algorithm::EcdsaP256)).await;
    assert_eq!(
        verify_manifest(envelope, &other.manifest_verifier()),
        Err(Error::NoTrustedSignature)
    );

    // The payload with one subject dropped, under the original signature.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut json: serde_json::Value = serde_json::from_slice(envelope).unwrap();
    let mut statement: serde_json::Value =
        serde_json::from_slice(&b64.decode(json["payload"].as_str().unwrap()).unwrap()).unwrap();
    statement["subject"].as_array_mut().unwrap().pop();
    statement["predicate"]["count"] = 1.into();
    json["payload"] = b64.encode(serde_json::to_vec(&statement).unwrap()).into();
    let forged = serde_json::to_vec(&json).unwrap();
    assert_eq!(
        verify_manifest(&forged, &verifier),
        Err(Error::NoTrustedSignature)
    );
}

#[tokio::test]
async fn note_filed_under_another_origin_is_refused() {
    let local = LocalArchive::new();
    let signer = Arc::new(TestSigner::new(Some(Algorithm::EcdsaP256)).await);
    let cosigned = signer.cosign("real.example/log", 3, 0).await;
    let metrics = metrics();
    let archive = Archive::open(&local.config, "w", signer.clone(), metrics.clone()).unwrap();
    let error = archive
        .submitter()
        .submit("other.example/log", cosigned.cosigned_at, &cosigned.note)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "origin_mismatch");
    assert_eq!(archive_writes(&metrics, "checkpoint", "error"), 1);
}

#[tokio::test]
async fn full_queue_makes_submitters_wait_instead_of_dropping_or_growing_memory() {
    let mut local = LocalArchive::new();
    local.config.queue_capacity = 2;
    let signer = Arc::new(TestSigner::new(Some(Algorithm::EcdsaP256)).await);
    let cosigned = cosign_logs(&signer, "full", 5).await;
    let metrics = metrics();
    // Not running yet: nothing drains the queue.
    let archive = Archive::open(
        &local.config,
        support_archive::WITNESS,
        signer.clone(),
        metrics.clone(),
    )
    .unwrap();
    let submitter = archive.submitter();
    let submissions: Vec<_> = cosigned
        .iter()
        .cloned()
        .map(|cosigned| {
            let submitter = submitter.clone();
            tokio::spawn(async move { cosigned.submit(&submitter).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Nobody is told the checkpoint is archived before it is.
    assert!(submissions.iter().all(|task| !task.is_finished()));
    assert_eq!(spooled_files(&local.config.spool_dir, "queue"), 0);
    assert_eq!(archive_writes(&metrics, "checkpoint", "error"), 0);

    // Once the archive runs, every waiting submitter gets its checkpoint in.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(archive.run(async move {
        let _ = stopped.await;
    }));
    for submission in submissions {
        tokio::time::timeout(Duration::from_secs(30), submission)
            .await
            .expect("submitters proceed once the spool drains")
            .unwrap();
    }
    stop.send(()).unwrap();
    task.await.unwrap();
    assert_archived_exactly(&*local.reader(), &signer.manifest_verifier(), &cosigned).await;
    assert_eq!(archive_writes(&metrics, "checkpoint", "error"), 0);
}
