//! Cosignatures made by an independent implementation verify here: Python's
//! `cryptography` (OpenSSL) signs cosignature/v1 (Ed25519) and ML-DSA-44
//! subtree/v1 messages built from the C2SP spec in `support/independent_cosign.py`.
//! No real ML-DSA-44 cosignature exists in the shared data yet, so this is the
//! check that our 0x06 message layout and key IDs match another implementation.
//!
//! The interpreter is `$WITNESS_TEST_PYTHON`, or the venv `scripts/python-env`
//! creates at `target/pyvenv` (`scripts/test` does that first).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use witness_core::Error;
use witness_core::checkpoint::verify_checkpoint_note;
use witness_core::note::{Note, SignatureType, VerifierKey, parse_note, verify_note};

fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("WITNESS_TEST_PYTHON") {
        return python.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pyvenv/bin/python");
    assert!(
        venv.exists(),
        "no Python with `cryptography` at {}: run scripts/python-env (scripts/test does) or set WITNESS_TEST_PYTHON",
        venv.display()
    );
    venv
}

struct Vectors {
    checkpoint: String,
    timestamp: u64,
    ed25519: (VerifierKey, String),
    mldsa44: (VerifierKey, String),
}

fn vectors() -> Vectors {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/independent_cosign.py");
    let output = Command::new(python()).arg(script).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let field = |name: &str| json[name].as_str().unwrap().to_owned();
    Vectors {
        checkpoint: field("checkpoint"),
        timestamp: json["timestamp"].as_u64().unwrap(),
        ed25519: (
            VerifierKey::parse_vkey(&field("ed25519_vkey")).unwrap(),
            field("ed25519_line"),
        ),
        mldsa44: (
            VerifierKey::parse_vkey(&field("mldsa44_vkey")).unwrap(),
            field("mldsa44_line"),
        ),
    }
}

fn note_with(checkpoint: &str, lines: &[&str]) -> Note {
    parse_note(format!("{checkpoint}\n{}", lines.concat()).as_bytes()).unwrap()
}

#[test]
fn independent_ed25519_and_mldsa44_cosignatures_verify_with_timestamps() {
    let v = vectors();
    assert_eq!(v.ed25519.0.signature_type(), SignatureType::CosignatureV1);
    assert_eq!(v.mldsa44.0.signature_type(), SignatureType::MlDsa44Subtree);
    let note = note_with(&v.checkpoint, &[&v.ed25519.1, &v.mldsa44.1]);
    let verified = verify_note(note.clone(), &[v.ed25519.0.clone(), v.mldsa44.0.clone()]).unwrap();
    assert_eq!(verified.verified().len(), 2);
    for signature in verified.verified() {
        assert_eq!(signature.timestamp, Some(v.timestamp));
    }
    // The same note as a checkpoint, with the ML-DSA-44 cosigner as the trusted key.
    let checkpoint =
        verify_checkpoint_note(note, std::slice::from_ref(&v.mldsa44.0), None).unwrap();
    assert_eq!(checkpoint.checkpoint().size(), 1234567);
    assert_eq!(checkpoint.note().unverified().count(), 1);
}

#[test]
fn mldsa44_cosignature_on_another_tree_size_is_rejected() {
    let v = vectors();
    // The subtree/v1 message commits to origin, size and root: move the size.
    let moved = v.checkpoint.replace("\n1234567\n", "\n1234568\n");
    let note = note_with(&moved, &[&v.mldsa44.1]);
    assert!(matches!(
        verify_note(note, std::slice::from_ref(&v.mldsa44.0)),
        Err(Error::InvalidSignature { .. })
    ));
}

#[test]
fn cosignature_with_any_flipped_byte_is_rejected() {
    let v = vectors();
    for (key, line) in [&v.ed25519, &v.mldsa44] {
        let original = parse_note(format!("{}\n{line}", v.checkpoint).as_bytes()).unwrap();
        let signature = &original.signatures()[0];
        // Flip one byte of the timestamp, one of the signature's start and one of its end.
        let len = signature.signature().len();
        for at in [0, 7, 8, len - 1] {
            let mut bytes = signature.signature().to_vec();
            bytes[at] ^= 0x01;
            let forged = witness_core::note::NoteSignature::new(
                signature.key_name(),
                signature.key_id(),
                bytes,
            )
            .unwrap();
            let note = Note::new(&v.checkpoint, vec![forged]).unwrap();
            assert!(
                matches!(
                    verify_note(note, std::slice::from_ref(key)),
                    Err(Error::InvalidSignature { .. })
                ),
                "{:?} byte {at}",
                key.signature_type()
            );
        }
    }
}

#[test]
fn ed25519_cosigner_key_is_not_accepted_as_a_log_signature_key() {
    let v = vectors();
    // The same Ed25519 public key as a plain note key (0x01) has another key ID, so
    // a cosignature line is an unknown signature to it, not a log signature.
    let material = v.ed25519.0.public_key_material();
    let as_log_key =
        VerifierKey::from_material(v.ed25519.0.name(), SignatureType::Ed25519, &material).unwrap();
    assert_ne!(as_log_key.key_id(), v.ed25519.0.key_id());
    let note = note_with(&v.checkpoint, &[&v.ed25519.1]);
    assert_eq!(
        verify_note(note, &[as_log_key]).unwrap_err(),
        Error::NoTrustedSignature
    );
}
