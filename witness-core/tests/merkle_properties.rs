#![allow(clippy::unwrap_used)]
//! Property tests of `witness_core::merkle` and `witness_core::tiles` against a
//! naive, recursive RFC 6962 reference written here, independently of the
//! library: MTH, PATH and SUBPROOF exactly as RFC 6962 sections 2.1, 2.1.1 and
//! 2.1.2 define them, plus verifiers that run those recursions backwards.
//!
//! Debug-mode SHA-256 costs about 9 µs here, so the reference memoizes subtree
//! hashes and the big tree (2^17 + 1 leaves) is built once per test binary.

use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

use proptest::prelude::*;
use sha2::{Digest, Sha256};
use witness_core::Error;
use witness_core::merkle::{
    HASH_SIZE, Hash, LeafHashes, MAX_PROOF_HASHES, MAX_TREE_SIZE, RootBuilder, SubtreeHashSource,
    empty_root, leaf_hash, node_hash, prove_consistency, prove_inclusion,
    root_from_inclusion_proof, tree_root, verify_consistency, verify_inclusion,
};
use witness_core::tiles::{TILE_HEIGHT, TILE_WIDTH, TileHashSource, TileId, required_tiles};

// ---------------------------------------------------------------------------
// The reference: RFC 6962 written out recursively, with its own hashing.
// ---------------------------------------------------------------------------

fn ref_empty() -> Hash {
    Hash(Sha256::digest(b"").into())
}

fn ref_leaf(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(data);
    Hash(hasher.finalize().into())
}

fn ref_node(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left.0);
    hasher.update(right.0);
    Hash(hasher.finalize().into())
}

/// k: the largest power of two smaller than n (n >= 2), found by doubling.
fn split(n: u64) -> u64 {
    assert!(n >= 2);
    let mut k = 1u64;
    while k < n - k {
        k *= 2;
    }
    k
}

fn leaf_data(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

/// A tree the reference can compute MTH over.
trait Mth {
    /// MTH(D[start:end]).
    fn mth(&self, start: u64, end: u64) -> Hash;
}

/// PATH(m, D[start:end]) (RFC 6962 2.1.1), `m` relative to `start`, leaf first.
fn ref_path(tree: &dyn Mth, m: u64, start: u64, end: u64) -> Vec<Hash> {
    let n = end - start;
    if n == 1 {
        return Vec::new();
    }
    let k = split(n);
    if m < k {
        let mut path = ref_path(tree, m, start, start + k);
        path.push(tree.mth(start + k, end));
        path
    } else {
        let mut path = ref_path(tree, m - k, start + k, end);
        path.push(tree.mth(start, start + k));
        path
    }
}

/// PROOF(m, D[0:n]) = SUBPROOF(m, D[0:n], true) (RFC 6962 2.1.2).
fn ref_proof(tree: &dyn Mth, m: u64, n: u64) -> Vec<Hash> {
    ref_subproof(tree, m, 0, n, true)
}

fn ref_subproof(tree: &dyn Mth, m: u64, start: u64, end: u64, b: bool) -> Vec<Hash> {
    let n = end - start;
    if m == n {
        return if b {
            Vec::new()
        } else {
            vec![tree.mth(start, end)]
        };
    }
    let k = split(n);
    if m <= k {
        let mut proof = ref_subproof(tree, m, start, start + k, b);
        proof.push(tree.mth(start + k, end));
        proof
    } else {
        let mut proof = ref_subproof(tree, m - k, start + k, end, false);
        proof.push(tree.mth(start, start + k));
        proof
    }
}

/// The root an inclusion proof implies, running PATH's recursion backwards;
/// `None` if the proof does not have the shape PATH gives for (index, size).
fn ref_root_from_path(leaf: Hash, index: u64, size: u64, proof: &[Hash]) -> Option<Hash> {
    fn run(leaf: Hash, m: u64, n: u64, proof: &[Hash]) -> Option<Hash> {
        if n == 1 {
            return proof.is_empty().then_some(leaf);
        }
        let (last, rest) = proof.split_last()?;
        let k = split(n);
        if m < k {
            Some(ref_node(&run(leaf, m, k, rest)?, last))
        } else {
            Some(ref_node(last, &run(leaf, m - k, n - k, rest)?))
        }
    }
    if index >= size {
        return None;
    }
    run(leaf, index, size, proof)
}

/// The (old root, new root) a consistency proof implies, running SUBPROOF's
/// recursion backwards; `None` if the proof does not have SUBPROOF's shape.
fn ref_roots_from_consistency(
    old_size: u64,
    new_size: u64,
    old_root: Hash,
    proof: &[Hash],
) -> Option<(Hash, Hash)> {
    fn run(m: u64, n: u64, b: bool, old_root: Hash, proof: &[Hash]) -> Option<(Hash, Hash)> {
        if m == n {
            return if b {
                proof.is_empty().then_some((old_root, old_root))
            } else {
                (proof.len() == 1).then(|| (proof[0], proof[0]))
            };
        }
        let (last, rest) = proof.split_last()?;
        let k = split(n);
        if m <= k {
            let (old, new) = run(m, k, b, old_root, rest)?;
            Some((old, ref_node(&new, last)))
        } else {
            let (old, new) = run(m - k, n - k, false, old_root, rest)?;
            Some((ref_node(last, &old), ref_node(last, &new)))
        }
    }
    if old_size == 0 || old_size > new_size {
        return None;
    }
    run(old_size, new_size, true, old_root, proof)
}

fn ref_verify_inclusion(leaf: Hash, index: u64, size: u64, proof: &[Hash], root: Hash) -> bool {
    proof.len() <= MAX_PROOF_HASHES && ref_root_from_path(leaf, index, size, proof) == Some(root)
}

fn ref_verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: Hash,
    new_root: Hash,
    proof: &[Hash],
) -> bool {
    proof.len() <= MAX_PROOF_HASHES
        && ref_roots_from_consistency(old_size, new_size, old_root, proof)
            == Some((old_root, new_root))
}

/// A tree over real leaves (`leaf_data(i)`), with MTH memoized for every range
/// the recursion for the whole tree visits (which includes every complete
/// subtree).
struct Reference {
    leaves: Vec<Hash>,
    memo: HashMap<(u64, u64), Hash>,
}

impl Reference {
    /// A tree of `count` leaves; MTH is memoized for every node of the trees of
    /// the sizes in `sizes` (so for every hash their proofs hold).
    fn new(count: u64, sizes: impl IntoIterator<Item = u64>) -> Reference {
        let leaves: Vec<Hash> = (0..count).map(|i| ref_leaf(&leaf_data(i))).collect();
        let mut reference = Reference {
            leaves,
            memo: HashMap::new(),
        };
        for size in sizes {
            reference.fill(0, size);
        }
        reference
    }

    fn fill(&mut self, start: u64, end: u64) -> Hash {
        if let Some(hash) = self.memo.get(&(start, end)) {
            return *hash;
        }
        let hash = match end - start {
            0 => ref_empty(),
            1 => self.leaves[start as usize],
            n => {
                let k = split(n);
                let left = self.fill(start, start + k);
                let right = self.fill(start + k, end);
                ref_node(&left, &right)
            }
        };
        self.memo.insert((start, end), hash);
        hash
    }

    fn len(&self) -> u64 {
        self.leaves.len() as u64
    }
}

impl Mth for Reference {
    fn mth(&self, start: u64, end: u64) -> Hash {
        if let Some(hash) = self.memo.get(&(start, end)) {
            return *hash;
        }
        match end - start {
            0 => ref_empty(),
            1 => self.leaves[start as usize],
            n => {
                let k = split(n);
                ref_node(&self.mth(start, start + k), &self.mth(start + k, end))
            }
        }
    }
}

/// A tree of up to 2^63 - 1 identical leaves: the hash of a complete subtree
/// depends only on its level, so trees of any size are cheap to reason about.
struct Uniform {
    /// levels[l] is the hash of a complete subtree of 2^l leaves.
    levels: Vec<Hash>,
}

impl Uniform {
    fn new(leaf: Hash) -> Uniform {
        let mut levels = vec![leaf];
        for _ in 0..64 {
            let last = *levels.last().unwrap();
            levels.push(ref_node(&last, &last));
        }
        Uniform { levels }
    }
}

impl Mth for Uniform {
    fn mth(&self, start: u64, end: u64) -> Hash {
        let n = end - start;
        if n == 0 {
            return ref_empty();
        }
        if n.is_power_of_two() {
            return self.levels[n.trailing_zeros() as usize];
        }
        let k = split(n);
        ref_node(&self.mth(start, start + k), &self.mth(start + k, end))
    }
}

/// The library's view of the uniform tree.
struct UniformSource<'a>(&'a Uniform);

impl SubtreeHashSource for UniformSource<'_> {
    fn subtree_hash(&mut self, level: u8, _index: u64) -> witness_core::Result<Hash> {
        self.0
            .levels
            .get(usize::from(level))
            .copied()
            .ok_or(Error::ProofUnavailable { reason: "test" })
    }
}

/// The reference's complete subtree hashes as a library hash source, limited
/// to the first `size` leaves.
struct ReferenceSource<'a> {
    reference: &'a Reference,
    size: u64,
}

impl SubtreeHashSource for ReferenceSource<'_> {
    fn subtree_hash(&mut self, level: u8, index: u64) -> witness_core::Result<Hash> {
        let unavailable = Error::ProofUnavailable { reason: "test" };
        let width = 1u64.checked_shl(level.into()).ok_or(unavailable.clone())?;
        let start = index.checked_mul(width).ok_or(unavailable.clone())?;
        let end = start.checked_add(width).ok_or(unavailable.clone())?;
        if end > self.size {
            return Err(unavailable);
        }
        Ok(self.reference.mth(start, end))
    }
}

/// `LeafHashes` behind a cache that asks `LeafHashes` for every hash once, and
/// asserts that proof generation only reads subtrees inside the tree.
///
/// `LeafHashes` recomputes a subtree from its leaves on every call (O(width)),
/// which makes an exhaustive sweep over every (size, index) cubic in debug
/// builds; the cache keeps the hashes `LeafHashes`'s own.
struct CachedLeafHashes<'a> {
    inner: LeafHashes<'a>,
    cache: HashMap<(u8, u64), Hash>,
    tree_size: u64,
}

impl SubtreeHashSource for CachedLeafHashes<'_> {
    fn subtree_hash(&mut self, level: u8, index: u64) -> witness_core::Result<Hash> {
        let end = (index + 1) << level;
        assert!(
            end <= self.tree_size,
            "read subtree ({level}, {index}) outside a tree of {}",
            self.tree_size
        );
        if let Some(hash) = self.cache.get(&(level, index)) {
            return Ok(*hash);
        }
        let hash = self.inner.subtree_hash(level, index)?;
        self.cache.insert((level, index), hash);
        Ok(hash)
    }
}

const EXHAUSTIVE: u64 = 256;
static SMALL: LazyLock<Reference> = LazyLock::new(|| Reference::new(EXHAUSTIVE, 1..=EXHAUSTIVE));
/// Covers every size up to 2^17 + 1, so 2^17 - 1, 2^17 and 2^17 + 1 too.
const BIG_SIZE: u64 = (1 << 17) + 1;
static BIG: LazyLock<Reference> = LazyLock::new(|| Reference::new(BIG_SIZE, [BIG_SIZE]));

/// The proof positions to mutate: all of a short proof, a sample of a long one.
fn positions(len: usize, seed: usize) -> BTreeSet<usize> {
    if len <= 20 {
        return (0..len).collect();
    }
    BTreeSet::from([0, 1, len / 2, len - 2, len - 1, seed % len])
}

fn flip(hash: &Hash, bit: usize) -> Hash {
    let mut out = *hash;
    out.0[(bit / 8) % HASH_SIZE] ^= 1 << (bit % 8);
    out
}

// ---------------------------------------------------------------------------
// Exhaustive checks for every tree size 1..=256.
// ---------------------------------------------------------------------------

#[test]
fn hashing_primitives_are_rfc6962() {
    assert_eq!(empty_root(), ref_empty());
    assert_eq!(
        empty_root().to_base64(),
        "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    );
    for data in [&b""[..], b"\x00", b"\x01", b"leaf", &[0xff; 200]] {
        assert_eq!(leaf_hash(data), ref_leaf(data));
    }
    let (a, b) = (ref_leaf(b"a"), ref_leaf(b"b"));
    assert_eq!(node_hash(&a, &b), ref_node(&a, &b));
    assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
    // Domain separation: a leaf whose data is `left || right` is not that node.
    let mut both = a.0.to_vec();
    both.extend_from_slice(&b.0);
    assert_ne!(leaf_hash(&both), node_hash(&a, &b));
}

#[test]
fn exhaustive_roots_from_tree_root_and_root_builder() {
    let reference = &*SMALL;
    let leaves = &reference.leaves;
    let mut builder = RootBuilder::new();
    assert_eq!(builder.root(), ref_empty());
    assert_eq!(tree_root(&mut LeafHashes(&[]), 0).unwrap(), ref_empty());
    for n in 1..=EXHAUSTIVE {
        let want = reference.mth(0, n);
        builder.push(leaves[n as usize - 1]);
        assert_eq!(builder.size(), n);
        assert_eq!(builder.root(), want, "RootBuilder at size {n}");
        assert_eq!(
            tree_root(&mut LeafHashes(&leaves[..n as usize]), n).unwrap(),
            want,
            "tree_root at size {n}"
        );
        // One leaf short of the tree is an error, not a wrong root.
        assert!(tree_root(&mut LeafHashes(&leaves[..n as usize - 1]), n).is_err());
    }
}

#[test]
fn exhaustive_leaf_hashes_subtrees() {
    let reference = &*SMALL;
    let mut source = LeafHashes(&reference.leaves);
    for level in 0..=8u8 {
        let count = EXHAUSTIVE >> level;
        for index in 0..count {
            let want = reference.mth(index << level, (index + 1) << level);
            assert_eq!(source.subtree_hash(level, index).unwrap(), want);
        }
        assert!(source.subtree_hash(level, count).is_err());
        assert!(source.subtree_hash(level, u64::MAX).is_err());
    }
    // Subtrees wider than any list of leaves, including 2^64 leaves and more
    // (which once came back as the empty-tree hash).
    for level in [9u8, 62, 63, 64, 65, 128, 255] {
        for index in [0, 1, u64::MAX] {
            assert_eq!(
                source.subtree_hash(level, index).unwrap_err().kind(),
                "proof_unavailable",
                "level {level} index {index}"
            );
        }
    }
}

#[test]
fn exhaustive_inclusion_proofs() {
    let reference = &*SMALL;
    let mut source = CachedLeafHashes {
        inner: LeafHashes(&reference.leaves),
        cache: HashMap::new(),
        tree_size: 0,
    };
    for n in 1..=EXHAUSTIVE {
        source.tree_size = n;
        let root = reference.mth(0, n);
        for i in 0..n {
            let want = ref_path(reference, i, 0, n);
            let proof = prove_inclusion(&mut source, i, n).unwrap();
            assert_eq!(proof, want, "PATH({i}, D[{n}])");
            verify_inclusion(&reference.leaves[i as usize], i, n, &proof, &root)
                .unwrap_or_else(|e| panic!("PATH({i}, D[{n}]) does not verify: {e}"));
        }
        assert!(prove_inclusion(&mut source, n, n).is_err());
    }
}

#[test]
fn exhaustive_consistency_proofs() {
    let reference = &*SMALL;
    let mut source = CachedLeafHashes {
        inner: LeafHashes(&reference.leaves),
        cache: HashMap::new(),
        tree_size: 0,
    };
    for n in 1..=EXHAUSTIVE {
        source.tree_size = n;
        let root = reference.mth(0, n);
        for m in 1..=n {
            let want = ref_proof(reference, m, n);
            let proof = prove_consistency(&mut source, m, n).unwrap();
            assert_eq!(proof, want, "PROOF({m}, D[{n}])");
            verify_consistency(m, n, &reference.mth(0, m), &root, &proof)
                .unwrap_or_else(|e| panic!("PROOF({m}, D[{n}]) does not verify: {e}"));
        }
        assert!(prove_consistency(&mut source, 0, n).is_err());
        assert!(prove_consistency(&mut source, n + 1, n).is_err());
    }
}

// ---------------------------------------------------------------------------
// Negative properties: every mutation of a valid proof is rejected, except the
// size and index changes the algorithm cannot see (see `check_inclusion_mutants`).
// ---------------------------------------------------------------------------

/// Checks that every mutation of a valid inclusion proof fails, without panic.
///
/// Flipping a bit of a proof hash, of the leaf or of the root, and adding or
/// removing a proof hash must always fail. Changing the index or the size by one
/// fails unless the new (index, size) gives PATH exactly the same shape (same
/// length, same left/right sides): then the computation is the same and the
/// proof verifies, as in every RFC 9162 verifier; the tree size is bound by the
/// signed checkpoint, not by the proof. So for those the library must agree
/// with the reference verifier, whichever way it goes. Returns how many such
/// same-shape changes verified.
fn check_inclusion_mutants(
    leaf: Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: Hash,
    bit: usize,
    distinct_leaves: bool,
) -> usize {
    let must_fail = |what: &str, leaf: Hash, proof: &[Hash], root: Hash| {
        let result = verify_inclusion(&leaf, index, size, proof, &root);
        assert!(
            result.is_err(),
            "{what} verified (index {index}, size {size})"
        );
    };
    verify_inclusion(&leaf, index, size, proof, &root).unwrap();
    for j in positions(proof.len(), bit) {
        let mut mutated = proof.to_vec();
        mutated[j] = flip(&mutated[j], bit + j);
        must_fail("proof hash bit flip", leaf, &mutated, root);
        let mut removed = proof.to_vec();
        removed.remove(j);
        must_fail("proof hash removed", leaf, &removed, root);
    }
    must_fail("leaf bit flip", flip(&leaf, bit), proof, root);
    must_fail("root bit flip", leaf, proof, flip(&root, bit));
    let mut appended = proof.to_vec();
    appended.push(root);
    must_fail("proof hash appended", leaf, &appended, root);
    let mut prepended = vec![leaf];
    prepended.extend_from_slice(proof);
    must_fail("proof hash prepended", leaf, &prepended, root);
    let mut same_shape = 0;
    let changes = [
        (index.checked_sub(1), Some(size)),
        (index.checked_add(1), Some(size)),
        (Some(index), size.checked_sub(1)),
        (Some(index), size.checked_add(1)),
    ];
    for (i, n) in changes {
        let (Some(i), Some(n)) = (i, n) else { continue };
        let ours = verify_inclusion(&leaf, i, n, proof, &root).is_ok();
        let expected = ref_verify_inclusion(leaf, i, n, proof, root);
        assert_eq!(
            ours, expected,
            "({index}, {size}) changed to ({i}, {n}): library {ours}, reference {expected}"
        );
        if ours {
            // Two leaves of one tree sit at different places, so with distinct
            // leaf hashes only a change of size can keep the computation.
            assert!(!distinct_leaves || i == index, "an index change verified");
            same_shape += 1;
        }
    }
    same_shape
}

/// As `check_inclusion_mutants`, for a consistency proof.
fn check_consistency_mutants(
    old_size: u64,
    new_size: u64,
    old_root: Hash,
    new_root: Hash,
    proof: &[Hash],
    bit: usize,
) -> usize {
    let (m, n) = (old_size, new_size);
    let must_fail = |what: &str, old: Hash, new: Hash, proof: &[Hash]| {
        let result = verify_consistency(m, n, &old, &new, proof);
        assert!(result.is_err(), "{what} verified ({m} -> {n})");
    };
    verify_consistency(m, n, &old_root, &new_root, proof).unwrap();
    for j in positions(proof.len(), bit) {
        let mut mutated = proof.to_vec();
        mutated[j] = flip(&mutated[j], bit + j);
        must_fail("proof hash bit flip", old_root, new_root, &mutated);
        let mut removed = proof.to_vec();
        removed.remove(j);
        must_fail("proof hash removed", old_root, new_root, &removed);
    }
    must_fail("old root bit flip", flip(&old_root, bit), new_root, proof);
    must_fail("new root bit flip", old_root, flip(&new_root, bit), proof);
    if m != n {
        must_fail("roots swapped", new_root, old_root, proof);
    }
    let mut appended = proof.to_vec();
    appended.push(new_root);
    must_fail("proof hash appended", old_root, new_root, &appended);
    let mut prepended = vec![old_root];
    prepended.extend_from_slice(proof);
    must_fail("proof hash prepended", old_root, new_root, &prepended);
    let mut same_shape = 0;
    let changes = [
        (m.checked_sub(1), Some(n)),
        (m.checked_add(1), Some(n)),
        (Some(m), n.checked_sub(1)),
        (Some(m), n.checked_add(1)),
    ];
    for (m2, n2) in changes {
        let (Some(m2), Some(n2)) = (m2, n2) else {
            continue;
        };
        let ours = verify_consistency(m2, n2, &old_root, &new_root, proof).is_ok();
        let expected = ref_verify_consistency(m2, n2, old_root, new_root, proof);
        assert_eq!(
            ours, expected,
            "({m}, {n}) changed to ({m2}, {n2}): library {ours}, reference {expected}"
        );
        same_shape += usize::from(ours);
    }
    same_shape
}

/// Tree sizes around every power of two the big reference holds.
fn near_powers_of_two(max: u64) -> Vec<u64> {
    let mut sizes = BTreeSet::new();
    for k in 0..64 {
        let p = 1u64 << k;
        for size in [p - 1, p, p + 1] {
            if (1..=max).contains(&size) {
                sizes.insert(size);
            }
        }
    }
    sizes.into_iter().collect()
}

#[test]
fn mutations_are_rejected_near_powers_of_two() {
    let reference = &*BIG;
    let mut source = ReferenceSource {
        reference,
        size: BIG_SIZE,
    };
    let mut same_shape = 0;
    for n in near_powers_of_two(BIG_SIZE) {
        let root = reference.mth(0, n);
        let indexes = BTreeSet::from([0, n / 2, n - 1]);
        for (t, i) in indexes.into_iter().enumerate() {
            let proof = prove_inclusion(&mut source, i, n).unwrap();
            let leaf = reference.leaves[i as usize];
            same_shape +=
                check_inclusion_mutants(leaf, i, n, &proof, root, 37 * t + n as usize, true);
        }
        let old_sizes = BTreeSet::from([1, n / 2 + 1, n.max(2) - 1, n]);
        for (t, m) in old_sizes.into_iter().enumerate() {
            let proof = prove_consistency(&mut source, m, n).unwrap();
            let old_root = reference.mth(0, m);
            same_shape += check_consistency_mutants(m, n, old_root, root, &proof, 53 * t + 5);
        }
    }
    // The shape-preserving size changes do occur (e.g. leaf 0 of 3 vs of 4).
    assert!(same_shape > 0);
}

#[test]
fn a_size_change_with_the_same_path_shape_verifies() {
    // PATH(0, D[3]) = [h1, h2] and PATH(0, D[4]) = [h1, MTH(h2, h3)] have the same
    // shape, so the size-3 proof and root also "verify" at size 4: the size is
    // authenticated by the checkpoint signature, never by the proof. The same
    // holds for every RFC 9162 verifier.
    let reference = &*SMALL;
    let proof = ref_path(reference, 0, 0, 3);
    let root = reference.mth(0, 3);
    verify_inclusion(&reference.leaves[0], 0, 3, &proof, &root).unwrap();
    verify_inclusion(&reference.leaves[0], 0, 4, &proof, &root).unwrap();
    assert!(verify_inclusion(&reference.leaves[0], 0, 5, &proof, &root).is_err());
}

// ---------------------------------------------------------------------------
// Proof length and tree size limits.
// ---------------------------------------------------------------------------

#[test]
fn longest_proofs_verify_and_one_more_hash_is_refused() {
    // Leaf 0 of a tree of 2^63 - 1 leaves has a 63-hash path: the longest any
    // accepted tree has. Any sibling hashes make a valid proof for the root the
    // reference computes from them.
    let leaf = ref_leaf(b"leaf");
    let proof: Vec<Hash> = (0..63u8).map(|j| ref_leaf(&[j])).collect();
    let root = ref_root_from_path(leaf, 0, MAX_TREE_SIZE, &proof).unwrap();
    verify_inclusion(&leaf, 0, MAX_TREE_SIZE, &proof, &root).unwrap();
    assert_eq!(
        root_from_inclusion_proof(&leaf, 0, MAX_TREE_SIZE, &proof).unwrap(),
        root
    );
    for extra in [1, 2, 1000] {
        let mut long = proof.clone();
        long.extend(std::iter::repeat_n(root, extra));
        let count = long.len();
        let too_long = Error::ProofTooLong {
            count,
            max: MAX_PROOF_HASHES,
        };
        assert_eq!(
            verify_inclusion(&leaf, 0, MAX_TREE_SIZE, &long, &root).unwrap_err(),
            too_long
        );
        assert_eq!(
            root_from_inclusion_proof(&leaf, 0, u64::MAX, &long).unwrap_err(),
            too_long
        );
        assert_eq!(
            verify_consistency(1, u64::MAX, &leaf, &root, &long).unwrap_err(),
            too_long
        );
    }

    // The same for consistency: 1 -> 2^63 - 1 needs 63 hashes.
    let (old, new) = ref_roots_from_consistency(1, MAX_TREE_SIZE, leaf, &proof).unwrap();
    assert_eq!(old, leaf);
    verify_consistency(1, MAX_TREE_SIZE, &old, &new, &proof).unwrap();
    let mut long = proof.clone();
    long.push(new);
    assert_eq!(
        verify_consistency(1, MAX_TREE_SIZE, &old, &new, &long).unwrap_err(),
        Error::ProofTooLong { count: 64, max: 63 }
    );
}

#[test]
fn consistency_proofs_past_2_62_leaves_can_need_64_hashes() {
    // A tree of more than 2^62 leaves is 63 levels deep, and SUBPROOF can emit
    // one hash per level plus the old tree's boundary subtree: 2^62 - 1 to
    // 2^63 - 1 takes 64 hashes. It is a valid RFC 6962 proof (the reference
    // confirms it), but c2sp.org/tlog-witness forbids clients to send more than
    // 63 consistency proof lines, so the library neither generates nor accepts
    // it. Such trees are far beyond any real log.
    let uniform = Uniform::new(ref_leaf(b"same"));
    let mut source = UniformSource(&uniform);
    let (m, n) = ((1u64 << 62) - 1, MAX_TREE_SIZE);
    assert_eq!(
        prove_consistency(&mut source, m, n).unwrap_err().kind(),
        "proof_unavailable"
    );
    let proof = ref_proof(&uniform, m, n);
    assert_eq!(proof.len(), 64);
    let (old, new) = (uniform.mth(0, m), uniform.mth(0, n));
    assert_eq!(
        ref_roots_from_consistency(m, n, old, &proof),
        Some((old, new))
    );
    assert_eq!(
        verify_consistency(m, n, &old, &new, &proof).unwrap_err(),
        Error::ProofTooLong { count: 64, max: 63 }
    );
    // Up to 2^62 leaves, no consistency proof is longer than 63 hashes.
    let proof = prove_consistency(&mut source, (1 << 61) - 1, 1 << 62).unwrap();
    assert_eq!(proof.len(), 63);
    verify_consistency(
        (1 << 61) - 1,
        1 << 62,
        &uniform.mth(0, (1 << 61) - 1),
        &uniform.mth(0, 1 << 62),
        &proof,
    )
    .unwrap();
}

#[test]
fn proof_generation_refuses_sizes_above_2_63_minus_1() {
    let uniform = Uniform::new(ref_leaf(b"same"));
    let mut source = UniformSource(&uniform);
    // At the limit, generation works and the results verify.
    let root = tree_root(&mut source, MAX_TREE_SIZE).unwrap();
    assert_eq!(root, uniform.mth(0, MAX_TREE_SIZE));
    for index in [0, 1 << 62, MAX_TREE_SIZE - 1] {
        let proof = prove_inclusion(&mut source, index, MAX_TREE_SIZE).unwrap();
        assert_eq!(proof, ref_path(&uniform, index, 0, MAX_TREE_SIZE));
        verify_inclusion(&uniform.levels[0], index, MAX_TREE_SIZE, &proof, &root).unwrap();
    }
    let proof = prove_consistency(&mut source, 1, MAX_TREE_SIZE).unwrap();
    assert_eq!(proof.len(), MAX_PROOF_HASHES);
    verify_consistency(1, MAX_TREE_SIZE, &uniform.levels[0], &root, &proof).unwrap();

    for size in [MAX_TREE_SIZE + 1, MAX_TREE_SIZE + 2, u64::MAX] {
        let refused = |result: witness_core::Result<()>| {
            assert_eq!(
                result.unwrap_err().kind(),
                "proof_unavailable",
                "size {size}"
            );
        };
        refused(tree_root(&mut source, size).map(drop));
        refused(prove_inclusion(&mut source, 0, size).map(drop));
        refused(prove_inclusion(&mut source, size - 1, size).map(drop));
        refused(prove_consistency(&mut source, 1, size).map(drop));
        refused(prove_consistency(&mut source, MAX_TREE_SIZE, size).map(drop));
        // A tile source for such a tree never fetches a tile.
        let mut tiles =
            TileHashSource::new(size, |tile: &TileId| -> witness_core::Result<Vec<u8>> {
                panic!("fetched {tile:?} for a tree of {size} leaves")
            });
        refused(tree_root(&mut tiles, size).map(drop));
        refused(prove_inclusion(&mut tiles, 0, size).map(drop));
        refused(prove_consistency(&mut tiles, 1, size).map(drop));
        refused(tiles.subtree_hash(0, 0).map(drop));
    }
}

// ---------------------------------------------------------------------------
// Tiles: a log's tiles built from the reference, read through TileHashSource.
// ---------------------------------------------------------------------------

/// The hashes of tile (`level`, `index`) as a log serves it: `width` hashes of
/// tree level 8 * `level`, starting at hash 256 * `index`.
fn tile_bytes(reference: &Reference, level: u8, index: u64, width: u64) -> Vec<u8> {
    let height = u32::from(level) * u32::from(TILE_HEIGHT);
    let first = index * TILE_WIDTH;
    (first..first + width)
        .flat_map(|k| reference.mth(k << height, (k + 1) << height).0)
        .collect()
}

/// A tile source for the first `size` leaves of the reference. With
/// `serve_full`, a full tile is returned where a partial one was asked for and
/// the reference holds the full one (a log that has grown since).
fn tile_source(
    reference: &Reference,
    size: u64,
    serve_full: bool,
) -> TileHashSource<impl FnMut(&TileId) -> witness_core::Result<Vec<u8>> + '_> {
    TileHashSource::new(size, move |tile: &TileId| {
        assert_eq!(
            TileId::for_tree_size(tile.level, tile.index, size),
            Some(*tile),
            "asked for a tile that a tree of {size} leaves does not have"
        );
        let height = u32::from(tile.level) * u32::from(TILE_HEIGHT);
        let hashes_in_log = reference.len() >> height;
        let full_available = (tile.index + 1) * TILE_WIDTH <= hashes_in_log;
        let width = if serve_full && full_available {
            TILE_WIDTH
        } else {
            u64::from(tile.width)
        };
        Ok(tile_bytes(reference, tile.level, tile.index, width))
    })
}

fn sizes(max: u64) -> impl Strategy<Value = u64> {
    let near = near_powers_of_two(max);
    prop_oneof![
        1..=max,
        proptest::sample::select(near),
        // Around tile boundaries.
        (1..=max / TILE_WIDTH, -1i64..=1)
            .prop_map(move |(t, d)| { ((t * TILE_WIDTH) as i64 + d).clamp(1, max as i64) as u64 }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Proofs read from tiles equal the reference's PATH and PROOF and the
    /// library's proofs over the reference's subtree hashes, and they verify;
    /// the tiles read are exactly `required_tiles`.
    #[test]
    fn tile_proofs_round_trip(
        n in sizes(BIG_SIZE),
        i_seed in any::<u64>(),
        m_seed in any::<u64>(),
        serve_full in any::<bool>(),
    ) {
        let reference = &*BIG;
        let (i, m) = (i_seed % n, 1 + m_seed % n);
        let root = reference.mth(0, n);
        let mut from_reference = ReferenceSource { reference, size: n };

        let mut tiles = tile_source(reference, n, serve_full);
        prop_assert_eq!(tree_root(&mut tiles, n).unwrap(), root);

        let want = ref_path(reference, i, 0, n);
        let mut tiles = tile_source(reference, n, serve_full);
        let proof = prove_inclusion(&mut tiles, i, n).unwrap();
        prop_assert_eq!(&proof, &want);
        prop_assert_eq!(&prove_inclusion(&mut from_reference, i, n).unwrap(), &want);
        verify_inclusion(&reference.leaves[i as usize], i, n, &proof, &root).unwrap();
        prop_assert_eq!(root_from_inclusion_proof(&reference.leaves[i as usize], i, n, &proof).unwrap(), root);

        let want = ref_proof(reference, m, n);
        let mut tiles = tile_source(reference, n, serve_full);
        let proof = prove_consistency(&mut tiles, m, n).unwrap();
        prop_assert_eq!(&proof, &want);
        prop_assert_eq!(&prove_consistency(&mut from_reference, m, n).unwrap(), &want);
        verify_consistency(m, n, &reference.mth(0, m), &root, &proof).unwrap();

        // required_tiles lists exactly the tiles the computation reads.
        let mut fetched = BTreeSet::new();
        let mut recording = TileHashSource::new(n, |tile: &TileId| {
            fetched.insert(*tile);
            Ok(tile_bytes(reference, tile.level, tile.index, u64::from(tile.width)))
        });
        prove_consistency(&mut recording, m, n).unwrap();
        prove_inclusion(&mut recording, i, n).unwrap();
        drop(recording);
        let required = required_tiles(n, |source| {
            prove_consistency(source, m, n)?;
            prove_inclusion(source, i, n)
        })
        .unwrap();
        prop_assert_eq!(required, fetched.into_iter().collect::<Vec<_>>());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Proofs from tiles equal proofs from `LeafHashes` over the same leaves.
    #[test]
    fn tile_proofs_equal_leaf_proofs(
        n in sizes(2048),
        i_seed in any::<u64>(),
        m_seed in any::<u64>(),
    ) {
        let reference = &*BIG;
        let leaves = &reference.leaves[..n as usize];
        let (i, m) = (i_seed % n, 1 + m_seed % n);
        let mut tiles = tile_source(reference, n, false);
        let mut from_leaves = LeafHashes(leaves);
        prop_assert_eq!(tree_root(&mut tiles, n).unwrap(), tree_root(&mut from_leaves, n).unwrap());
        prop_assert_eq!(
            prove_inclusion(&mut tiles, i, n).unwrap(),
            prove_inclusion(&mut from_leaves, i, n).unwrap()
        );
        prop_assert_eq!(
            prove_consistency(&mut tiles, m, n).unwrap(),
            prove_consistency(&mut from_leaves, m, n).unwrap()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// A tile that is short, misaligned or longer than 256 hashes is refused.
    #[test]
    fn malformed_tiles_are_refused(n in 2u64..=4096, extra in 1usize..64, how in 0..3) {
        let reference = &*BIG;
        let mut source = TileHashSource::new(n, |tile: &TileId| {
            let mut bytes = tile_bytes(reference, tile.level, tile.index, u64::from(tile.width));
            match how {
                // Short by a few bytes or by whole hashes.
                0 => bytes.truncate(bytes.len().saturating_sub(extra)),
                // Not a whole number of hashes.
                1 => bytes.extend(std::iter::repeat_n(0, extra % (HASH_SIZE - 1) + 1)),
                // More than a full tile.
                _ => bytes.resize(HASH_SIZE * (TILE_WIDTH as usize + 1), 0),
            }
            Ok(bytes)
        });
        prop_assert_eq!(tree_root(&mut source, n).unwrap_err().kind(), "proof_unavailable");
    }
}

// ---------------------------------------------------------------------------
// Random proofs: mutations, huge trees, no panics.
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random sizes, indexes and bits: every mutation is rejected (or, for the
    /// shape-preserving size changes, judged as the reference judges it).
    #[test]
    fn random_mutations_are_rejected(
        n in sizes(BIG_SIZE),
        i_seed in any::<u64>(),
        m_seed in any::<u64>(),
        bit in 0usize..256,
    ) {
        let reference = &*BIG;
        let (i, m) = (i_seed % n, 1 + m_seed % n);
        let mut source = ReferenceSource { reference, size: n };
        let root = reference.mth(0, n);
        let proof = prove_inclusion(&mut source, i, n).unwrap();
        check_inclusion_mutants(reference.leaves[i as usize], i, n, &proof, root, bit, true);
        let proof = prove_consistency(&mut source, m, n).unwrap();
        check_consistency_mutants(m, n, reference.mth(0, m), root, &proof, bit);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Trees of up to 2^63 - 1 identical leaves: proofs match the reference,
    /// verify, and their mutations are rejected.
    #[test]
    fn huge_trees_round_trip(
        n in prop_oneof![
            1..=MAX_TREE_SIZE,
            (1u32..63, -1i64..=1).prop_map(|(k, d)| ((1i64 << k) + d) as u64),
            Just(MAX_TREE_SIZE),
        ],
        i_seed in any::<u64>(),
        m_seed in any::<u64>(),
        bit in 0usize..256,
    ) {
        let uniform = Uniform::new(ref_leaf(b"same"));
        let mut source = UniformSource(&uniform);
        let (i, m) = (i_seed % n, 1 + m_seed % n);
        let root = uniform.mth(0, n);
        prop_assert_eq!(tree_root(&mut source, n).unwrap(), root);
        let leaf = uniform.levels[0];
        let proof = prove_inclusion(&mut source, i, n).unwrap();
        prop_assert_eq!(&proof, &ref_path(&uniform, i, 0, n));
        check_inclusion_mutants(leaf, i, n, &proof, root, bit, false);
        let reference = ref_proof(&uniform, m, n);
        if reference.len() > MAX_PROOF_HASHES {
            // See consistency_proofs_past_2_62_leaves_can_need_64_hashes.
            prop_assert!(n > 1 << 62);
            prop_assert_eq!(reference.len(), 64);
            prop_assert_eq!(
                prove_consistency(&mut source, m, n).unwrap_err().kind(),
                "proof_unavailable"
            );
            prop_assert_eq!(
                verify_consistency(m, n, &uniform.mth(0, m), &root, &reference).unwrap_err(),
                Error::ProofTooLong { count: 64, max: MAX_PROOF_HASHES }
            );
        } else {
            let proof = prove_consistency(&mut source, m, n).unwrap();
            prop_assert_eq!(&proof, &reference);
            check_consistency_mutants(m, n, uniform.mth(0, m), root, &proof, bit);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary inputs never panic, and the verifiers agree with the
    /// reference verifiers.
    #[test]
    fn arbitrary_proofs_never_panic(
        leaf in any::<[u8; 32]>(),
        root in any::<[u8; 32]>(),
        index in prop_oneof![any::<u64>(), 0u64..70],
        size in prop_oneof![any::<u64>(), 0u64..70, Just(u64::MAX), Just(MAX_TREE_SIZE), Just(MAX_TREE_SIZE + 1)],
        proof in proptest::collection::vec(any::<[u8; 32]>(), 0..70),
    ) {
        let (leaf, root) = (Hash(leaf), Hash(root));
        let proof: Vec<Hash> = proof.into_iter().map(Hash).collect();
        let ours = verify_inclusion(&leaf, index, size, &proof, &root);
        prop_assert_eq!(ours.is_ok(), ref_verify_inclusion(leaf, index, size, &proof, root));
        if proof.len() > MAX_PROOF_HASHES {
            prop_assert_eq!(ours.unwrap_err().kind(), "proof_too_long");
        }
        let ours = verify_consistency(index, size, &leaf, &root, &proof);
        prop_assert_eq!(ours.is_ok(), ref_verify_consistency(index, size, leaf, root, &proof));
        // A proof computed from arbitrary hashes verifies whenever the reference
        // says it has the right shape.
        if let Some(implied) = ref_root_from_path(leaf, index, size, &proof)
            && proof.len() <= MAX_PROOF_HASHES
        {
            verify_inclusion(&leaf, index, size, &proof, &implied).unwrap();
        }
        if let Some((old, new)) = ref_roots_from_consistency(index, size, leaf, &proof)
            && proof.len() <= MAX_PROOF_HASHES
        {
            verify_consistency(index, size, &old, &new, &proof).unwrap();
        }
    }

    /// Proof generation over 10 leaves succeeds exactly when every hash it
    /// needs is within them, and fails cleanly otherwise.
    #[test]
    fn generation_beyond_the_leaves_fails_cleanly(
        a in prop_oneof![0u64..16, any::<u64>(), Just(MAX_TREE_SIZE + 1)],
        b in prop_oneof![0u64..16, any::<u64>(), Just(MAX_TREE_SIZE + 1)],
    ) {
        let leaves = &SMALL.leaves[..10];
        let mut source = LeafHashes(leaves);
        prop_assert_eq!(tree_root(&mut source, b).is_ok(), b <= 10);
        // An inclusion proof reads every leaf but its own: leaf 10 of 11 needs
        // only the first 10.
        let inclusion_ok = a < b && (b <= 10 || (b == 11 && a == 10));
        prop_assert_eq!(prove_inclusion(&mut source, a, b).is_ok(), inclusion_ok);
        // A consistency proof between equal sizes is empty and reads nothing.
        let consistency_ok = 1 <= a && a <= b && b <= MAX_TREE_SIZE && (b <= 10 || a == b);
        prop_assert_eq!(prove_consistency(&mut source, a, b).is_ok(), consistency_ok);
    }
}
