//! Proof files (base64 lines or a Rekor `/api/v1/log/proof` response): a parsed
//! proof writes back as lines that parse to the same hashes, and verifying it
//! with arbitrary sizes never panics.
//!
//! Input: two big-endian u64 sizes (16 bytes), then the proof file.

#![no_main]

use libfuzzer_sys::fuzz_target;
use witness_core::merkle::{
    Hash, empty_root, root_from_inclusion_proof, verify_consistency, verify_inclusion,
};
use witness_core::rekor::parse_proof_file;

fn check_sizes(a: u64, b: u64, proof: &[Hash]) {
    let leaf = proof.first().copied().unwrap_or_else(empty_root);
    let other = proof.last().copied().unwrap_or(Hash([0xa5; 32]));
    let _ = verify_consistency(a, b, &leaf, &other, proof);
    let _ = verify_consistency(a, b, &other, &leaf, proof);
    if let Ok(root) = root_from_inclusion_proof(&leaf, a, b, proof) {
        verify_inclusion(&leaf, a, b, proof, &root).expect("the implied root verifies");
        let mut wrong = root;
        wrong.0[0] ^= 1;
        assert!(verify_inclusion(&leaf, a, b, proof, &wrong).is_err());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((sizes, file)) = data.split_first_chunk::<16>() else {
        return;
    };
    let a = u64::from_be_bytes(sizes[..8].try_into().expect("8 bytes"));
    let b = u64::from_be_bytes(sizes[8..].try_into().expect("8 bytes"));
    let Ok(proof) = parse_proof_file(file) else {
        return;
    };
    let lines: String = proof
        .iter()
        .map(|h| format!("{}\n", h.to_base64()))
        .collect();
    assert_eq!(parse_proof_file(lines.as_bytes()).as_ref(), Ok(&proof));
    let hex: Vec<String> = proof.iter().map(Hash::to_hex).collect();
    let json = format!(
        r#"{{"hashes":{},"rootHash":"{}"}}"#,
        serde_json::to_string(&hex).expect("strings serialize"),
        empty_root().to_hex()
    );
    assert_eq!(parse_proof_file(json.as_bytes()).as_ref(), Ok(&proof));

    check_sizes(a, b, &proof);
    // The same sizes cut down to small trees, where most proofs have a shape.
    check_sizes(a % 64, b % 64, &proof);
    check_sizes(a & 0xffff, b & 0xffff, &proof);
});
