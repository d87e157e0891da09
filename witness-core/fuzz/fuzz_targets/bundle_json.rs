//! Sigstore bundles, bare TransparencyLogEntry JSON, trusted roots and signing
//! configs: entries rebuild into JSON that parses to the same entry, the three
//! entry parsers agree, and verification against the real trusted roots (loaded
//! once) never panics and only accepts what the entry states.

#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use witness_core::bundle::{
    TransparencyLogEntry, log_id_of, parse_bundle_entries, parse_entries, parse_signing_config,
    parse_transparency_log_entry, parse_trusted_root, verify_entry,
};
use witness_core::merkle::MAX_PROOF_HASHES;
use witness_core::note::VerifierKey;
use witness_core_fuzz::trusted_logs;

fn entry_json(entry: &TransparencyLogEntry) -> Vec<u8> {
    let proof = &entry.inclusion_proof;
    let value = json!({
        "logIndex": entry.log_index.to_string(),
        "logId": { "keyId": BASE64.encode(&entry.log_id) },
        "canonicalizedBody": BASE64.encode(&entry.canonicalized_body),
        "inclusionProof": {
            "logIndex": proof.log_index.to_string(),
            "rootHash": proof.root_hash.to_base64(),
            "treeSize": proof.tree_size.to_string(),
            "hashes": proof.hashes.iter().map(|h| h.to_base64()).collect::<Vec<_>>(),
            "checkpoint": { "envelope": proof.checkpoint },
        },
    });
    serde_json::to_vec(&value).expect("JSON serializes")
}

fn check_entry(entry: &TransparencyLogEntry) {
    assert!(entry.inclusion_proof.hashes.len() <= MAX_PROOF_HASHES);
    assert_eq!(
        parse_transparency_log_entry(&entry_json(entry)).as_ref(),
        Ok(entry)
    );
    let Ok(verified) = verify_entry(entry, trusted_logs()) else {
        return;
    };
    let proof = &entry.inclusion_proof;
    assert_eq!(verified.leaf_hash, entry.leaf_hash());
    assert_eq!(verified.leaf_index, proof.log_index);
    assert_eq!(verified.log_index, entry.log_index);
    assert_eq!(verified.checkpoint.size(), proof.tree_size);
    assert_eq!(verified.checkpoint.root_hash(), &proof.root_hash);
    assert!(proof.log_index < proof.tree_size);
    assert!(
        trusted_logs().iter().any(|log| log.log_id == entry.log_id
            && log.base_url == verified.log_base_url
            && log.owns_origin(verified.checkpoint.origin())),
        "verified against no trusted log"
    );
}

fuzz_target!(init: { trusted_logs(); }, |data: &[u8]| {
    if let Ok(entries) = parse_entries(data) {
        let bundle = parse_bundle_entries(data);
        let bare = parse_transparency_log_entry(data).map(|entry| vec![entry]);
        assert!(
            bundle.as_ref() == Ok(&entries) || bare.as_ref() == Ok(&entries),
            "parse_entries disagrees with both entry parsers"
        );
        entries.iter().for_each(check_entry);
    }
    if let Ok(logs) = parse_trusted_root(data) {
        for log in &logs {
            let name = log.key.name();
            assert!(log.owns_origin(name));
            assert!(log.owns_origin(&format!("{name} - 1")));
            assert!(!log.owns_origin(&format!("{name} - ")));
            assert!(!log.owns_origin(&format!("{name}x")));
            assert_eq!(log_id_of(&log.key).len(), 32);
            let again = VerifierKey::parse_vkey(&log.key.to_vkey()).expect("vkey re-parses");
            assert_eq!(again.to_vkey(), log.key.to_vkey());
        }
    }
    if let Ok(services) = parse_signing_config(data) {
        assert!(services.iter().all(|s| matches!(s.major_api_version, 1 | 2)));
    }
});
