//! Mirror bundles v1 (`docs/mirror-bundle-v1.md`): the pure part of the format.
//!
//! A bundle is a CARv1 file holding a log's signed checkpoint, the entry
//! bundles of the range `[start, size)`, for an incremental bundle the compact
//! range of `[0, start)` and a consistency proof, and an INDEX block naming
//! them; beside it, a DSSE envelope over an in-toto Statement whose subject is
//! the CAR file. This module holds what needs no I/O: the INDEX and Statement
//! documents, the layout of the entry bundles over a range, and the encoding
//! of the hash blocks. Reading and writing CAR files is in the `service`
//! feature (`service::mirror`).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::merkle::{
    HASH_SIZE, Hash, LeafHashes, MAX_PROOF_HASHES, MAX_TREE_SIZE, prove_consistency, subtree_hash,
};
use crate::tiles::{TILE_WIDTH, TileId};
use crate::{Error, Result};

/// The INDEX's `format`.
pub const FORMAT: &str = "rekor-mirror/v1";
/// The CAR file's name in a bundle directory.
pub const CAR_FILE: &str = "rekor-mirror.car";
/// The DSSE envelope's name in a bundle directory.
pub const ENVELOPE_FILE: &str = "rekor-mirror.car.dsse.json";
/// The in-toto predicate type of a mirror Statement.
pub const PREDICATE_TYPE: &str = "https://github.com/rekor-witness/mirror/v1";
/// The in-toto Statement type written.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The DSSE payload type of a mirror envelope.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The largest CAR section (CID and block bytes) read or written: the cap
/// iroh-car applies before allocating (4 MiB). It bounds an entry bundle to
/// 4 MiB (256 entries of 16 KiB on average) and the INDEX to about 43,000
/// entry bundles (11 million entries).
pub const MAX_BLOCK_SIZE: usize = 4 << 20;
/// Multicodec of raw bytes, the codec of every block CID.
pub const RAW_CODEC: u64 = 0x55;
/// Multihash code of SHA2-256, the hash of every block CID.
pub const SHA2_256_CODE: u64 = 0x12;

/// Which check a mirror bundle failed: the `kind()` of [`Error::Mirror`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MirrorFault {
    /// A bundle file could not be read.
    Unreadable,
    /// The DSSE envelope is not signed by the mirror key.
    ManifestSignature,
    /// The Statement or INDEX is malformed or contradicts itself.
    MalformedManifest,
    /// The checkpoint is not signed by the log key, or is not the log's.
    CheckpointSignature,
    /// A CAR section is longer than [`MAX_BLOCK_SIZE`].
    BlockTooLarge,
    /// The CAR file ends inside a section, or before its last block.
    TruncatedCar,
    /// The CAR file is not a CARv1 with one root, or a CID is malformed.
    MalformedCar,
    /// A block's bytes do not hash to its CID.
    BlockCidMismatch,
    /// A block is not the one the format puts at its position.
    UnexpectedBlock,
    /// An entry bundle is not in the entry-bundle format.
    MalformedEntryBundle,
    /// The CAR file's SHA-256 is not the Statement's subject digest.
    CarDigestMismatch,
    /// The entries do not hash to the checkpoint's root.
    RootMismatch,
    /// The bundle's tree is smaller than the trusted tree.
    Rollback,
    /// The bundle's tree does not extend the trusted tree.
    Fork,
    /// An incremental bundle does not start at the trusted tree's size, or has
    /// no trusted tree to start from.
    PreviousMismatch,
}

impl MirrorFault {
    /// A short, bounded label for exit messages and metrics.
    pub fn label(self) -> &'static str {
        match self {
            MirrorFault::Unreadable => "mirror_unreadable",
            MirrorFault::ManifestSignature => "mirror_manifest_signature",
            MirrorFault::MalformedManifest => "mirror_malformed_manifest",
            MirrorFault::CheckpointSignature => "mirror_checkpoint_signature",
            MirrorFault::BlockTooLarge => "mirror_block_too_large",
            MirrorFault::TruncatedCar => "mirror_truncated_car",
            MirrorFault::MalformedCar => "mirror_malformed_car",
            MirrorFault::BlockCidMismatch => "mirror_block_cid_mismatch",
            MirrorFault::UnexpectedBlock => "mirror_unexpected_block",
            MirrorFault::MalformedEntryBundle => "mirror_malformed_entry_bundle",
            MirrorFault::CarDigestMismatch => "mirror_car_digest_mismatch",
            MirrorFault::RootMismatch => "mirror_root_mismatch",
            MirrorFault::Rollback => "mirror_rollback",
            MirrorFault::Fork => "mirror_fork",
            MirrorFault::PreviousMismatch => "mirror_previous_mismatch",
        }
    }

    /// The error of this fault.
    pub fn error(self, detail: impl Into<String>) -> Error {
        Error::Mirror {
            fault: self,
            detail: detail.into(),
        }
    }
}

/// The kind of log a bundle was packed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogKind {
    /// A c2sp.org/tlog-tiles log (Rekor v2).
    #[serde(rename = "tiles")]
    Tiles,
    /// A Rekor v1 shard; entries are the canonicalized entry bodies.
    #[serde(rename = "rekor-v1")]
    RekorV1,
}

/// One entry bundle listed in the INDEX.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexedBundle {
    /// Index of the tile position (`tile/entries/<index>`).
    pub index: u64,
    /// Width of the tile at the bundle's tree size (1 to 256).
    pub width: u16,
    /// CID of the block (CIDv1, raw, sha2-256, base32).
    pub cid: String,
}

/// The INDEX block: the CAR's root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorIndex {
    /// Always [`FORMAT`].
    pub format: String,
    /// The log's origin (checkpoint first line).
    pub origin: String,
    /// The log's API.
    pub log_kind: LogKind,
    /// First entry carried.
    pub start: u64,
    /// The checkpoint's tree size.
    pub size: u64,
    /// The size the bundle continues from (equal to `start`), or null for a
    /// full bundle.
    pub previous_size: Option<u64>,
    /// CID of the CHECKPOINT block.
    pub checkpoint: String,
    /// The ENTRY BUNDLE blocks, in order.
    pub entry_bundles: Vec<IndexedBundle>,
    /// CID of the FRONTIER block (incremental bundles only).
    pub frontier: Option<String>,
    /// CID of the CONSISTENCY PROOF block (incremental bundles only).
    pub consistency_proof: Option<String>,
}

/// Checks the sizes of a bundle: `start <= size`, and `previous_size` is null
/// for a full bundle (`start == 0`) and equal to `start` otherwise.
pub fn check_range(start: u64, size: u64, previous_size: Option<u64>) -> Result<()> {
    let malformed = |detail: String| MirrorFault::MalformedManifest.error(detail);
    if size > MAX_TREE_SIZE || start > size {
        return Err(malformed(format!("range [{start}, {size}) is not a range")));
    }
    match previous_size {
        None if start == 0 => Ok(()),
        Some(previous) if previous == start && start > 0 => Ok(()),
        _ => Err(malformed(format!(
            "previous size {previous_size:?} does not match start {start}"
        ))),
    }
}

/// Parses and checks an INDEX block: the format, the range, the presence of
/// the incremental blocks, and entry bundles exactly as [`bundle_spans`] lays
/// them out. CIDs are checked by the reader of the CAR.
pub fn parse_index(bytes: &[u8]) -> Result<MirrorIndex> {
    let malformed = |detail: String| MirrorFault::MalformedManifest.error(detail);
    let index: MirrorIndex =
        serde_json::from_slice(bytes).map_err(|e| malformed(format!("INDEX: {e}")))?;
    if index.format != FORMAT {
        return Err(malformed(format!("INDEX format {:?}", index.format)));
    }
    check_range(index.start, index.size, index.previous_size)?;
    let incremental = index.previous_size.is_some();
    if index.frontier.is_some() != incremental || index.consistency_proof.is_some() != incremental {
        return Err(malformed(
            "frontier and consistency proof are present exactly in incremental bundles".into(),
        ));
    }
    let expected = bundle_spans(index.start, index.size);
    if index.entry_bundles.len() as u64 != expected.len() {
        return Err(malformed(format!(
            "INDEX lists {} entry bundles, the range needs {}",
            index.entry_bundles.len(),
            expected.len()
        )));
    }
    for (listed, span) in index.entry_bundles.iter().zip(expected) {
        if listed.index != span.tile.index || listed.width != span.tile.width {
            return Err(malformed(format!(
                "INDEX lists bundle {}/{} where the range has {}/{}",
                listed.index, listed.width, span.tile.index, span.tile.width
            )));
        }
    }
    Ok(index)
}

/// Serializes an INDEX block.
pub fn serialize_index(index: &MirrorIndex) -> Result<Vec<u8>> {
    serde_json::to_vec(index).map_err(|e| MirrorFault::MalformedManifest.error(e.to_string()))
}

/// One entry bundle of a range: the tile position in the tree of the bundle's
/// size, and the entries of it the bundle carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BundleSpan {
    /// The tile position (level 0) and its width at the bundle's size.
    pub tile: TileId,
    /// First entry carried (at or after the tile's first entry).
    pub first: u64,
    /// One past the last entry carried.
    pub end: u64,
}

impl BundleSpan {
    /// Entries carried.
    pub fn count(&self) -> usize {
        (self.end - self.first) as usize
    }
}

/// The entry bundles of `[start, size)`, in order. Only the first can start
/// inside its tile (at `start`); only the last can be partial.
#[derive(Clone, Debug)]
pub struct BundleSpans {
    next: u64,
    start: u64,
    size: u64,
}

impl BundleSpans {
    /// Bundles left.
    pub fn len(&self) -> u64 {
        if self.next * TILE_WIDTH >= self.size {
            return 0;
        }
        (self.size - 1) / TILE_WIDTH + 1 - self.next
    }

    /// Whether no bundle is left.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Iterator for BundleSpans {
    type Item = BundleSpan;

    fn next(&mut self) -> Option<BundleSpan> {
        let tile = TileId::for_tree_size(0, self.next, self.size)?;
        let tile_start = self.next * TILE_WIDTH;
        self.next += 1;
        Some(BundleSpan {
            tile,
            first: tile_start.max(self.start),
            end: tile_start + u64::from(tile.width),
        })
    }
}

/// The entry bundles of `[start, size)` (`start <= size`).
pub fn bundle_spans(start: u64, size: u64) -> BundleSpans {
    BundleSpans {
        next: if start == size {
            size.div_ceil(TILE_WIDTH)
        } else {
            start / TILE_WIDTH
        },
        start,
        size,
    }
}

/// The maximal complete subtrees of `[0, size)`, left to right, as
/// `(level, index)`: the compact range a FRONTIER block holds the hashes of.
pub fn frontier_subtrees(size: u64) -> Vec<(u8, u64)> {
    let mut subtrees = Vec::new();
    let mut covered = 0u64;
    for level in (0..64u8).rev() {
        let width = 1u64 << level;
        if size & width != 0 {
            subtrees.push((level, covered >> level));
            covered += width;
        }
    }
    subtrees
}

/// The FRONTIER and CONSISTENCY PROOF of an incremental bundle of
/// `[start, size)` over leaf hashes held in memory (`leaves` has at least
/// `size` hashes; `0 < start <= size`).
pub fn incremental_blocks(
    leaves: &[Hash],
    start: u64,
    size: u64,
) -> Result<(Vec<Hash>, Vec<Hash>)> {
    let source = &mut LeafHashes(leaves);
    let frontier = frontier_subtrees(start)
        .into_iter()
        .map(|(level, index)| subtree_hash(source, index << level, (index + 1) << level))
        .collect::<Result<Vec<Hash>>>()?;
    let proof = if start < size {
        prove_consistency(source, start, size)?
    } else {
        Vec::new()
    };
    Ok((frontier, proof))
}

/// The compact range of `[0, index)` (a FRONTIER, largest subtree first) read
/// from an RFC 9162 inclusion proof of leaf `index` in a tree of `tree_size`
/// leaves: its left siblings are exactly those subtrees, whatever the tree
/// size. For logs that serve inclusion proofs but no hash tiles (Rekor v1).
/// The caller verifies the proof against a signed root first; this only
/// walks it as RFC 9162 §2.1.3.2 does and refuses a path of the wrong shape.
pub fn frontier_from_inclusion_proof(
    index: u64,
    tree_size: u64,
    proof: &[Hash],
) -> Result<Vec<Hash>> {
    let malformed = Error::MalformedProof {
        reason: "inclusion proof does not fit its leaf index and tree size",
    };
    if index >= tree_size || tree_size > MAX_TREE_SIZE || proof.len() > MAX_PROOF_HASHES {
        return Err(malformed);
    }
    let (mut node, mut last) = (index, tree_size - 1);
    let mut left_siblings = Vec::new();
    for hash in proof {
        if last == 0 {
            return Err(malformed);
        }
        if node & 1 == 1 || node == last {
            left_siblings.push(*hash);
            if node & 1 == 0 {
                while node & 1 == 0 && node != 0 {
                    node >>= 1;
                    last >>= 1;
                }
            }
        }
        node >>= 1;
        last >>= 1;
    }
    if last != 0 || left_siblings.len() != index.count_ones() as usize {
        return Err(malformed);
    }
    left_siblings.reverse();
    Ok(left_siblings)
}

/// Concatenates hashes (a FRONTIER or CONSISTENCY PROOF block).
pub fn encode_hashes(hashes: &[Hash]) -> Vec<u8> {
    hashes.iter().flat_map(|h| h.0).collect()
}

/// Splits a FRONTIER or CONSISTENCY PROOF block into its hashes.
pub fn parse_hashes(what: &str, bytes: &[u8]) -> Result<Vec<Hash>> {
    let malformed = |detail: String| MirrorFault::MalformedManifest.error(detail);
    if !bytes.len().is_multiple_of(HASH_SIZE) || bytes.len() / HASH_SIZE > MAX_PROOF_HASHES + 1 {
        return Err(malformed(format!(
            "{what} block of {} bytes is not up to 64 hashes",
            bytes.len()
        )));
    }
    bytes
        .chunks_exact(HASH_SIZE)
        .map(Hash::from_slice)
        .collect::<Result<_>>()
}

/// Appends one entry to an entry bundle (big-endian uint16 length prefix).
pub fn push_entry(bundle: &mut Vec<u8>, entry: &[u8]) -> Result<()> {
    let length = u16::try_from(entry.len()).map_err(|_| Error::TooLarge {
        what: "log entry",
        size: entry.len(),
        max: usize::from(u16::MAX),
    })?;
    bundle.extend_from_slice(&length.to_be_bytes());
    bundle.extend_from_slice(entry);
    Ok(())
}

/// What a mirror Statement's predicate says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorPredicate {
    /// The log's origin.
    pub origin: String,
    /// The checkpoint's tree size.
    pub size: u64,
    /// The checkpoint's root hash, base64.
    pub root_hash: String,
    /// First entry carried.
    pub start: u64,
    /// The size the bundle continues from, or null for a full bundle.
    pub previous_size: Option<u64>,
    /// The signed checkpoint note, signatures included.
    pub checkpoint: String,
    /// The paths of the entry bundles (`tile/entries/<N>[.p/<W>]`), in order.
    pub tiles: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Statement {
    #[serde(rename = "_type")]
    statement_type: String,
    subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
    predicate: MirrorPredicate,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Subject {
    name: String,
    digest: SubjectDigest,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectDigest {
    sha256: String,
}

/// The Statement (DSSE payload) of a bundle whose CAR file has `car_sha256`.
pub fn serialize_statement(car_sha256: &[u8; 32], predicate: &MirrorPredicate) -> Result<Vec<u8>> {
    let statement = Statement {
        statement_type: STATEMENT_TYPE.to_owned(),
        subject: vec![Subject {
            name: CAR_FILE.to_owned(),
            digest: SubjectDigest {
                sha256: hex::encode(car_sha256),
            },
        }],
        predicate_type: PREDICATE_TYPE.to_owned(),
        predicate: predicate.clone(),
    };
    serde_json::to_vec(&statement).map_err(|e| MirrorFault::MalformedManifest.error(e.to_string()))
}

/// Parses a verified DSSE payload: the CAR file's SHA-256 and the predicate,
/// whose range must be well formed.
pub fn parse_statement(payload: &[u8]) -> Result<([u8; 32], MirrorPredicate)> {
    let malformed = |detail: String| MirrorFault::MalformedManifest.error(detail);
    let statement: Statement =
        serde_json::from_slice(payload).map_err(|e| malformed(format!("Statement: {e}")))?;
    if statement.statement_type != STATEMENT_TYPE || statement.predicate_type != PREDICATE_TYPE {
        return Err(malformed(format!(
            "statement {:?} with predicate {:?} is not a mirror bundle",
            statement.statement_type, statement.predicate_type
        )));
    }
    let [subject] = statement.subject.as_slice() else {
        return Err(malformed(
            "the Statement must have exactly one subject".into(),
        ));
    };
    if subject.name != CAR_FILE {
        return Err(malformed(format!(
            "subject {:?} is not {CAR_FILE}",
            subject.name
        )));
    }
    let mut sha256 = [0u8; 32];
    hex::decode_to_slice(&subject.digest.sha256, &mut sha256)
        .map_err(|_| malformed("subject digest is not SHA-256 hex".into()))?;
    let predicate = statement.predicate;
    check_range(predicate.start, predicate.size, predicate.previous_size)?;
    let expected = bundle_spans(predicate.start, predicate.size);
    if predicate.tiles.len() as u64 != expected.len()
        || !predicate
            .tiles
            .iter()
            .zip(expected)
            .all(|(path, span)| *path == span.tile.entries_path())
    {
        return Err(malformed(
            "the predicate's tiles are not the entry bundles of its range".into(),
        ));
    }
    Ok((sha256, predicate))
}

/// The paths of the entry bundles of `[start, size)`.
pub fn tile_paths(start: u64, size: u64) -> Vec<String> {
    bundle_spans(start, size)
        .map(|span| span.tile.entries_path())
        .collect()
}

/// SHA-256 of a block, the digest of its CID.
pub fn block_digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{RootBuilder, leaf_hash};

    #[test]
    fn frontier_from_inclusion_proof_is_the_compact_range_before_the_leaf() {
        let leaves: Vec<Hash> = (0u32..70).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for size in 1..=70u64 {
            for index in 0..size {
                let source = &mut LeafHashes(&leaves);
                let proof = crate::merkle::prove_inclusion(source, index, size).unwrap();
                let frontier = frontier_from_inclusion_proof(index, size, &proof).unwrap();
                let mut expected = RootBuilder::new();
                for leaf in &leaves[..index as usize] {
                    expected.push(*leaf);
                }
                assert_eq!(frontier, expected.frontier(), "leaf {index} of {size}");
                let mut short = proof.clone();
                if short.pop().is_some() {
                    assert!(frontier_from_inclusion_proof(index, size, &short).is_err());
                }
                let mut long = proof.clone();
                long.push(leaves[0]);
                assert!(frontier_from_inclusion_proof(index, size, &long).is_err());
            }
            assert!(frontier_from_inclusion_proof(size, size, &[]).is_err());
        }
    }

    #[test]
    fn spans_cover_the_range_once_in_order() {
        for (start, size) in [
            (0, 0),
            (0, 1),
            (0, 256),
            (0, 257),
            (5, 5),
            (256, 256),
            (300, 1000),
            (255, 513),
        ] {
            let spans: Vec<BundleSpan> = bundle_spans(start, size).collect();
            assert_eq!(
                spans.len() as u64,
                bundle_spans(start, size).len(),
                "{start}..{size}"
            );
            let mut next = start;
            for span in &spans {
                assert_eq!(span.first, next);
                assert!(span.end > span.first);
                assert_eq!(
                    span.tile.index * TILE_WIDTH + u64::from(span.tile.width),
                    span.end
                );
                next = span.end;
            }
            assert_eq!(next, size, "{start}..{size}");
        }
    }

    #[test]
    fn frontier_hashes_to_the_root_and_extends() {
        let leaves: Vec<Hash> = (0..1000u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        for start in [1u64, 2, 3, 255, 256, 511, 700] {
            let frontier: Vec<Hash> = frontier_subtrees(start)
                .into_iter()
                .map(|(level, index)| {
                    let width = 1u64 << level;
                    subtree_hash(&mut LeafHashes(&leaves), index * width, (index + 1) * width)
                        .unwrap()
                })
                .collect();
            let mut resumed = RootBuilder::from_frontier(start, &frontier).unwrap();
            let mut full = RootBuilder::new();
            for leaf in &leaves[..start as usize] {
                full.push(*leaf);
            }
            assert_eq!(resumed.root(), full.root(), "{start}");
            for leaf in &leaves[start as usize..] {
                resumed.push(*leaf);
                full.push(*leaf);
            }
            assert_eq!(resumed.root(), full.root(), "{start}");
        }
    }

    #[test]
    fn incremental_index_without_frontier_is_malformed() {
        let index = MirrorIndex {
            format: FORMAT.into(),
            origin: "o".into(),
            log_kind: LogKind::Tiles,
            start: 10,
            size: 20,
            previous_size: Some(10),
            checkpoint: "c".into(),
            entry_bundles: vec![IndexedBundle {
                index: 0,
                width: 20,
                cid: "b".into(),
            }],
            frontier: None,
            consistency_proof: Some("p".into()),
        };
        let bytes = serialize_index(&index).unwrap();
        assert_eq!(
            parse_index(&bytes).unwrap_err().kind(),
            "mirror_malformed_manifest"
        );
        let fixed = MirrorIndex {
            frontier: Some("f".into()),
            ..index
        };
        assert_eq!(
            parse_index(&serialize_index(&fixed).unwrap()).unwrap(),
            fixed
        );
    }

    #[test]
    fn previous_size_must_equal_start() {
        assert!(check_range(0, 5, None).is_ok());
        assert!(check_range(3, 5, Some(3)).is_ok());
        assert!(check_range(3, 5, None).is_err());
        assert!(check_range(0, 5, Some(0)).is_err());
        assert!(check_range(6, 5, Some(6)).is_err());
    }
}
