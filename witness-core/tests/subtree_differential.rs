#![allow(clippy::unwrap_used)]
//! Differential tests of subtree support (draft-ietf-plants-merkle-tree-certs,
//! section 4, used by the sign-subtree call of c2sp.org/tlog-witness):
//! `is_valid_subtree`, `subtree_hash`, `prove_subtree_consistency` and
//! `verify_subtree_consistency` from `witness_core::merkle`, against
//!
//! - `mtcs` 0.3 (crates.io; the relying-party side of Merkle Tree
//!   Certificates): `is_valid_subtree`, `verify_consistency_proof` (section
//!   4.4.3), `evaluate_inclusion_proof` (section 4.3.2) and its RFC 9162 leaf and
//!   node hashes;
//! - a naive reference written here from the draft's definitions: validity with
//!   `u128` arithmetic, MTH by recursion, `SUBTREE_PROOF` by the recursion of
//!   section 4.4.1, and a verifier that puts each proof hash where that
//!   recursion says it came from and hashes back up, rather than running the
//!   draft's bit-twiddling procedure;
//! - the draft authors' large-tree vectors (ietf-plants-wg/merkle-tree-certs,
//!   demo/large_consistency_proofs.json, as shipped in mtcs's tests).
//!
//! `mtcs` only verifies: it has no proof generator and no subtree hash function.
//! So generated proofs are compared with the reference `SUBTREE_PROOF`, and then
//! verified by `mtcs`; subtree hashes are compared with the reference MTH, which
//! hashes with `mtcs::leaf_hash`/`mtcs::node_hash`, and with what
//! `mtcs::evaluate_inclusion_proof` computes from our inclusion proofs into the
//! subtree. Proofs go both ways: ours are verified by `mtcs` and the reference,
//! the reference's and the draft vectors' by ours.
//!
//! Known divergences, each asserted as exactly that:
//!
//! - Empty subtrees `[x, x)`: `mtcs` follows draft -07, which allows them (and
//!   accepts an empty proof with the empty-string hash). c2sp.org/tlog-witness
//!   cites -03, whose section 4.1 requires `start < end`, and a cosignature on an
//!   empty subtree would commit to nothing, so we refuse them.
//! - Proofs over 63 hashes: `mtcs` has no cap, we refuse them (c2sp.org/tlog-witness
//!   allows at most 63 proof lines). Valid 64-hash proofs exist only above 2^62
//!   leaves.
//! - Tree sizes above 2^63 - 1 are refused by our generator (`MAX_TREE_SIZE`);
//!   both verifiers accept them (the draft vectors include such trees).
//!
//! A proof binds the root, not the tree size: with another size it can
//! legitimately verify, even as another subtree (see
//! `subtree_proofs_bind_the_root_not_the_tree_size` in merkle.rs and
//! `mtcs_agrees_on_every_case_of_small_trees`). So cases with a wrong size are
//! judged against the reference verifier. With the right size, another start
//! or end must be rejected (in trees of distinct leaves), as must damaged
//! hashes and truncated, extended or reordered proofs, everywhere.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use mtcs::Subtree;
use proptest::prelude::*;
use witness_core::Error;
use witness_core::merkle::{
    Hash, LeafHashes, MAX_PROOF_HASHES, MAX_TREE_SIZE, SubtreeHashSource, is_valid_subtree,
    leaf_hash, prove_inclusion, prove_subtree_consistency, subtree_hash, tree_root,
    verify_subtree_consistency,
};

// ---------------------------------------------------------------------------
// Calling both sides.
// ---------------------------------------------------------------------------

fn concat(proof: &[Hash]) -> Vec<u8> {
    proof.iter().flat_map(|h| h.0).collect()
}

fn flip(hash: &Hash, bit: usize) -> Hash {
    let mut out = *hash;
    out.0[(bit / 8) % 32] ^= 1 << (bit % 8);
    out
}

fn we_accept(start: u64, end: u64, hash: &Hash, n: u64, root: &Hash, proof: &[Hash]) -> bool {
    verify_subtree_consistency(start, end, hash, n, root, proof).is_ok()
}

/// `Subtree` is built directly, not through `Subtree::new`, so that `mtcs`'s
/// own validity check is exercised too.
fn mtcs_accepts(start: u64, end: u64, hash: &Hash, n: u64, root: &Hash, proof: &[Hash]) -> bool {
    mtcs::verify_consistency_proof(n, Subtree { start, end }, &concat(proof), &hash.0, &root.0)
}

// ---------------------------------------------------------------------------
// The reference, from the draft's definitions.
// ---------------------------------------------------------------------------

/// BIT_CEIL(x): the smallest power of two >= x, by doubling, in u128 so 2^64 fits.
fn ref_bit_ceil(x: u64) -> u128 {
    let mut p = 1u128;
    while p < u128::from(x) {
        p *= 2;
    }
    p
}

/// Section 4.1 of -03: `start < end` and `start` a multiple of BIT_CEIL(end - start).
fn ref_valid(start: u64, end: u64) -> bool {
    start < end && u128::from(start) % ref_bit_ceil(end - start) == 0
}

/// k: the largest power of two smaller than n (n >= 2), by doubling.
fn ref_split(n: u64) -> u64 {
    assert!(n >= 2);
    let mut k = 1u64;
    while k < n - k {
        k *= 2;
    }
    k
}

fn ref_node(left: &Hash, right: &Hash) -> Hash {
    Hash(mtcs::node_hash(&left.0, &right.0))
}

/// A list of leaves the reference can compute MTH(D[start:end]) over.
trait Mth {
    fn mth(&self, start: u64, end: u64) -> Hash;
}

/// Leaves held in full; MTH memoized.
struct Dense {
    leaves: Vec<Hash>,
    memo: RefCell<HashMap<(u64, u64), Hash>>,
}

impl Dense {
    fn new(count: u64) -> Dense {
        let leaves = (0..count)
            .map(|i| Hash(mtcs::leaf_hash(format!("entry {i}").as_bytes())))
            .collect();
        Dense {
            leaves,
            memo: RefCell::default(),
        }
    }
}

impl Mth for Dense {
    fn mth(&self, start: u64, end: u64) -> Hash {
        assert!(start < end);
        if end - start == 1 {
            return self.leaves[start as usize];
        }
        if let Some(hash) = self.memo.borrow().get(&(start, end)) {
            return *hash;
        }
        let k = ref_split(end - start);
        let hash = ref_node(&self.mth(start, start + k), &self.mth(start + k, end));
        self.memo.borrow_mut().insert((start, end), hash);
        hash
    }
}

/// A tree of up to 2^64 - 1 leaves that are all the same filler leaf except a
/// few distinct ones: a range without a distinct leaf hashes like any other
/// range of its length, so MTH costs O(distinct leaves * log n).
struct Sparse {
    distinct: BTreeSet<u64>,
    filler: Hash,
    by_length: RefCell<HashMap<u64, Hash>>,
    memo: RefCell<HashMap<(u64, u64), Hash>>,
}

impl Sparse {
    fn new(distinct: impl IntoIterator<Item = u64>) -> Sparse {
        Sparse {
            distinct: distinct.into_iter().collect(),
            filler: Hash(mtcs::leaf_hash(b"filler")),
            by_length: RefCell::default(),
            memo: RefCell::default(),
        }
    }

    fn leaf(&self, index: u64) -> Hash {
        if self.distinct.contains(&index) {
            Hash(mtcs::leaf_hash(&index.to_be_bytes()))
        } else {
            self.filler
        }
    }

    fn uniform(&self, len: u64) -> Hash {
        if len == 1 {
            return self.filler;
        }
        if let Some(hash) = self.by_length.borrow().get(&len) {
            return *hash;
        }
        let k = ref_split(len);
        let hash = ref_node(&self.uniform(k), &self.uniform(len - k));
        self.by_length.borrow_mut().insert(len, hash);
        hash
    }
}

impl Mth for Sparse {
    fn mth(&self, start: u64, end: u64) -> Hash {
        assert!(start < end);
        if self.distinct.range(start..end).next().is_none() {
            return self.uniform(end - start);
        }
        if end - start == 1 {
            return self.leaf(start);
        }
        if let Some(hash) = self.memo.borrow().get(&(start, end)) {
            return *hash;
        }
        let k = ref_split(end - start);
        let hash = ref_node(&self.mth(start, start + k), &self.mth(start + k, end));
        self.memo.borrow_mut().insert((start, end), hash);
        hash
    }
}

/// Serves complete subtree hashes of the first `size` leaves of a reference
/// tree, shifted by `offset` (to serve a subtree as a tree of its own).
struct Source<'a, T: Mth> {
    tree: &'a T,
    offset: u64,
    size: u64,
}

impl<T: Mth> SubtreeHashSource for Source<'_, T> {
    fn subtree_hash(&mut self, level: u8, index: u64) -> witness_core::Result<Hash> {
        let width = 1u64.checked_shl(level.into());
        let start = width.and_then(|w| index.checked_mul(w));
        let end = start.zip(width).and_then(|(s, w)| s.checked_add(w));
        match (start, end) {
            (Some(start), Some(end)) if end <= self.size => {
                Ok(self.tree.mth(self.offset + start, self.offset + end))
            }
            _ => Err(Error::ProofUnavailable {
                reason: "beyond the reference tree",
            }),
        }
    }
}

/// SUBTREE_SUBPROOF(start, end, D[lo:hi], known) of section 4.4.1, with absolute
/// indices, as the ranges whose MTH the proof lists, in order.
fn ref_subproof(start: u64, end: u64, lo: u64, hi: u64, known: bool) -> Vec<(u64, u64)> {
    if (start, end) == (lo, hi) {
        return if known { Vec::new() } else { vec![(lo, hi)] };
    }
    let k = ref_split(hi - lo);
    if end - lo <= k {
        let mut proof = ref_subproof(start, end, lo, lo + k, known);
        proof.push((lo + k, hi));
        proof
    } else if k <= start - lo {
        let mut proof = ref_subproof(start, end, lo + k, hi, known);
        proof.push((lo, lo + k));
        proof
    } else {
        assert_eq!(
            start, lo,
            "a valid subtree straddles a split only at its start"
        );
        let mut proof = ref_subproof(lo + k, end, lo + k, hi, false);
        proof.push((lo, lo + k));
        proof
    }
}

/// The ranges of SUBTREE_PROOF(start, end, D_n).
fn ref_shape(start: u64, end: u64, n: u64) -> Vec<(u64, u64)> {
    assert!(ref_valid(start, end) && end <= n);
    ref_subproof(start, end, 0, n, true)
}

fn ref_proof(tree: &dyn Mth, start: u64, end: u64, n: u64) -> Vec<Hash> {
    ref_shape(start, end, n)
        .into_iter()
        .map(|(lo, hi)| tree.mth(lo, hi))
        .collect()
}

/// Whether `[start, end)` is a node of the tree of `n` leaves.
fn ref_is_node(start: u64, end: u64, n: u64) -> bool {
    let (mut lo, mut hi) = (0, n);
    loop {
        if (lo, hi) == (start, end) {
            return true;
        }
        if hi - lo == 1 {
            return false;
        }
        let k = ref_split(hi - lo);
        if end <= lo + k {
            hi = lo + k;
        } else if start >= lo + k {
            lo += k;
        } else {
            return false;
        }
    }
}

/// MTH(D[lo:hi]) from the hashes of some of its ranges, or None if they do not
/// cover it. `budget` bounds the work should they not.
fn ref_rebuild(
    known: &HashMap<(u64, u64), Hash>,
    lo: u64,
    hi: u64,
    budget: &Cell<u32>,
) -> Option<Hash> {
    budget.set(
        budget
            .get()
            .checked_sub(1)
            .expect("reference rebuild ran away"),
    );
    if let Some(hash) = known.get(&(lo, hi)) {
        return Some(*hash);
    }
    if hi - lo == 1 {
        return None;
    }
    let k = ref_split(hi - lo);
    let left = ref_rebuild(known, lo, lo + k, budget)?;
    let right = ref_rebuild(known, lo + k, hi, budget)?;
    Some(ref_node(&left, &right))
}

/// Verifies by placing each proof hash at the range SUBTREE_PROOF took it from
/// (and the subtree hash at the subtree, when the subtree is a node of the tree,
/// which is when the proof omits it), then rebuilding the subtree's MTH and
/// the tree's MTH from those ranges.
fn ref_verify(start: u64, end: u64, hash: &Hash, n: u64, root: &Hash, proof: &[Hash]) -> bool {
    if !ref_valid(start, end) || end > n {
        return false;
    }
    let shape = ref_shape(start, end, n);
    if shape.len() != proof.len() {
        return false;
    }
    let mut known: HashMap<(u64, u64), Hash> =
        shape.into_iter().zip(proof.iter().copied()).collect();
    let budget = Cell::new(100_000);
    if ref_is_node(start, end, n) {
        known.insert((start, end), *hash);
    } else if ref_rebuild(&known, start, end, &budget) != Some(*hash) {
        return false;
    }
    ref_rebuild(&known, 0, n, &budget) == Some(*root)
}

// ---------------------------------------------------------------------------
// The comparison itself.
// ---------------------------------------------------------------------------

/// Checks one verification case on all three verifiers; returns the verdict.
fn verdict(start: u64, end: u64, hash: &Hash, n: u64, root: &Hash, proof: &[Hash]) -> bool {
    let ours = we_accept(start, end, hash, n, root, proof);
    let theirs = mtcs_accepts(start, end, hash, n, root, proof);
    let reference = ref_verify(start, end, hash, n, root, proof);
    assert_eq!(
        (ours, theirs),
        (reference, reference),
        "[{start}, {end}) in {n} with {} hashes: ours, mtcs vs reference",
        proof.len()
    );
    ours
}

/// The subtrees to try in place of `[start, end)` in a tree of `n`: neighbours,
/// shifts by the subtree size, and other sizes.
fn wrong_triples(start: u64, end: u64, n: u64) -> Vec<(u64, u64, u64)> {
    let size = end - start;
    let mut out = vec![
        (start.checked_add(1), Some(end), Some(n)),
        (start.checked_sub(1), Some(end), Some(n)),
        (Some(start), end.checked_add(1), Some(n)),
        (Some(start), end.checked_sub(1), Some(n)),
        (start.checked_add(size), end.checked_add(size), Some(n)),
        (start.checked_sub(size), end.checked_sub(size), Some(n)),
        (Some(0), Some(size), Some(n)),
        (Some(0), Some(n), Some(n)),
        (Some(start), Some(end), n.checked_add(1)),
        (Some(start), Some(end), n.checked_sub(1)),
        (Some(start), Some(end), n.checked_mul(2)),
        (Some(start), Some(end), Some(end)),
        (Some(start), Some(end), Some(n / 2 + 1)),
    ]
    .into_iter()
    .filter_map(|t| match t {
        (Some(s), Some(e), Some(m)) if (s, e, m) != (start, end, n) => Some((s, e, m)),
        _ => None,
    })
    .collect::<Vec<_>>();
    out.sort_unstable();
    out.dedup();
    out
}

/// The rejections every verifier must make (damaged hashes, truncated,
/// extended or reordered proofs), and wrong subtrees and sizes judged against
/// the reference. Returns how many wrong-size cases verified (legitimately,
/// per the reference).
fn check_negatives(
    start: u64,
    end: u64,
    hash: &Hash,
    n: u64,
    root: &Hash,
    proof: &[Hash],
    distinct_leaves: bool,
) -> usize {
    let what = format!("[{start}, {end}) in {n}");
    let must_reject = |h: &Hash, r: &Hash, p: &[Hash], case: &str| {
        assert!(!verdict(start, end, h, n, r, p), "{what}: {case} verified");
    };
    // Damaged hashes: every proof hash, the subtree hash and the root, at a
    // bit that moves with the position.
    for i in 0..proof.len() {
        for bit in [i * 37 % 256, 255 - i] {
            let mut bad = proof.to_vec();
            bad[i] = flip(&bad[i], bit);
            must_reject(hash, root, &bad, "flipped proof bit");
        }
    }
    for bit in [0, 100, 255] {
        must_reject(&flip(hash, bit), root, proof, "flipped subtree hash bit");
        must_reject(hash, &flip(root, bit), proof, "flipped root bit");
    }
    // The subtree and the root swapped (they differ unless it is the whole tree).
    if hash != root {
        must_reject(root, hash, proof, "swapped hashes");
    }
    // Truncated: each hash dropped in turn. Extended: a hash appended or
    // prepended.
    for i in 0..proof.len() {
        let mut short = proof.to_vec();
        short.remove(i);
        must_reject(hash, root, &short, "truncated proof");
    }
    for extra in [*hash, *root, Hash([0; 32])] {
        let mut long = proof.to_vec();
        long.push(extra);
        must_reject(hash, root, &long, "extended proof");
        long.pop();
        long.insert(0, extra);
        must_reject(hash, root, &long, "extended proof");
    }
    // Reordered.
    if proof.len() >= 2 && proof[0] != proof[proof.len() - 1] {
        let mut reordered = proof.to_vec();
        reordered.reverse();
        must_reject(hash, root, &reordered, "reversed proof");
    }
    // Another subtree or tree size with the same hashes.
    let mut wrong_size_accepted = 0;
    for (s, e, m) in wrong_triples(start, end, n) {
        let accepted = verdict(s, e, hash, m, root, proof);
        if (s, e) != (start, end) {
            // In a tree of distinct leaves only the size can be fooled. Where
            // most leaves are alike, another subtree may hash the same, so
            // there the reference decides (as `verdict` checked).
            assert!(
                !accepted || !distinct_leaves,
                "{what}: verified as [{s}, {e}) in {m}"
            );
        } else if accepted {
            wrong_size_accepted += 1;
        }
    }
    wrong_size_accepted
}

// ---------------------------------------------------------------------------
// Validity.
// ---------------------------------------------------------------------------

fn compare_validity(start: u64, end: u64) {
    let ours = is_valid_subtree(start, end);
    assert_eq!(ours, ref_valid(start, end), "[{start}, {end})");
    let theirs = mtcs::is_valid_subtree(start, end);
    if start == end {
        // Divergence: mtcs follows -07, where [x, x) is a valid (empty) subtree.
        assert!(theirs && !ours, "[{start}, {end})");
    } else {
        assert_eq!(ours, theirs, "[{start}, {end})");
    }
}

#[test]
fn mtcs_agrees_on_validity_of_small_and_edge_intervals() {
    for start in 0..=130 {
        for end in 0..=130 {
            compare_validity(start, end);
        }
    }
    let edges = [
        0,
        1,
        2,
        3,
        (1 << 62) - 1,
        1 << 62,
        (1 << 62) + 1,
        MAX_TREE_SIZE - 1,
        MAX_TREE_SIZE,
        1 << 63,
        (1 << 63) + 1,
        (1 << 63) + (1 << 62),
        u64::MAX - 2,
        u64::MAX - 1,
        u64::MAX,
    ];
    for start in edges {
        for end in edges {
            compare_validity(start, end);
        }
    }
    // The largest sizes: BIT_CEIL above 2^63 does not fit a u64.
    assert!(is_valid_subtree(0, u64::MAX));
    assert!(!is_valid_subtree(1, u64::MAX));
    assert!(is_valid_subtree(1 << 63, u64::MAX));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn mtcs_agrees_on_validity_of_random_intervals(
        start in any::<u64>(),
        end in any::<u64>(),
        shift in 0u32..64,
        len in any::<u64>(),
    ) {
        compare_validity(start, end);
        // Aligned starts, where validity is decided by the size.
        let aligned = (start >> shift).checked_shl(shift).unwrap_or(0);
        compare_validity(aligned, aligned.saturating_add(len >> shift));
        compare_validity(aligned, aligned.saturating_add(1 + (len % 1000)));
    }
}

// ---------------------------------------------------------------------------
// Every subtree of every tree up to 64 leaves.
// ---------------------------------------------------------------------------

/// Compares hash, proof and verdicts for one valid subtree of a dense tree.
/// Returns how many wrong-size cases verified.
fn compare_dense(tree: &Dense, start: u64, end: u64, n: u64) -> usize {
    let what = format!("[{start}, {end}) in {n}");
    let mut source = LeafHashes(&tree.leaves);
    let root = tree.mth(0, n);
    // The subtree hash: ours, the reference MTH, and what mtcs evaluates from
    // subtree inclusion proofs (section 4.3) of its first and last entries.
    let hash = subtree_hash(&mut source, start, end).unwrap();
    assert_eq!(hash, tree.mth(start, end), "{what}");
    let inner = &tree.leaves[start as usize..end as usize];
    for index in [start, end - 1, (start + end) / 2] {
        let path = prove_inclusion(&mut LeafHashes(inner), index - start, end - start).unwrap();
        let subtree = Subtree::new(start, end).unwrap();
        let evaluated = mtcs::evaluate_inclusion_proof(
            &concat(&path),
            index,
            &tree.leaves[index as usize].0,
            subtree,
        );
        assert_eq!(evaluated, Some(hash.0), "{what}, entry {index}");
    }
    // The proof: ours equals the reference; each is verified by all three.
    let proof = prove_subtree_consistency(&mut source, start, end, n).unwrap();
    let reference = ref_proof(tree, start, end, n);
    assert_eq!(proof, reference, "{what}");
    assert!(verdict(start, end, &hash, n, &root, &proof), "{what}");
    check_negatives(start, end, &hash, n, &root, &proof, true)
}

#[test]
fn mtcs_agrees_on_every_subtree_of_every_tree_up_to_64_leaves() {
    let tree = Dense::new(64);
    for (i, leaf) in tree.leaves.iter().enumerate() {
        assert_eq!(*leaf, leaf_hash(format!("entry {i}").as_bytes()));
    }
    let mut source = LeafHashes(&tree.leaves);
    let (mut valid, mut wrong_size_accepted) = (0, 0);
    for n in 1..=64u64 {
        assert_eq!(tree_root(&mut source, n).unwrap(), tree.mth(0, n));
        let root = tree.mth(0, n);
        for start in 0..n {
            for end in start + 1..=n {
                compare_validity(start, end);
                if is_valid_subtree(start, end) {
                    valid += 1;
                    wrong_size_accepted += compare_dense(&tree, start, end, n);
                    continue;
                }
                // Not a subtree: nothing is generated, and nothing verifies,
                // not even with the proof of its last leaf.
                assert!(subtree_hash(&mut source, start, end).is_err());
                assert!(prove_subtree_consistency(&mut source, start, end, n).is_err());
                let hash = tree.mth(start, end);
                assert!(!verdict(start, end, &hash, n, &root, &[]));
                let proof = ref_proof(&tree, end - 1, end, n);
                assert!(!verdict(start, end, &hash, n, &root, &proof));
            }
        }
        // A subtree ending beyond the tree verifies nowhere.
        let beyond = n.next_power_of_two() * 2;
        assert!(!verdict(0, beyond, &root, n, &root, &[]));
        assert!(!verdict(n, n + 1, &tree.leaves[0], n, &root, &[]));
    }
    // Guard against a loop that silently skipped everything.
    assert_eq!(valid, 7312);
    // Wrong-size cases that verify do exist (see the module comment); the
    // reference agreed with both verifiers on each.
    assert!(wrong_size_accepted > 0);
}

#[test]
fn mtcs_agrees_on_every_case_of_small_trees() {
    // Every valid subtree's honest proof, presented as every other subtree of
    // every small tree: all three verifiers agree, and with the right tree size
    // no other subtree verifies. With another size some do, legitimately: the
    // verifier cannot tell a leaf hash from an interior one, so [0, 1) in 2
    // (proof d[1]) is also [0, 2) in 3 for a tree of 3 whose first node is d[0]
    // and whose third leaf is d[1].
    let mut other_sizes = BTreeSet::new();
    let tree = Dense::new(14);
    let mut source = LeafHashes(&tree.leaves);
    for n in 1..=12u64 {
        let root = tree.mth(0, n);
        for (start, end) in (0..n).flat_map(|s| (s + 1..=n).map(move |e| (s, e))) {
            if !is_valid_subtree(start, end) {
                continue;
            }
            let hash = tree.mth(start, end);
            let proof = prove_subtree_consistency(&mut source, start, end, n).unwrap();
            for m in 0..=13u64 {
                for s in 0..=m {
                    for e in s..=m + 1 {
                        let accepted = verdict(s, e, &hash, m, &root, &proof);
                        if m == n && (s, e) != (start, end) {
                            assert!(!accepted, "[{start}, {end}) in {n} as [{s}, {e}) in {m}");
                        }
                        if m != n && accepted {
                            other_sizes.insert((start, end, n, s, e, m));
                        }
                    }
                }
            }
        }
    }
    assert!(other_sizes.contains(&(0, 1, 2, 0, 2, 3)));
    assert!(other_sizes.contains(&(0, 1, 3, 0, 1, 4)));
}

// ---------------------------------------------------------------------------
// Random subtrees of huge trees.
// ---------------------------------------------------------------------------

fn huge_sizes() -> impl Strategy<Value = u64> {
    prop_oneof![
        1..=MAX_TREE_SIZE,
        (0u32..63).prop_map(|k| 1u64 << k),
        (1u32..63).prop_map(|k| (1u64 << k) - 1),
        (1u32..62).prop_map(|k| (1u64 << k) + 1),
        Just(MAX_TREE_SIZE),
        1u64..5000,
    ]
}

/// A valid subtree of a tree of `n` leaves: a size up to 2^`bits`, then a start
/// among the multiples of its BIT_CEIL that fit.
fn pick_subtree(n: u64, bits: u32, len_seed: u64, start_seed: u64) -> (u64, u64) {
    let max_len = n.min(1u64.checked_shl(bits).unwrap_or(u64::MAX));
    let len = 1 + len_seed % max_len;
    let width = len.next_power_of_two();
    let slots = (n - len) / width + 1;
    let start = (start_seed % slots) * width;
    (start, start + len)
}

/// Compares everything for one subtree of a sparse tree of `n` leaves.
fn compare_sparse(start: u64, end: u64, n: u64, extra: &[u64]) {
    let what = format!("[{start}, {end}) in {n}");
    assert!(is_valid_subtree(start, end) && mtcs::is_valid_subtree(start, end));
    // Distinct leaves at both ends of the subtree, around it, at the end of
    // the tree, and wherever proptest likes.
    let mut distinct = vec![
        start,
        end - 1,
        n - 1,
        start.saturating_sub(1),
        end.min(n - 1),
    ];
    distinct.extend(extra.iter().map(|x| x % n));
    let tree = Sparse::new(distinct);
    let mut source = Source {
        tree: &tree,
        offset: 0,
        size: n,
    };
    let root = tree.mth(0, n);
    assert_eq!(tree_root(&mut source, n).unwrap(), root);
    let hash = subtree_hash(&mut source, start, end).unwrap();
    assert_eq!(hash, tree.mth(start, end), "{what}");
    // mtcs evaluates our inclusion proofs into the subtree to the same hash.
    let mut inner = Source {
        tree: &tree,
        offset: start,
        size: end - start,
    };
    for index in [start, end - 1] {
        let path = prove_inclusion(&mut inner, index - start, end - start).unwrap();
        let evaluated = mtcs::evaluate_inclusion_proof(
            &concat(&path),
            index,
            &tree.leaf(index).0,
            Subtree { start, end },
        );
        assert_eq!(evaluated, Some(hash.0), "{what}, entry {index}");
    }
    let reference = ref_proof(&tree, start, end, n);
    if reference.len() > MAX_PROOF_HASHES {
        // Divergence: see mtcs_accepts_64_hash_proofs_that_we_refuse.
        assert!(mtcs_accepts(start, end, &hash, n, &root, &reference));
        assert_eq!(
            prove_subtree_consistency(&mut source, start, end, n)
                .unwrap_err()
                .kind(),
            "proof_unavailable"
        );
        return;
    }
    let proof = prove_subtree_consistency(&mut source, start, end, n).unwrap();
    assert_eq!(proof, reference, "{what}");
    assert!(verdict(start, end, &hash, n, &root, &proof), "{what}");
    check_negatives(start, end, &hash, n, &root, &proof, false);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn mtcs_agrees_on_random_subtrees_of_huge_trees(
        n in huge_sizes(),
        bits in 0u32..64,
        len_seed in any::<u64>(),
        start_seed in any::<u64>(),
        extra in proptest::collection::vec(any::<u64>(), 0..4),
    ) {
        let (start, end) = pick_subtree(n, bits, len_seed, start_seed);
        compare_sparse(start, end, n, &extra);
    }
}

#[test]
fn mtcs_agrees_on_edge_subtrees_of_huge_trees() {
    let sizes = [
        1,
        2,
        3,
        (1 << 32) + 1,
        (1 << 62) - 1,
        1 << 62,
        (1 << 62) + 1,
        MAX_TREE_SIZE - 1,
        MAX_TREE_SIZE,
    ];
    for n in sizes {
        let last_complete = 1u64 << (63 - n.leading_zeros());
        let mut subtrees = vec![(0, n), (n - 1, n), (0, 1), (0, last_complete)];
        if n > last_complete {
            // The right edge: the whole right part, and its own last node.
            subtrees.push((last_complete, n));
            let right = n - last_complete;
            let width = right.next_power_of_two();
            subtrees.push(((n - 1) / width * width, n).min((last_complete, n)));
        }
        for (start, end) in subtrees {
            if is_valid_subtree(start, end) {
                compare_sparse(start, end, n, &[]);
            }
        }
    }
}

#[test]
fn mtcs_accepts_64_hash_proofs_that_we_refuse() {
    // Above 2^62 leaves a subtree consistency proof can need 64 hashes: 63
    // levels plus the first hash of a subtree that is not a node of the tree.
    // mtcs accepts it; we cap proofs at 63 hashes because c2sp.org/tlog-witness
    // forbids clients to send more than 63 consistency proof lines, and refuse
    // to generate one rather than emit a proof nobody accepts.
    for (start, end) in [(4, 7), (0, (1 << 62) - 1), (1 << 62, (1 << 62) + 3)] {
        let n = MAX_TREE_SIZE;
        let tree = Sparse::new([start, end - 1, n - 1]);
        let (hash, root) = (tree.mth(start, end), tree.mth(0, n));
        let proof = ref_proof(&tree, start, end, n);
        assert_eq!(proof.len(), 64, "[{start}, {end})");
        assert!(mtcs_accepts(start, end, &hash, n, &root, &proof));
        assert!(ref_verify(start, end, &hash, n, &root, &proof));
        assert_eq!(
            verify_subtree_consistency(start, end, &hash, n, &root, &proof).unwrap_err(),
            Error::ProofTooLong {
                count: 64,
                max: MAX_PROOF_HASHES
            }
        );
        let mut source = Source {
            tree: &tree,
            offset: 0,
            size: n,
        };
        assert_eq!(
            prove_subtree_consistency(&mut source, start, end, n).unwrap_err(),
            Error::ProofUnavailable {
                reason: "subtree consistency proof would exceed 63 hashes"
            }
        );
    }
}

#[test]
fn we_refuse_to_generate_for_trees_over_2_63_that_both_verify() {
    // Divergence, by design: our generator refuses tree sizes above 2^63 - 1
    // (no deployed log comes near); the verifiers take any u64 size.
    let n = (1u64 << 63) + 5;
    let (start, end) = (1 << 63, (1 << 63) + 4);
    let tree = Sparse::new([start, end - 1, n - 1]);
    let (hash, root) = (tree.mth(start, end), tree.mth(0, n));
    let proof = ref_proof(&tree, start, end, n);
    assert!(verdict(start, end, &hash, n, &root, &proof));
    let mut source = Source {
        tree: &tree,
        offset: 0,
        size: n,
    };
    assert_eq!(
        prove_subtree_consistency(&mut source, start, end, n)
            .unwrap_err()
            .kind(),
        "proof_unavailable"
    );
    assert!(subtree_hash(&mut source, start, end).is_err());
}

// ---------------------------------------------------------------------------
// The draft authors' vectors.
// ---------------------------------------------------------------------------

struct DraftVector {
    start: u64,
    end: u64,
    tree_size: u64,
    subtree_hash: &'static str,
    tree_hash: &'static str,
    proof: &'static [&'static str],
}

fn b64_hash(text: &str) -> Hash {
    Hash(BASE64.decode(text).unwrap().try_into().unwrap())
}

#[test]
fn draft_vectors_verify_alike() {
    for v in DRAFT_VECTORS {
        let (start, end, n) = (v.start, v.end, v.tree_size);
        let (hash, root) = (b64_hash(v.subtree_hash), b64_hash(v.tree_hash));
        let proof: Vec<Hash> = v.proof.iter().map(|h| b64_hash(h)).collect();
        assert!(mtcs_accepts(start, end, &hash, n, &root, &proof));
        if start == end {
            // Divergence: an empty subtree, valid in later drafts, not in -03.
            assert_eq!(
                verify_subtree_consistency(start, end, &hash, n, &root, &proof).unwrap_err(),
                Error::ConsistencyProofInvalid {
                    reason: "not a valid subtree"
                }
            );
            continue;
        }
        assert!(
            verdict(start, end, &hash, n, &root, &proof),
            "[{start}, {end}) in {n}"
        );
        // The vectors' leaves are unknown, so the sparse-tree rule applies:
        // wrong subtrees are judged by the reference, not rejected outright.
        check_negatives(start, end, &hash, n, &root, &proof, false);
    }
}

/// A few of the 21 vectors of ietf-plants-wg/merkle-tree-certs
/// demo/large_consistency_proofs.json: an empty subtree, the whole tree, and
/// the longest proofs (25, 47 and 48 hashes, the last in a tree above 2^63).
const DRAFT_VECTORS: &[DraftVector] = &[
    DraftVector {
        start: 0,
        end: 0,
        tree_size: 281474959937536,
        subtree_hash: "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
        tree_hash: "Zgr8al1Q2TrZ1rzGdYxXslIPtN2lvkk5jhvjkp18wLM=",
        proof: &[],
    },
    DraftVector {
        start: 0,
        end: 281474959937536,
        tree_size: 281474959937536,
        subtree_hash: "Zgr8al1Q2TrZ1rzGdYxXslIPtN2lvkk5jhvjkp18wLM=",
        tree_hash: "Zgr8al1Q2TrZ1rzGdYxXslIPtN2lvkk5jhvjkp18wLM=",
        proof: &[],
    },
    DraftVector {
        start: 140737488355328,
        end: 281474959933440,
        tree_size: 281474959937536,
        subtree_hash: "/vrRzzH3QaA1bxJzb5popFUlGmQFO1lsiddqIpwMSPM=",
        tree_hash: "Zgr8al1Q2TrZ1rzGdYxXslIPtN2lvkk5jhvjkp18wLM=",
        proof: &[
            "6VwEtvBQDGIQ6slUr6CWzOyKSX6ejcBRyjt3E8MBotk=",
            "ja9jV5BbQ4LA34S0K8vg1cTQ+D0pHjqSNFPOyS9lQmY=",
            "fonnqqnhfvuDcJFxRqOn/rJsS26t9XcNPdW2WBrDlMg=",
            "b6XJ56/gWR3RMakcl/QGWODekZqCjFzN8aFJ5x9T3L4=",
            "OLywfYy7/prUrwQFUtAyWw3nHltkWyMWfgZnaal5fCs=",
            "iFkHQPHHFy85Z75pfBir6YB/HMpppMq8EDatlnnoTdA=",
            "XQ+iC+snJ7gRvTulErTSPnJz3ZnBsWs/YZiCmIeF7m0=",
            "Fg/phw9dHvBEO8Do5vIfipJ0g43fCG+aOxwwicUYWBg=",
            "zQ98jIHUnl5Ma+0cVjQ8cUupfy10STgbm7rxbWxxX4A=",
            "oELLlVh8zi9pbeonZHUXIkv/CqWiyE3Kn3Tn3JueeWk=",
            "TCX2TBETlZucaiKGa5zRk2Ahg4Re9kqQdQVLEkJrbgU=",
            "ZseuwddiSZeJdAo4wT+Rf/Q8ZLYM81Ov0ncxPYymd7k=",
            "BPKWubJQxaCsudTqgbAUAvzbCEnXZyjKqsSFI614FdM=",
            "w7DXulW2f8qvF04ci4e+2tUsAcFW8ZgRokb4eB7xNuA=",
            "vgDXLhhjo34XWcK8vPnIjA4cld0MlXVJXNqYxaseSUo=",
            "M5LwK6AwB1G0tgMhfdUVvcWyIhcMvJXiEjp2H1Yx9dw=",
            "SjFuvHwikC7eU0AJy0iHcxHXk8eohi79q8RhF2a5HQI=",
            "l9WVZCgq6rSfmDhi2Yilep4DF9XzBAW1MY5LBHkfvmc=",
            "DDKXqi1mrJf5qkHSK/H6C7niJbbhNhXaEUeiQe0adp8=",
            "EdHpUUIlskQl7GGywJrs7+5uo6AsSMPd8D7TS0Fl3T4=",
            "XL38zm3IpnCjYealiIK5i7oORFFMCE0ss2WISAV6pfU=",
            "Jxym1jBYvMZoWxGoGVCACSEFgArnOmBlqyVe0E03Djc=",
            "DlkaAE10SVP9dMR/TBNrTVwoWnuDwQHAZxFhZHJTI7I=",
            "rO+f/+R26rf7prSm4g42mQgFZThnT3bBn2xh6mVE27c=",
            "sdVvgrJc7RAZNZ+vtgwduG+SOuuSDRKXfviU+Q80Y+k=",
        ],
    },
    DraftVector {
        start: 9223372034707324927,
        end: 9223372034707324928,
        tree_size: 9223372034707324928,
        subtree_hash: "8fu56gp4lNKK7Zwhqh0PlVxtIHa1I2oaC1XFgxJdVFM=",
        tree_hash: "S4ZzYwFaXceP9ZH8nrAyY5MCMABS0qhchAsV9DxAPqg=",
        proof: &[
            "0W01pK4wuQ7Eb2LUSgXsyEzrZK/1DkS0LgWkpY1m1oQ=",
            "K03UaCKeacXO04IKBp69UZ8V2jkc8w0+VhG1dKyRrko=",
            "awyyg6CI4FcUAfSyLd7m8p2R3UWzPFEXSmGxrNFoPxs=",
            "TvDUnS06gUKeFxsCck2QFs6NYlTOrbA+dp3txf8WgVo=",
            "jA/tqQxSBrVhJE/mtRO9GcRVHlrbPAP3OvgmYCrRAnQ=",
            "AZJLqXLkq61//awuVi4/WCcwX8rwv7B4Qio5q0vPGJQ=",
            "q6QjV/qetIgulIeN+awow+mM5mQxJd/5XnMirrUXYE8=",
            "VxvB5/gwh9vhcpC3d1ApL8u2W3eaYR+Zqum0isx8oIU=",
            "bCefrrTsg7OgloFq1824HduPMaUuUgt05fblAUobs6k=",
            "BFnFFspjzYCyCAc+43AJBArOa01YH8MIs0ehVjMzdvI=",
            "k4uNdi872MMGXz4+WoP4C5KhHOA4RX7DP/aDuqFxY+g=",
            "NCQj1EOUxD8LLgokDqrSNrFnORvTJ5IaAr61QsuvDfo=",
            "Yv3tAvcfgKckQWFXtcSPT3NfGFf12fHfrFZhdTIpf/Y=",
            "KryBcUOGD6HAQEasGd3VQPk9PqKx/f52zEy+L2U4cJU=",
            "Tp8L+sIrVcyXTRsih4Lq47pNek29ezboLnlGieSuHGI=",
            "f2Q6DopwKpHC0nYwKd9VZwHg/z8P5BJZpYZu3YeSM5k=",
            "ROTGwgNC4Sn0G3PnKS7nh/ApFFw8nwWz19WVeXrlpNw=",
            "MOCB/mHLAb5hlGTg7gLJOQwAIAIQCoyvc0Mrj+DfOrI=",
            "HAWo8Z6u8aMfZY2m5A/IkIMr0C4krzQ3PFIESp7GhYo=",
            "rxHjvh+czV2xldBT+51YPe9nDYAZ3NPZt8TRzZfvmTo=",
            "S9uLVkQd3f4rVnjLQ8CsxfaJsZDV5eb0hMeSSfResAw=",
            "AATZQ34ozaS4cXArPL4dDbQxszKePRsBjcwUVeNn9Hs=",
            "cXMzHlcWU+b/iIPF7rT0TeucGl9pwLgBxe4zkybAG20=",
            "SNr+82IT5uzp0kSd3SvmegCrrM7Fsaly9MHBABo4mMk=",
            "5klBDo0KcykaKwZec/8UWsQ6hNpp5u0yoDgM+Aw5uIk=",
            "QBVTgq85VceZS62mNwJltDs+f6b2jMde93HUMnxQypQ=",
            "NA0M4LZxWhfEZXKridoZSBZPsIISxGcBbn4xl1va2R4=",
            "6HB9O0+W93kdQynylyA+BGPWu/aSystwYwlEdq3T1HA=",
            "6OosrKLeJWvzPHePj+ylxtxecAk94UDFW84mzDTq8hM=",
            "W5QVEFOlsgJkFyN/NqVdJgonFak+npIgjo4wwmUMDjI=",
            "M978s6jslX47yg5GAk07wN6ytqbwgdc/TWCuzgb07gc=",
            "bkHlIa3RFoE+0hhfnXyn6rajg4RTYy6inNnGGIXXKz8=",
            "0pdnkAK0tjEyP39JhdE2MPM3UCav4VdgHcP6Gws0otc=",
            "qUqIwkQ1sAf1w84YJunODGVeNmtiJC5Cm82JFQDlrXs=",
            "SbOL8I7xqP+2Y6rDvLVNE099Kw+8pzlnuQygOiRring=",
            "IF/C3twefGkooLVgh9rhgFjb4627Lmcr8aVzKWRAagg=",
            "ZzC1CUMXZQ6src3k8jpn+XF867hUO82kTO6Ms9oycIk=",
            "zCJiyHUS87iA8T4OTEVce7yDlmIf2ya0NWZrPyO9mSU=",
            "hkj5yhHfRO8BTz2S3irM2vUuumfMdEm0zarJqsnxTfA=",
            "cN8+OxIb01VZaxJkyvIcCIzaLe8zbsHo+fz9oKwr+NY=",
            "T6g5aGebKkLzDd0z2Jz4HPeZ2lzta23b9O8O0nkmHIU=",
            "vgmuRIzt3Ecuu6wYRVJ4bPFT4a42wJNftq8LkBtioMw=",
            "rp+QNt2ou4tn1DYD3iZNYmaZnZsWu1QJywxf7rVeoEs=",
            "nIabz/czOapRR77LGcgSEduIylaivNzQslLHXL3a9sc=",
            "R8suZmxbOghM0TFprCkD1Mh1KAsRas89ISSSL7L0g2k=",
            "dBPB0hy8wDzaxjn6uN2tdiMqmRpuIK5Vx7qgOjWQu28=",
            "6cHKR9OsLETU4DAtGFaaQE9YqrAqvMXyivOz6hfrZWQ=",
        ],
    },
    DraftVector {
        start: 18446744069414649855,
        end: 18446744069414649856,
        tree_size: 18446744069414649856,
        subtree_hash: "GA7MCj5ulNkBnLFNi2oTQYgLDO5FG06kGH2bCucmabM=",
        tree_hash: "CtAOBYUXQlepPUPshM/6ilJnVxFJ8JDHjhGNWy1iUps=",
        proof: &[
            "F31+8AYjBQ6DIlIIwLSa6mm0SqKUjC6Zmpd6xY244RM=",
            "gdn6Z2hs0u+uTbCRK+B+3mMLupodIKgoDKkVjWtXULg=",
            "YdZUO+Su9T/UUOOktsVF5bXgUFiOHD66pjg6ENp22B0=",
            "bAslb5affn+GH/VM4u3mz1fVzpDuDbXObcC7CtWMSxs=",
            "d9NasCMXxjD1frvO/MxqvyQzjmS46k0LvqdCF5d0cvc=",
            "lTDup4JYGTGiu/QENJF/2Ponkl0Db1H8DKlXNfcIVCQ=",
            "97dL9WD+QE45G+AO4RrKq7ZmIk2t+RUUYwQDhreLqMo=",
            "xyPTDF27hmOnnSM1Mc+I4IVjfn6W18/oJ0gMU4k/Ok8=",
            "Yse+SIx8BmsloKkPWeGaAEijZGKpQbnnKBmI5AJyUzM=",
            "XE15E+bcjBoYauLhzyNjgS2r9RmpDMWdVdCcqvTGRac=",
            "UVTY8loZy0mtmTJjUUsC874HrR7WUjMQxvrChoByTG8=",
            "BfVKcReDzf0impfb8XcdtbWeQfDXTkIlhAIZn16gp38=",
            "3MTVZdAw6FXcS4rICOyQBEs3tVscu4cAbmSiHKNNASY=",
            "j1dgFlAmfTtdUNlMdTTgipnVY8+QdRXO7vf/DQGCohU=",
            "Q/ar1uixZ0Ylid0i14AR42E7eHvjyia+z9fapCnPHlg=",
            "4N3Ti57SBCTVnRuCsO6exDe8evLvbgLLYBDFhMbI6KM=",
            "vZJRXduiheiMcxQw+o66MiWy1HRAsB8AXKdM6TThT64=",
            "UxCdiG4BkJ8OAyEan+5tuDL+KxiBapyYx6SpEit7jbo=",
            "hIAZWnM7uaRU9rbiC3f4JCQfGf4I7gGn1Mu7/pT2mI8=",
            "UNo+zwem27NZMN0tkemQ6z8Il9dBEEo/u35wrSZLVoQ=",
            "MxrA3iifwDgxHCuZAvQlR+lko4TfvuZKqzbHMp4EHSA=",
            "WtA2rsmyWRY3ugrBRN/H7wrGR8WUv9P10Vx77Q6DijQ=",
            "e3RhDF7T/Fxxm7+KvSngMSoVxUEDMV1hzJrOuzxqtfA=",
            "VFqyyiWNtmkHXbO5dHhQPWmZbRHmGuwcI2EJGy2oiso=",
            "3KzXj9aaBBdRCzr3IQA+SzcE53AF1iEH5ilrfkLDZFM=",
            "ZtPDbDZWUJuK7BycY/rPO9acI8I1FL7YmKsCcBp2LYs=",
            "sFjg+Jmdka4+klbnAxemF2UcjPcx+RTvDxotyiQmPhs=",
            "JzwoJ2Iqf1EmpOBmJvUJnaVDCWsnsCuhnzGPAOCAg/Y=",
            "CzEkvnphp1n//hJwh3fLugE5yH7vI2soJNYcDBoDobI=",
            "cPe/lvwm97AfefM9LYloKbmRrsErIw7uJa2oTzh2O0A=",
            "b5p69eq5BnOQtbOHUCjgqiKAPwIBZbLrV8S8vR10HQY=",
            "aXTSb94+mwr0m49+/d4I9IOFrwJFRFH1ekNRxsYbMko=",
            "6Fd2t95JguohbiN1XlAx+2j4daFE6P3KuqLEJq0Cu7c=",
            "LBrnDtpJYtmvt3TEwfq3VdqW+Pp7KudNh9GijUdcQ8U=",
            "I4dketEV8yW7WxN12smv5Eme1j6bx0MtDjwBZk5JF+M=",
            "BdP0ioOcuqN1Qz6lKPBJVHuB6MLk4Mt66g0C+vZH9jU=",
            "/Yvwzmmn5fIisx49IAYPv2STq/aTKYHVCVhLZq9oikI=",
            "eCcRpR6j4HQw938b4KQTDNQO9dVY6uX2k/bFm69XfDg=",
            "O/Aw2B4sEUHIJYknzhBywT8vohMLA+uPuWwM0PjlC/8=",
            "ln9czO3MCsAlEJ+RUvPotd3ELshhBlQPROGrZY7a6io=",
            "ekGTufFncEQYj2Vl1IDsmItq9TrTGbtmrqJkDuqPNWk=",
            "gVMcViCVFrE/DiSa86TrR8NARXcqa7yumr54jYe9GHE=",
            "lPAxUXD4rLEM4DjeuhpjgKcIrqcVUOzjvsLqvTBIMkw=",
            "oltiaLptKbApXF3qEWHaWaLyNp1s4kN258wZXBsWReM=",
            "/8No6qu24gxK4Ohf7nKG8qVIB53IE0KYfAfrNc2BBB4=",
            "oUFSOwmE6d4jmCOEToqFCcSXG2ALVoEMRxlmfnqto8M=",
            "89TrQLmwALnpGyC/2eo3da6yNxBmY38D7tukfr9j70M=",
            "kjGlU1eRK7VJOyK5uN8gs2sXZPA0eeAg03arj7xGaFE=",
        ],
    },
];
