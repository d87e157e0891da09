//! The witness service's gRPC requests into domain types: the first byte picks
//! the message (AddCheckpoint, SignSubtree, VerifyInclusion, AddLog), the rest
//! is its protobuf encoding. A decode error ends the run, as tonic answers it
//! before any handler. A decoded message goes through the conversion its
//! handler runs (`witness_core::service::grpc`), which must refuse with an
//! error or keep every field; then through the parsing `Witness` does before
//! it needs its state: the checkpoint note and body, the subtree range and
//! proof, the entry's inclusion proof, the log's key. What needs state (trusted
//! keys, stored sizes, the signer) is not reached. `GetCheckpoint` and
//! `Recosign` carry an origin string the witness only looks up: nothing to
//! convert.

use super::{assert_same_hashes, split_message, unverified_checkpoint};
use prost::Message;
use witness_core::merkle::{is_valid_subtree, verify_inclusion, verify_subtree_consistency};
use witness_core::note::VerifierKey;
use witness_core::service::grpc::{
    add_checkpoint_request, sign_subtree_request, verify_inclusion_entry,
};
use witness_proto::witness as pb;

fn add_checkpoint(message: &[u8]) {
    let Ok(wire) = pb::AddCheckpointRequest::decode(message) else {
        return;
    };
    let Ok(request) = add_checkpoint_request(wire.clone()) else {
        return;
    };
    assert_eq!(request.old_size, wire.old_size);
    assert_same_hashes(&request.consistency_proof, &wire.consistency_proof);
    assert_eq!(request.checkpoint, wire.checkpoint);
    // What Witness::add_checkpoint parses before it looks up the origin.
    if let Some(checkpoint) = unverified_checkpoint(&request.checkpoint) {
        assert!(!checkpoint.origin().is_empty());
    }
}

fn sign_subtree(message: &[u8]) {
    let Ok(wire) = pb::SignSubtreeRequest::decode(message) else {
        return;
    };
    let Ok(request) = sign_subtree_request(wire.clone()) else {
        return;
    };
    assert_eq!((request.start, request.end), (wire.start, wire.end));
    assert_eq!(&request.subtree_hash.0[..], &wire.subtree_hash[..]);
    assert_same_hashes(&request.proof, &wire.proof);
    assert_eq!(request.checkpoint, wire.checkpoint);
    // What Witness::sign_subtree checks before and after the signature check.
    let Some(checkpoint) = unverified_checkpoint(&request.checkpoint) else {
        return;
    };
    if is_valid_subtree(request.start, request.end) && request.end <= checkpoint.size() {
        let _ = verify_subtree_consistency(
            request.start,
            request.end,
            &request.subtree_hash,
            checkpoint.size(),
            checkpoint.root_hash(),
            &request.proof,
        );
    }
}

fn verify_inclusion_request(message: &[u8]) {
    let Ok(wire) = pb::VerifyInclusionRequest::decode(message) else {
        return;
    };
    let Ok(entry) = verify_inclusion_entry(&wire) else {
        return;
    };
    // What Witness::verify_inclusion parses before it looks up the origin, and
    // the inclusion check it runs once the checkpoint's signature verified.
    let proof = &entry.inclusion_proof;
    if unverified_checkpoint(proof.checkpoint.as_bytes()).is_some() {
        let _ = verify_inclusion(
            &entry.leaf_hash(),
            proof.log_index,
            proof.tree_size,
            &proof.hashes,
            &proof.root_hash,
        );
    }
}

fn add_log(message: &[u8]) {
    let Ok(wire) = pb::AddLogRequest::decode(message) else {
        return;
    };
    // Witness::add_log parses the key first; a parsed key is kept in the
    // store as its vkey text, which must parse back to the same key.
    let Ok(key) = VerifierKey::parse_vkey(&wire.verifier_key) else {
        return;
    };
    let again = VerifierKey::parse_vkey(&key.to_vkey()).expect("a key's own vkey parses");
    assert_eq!(again.to_vkey(), key.to_vkey());
    assert_eq!(again.key_id(), key.key_id());
}

/// Runs one input: returns on anything the parser refuses, panics when a
/// property of an accepted input does not hold.
pub fn run(data: &[u8]) {
    let Some((selector, message)) = split_message(data, 4) else {
        return;
    };
    match selector {
        0 => add_checkpoint(message),
        1 => sign_subtree(message),
        2 => verify_inclusion_request(message),
        _ => add_log(message),
    }
}
