//! The signer's gRPC requests into domain types: the first byte picks the
//! message (CosignCheckpoint, CosignCheckpoints, SignSubtree, SignManifest),
//! the rest is its protobuf encoding (a decode error ends the run, as tonic
//! answers it before any handler). A decoded message goes through the pure
//! conversions its handler runs (`checkpoint_to_cosign`, `check_batch_len`,
//! `reference_checkpoint` and `subtree_to_sign`, `manifest_message`), which
//! must refuse with an error or give domain values that re-encode to what was
//! sent: the checkpoint text parses back (witness_core's parser) to the
//! request's origin, size, root and extension lines within the limits, hashes
//! are their wire bytes, a manifest's envelope carries its payload. What needs
//! the key or the fork guard's record is not reached. `SignSubtree`'s
//! reference checkpoint is checked against the shared data's witness keys (one
//! seed carries their cosignatures); any other note's subtree is checked
//! against its unverified size, so the range and hash conversion is reached
//! by fuzzed notes too.

use super::{assert_same_hashes, split_message, unverified_checkpoint, witness_keys};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use prost::Message;
use signer_svc::cosign::checkpoint_to_cosign;
use signer_svc::dsse::{IN_TOTO_PAYLOAD_TYPE, MAX_PAYLOAD_SIZE, envelope, pae};
use signer_svc::limits::{
    MAX_BATCH_ITEMS, MAX_CHECKPOINT_TEXT_LEN, MAX_ORIGIN_LEN, MAX_REQUEST_MESSAGE_SIZE,
    check_batch_len,
};
use signer_svc::service::{manifest_message, reference_checkpoint, subtree_to_sign};
use witness_core::checkpoint::parse_checkpoint_text;
use witness_core::merkle::{is_valid_subtree, verify_subtree_consistency};
use witness_proto::signer as pb;

fn cosign_item(wire: &pb::CosignCheckpointRequest) {
    let Ok(item) = checkpoint_to_cosign(wire) else {
        return;
    };
    assert!(wire.origin.len() <= MAX_ORIGIN_LEN);
    assert!(item.text.len() <= MAX_CHECKPOINT_TEXT_LEN);
    assert_eq!(item.text, item.checkpoint.to_text());
    let parsed = parse_checkpoint_text(&item.text).expect("the cosigned text parses");
    assert_eq!(parsed, item.checkpoint);
    assert_eq!(parsed.origin(), wire.origin);
    assert_eq!(parsed.size(), wire.size);
    assert_eq!(&parsed.root_hash().0[..], &wire.root_hash[..]);
    assert_eq!(parsed.extensions(), &wire.extension_lines[..]);
    assert_eq!(item.old_size, wire.old_size);
    assert_same_hashes(&item.proof, &wire.consistency_proof);
}

fn cosign_checkpoint(message: &[u8]) {
    if let Ok(wire) = pb::CosignCheckpointRequest::decode(message) {
        cosign_item(&wire);
    }
}

fn cosign_checkpoints(message: &[u8]) {
    let Ok(wire) = pb::CosignCheckpointsRequest::decode(message) else {
        return;
    };
    let accepted = check_batch_len(wire.items.len()).is_ok();
    assert_eq!(accepted, (1..=MAX_BATCH_ITEMS).contains(&wire.items.len()));
    if accepted {
        wire.items.iter().for_each(cosign_item);
    }
}

fn sign_subtree(message: &[u8]) {
    let Ok(wire) = pb::SignSubtreeRequest::decode(message) else {
        return;
    };
    let unverified = unverified_checkpoint(&wire.checkpoint);
    let checkpoint = match reference_checkpoint(&wire.checkpoint, witness_keys()) {
        Ok(verified) => {
            let checkpoint = verified.checkpoint().clone();
            assert_eq!(unverified.as_ref(), Some(&checkpoint));
            checkpoint
        }
        Err(_) => match unverified {
            Some(checkpoint) => checkpoint,
            None => return,
        },
    };
    let Ok(subtree) = subtree_to_sign(&wire, checkpoint.size()) else {
        return;
    };
    assert!(is_valid_subtree(subtree.start, subtree.end));
    assert!(subtree.end <= checkpoint.size());
    assert_eq!((subtree.start, subtree.end), (wire.start, wire.end));
    assert_eq!(&subtree.subtree_hash.0[..], &wire.subtree_hash[..]);
    assert_same_hashes(&subtree.proof, &wire.proof);
    let _ = verify_subtree_consistency(
        subtree.start,
        subtree.end,
        &subtree.subtree_hash,
        checkpoint.size(),
        checkpoint.root_hash(),
        &subtree.proof,
    );
}

fn sign_manifest(message: &[u8]) {
    let Ok(wire) = pb::SignManifestRequest::decode(message) else {
        return;
    };
    // The signer's default allowlist, and a type without a payload check.
    let allowed = [
        IN_TOTO_PAYLOAD_TYPE.to_owned(),
        "application/x.fuzz".to_owned(),
    ];
    let Ok(signed) = manifest_message(&wire, &allowed) else {
        return;
    };
    assert!(allowed.contains(&wire.payload_type));
    assert!(wire.payload.len() <= MAX_PAYLOAD_SIZE);
    assert_eq!(signed, pae(&wire.payload_type, &wire.payload));
    let envelope = envelope(&wire.payload_type, &wire.payload, "fuzz", b"signature");
    let json: serde_json::Value = serde_json::from_slice(&envelope).expect("the envelope is JSON");
    assert_eq!(
        json["payloadType"].as_str(),
        Some(wire.payload_type.as_str())
    );
    let payload = json["payload"].as_str().expect("the payload is a string");
    assert_eq!(
        BASE64.decode(payload).expect("base64 payload"),
        wire.payload
    );
}

/// Runs one input: returns on anything the parser refuses, panics when a
/// property of an accepted input does not hold.
pub fn run(data: &[u8]) {
    // tonic refuses a larger message before any handler.
    if data.len() > MAX_REQUEST_MESSAGE_SIZE + 1 {
        return;
    }
    let Some((selector, message)) = split_message(data, 4) else {
        return;
    };
    match selector {
        0 => cosign_checkpoint(message),
        1 => cosign_checkpoints(message),
        2 => sign_subtree(message),
        _ => sign_manifest(message),
    }
}
