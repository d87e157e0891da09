//! RFC 6962 / RFC 9162 Merkle trees: hashes, proof verification, streaming roots
//! and proof generation.
//!
//! Proof generation reads hashes of *complete subtrees* through
//! [`SubtreeHashSource`], so the same algorithm serves an in-memory list of leaf
//! hashes ([`LeafHashes`]) and a log's tlog-tiles ([`crate::tiles::TileHashSource`]).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Bytes in a SHA-256 hash.
pub const HASH_SIZE: usize = 32;

/// The most hashes a proof may carry: c2sp.org/tlog-witness caps consistency
/// proofs at 63 lines. Tree sizes are below 2^63 (see [`MAX_TREE_SIZE`]), so an
/// inclusion proof has at most 63 hashes; a consistency proof in a tree of more
/// than 2^62 leaves can need 64, which no deployed log comes near, and which
/// [`prove_consistency`] therefore refuses rather than emit a proof nobody accepts.
pub const MAX_PROOF_HASHES: usize = 63;

/// The largest tree size accepted anywhere: 2^63 - 1, the int64 bound used by Go
/// tlog, Trillian and Rekor, and the bound tlog-cosignature puts on timestamps.
pub const MAX_TREE_SIZE: u64 = i64::MAX as u64;

/// A SHA-256 Merkle tree hash (leaf, interior node or root).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; HASH_SIZE]);

impl Hash {
    /// Decodes exactly 32 bytes of standard, padded base64.
    pub fn parse_base64(text: &str) -> Result<Hash> {
        // 44 characters encode 32 bytes; anything else cannot be a hash, so it is
        // refused before decoding.
        if text.len() != 44 {
            return Err(Error::MalformedProof {
                reason: "hash is not 44 base64 characters",
            });
        }
        let bytes = BASE64.decode(text).map_err(|_| Error::MalformedProof {
            reason: "hash is not valid base64",
        })?;
        Hash::from_slice(&bytes)
    }

    /// Decodes exactly 64 lowercase or uppercase hex digits (Rekor v1's encoding).
    pub fn parse_hex(text: &str) -> Result<Hash> {
        if text.len() != 2 * HASH_SIZE {
            return Err(Error::MalformedProof {
                reason: "hex hash is not 64 digits",
            });
        }
        let mut out = [0u8; HASH_SIZE];
        hex::decode_to_slice(text, &mut out).map_err(|_| Error::MalformedProof {
            reason: "hash is not valid hex",
        })?;
        Ok(Hash(out))
    }

    /// Takes exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Hash> {
        <[u8; HASH_SIZE]>::try_from(bytes)
            .map(Hash)
            .map_err(|_| Error::MalformedProof {
                reason: "hash is not 32 bytes",
            })
    }

    /// Standard padded base64, as in checkpoints and tlog-witness proofs.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    /// Lowercase hex, as in Rekor v1 responses.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_base64())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Hash(Sha256::digest([]).into())
}

/// RFC 6962 leaf hash: SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(data);
    Hash(hasher.finalize().into())
}

/// SHA-256's initial hash value (FIPS 180-4, section 5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// RFC 6962 interior node hash: SHA-256(0x01 || left || right).
///
/// The input is always 65 bytes, so its padded form is always the same two
/// blocks: they are laid out here and fed straight to the compression function
/// (SHA-NI where the CPU has it), skipping the streaming hasher's buffering.
/// This is the hot loop of every proof verification; it is about 25% faster
/// than `Sha256::new().update(..).finalize()` on sha2 0.11 and is checked
/// against it in the tests.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    const MESSAGE_BITS: u64 = (1 + 2 * HASH_SIZE as u64) * 8;
    let mut blocks = [[0u8; 64]; 2];
    blocks[0][0] = 1;
    blocks[0][1..33].copy_from_slice(&left.0);
    blocks[0][33..].copy_from_slice(&right.0[..31]);
    blocks[1][0] = right.0[31];
    blocks[1][1] = 0x80;
    blocks[1][56..].copy_from_slice(&MESSAGE_BITS.to_be_bytes());
    let mut state = SHA256_IV;
    sha2::block_api::compress256(&mut state, &blocks);
    let mut out = [0u8; HASH_SIZE];
    for (bytes, word) in out.chunks_exact_mut(4).zip(state) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
    Hash(out)
}

fn check_proof_length(proof: &[Hash]) -> Result<()> {
    if proof.len() > MAX_PROOF_HASHES {
        return Err(Error::ProofTooLong {
            count: proof.len(),
            max: MAX_PROOF_HASHES,
        });
    }
    Ok(())
}

/// Computes the root implied by an inclusion proof (RFC 9162, section 2.1.3.2).
pub fn root_from_inclusion_proof(
    leaf: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
) -> Result<Hash> {
    check_proof_length(proof)?;
    if index >= tree_size {
        return Err(Error::InclusionProofInvalid {
            reason: "leaf index is not below the tree size",
        });
    }
    let mut fnode = index;
    let mut snode = tree_size - 1;
    let mut root = *leaf;
    for sibling in proof {
        if snode == 0 {
            return Err(Error::InclusionProofInvalid {
                reason: "proof is longer than the path to the root",
            });
        }
        if fnode & 1 == 1 || fnode == snode {
            root = node_hash(sibling, &root);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            root = node_hash(&root, sibling);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(Error::InclusionProofInvalid {
            reason: "proof is shorter than the path to the root",
        });
    }
    Ok(root)
}

/// Verifies that `leaf` is at `index` in the tree of `tree_size` leaves with `root`.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<()> {
    if root_from_inclusion_proof(leaf, index, tree_size, proof)? != *root {
        return Err(Error::InclusionProofInvalid {
            reason: "computed root does not match",
        });
    }
    Ok(())
}

/// Verifies that the tree of `old_size` leaves with `old_root` is a prefix of the
/// tree of `new_size` leaves with `new_root` (RFC 9162, section 2.1.4.2).
///
/// `old_size` must be at least 1: every tree is consistent with the empty tree,
/// so there is nothing for a proof to show, and callers that accept an empty old
/// tree (a witness seeing a log for the first time) handle that case themselves.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<()> {
    check_proof_length(proof)?;
    let invalid = |reason| Err(Error::ConsistencyProofInvalid { reason });
    if old_size == 0 {
        return invalid("old tree is empty; no proof is needed or checked");
    }
    if old_size > new_size {
        return invalid("old size is larger than new size");
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return invalid("proof must be empty for equal sizes");
        }
        if old_root != new_root {
            return invalid("roots differ at equal sizes");
        }
        return Ok(());
    }
    if proof.is_empty() {
        return invalid("proof is empty");
    }
    // When the old tree is a complete subtree, its root is the proof's implicit
    // first element.
    let (seed, rest) = if old_size.is_power_of_two() {
        (*old_root, proof)
    } else {
        (proof[0], &proof[1..])
    };
    let mut fnode = old_size - 1;
    let mut snode = new_size - 1;
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let mut old_hash = seed;
    let mut new_hash = seed;
    for sibling in rest {
        if snode == 0 {
            return invalid("proof is longer than needed");
        }
        if fnode & 1 == 1 || fnode == snode {
            old_hash = node_hash(sibling, &old_hash);
            new_hash = node_hash(sibling, &new_hash);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            new_hash = node_hash(&new_hash, sibling);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return invalid("proof is shorter than needed");
    }
    if old_hash != *old_root {
        return invalid("old root does not match");
    }
    if new_hash != *new_root {
        return invalid("new root does not match");
    }
    Ok(())
}

/// Computes a tree's root from its leaf hashes as they stream in, keeping only
/// one hash per level (O(log n) memory): the roots of the complete subtrees that
/// make up the tree so far, largest first.
#[derive(Clone, Debug, Default)]
pub struct RootBuilder {
    size: u64,
    subtrees: Vec<Hash>,
}

impl RootBuilder {
    /// An empty tree.
    pub fn new() -> RootBuilder {
        RootBuilder::default()
    }

    /// Leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends the next leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        // Each trailing one bit of the old size is a complete subtree of the same
        // height as the one being carried: merge them.
        let mut size = self.size;
        while size & 1 == 1 {
            // Invariant: there is one stored subtree per set bit of `size`.
            let left = self
                .subtrees
                .pop()
                .expect("one subtree per set bit of the size");
            hash = node_hash(&left, &hash);
            size >>= 1;
        }
        self.subtrees.push(hash);
        self.size += 1;
    }

    /// Resumes from a compact range of `[0, size)`: the hashes of its maximal
    /// complete subtrees, largest (leftmost) first, one per set bit of `size`.
    pub fn from_frontier(size: u64, frontier: &[Hash]) -> Result<RootBuilder> {
        if size > MAX_TREE_SIZE || frontier.len() != size.count_ones() as usize {
            return Err(Error::MalformedProof {
                reason: "frontier does not have one hash per set bit of its size",
            });
        }
        Ok(RootBuilder {
            size,
            subtrees: frontier.to_vec(),
        })
    }

    /// The compact range of the leaves so far (see [`RootBuilder::from_frontier`]).
    pub fn frontier(&self) -> &[Hash] {
        &self.subtrees
    }

    /// The root of the tree so far (the empty-tree hash if no leaf was pushed).
    pub fn root(&self) -> Hash {
        let mut iter = self.subtrees.iter().rev();
        let Some(last) = iter.next() else {
            return empty_root();
        };
        iter.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

/// Supplies hashes of complete subtrees: the subtree at `level` and `index`
/// covers leaves `[index << level, (index + 1) << level)`.
pub trait SubtreeHashSource {
    /// The hash of one complete subtree; level 0 is a leaf hash.
    fn subtree_hash(&mut self, level: u8, index: u64) -> Result<Hash>;
}

/// A [`SubtreeHashSource`] over leaf hashes held in memory.
#[derive(Clone, Debug)]
pub struct LeafHashes<'a>(pub &'a [Hash]);

impl SubtreeHashSource for LeafHashes<'_> {
    fn subtree_hash(&mut self, level: u8, index: u64) -> Result<Hash> {
        // A subtree of 2^64 or more leaves cannot exist; a zero width here would
        // make it an empty range and answer with the empty-tree hash.
        let width = 1u64.checked_shl(level.into());
        let start = width.and_then(|w| index.checked_mul(w));
        let end = start.zip(width).and_then(|(s, w)| s.checked_add(w));
        let (Some(start), Some(end)) = (start, end) else {
            return Err(Error::ProofUnavailable {
                reason: "subtree is beyond the available leaves",
            });
        };
        if end > self.0.len() as u64 {
            return Err(Error::ProofUnavailable {
                reason: "subtree is beyond the available leaves",
            });
        }
        let mut builder = RootBuilder::new();
        for leaf in &self.0[start as usize..end as usize] {
            builder.push(*leaf);
        }
        Ok(builder.root())
    }
}

/// The largest power of two strictly below `n` (for `n >= 2`).
fn split_point(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// The hash of leaves `[start, end)`, where `start` is a multiple of a power of
/// two at least `end - start` (true of every range RFC 6962 proofs ask for).
fn range_hash(source: &mut dyn SubtreeHashSource, start: u64, end: u64) -> Result<Hash> {
    let len = end - start;
    if len.is_power_of_two() {
        let level = len.trailing_zeros() as u8;
        return source.subtree_hash(level, start >> level);
    }
    let k = split_point(len);
    let left = range_hash(source, start, start + k)?;
    let right = range_hash(source, start + k, end)?;
    Ok(node_hash(&left, &right))
}

fn check_size(size: u64) -> Result<()> {
    if size > MAX_TREE_SIZE {
        return Err(Error::ProofUnavailable {
            reason: "tree size is above 2^63 - 1",
        });
    }
    Ok(())
}

/// The root of the first `tree_size` leaves.
pub fn tree_root(source: &mut dyn SubtreeHashSource, tree_size: u64) -> Result<Hash> {
    check_size(tree_size)?;
    if tree_size == 0 {
        return Ok(empty_root());
    }
    range_hash(source, 0, tree_size)
}

/// Builds the inclusion proof of leaf `index` in the tree of `tree_size` leaves
/// (RFC 6962 PATH), ordered from the leaf up.
pub fn prove_inclusion(
    source: &mut dyn SubtreeHashSource,
    index: u64,
    tree_size: u64,
) -> Result<Vec<Hash>> {
    check_size(tree_size)?;
    if index >= tree_size {
        return Err(Error::ProofUnavailable {
            reason: "leaf index is not below the tree size",
        });
    }
    let mut proof = Vec::new();
    // Walk down from the root, remembering siblings; they are emitted leaf-first.
    let (mut start, mut end) = (0u64, tree_size);
    while end - start > 1 {
        let k = split_point(end - start);
        if index < start + k {
            proof.push(range_hash(source, start + k, end)?);
            end = start + k;
        } else {
            proof.push(range_hash(source, start, start + k)?);
            start += k;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// Builds the consistency proof from `old_size` to `new_size` (RFC 6962
/// SUBPROOF), for `0 < old_size <= new_size`.
pub fn prove_consistency(
    source: &mut dyn SubtreeHashSource,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>> {
    check_size(new_size)?;
    if old_size == 0 || old_size > new_size {
        return Err(Error::ProofUnavailable {
            reason: "consistency proofs need 0 < old size <= new size",
        });
    }
    let mut proof = Vec::new();
    let (mut start, mut end, mut m) = (0u64, new_size, old_size);
    // `complete` is RFC 6962's `b`: true while the old tree's root is the root of
    // the subtree being examined, so the verifier already knows it.
    let mut complete = true;
    while m != end - start {
        let k = split_point(end - start);
        if m <= k {
            proof.push(range_hash(source, start + k, end)?);
            end = start + k;
        } else {
            proof.push(range_hash(source, start, start + k)?);
            start += k;
            m -= k;
            complete = false;
        }
    }
    if !complete {
        proof.push(range_hash(source, start, end)?);
    }
    if proof.len() > MAX_PROOF_HASHES {
        return Err(Error::ProofUnavailable {
            reason: "consistency proof would exceed 63 hashes",
        });
    }
    proof.reverse();
    Ok(proof)
}

// ---------------------------------------------------------------------------
// Subtrees (draft-ietf-plants-merkle-tree-certs-03, section 4), for the
// optional sign-subtree call of c2sp.org/tlog-witness.
// ---------------------------------------------------------------------------

/// Whether `[start, end)` is a valid subtree (draft-ietf-plants-merkle-tree-certs-03,
/// section 4.1): `start < end`, and `start` is a multiple of `BIT_CEIL(end - start)`,
/// the smallest power of two at least the subtree's size.
///
/// The alignment is what makes `MTH(D[start:end])`, hashed as a tree of its own,
/// share enough nodes with every tree containing it for a consistency proof.
///
/// Empty subtrees (`start == end`) are refused: -03, which c2sp.org/tlog-witness
/// cites, requires `start < end`. Later drafts (the -07 that `mtcs` follows)
/// allow them; a cosignature on one would commit to nothing, so a witness has
/// no reason to sign one.
///
/// `BIT_CEIL` of a size above 2^63 is 2^64, which does not fit a `u64`; the only
/// multiple of 2^64 that does is 0, so such a subtree is valid exactly when it
/// starts at 0. Tree sizes never get there (see [`MAX_TREE_SIZE`]), but this is
/// a predicate on untrusted request fields, so it must not overflow.
pub fn is_valid_subtree(start: u64, end: u64) -> bool {
    if start >= end {
        return false;
    }
    match (end - start).checked_next_power_of_two() {
        Some(width) => start & (width - 1) == 0,
        None => start == 0,
    }
}

/// The Merkle tree hash of the valid subtree `[start, end)`, `MTH(D[start:end])`.
///
/// A valid subtree meets the precondition of the private `range_hash` by definition: `start` is
/// a multiple of `BIT_CEIL(end - start)`, a power of two at least `end - start`.
/// So its hash is the root of the same complete subtrees RFC 6962 proofs use;
/// for example `[8, 13)` is `node_hash([8, 12), [12, 13))`.
pub fn subtree_hash(source: &mut dyn SubtreeHashSource, start: u64, end: u64) -> Result<Hash> {
    if !is_valid_subtree(start, end) {
        return Err(Error::ProofUnavailable {
            reason: "not a valid subtree",
        });
    }
    check_size(end)?;
    range_hash(source, start, end)
}

/// Builds the subtree consistency proof of `[start, end)` in the tree of
/// `tree_size` leaves, `SUBTREE_PROOF(start, end, D_n)`
/// (draft-ietf-plants-merkle-tree-certs-03, section 4.4.1), ordered as the
/// verifier consumes it: the deepest hash first.
///
/// This is RFC 6962's SUBPROOF generalized to a subtree that need not start at
/// 0; with `start == 0` it is [`prove_consistency`], and with `end == start + 1`
/// it is [`prove_inclusion`].
///
/// Like [`prove_consistency`], a proof over 63 hashes (possible only above 2^62
/// leaves) is refused, because c2sp.org/tlog-witness caps it at 63 lines; the
/// proof's shape is worked out first, so no hash is read in that case.
pub fn prove_subtree_consistency(
    source: &mut dyn SubtreeHashSource,
    start: u64,
    end: u64,
    tree_size: u64,
) -> Result<Vec<Hash>> {
    check_size(tree_size)?;
    if !is_valid_subtree(start, end) {
        return Err(Error::ProofUnavailable {
            reason: "not a valid subtree",
        });
    }
    if end > tree_size {
        return Err(Error::ProofUnavailable {
            reason: "subtree ends beyond the tree size",
        });
    }
    // Walk down from the root. `[lo, hi)` is the node being examined and
    // `[s, end)` the part of the subtree it must prove; `known` is the draft's
    // boolean: true while that part is the original subtree, whose hash the
    // verifier already holds. Each step records the sibling range it leaves
    // behind, so `ranges` lists the proof top-down.
    let mut ranges = Vec::new();
    let (mut lo, mut hi, mut s) = (0u64, tree_size, start);
    let mut known = true;
    while (s, end) != (lo, hi) {
        let k = split_point(hi - lo);
        if end <= lo + k {
            // The subtree is in the left child: prove that, add the right.
            ranges.push((lo + k, hi));
            hi = lo + k;
        } else if lo + k <= s {
            // The subtree is in the right child: prove that, add the left.
            ranges.push((lo, lo + k));
            lo += k;
        } else {
            // The subtree straddles the split, so `s == lo` (alignment): its
            // left part is exactly the left child, which is added; the rest is
            // proven in the right child, and is no longer a hash the verifier
            // holds.
            ranges.push((lo, lo + k));
            lo += k;
            s = lo;
            known = false;
        }
    }
    // The subtree (or what is left of it) is now the node `[lo, hi)` itself.
    if !known {
        ranges.push((lo, hi));
    }
    if ranges.len() > MAX_PROOF_HASHES {
        return Err(Error::ProofUnavailable {
            reason: "subtree consistency proof would exceed 63 hashes",
        });
    }
    ranges
        .iter()
        .rev()
        .map(|&(lo, hi)| range_hash(source, lo, hi))
        .collect()
}

/// Verifies that `subtree_hash` is the hash of the subtree `[start, end)` of the
/// tree of `tree_size` leaves with `root` (draft-ietf-plants-merkle-tree-certs-03,
/// section 4.4.3): the proof rebuilds both hashes, and every leaf hashed into the
/// subtree is hashed into the root at the same position.
///
/// The draft's procedure is followed step by step. It keeps three node indices
/// at the current level: `fnode` (the subtree's first leaf), `snode` (its last
/// leaf) and `tnode` (the tree's last leaf), and two running hashes: `fr` for the
/// subtree and `sr` for the root. Special cases fall out of it: a subtree that is
/// a whole node of the tree (a complete subtree, or one ending at `tree_size`)
/// is its own first proof hash, which is therefore omitted; the whole tree needs
/// an empty proof and `subtree_hash == root`.
pub fn verify_subtree_consistency(
    start: u64,
    end: u64,
    subtree_hash: &Hash,
    tree_size: u64,
    root: &Hash,
    proof: &[Hash],
) -> Result<()> {
    check_proof_length(proof)?;
    let invalid = |reason| Err(Error::ConsistencyProofInvalid { reason });
    if !is_valid_subtree(start, end) {
        return invalid("not a valid subtree");
    }
    if end > tree_size {
        return invalid("subtree ends beyond the tree size");
    }
    if start == 0 && end == tree_size {
        // What the procedure below reduces to; checked here for a clearer error.
        if !proof.is_empty() {
            return invalid("proof must be empty for the whole tree");
        }
        if subtree_hash != root {
            return invalid("subtree is the whole tree but its hash is not the root");
        }
        return Ok(());
    }
    // `end >= 1` and `tree_size >= end` since the subtree is valid and non-empty.
    let (mut fnode, mut snode, mut tnode) = (start, end - 1, tree_size - 1);
    // Climb to the lowest node of the tree that holds the subtree's root, or,
    // off the tree's right edge, to where the subtree's right edge turns left.
    if snode == tnode {
        while fnode != snode {
            fnode >>= 1;
            snode >>= 1;
            tnode >>= 1;
        }
    } else {
        while fnode != snode && snode & 1 == 1 {
            fnode >>= 1;
            snode >>= 1;
            tnode >>= 1;
        }
    }
    // If the subtree is a node of the tree, the verifier holds its hash;
    // otherwise the proof starts with the hash of the node reached.
    let (seed, rest) = if fnode == snode {
        (*subtree_hash, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (*first, rest),
            None => return invalid("proof is empty"),
        }
    };
    let (mut fr, mut sr) = (seed, seed);
    for sibling in rest {
        if tnode == 0 {
            return invalid("proof is longer than needed");
        }
        if snode & 1 == 1 || snode == tnode {
            // A left sibling: it belongs to the root, and to the subtree while
            // the subtree still spans more than one node at this level.
            if fnode < snode {
                fr = node_hash(sibling, &fr);
            }
            sr = node_hash(sibling, &sr);
            // Skip the levels where this node has no right sibling. `snode` is
            // odd or equals `tnode`, which is not 0, so this ends.
            while snode & 1 == 0 {
                fnode >>= 1;
                snode >>= 1;
                tnode >>= 1;
            }
        } else {
            // A right sibling: beyond the subtree, in the root only.
            sr = node_hash(&sr, sibling);
        }
        fnode >>= 1;
        snode >>= 1;
        tnode >>= 1;
    }
    if tnode != 0 {
        return invalid("proof is shorter than needed");
    }
    if fr != *subtree_hash {
        return invalid("subtree hash does not match");
    }
    if sr != *root {
        return invalid("root does not match");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    /// The RFC 6962 definition, recursively, as the reference for everything else.
    fn naive_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&naive_root(&leaves[..k]), &naive_root(&leaves[k..]))
            }
        }
    }

    #[test]
    fn node_hash_matches_streaming_sha256() {
        let streaming = |left: &Hash, right: &Hash| {
            let mut hasher = Sha256::new();
            hasher.update([1u8]);
            hasher.update(left.0);
            hasher.update(right.0);
            Hash(hasher.finalize().into())
        };
        let mut hashes = vec![Hash([0; 32]), Hash([0xff; 32])];
        hashes.extend(leaves(6));
        for left in &hashes {
            for right in &hashes {
                assert_eq!(node_hash(left, right), streaming(left, right));
            }
        }
        // RFC 6962 tree of the two leaves "" and "\x00" (certificate-transparency-go
        // merkle test vectors, size 2).
        assert_eq!(
            node_hash(&leaf_hash(b""), &leaf_hash(b"\x00")).to_hex(),
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"
        );
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(
            empty_root().to_base64(),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    #[test]
    fn root_builder_matches_naive_definition() {
        let all = leaves(70);
        let mut builder = RootBuilder::new();
        assert_eq!(builder.root(), empty_root());
        for (i, leaf) in all.iter().enumerate() {
            builder.push(*leaf);
            assert_eq!(builder.root(), naive_root(&all[..=i]), "size {}", i + 1);
            assert!(builder.subtrees.len() <= 7);
        }
    }

    #[test]
    fn proofs_round_trip_for_small_trees() {
        let all = leaves(33);
        for size in 1..=33u64 {
            let root = naive_root(&all[..size as usize]);
            let mut source = LeafHashes(&all);
            assert_eq!(tree_root(&mut source, size).unwrap(), root);
            for index in 0..size {
                let proof = prove_inclusion(&mut source, index, size).unwrap();
                verify_inclusion(&all[index as usize], index, size, &proof, &root).unwrap();
            }
            for old in 1..=size {
                let old_root = naive_root(&all[..old as usize]);
                let proof = prove_consistency(&mut source, old, size).unwrap();
                verify_consistency(old, size, &old_root, &root, &proof).unwrap();
            }
        }
    }

    #[test]
    fn proof_over_63_hashes_is_refused_before_hashing() {
        let proof = vec![Hash([0; 32]); 64];
        assert_eq!(
            verify_inclusion(&Hash([0; 32]), 0, 2, &proof, &Hash([0; 32])).unwrap_err(),
            Error::ProofTooLong { count: 64, max: 63 }
        );
        assert_eq!(
            verify_consistency(1, 2, &Hash([0; 32]), &Hash([0; 32]), &proof)
                .unwrap_err()
                .kind(),
            "proof_too_long"
        );
    }

    #[test]
    fn hash_parsers_reject_wrong_lengths_and_alphabets() {
        assert!(Hash::parse_base64("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=").is_ok());
        assert!(Hash::parse_base64("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU").is_err());
        assert!(Hash::parse_base64("47DEQpj8HBSa-_TImW+5JCeuQeRkm5NMpJWZG3hSuFU=").is_err());
        assert!(Hash::parse_hex(&"ab".repeat(32)).is_ok());
        assert!(Hash::parse_hex(&"ab".repeat(31)).is_err());
        assert!(Hash::parse_hex(&"zz".repeat(32)).is_err());
    }

    /// Every valid subtree `[start, end)` with `end <= n`.
    fn valid_subtrees(n: u64) -> impl Iterator<Item = (u64, u64)> {
        (0..n).flat_map(move |start| {
            (start + 1..=n)
                .filter(move |&end| is_valid_subtree(start, end))
                .map(move |end| (start, end))
        })
    }

    #[test]
    fn subtree_validity_follows_the_draft() {
        // The draft's examples, and its counterexample [7, 9).
        assert!(is_valid_subtree(4, 8));
        assert!(is_valid_subtree(8, 13));
        assert!(!is_valid_subtree(7, 9));
        // Size one is always aligned; size two is not at an odd start; [0, n)
        // always is.
        assert!(is_valid_subtree(7, 8));
        assert!(!is_valid_subtree(3, 5));
        assert!(is_valid_subtree(0, 13));
        // BIT_CEIL(5) is 8: [8, 13) is aligned but [4, 9) is not.
        assert!(!is_valid_subtree(4, 9));
        // Empty and reversed intervals are not subtrees under -03.
        assert!(!is_valid_subtree(0, 0));
        assert!(!is_valid_subtree(8, 8));
        assert!(!is_valid_subtree(9, 8));
        // Above 2^63 leaves BIT_CEIL is 2^64: only start 0 is a multiple.
        assert!(is_valid_subtree(0, u64::MAX));
        assert!(is_valid_subtree(0, (1 << 63) + 1));
        assert!(!is_valid_subtree(1 << 62, u64::MAX));
        assert!(!is_valid_subtree(1, u64::MAX));
        // Exactly 2^63 - 1 leaves from 2^63: BIT_CEIL is 2^63, which fits.
        assert!(is_valid_subtree(1 << 63, u64::MAX));
        assert!(is_valid_subtree(u64::MAX - 1, u64::MAX));
        // The definition, spelled out with a wider integer.
        for start in 0..70u64 {
            for end in 0..70u64 {
                let expected = start < end
                    && u128::from(start) % u128::from(end - start).next_power_of_two() == 0;
                assert_eq!(is_valid_subtree(start, end), expected, "[{start}, {end})");
            }
        }
    }

    #[test]
    fn subtree_hash_is_the_hash_of_the_range_as_its_own_tree() {
        let all = leaves(40);
        let mut source = LeafHashes(&all);
        for (start, end) in valid_subtrees(40) {
            assert_eq!(
                subtree_hash(&mut source, start, end).unwrap(),
                naive_root(&all[start as usize..end as usize]),
                "[{start}, {end})"
            );
        }
        assert_eq!(
            subtree_hash(&mut source, 7, 9).unwrap_err().kind(),
            "proof_unavailable"
        );
        assert_eq!(
            subtree_hash(&mut source, 4, 4).unwrap_err().kind(),
            "proof_unavailable"
        );
        // Beyond the leaves the source holds.
        assert_eq!(
            subtree_hash(&mut source, 32, 48).unwrap_err().kind(),
            "proof_unavailable"
        );
    }

    #[test]
    fn subtree_proofs_match_the_drafts_examples() {
        // Section 4.4.2: in a tree of 14, [4, 8) needs MTH(D[0:4]), MTH(D[8:14]);
        // [8, 13) needs d[12], d[13], MTH(D[8:12]), MTH(D[0:8]).
        let all = leaves(14);
        let mth = |a: usize, b: usize| naive_root(&all[a..b]);
        let mut source = LeafHashes(&all);
        let root = mth(0, 14);
        let proof = prove_subtree_consistency(&mut source, 4, 8, 14).unwrap();
        assert_eq!(proof, vec![mth(0, 4), mth(8, 14)]);
        verify_subtree_consistency(4, 8, &mth(4, 8), 14, &root, &proof).unwrap();
        let proof = prove_subtree_consistency(&mut source, 8, 13, 14).unwrap();
        assert_eq!(proof, vec![all[12], all[13], mth(8, 12), mth(0, 8)]);
        verify_subtree_consistency(8, 13, &mth(8, 13), 14, &root, &proof).unwrap();
        // [8, 13) is a node of the tree of 13, so its own hash is not sent.
        let proof = prove_subtree_consistency(&mut source, 8, 13, 13).unwrap();
        assert_eq!(proof, vec![mth(0, 8)]);
        verify_subtree_consistency(8, 13, &mth(8, 13), 13, &mth(0, 13), &proof).unwrap();
    }

    #[test]
    fn subtree_proofs_generalize_rfc6962_proofs() {
        // The draft: SUBTREE_PROOF(0, end, D_n) = PROOF(end, D_n) and
        // SUBTREE_PROOF(i, i + 1, D_n) = PATH(i, D_n).
        let all = leaves(40);
        let mut source = LeafHashes(&all);
        for n in 1..=40u64 {
            for end in 1..=n {
                assert_eq!(
                    prove_subtree_consistency(&mut source, 0, end, n).unwrap(),
                    prove_consistency(&mut source, end, n).unwrap(),
                    "[0, {end}) in {n}"
                );
            }
            for i in 0..n {
                assert_eq!(
                    prove_subtree_consistency(&mut source, i, i + 1, n).unwrap(),
                    prove_inclusion(&mut source, i, n).unwrap(),
                    "[{i}, {}) in {n}",
                    i + 1
                );
            }
        }
    }

    #[test]
    fn subtree_proofs_round_trip_and_reject_damage() {
        let all = leaves(33);
        let mut source = LeafHashes(&all);
        let flip = |hash: &Hash| {
            let mut out = *hash;
            out.0[7] ^= 0x10;
            out
        };
        for n in 1..=33u64 {
            let root = naive_root(&all[..n as usize]);
            for (start, end) in valid_subtrees(n) {
                let hash = naive_root(&all[start as usize..end as usize]);
                let proof = prove_subtree_consistency(&mut source, start, end, n).unwrap();
                let verify = |start, end, hash: &Hash, n, root: &Hash, proof: &[Hash]| {
                    verify_subtree_consistency(start, end, hash, n, root, proof)
                };
                verify(start, end, &hash, n, &root, &proof).unwrap();
                let what = format!("[{start}, {end}) in {n}");
                assert!(
                    verify(start, end, &flip(&hash), n, &root, &proof).is_err(),
                    "{what}"
                );
                assert!(
                    verify(start, end, &hash, n, &flip(&root), &proof).is_err(),
                    "{what}"
                );
                for i in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[i] = flip(&bad[i]);
                    assert!(verify(start, end, &hash, n, &root, &bad).is_err(), "{what}");
                    let mut short = proof.clone();
                    short.remove(i);
                    assert!(
                        verify(start, end, &hash, n, &root, &short).is_err(),
                        "{what}"
                    );
                }
                let mut long = proof.clone();
                long.push(root);
                assert!(
                    verify(start, end, &hash, n, &root, &long).is_err(),
                    "{what}"
                );
                long.insert(0, hash);
                long.pop();
                assert!(
                    verify(start, end, &hash, n, &root, &long).is_err(),
                    "{what}"
                );
            }
        }
    }

    #[test]
    fn subtree_proofs_bind_the_root_not_the_tree_size() {
        // As with RFC 6962 inclusion proofs, the verifier cannot tell the tree
        // of 3 from a tree of 4 whose node [2, 4) hashed to d[2]: the same proof
        // and root verify at both sizes. A witness takes the size from the
        // checkpoint it signed, so this does not matter there; it is why the
        // differential tests judge wrong-size cases against a reference
        // verifier instead of expecting a rejection.
        let all = leaves(3);
        let root = naive_root(&all);
        let proof = prove_subtree_consistency(&mut LeafHashes(&all), 0, 1, 3).unwrap();
        assert_eq!(proof, vec![all[1], all[2]]);
        verify_subtree_consistency(0, 1, &all[0], 3, &root, &proof).unwrap();
        verify_subtree_consistency(0, 1, &all[0], 4, &root, &proof).unwrap();
        // Sizes with another shape do not verify.
        assert!(verify_subtree_consistency(0, 1, &all[0], 5, &root, &proof).is_err());
        assert!(verify_subtree_consistency(0, 1, &all[0], 2, &root, &proof).is_err());
    }

    #[test]
    fn subtree_verification_special_cases() {
        let all = leaves(8);
        let root = naive_root(&all);
        let err = |start, end, hash: &Hash, n, proof: &[Hash]| {
            verify_subtree_consistency(start, end, hash, n, &root, proof).unwrap_err()
        };
        // The whole tree: empty proof, and its hash is the root.
        verify_subtree_consistency(0, 8, &root, 8, &root, &[]).unwrap();
        assert_eq!(
            err(0, 8, &all[0], 8, &[]).kind(),
            "consistency_proof_invalid"
        );
        assert_eq!(
            err(0, 8, &root, 8, &[root]).kind(),
            "consistency_proof_invalid"
        );
        // A complete subtree needs no seed, but a proof is still required.
        assert_eq!(err(4, 8, &root, 8, &[]).kind(), "consistency_proof_invalid");
        // A subtree that is not a node of the tree needs a seed hash.
        let mth = |a: usize, b: usize| naive_root(&all[a..b]);
        let proof = {
            let mut source = LeafHashes(&all);
            prove_subtree_consistency(&mut source, 4, 7, 8).unwrap()
        };
        assert_eq!(proof, vec![all[6], all[7], mth(4, 6), mth(0, 4)]);
        verify_subtree_consistency(4, 7, &mth(4, 7), 8, &root, &proof).unwrap();
        assert_eq!(
            err(4, 7, &mth(4, 7), 8, &[]),
            Error::ConsistencyProofInvalid {
                reason: "proof is empty"
            }
        );
        // Invalid subtrees and sizes are refused before any hashing.
        assert_eq!(
            err(4, 9, &root, 16, &[]),
            Error::ConsistencyProofInvalid {
                reason: "not a valid subtree"
            }
        );
        assert_eq!(
            err(4, 4, &empty_root(), 8, &[]).kind(),
            "consistency_proof_invalid"
        );
        assert_eq!(
            err(8, 12, &root, 10, &[]),
            Error::ConsistencyProofInvalid {
                reason: "subtree ends beyond the tree size"
            }
        );
        assert_eq!(
            err(0, 1, &all[0], 0, &[]).kind(),
            "consistency_proof_invalid"
        );
        // More than 63 hashes is refused before anything else.
        assert_eq!(
            err(4, 9, &root, 2, &[root; 64]),
            Error::ProofTooLong { count: 64, max: 63 }
        );
        // Generation refuses the same inputs.
        let mut source = LeafHashes(&all);
        for (start, end, n) in [(4, 9, 16), (4, 4, 8), (8, 12, 10), (0, 1, 0)] {
            assert_eq!(
                prove_subtree_consistency(&mut source, start, end, n)
                    .unwrap_err()
                    .kind(),
                "proof_unavailable",
                "[{start}, {end}) in {n}"
            );
        }
        assert_eq!(
            prove_subtree_consistency(&mut source, 0, 1, MAX_TREE_SIZE + 1)
                .unwrap_err()
                .kind(),
            "proof_unavailable"
        );
    }

    /// Answers every complete subtree of a tree whose leaves are all alike, in
    /// O(1): the hash depends only on the level.
    struct Uniform(Vec<Hash>);

    impl SubtreeHashSource for Uniform {
        fn subtree_hash(&mut self, level: u8, _index: u64) -> Result<Hash> {
            Ok(self.0[usize::from(level)])
        }
    }

    #[test]
    fn subtree_proof_over_63_hashes_is_refused_before_hashing() {
        // Above 2^62 leaves a subtree consistency proof can need 64 hashes:
        // 63 levels plus the seed. The shape is found without any hash lookup.
        struct Refuse;
        impl SubtreeHashSource for Refuse {
            fn subtree_hash(&mut self, _level: u8, _index: u64) -> Result<Hash> {
                panic!("no hash should be read");
            }
        }
        assert_eq!(
            prove_subtree_consistency(&mut Refuse, 4, 7, MAX_TREE_SIZE).unwrap_err(),
            Error::ProofUnavailable {
                reason: "subtree consistency proof would exceed 63 hashes"
            }
        );
        // One leaf fewer in the subtree fits: [4, 6) is a node of the tree.
        let mut levels = vec![leaf_hash(b"x")];
        for _ in 0..63 {
            let last = levels[levels.len() - 1];
            levels.push(node_hash(&last, &last));
        }
        let mut uniform = Uniform(levels);
        let proof = prove_subtree_consistency(&mut uniform, 4, 6, MAX_TREE_SIZE).unwrap();
        assert_eq!(proof.len(), 62);
        let root = tree_root(&mut uniform, MAX_TREE_SIZE).unwrap();
        let hash = subtree_hash(&mut uniform, 4, 6).unwrap();
        verify_subtree_consistency(4, 6, &hash, MAX_TREE_SIZE, &root, &proof).unwrap();
    }
}
