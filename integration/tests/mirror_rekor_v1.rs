//! Mirror bundles of a real Rekor v1 (rekor-server on Trillian on MariaDB):
//! the active shard packed in full and then incrementally after it grew, the
//! frozen shard packed by its origin, all verified offline and then consumed
//! by the offline witness (air-gap mode, over the real signer), which cosigns
//! each shard; a leaf changed in a re-signed bundle, or a byte flipped in one,
//! is refused.

#[path = "../../witness-core/tests/witness_support/mod.rs"]
mod witness_support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use integration::rekor_v1::{HOSTNAME, INACTIVE_SHARD_ENTRIES, RekorV1};
use p256::pkcs8::{EncodePrivateKey as _, LineEnding};
use witness_core::merkle::verify_consistency;
use witness_core::mirror::{CAR_FILE, ENVELOPE_FILE};
use witness_core::note::{VerifierKey, parse_note, verify_note};
use witness_core::rekor::{parse_log_entry, parse_log_info};
use witness_core::service::airgap::{
    AUDIT_DIR, BundleOutcome, MirrorConsumer, audit_checkpoint_name,
};
use witness_core::service::archive::ManifestVerifier;
use witness_core::service::feeder::LogUrl;
use witness_core::service::mirror::{
    FileManifestSigner, PackOptions, PackStart, PackedMirror, TrustedTree, VerifiedMirror,
    pack_rekor_v1, verify_bundle, write_bundle,
};
use witness_core::service::witness::ShardedLog;
use witness_support::WitnessHarness;

/// Entries in the active shard before the full bundle: more than one entry
/// bundle (256), so the last one is partial and the next bundle starts inside
/// it.
const FIRST_ENTRIES: usize = 260;
/// Entries added before the incremental bundle.
const MORE_ENTRIES: usize = 20;

fn mirror_signer() -> FileManifestSigner {
    let pem = p256::ecdsa::SigningKey::from_slice(&[7; 32])
        .expect("a P-256 scalar")
        .to_pkcs8_pem(LineEnding::LF)
        .expect("PKCS#8");
    FileManifestSigner::from_pkcs8_pem(&pem).expect("mirror key")
}

fn mirror_verifier() -> ManifestVerifier {
    ManifestVerifier::from_pem(&mirror_signer().public_key_pem().expect("public key"))
        .expect("mirror verifier")
}

async fn add_entries(rekor: &RekorV1, count: usize) {
    futures::stream::iter(0..count)
        .map(|_| rekor.add_entry())
        .buffer_unordered(8)
        .for_each(|added| async move {
            added.unwrap_or_else(|e| panic!("adding an entry: {e}"));
        })
        .await;
}

async fn pack(
    rekor: &RekorV1,
    key: &VerifierKey,
    origin: Option<String>,
    out: &Path,
    start: PackStart,
) -> PackedMirror {
    let options = PackOptions {
        log: LogUrl::parse(&rekor.url()).expect("Rekor's URL"),
        log_key: key.clone(),
        origin,
        out: out.to_owned(),
        start,
        request_timeout: Duration::from_secs(30),
    };
    let began = Instant::now();
    let packed = pack_rekor_v1(&options, &mirror_signer(), &mut |_, _| {})
        .await
        .unwrap_or_else(|e| panic!("packing into {}: {} ({e})", out.display(), e.kind()));
    eprintln!(
        "packed {} [{}, {}) in {:.2?}",
        packed.origin,
        packed.start,
        packed.size,
        began.elapsed()
    );
    packed
}

fn tree(mirror: &VerifiedMirror) -> TrustedTree {
    TrustedTree {
        size: mirror.size,
        root: mirror.root,
    }
}

/// The active shard's size and root as Rekor lists them now.
async fn active_shard(rekor: &RekorV1) -> (u64, witness_core::merkle::Hash) {
    let info = parse_log_info(&rekor.get("/api/v1/log").await.expect("GET /api/v1/log"))
        .expect("log info parses");
    (info.active.tree_size, info.active.root_hash)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekor_v1_shards_are_mirrored_full_and_incremental_and_tampering_is_refused() {
    let artifacts = integration::artifacts_dir("mirror_rekor_v1").expect("artifacts dir");
    let state = tempfile::tempdir().expect("temp dir");
    let mut rekor = RekorV1::start(state.path(), &artifacts)
        .await
        .unwrap_or_else(|e| panic!("starting Rekor v1: {e}"));
    let key = VerifierKey::from_pem(HOSTNAME, rekor.public_key_pem()).expect("Rekor's key");
    let mirror_key = mirror_verifier();
    let bundles = tempfile::tempdir().expect("temp dir");

    let began = Instant::now();
    add_entries(&rekor, FIRST_ENTRIES).await;
    eprintln!("{FIRST_ENTRIES} entries added in {:.2?}", began.elapsed());
    let (size, root) = active_shard(&rekor).await;
    assert_eq!(size, FIRST_ENTRIES as u64);

    // The active shard, in full: its leaves are the entries at virtual
    // indexes 3.. (after the frozen shard), and they hash to its root.
    let full_dir = bundles.path().join("full");
    let packed = pack(&rekor, &key, None, &full_dir, PackStart::Full).await;
    assert_eq!(packed.origin, rekor.origin());
    assert_eq!((packed.start, packed.size, packed.root), (0, size, root));
    let full = verify_bundle(&full_dir, &key, &mirror_key, None)
        .await
        .expect("the full bundle verifies");
    assert_eq!((full.start, full.size, full.root), (0, size, root));
    assert_eq!(full.previous_size, None);

    // The frozen shard, chosen by its origin: its own tree from virtual 0.
    let frozen_dir = bundles.path().join("frozen");
    let frozen = pack(
        &rekor,
        &key,
        Some(rekor.inactive_origin()),
        &frozen_dir,
        PackStart::Full,
    )
    .await;
    assert_eq!(frozen.origin, rekor.inactive_origin());
    assert_eq!(frozen.size, INACTIVE_SHARD_ENTRIES);
    let frozen_verified = verify_bundle(&frozen_dir, &key, &mirror_key, None)
        .await
        .expect("the frozen shard's bundle verifies");
    assert_eq!(frozen_verified.origin, rekor.inactive_origin());
    // The frozen shard's bundle is not a bundle of the active shard.
    let error = verify_bundle(&frozen_dir, &key, &mirror_key, Some(&tree(&full)))
        .await
        .expect_err("a smaller tree of another shard is refused");
    assert_eq!(error.kind(), "mirror_rollback", "{error}");

    // The shard grows; the incremental bundle continues inside the last
    // entry bundle of the full one, its frontier read off Rekor's inclusion
    // proof of the last leaf before it.
    add_entries(&rekor, MORE_ENTRIES).await;
    let (grown, grown_root) = active_shard(&rekor).await;
    assert_eq!(grown, (FIRST_ENTRIES + MORE_ENTRIES) as u64);
    let incremental_dir = bundles.path().join("incremental");
    let packed = pack(
        &rekor,
        &key,
        None,
        &incremental_dir,
        PackStart::Previous(tree(&full)),
    )
    .await;
    assert_eq!((packed.start, packed.size), (size, grown));
    let incremental = verify_bundle(&incremental_dir, &key, &mirror_key, Some(&tree(&full)))
        .await
        .expect("the incremental bundle verifies against the full one");
    assert_eq!(
        (incremental.start, incremental.size, incremental.root),
        (size, grown, grown_root)
    );
    assert_eq!(incremental.previous_size, Some(size));
    verify_consistency(
        size,
        grown,
        &full.root,
        &incremental.root,
        &incremental.consistency_proof,
    )
    .expect("the bundle's consistency proof links the two trees");
    // Without the tree it continues, it proves nothing.
    let error = verify_bundle(&incremental_dir, &key, &mirror_key, None)
        .await
        .expect_err("an incremental bundle needs its previous tree");
    assert_eq!(error.kind(), "mirror_previous_mismatch", "{error}");
    // A full bundle of the grown shard contains the first one.
    let grown_dir = bundles.path().join("grown");
    pack(&rekor, &key, None, &grown_dir, PackStart::Full).await;
    let grown_full = verify_bundle(&grown_dir, &key, &mirror_key, Some(&tree(&full)))
        .await
        .expect("the grown full bundle contains the first one");
    assert_eq!(grown_full.consistency_proof, incremental.consistency_proof);

    // The offline witness, trusting the Rekor host's key for every shard,
    // consumes the bundles smallest tree first and cosigns each shard.
    let sharded = vec![ShardedLog {
        origin_prefix: format!("{HOSTNAME} - "),
        keys: vec![key.clone()],
        url: rekor.url(),
    }];
    let harness = WitnessHarness::start(vec![], sharded.clone(), false).await;
    let mirror = tempfile::tempdir().expect("temp dir");
    for (name, dir) in [
        ("frozen", &frozen_dir),
        ("full", &full_dir),
        ("incremental", &incremental_dir),
    ] {
        let into = mirror.path().join(name);
        std::fs::create_dir_all(&into).expect("mkdir");
        for file in [CAR_FILE, ENVELOPE_FILE] {
            std::fs::copy(dir.join(file), into.join(file)).expect("copy bundle");
        }
    }
    let consumer = MirrorConsumer::new(
        harness.witness.clone(),
        sharded,
        mirror_verifier(),
        mirror.path().to_path_buf(),
        harness.keys.name.clone(),
        harness.keys.cosigning.clone(),
        Arc::new(harness.grpc_signer.clone()),
    );
    let outcomes = consumer.scan().await.expect("scanning the mirror");
    let cosigned: Vec<(String, u64)> = outcomes
        .iter()
        .map(|outcome| match outcome {
            BundleOutcome::Cosigned { origin, size, .. } => (origin.clone(), *size),
            BundleOutcome::Rejected { dir, error } => {
                panic!("{} rejected: {} ({error})", dir.display(), error.kind())
            }
        })
        .collect();
    assert_eq!(
        cosigned,
        vec![
            (rekor.inactive_origin(), INACTIVE_SHARD_ENTRIES),
            (rekor.origin(), size),
            (rekor.origin(), grown),
        ]
    );
    let audit = std::fs::read(
        mirror
            .path()
            .join(AUDIT_DIR)
            .join(audit_checkpoint_name(&rekor.origin(), grown)),
    )
    .expect("the audit checkpoint of the grown shard");
    let note = parse_note(&audit).expect("the audit checkpoint is a note");
    verify_note(note.clone(), &harness.keys.cosigning).expect("cosigned by the offline witness");
    verify_note(note, std::slice::from_ref(&key)).expect("signed by Rekor");

    // A leaf changed, in a bundle otherwise well formed and signed by the
    // mirror key: the entries no longer hash to Rekor's checkpoint.
    let offset = INACTIVE_SHARD_ENTRIES;
    let mut bodies = Vec::new();
    for local in 0..size {
        let answer = rekor
            .get(&format!("/api/v1/log/entries?logIndex={}", offset + local))
            .await
            .expect("GET entry");
        bodies.push(parse_log_entry(&answer).expect("entry parses").body);
    }
    let note = full.checkpoint_note.clone();
    let rewritten_dir = bundles.path().join("rewritten");
    write_bundle(&rewritten_dir, &note, 0, None, &bodies, &mirror_signer())
        .await
        .expect("writing the same entries");
    verify_bundle(&rewritten_dir, &key, &mirror_key, None)
        .await
        .expect("the bodies Rekor serves are the shard's leaves");
    bodies[100][10] ^= 1;
    let tampered_dir = bundles.path().join("tampered-leaf");
    write_bundle(&tampered_dir, &note, 0, None, &bodies, &mirror_signer())
        .await
        .expect("writing a tampered bundle");
    let error = verify_bundle(&tampered_dir, &key, &mirror_key, None)
        .await
        .expect_err("a changed leaf is refused");
    assert_eq!(error.kind(), "mirror_root_mismatch", "{error}");

    // A byte of an entry flipped in the packed CAR itself, unsigned.
    let flipped_dir = bundles.path().join("flipped");
    std::fs::create_dir_all(&flipped_dir).expect("mkdir");
    let mut car = std::fs::read(full_dir.join(CAR_FILE)).expect("read CAR");
    let body = &bodies[200][..40];
    let at = car
        .windows(body.len())
        .position(|w| w == body)
        .expect("entry 200 is in the CAR");
    car[at + 20] ^= 1;
    std::fs::write(flipped_dir.join(CAR_FILE), &car).expect("write CAR");
    std::fs::copy(
        full_dir.join(ENVELOPE_FILE),
        flipped_dir.join(ENVELOPE_FILE),
    )
    .expect("copy envelope");
    let error = verify_bundle(&flipped_dir, &key, &mirror_key, None)
        .await
        .expect_err("a flipped byte is refused");
    assert_eq!(error.kind(), "mirror_block_cid_mismatch", "{error}");

    rekor.stop().await;
}
