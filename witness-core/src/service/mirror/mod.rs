//! Mirror bundles (`docs/mirror-bundle-v1.md`): packing a log's entries into a
//! signed CAR file on the connected side ([`pack_tiles`], [`pack_rekor_v1`]), and verifying one
//! with no network ([`verify_bundle`]). The format's pure part (INDEX,
//! Statement, bundle layout) is [`crate::mirror`].

mod pack;
mod rekor_v1;
mod sign;
mod verify;
mod writer;

pub use crate::mirror_car::{block_cid, check_block, read_car};
pub use pack::{PackOptions, PackProgress, PackStart, PackedMirror, pack_rekor_v1, pack_tiles};
pub use sign::FileManifestSigner;
pub use verify::verify_bundle;
pub use writer::{IncrementalBlocks, write_bundle};

use crate::merkle::Hash;

/// A tree the verifier already trusts: the last mirror it accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrustedTree {
    /// Tree size.
    pub size: u64,
    /// Root hash at that size.
    pub root: Hash,
}

/// What a bundle that verified holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedMirror {
    /// The log's origin.
    pub origin: String,
    /// First entry carried.
    pub start: u64,
    /// The checkpoint's tree size.
    pub size: u64,
    /// The checkpoint's root hash, recomputed from the entries.
    pub root: Hash,
    /// The size an incremental bundle continues from.
    pub previous_size: Option<u64>,
    /// The log-signed checkpoint note, as the log served it.
    pub checkpoint_note: Vec<u8>,
    /// SHA-256 of the CAR file.
    pub car_sha256: [u8; 32],
    /// An RFC 6962 consistency proof from the trusted tree to this one: the
    /// bundle's own for an incremental bundle, recomputed from the entries for
    /// a full one; empty without a trusted tree, or from size 0 or the same size.
    pub consistency_proof: Vec<Hash>,
}
