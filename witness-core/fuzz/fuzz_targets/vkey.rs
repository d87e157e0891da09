//! Verifier keys (vkeys and PEM): a parsed vkey writes back as the input (up to
//! the case of the hex key ID, which Go's parser also accepts in either case),
//! re-parses to the same key, and verifying junk with it never panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use witness_core::note::{ML_DSA_44_SIGNATURE_SIZE, SignatureType, VerifierKey};

const TEXT: &str = "example.com/log\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";

fn same_key(a: &VerifierKey, b: &VerifierKey) {
    assert_eq!(a.name(), b.name());
    assert_eq!(a.key_id(), b.key_id());
    assert_eq!(a.signature_type(), b.signature_type());
    assert_eq!(a.public_key_material(), b.public_key_material());
}

/// Verifies signatures of every length the key's type checks against, built
/// from the input bytes: none may panic, and none may verify.
fn verify_junk(key: &VerifierKey, data: &[u8]) {
    let length = match key.signature_type() {
        SignatureType::Ed25519 => 64,
        SignatureType::EcdsaP256 => data.len(),
        SignatureType::CosignatureV1 => 8 + 64,
        SignatureType::MlDsa44Subtree => 8 + ML_DSA_44_SIGNATURE_SIZE,
        _ => data.len(),
    };
    let signature: Vec<u8> = data.iter().copied().cycle().take(length).collect();
    assert!(key.verify(TEXT, &signature).is_err(), "junk verified");
    assert!(key.verify(TEXT, data).is_err(), "input verified");
}

fn check_vkey(text: &str, data: &[u8]) {
    let Ok(key) = VerifierKey::parse_vkey(text) else {
        return;
    };
    let written = key.to_vkey();
    let input = text.trim_end_matches(['\r', '\n']);
    let (input_parts, written_parts): (Vec<&str>, Vec<&str>) = (
        input.splitn(3, '+').collect(),
        written.splitn(3, '+').collect(),
    );
    assert_eq!(input_parts[0], written_parts[0], "name");
    assert!(
        input_parts[1].eq_ignore_ascii_case(written_parts[1]),
        "key ID"
    );
    assert_eq!(input_parts[2], written_parts[2], "key");
    let again = VerifierKey::parse_vkey(&written).expect("to_vkey does not re-parse");
    same_key(&again, &key);
    assert_eq!(again.to_vkey(), written);
    verify_junk(&key, data);
    if let Ok(cosigner) = key.as_cosignature_v1() {
        assert_eq!(cosigner.signature_type(), SignatureType::CosignatureV1);
        assert_eq!(cosigner.public_key_material(), key.public_key_material());
        verify_junk(&cosigner, data);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_vkey(text, data);
    if let Ok(key) = VerifierKey::from_pem("fuzz", text) {
        let again = VerifierKey::parse_vkey(&key.to_vkey()).expect("PEM key's vkey re-parses");
        same_key(&again, &key);
        verify_junk(&key, data);
    }
});
