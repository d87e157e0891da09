//! Integration tests over the real, read-only test data in `../shared/testdata`:
//! Rekor checkpoints and keys, the sumdb note vectors, Sigstore bundles, trusted
//! roots and signing configs, Rekor v1 log info and proofs, and witness log lists.
//!
//! Mutations of these checkpoints live in `shared_checkpoint_negatives.rs` and
//! the transparency-dev Merkle probes in `shared_merkle_probes.rs`.

#![allow(clippy::unwrap_used)]

mod shared_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use witness_core::Error;
use witness_core::bundle::{
    TransparencyLogEntry, TrustedLog, log_id_of, parse_bundle_entries, parse_entries,
    parse_signing_config, parse_transparency_log_entry, parse_trusted_root, url_host, verify_entry,
};
use witness_core::checkpoint::{parse_checkpoint_text, verify_checkpoint};
use witness_core::merkle::{Hash, leaf_hash, verify_consistency};
use witness_core::note::{
    MAX_SIGNATURES, Note, NoteSignature, SignatureType, VerifierKey, key_id_for, parse_note,
    verify_note,
};
use witness_core::rekor::{
    self, parse_consistency_proof_response, parse_log_entry, parse_log_info, parse_proof_file,
};

use shared_support::*;

// ---------------------------------------------------------------------------
// 1. rekor/keys and rekor/checkpoints
// ---------------------------------------------------------------------------

fn valid_checkpoints() -> Vec<PathBuf> {
    files_in("rekor/checkpoints/valid", 6)
}

/// The one log key in `keys` that the checkpoint's log signature line names.
fn log_key_for<'a>(note: &Note, keys: &'a [VerifierKey]) -> &'a VerifierKey {
    let checkpoint = parse_checkpoint_text(note.text()).unwrap();
    let expected_name = key_name_for_origin(checkpoint.origin());
    let mut found: Vec<&VerifierKey> = note
        .signatures()
        .iter()
        .flat_map(|signature| keys_matching(keys, signature))
        .collect();
    found.dedup_by_key(|key| key.to_vkey());
    assert_eq!(
        found.len(),
        1,
        "expected exactly one log key for origin {:?}, found {found:?}",
        checkpoint.origin()
    );
    assert_eq!(found[0].name(), expected_name, "log key name vs origin");
    found[0]
}

#[test]
fn every_pem_log_key_has_the_same_vkey_as_vkeys_txt() {
    let lines = vkeys_txt();
    let log_lines: Vec<&VkeyLine> = lines.iter().filter(|line| !line.witness).collect();
    assert!(log_lines.len() >= 8);
    let pems = pem_files();
    assert!(pems.len() >= 8, "only {} PEM keys", pems.len());
    let mut pem_matched = BTreeSet::new();
    for line in &log_lines {
        // The PEM route: name the key as the log names it, and find the PEM file
        // that yields the same key ID (never chosen by file name).
        let matches: Vec<&String> = pems
            .iter()
            .filter(|(_, pem)| {
                VerifierKey::from_pem(line.key.name(), pem)
                    .is_ok_and(|key| key.key_id() == line.key.key_id())
            })
            .map(|(file, _)| file)
            .collect();
        assert_eq!(matches.len(), 1, "{}: PEM files {matches:?}", line.vkey);
        let pem = &pems.iter().find(|(f, _)| f == matches[0]).unwrap().1;
        let from_pem = VerifierKey::from_pem(line.key.name(), pem).unwrap();
        assert_eq!(from_pem.to_vkey(), line.vkey, "PEM {} vs vkey", matches[0]);
        assert_eq!(from_pem.signature_type(), line.key.signature_type());
        pem_matched.insert(matches[0].clone());
    }
    // And every PEM file is some log's key.
    let all_pems: BTreeSet<String> = pems.iter().map(|(f, _)| f.clone()).collect();
    assert_eq!(pem_matched, all_pems, "PEM files without a vkey line");
    // Rekor v1 keys are ECDSA, v2 (and rekor-tiles) keys Ed25519.
    for line in &log_lines {
        let expected = if line.comment.contains("PKIX_ECDSA_P256_SHA_256") {
            SignatureType::EcdsaP256
        } else {
            SignatureType::Ed25519
        };
        assert_eq!(line.key.signature_type(), expected, "{}", line.vkey);
    }
}

#[test]
fn every_valid_checkpoint_verifies_with_its_log_key_by_vkey_and_by_pem() {
    let keys = log_keys();
    let pems = pem_files();
    for path in valid_checkpoints() {
        let bytes = read(&path);
        let note = parse_note(&bytes).unwrap();
        let key = log_key_for(&note, &keys);
        let origin = parse_checkpoint_text(note.text())
            .unwrap()
            .origin()
            .to_owned();

        let verified = verify_checkpoint(&bytes, std::slice::from_ref(key), Some(&origin))
            .unwrap_or_else(|e| panic!("{}: {e}", rel(&path)));
        assert_eq!(verified.note().verified().len(), 1, "{}", rel(&path));
        let signature = &verified.note().verified()[0];
        assert_eq!(signature.signature_type, key.signature_type());
        assert_eq!(
            signature.timestamp, None,
            "log signatures carry no timestamp"
        );

        // The PEM route, key picked by key ID among all PEM files.
        let name = key_name_for_origin(&origin);
        let pem_keys: Vec<VerifierKey> = pems
            .iter()
            .filter_map(|(_, pem)| VerifierKey::from_pem(name, pem).ok())
            .filter(|k| k.key_id() == key.key_id())
            .collect();
        assert_eq!(pem_keys.len(), 1, "{}: PEM keys for {name}", rel(&path));
        assert_eq!(pem_keys[0].to_vkey(), key.to_vkey());
        verify_checkpoint(&bytes, &pem_keys, Some(&origin))
            .unwrap_or_else(|e| panic!("{} with PEM key: {e}", rel(&path)));

        // The wrong origin is refused before any signature is checked.
        assert!(matches!(
            verify_checkpoint(&bytes, std::slice::from_ref(key), Some("example.com/other")),
            Err(Error::OriginMismatch { .. })
        ));
        // Every other log key is not trusted for this checkpoint.
        let others: Vec<VerifierKey> = keys
            .iter()
            .filter(|k| k.to_vkey() != key.to_vkey())
            .cloned()
            .collect();
        assert_eq!(
            verify_checkpoint(&bytes, &others, None).unwrap_err(),
            Error::NoTrustedSignature,
            "{}",
            rel(&path)
        );
    }
}

#[test]
fn every_valid_checkpoint_reserializes_byte_for_byte() {
    for path in valid_checkpoints() {
        let bytes = read(&path);
        let note = parse_note(&bytes).unwrap();
        assert_eq!(note.to_bytes(), bytes, "{}: note bytes", rel(&path));
        let checkpoint = parse_checkpoint_text(note.text()).unwrap();
        assert_eq!(checkpoint.to_text(), note.text(), "{}: text", rel(&path));
        // The file name states the size.
        let size = checkpoint.size().to_string();
        assert!(
            file_name(&path).contains(&format!(".{size}.")),
            "{}: size {size}",
            rel(&path)
        );
        // Signature lines re-encode on their own too.
        let lines: String = note.signatures().iter().map(|s| s.to_line()).collect();
        assert!(String::from_utf8(bytes).unwrap().ends_with(&lines));
    }
}

#[test]
fn alpha3_checkpoint_carries_three_verifiable_witness_cosignatures() {
    let path = valid_checkpoints()
        .into_iter()
        .find(|p| file_name(p).starts_with("log2025-alpha3."))
        .unwrap();
    let bytes = read(&path);
    let witnesses = witness_keys();
    let real_witnesses: Vec<VerifierKey> = witnesses
        .iter()
        .filter(|k| k.name() != "rekor-witness-test")
        .cloned()
        .collect();
    assert_eq!(real_witnesses.len(), 3);

    let verified = verify_note(parse_note(&bytes).unwrap(), &real_witnesses).unwrap();
    assert_eq!(verified.verified().len(), 3);
    // The log's own signature is the one left unverified.
    let unverified: Vec<&NoteSignature> = verified.unverified().collect();
    assert_eq!(unverified.len(), 1);
    assert_eq!(
        unverified[0].key_name(),
        "log2025-alpha3.rekor.sigstage.dev"
    );
    for signature in verified.verified() {
        assert_eq!(signature.signature_type, SignatureType::CosignatureV1);
        // The timestamp returned is the one in the signature blob.
        let blob = signature.signature.signature();
        let stated = u64::from_be_bytes(blob[..8].try_into().unwrap());
        assert_eq!(signature.timestamp, Some(stated));
        // 2025-01-01 .. 2030-01-01: real wall-clock seconds, not milliseconds.
        assert!((1_735_689_600..1_893_456_000).contains(&stated), "{stated}");
    }

    // Log key and witnesses together: four verified signatures.
    let mut all = log_keys();
    all.extend(real_witnesses.iter().cloned());
    let verified = verify_checkpoint(&bytes, &all, None).unwrap();
    assert_eq!(verified.note().verified().len(), 4);
    assert_eq!(verified.note().unverified().count(), 0);

    // Witness keys are cosignature keys: as plain type 0x01 Ed25519 keys with the
    // same name they would have another key ID, so nothing matches.
    for witness in &real_witnesses {
        let plain = VerifierKey::from_material(
            witness.name(),
            SignatureType::Ed25519,
            &witness.public_key_material(),
        )
        .unwrap();
        assert_ne!(plain.key_id(), witness.key_id());
        assert_eq!(
            verify_note(parse_note(&bytes).unwrap(), &[plain]).unwrap_err(),
            Error::NoTrustedSignature
        );
    }

    // A witness signature with one flipped bit, from a trusted witness, rejects.
    let mut note = parse_note(&bytes).unwrap();
    let mut signatures = note.signatures().to_vec();
    let last = signatures.pop().unwrap();
    let mut raw = last.signature().to_vec();
    raw[20] ^= 0x01;
    signatures.push(NoteSignature::new(last.key_name(), last.key_id(), raw).unwrap());
    note = Note::new(note.text(), signatures).unwrap();
    assert!(matches!(
        verify_note(note, &real_witnesses),
        Err(Error::InvalidSignature { .. })
    ));
}

#[test]
fn rekor_witness_test_type_0x01_key_converts_to_a_cosignature_key() {
    let line = vkeys_txt()
        .into_iter()
        .find(|l| l.vkey.starts_with("rekor-witness-test+"))
        .unwrap();
    assert_eq!(line.key.signature_type(), SignatureType::Ed25519);
    let cosigner = line.key.as_cosignature_v1().unwrap();
    assert_eq!(cosigner.signature_type(), SignatureType::CosignatureV1);
    assert_eq!(cosigner.name(), "rekor-witness-test");
    assert_eq!(
        cosigner.public_key_material(),
        line.key.public_key_material()
    );
    assert_eq!(
        cosigner.key_id(),
        key_id_for(
            "rekor-witness-test",
            SignatureType::CosignatureV1,
            &line.key.public_key_material()
        )
    );
    assert_ne!(cosigner.key_id(), line.key.key_id());
    // The converted vkey is a type 0x04 vkey that parses back to itself.
    let vkey = cosigner.to_vkey();
    let blob = BASE64.decode(vkey.splitn(3, '+').nth(2).unwrap()).unwrap();
    assert_eq!(blob[0], 0x04);
    assert_eq!(VerifierKey::parse_vkey(&vkey).unwrap().to_vkey(), vkey);
    // Converting twice is stable, and ECDSA keys cannot be converted.
    assert_eq!(cosigner.as_cosignature_v1().unwrap().to_vkey(), vkey);
    let ecdsa = log_keys()
        .into_iter()
        .find(|k| k.signature_type() == SignatureType::EcdsaP256)
        .unwrap();
    assert!(matches!(
        ecdsa.as_cosignature_v1(),
        Err(Error::MalformedKey { .. })
    ));
}

#[test]
fn checkpoint_signed_by_unknown_key_hash_is_rejected() {
    let keys = log_keys();
    let files = files_in("rekor/checkpoints/invalid", 1);
    for path in files {
        let bytes = read(&path);
        let note = parse_note(&bytes).unwrap();
        let checkpoint = parse_checkpoint_text(note.text()).unwrap();
        let name = key_name_for_origin(checkpoint.origin());
        let named: Vec<VerifierKey> = keys.iter().filter(|k| k.name() == name).cloned().collect();
        assert!(!named.is_empty(), "{}: no log key named {name}", rel(&path));
        let err = verify_checkpoint(&bytes, &named, Some(checkpoint.origin())).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NoTrustedSignature | Error::InvalidSignature { .. }
            ),
            "{}: {err:?}",
            rel(&path)
        );
        let err = verify_checkpoint(&bytes, &keys, None).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NoTrustedSignature | Error::InvalidSignature { .. }
            ),
            "{}: {err:?}",
            rel(&path)
        );
    }
}

// ---------------------------------------------------------------------------
// 3. note/: golang.org/x/mod/sumdb/note vectors and sum.golang.org
// ---------------------------------------------------------------------------

fn sumdb_vectors() -> serde_json::Value {
    read_json(&data_path("note/golang-mod-sumdb-note.vectors.json"))
}

fn field<'a>(vectors: &'a serde_json::Value, name: &str) -> &'a str {
    vectors[name]
        .as_str()
        .unwrap_or_else(|| panic!("vector field {name} is not a string"))
}

#[test]
fn sumdb_peter_and_enoch_vkeys_parse_and_reencode() {
    let v = sumdb_vectors();
    for name in ["peter_vkey", "enoch_vkey"] {
        let vkey = field(&v, name);
        let key = VerifierKey::parse_vkey(vkey).unwrap();
        assert_eq!(key.signature_type(), SignatureType::Ed25519);
        assert_eq!(key.to_vkey(), vkey);
    }
    assert_eq!(
        VerifierKey::parse_vkey(field(&v, "peter_vkey"))
            .unwrap()
            .key_id(),
        0xc74f20a3
    );
}

#[test]
fn sumdb_signed_note_by_peter_verifies_and_round_trips() {
    let v = sumdb_vectors();
    let peter = VerifierKey::parse_vkey(field(&v, "peter_vkey")).unwrap();
    let enoch = VerifierKey::parse_vkey(field(&v, "enoch_vkey")).unwrap();
    let signed = field(&v, "signed_note_by_peter");
    let note = parse_note(signed.as_bytes()).unwrap();
    assert_eq!(note.text(), field(&v, "text"));
    assert_eq!(note.to_bytes(), signed.as_bytes());
    let verified = verify_note(note.clone(), std::slice::from_ref(&peter)).unwrap();
    assert_eq!(verified.verified().len(), 1);
    assert_eq!(verified.verified()[0].signature.key_name(), "PeterNeumann");
    assert_eq!(
        verify_note(note, &[enoch]).unwrap_err(),
        Error::NoTrustedSignature
    );
}

#[test]
fn sumdb_signature_lines_parse_as_note_signatures() {
    let v = sumdb_vectors();
    let text = field(&v, "text");
    for (line_field, vkey_field) in [
        ("peter_sig_line", "peter_vkey"),
        ("enoch_sig_line", "enoch_vkey"),
    ] {
        let line = field(&v, line_field);
        let key = VerifierKey::parse_vkey(field(&v, vkey_field)).unwrap();
        let note = parse_note(format!("{text}\n{line}").as_bytes()).unwrap();
        assert_eq!(note.signatures().len(), 1);
        let signature = &note.signatures()[0];
        assert!(key.matches(signature), "{line_field}");
        assert_eq!(signature.signature().len(), 64);
        assert_eq!(signature.to_line(), line);
        assert_eq!(key.verify(text, signature.signature()), Ok(None));
    }
}

#[test]
fn sumdb_note_with_peter_and_enoch_verified_by_peter_leaves_enoch_unverified() {
    let v = sumdb_vectors();
    let peter = VerifierKey::parse_vkey(field(&v, "peter_vkey")).unwrap();
    let enoch = VerifierKey::parse_vkey(field(&v, "enoch_vkey")).unwrap();
    let bytes = format!(
        "{}\n{}{}",
        field(&v, "text"),
        field(&v, "peter_sig_line"),
        field(&v, "enoch_sig_line")
    );
    let note = parse_note(bytes.as_bytes()).unwrap();
    let verified = verify_note(note.clone(), std::slice::from_ref(&peter)).unwrap();
    assert_eq!(verified.verified().len(), 1);
    assert_eq!(verified.verified()[0].signature.key_name(), "PeterNeumann");
    let unverified: Vec<&NoteSignature> = verified.unverified().collect();
    assert_eq!(unverified.len(), 1);
    assert_eq!(unverified[0].key_name(), "EnochRoot");
    // Both keys: both verified, in note order.
    let both = verify_note(note, &[enoch, peter]).unwrap();
    let names: Vec<&str> = both
        .verified()
        .iter()
        .map(|s| s.signature.key_name())
        .collect();
    assert_eq!(names, ["PeterNeumann", "EnochRoot"]);
}

#[test]
fn sumdb_bad_vkeys_are_rejected() {
    let v = sumdb_vectors();
    let bad = v["bad_vkeys_must_fail"].as_array().unwrap();
    assert!(bad.len() >= 2);
    for vkey in bad {
        let vkey = vkey.as_str().unwrap();
        let err = VerifierKey::parse_vkey(vkey).unwrap_err();
        assert!(
            matches!(
                err,
                Error::MalformedKey { .. } | Error::UnsupportedKeyType { .. }
            ),
            "{vkey}: {err:?}"
        );
    }
    // Specifically: trailing garbage after the key, and an unknown type byte.
    assert!(matches!(
        VerifierKey::parse_vkey(bad[0].as_str().unwrap()),
        Err(Error::MalformedKey { .. })
    ));
    assert!(matches!(
        VerifierKey::parse_vkey(bad[1].as_str().unwrap()),
        Err(Error::UnsupportedKeyType { type_byte: 0x65 })
    ));
}

#[test]
fn sumdb_malformed_notes_are_rejected() {
    let v = sumdb_vectors();
    let peter = VerifierKey::parse_vkey(field(&v, "peter_vkey")).unwrap();
    let malformed = v["malformed_notes_must_fail (Open)"].as_array().unwrap();
    assert!(malformed.len() >= 6);
    for note in malformed {
        let note = note.as_str().unwrap();
        let err = parse_note(note.as_bytes()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::MalformedNote { .. } | Error::TooManySignatures { .. }
            ),
            "{note:?}: {err:?}"
        );
        // Open = parse + verify: also refused when verifying with Peter's key.
        assert!(
            parse_note(note.as_bytes())
                .and_then(|n| verify_note(n, std::slice::from_ref(&peter)))
                .is_err()
        );
    }
}

#[test]
fn sumdb_known_key_with_failing_signature_is_invalid_signature() {
    let v = sumdb_vectors();
    let peter = VerifierKey::parse_vkey(field(&v, "peter_vkey")).unwrap();
    let note = parse_note(field(&v, "signed_note_by_peter").as_bytes()).unwrap();
    let original = &note.signatures()[0];
    for index in [0, 31, 63] {
        let mut raw = original.signature().to_vec();
        raw[index] ^= 0x40;
        let tampered = Note::new(
            note.text(),
            vec![NoteSignature::new(original.key_name(), original.key_id(), raw).unwrap()],
        )
        .unwrap();
        assert_eq!(
            verify_note(tampered, std::slice::from_ref(&peter)).unwrap_err(),
            Error::InvalidSignature {
                key_name: "PeterNeumann".into(),
                key_id: 0xc74f20a3
            }
        );
    }
    // Another text under Peter's good signature is also an invalid signature.
    let other = Note::new("If you think\n", note.signatures().to_vec()).unwrap();
    assert!(matches!(
        verify_note(other, &[peter]),
        Err(Error::InvalidSignature { .. })
    ));
}

#[test]
fn sumdb_more_than_max_signatures_is_malformed() {
    let v = sumdb_vectors();
    let peter_line = field(&v, "peter_sig_line");
    let enoch_line = field(&v, "enoch_sig_line");
    let mut bytes = format!("{}\n{peter_line}", field(&v, "text"));
    for _ in 1..MAX_SIGNATURES {
        bytes.push_str(enoch_line);
    }
    let note = parse_note(bytes.as_bytes()).unwrap();
    assert_eq!(note.signatures().len(), MAX_SIGNATURES);
    bytes.push_str(enoch_line);
    assert_eq!(
        parse_note(bytes.as_bytes()).unwrap_err(),
        Error::TooManySignatures {
            count: MAX_SIGNATURES + 1,
            max: MAX_SIGNATURES
        }
    );
}

#[test]
fn sumdb_tree_text_parses_as_a_checkpoint_of_record_hash_hello_world() {
    let text = "go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n";
    let v = sumdb_vectors();
    assert!(field(&v, "notes").contains(&text.replace('\n', "\\n")));
    let checkpoint = parse_checkpoint_text(text).unwrap();
    assert_eq!(checkpoint.origin(), "go.sum database tree");
    assert_eq!(checkpoint.size(), 123456789012);
    assert!(checkpoint.extensions().is_empty());
    assert_eq!(checkpoint.to_text(), text);
    // sumdb's RecordHash is the RFC 6962 leaf hash.
    assert_eq!(*checkpoint.root_hash(), leaf_hash(b"hello world"));
}

/// Decodes Go's `PRIVATE+KEY+<name>+<hash>+base64(0x01 || seed)`.
fn go_private_key(skey: &str) -> (String, u32, ed25519_dalek::SigningKey) {
    let parts: Vec<&str> = skey.splitn(5, '+').collect();
    assert_eq!(parts.len(), 5);
    assert_eq!(&parts[..2], ["PRIVATE", "KEY"]);
    let key_id = u32::from_str_radix(parts[3], 16).unwrap();
    let blob = BASE64.decode(parts[4]).unwrap();
    assert_eq!(blob.len(), 33);
    assert_eq!(blob[0], 0x01, "Ed25519 private key");
    let seed: [u8; 32] = blob[1..].try_into().unwrap();
    (
        parts[2].to_owned(),
        key_id,
        ed25519_dalek::SigningKey::from_bytes(&seed),
    )
}

#[test]
fn sumdb_peter_private_key_reproduces_peter_signature_line() {
    use ed25519_dalek::Signer as _;
    let v = sumdb_vectors();
    let (name, key_id, signing) = go_private_key(field(&v, "peter_skey"));
    // The vkey derived from the seed is Peter's, key ID included.
    let verifier = VerifierKey::from_material(
        &name,
        SignatureType::Ed25519,
        signing.verifying_key().as_bytes(),
    )
    .unwrap();
    assert_eq!(verifier.to_vkey(), field(&v, "peter_vkey"));
    assert_eq!(verifier.key_id(), key_id);
    // Ed25519 is deterministic: signing the text reproduces the vector's line.
    let text = field(&v, "text");
    let signature = signing.sign(text.as_bytes()).to_bytes().to_vec();
    let line = NoteSignature::new(&name, key_id, signature)
        .unwrap()
        .to_line();
    assert_eq!(line, field(&v, "peter_sig_line"));
    // And the note built from it is the vector's signed note.
    let note = Note::new(
        text,
        parse_note(format!("{text}\n{line}").as_bytes())
            .unwrap()
            .signatures()
            .to_vec(),
    )
    .unwrap();
    assert_eq!(
        note.to_bytes(),
        field(&v, "signed_note_by_peter").as_bytes()
    );
}

#[test]
fn sum_golang_org_checkpoint_verifies_with_its_vkey() {
    let vkey = read_string(&data_path("note/sum.golang.org.vkey.txt"));
    let key = VerifierKey::parse_vkey(vkey.trim()).unwrap();
    assert_eq!(key.name(), "sum.golang.org");
    let path = data_path("note/sum.golang.org.checkpoint.6476701.txt");
    let bytes = read(&path);
    let verified = verify_checkpoint(
        &bytes,
        std::slice::from_ref(&key),
        Some("go.sum database tree"),
    )
    .unwrap();
    assert_eq!(verified.checkpoint().size(), 6476701);
    assert_eq!(parse_note(&bytes).unwrap().to_bytes(), bytes);
    // The Rekor keys do not verify it.
    assert_eq!(
        verify_checkpoint(&bytes, &log_keys(), None).unwrap_err(),
        Error::NoTrustedSignature
    );
}

// ---------------------------------------------------------------------------
// 5. rekor/bundles against rekor/trusted_root
// ---------------------------------------------------------------------------

fn trusted_roots() -> Vec<(String, Vec<TrustedLog>)> {
    let roots: Vec<(String, Vec<TrustedLog>)> = files_in("rekor/trusted_root", 8)
        .into_iter()
        .filter(|p| file_name(p).contains("trusted_root") && file_name(p).ends_with(".json"))
        .map(|p| {
            let logs = parse_trusted_root(&read(&p)).unwrap_or_else(|e| panic!("{}: {e}", rel(&p)));
            assert!(!logs.is_empty(), "{}", rel(&p));
            (file_name(&p), logs)
        })
        .collect();
    assert!(roots.len() >= 4, "only {} trusted roots", roots.len());
    roots
}

fn bundles() -> Vec<(PathBuf, Vec<TransparencyLogEntry>)> {
    files_below("rekor/bundles", ".json", 5)
        .into_iter()
        .map(|p| {
            let entries =
                parse_bundle_entries(&read(&p)).unwrap_or_else(|e| panic!("{}: {e}", rel(&p)));
            (p, entries)
        })
        .collect()
}

/// The bundle's directory, e.g. `rekor-v1-prod`.
fn bundle_kind(path: &std::path::Path) -> String {
    file_name(path.parent().unwrap())
}

#[test]
fn every_trusted_root_log_id_is_derived_from_its_key() {
    for (root, logs) in trusted_roots() {
        for log in &logs {
            assert_eq!(log_id_of(&log.key), log.log_id, "{root}: {}", log.base_url);
            assert_eq!(log.log_id.len(), 32);
            assert_eq!(Some(log.key.name()), url_host(&log.base_url));
            // Ed25519 log IDs start with the note key ID.
            if log.key.signature_type() == SignatureType::Ed25519 {
                assert_eq!(log.log_id[..4], log.key.key_id().to_be_bytes());
            }
        }
    }
}

#[test]
fn trusted_root_logs_have_the_vkeys_of_vkeys_txt() {
    let vkeys: BTreeMap<String, String> = log_keys()
        .into_iter()
        .map(|k| (k.name().to_owned(), k.to_vkey()))
        .collect();
    for (root, logs) in trusted_roots() {
        for log in &logs {
            assert_eq!(
                vkeys.get(log.key.name()),
                Some(&log.key.to_vkey()),
                "{root}: {}",
                log.base_url
            );
        }
    }
}

#[test]
fn every_bundle_verifies_with_every_trusted_root_that_holds_its_log() {
    let roots = trusted_roots();
    let mut verified_per_root: BTreeMap<String, usize> =
        roots.iter().map(|(name, _)| (name.clone(), 0)).collect();
    let all = bundles();
    let kinds: BTreeSet<String> = all.iter().map(|(p, _)| bundle_kind(p)).collect();
    for kind in [
        "rekor-v1-prod",
        "rekor-v1-staging",
        "rekor-v2-prod",
        "rekor-v2-staging",
    ] {
        assert!(kinds.contains(kind), "no bundle in {kind}");
    }
    for (path, entries) in &all {
        let kind = bundle_kind(path);
        assert!(!entries.is_empty());
        for entry in entries {
            let mut verified_by = 0;
            for (root, logs) in &roots {
                if !logs.iter().any(|log| log.log_id == entry.log_id) {
                    continue;
                }
                let verified = verify_entry(entry, logs)
                    .unwrap_or_else(|e| panic!("{} with {root}: {e}", rel(path)));
                verified_by += 1;
                *verified_per_root.get_mut(root).unwrap() += 1;
                assert_eq!(verified.leaf_index, entry.inclusion_proof.log_index);
                assert_eq!(verified.log_index, entry.log_index);
                assert_eq!(verified.leaf_hash, entry.leaf_hash());
                assert_eq!(verified.checkpoint.size(), entry.inclusion_proof.tree_size);
                // Prod bundles are from sigstore.dev logs, staging from sigstage.dev;
                // v1 bundles from sharded P-256 logs, v2 from Ed25519 tile logs.
                let host = url_host(&verified.log_base_url).unwrap();
                let log = logs.iter().find(|l| l.log_id == entry.log_id).unwrap();
                if kind.ends_with("-prod") {
                    assert!(host.ends_with(".sigstore.dev"), "{}: {host}", rel(path));
                    assert!(
                        root.starts_with("prod."),
                        "{} verified by {root}",
                        rel(path)
                    );
                } else {
                    assert!(host.ends_with(".sigstage.dev"), "{}: {host}", rel(path));
                    assert!(
                        !root.starts_with("prod."),
                        "{} verified by {root}",
                        rel(path)
                    );
                }
                if kind.starts_with("rekor-v1") {
                    assert_eq!(log.key.signature_type(), SignatureType::EcdsaP256);
                    assert!(
                        verified
                            .checkpoint
                            .origin()
                            .starts_with(&format!("{host} - "))
                    );
                } else {
                    assert_eq!(log.key.signature_type(), SignatureType::Ed25519);
                    assert_eq!(verified.checkpoint.origin(), host);
                    // No sharding on v2: the entry index is the leaf index.
                    assert_eq!(entry.log_index, entry.inclusion_proof.log_index);
                }
                // The embedded checkpoint re-serializes byte for byte.
                let checkpoint = &entry.inclusion_proof.checkpoint;
                assert_eq!(
                    parse_note(checkpoint.as_bytes()).unwrap().to_bytes(),
                    checkpoint.as_bytes()
                );
            }
            assert!(
                verified_by >= 1,
                "{}: no trusted root holds its log",
                rel(path)
            );
        }
    }
    for (root, count) in &verified_per_root {
        assert!(*count >= 1, "trusted root {root} verified no bundle");
    }
}

/// Entries paired with a trusted root holding their log.
fn bundle_cases() -> Vec<(String, TransparencyLogEntry, Vec<TrustedLog>)> {
    let roots = trusted_roots();
    let mut cases = Vec::new();
    for (path, entries) in bundles() {
        for entry in entries {
            let (_, logs) = roots
                .iter()
                .find(|(_, logs)| logs.iter().any(|l| l.log_id == entry.log_id))
                .unwrap();
            cases.push((rel(&path), entry, logs.clone()));
        }
    }
    cases
}

#[test]
fn bundle_with_tampered_body_is_rejected() {
    for (name, entry, logs) in bundle_cases() {
        for index in [
            0,
            entry.canonicalized_body.len() / 2,
            entry.canonicalized_body.len() - 1,
        ] {
            let mut bad = entry.clone();
            bad.canonicalized_body[index] ^= 0x01;
            assert!(
                matches!(
                    verify_entry(&bad, &logs),
                    Err(Error::InclusionProofInvalid { .. })
                ),
                "{name} byte {index}"
            );
        }
    }
}

#[test]
fn bundle_with_tampered_proof_hash_is_rejected() {
    for (name, entry, logs) in bundle_cases() {
        assert!(!entry.inclusion_proof.hashes.is_empty(), "{name}");
        for index in 0..entry.inclusion_proof.hashes.len() {
            let mut bad = entry.clone();
            bad.inclusion_proof.hashes[index].0[7] ^= 0x80;
            assert!(
                matches!(
                    verify_entry(&bad, &logs),
                    Err(Error::InclusionProofInvalid { .. })
                ),
                "{name} hash {index}"
            );
        }
        // Dropping or adding a proof hash fails too.
        let mut bad = entry.clone();
        bad.inclusion_proof.hashes.pop();
        assert!(verify_entry(&bad, &logs).is_err(), "{name}");
        let mut bad = entry.clone();
        bad.inclusion_proof.hashes.push(Hash([0; 32]));
        assert!(verify_entry(&bad, &logs).is_err(), "{name}");
    }
}

#[test]
fn bundle_with_tampered_checkpoint_signature_is_rejected() {
    for (name, entry, logs) in bundle_cases() {
        let note = parse_note(entry.inclusion_proof.checkpoint.as_bytes()).unwrap();
        let signature = &note.signatures()[0];
        let mut raw = signature.signature().to_vec();
        let middle = raw.len() / 2;
        raw[middle] ^= 0x01;
        let mut signatures = note.signatures().to_vec();
        signatures[0] = NoteSignature::new(signature.key_name(), signature.key_id(), raw).unwrap();
        let mut bad = entry.clone();
        bad.inclusion_proof.checkpoint =
            String::from_utf8(Note::new(note.text(), signatures).unwrap().to_bytes()).unwrap();
        assert!(
            matches!(
                verify_entry(&bad, &logs),
                Err(Error::InvalidSignature { .. })
            ),
            "{name}"
        );
    }
}

#[test]
fn bundle_with_changed_tree_size_or_root_is_rejected() {
    for (name, entry, logs) in bundle_cases() {
        for size in [
            entry.inclusion_proof.tree_size + 1,
            entry.inclusion_proof.tree_size - 1,
        ] {
            let mut bad = entry.clone();
            bad.inclusion_proof.tree_size = size;
            assert!(
                matches!(
                    verify_entry(&bad, &logs),
                    Err(Error::CheckpointProofMismatch { .. })
                ),
                "{name} size {size}"
            );
        }
        let mut bad = entry.clone();
        bad.inclusion_proof.root_hash.0[0] ^= 0x01;
        assert!(
            matches!(
                verify_entry(&bad, &logs),
                Err(Error::CheckpointProofMismatch { .. })
            ),
            "{name}"
        );
    }
}

#[test]
fn bundle_with_changed_leaf_index_is_rejected() {
    for (name, entry, logs) in bundle_cases() {
        let index = entry.inclusion_proof.log_index;
        let size = entry.inclusion_proof.tree_size;
        for changed in [index ^ 1, index.wrapping_sub(1), index + 1, size, 0] {
            if changed == index {
                continue;
            }
            let mut bad = entry.clone();
            bad.inclusion_proof.log_index = changed;
            assert!(
                matches!(
                    verify_entry(&bad, &logs),
                    Err(Error::InclusionProofInvalid { .. }
                        | Error::ProofTooLong { .. }
                        | Error::CheckpointProofMismatch { .. })
                ),
                "{name} leaf index {changed}"
            );
        }
    }
}

#[test]
fn entry_log_index_that_cannot_hold_its_leaf_index_is_rejected() {
    let mut checked = 0;
    for (name, entry, logs) in bundle_cases() {
        let sharded = entry.inclusion_proof.checkpoint.contains(" - ");
        let mut bad = entry.clone();
        // A tiles log has one tree, so its log index is the leaf index; a Rekor v1
        // virtual index can only be at or after the shard-local one.
        bad.log_index = if sharded {
            entry.inclusion_proof.log_index - 1
        } else {
            entry.log_index + 1
        };
        assert!(
            matches!(
                verify_entry(&bad, &logs),
                Err(Error::CheckpointProofMismatch { .. })
            ),
            "{name}"
        );
        checked += 1;
    }
    assert!(checked >= 5);
}

#[test]
fn bundle_against_trusted_root_without_its_log_is_unknown_log() {
    let roots = trusted_roots();
    let mut checked = 0;
    for (path, entries) in bundles() {
        for entry in &entries {
            for (root, logs) in &roots {
                if logs.iter().any(|l| l.log_id == entry.log_id) {
                    continue;
                }
                checked += 1;
                assert_eq!(
                    verify_entry(entry, logs).unwrap_err(),
                    Error::UnknownLog {
                        log_id: BASE64.encode(&entry.log_id)
                    },
                    "{} with {root}",
                    rel(&path)
                );
            }
            // And with no trusted log at all.
            assert!(matches!(
                verify_entry(entry, &[]),
                Err(Error::UnknownLog { .. })
            ));
        }
    }
    assert!(checked >= 5);
}

#[test]
fn bundle_entry_under_another_logs_key_is_rejected() {
    // A trusted log whose log ID is this entry's but whose key is another log's:
    // the checkpoint is not signed by that key.
    let roots = trusted_roots();
    let all_logs: Vec<TrustedLog> = roots.iter().flat_map(|(_, l)| l.clone()).collect();
    for (name, entry, logs) in bundle_cases() {
        let own = logs.iter().find(|l| l.log_id == entry.log_id).unwrap();
        let other = all_logs
            .iter()
            .find(|l| l.key.to_vkey() != own.key.to_vkey())
            .unwrap();
        let impostor = TrustedLog {
            base_url: own.base_url.clone(),
            log_id: own.log_id.clone(),
            key: other.key.clone(),
        };
        assert!(verify_entry(&entry, &[impostor]).is_err(), "{name}");
    }
}

#[test]
fn bare_transparency_log_entry_json_parses_and_verifies_like_the_bundle() {
    let roots = trusted_roots();
    for (path, entries) in bundles() {
        let json = read_json(&path);
        let tlog_entries = json["verificationMaterial"]["tlogEntries"]
            .as_array()
            .unwrap();
        assert_eq!(tlog_entries.len(), entries.len());
        for (raw, from_bundle) in tlog_entries.iter().zip(&entries) {
            let bytes = serde_json::to_vec(raw).unwrap();
            let bare = parse_transparency_log_entry(&bytes).unwrap();
            assert_eq!(&bare, from_bundle, "{}", rel(&path));
            assert_eq!(parse_entries(&bytes).unwrap(), vec![bare.clone()]);
            let (_, logs) = roots
                .iter()
                .find(|(_, logs)| logs.iter().any(|l| l.log_id == bare.log_id))
                .unwrap();
            verify_entry(&bare, logs).unwrap();
            // The bare entry is not a bundle.
            assert!(parse_bundle_entries(&bytes).is_err());
        }
        // parse_entries on the whole bundle gives the same entries.
        assert_eq!(parse_entries(&read(&path)).unwrap(), entries);
    }
}

#[test]
fn bare_transparency_log_entry_without_proof_or_body_is_rejected() {
    let (path, _) = bundles().into_iter().next().unwrap();
    let json = read_json(&path);
    let raw = &json["verificationMaterial"]["tlogEntries"][0];
    for (remove_from, key) in [
        (None, "inclusionProof"),
        (None, "canonicalizedBody"),
        (Some("inclusionProof"), "checkpoint"),
    ] {
        let mut value = raw.clone();
        let object = match remove_from {
            Some(parent) => value[parent].as_object_mut().unwrap(),
            None => value.as_object_mut().unwrap(),
        };
        assert!(object.remove(key).is_some(), "{key}");
        let bytes = serde_json::to_vec(&value).unwrap();
        assert!(
            matches!(
                parse_transparency_log_entry(&bytes),
                Err(Error::InclusionProofInvalid { .. })
            ),
            "without {key}"
        );
    }
    // A non-canonical logIndex string is refused.
    let mut value = raw.clone();
    value["logIndex"] = serde_json::Value::String("0123".into());
    let bytes = serde_json::to_vec(&value).unwrap();
    assert!(matches!(
        parse_transparency_log_entry(&bytes),
        Err(Error::MalformedJson { .. })
    ));
}

// ---------------------------------------------------------------------------
// 6. rekor/trusted_root signing configs
// ---------------------------------------------------------------------------

#[test]
fn every_signing_config_rekor_url_has_a_tlog_of_the_right_key_type() {
    let roots = trusted_roots();
    let root =
        |name: &str| -> &Vec<TrustedLog> { &roots.iter().find(|(n, _)| n == name).unwrap().1 };
    let configs: Vec<PathBuf> = files_in("rekor/trusted_root", 8)
        .into_iter()
        .filter(|p| file_name(p).contains("signing_config") && file_name(p).ends_with(".json"))
        .collect();
    assert!(configs.len() >= 4, "only {} signing configs", configs.len());
    let mut unmatched = BTreeSet::new();
    let mut matched = 0;
    for path in &configs {
        let name = file_name(path);
        let services = parse_signing_config(&read(path)).unwrap();
        assert!(!services.is_empty(), "{name}");
        let logs = if name.starts_with("prod.") {
            root("prod.root-signing.trusted_root.json")
        } else if name.starts_with("staging.") {
            root("staging.root-signing-staging.trusted_root.json")
        } else {
            panic!("{name}: neither prod nor staging");
        };
        for service in &services {
            assert!(matches!(service.major_api_version, 1 | 2), "{name}");
            let Some(log) = logs.iter().find(|l| l.base_url == service.url) else {
                unmatched.insert((name.clone(), service.url.clone()));
                continue;
            };
            matched += 1;
            let expected = match service.major_api_version {
                2 => SignatureType::Ed25519,
                _ => SignatureType::EcdsaP256,
            };
            assert_eq!(
                log.key.signature_type(),
                expected,
                "{name}: {}",
                service.url
            );
        }
    }
    assert!(matched >= 8, "only {matched} Rekor URLs matched a tlog");
    // Known gap in the data: the newest staging signing config routes Rekor v2
    // writes to `global.rekor.sigstage.dev` (valid from 2026-06-12), a front end
    // that has no tlog entry of its own in the staging trusted root (its shards
    // are listed under their own hosts, e.g. log2026-1.us-east4.rekor.sigstage.dev).
    // Any other signing-config URL without a tlog fails this test.
    assert_eq!(
        unmatched,
        BTreeSet::from([(
            "staging.signing_config.v0.2.json".to_owned(),
            "https://global.rekor.sigstage.dev".to_owned()
        )])
    );
}

#[test]
fn signing_config_with_unknown_rekor_major_version_is_rejected() {
    let path = data_path("rekor/trusted_root/prod.signing_config.v0.2.json");
    let mut value = read_json(&path);
    value["rekorTlogUrls"][0]["majorApiVersion"] = serde_json::json!(3);
    assert!(matches!(
        parse_signing_config(&serde_json::to_vec(&value).unwrap()),
        Err(Error::MalformedJson { .. })
    ));
    // A trusted root is not a signing config.
    let root = read(&data_path(
        "rekor/trusted_root/prod.root-signing.trusted_root.json",
    ));
    assert!(parse_signing_config(&root).is_err());
    assert!(parse_trusted_root(&read(&path)).is_err());
}

// ---------------------------------------------------------------------------
// 7. rekor/loginfo
// ---------------------------------------------------------------------------

fn sigstage_key() -> VerifierKey {
    log_keys()
        .into_iter()
        .find(|k| k.name() == "rekor.sigstage.dev")
        .unwrap()
}

fn loginfo(name: &str) -> rekor::LogInfo {
    parse_log_info(&read(&data_path(&format!("rekor/loginfo/{name}")))).unwrap()
}

fn derived_shards(log: &str) -> Vec<serde_json::Value> {
    read_json(&data_path("rekor/loginfo/rekor-v1-shards.derived.json"))[log]
        .as_array()
        .unwrap()
        .clone()
}

fn json_u64(value: &serde_json::Value) -> u64 {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
        .unwrap()
}

#[test]
fn every_shard_of_both_log_infos_verifies_with_the_sigstage_key() {
    let key = sigstage_key();
    for name in [
        "rekor-v1-staging.GET-api-v1-log.old.json",
        "rekor-v1-staging.GET-api-v1-log.new.json",
    ] {
        let info = loginfo(name);
        assert_eq!(info.inactive.len(), 3, "{name}");
        for shard in info.shards() {
            let verified = shard
                .verify(std::slice::from_ref(&key))
                .unwrap_or_else(|e| panic!("{name} shard {}: {e}", shard.tree_id));
            assert_eq!(
                verified.checkpoint().origin(),
                format!("rekor.sigstage.dev - {}", shard.tree_id)
            );
            // A shard reporting another size or root than its signed tree head fails.
            let mut wrong = shard.clone();
            wrong.tree_size += 1;
            assert!(matches!(
                wrong.verify(std::slice::from_ref(&key)),
                Err(Error::CheckpointProofMismatch { .. })
            ));
            let mut wrong = shard.clone();
            wrong.root_hash.0[31] ^= 1;
            assert!(wrong.verify(std::slice::from_ref(&key)).is_err());
            let mut wrong = shard.clone();
            wrong.tree_id += 1;
            assert!(matches!(
                wrong.verify(std::slice::from_ref(&key)),
                Err(Error::OriginMismatch { .. })
            ));
            // The production key does not verify staging shards.
            let prod = log_keys()
                .into_iter()
                .find(|k| k.name() == "rekor.sigstore.dev")
                .unwrap();
            assert!(shard.verify(&[prod]).is_err());
        }
    }
}

#[test]
fn loginfo_active_signed_tree_heads_are_the_valid_checkpoint_files() {
    for (name, size) in [
        ("rekor-v1-staging.GET-api-v1-log.old.json", 1352760),
        ("rekor-v1-staging.GET-api-v1-log.new.json", 1352764),
    ] {
        let info = loginfo(name);
        assert_eq!(info.active.tree_size, size);
        let file = valid_checkpoints()
            .into_iter()
            .find(|p| {
                file_name(p).starts_with(&format!(
                    "rekor.sigstage.dev_-_{}.{size}.",
                    info.active.tree_id
                ))
            })
            .unwrap();
        assert_eq!(info.active.signed_tree_head.as_bytes(), read(&file));
    }
}

#[test]
fn shard_table_offsets_match_the_derived_sigstage_offsets() {
    let derived = derived_shards("rekor.sigstage.dev");
    for name in [
        "rekor-v1-staging.GET-api-v1-log.old.json",
        "rekor-v1-staging.GET-api-v1-log.new.json",
    ] {
        let table = loginfo(name).shard_table().unwrap();
        assert_eq!(table.shards().len(), derived.len(), "{name}");
        for (shard, expected) in table.shards().iter().zip(&derived) {
            assert_eq!(
                shard.tree_id.to_string(),
                expected["treeID"].as_str().unwrap()
            );
            assert_eq!(
                shard.offset,
                json_u64(&expected["virtual_offset"]),
                "{name}"
            );
            assert_eq!(
                shard.size,
                expected.get("final_size").map(json_u64),
                "{name}"
            );
            assert_eq!(
                format!("{:016x}", shard.tree_id),
                expected["treeID_hex16"].as_str().unwrap()
            );
        }
    }
}

#[test]
fn rekor_consistency_proof_verifies_between_checkpoints_not_against_server_root() {
    let key = sigstage_key();
    let old = loginfo("rekor-v1-staging.GET-api-v1-log.old.json").active;
    let new = loginfo("rekor-v1-staging.GET-api-v1-log.new.json").active;
    let old_cp = old.verify(std::slice::from_ref(&key)).unwrap();
    let new_cp = new.verify(std::slice::from_ref(&key)).unwrap();
    assert_eq!(old.tree_id, new.tree_id);
    let (old_size, new_size) = (old_cp.checkpoint().size(), new_cp.checkpoint().size());
    assert_eq!((old_size, new_size), (1352760, 1352764));

    let path = data_path(
        "rekor/loginfo/rekor-v1-staging.GET-api-v1-log-proof.firstSize1352760.lastSize1352764.json",
    );
    let bytes = read(&path);
    let response = parse_consistency_proof_response(&bytes).unwrap();
    assert_eq!(parse_proof_file(&bytes).unwrap(), response.hashes);
    assert_eq!(response.hashes.len(), 9);
    // The same proof as tlog-witness base64 lines parses to the same hashes.
    let lines: String = response
        .hashes
        .iter()
        .map(|h| format!("{}\n", h.to_base64()))
        .collect();
    assert_eq!(parse_proof_file(lines.as_bytes()).unwrap(), response.hashes);

    verify_consistency(
        old_size,
        new_size,
        old_cp.checkpoint().root_hash(),
        new_cp.checkpoint().root_hash(),
        &response.hashes,
    )
    .unwrap();

    // The trap: the response's rootHash is the server's newest root, not the root
    // at lastSize, so it cannot be what makes the proof verify.
    assert_ne!(
        response.server_newest_root,
        *new_cp.checkpoint().root_hash()
    );
    assert_ne!(
        response.server_newest_root,
        *old_cp.checkpoint().root_hash()
    );
    assert!(
        verify_consistency(
            old_size,
            new_size,
            old_cp.checkpoint().root_hash(),
            &response.server_newest_root,
            &response.hashes,
        )
        .is_err()
    );
    // Neither does it verify with swapped roots or changed sizes...
    let (old_root, new_root) = (
        old_cp.checkpoint().root_hash(),
        new_cp.checkpoint().root_hash(),
    );
    assert!(verify_consistency(old_size, new_size, new_root, old_root, &response.hashes).is_err());
    for (m, n) in [
        (old_size + 1, new_size),
        (old_size - 1, new_size),
        (old_size, new_size * 2),
        (old_size, new_size + 8),
        (new_size, new_size),
    ] {
        assert!(
            verify_consistency(m, n, old_root, new_root, &response.hashes).is_err(),
            "{m} -> {n}"
        );
    }
    // ...but note that the proof alone does not pin the new size: 1352760 is a
    // multiple of 8 and every new size from 1352761 to 1352768 walks the same
    // path (the first hash is the opaque root of the new leaves in that 8-leaf
    // block), in RFC 9162 and in Go's transparency-dev/merkle alike. The sizes
    // are authenticated by the signed checkpoints, never by the proof.
    for n in [1352761, 1352765, 1352768] {
        assert!(verify_consistency(old_size, n, old_root, new_root, &response.hashes).is_ok());
    }
    assert!(verify_consistency(old_size, 1352769, old_root, new_root, &response.hashes).is_err());
    for index in 0..response.hashes.len() {
        let mut hashes = response.hashes.clone();
        hashes[index].0[0] ^= 1;
        assert!(
            verify_consistency(
                old_size,
                new_size,
                old_cp.checkpoint().root_hash(),
                new_cp.checkpoint().root_hash(),
                &hashes,
            )
            .is_err(),
            "hash {index}"
        );
    }
}

#[test]
fn rekor_log_entry_1688_is_included_in_shard_108574341321668964_at_1227() {
    let key = sigstage_key();
    let path = data_path("rekor/loginfo/rekor-v1-staging.log-entry.logIndex1688.json");
    let entry = parse_log_entry(&read(&path)).unwrap();
    assert_eq!(entry.uuid, None);
    assert_eq!(entry.log_index, 1688);
    assert_eq!(entry.log_id, hex::encode(log_id_of(&key)));
    let verified = entry.verify_inclusion(std::slice::from_ref(&key)).unwrap();
    assert_eq!(
        verified.checkpoint().origin(),
        "rekor.sigstage.dev - 108574341321668964"
    );
    assert_eq!(entry.shard_offset(), Some(461));

    let info = loginfo("rekor-v1-staging.GET-api-v1-log.new.json");
    let (shard, local) = info.shard_table().unwrap().locate(1688).unwrap();
    assert_eq!(shard.tree_id, 108574341321668964);
    assert_eq!(local, 1227);
    assert_eq!(local, entry.inclusion_proof.as_ref().unwrap().log_index);
    assert_eq!(shard.offset, entry.shard_offset().unwrap());
    // The proof's root is the frozen shard's final root in the log info.
    let frozen = info.shards().find(|s| s.tree_id == shard.tree_id).unwrap();
    let proof = entry.inclusion_proof.as_ref().unwrap();
    assert_eq!(proof.root_hash, frozen.root_hash);
    assert_eq!(proof.tree_size, frozen.tree_size);

    // Keyed by its UUID (tree ID hex + leaf hash hex), as the API returns it.
    let uuid = format!("{:016x}{}", shard.tree_id, entry.leaf_hash().to_hex());
    let raw = read_json(&path);
    let keyed = serde_json::to_vec(&serde_json::json!({ uuid.clone(): raw })).unwrap();
    let keyed_entry = parse_log_entry(&keyed).unwrap();
    assert_eq!(keyed_entry.uuid.as_deref(), Some(uuid.as_str()));
    keyed_entry
        .verify_inclusion(std::slice::from_ref(&key))
        .unwrap();
    // A UUID naming another leaf is refused.
    let wrong_uuid = format!("{:016x}{}", shard.tree_id, Hash([0; 32]).to_hex());
    let keyed = serde_json::to_vec(&serde_json::json!({ wrong_uuid: read_json(&path) })).unwrap();
    assert!(matches!(
        parse_log_entry(&keyed)
            .unwrap()
            .verify_inclusion(std::slice::from_ref(&key)),
        Err(Error::InclusionProofInvalid { .. })
    ));

    // A tampered body, or the wrong log key, is refused.
    let mut bad = entry.clone();
    bad.body[10] ^= 1;
    assert!(matches!(
        bad.verify_inclusion(std::slice::from_ref(&key)),
        Err(Error::InclusionProofInvalid { .. })
    ));
    let prod = log_keys()
        .into_iter()
        .find(|k| k.name() == "rekor.sigstore.dev")
        .unwrap();
    assert!(entry.verify_inclusion(&[prod]).is_err());
}

#[test]
fn derived_shard_offsets_agree_with_the_rekor_v1_bundles() {
    let mut checked = 0;
    for (path, entries) in bundles() {
        let kind = bundle_kind(&path);
        let log = match kind.as_str() {
            "rekor-v1-prod" => "rekor.sigstore.dev",
            "rekor-v1-staging" => "rekor.sigstage.dev",
            _ => continue,
        };
        let derived = derived_shards(log);
        // Offsets are cumulative sums of the frozen shards' final sizes.
        let mut offset = 0;
        for shard in &derived {
            assert_eq!(json_u64(&shard["virtual_offset"]), offset, "{log}");
            if let Some(size) = shard.get("final_size") {
                offset += json_u64(size);
            }
        }
        for entry in entries {
            let virtual_offset = entry.log_index - entry.inclusion_proof.log_index;
            let checkpoint = parse_checkpoint_text(
                parse_note(entry.inclusion_proof.checkpoint.as_bytes())
                    .unwrap()
                    .text(),
            )
            .unwrap();
            let tree_id = checkpoint.origin().rsplit(" - ").next().unwrap();
            let shard = derived
                .iter()
                .find(|s| s["treeID"].as_str() == Some(tree_id))
                .unwrap_or_else(|| panic!("{}: shard {tree_id} not derived", rel(&path)));
            assert_eq!(
                json_u64(&shard["virtual_offset"]),
                virtual_offset,
                "{}",
                rel(&path)
            );
            if let Some(size) = shard.get("final_size") {
                assert!(entry.inclusion_proof.tree_size <= json_u64(size));
            }
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} Rekor v1 bundle entries");
}

// ---------------------------------------------------------------------------
// 8. witness-lists
// ---------------------------------------------------------------------------

/// One log of a `logs/v0` list.
#[derive(Debug)]
struct ListedLog {
    vkey: String,
    origin: Option<String>,
    qpd: u64,
    contact: String,
}

/// Parses the log-list format of `witness-network.log-list-format.md`.
fn parse_log_list(text: &str) -> Result<Vec<ListedLog>, String> {
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .peekable();
    if lines.next() != Some("logs/v0") {
        return Err("list does not start with logs/v0".into());
    }
    let mut logs = Vec::new();
    while let Some(line) = lines.next() {
        let vkey = line
            .strip_prefix("vkey ")
            .ok_or(format!("expected vkey, got {line:?}"))?;
        let mut next = lines.next().ok_or("list ends after vkey")?;
        let origin = match next.strip_prefix("origin ") {
            Some(origin) => {
                next = lines.next().ok_or("list ends after origin")?;
                Some(origin.to_owned())
            }
            None => None,
        };
        let qpd = next
            .strip_prefix("qpd ")
            .ok_or(format!("expected qpd, got {next:?}"))?;
        if qpd.starts_with('0') || !qpd.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("non-canonical qpd {qpd:?}"));
        }
        let qpd: u64 = qpd.parse().map_err(|_| "qpd is not a number")?;
        if !(1..1 << 31).contains(&qpd) {
            return Err(format!("qpd {qpd} out of range"));
        }
        let contact = lines
            .next()
            .and_then(|l| l.strip_prefix("contact "))
            .ok_or("expected contact")?;
        logs.push(ListedLog {
            vkey: vkey.trim().to_owned(),
            origin,
            qpd,
            contact: contact.to_owned(),
        });
    }
    Ok(logs)
}

fn witness_list_files() -> Vec<PathBuf> {
    files_in("witness-lists", 6)
}

#[test]
fn log_list_format_example_parses_with_placeholder_vkeys() {
    let path = data_path("witness-lists/witness-network.log-list-format.md");
    let md = read_string(&path);
    // The example is the indented block under "## Example".
    let example: String = md
        .split("## Example")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix("    "))
        .map(|line| format!("{line}\n"))
        .collect();
    let logs = parse_log_list(&example).unwrap();
    assert_eq!(logs.len(), 2);
    assert_eq!(logs[0].origin, None);
    assert_eq!(logs[0].qpd, 86400);
    assert_eq!(
        logs[1].origin.as_deref(),
        Some("something-not-equal-to-vkey-keyname")
    );
    assert_eq!(logs[1].contact, "sysadmin (at) bar.org");
    // The example vkeys are placeholders: a 6-digit key ID, and a key ID that is
    // not the key's.
    for log in &logs {
        assert!(
            matches!(
                VerifierKey::parse_vkey(&log.vkey),
                Err(Error::MalformedKey { .. })
            ),
            "{}",
            log.vkey
        );
    }
    // Out-of-order and non-canonical lines are refused by this parser.
    assert!(parse_log_list("logs/v0\nqpd 1\n").is_err());
    assert!(parse_log_list("logs/v0\nvkey a+00000000+AA==\nqpd 01\ncontact x\n").is_err());
    assert!(parse_log_list("logs/v1\n").is_err());
}

#[test]
fn witness_network_log_lists_have_valid_ed25519_vkeys() {
    let lists: Vec<PathBuf> = witness_list_files()
        .into_iter()
        .filter(|p| file_name(p).starts_with("witness-network.") && file_name(p).ends_with(".1"))
        .collect();
    assert!(lists.len() >= 2);
    for path in lists {
        let logs =
            parse_log_list(&read_string(&path)).unwrap_or_else(|e| panic!("{}: {e}", rel(&path)));
        assert!(logs.len() >= 5, "{}", rel(&path));
        for log in &logs {
            let key = VerifierKey::parse_vkey(&log.vkey)
                .unwrap_or_else(|e| panic!("{}: {}: {e}", rel(&path), log.vkey));
            // "Currently, only ed25519 alg1 type keys are permitted."
            assert_eq!(key.signature_type(), SignatureType::Ed25519, "{}", log.vkey);
            assert_eq!(key.to_vkey(), log.vkey);
            assert!(!log.contact.is_empty());
        }
    }
}

/// Every vkey-looking token in every witness list file (comments included),
/// parsed: supported types must parse, anything else must fail as an
/// unsupported type.
#[test]
fn every_vkey_in_the_witness_lists_parses() {
    let mut total = 0;
    let mut unsupported = BTreeSet::new();
    for path in witness_list_files() {
        if file_name(&path).ends_with(".md") {
            continue; // placeholders, see log_list_format_example_parses_with_placeholder_vkeys
        }
        let text = read_string(&path);
        let tokens = vkey_tokens(&text);
        // Every `vkey` line of a log list (commented-out ones too) was found.
        if file_name(&path).ends_with(".1") {
            let vkey_lines = text
                .lines()
                .filter(|l| l.trim_start_matches(['#', ' ']).starts_with("vkey "))
                .count();
            assert_eq!(tokens.len(), vkey_lines, "{}", rel(&path));
        }
        for vkey in &tokens {
            match VerifierKey::parse_vkey(vkey) {
                Ok(key) => assert_eq!(key.to_vkey(), *vkey, "{}", rel(&path)),
                Err(Error::UnsupportedKeyType { type_byte }) => {
                    unsupported.insert((vkey.clone(), type_byte));
                }
                Err(e) => panic!("{}: {vkey}: {e:?}", rel(&path)),
            }
        }
        let expected_min = match file_name(&path).as_str() {
            name if name.starts_with("rekor-tiles.") => 1,
            _ => 5,
        };
        assert!(
            tokens.len() >= expected_min,
            "{}: {} vkeys",
            rel(&path),
            tokens.len()
        );
        total += tokens.len();
    }
    assert!(total >= 35, "only {total} vkeys");
    // Every key type in the lists (0x01 Ed25519, 0x02 ECDSA) is supported.
    assert_eq!(unsupported, BTreeSet::new());
}

/// (origin, vkey) pairs of the omniwitness logs.yaml (`- Origin:` then `PublicKey:`).
fn omniwitness_logs(text: &str) -> Vec<(String, String)> {
    let mut logs = Vec::new();
    let mut origin: Option<String> = None;
    for line in text.lines() {
        let line = line.trim().trim_start_matches("- ");
        if let Some(value) = line.strip_prefix("Origin:") {
            origin = Some(value.trim().to_owned());
        } else if let Some(value) = line.strip_prefix("PublicKey:") {
            logs.push((origin.take().unwrap(), value.trim().to_owned()));
        }
    }
    logs
}

#[test]
fn omniwitness_log_origins_match_their_key_types() {
    let path = data_path("witness-lists/transparency-dev-witness.omniwitness.logs.yaml");
    let text = read_string(&path);
    let logs = omniwitness_logs(&text);
    assert_eq!(logs.len(), text.matches("PublicKey:").count());
    assert!(logs.len() >= 12);
    let ecdsa_declared = text.matches("PublicKeyType: ecdsa").count();
    let mut ecdsa = 0;
    for (origin, vkey) in &logs {
        let key = VerifierKey::parse_vkey(vkey).unwrap_or_else(|e| panic!("{origin}: {e}"));
        if key.signature_type() == SignatureType::EcdsaP256 {
            ecdsa += 1;
        }
        if origin.starts_with("rekor.") {
            assert_eq!(key_name_for_origin(origin), key.name());
        }
    }
    assert_eq!(
        ecdsa, ecdsa_declared,
        "PublicKeyType: ecdsa vs type 0x02 keys"
    );
}

#[test]
fn rekor_logs_in_the_witness_lists_have_the_vkeys_of_vkeys_txt() {
    let known: BTreeMap<String, String> = vkeys_txt()
        .into_iter()
        .map(|l| (l.key.name().to_owned(), l.vkey))
        .collect();
    let mut rekor_logs: Vec<(String, String, String)> = Vec::new(); // file, origin, vkey
    for path in witness_list_files() {
        let name = file_name(&path);
        let text = read_string(&path);
        if name.starts_with("witness-network.") && name.ends_with(".1") {
            for log in parse_log_list(&text).unwrap() {
                let origin = log
                    .origin
                    .unwrap_or_else(|| log.vkey.split('+').next().unwrap().to_owned());
                rekor_logs.push((name.clone(), origin, log.vkey));
            }
        } else if name.ends_with(".yaml") {
            rekor_logs.extend(
                omniwitness_logs(&text)
                    .into_iter()
                    .map(|(origin, vkey)| (name.clone(), origin, vkey)),
            );
        }
    }
    rekor_logs.retain(|(_, origin, _)| origin.contains("rekor"));
    let mut per_file: BTreeMap<&str, usize> = BTreeMap::new();
    for (file, origin, vkey) in &rekor_logs {
        let key_name = key_name_for_origin(origin);
        assert_eq!(
            known.get(key_name),
            Some(vkey),
            "{file}: Rekor log {origin:?} has another vkey than vkeys.txt"
        );
        *per_file.entry(file).or_default() += 1;
    }
    assert_eq!(
        per_file,
        BTreeMap::from([
            ("rekor-tiles.tests.witness.config.yaml", 1),
            ("transparency-dev-witness.omniwitness.logs.yaml", 4),
            ("witness-network.staging.log-list-100qps-40klogs.1", 1),
            ("witness-network.testing.log-list.1", 1),
        ])
    );
}

#[test]
fn rekor_tiles_witness_config_and_policy_name_the_vkeys_txt_log_and_witness() {
    let known: BTreeMap<String, String> = vkeys_txt()
        .into_iter()
        .map(|l| (l.key.name().to_owned(), l.vkey))
        .collect();
    let config = read_string(&data_path(
        "witness-lists/rekor-tiles.tests.witness.config.yaml",
    ));
    let policy = read_string(&data_path(
        "witness-lists/rekor-tiles.tests.witness.policy.yaml",
    ));
    // The config lists the rekor-local log.
    let logs = omniwitness_logs(&config);
    assert_eq!(logs.len(), 1);
    let (origin, vkey) = &logs[0];
    assert_eq!(origin, "rekor-local");
    assert_eq!(known.get("rekor-local"), Some(vkey));
    // The policy: `witness <name> <vkey> <url>` lines, then `quorum <name>`.
    let mut witnesses = BTreeMap::new();
    let mut quorum: Vec<&str> = Vec::new();
    for line in policy.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields[0] {
            "witness" => {
                assert_eq!(fields.len(), 4, "{line:?}");
                witnesses.insert(fields[1], fields[2]);
            }
            "quorum" => quorum.extend(fields[1..].iter().copied()),
            other => panic!("unknown policy line kind {other:?}"),
        }
    }
    assert_eq!(witnesses.len(), 1);
    for name in &quorum {
        assert!(
            witnesses.contains_key(name),
            "quorum names unknown witness {name}"
        );
    }
    assert!(!quorum.is_empty());
    for vkey in witnesses.values() {
        let witness = VerifierKey::parse_vkey(vkey).unwrap();
        // Published as a type 0x01 key, used as a cosignature/v1 key.
        assert_eq!(witness.signature_type(), SignatureType::Ed25519);
        assert_eq!(known.get(witness.name()).map(String::as_str), Some(*vkey));
        assert_eq!(
            witness.as_cosignature_v1().unwrap().signature_type(),
            SignatureType::CosignatureV1
        );
    }
}

// ---------------------------------------------------------------------------
// Coverage of the whole test data tree
// ---------------------------------------------------------------------------

#[test]
fn every_shared_testdata_file_is_covered_by_a_test() {
    // Each file must fall in a category that some test above enumerates; a file
    // added anywhere else (or with another extension) fails here until covered.
    let files = files_below("", "", 230);
    let mut per_category: BTreeMap<&str, usize> = BTreeMap::new();
    for path in &files {
        let relative = rel(path);
        let name = file_name(path);
        let category = if relative.starts_with("rekor/checkpoints/valid/")
            || relative.starts_with("rekor/checkpoints/invalid/")
        {
            "rekor/checkpoints"
        } else if relative == "rekor/keys/vkeys.txt"
            || (relative.starts_with("rekor/keys/") && name.ends_with(".pub.pem"))
        {
            "rekor/keys"
        } else if [
            "note/golang-mod-sumdb-note.vectors.json",
            "note/sum.golang.org.checkpoint.6476701.txt",
            "note/sum.golang.org.vkey.txt",
        ]
        .contains(&relative.as_str())
        {
            "note"
        } else if (relative.starts_with("merkle/transparency-dev-merkle-testdata/inclusion/")
            || relative.starts_with("merkle/transparency-dev-merkle-testdata/consistency/"))
            && name.ends_with(".json")
        {
            "merkle"
        } else if relative.starts_with("rekor/bundles/") && name.ends_with(".json") {
            "rekor/bundles"
        } else if relative.starts_with("rekor/trusted_root/")
            && name.ends_with(".json")
            && (name.contains("trusted_root") || name.contains("signing_config"))
        {
            "rekor/trusted_root"
        } else if [
            "rekor/loginfo/rekor-v1-shards.derived.json",
            "rekor/loginfo/rekor-v1-staging.GET-api-v1-log-proof.firstSize1352760.lastSize1352764.json",
            "rekor/loginfo/rekor-v1-staging.GET-api-v1-log.new.json",
            "rekor/loginfo/rekor-v1-staging.GET-api-v1-log.old.json",
            "rekor/loginfo/rekor-v1-staging.log-entry.logIndex1688.json",
        ]
        .contains(&relative.as_str())
        {
            "rekor/loginfo"
        } else if relative.starts_with("witness-lists/")
            && (name.ends_with(".md")
                || name.ends_with(".yaml")
                || (name.starts_with("witness-network.") && name.ends_with(".1")))
        {
            "witness-lists"
        } else {
            panic!("{relative} is not covered by any test");
        };
        *per_category.entry(category).or_default() += 1;
    }
    for (category, min) in [
        ("rekor/checkpoints", 7),
        ("rekor/keys", 9),
        ("note", 3),
        ("merkle", 190),
        ("rekor/bundles", 5),
        ("rekor/trusted_root", 8),
        ("rekor/loginfo", 5),
        ("witness-lists", 6),
    ] {
        let count = per_category.get(category).copied().unwrap_or(0);
        assert!(
            count >= min,
            "{category}: {count} files, expected at least {min}"
        );
    }
}
