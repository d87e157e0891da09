//! Rekor v1 REST responses (log info, consistency proof, log entry): what parses
//! rebuilds into JSON that parses to the same value, shard tables map every
//! virtual index consistently, and verification with the real keys never panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use witness_core::merkle::Hash;
use witness_core::rekor::{
    LogEntry, LogInfo, ShardInfo, parse_consistency_proof_response, parse_log_entry, parse_log_info,
};
use witness_core_fuzz::keys;

fn hex(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(Hash::to_hex).collect()
}

fn shard_json(shard: &ShardInfo) -> Value {
    json!({
        "rootHash": shard.root_hash.to_hex(),
        "signedTreeHead": shard.signed_tree_head,
        "treeSize": shard.tree_size,
        "treeID": shard.tree_id.to_string(),
    })
}

fn check_log_info(info: &LogInfo, data: &[u8]) {
    let mut rebuilt = shard_json(&info.active);
    rebuilt["inactiveShards"] = info.inactive.iter().map(shard_json).collect();
    let bytes = serde_json::to_vec(&rebuilt).expect("JSON serializes");
    assert_eq!(parse_log_info(&bytes).as_ref(), Ok(info));

    for shard in info.shards() {
        if let Ok(verified) = shard.verify(keys()) {
            assert_eq!(verified.checkpoint().size(), shard.tree_size);
            assert_eq!(verified.checkpoint().root_hash(), &shard.root_hash);
        }
    }
    let Ok(table) = info.shard_table() else {
        return;
    };
    assert_eq!(table.shards().len(), info.inactive.len() + 1);
    let mut probes: Vec<u64> = vec![0, u64::MAX];
    for shard in table.shards() {
        probes.extend([shard.offset, shard.offset.wrapping_sub(1)]);
        if let Some(size) = shard.size {
            probes.extend([shard.offset + size, (shard.offset + size).wrapping_sub(1)]);
        }
    }
    probes.extend(
        data.chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().expect("8"))),
    );
    for index in probes {
        if let Some((shard, local)) = table.locate(index) {
            assert_eq!(shard.offset.checked_add(local), Some(index));
            if let Some(size) = shard.size {
                assert!(local < size);
            }
        }
    }
}

fn entry_json(entry: &LogEntry) -> Value {
    use base64::Engine as _;
    let mut value = json!({
        "body": base64::engine::general_purpose::STANDARD.encode(&entry.body),
        "integratedTime": entry.integrated_time,
        "logID": entry.log_id,
        "logIndex": entry.log_index,
    });
    let mut verification = serde_json::Map::new();
    if let Some(proof) = &entry.inclusion_proof {
        verification.insert(
            "inclusionProof".into(),
            json!({
                "hashes": hex(&proof.hashes),
                "logIndex": proof.log_index,
                "rootHash": proof.root_hash.to_hex(),
                "treeSize": proof.tree_size,
                "checkpoint": proof.checkpoint,
            }),
        );
    }
    if let Some(set) = &entry.signed_entry_timestamp {
        verification.insert("signedEntryTimestamp".into(), json!(set));
    }
    if !verification.is_empty() {
        value["verification"] = Value::Object(verification);
    }
    match &entry.uuid {
        Some(uuid) => Value::Object(serde_json::Map::from_iter([(uuid.clone(), value)])),
        None => value,
    }
}

fn check_log_entry(entry: &LogEntry) {
    let bytes = serde_json::to_vec(&entry_json(entry)).expect("JSON serializes");
    assert_eq!(parse_log_entry(&bytes).as_ref(), Ok(entry));
    let _ = entry.shard_offset();
    if let Ok(verified) = entry.verify_inclusion(keys()) {
        let proof = entry
            .inclusion_proof
            .as_ref()
            .expect("verified entries have a proof");
        assert_eq!(verified.checkpoint().size(), proof.tree_size);
        assert_eq!(verified.checkpoint().root_hash(), &proof.root_hash);
        assert!(proof.log_index < proof.tree_size);
    }
}

fuzz_target!(init: { keys(); }, |data: &[u8]| {
    if let Ok(info) = parse_log_info(data) {
        check_log_info(&info, data);
    }
    if let Ok(response) = parse_consistency_proof_response(data) {
        let rebuilt = json!({
            "hashes": hex(&response.hashes),
            "rootHash": response.server_newest_root.to_hex(),
        });
        let bytes = serde_json::to_vec(&rebuilt).expect("JSON serializes");
        assert_eq!(parse_consistency_proof_response(&bytes).as_ref(), Ok(&response));
    }
    if let Ok(entry) = parse_log_entry(data) {
        check_log_entry(&entry);
    }
});
