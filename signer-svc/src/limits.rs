//! Size limits of the signer's requests, each with its derivation, and the
//! largest request message the server decodes, computed from them.
//!
//! tonic refuses a request message larger than its decoding limit before any
//! handler runs (`OUT_OF_RANGE`); the limit is set to the largest message a
//! legitimate request can be, so that every per-field cap below is reachable
//! and answered by the service itself (`INVALID_ARGUMENT`, audited), and
//! anything bigger never gets buffered past that bound.

use witness_core::merkle::MAX_PROOF_HASHES;
use witness_core::note::MAX_NOTE_SIZE;

use crate::dsse::{MAX_PAYLOAD_SIZE, MAX_PAYLOAD_TYPE_LEN};
use crate::error::{Error, Result};

/// The longest origin accepted: the ML-DSA-44 cosigned message length-prefixes
/// the origin with one byte, and one limit for every key keeps behaviour uniform.
pub const MAX_ORIGIN_LEN: usize = 255;

/// The longest checkpoint note text cosigned (origin, size and root lines and
/// extension lines, newlines included). A checkpoint is an origin of at most
/// 255 bytes, a size, a root and, from Rekor v1, one `Timestamp:` line: under
/// 400 bytes. 4 KiB is ten times that, keeps a cosigned checkpoint far inside
/// the core's 64 KiB note limit with room for a quorum of cosignatures, and
/// keeps the largest batch within a few MiB (see [`MAX_REQUEST_MESSAGE_SIZE`]).
pub const MAX_CHECKPOINT_TEXT_LEN: usize = 4096;

/// The most items of one `CosignCheckpoints` call. Group commit already shares
/// one transaction among concurrent calls; 512 items amortise the per-call gRPC
/// and TLS cost to well under a signature's, while one batch still takes only
/// tens of milliseconds to sign (Ed25519 and ML-DSA-44 on two cores) and its
/// response stays under 2 MiB (a 3.3 KB ML-DSA-44 line per item).
pub const MAX_BATCH_ITEMS: usize = 512;

/// A `CosignCheckpoints` batch has 1 to [`MAX_BATCH_ITEMS`] items; otherwise
/// the call is refused whole, without looking at its items.
pub fn check_batch_len(items: usize) -> Result<()> {
    if items == 0 || items > MAX_BATCH_ITEMS {
        return Err(Error::BadField {
            reason: "a batch has 1 to 512 items",
        });
    }
    Ok(())
}

/// Bytes of a protobuf varint encoding `value`.
const fn varint_len(mut value: usize) -> usize {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
}

/// Bytes of a length-delimited field of `len` bytes with a one-byte tag (every
/// field number of signer.proto is below 16).
const fn field_len(len: usize) -> usize {
    1 + varint_len(len) + len
}

/// A `uint64` field holding a tree size, below 2^63: a tag and 9 varint bytes.
const SIZE_FIELD_LEN: usize = 1 + 9;

/// The largest legitimate `CosignCheckpointRequest`: origin, size, root,
/// extension lines, old size and a proof of 63 hashes. An extension line of
/// n >= 1 bytes (empty lines are refused) is n + 1 bytes of checkpoint text and
/// at most n + 3 bytes encoded (tag, two length bytes below 16 KiB), which is at
/// most twice its text; so the extension lines encode to at most twice
/// [`MAX_CHECKPOINT_TEXT_LEN`]. 258 + 10 + 34 + 8192 + 10 + 2142 = 10,646.
pub const MAX_COSIGN_REQUEST_LEN: usize = field_len(MAX_ORIGIN_LEN)
    + SIZE_FIELD_LEN
    + field_len(32)
    + 2 * MAX_CHECKPOINT_TEXT_LEN
    + SIZE_FIELD_LEN
    + MAX_PROOF_HASHES * field_len(32);

/// The largest legitimate `CosignCheckpointsRequest`: 512 items, each a
/// length-delimited field: 512 * (1 + 2 + 10,646) = 5,452,288.
const MAX_BATCH_REQUEST_LEN: usize = MAX_BATCH_ITEMS * field_len(MAX_COSIGN_REQUEST_LEN);

/// The largest legitimate `SignManifestRequest`: a 255-byte payload type and a
/// 4 MiB payload: (1 + 2 + 255) + (1 + 4 + 4,194,304) = 4,194,567.
const MAX_MANIFEST_REQUEST_LEN: usize =
    field_len(MAX_PAYLOAD_TYPE_LEN) + field_len(MAX_PAYLOAD_SIZE);

/// The largest legitimate `SignSubtreeRequest`: a checkpoint note at the core's
/// note limit, start, end, the subtree hash and a proof of 63 hashes.
const MAX_SUBTREE_REQUEST_LEN: usize = field_len(MAX_NOTE_SIZE)
    + 2 * SIZE_FIELD_LEN
    + field_len(32)
    + MAX_PROOF_HASHES * field_len(32);

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

/// The server's decoding limit: the largest legitimate request of any call,
/// which is a full `CosignCheckpoints` batch (5,452,288 bytes; a manifest at the
/// 4 MiB payload cap is 4,194,567). It counts the protobuf message only: tonic
/// checks it against the length in the 5-byte gRPC message prefix.
pub const MAX_REQUEST_MESSAGE_SIZE: usize = max(
    max(MAX_BATCH_REQUEST_LEN, MAX_MANIFEST_REQUEST_LEN),
    max(MAX_COSIGN_REQUEST_LEN, MAX_SUBTREE_REQUEST_LEN),
);

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use witness_proto::signer as pb;

    use super::*;

    /// The worst legitimate item: every field at its largest, and the checkpoint
    /// text filled with one-byte extension lines (the most encoding per byte of
    /// text).
    fn worst_item() -> pb::CosignCheckpointRequest {
        let origin = "o".repeat(MAX_ORIGIN_LEN);
        let size = i64::MAX as u64;
        let fixed = origin.len() + 1 + size.to_string().len() + 1 + 44 + 1;
        let lines = (MAX_CHECKPOINT_TEXT_LEN - fixed) / 2;
        pb::CosignCheckpointRequest {
            origin,
            size,
            root_hash: vec![0xff; 32],
            extension_lines: vec!["x".into(); lines],
            old_size: size,
            consistency_proof: vec![vec![0xff; 32]; MAX_PROOF_HASHES],
        }
    }

    #[test]
    fn the_limit_is_the_documented_figure() {
        assert_eq!(MAX_COSIGN_REQUEST_LEN, 10_646);
        assert_eq!(MAX_BATCH_REQUEST_LEN, 5_452_288);
        assert_eq!(MAX_MANIFEST_REQUEST_LEN, 4_194_567);
        assert_eq!(MAX_REQUEST_MESSAGE_SIZE, 5_452_288);
    }

    #[test]
    fn the_largest_legitimate_requests_fit_the_limit() {
        let item = worst_item();
        let checkpoint = witness_core::checkpoint::Checkpoint::new(
            &item.origin,
            item.size,
            witness_core::merkle::Hash([0xff; 32]),
            item.extension_lines.clone(),
        )
        .unwrap();
        let text = checkpoint.to_text().len();
        assert!(text <= MAX_CHECKPOINT_TEXT_LEN && text + 2 > MAX_CHECKPOINT_TEXT_LEN);
        assert!(item.encoded_len() <= MAX_COSIGN_REQUEST_LEN);

        let batch = pb::CosignCheckpointsRequest {
            items: vec![item; MAX_BATCH_ITEMS],
        };
        assert!(batch.encoded_len() <= MAX_REQUEST_MESSAGE_SIZE);

        let manifest = pb::SignManifestRequest {
            payload_type: "t".repeat(MAX_PAYLOAD_TYPE_LEN),
            payload: vec![b' '; MAX_PAYLOAD_SIZE],
        };
        assert_eq!(manifest.encoded_len(), MAX_MANIFEST_REQUEST_LEN);

        let subtree = pb::SignSubtreeRequest {
            checkpoint: vec![b'c'; MAX_NOTE_SIZE],
            start: i64::MAX as u64,
            end: i64::MAX as u64,
            subtree_hash: vec![0xff; 32],
            proof: vec![vec![0xff; 32]; MAX_PROOF_HASHES],
        };
        assert_eq!(subtree.encoded_len(), MAX_SUBTREE_REQUEST_LEN);
    }
}
