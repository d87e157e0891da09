//! Mirror bundles end to end: packed from a real tlog-tiles log served on
//! loopback (the feeder tests' server, per c2sp.org/tlog-tiles), verified
//! offline, and every tampering refused with the check it fails, leaving the
//! bundle as it was.

#![allow(clippy::unwrap_used)]

mod support_feeders;

use std::path::{Path, PathBuf};
use std::time::Duration;

use p256::pkcs8::{EncodePrivateKey as _, LineEnding};
use witness_core::Error;
use witness_core::merkle::{Hash, verify_consistency};
use witness_core::mirror::{CAR_FILE, ENVELOPE_FILE};
use witness_core::note::VerifierKey;
use witness_core::service::archive::ManifestVerifier;
use witness_core::service::feeder::LogUrl;
use witness_core::service::mirror::{
    FileManifestSigner, PackOptions, PackStart, PackedMirror, TrustedTree, VerifiedMirror,
    pack_tiles, verify_bundle, write_bundle,
};

use support_feeders::*;

const ORIGIN: &str = "example.com/mirror-test";

fn mirror_signer(seed: u8) -> FileManifestSigner {
    let pem = p256::ecdsa::SigningKey::from_slice(&[seed; 32])
        .unwrap()
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap();
    FileManifestSigner::from_pkcs8_pem(&pem).unwrap()
}

fn mirror_verifier(seed: u8) -> ManifestVerifier {
    ManifestVerifier::from_pem(&mirror_signer(seed).public_key_pem().unwrap()).unwrap()
}

async fn pack(
    url: &str,
    key: &VerifierKey,
    out: &Path,
    start: PackStart,
) -> Result<PackedMirror, Error> {
    let options = PackOptions {
        log: LogUrl::parse(url).unwrap(),
        log_key: key.clone(),
        origin: Some(ORIGIN.to_owned()),
        out: out.to_owned(),
        start,
        request_timeout: Duration::from_secs(10),
    };
    pack_tiles(&options, &mirror_signer(1), &mut |_, _| {}).await
}

async fn verify(
    dir: &Path,
    key: &VerifierKey,
    previous: Option<&TrustedTree>,
) -> Result<VerifiedMirror, Error> {
    verify_bundle(dir, key, &mirror_verifier(1), previous).await
}

fn tree(mirror: &VerifiedMirror) -> TrustedTree {
    TrustedTree {
        size: mirror.size,
        root: mirror.root,
    }
}

/// A full bundle of a log of `size` entries, served on loopback.
struct Fixture {
    _dir: tempfile::TempDir,
    bundle: PathBuf,
    key: VerifierKey,
    verified: VerifiedMirror,
}

async fn full_fixture(size: usize) -> Fixture {
    let mut log = TilesLog::new(ORIGIN);
    log.grow(size);
    let key = log.verifier.clone();
    let (_server, url) = TilesServer::start(log).await;
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("full");
    pack(&url, &key, &bundle, PackStart::Full).await.unwrap();
    let verified = verify(&bundle, &key, None).await.unwrap();
    Fixture {
        _dir: dir,
        bundle,
        key,
        verified,
    }
}

/// The CAR's sections: (offset of the section, offset of its CID, offset of
/// its block, end), parsed independently of the implementation.
fn sections(car: &[u8]) -> Vec<(usize, usize, usize, usize)> {
    let varint = |at: &mut usize| {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let byte = car[*at];
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return value as usize;
            }
            shift += 7;
        }
    };
    let mut at = 0;
    let header = varint(&mut at);
    at += header;
    let mut out = Vec::new();
    while at < car.len() {
        let section = at;
        let length = varint(&mut at);
        // CIDv1 raw sha2-256: 0x01 0x55 0x12 0x20 and 32 bytes.
        out.push((section, at, at + 36, at + length));
        at += length;
    }
    out
}

/// Copies a bundle, lets `tamper` edit the CAR file's bytes, and returns the
/// copy's directory.
fn tampered(bundle: &Path, name: &str, tamper: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let copy = bundle.with_file_name(name);
    std::fs::create_dir_all(&copy).unwrap();
    let mut car = std::fs::read(bundle.join(CAR_FILE)).unwrap();
    tamper(&mut car);
    std::fs::write(copy.join(CAR_FILE), car).unwrap();
    std::fs::copy(bundle.join(ENVELOPE_FILE), copy.join(ENVELOPE_FILE)).unwrap();
    copy
}

/// Verifies a tampered copy, expects `kind`, and checks the copy is unchanged.
async fn refused(
    dir: &Path,
    key: &VerifierKey,
    previous: Option<&TrustedTree>,
    kind: &str,
) -> Error {
    let before = (
        std::fs::read(dir.join(CAR_FILE)).unwrap(),
        std::fs::read(dir.join(ENVELOPE_FILE)).unwrap(),
    );
    let error = verify(dir, key, previous).await.unwrap_err();
    assert_eq!(error.kind(), kind, "{error}");
    let after = (
        std::fs::read(dir.join(CAR_FILE)).unwrap(),
        std::fs::read(dir.join(ENVELOPE_FILE)).unwrap(),
    );
    assert!(before == after, "verification changed the bundle");
    error
}

#[tokio::test]
async fn full_and_incremental_mirrors_verify_against_the_log() {
    let mut log = TilesLog::new(ORIGIN);
    log.grow(1000);
    let key = log.verifier.clone();
    let (server, url) = TilesServer::start(log).await;
    let dir = tempfile::tempdir().unwrap();

    let full = dir.path().join("full");
    let packed = pack(&url, &key, &full, PackStart::Full).await.unwrap();
    let first = verify(&full, &key, None).await.unwrap();
    assert_eq!(
        (first.start, first.size, first.previous_size),
        (0, 1000, None)
    );
    assert_eq!(first.root, server.log.lock().unwrap().root());
    assert_eq!(first.car_sha256, packed.car_sha256);
    assert!(first.consistency_proof.is_empty());

    server.log.lock().unwrap().grow(700);
    let next = dir.path().join("next");
    pack(&url, &key, &next, PackStart::Previous(tree(&first)))
        .await
        .unwrap();
    let second = verify(&next, &key, Some(&tree(&first))).await.unwrap();
    assert_eq!(
        (second.start, second.size, second.previous_size),
        (1000, 1700, Some(1000))
    );
    assert_eq!(second.root, server.log.lock().unwrap().root());
    verify_consistency(
        1000,
        1700,
        &first.root,
        &second.root,
        &second.consistency_proof,
    )
    .unwrap();

    // A full bundle of the grown log contains the first tree, and the proof
    // recomputed from its entries shows it.
    let full_again = dir.path().join("full-again");
    pack(&url, &key, &full_again, PackStart::Full)
        .await
        .unwrap();
    let third = verify(&full_again, &key, Some(&tree(&first)))
        .await
        .unwrap();
    assert_eq!(third.root, second.root);
    assert_eq!(third.consistency_proof, second.consistency_proof);
    verify_consistency(
        1000,
        1700,
        &first.root,
        &third.root,
        &third.consistency_proof,
    )
    .unwrap();
}

#[tokio::test]
async fn interrupted_pack_resumes_where_it_stopped() {
    let mut log = TilesLog::new(ORIGIN);
    log.grow(256 * 10 + 17);
    let key = log.verifier.clone();
    let (server, url) = TilesServer::start(log).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bundle");
    // Bundle 3 is served corrupt: the first run stops there.
    server
        .tampered_tiles
        .lock()
        .unwrap()
        .insert("tile/entries/003".into());
    let error = pack(&url, &key, &out, PackStart::Full).await.unwrap_err();
    assert_eq!(error.kind(), "malformed_proof", "{error}");
    assert!(!out.join(CAR_FILE).exists());

    server.tampered_tiles.lock().unwrap().clear();
    server.take_requests();
    let packed = pack(&url, &key, &out, PackStart::Full).await.unwrap();
    assert_eq!(packed.fetched_bundles, 11 - 3);
    let requests = server.take_requests();
    assert!(
        !requests
            .iter()
            .any(|r| r == "checkpoint" || r == "tile/entries/000"),
        "{requests:?}"
    );
    let verified = verify(&out, &key, None).await.unwrap();
    assert_eq!(verified.root, server.log.lock().unwrap().root());
}

#[tokio::test]
async fn flipped_byte_in_any_block_is_rejected() {
    let fixture = full_fixture(600).await;
    let car = std::fs::read(fixture.bundle.join(CAR_FILE)).unwrap();
    let all = sections(&car);
    // Checkpoint, three entry bundles, INDEX.
    assert_eq!(all.len(), 5);
    for (i, &(_, _, block, end)) in all.iter().enumerate() {
        for offset in [block, (block + end) / 2, end - 1] {
            let copy = tampered(&fixture.bundle, &format!("flip-{i}-{offset}"), |car| {
                car[offset] ^= 0x01
            });
            let error = refused(&copy, &fixture.key, None, "mirror_block_cid_mismatch").await;
            assert!(
                error.to_string().contains("do not hash to its CID"),
                "{error}"
            );
        }
    }
}

#[tokio::test]
async fn wrong_cid_is_rejected() {
    let fixture = full_fixture(300).await;
    let car = std::fs::read(fixture.bundle.join(CAR_FILE)).unwrap();
    for (i, &(_, cid, _, _)) in sections(&car).iter().enumerate() {
        let copy = tampered(&fixture.bundle, &format!("cid-{i}"), |car| {
            car[cid + 10] ^= 0x80
        });
        refused(&copy, &fixture.key, None, "mirror_block_cid_mismatch").await;
        // Another codec than raw.
        let copy = tampered(&fixture.bundle, &format!("codec-{i}"), |car| {
            car[cid + 1] = 0x71
        });
        refused(&copy, &fixture.key, None, "mirror_malformed_car").await;
    }
    // Two full entry bundles swapped: each CID is right, the order is not.
    let fixture = full_fixture(600).await;
    let car = std::fs::read(fixture.bundle.join(CAR_FILE)).unwrap();
    let all = sections(&car);
    let copy = tampered(&fixture.bundle, "swapped", |car| {
        let (a, b) = (all[1], all[2]);
        let mut swapped = car[..a.0].to_vec();
        swapped.extend_from_slice(&car[b.0..b.3]);
        swapped.extend_from_slice(&car[a.0..a.3]);
        swapped.extend_from_slice(&car[b.3..]);
        *car = swapped;
    });
    refused(&copy, &fixture.key, None, "mirror_root_mismatch").await;
}

#[tokio::test]
async fn bad_manifest_signature_is_rejected() {
    let fixture = full_fixture(300).await;
    // Verified with another mirror key.
    let error = verify_bundle(&fixture.bundle, &fixture.key, &mirror_verifier(2), None)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "mirror_manifest_signature");
    // The signature's bytes altered.
    let copy = tampered(&fixture.bundle, "sig", |_| {});
    let envelope = std::fs::read_to_string(copy.join(ENVELOPE_FILE)).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&envelope).unwrap();
    let sig = json["signatures"][0]["sig"].as_str().unwrap().to_owned();
    let flipped = if sig.starts_with('M') {
        sig.replacen('M', "N", 1)
    } else {
        format!("M{}", &sig[1..])
    };
    json["signatures"][0]["sig"] = flipped.into();
    std::fs::write(copy.join(ENVELOPE_FILE), json.to_string()).unwrap();
    refused(&copy, &fixture.key, None, "mirror_manifest_signature").await;
    // The Statement altered under the original signature.
    let copy = tampered(&fixture.bundle, "payload", |_| {});
    let mut json: serde_json::Value = serde_json::from_str(&envelope).unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = b64.decode(json["payload"].as_str().unwrap()).unwrap();
    let payload = String::from_utf8(payload)
        .unwrap()
        .replace("\"size\":300", "\"size\":299");
    json["payload"] = b64.encode(payload).into();
    std::fs::write(copy.join(ENVELOPE_FILE), json.to_string()).unwrap();
    refused(&copy, &fixture.key, None, "mirror_manifest_signature").await;
}

#[tokio::test]
async fn checkpoint_from_wrong_key_is_rejected() {
    let fixture = full_fixture(300).await;
    // The right bundle, verified with another key of the same name.
    let (_, other_key) = ed25519_key(ORIGIN, 7);
    let error = refused(
        &fixture.bundle,
        &other_key,
        None,
        "mirror_checkpoint_signature",
    )
    .await;
    assert!(
        error
            .to_string()
            .contains("no signature from a trusted key"),
        "{error}"
    );

    // A bundle whose checkpoint another key signed, under a valid mirror signature.
    let mut log = TilesLog::new(ORIGIN);
    log.grow(3);
    let (signing, verifier) = ed25519_key(ORIGIN, 7);
    let note = signed_checkpoint(&signing, &verifier, ORIGIN, 3, &log.root());
    let dir = fixture.bundle.with_file_name("wrong-key");
    write_bundle(&dir, &note, 0, None, [b"a", b"b", b"c"], &mirror_signer(1))
        .await
        .unwrap();
    refused(&dir, &fixture.key, None, "mirror_checkpoint_signature").await;
}

#[tokio::test]
async fn entries_that_do_not_hash_to_the_checkpoint_are_rejected() {
    let mut log = TilesLog::new(ORIGIN);
    log.grow(3);
    let note = log.checkpoint();
    let dir = tempfile::tempdir().unwrap();
    write_bundle(
        dir.path(),
        &note,
        0,
        None,
        [b"a", b"b", b"c"],
        &mirror_signer(1),
    )
    .await
    .unwrap();
    refused(dir.path(), &log.verifier, None, "mirror_root_mismatch").await;
}

#[tokio::test]
async fn rollback_relative_to_previous_is_rejected() {
    let fixture = full_fixture(500).await;
    let larger = TrustedTree {
        size: 501,
        root: fixture.verified.root,
    };
    refused(
        &fixture.bundle,
        &fixture.key,
        Some(&larger),
        "mirror_rollback",
    )
    .await;
}

#[tokio::test]
async fn forked_history_is_rejected() {
    // Two logs under the same key and origin with different entries.
    let mut honest = TilesLog::new(ORIGIN);
    honest.grow(1000);
    let mut fork = TilesLog::new(ORIGIN);
    fork.grow(1000);
    let key = honest.verifier.clone();
    let trusted = TrustedTree {
        size: 1000,
        root: honest.root(),
    };
    let (fork_server, fork_url) = TilesServer::start(fork).await;
    let dir = tempfile::tempdir().unwrap();

    // The fork's full bundle at the trusted size.
    let same_size = dir.path().join("same-size");
    pack(&fork_url, &key, &same_size, PackStart::Full)
        .await
        .unwrap();
    refused(&same_size, &key, Some(&trusted), "mirror_fork").await;

    // The fork grown: its full bundle, and an incremental one from size 1000.
    fork_server.log.lock().unwrap().grow(300);
    let full = dir.path().join("full");
    pack(&fork_url, &key, &full, PackStart::Full).await.unwrap();
    refused(&full, &key, Some(&trusted), "mirror_fork").await;
    let incremental = dir.path().join("incremental");
    pack(&fork_url, &key, &incremental, PackStart::FromSize(1000))
        .await
        .unwrap();
    refused(&incremental, &key, Some(&trusted), "mirror_fork").await;
    // The packer itself refuses to extend a tree the log does not have.
    let error = pack(
        &fork_url,
        &key,
        &dir.path().join("refused"),
        PackStart::Previous(trusted),
    )
    .await
    .unwrap_err();
    assert_eq!(error.kind(), "mirror_fork");
}

#[tokio::test]
async fn incremental_bundle_needs_its_previous_tree() {
    let mut log = TilesLog::new(ORIGIN);
    log.grow(400);
    let key = log.verifier.clone();
    let (server, url) = TilesServer::start(log).await;
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    pack(&url, &key, &first, PackStart::Full).await.unwrap();
    let first = verify(&first, &key, None).await.unwrap();
    server.log.lock().unwrap().grow(100);
    let next = dir.path().join("next");
    pack(&url, &key, &next, PackStart::Previous(tree(&first)))
        .await
        .unwrap();
    refused(&next, &key, None, "mirror_previous_mismatch").await;
    let other = TrustedTree {
        size: 300,
        root: Hash([0; 32]),
    };
    refused(&next, &key, Some(&other), "mirror_previous_mismatch").await;
    verify(&next, &key, Some(&tree(&first))).await.unwrap();
}

#[tokio::test]
async fn truncated_car_is_rejected() {
    let fixture = full_fixture(600).await;
    let car = std::fs::read(fixture.bundle.join(CAR_FILE)).unwrap();
    let all = sections(&car);
    let cuts = [
        3,             // inside the header
        all[1].0,      // at a section boundary
        all[1].2 + 5,  // inside an entry bundle
        all[4].0,      // before the INDEX
        car.len() - 1, // inside the INDEX
    ];
    for cut in cuts {
        let copy = tampered(&fixture.bundle, &format!("cut-{cut}"), |car| {
            car.truncate(cut)
        });
        refused(&copy, &fixture.key, None, "mirror_truncated_car").await;
    }
    // A valid section (the checkpoint's again) appended after the INDEX.
    let copy = tampered(&fixture.bundle, "appended", |car| {
        let checkpoint = car[all[0].0..all[0].3].to_vec();
        car.extend_from_slice(&checkpoint);
    });
    refused(&copy, &fixture.key, None, "mirror_unexpected_block").await;
}

#[tokio::test]
async fn oversized_block_length_is_rejected_before_allocating() {
    let fixture = full_fixture(300).await;
    let car = std::fs::read(fixture.bundle.join(CAR_FILE)).unwrap();
    let (section, cid, _, _) = sections(&car)[1];
    // A section length of 2^62 bytes: refused before anything is read.
    let copy = tampered(&fixture.bundle, "huge", |car| {
        let mut edited = car[..section].to_vec();
        edited.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40]);
        edited.extend_from_slice(&car[cid..]);
        *car = edited;
    });
    refused(&copy, &fixture.key, None, "mirror_block_too_large").await;
}

#[tokio::test]
async fn cli_packs_and_verifies_with_the_verify_exit_codes() {
    let mut log = TilesLog::new(ORIGIN);
    log.grow(700);
    let key = log.verifier.clone();
    let (_server, url) = TilesServer::start(log).await;
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("mirror.key");
    let public = dir.path().join("mirror.pub");
    let pem = p256::ecdsa::SigningKey::from_slice(&[1; 32])
        .unwrap()
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap();
    std::fs::write(&private, pem.as_bytes()).unwrap();
    std::fs::write(&public, mirror_signer(1).public_key_pem().unwrap()).unwrap();
    let bundle = dir.path().join("bundle");
    let cli = |args: Vec<String>| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_rekor-witness"))
            .args(args)
            .output()
            .await
            .unwrap()
    };
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let packed = cli(vec![
        "mirror".into(),
        "pack".into(),
        "--log".into(),
        url.clone(),
        "--log-key".into(),
        key.to_vkey(),
        "--out".into(),
        path(&bundle),
        "--mirror-key".into(),
        path(&private),
    ])
    .await;
    assert!(packed.status.success(), "{packed:?}");
    verify(&bundle, &key, None).await.unwrap();

    let verify_args = |dir: &Path| {
        vec![
            "mirror".into(),
            "verify".into(),
            path(dir),
            "--log-key".into(),
            key.to_vkey(),
            "--mirror-key".into(),
            path(&public),
        ]
    };
    let valid = cli(verify_args(&bundle)).await;
    assert_eq!(valid.status.code(), Some(0), "{valid:?}");
    let car = std::fs::read(bundle.join(CAR_FILE)).unwrap();
    let last = sections(&car)[2].3 - 1;
    let copy = tampered(&bundle, "cli-flip", |car| car[last] ^= 1);
    let invalid = cli(verify_args(&copy)).await;
    assert_eq!(invalid.status.code(), Some(1), "{invalid:?}");
    let stderr = String::from_utf8(invalid.stderr).unwrap();
    assert!(
        stderr.starts_with("invalid: mirror_block_cid_mismatch: "),
        "{stderr}"
    );
    let missing = cli(verify_args(&dir.path().join("absent"))).await;
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
}
