#![allow(clippy::unwrap_used)]
//! Differential tests: the same inputs through `witness_core` and through
//! independent implementations.
//!
//! - `ct-merkle` 0.3 (RFC 6962 trees over leaf data): roots, inclusion and
//!   consistency proofs byte for byte, and each side's proofs verified by the
//!   other side's verifiers.
//! - Cloudflare azul's `tlog_tiles` 0.2 (a port of Go's sumdb/tlog): tree hashes
//!   and proofs from its stored-hash layout, its tiles read through our
//!   `TileHashSource`, tile coordinates and paths, and checkpoint parsing and
//!   serialization.
//! - azul's `signed_note` 0.2 (a port of Go's sumdb/note): note parsing and
//!   serialization, verifier keys, Ed25519 signatures both ways, and random
//!   mutations of valid notes.
//! - cosignature/v1: neither azul crate implements it at 0.2, so cosignatures
//!   are checked through `signed_note`'s pluggable `Verifier`/`Signer` traits with
//!   a verifier and signer written here from c2sp.org/tlog-cosignature.
//!
//! Every known divergence is asserted as exactly that divergence, with its reason.

use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _};
use proptest::prelude::*;
use sha2::Sha256;
use signed_note::{Signer as _, Verifier as _};
use tlog_tiles as tlog;
use tlog_tiles::{HashReader as _, TileReader};
use witness_core::Error;
use witness_core::checkpoint::{Checkpoint, parse_checkpoint_text, verify_checkpoint};
use witness_core::cosignature::cosignature_v1_message;
use witness_core::merkle::{
    HASH_SIZE, Hash, LeafHashes, MAX_PROOF_HASHES, MAX_TREE_SIZE, SubtreeHashSource, leaf_hash,
    prove_consistency, prove_inclusion, root_from_inclusion_proof, tree_root, verify_consistency,
    verify_inclusion,
};
use witness_core::note::{
    MAX_NOTE_SIZE, MAX_SIGNATURES, Note, NoteSignature, SignatureType, VerifierKey, parse_note,
    verify_note,
};
use witness_core::tiles::{TILE_WIDTH, TileHashSource, TileId};

// ---------------------------------------------------------------------------
// Shared helpers.
// ---------------------------------------------------------------------------

fn entry(i: u64) -> Vec<u8> {
    format!("entry {i}").into_bytes()
}

fn concat(proof: &[Hash]) -> Vec<u8> {
    proof.iter().flat_map(|h| h.0).collect()
}

fn split_hashes(bytes: &[u8]) -> Vec<Hash> {
    bytes
        .chunks_exact(HASH_SIZE)
        .map(|c| Hash::from_slice(c).unwrap())
        .collect()
}

fn flip(hash: &Hash, bit: usize) -> Hash {
    let mut out = *hash;
    out.0[(bit / 8) % HASH_SIZE] ^= 1 << (bit % 8);
    out
}

/// `LeafHashes` behind a cache, so proofs over a growing tree stay cheap in
/// debug builds (every hash still comes from `LeafHashes` once).
struct CachedLeafHashes<'a> {
    inner: LeafHashes<'a>,
    cache: HashMap<(u8, u64), Hash>,
}

impl<'a> CachedLeafHashes<'a> {
    fn new(leaves: &'a [Hash]) -> CachedLeafHashes<'a> {
        CachedLeafHashes {
            inner: LeafHashes(leaves),
            cache: HashMap::new(),
        }
    }
}

impl SubtreeHashSource for CachedLeafHashes<'_> {
    fn subtree_hash(&mut self, level: u8, index: u64) -> witness_core::Result<Hash> {
        if let Some(hash) = self.cache.get(&(level, index)) {
            return Ok(*hash);
        }
        let hash = self.inner.subtree_hash(level, index)?;
        self.cache.insert((level, index), hash);
        Ok(hash)
    }
}

// ---------------------------------------------------------------------------
// ct-merkle 0.3.
// ---------------------------------------------------------------------------

type CtTree = MemoryBackedTree<Sha256, Vec<u8>>;

fn ct_root(hash: &Hash, size: u64) -> RootHash<Sha256> {
    RootHash::new(hash.0.into(), size)
}

fn ours_from_ct(root: &RootHash<Sha256>) -> Hash {
    Hash::from_slice(root.as_bytes().as_slice()).unwrap()
}

/// Compares one tree of `data` leaves with ct-merkle: roots at every size,
/// every inclusion proof and every consistency proof of the final size (or
/// all sizes, with `all_sizes`), in both directions.
fn compare_with_ct_merkle(data: &[Vec<u8>], all_sizes: bool) {
    let leaves: Vec<Hash> = data.iter().map(|d| leaf_hash(d)).collect();
    let mut source = CachedLeafHashes::new(&leaves);
    let mut tree = CtTree::new();
    let mut roots = vec![ours_from_ct(&tree.root())];
    assert_eq!(roots[0], tree_root(&mut source, 0).unwrap());
    for (i, d) in data.iter().enumerate() {
        tree.push(d.clone());
        let n = i as u64 + 1;
        let ct_root_n = tree.root();
        let root = tree_root(&mut source, n).unwrap();
        assert_eq!(ours_from_ct(&ct_root_n), root, "root at size {n}");
        roots.push(root);
        if !all_sizes && n != data.len() as u64 {
            continue;
        }
        for idx in 0..n {
            let ours = prove_inclusion(&mut source, idx, n).unwrap();
            let theirs = tree.prove_inclusion(idx as usize);
            assert_eq!(theirs.as_bytes(), concat(&ours), "inclusion {idx} of {n}");
            // Cross-verify: their proof with our verifier, ours with theirs.
            verify_inclusion(
                &leaves[idx as usize],
                idx,
                n,
                &split_hashes(theirs.as_bytes()),
                &root,
            )
            .unwrap();
            let ours_as_ct = InclusionProof::<Sha256>::try_from_bytes(concat(&ours)).unwrap();
            ct_root_n
                .verify_inclusion(&data[idx as usize], idx, &ours_as_ct)
                .unwrap();
        }
        for m in 1..=n {
            let ours = prove_consistency(&mut source, m, n).unwrap();
            let theirs = tree.prove_consistency((n - m) as usize);
            assert_eq!(theirs.as_bytes(), concat(&ours), "consistency {m} -> {n}");
            verify_consistency(
                m,
                n,
                &roots[m as usize],
                &root,
                &split_hashes(theirs.as_bytes()),
            )
            .unwrap();
            let ours_as_ct = ConsistencyProof::<Sha256>::try_from_bytes(concat(&ours)).unwrap();
            ct_root_n
                .verify_consistency(&ct_root(&roots[m as usize], m), &ours_as_ct)
                .unwrap();
        }
    }
}

#[test]
fn ct_merkle_agrees_on_every_tree_up_to_64_leaves() {
    let data: Vec<Vec<u8>> = (0..64).map(entry).collect();
    compare_with_ct_merkle(&data, true);
}

#[test]
fn ct_merkle_agrees_on_the_empty_and_odd_leaves() {
    // Empty leaf data, a leaf that looks like a node hash input, long data.
    let mut node_like = vec![1u8];
    node_like.extend_from_slice(&[0xab; 64]);
    let data = vec![Vec::new(), vec![0], node_like, vec![0xff; 5000], Vec::new()];
    compare_with_ct_merkle(&data, true);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn ct_merkle_agrees_on_random_trees(
        data in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..200),
    ) {
        compare_with_ct_merkle(&data, false);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Mutated proofs and sizes: both verifiers reach the same verdict, and a
    /// flipped bit, an extra or a missing hash is rejected by both.
    #[test]
    fn ct_merkle_agrees_on_mutated_proofs(
        n in 1u64..600,
        i_seed in any::<u64>(),
        m_seed in any::<u64>(),
        bit in 0usize..256,
        pos_seed in any::<usize>(),
    ) {
        let data: Vec<Vec<u8>> = (0..n).map(entry).collect();
        let leaves: Vec<Hash> = data.iter().map(|d| leaf_hash(d)).collect();
        let mut tree = CtTree::new();
        for d in &data {
            tree.push(d.clone());
        }
        let mut source = LeafHashes(&leaves);
        let (i, m) = (i_seed % n, 1 + m_seed % n);
        let root = tree_root(&mut source, n).unwrap();
        let old_root = tree_root(&mut source, m).unwrap();
        let proof = prove_inclusion(&mut source, i, n).unwrap();
        let cons = prove_consistency(&mut source, m, n).unwrap();

        let mut inclusion_variants = Vec::new();
        if !proof.is_empty() {
            let mut flipped = proof.clone();
            let j = pos_seed % proof.len();
            flipped[j] = flip(&flipped[j], bit);
            inclusion_variants.push(("flipped", i, n, flipped, root, true));
            inclusion_variants.push(("shortened", i, n, proof[..proof.len() - 1].to_vec(), root, true));
        }
        let mut longer = proof.clone();
        longer.push(root);
        inclusion_variants.push(("lengthened", i, n, longer, root, true));
        inclusion_variants.push(("root flipped", i, n, proof.clone(), flip(&root, bit), true));
        for (i2, n2) in [(i + 1, n), (i.wrapping_sub(1), n), (i, n + 1), (i, n - 1)] {
            if i2 < n2 && (i2, n2) != (i, n) {
                inclusion_variants.push(("moved", i2, n2, proof.clone(), root, false));
            }
        }
        for (what, i2, n2, p, r, must_fail) in inclusion_variants {
            let ours = verify_inclusion(&leaves[i as usize], i2, n2, &p, &r).is_ok();
            let theirs = ct_root(&r, n2)
                .verify_inclusion(&data[i as usize], i2, &InclusionProof::try_from_bytes(concat(&p)).unwrap())
                .is_ok();
            prop_assert_eq!(ours, theirs, "{} ({}, {}) -> ({}, {})", what, i, n, i2, n2);
            prop_assert!(!(must_fail && ours), "{} verified", what);
        }

        let mut consistency_variants = Vec::new();
        if !cons.is_empty() {
            let mut flipped = cons.clone();
            let j = pos_seed % cons.len();
            flipped[j] = flip(&flipped[j], bit);
            consistency_variants.push(("flipped", m, n, flipped, old_root, root, true));
            consistency_variants.push(("shortened", m, n, cons[1..].to_vec(), old_root, root, true));
        }
        let mut longer = cons.clone();
        longer.push(root);
        consistency_variants.push(("lengthened", m, n, longer, old_root, root, true));
        consistency_variants.push(("old root flipped", m, n, cons.clone(), flip(&old_root, bit), root, true));
        consistency_variants.push(("new root flipped", m, n, cons.clone(), old_root, flip(&root, bit), true));
        for (m2, n2) in [(m + 1, n), (m - 1, n), (m, n + 1), (m, n - 1)] {
            if 1 <= m2 && m2 <= n2 && (m2, n2) != (m, n) {
                consistency_variants.push(("moved", m2, n2, cons.clone(), old_root, root, false));
            }
        }
        for (what, m2, n2, p, o, r, must_fail) in consistency_variants {
            let ours = verify_consistency(m2, n2, &o, &r, &p).is_ok();
            let theirs = ct_root(&r, n2)
                .verify_consistency(&ct_root(&o, m2), &ConsistencyProof::try_from_bytes(concat(&p)).unwrap())
                .is_ok();
            prop_assert_eq!(ours, theirs, "{} ({}, {}) -> ({}, {})", what, m, n, m2, n2);
            prop_assert!(!(must_fail && ours), "{} verified", what);
        }
    }
}

// ---------------------------------------------------------------------------
// tlog_tiles 0.2: stored hashes, proofs, tiles.
// ---------------------------------------------------------------------------

fn to_tlog(hash: &Hash) -> tlog::Hash {
    tlog::Hash(hash.0)
}

fn from_tlog(hash: &tlog::Hash) -> Hash {
    Hash(hash.0)
}

fn to_tlog_proof(proof: &[Hash]) -> Vec<tlog::Hash> {
    proof.iter().map(to_tlog).collect()
}

fn from_tlog_proof(proof: &[tlog::Hash]) -> Vec<Hash> {
    proof.iter().map(from_tlog).collect()
}

/// A log's hash storage in Go sumdb/tlog's layout, built by `stored_hashes`.
struct Storage(Vec<tlog::Hash>);

impl tlog::HashReader for Storage {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog::Hash>, tlog::Error> {
        indexes
            .iter()
            .map(|&i| {
                self.0
                    .get(i as usize)
                    .copied()
                    .ok_or(tlog::Error::IndexesNotInTree)
            })
            .collect()
    }
}

impl Storage {
    fn build(count: u64) -> Storage {
        let mut storage = Storage(Vec::new());
        for n in 0..count {
            assert_eq!(storage.0.len() as u64, tlog::stored_hash_index(0, n));
            let hashes = tlog::stored_hashes(n, &entry(n), &storage).unwrap();
            storage.0.extend(hashes);
            assert_eq!(storage.0.len() as u64, tlog::stored_hash_count(n + 1));
        }
        storage
    }
}

/// Our proof algorithm reading complete subtree hashes from azul's storage
/// through `stored_hash_index`.
struct StoredSubtrees<'a> {
    storage: &'a Storage,
    tree_size: u64,
}

impl SubtreeHashSource for StoredSubtrees<'_> {
    fn subtree_hash(&mut self, level: u8, index: u64) -> witness_core::Result<Hash> {
        assert!((index + 1) << level <= self.tree_size);
        let hashes = self
            .storage
            .read_hashes(&[tlog::stored_hash_index(level, index)])
            .unwrap();
        Ok(from_tlog(&hashes[0]))
    }
}

const STORED: u64 = 20_000;
static STORAGE: LazyLock<Storage> = LazyLock::new(|| Storage::build(STORED));

/// The tlog tile with our tile's coordinates (tlog-tiles' height is 8).
fn tlog_tile(id: &TileId) -> tlog::Tile {
    tlog::Tile::new(8, id.level, id.index, u32::from(id.width), false)
}

fn our_tile(tile: &tlog::Tile) -> TileId {
    TileId {
        level: tile.level(),
        index: tile.level_index(),
        width: u16::try_from(tile.width()).unwrap(),
    }
}

/// Every tile of a tree of `size` leaves, as we compute them.
fn our_tiles(size: u64) -> BTreeSet<TileId> {
    let mut tiles = BTreeSet::new();
    for level in 0..8u8 {
        let mut index = 0;
        while let Some(tile) = TileId::for_tree_size(level, index, size) {
            tiles.insert(tile);
            index += 1;
        }
    }
    tiles
}

/// Our tile source fed with tiles azul builds from its storage.
fn azul_tile_source(
    size: u64,
) -> TileHashSource<impl FnMut(&TileId) -> witness_core::Result<Vec<u8>>> {
    TileHashSource::new(size, |tile: &TileId| {
        Ok(tlog_tile(tile).read_data(&*STORAGE).unwrap())
    })
}

/// azul's `TileReader`, serving tiles that our coordinates say exist.
struct AzulTiles {
    size: u64,
}

impl TileReader for AzulTiles {
    fn height(&self) -> u8 {
        8
    }

    fn read_tiles(&self, tiles: &[tlog::Tile]) -> Result<Vec<Vec<u8>>, tlog::Error> {
        tiles
            .iter()
            .map(|t| {
                let ours = our_tile(t);
                assert_eq!(
                    TileId::for_tree_size(ours.level, ours.index, self.size),
                    Some(ours)
                );
                t.read_data(&*STORAGE)
            })
            .collect()
    }

    fn save_tiles(&self, _tiles: &[tlog::Tile], _data: &[Vec<u8>]) {}
}

/// Compares proofs for one (index, old size, size) triple between azul (from
/// its storage and from its tile reader) and us (from leaves, from azul's
/// storage and from azul's tiles), and cross-verifies them.
fn compare_with_tlog(i: u64, m: u64, n: u64, ours_from: &mut dyn SubtreeHashSource) {
    let storage = &*STORAGE;
    let root = tree_root(ours_from, n).unwrap();
    let th = tlog::tree_hash(n, storage).unwrap();
    assert_eq!(from_tlog(&th), root, "tree hash at {n}");
    let leaf = leaf_hash(&entry(i));
    assert_eq!(from_tlog(&tlog::record_hash(&entry(i))), leaf);

    let ours = prove_inclusion(ours_from, i, n).unwrap();
    let theirs = tlog::prove_record(n, i, storage).unwrap();
    assert_eq!(from_tlog_proof(&theirs), ours, "record proof {i} in {n}");
    tlog::check_record(&to_tlog_proof(&ours), n, th, i, to_tlog(&leaf)).unwrap();
    verify_inclusion(&leaf, i, n, &from_tlog_proof(&theirs), &root).unwrap();

    let old = tree_root(ours_from, m).unwrap();
    assert_eq!(from_tlog(&tlog::tree_hash(m, storage).unwrap()), old);
    let ours = prove_consistency(ours_from, m, n).unwrap();
    let theirs = tlog::prove_tree(n, m, storage).unwrap();
    assert_eq!(from_tlog_proof(&theirs), ours, "tree proof {m} -> {n}");
    tlog::check_tree(&to_tlog_proof(&ours), n, th, m, to_tlog(&old)).unwrap();
    verify_consistency(m, n, &old, &root, &from_tlog_proof(&theirs)).unwrap();

    // The same proofs from azul's tiles, read by us and by azul's own tile
    // reader (which authenticates the tiles against our root).
    let mut tiles = azul_tile_source(n);
    assert_eq!(tree_root(&mut tiles, n).unwrap(), root);
    assert_eq!(
        prove_inclusion(&mut tiles, i, n).unwrap(),
        from_tlog_proof(&theirs_record(n, i))
    );
    assert_eq!(prove_consistency(&mut tiles, m, n).unwrap(), ours);
    let reader = AzulTiles { size: n };
    let tile_hashes = tlog::TileHashReader::new(n, to_tlog(&root), &reader);
    assert_eq!(
        from_tlog_proof(&tlog::prove_tree(n, m, &tile_hashes).unwrap()),
        ours
    );
    assert_eq!(from_tlog(&tlog::tree_hash(n, &tile_hashes).unwrap()), root);
}

fn theirs_record(n: u64, i: u64) -> Vec<tlog::Hash> {
    tlog::prove_record(n, i, &*STORAGE).unwrap()
}

#[test]
fn tlog_tiles_agrees_on_every_tree_up_to_48_leaves() {
    let leaves: Vec<Hash> = (0..48).map(|i| leaf_hash(&entry(i))).collect();
    let mut source = CachedLeafHashes::new(&leaves);
    assert_eq!(
        from_tlog(&tlog::tree_hash(0, &*STORAGE).unwrap()),
        tree_root(&mut source, 0).unwrap()
    );
    assert_eq!(
        from_tlog(&tlog::EMPTY_HASH),
        tree_root(&mut source, 0).unwrap()
    );
    for n in 1..=48 {
        for i in 0..n {
            let m = n - i;
            compare_with_tlog(i, m, n, &mut source);
        }
    }
}

#[test]
fn stored_hash_layout_holds_our_subtree_hashes() {
    // Go's layout stores every complete subtree hash: (level, n) at
    // stored_hash_index(level, n). Each must be our subtree hash.
    let leaves: Vec<Hash> = (0..1024).map(|i| leaf_hash(&entry(i))).collect();
    let mut ours = CachedLeafHashes::new(&leaves);
    for level in 0..=10u8 {
        for n in 0..(1024u64 >> level) {
            let index = tlog::stored_hash_index(level, n);
            assert_eq!(tlog::split_stored_hash_index(index), (level, n));
            assert_eq!(
                from_tlog(&STORAGE.0[index as usize]),
                ours.subtree_hash(level, n).unwrap(),
                "level {level} index {n}"
            );
        }
    }
}

fn sizes(max: u64) -> impl Strategy<Value = u64> {
    let mut near = Vec::new();
    for k in 0..64 {
        for d in [-1i64, 0, 1] {
            let size = (1i64 << k.min(62)) + d;
            if (1..=max as i64).contains(&size) {
                near.push(size as u64);
            }
        }
    }
    prop_oneof![
        1..=max,
        proptest::sample::select(near),
        (1..=max / TILE_WIDTH, -1i64..=1)
            .prop_map(move |(t, d)| { ((t * TILE_WIDTH) as i64 + d).clamp(1, max as i64) as u64 }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Random sizes up to 20,000: our proofs from azul's storage and from
    /// azul's tiles equal azul's, and each side verifies the other's.
    #[test]
    fn tlog_tiles_agrees_on_random_trees(
        n in sizes(STORED),
        i_seed in any::<u64>(),
        m_seed in any::<u64>(),
    ) {
        let (i, m) = (i_seed % n, 1 + m_seed % n);
        let mut source = StoredSubtrees { storage: &STORAGE, tree_size: n };
        compare_with_tlog(i, m, n, &mut source);
    }

    /// Tile coordinates: azul's list of tiles of a tree, and of the tiles that
    /// change when it grows, equal ours; paths are the same but for Go's
    /// height element.
    #[test]
    fn tlog_tiles_agrees_on_tile_coordinates(
        old in prop_oneof![0u64..70_000, Just(0u64)],
        grow in prop_oneof![1u64..70_000, 1u64..300],
    ) {
        let new = old + grow;
        let all: BTreeSet<TileId> = tlog::Tile::new_tiles(8, 0, new).iter().map(our_tile).collect();
        prop_assert_eq!(&all, &our_tiles(new));
        let changed: BTreeSet<TileId> = tlog::Tile::new_tiles(8, old, new).iter().map(our_tile).collect();
        let old_tiles = our_tiles(old);
        let want: BTreeSet<TileId> = our_tiles(new).difference(&old_tiles).copied().collect();
        prop_assert_eq!(changed, want);
        for tile in &all {
            // Go's sumdb paths carry the tile height (tile/8/...); C2SP
            // tlog-tiles fixes it at 8 and leaves it out.
            let theirs = tlog_tile(tile);
            prop_assert_eq!(theirs.path().replacen("tile/8/", "tile/", 1), tile.path());
            prop_assert_eq!(tlog::Tile::from_path(&theirs.path()).unwrap(), theirs);
            let mut data = theirs;
            data.set_is_data();
            prop_assert_eq!(data.path().replacen("tile/8/data/", "tile/entries/", 1), tile.entries_path());
        }
    }
}

/// azul's hash reader for a tree of identical leaves of any size: complete
/// subtree hashes depend only on their level.
struct UniformStorage {
    levels: Vec<tlog::Hash>,
}

impl UniformStorage {
    fn new() -> UniformStorage {
        let mut levels = vec![tlog::record_hash(b"same")];
        for _ in 0..63 {
            let last = *levels.last().unwrap();
            levels.push(tlog::node_hash(last, last));
        }
        UniformStorage { levels }
    }
}

impl tlog::HashReader for UniformStorage {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog::Hash>, tlog::Error> {
        Ok(indexes
            .iter()
            .map(|&i| self.levels[usize::from(tlog::split_stored_hash_index(i).0)])
            .collect())
    }
}

impl SubtreeHashSource for &UniformStorage {
    fn subtree_hash(&mut self, level: u8, _index: u64) -> witness_core::Result<Hash> {
        Ok(from_tlog(&self.levels[usize::from(level)]))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Trees of up to 2^62 leaves (all leaves equal, so nothing has to be
    /// stored): same proofs as azul, each verified by the other side.
    #[test]
    fn tlog_tiles_agrees_on_huge_trees(
        n in prop_oneof![1u64..=1 << 62, (1u32..=62, -1i64..=1).prop_map(|(k, d)| ((1i64 << k) + d) as u64)],
        i_seed in any::<u64>(),
        m_seed in any::<u64>(),
    ) {
        let uniform = UniformStorage::new();
        let (i, m) = (i_seed % n, 1 + m_seed % n);
        let mut source = &uniform;
        let root = tree_root(&mut source, n).unwrap();
        let th = tlog::tree_hash(n, &uniform).unwrap();
        prop_assert_eq!(from_tlog(&th), root);
        let leaf = from_tlog(&uniform.levels[0]);
        let ours = prove_inclusion(&mut source, i, n).unwrap();
        prop_assert_eq!(&ours, &from_tlog_proof(&tlog::prove_record(n, i, &uniform).unwrap()));
        tlog::check_record(&to_tlog_proof(&ours), n, th, i, to_tlog(&leaf)).unwrap();
        prop_assert_eq!(root_from_inclusion_proof(&leaf, i, n, &ours).unwrap(), root);
        let old = tree_root(&mut source, m).unwrap();
        let theirs = tlog::prove_tree(n, m, &uniform).unwrap();
        if theirs.len() > MAX_PROOF_HASHES {
            // See tlog_tiles_accepts_64_hash_consistency_proofs_that_we_refuse.
            prop_assert!(prove_consistency(&mut source, m, n).is_err());
        } else {
            let ours = prove_consistency(&mut source, m, n).unwrap();
            prop_assert_eq!(&ours, &from_tlog_proof(&theirs));
            tlog::check_tree(&to_tlog_proof(&ours), n, th, m, to_tlog(&old)).unwrap();
            verify_consistency(m, n, &old, &root, &ours).unwrap();
        }
    }
}

#[test]
fn tlog_tiles_accepts_64_hash_consistency_proofs_that_we_refuse() {
    // Divergence: above 2^62 leaves a consistency proof can need 64 hashes
    // (63 levels plus the old tree's boundary subtree). Go's tlog (and azul)
    // accept it; we cap proofs at 63 hashes because c2sp.org/tlog-witness
    // forbids clients to send more than 63 consistency proof lines.
    let uniform = UniformStorage::new();
    let (m, n) = ((1u64 << 62) - 1, MAX_TREE_SIZE);
    let th = tlog::tree_hash(n, &uniform).unwrap();
    let old = tlog::tree_hash(m, &uniform).unwrap();
    let theirs = tlog::prove_tree(n, m, &uniform).unwrap();
    assert_eq!(theirs.len(), 64);
    tlog::check_tree(&theirs, n, th, m, old).unwrap();
    // And we refuse to generate one, rather than emit a proof nobody accepts.
    let mut source = &uniform;
    assert_eq!(
        prove_consistency(&mut source, m, n).unwrap_err().kind(),
        "proof_unavailable"
    );
    assert_eq!(
        verify_consistency(
            m,
            n,
            &from_tlog(&old),
            &from_tlog(&th),
            &from_tlog_proof(&theirs)
        )
        .unwrap_err(),
        Error::ProofTooLong {
            count: 64,
            max: MAX_PROOF_HASHES
        }
    );
}

// ---------------------------------------------------------------------------
// tlog_tiles 0.2: checkpoints.
// ---------------------------------------------------------------------------

/// Whether a checkpoint text may be parsed differently by us and by azul:
/// azul accepts control characters in the origin and extension lines (the
/// signed-note layer rejects them before a checkpoint is parsed, in both
/// implementations), and any u64 tree size; we reject both, sizes because every
/// deployed log bounds them to int64 (2^63 - 1).
fn known_checkpoint_divergence(text: &str) -> bool {
    let control = text.chars().any(|c| c < ' ' && c != '\n');
    let huge_size = text
        .split('\n')
        .nth(1)
        .and_then(|line| line.parse::<u64>().ok())
        .is_some_and(|size| size > MAX_TREE_SIZE);
    control || huge_size
}

fn compare_checkpoint_text(bytes: &[u8]) {
    let theirs = tlog::Checkpoint::from_bytes(bytes);
    let Ok(text) = std::str::from_utf8(bytes) else {
        // We take text only (a note is UTF-8); azul refuses non-UTF-8 too.
        assert!(theirs.is_err(), "azul accepted non-UTF-8 {bytes:?}");
        return;
    };
    let ours = parse_checkpoint_text(text);
    match (&ours, &theirs) {
        (Ok(ours), Ok(theirs)) => {
            assert_eq!(ours.origin(), theirs.origin());
            assert_eq!(ours.size(), theirs.size());
            assert_eq!(ours.root_hash().0, theirs.hash().0);
            let extension: String = ours.extensions().iter().map(|e| format!("{e}\n")).collect();
            assert_eq!(extension, theirs.extension());
            // Both parsers are canonical: they give back the bytes they read.
            assert_eq!(ours.to_text().as_bytes(), bytes);
            assert_eq!(theirs.to_bytes(), bytes);
        }
        (Err(_), Err(_)) => {}
        (Err(e), Ok(_)) => assert!(
            known_checkpoint_divergence(text),
            "only azul accepts {text:?} (we say {e})"
        ),
        (Ok(_), Err(_)) => panic!("only we accept {text:?}"),
    }
}

fn origin_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9.-]{1,20}(/[a-z0-9]{1,8}){0,2}",
        "[a-z.]{1,20} - [0-9]{1,19}",
        "[^\\x00-\\x1f\\n]{1,24}",
    ]
}

fn extension_strategy() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(
        prop_oneof![
            "[ -~]{1,30}",
            "Timestamp: [0-9]{1,19}",
            "[^\\x00-\\x1f]{1,10}"
        ],
        0..3,
    )
}

fn checkpoint_text(origin: &str, size: u64, hash: [u8; 32], extensions: &[String]) -> String {
    let mut text = format!("{origin}\n{size}\n{}\n", BASE64.encode(hash));
    for line in extensions {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// One byte-level mutation of a valid input.
#[derive(Clone, Debug)]
enum Mutation {
    FlipBit(usize, u8),
    Replace(usize, u8),
    Insert(usize, &'static str),
    Delete(usize),
    Truncate(usize),
    DuplicateLine(usize),
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    let special = proptest::sample::select(vec![
        "\n",
        "\n\n",
        "\r",
        "\t",
        " ",
        "+",
        "=",
        "/",
        "-",
        "_",
        "0",
        "\u{2014}",
        "\u{2014} ",
        "\u{a0}",
        "\u{85}",
        "\u{2028}",
        "\u{7f}",
        "\u{feff}",
        "A",
        "\u{0}",
    ]);
    prop_oneof![
        (any::<usize>(), 0u8..7).prop_map(|(p, b)| Mutation::FlipBit(p, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Replace(p, b)),
        (any::<usize>(), special).prop_map(|(p, s)| Mutation::Insert(p, s)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Truncate),
        any::<usize>().prop_map(Mutation::DuplicateLine),
    ]
}

fn mutate(bytes: &[u8], mutation: &Mutation) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if out.is_empty() && !matches!(mutation, Mutation::Insert(..)) {
        return out;
    }
    let at = |p: usize| p % out.len().max(1);
    match *mutation {
        Mutation::FlipBit(p, b) => {
            let i = at(p);
            out[i] ^= 1 << b;
        }
        Mutation::Replace(p, b) => {
            let i = at(p);
            out[i] = b;
        }
        Mutation::Insert(p, s) => {
            let i = p % (out.len() + 1);
            out.splice(i..i, s.bytes());
        }
        Mutation::Delete(p) => {
            let i = at(p);
            out.remove(i);
        }
        Mutation::Truncate(p) => out.truncate(p % (out.len() + 1)),
        Mutation::DuplicateLine(p) => {
            let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
            let line = lines[p % lines.len()].to_vec();
            let start: usize = lines[..p % lines.len()].iter().map(|l| l.len()).sum();
            out.splice(start..start, line);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Generated checkpoints: the same text from both constructors, parsed the
    /// same way by both parsers.
    #[test]
    fn tlog_tiles_agrees_on_generated_checkpoints(
        origin in origin_strategy(),
        size in prop_oneof![0..=MAX_TREE_SIZE, any::<u64>(), Just(MAX_TREE_SIZE), Just(MAX_TREE_SIZE + 1)],
        hash in any::<[u8; 32]>(),
        extensions in extension_strategy(),
    ) {
        let joined: String = extensions.iter().map(|e| format!("{e}\n")).collect();
        let theirs = tlog::Checkpoint::new(&origin, size, tlog::Hash(hash), &joined).unwrap();
        let ours = Checkpoint::new(&origin, size, Hash(hash), extensions.clone());
        if size > MAX_TREE_SIZE {
            // Divergence: azul takes any u64 size, we stop at 2^63 - 1.
            prop_assert!(ours.is_err());
        } else {
            prop_assert_eq!(ours.unwrap().to_text().into_bytes(), theirs.to_bytes());
        }
        let text = checkpoint_text(&origin, size, hash, &extensions);
        prop_assert_eq!(text.as_bytes(), &theirs.to_bytes()[..]);
        compare_checkpoint_text(text.as_bytes());
    }

    /// Mutated checkpoints: both parsers accept and reject the same texts,
    /// but for the known divergences.
    #[test]
    fn tlog_tiles_agrees_on_mutated_checkpoints(
        origin in origin_strategy(),
        size in 0..=MAX_TREE_SIZE,
        hash in any::<[u8; 32]>(),
        extensions in extension_strategy(),
        mutations in proptest::collection::vec(mutation_strategy(), 1..3),
    ) {
        let mut bytes = checkpoint_text(&origin, size, hash, &extensions).into_bytes();
        for mutation in &mutations {
            bytes = mutate(&bytes, mutation);
        }
        compare_checkpoint_text(&bytes);
    }
}

#[test]
fn tlog_tiles_checkpoint_divergences_are_exactly_these() {
    let hash = BASE64.encode([7u8; 32]);
    // Both refuse: empty origin, leading zero, sign, too big for u64, short
    // hash, empty extension line, missing final newline.
    for text in [
        format!("\n1\n{hash}\n"),
        format!("o\n01\n{hash}\n"),
        format!("o\n+1\n{hash}\n"),
        format!("o\n18446744073709551616\n{hash}\n"),
        "o\n1\nAAAA\n".to_owned(),
        format!("o\n1\n{hash}\n\n"),
        format!("o\n1\n{hash}\next"),
        format!("o\n1\n{hash}"),
        format!("o\n1 \n{hash}\n"),
    ] {
        assert!(parse_checkpoint_text(&text).is_err(), "{text:?}");
        assert!(
            tlog::Checkpoint::from_bytes(text.as_bytes()).is_err(),
            "{text:?}"
        );
    }
    // Only azul accepts: sizes from 2^63 to 2^64 - 1, and control characters.
    for text in [
        format!("o\n9223372036854775808\n{hash}\n"),
        format!("o\n18446744073709551615\n{hash}\n"),
        format!("o\r\n1\n{hash}\n"),
        format!("o\t1\n1\n{hash}\n"),
        format!("o\n1\n{hash}\next\r\n"),
    ] {
        assert!(parse_checkpoint_text(&text).is_err(), "{text:?}");
        assert!(
            tlog::Checkpoint::from_bytes(text.as_bytes()).is_ok(),
            "{text:?}"
        );
        assert!(known_checkpoint_divergence(&text));
    }
    // Both accept the largest size we take.
    compare_checkpoint_text(format!("o\n9223372036854775807\n{hash}\n").as_bytes());
}

// ---------------------------------------------------------------------------
// Real checkpoints from shared/testdata.
// ---------------------------------------------------------------------------

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata/rekor");

fn read_dir(dir: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(format!("{TESTDATA}/{dir}"))
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no files in {dir}");
    files
}

/// The vkeys listed in keys/vkeys.txt (log keys and witness keys).
fn testdata_vkeys() -> Vec<String> {
    std::fs::read_to_string(format!("{TESTDATA}/keys/vkeys.txt"))
        .unwrap()
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.split_whitespace().next().unwrap().to_owned())
        .collect()
}

/// A cosignature/v1 verifier written from c2sp.org/tlog-cosignature, for
/// `signed_note`'s pluggable `Verifier` trait (azul 0.2 has none).
struct SpecCosignatureVerifier {
    name: String,
    id: u32,
    key: ed25519_dalek::VerifyingKey,
}

impl SpecCosignatureVerifier {
    fn new(name: &str, public_key: &[u8; 32]) -> SpecCosignatureVerifier {
        let mut typed = vec![0x04];
        typed.extend_from_slice(public_key);
        SpecCosignatureVerifier {
            name: name.to_owned(),
            id: signed_note::key_id(name, &typed),
            key: ed25519_dalek::VerifyingKey::from_bytes(public_key).unwrap(),
        }
    }

    /// From a vkey of type 0x04.
    fn from_vkey(vkey: &str) -> Option<SpecCosignatureVerifier> {
        let mut parts = vkey.splitn(3, '+');
        let (name, _, key) = (parts.next()?, parts.next()?, parts.next()?);
        let key = BASE64.decode(key).ok()?;
        let (&0x04, public) = key.split_first()? else {
            return None;
        };
        Some(SpecCosignatureVerifier::new(name, public.try_into().ok()?))
    }
}

/// "cosignature/v1", "time <t>", then the checkpoint text, as the spec puts it.
fn spec_cosignature_message(timestamp: u64, text: &[u8]) -> Vec<u8> {
    let mut message = b"cosignature/v1\n".to_vec();
    message.extend_from_slice(format!("time {timestamp}\n").as_bytes());
    message.extend_from_slice(text);
    message
}

impl signed_note::Verifier for SpecCosignatureVerifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.id
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(blob) = <[u8; 72]>::try_from(sig) else {
            return false;
        };
        let timestamp = u64::from_be_bytes(blob[..8].try_into().unwrap());
        let signature = ed25519_dalek::Signature::from_bytes(blob[8..].try_into().unwrap());
        self.key
            .verify(&spec_cosignature_message(timestamp, msg), &signature)
            .is_ok()
    }
}

/// azul's verifiers for a set of vkeys: `StandardVerifier` where azul can
/// build one (type 0x01), the spec cosignature verifier for type 0x04, none
/// for ECDSA (type 0x02), which azul does not support.
fn azul_verifiers(vkeys: &[String]) -> signed_note::VerifierList {
    let mut list: Vec<Box<dyn signed_note::Verifier>> = Vec::new();
    for vkey in vkeys {
        if let Ok(verifier) = signed_note::StandardVerifier::new(vkey) {
            list.push(Box::new(verifier));
        } else if let Some(verifier) = SpecCosignatureVerifier::from_vkey(vkey) {
            list.push(Box::new(verifier));
        }
    }
    signed_note::VerifierList::new(list)
}

#[test]
fn real_checkpoints_parse_and_verify_alike() {
    let vkeys = testdata_vkeys();
    let ours_keys: Vec<VerifierKey> = vkeys
        .iter()
        .map(|v| VerifierKey::parse_vkey(v).unwrap())
        .collect();
    let theirs_keys = azul_verifiers(&vkeys);
    // Key IDs: ours equal azul's (Ed25519 and cosignature keys hash the name).
    for (vkey, key) in vkeys.iter().zip(&ours_keys) {
        let blob = BASE64.decode(vkey.splitn(3, '+').nth(2).unwrap()).unwrap();
        match key.signature_type() {
            SignatureType::Ed25519 | SignatureType::CosignatureV1 => {
                assert_eq!(key.key_id(), signed_note::key_id(key.name(), &blob));
            }
            // ECDSA key IDs hash the DER key only (transparency-dev), which
            // azul's key_id does not model.
            _ => assert_ne!(key.key_id(), signed_note::key_id(key.name(), &blob)),
        }
        assert_eq!(&key.to_vkey(), vkey);
    }

    let mut ecdsa_only = 0;
    for (name, bytes) in read_dir("checkpoints/valid") {
        let ours = parse_note(&bytes).unwrap();
        let theirs = signed_note::Note::from_bytes(&bytes).unwrap();
        assert_eq!(ours.text().as_bytes(), theirs.text(), "{name}");
        assert_eq!(ours.to_bytes(), bytes, "{name}");
        assert_eq!(theirs.to_bytes(), bytes, "{name}");
        compare_checkpoint_text(ours.text().as_bytes());

        let verified = verify_checkpoint(&bytes, &ours_keys, None).unwrap();
        let ours_verified: BTreeSet<(String, u32, bool)> = verified
            .note()
            .verified()
            .iter()
            .map(|v| {
                let s = &v.signature;
                let ecdsa = v.signature_type == SignatureType::EcdsaP256;
                (s.key_name().to_owned(), s.key_id(), ecdsa)
            })
            .collect();
        assert_eq!(verified.note().unverified().count(), 0, "{name}");
        // azul verifies the same signatures, but for ECDSA (type 0x02, the
        // Rekor v1 logs): signed_note 0.2 supports Ed25519 only.
        let want: BTreeSet<(String, u32)> = ours_verified
            .iter()
            .filter(|(_, _, ecdsa)| !ecdsa)
            .map(|(n, id, _)| (n.clone(), *id))
            .collect();
        match theirs.verify(&theirs_keys) {
            Ok((verified, unverified)) => {
                let got: BTreeSet<(String, u32)> = verified
                    .iter()
                    .map(|s| (s.name().to_owned(), s.id()))
                    .collect();
                assert_eq!(got, want, "{name}");
                let got_unverified: BTreeSet<(String, u32)> = unverified
                    .iter()
                    .map(|s| (s.name().to_owned(), s.id()))
                    .collect();
                let ecdsa: BTreeSet<(String, u32)> = ours_verified
                    .iter()
                    .filter(|(_, _, ecdsa)| *ecdsa)
                    .map(|(n, id, _)| (n.clone(), *id))
                    .collect();
                assert_eq!(got_unverified, ecdsa, "{name}");
            }
            Err(signed_note::NoteError::UnverifiedNote) => {
                assert!(want.is_empty(), "{name}");
                ecdsa_only += 1;
            }
            Err(e) => panic!("{name}: {e}"),
        }
    }
    assert!(ecdsa_only > 0);

    // The invalid checkpoint (a corrupted key ID hint): both parse it, neither
    // finds a trusted signature on it.
    for (name, bytes) in read_dir("checkpoints/invalid") {
        let theirs = signed_note::Note::from_bytes(&bytes).unwrap();
        assert_eq!(parse_note(&bytes).unwrap().to_bytes(), theirs.to_bytes());
        assert_eq!(
            verify_checkpoint(&bytes, &ours_keys, None).unwrap_err(),
            Error::NoTrustedSignature,
            "{name}"
        );
        assert!(matches!(
            theirs.verify(&theirs_keys),
            Err(signed_note::NoteError::UnverifiedNote)
        ));
    }
}

// ---------------------------------------------------------------------------
// signed_note 0.2: notes, keys and Ed25519 signatures.
// ---------------------------------------------------------------------------

fn public_key(seed: &[u8; 32]) -> [u8; 32] {
    SigningKey::from_bytes(seed).verifying_key().to_bytes()
}

/// The vkey of an Ed25519 key, as c2sp.org/signed-note defines it.
fn spec_vkey(name: &str, seed: &[u8; 32]) -> String {
    let mut typed = vec![0x01];
    typed.extend_from_slice(&public_key(seed));
    let id = signed_note::key_id(name, &typed);
    format!("{name}+{id:08x}+{}", BASE64.encode(typed))
}

/// azul's signer key string (`PRIVATE+KEY+<name>+<id>+base64(0x01 || seed)`).
fn azul_signer(name: &str, seed: &[u8; 32]) -> signed_note::StandardSigner {
    let mut typed = vec![0x01];
    typed.extend_from_slice(&public_key(seed));
    let id = signed_note::key_id(name, &typed);
    let mut private = vec![0x01];
    private.extend_from_slice(seed);
    let skey = format!("PRIVATE+KEY+{name}+{id:08x}+{}", BASE64.encode(private));
    signed_note::StandardSigner::new(&skey).unwrap()
}

/// Our Ed25519 note signature.
fn our_signature(name: &str, seed: &[u8; 32], text: &str) -> NoteSignature {
    let key = VerifierKey::from_material(name, SignatureType::Ed25519, &public_key(seed)).unwrap();
    let signature = SigningKey::from_bytes(seed).sign(text.as_bytes());
    NoteSignature::new(name, key.key_id(), signature.to_bytes().to_vec()).unwrap()
}

#[test]
fn signed_note_documentation_example_verifies_with_us() {
    // The example key and note from signed_note's documentation (Go's sumdb
    // note example).
    let skey = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    let vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    let text = "If you think cryptography is the answer to your problem,\n\
                then you don't know what your problem is.\n";
    let signed = "If you think cryptography is the answer to your problem,\n\
                  then you don't know what your problem is.\n\
                  \n\
                  \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    let mut theirs = signed_note::Note::new(text.as_bytes(), &[]).unwrap();
    theirs
        .add_sigs(&[&signed_note::StandardSigner::new(skey).unwrap()])
        .unwrap();
    assert_eq!(theirs.to_bytes(), signed.as_bytes());

    let key = VerifierKey::parse_vkey(vkey).unwrap();
    assert_eq!(key.to_vkey(), vkey);
    let note = parse_note(signed.as_bytes()).unwrap();
    assert_eq!(note.text(), text);
    verify_note(note, std::slice::from_ref(&key)).unwrap();

    // Our signature with the same seed is the same bytes (Ed25519 is
    // deterministic), and our note serializes identically.
    let seed: [u8; 32] = BASE64
        .decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")
        .unwrap()[1..]
        .try_into()
        .unwrap();
    assert_eq!(spec_vkey("PeterNeumann", &seed), vkey);
    let mut ours = Note::new(text, Vec::new()).unwrap();
    ours.push_signature(our_signature("PeterNeumann", &seed, text));
    assert_eq!(ours.to_bytes(), signed.as_bytes());
}

fn note_text_strategy() -> impl Strategy<Value = String> {
    proptest::collection::vec("[^\\x00-\\x1f]{0,40}", 1..5).prop_map(|lines| {
        let mut text = lines.join("\n");
        text.push('\n');
        text
    })
}

fn key_name_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9.-]{1,20}(/[a-z0-9]{1,8})?",
        "[^\\s+\\x00-\\x1f]{1,12}"
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Notes signed by azul verify with us and ours with azul, serialize to
    /// the same bytes, and keys have the same vkeys and key IDs.
    #[test]
    fn signed_note_agrees_on_generated_notes(
        text in note_text_strategy(),
        name_a in key_name_strategy(),
        name_b in key_name_strategy(),
        seed_a in any::<[u8; 32]>(),
        seed_b in any::<[u8; 32]>(),
    ) {
        let vkey_a = spec_vkey(&name_a, &seed_a);
        let ours_a = VerifierKey::parse_vkey(&vkey_a).unwrap();
        prop_assert_eq!(
            VerifierKey::from_material(&name_a, SignatureType::Ed25519, &public_key(&seed_a)).unwrap().to_vkey(),
            vkey_a.clone()
        );
        let theirs_a = signed_note::StandardVerifier::new(&vkey_a).unwrap();
        prop_assert_eq!(theirs_a.key_id(), ours_a.key_id());
        let theirs_b = signed_note::StandardVerifier::new(&spec_vkey(&name_b, &seed_b)).unwrap();
        let ours_b = VerifierKey::parse_vkey(&spec_vkey(&name_b, &seed_b)).unwrap();

        // A signed by azul, B by us.
        let mut theirs = signed_note::Note::new(text.as_bytes(), &[]).unwrap();
        theirs.add_sigs(&[&azul_signer(&name_a, &seed_a)]).unwrap();
        let mut ours = parse_note(&theirs.to_bytes()).unwrap();
        prop_assert_eq!(ours.text(), text.as_str());
        ours.push_signature(our_signature(&name_b, &seed_b, &text));
        let bytes = ours.to_bytes();

        let theirs = signed_note::Note::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&theirs.to_bytes(), &bytes);
        let list = signed_note::VerifierList::new(vec![Box::new(theirs_a), Box::new(theirs_b)]);
        let (verified, unverified) = theirs.verify(&list).unwrap();
        let same_key = name_a == name_b && seed_a == seed_b;
        prop_assert_eq!(verified.len(), if same_key { 1 } else { 2 });
        prop_assert!(unverified.is_empty());
        let verified = verify_note(parse_note(&bytes).unwrap(), &[ours_a, ours_b]).unwrap();
        prop_assert_eq!(verified.verified().len(), if same_key { 1 } else { 2 });
    }
}

/// The note every mutation starts from: text signed by a trusted key A, and
/// by a key B that neither side trusts.
struct MutationBase {
    bytes: Vec<u8>,
    ours_key: VerifierKey,
    vkey: String,
}

static MUTATION_BASE: LazyLock<MutationBase> = LazyLock::new(|| {
    let text = "example.com/log\n42\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    let (seed_a, seed_b) = ([1u8; 32], [2u8; 32]);
    let mut note = Note::new(text, Vec::new()).unwrap();
    note.push_signature(our_signature("example.com/log", &seed_a, text));
    note.push_signature(our_signature("other.example", &seed_b, text));
    let vkey = spec_vkey("example.com/log", &seed_a);
    MutationBase {
        bytes: note.to_bytes(),
        ours_key: VerifierKey::parse_vkey(&vkey).unwrap(),
        vkey,
    }
});

/// Counts the signature lines of a parsed note that name the trusted key.
fn trusted_lines(note: &Note, key: &VerifierKey) -> usize {
    note.signatures().iter().filter(|s| key.matches(s)).count()
}

/// Compares parsing and verification of one note between us and azul.
fn compare_note(bytes: &[u8]) {
    let base = &*MUTATION_BASE;
    let ours = parse_note(bytes);
    let theirs = signed_note::Note::from_bytes(bytes);
    match (ours, theirs) {
        (Ok(ours), Ok(theirs)) => {
            assert_eq!(ours.text().as_bytes(), theirs.text());
            // Re-encoding is canonical on both sides, so equal bytes mean the
            // same signature names, key IDs and signature bytes.
            assert_eq!(ours.to_bytes(), theirs.to_bytes());
            for signature in ours.signatures() {
                let line = signature.to_line();
                let parsed =
                    signed_note::Signature::from_bytes(line.trim_end().as_bytes()).unwrap();
                assert_eq!(parsed.name(), signature.key_name());
                assert_eq!(parsed.id(), signature.key_id());
                assert_eq!(parsed.signature(), signature.signature());
            }
            let list = signed_note::VerifierList::new(vec![Box::new(
                signed_note::StandardVerifier::new(&base.vkey).unwrap(),
            )]);
            let trusted = trusted_lines(&ours, &base.ours_key);
            let ours_ok = verify_note(ours, std::slice::from_ref(&base.ours_key)).is_ok();
            let theirs_ok = theirs.verify(&list).is_ok();
            if ours_ok != theirs_ok {
                // Divergence: Go's note (and azul's port) verifies only the
                // first signature line of each trusted key and skips repeats;
                // we verify every line a trusted key claims and refuse the note
                // if any fails.
                assert!(
                    trusted >= 2 && !ours_ok && theirs_ok,
                    "verification differs on {:?}",
                    String::from_utf8_lossy(bytes)
                );
            }
        }
        (Err(_), Err(_)) => {}
        (ours, theirs) => panic!(
            "parsers disagree on {:?}: ours {:?}, azul {:?}",
            String::from_utf8_lossy(bytes),
            ours.map(|n| n.to_bytes().len()),
            theirs.map(|n| n.to_bytes().len())
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(160))]

    /// Random mutations of a valid note: both parsers accept and reject the
    /// same bytes, parse them the same way, and reach the same verification
    /// verdict (but for the one documented divergence).
    #[test]
    fn signed_note_agrees_on_mutated_notes(
        mutations in proptest::collection::vec(mutation_strategy(), 1..4),
    ) {
        let mut bytes = MUTATION_BASE.bytes.clone();
        for mutation in &mutations {
            bytes = mutate(&bytes, mutation);
        }
        compare_note(&bytes);
    }

    /// Random mutations of a vkey: both accept and reject the same strings,
    /// but for the known divergences.
    #[test]
    fn signed_note_agrees_on_mutated_vkeys(
        mutations in proptest::collection::vec(mutation_strategy(), 1..3),
        name in key_name_strategy(),
        seed in any::<[u8; 32]>(),
    ) {
        let mut bytes = spec_vkey(&name, &seed).into_bytes();
        for mutation in &mutations {
            bytes = mutate(&bytes, mutation);
        }
        let Ok(vkey) = String::from_utf8(bytes) else { return Ok(()) };
        let ours = VerifierKey::parse_vkey(&vkey);
        let theirs = signed_note::StandardVerifier::new(&vkey);
        match (&ours, &theirs) {
            (Ok(ours), Ok(theirs)) => {
                prop_assert_eq!(ours.name(), theirs.name());
                prop_assert_eq!(ours.key_id(), theirs.key_id());
            }
            (Err(_), Err(_)) => {}
            // Divergence: we trim a trailing CR/LF (keys are read from lines of
            // config files); azul takes the string as it is.
            (Ok(ours), Err(_)) => prop_assert!(
                vkey.ends_with(['\r', '\n']) && ours.to_vkey() == vkey.trim_end_matches(['\r', '\n']),
                "only we accept {:?}", vkey
            ),
            (Err(e), Ok(_)) => prop_assert!(false, "only azul accepts {:?} (we say {})", vkey, e),
        }
    }
}

#[test]
fn signed_note_format_edge_cases_agree() {
    let base = String::from_utf8(MUTATION_BASE.bytes.clone()).unwrap();
    let (text, signatures) = base.split_once("\n\n").unwrap();
    let text = format!("{text}\n");
    let first_line = signatures.lines().next().unwrap();
    let (prefix, blob) = first_line.rsplit_once(' ').unwrap();
    let raw = BASE64.decode(blob).unwrap();
    let with_blob = |b: &str| format!("{text}\n{prefix} {b}\n");

    let unpadded = blob.trim_end_matches('=').to_owned();
    let mut trailing_bits = blob.to_owned();
    {
        // The last character before the padding carries unused bits; make them
        // non-zero (non-canonical base64).
        let i = trailing_bits.trim_end_matches('=').len() - 1;
        let c = trailing_bits.as_bytes()[i];
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let v = alphabet.iter().position(|&a| a == c).unwrap();
        trailing_bits.replace_range(i..=i, &(alphabet[v ^ 1] as char).to_string());
    }
    let url_safe = base64::engine::general_purpose::URL_SAFE.encode(&raw);
    let mut cases = vec![
        // Both refuse.
        (with_blob(&unpadded), false),
        (with_blob(&format!("{blob}=")), false),
        (with_blob(&trailing_bits), false),
        (with_blob(&format!(" {blob}")), false),
        (with_blob(&format!("{blob} ")), false),
        (with_blob(&BASE64.encode(&raw[..4])), false),
        (with_blob(""), false),
        (format!("{text}\n{prefix}\t{blob}\n"), false),
        (format!("{text}\n{prefix} {blob}\r\n"), false),
        (format!("{text}\n{prefix} {blob}"), false),
        (format!("{text}\n"), false),
        (format!("{text}{prefix} {blob}\n"), false),
        (format!("{text}\n-{} {blob}\n", &prefix[3..]), false),
        (format!("{text}\n{prefix}  {blob}\n"), false),
        (format!("{text}\n\u{2014} a+b {blob}\n"), false),
        (format!("{text}\n\u{2014} a\u{a0}b {blob}\n"), false),
        (format!("{text}\n\u{2014}  {blob}\n"), false),
        // Both accept: 5-byte signatures (key ID and one byte), any text
        // before the last blank line.
        (with_blob(&BASE64.encode(&raw[..5])), true),
        (format!("\n\n{prefix} {blob}\n"), true),
        (format!("a\n\nb\n\n{prefix} {blob}\n"), true),
        // Two blank lines: the text keeps the first (the last one separates).
        (format!("{text}\n\n\n{prefix} {blob}\n"), true),
        (format!("{text}\n\u{2014} \u{2014} {blob}\n"), true),
    ];
    if url_safe != blob {
        cases.push((with_blob(&url_safe), false));
    }
    for (note, accept) in cases {
        let ours = parse_note(note.as_bytes()).is_ok();
        let theirs = signed_note::Note::from_bytes(note.as_bytes()).is_ok();
        assert_eq!(ours, accept, "ours on {note:?}");
        assert_eq!(theirs, accept, "azul on {note:?}");
        compare_note(note.as_bytes());
    }
}

#[test]
fn signed_note_limits_diverge_as_documented() {
    let base = &*MUTATION_BASE;
    let base_text = String::from_utf8(base.bytes.clone()).unwrap();
    let (text, signatures) = base_text.split_once("\n\n").unwrap();
    let line = signatures.lines().next().unwrap();
    let note_with = |count: usize| format!("{text}\n\n{}", format!("{line}\n").repeat(count));

    // Signature count: both stop at 100 lines.
    let hundred = note_with(MAX_SIGNATURES);
    assert!(parse_note(hundred.as_bytes()).is_ok());
    assert!(signed_note::Note::from_bytes(hundred.as_bytes()).is_ok());
    let too_many = note_with(MAX_SIGNATURES + 1);
    assert_eq!(
        parse_note(too_many.as_bytes()).unwrap_err(),
        Error::TooManySignatures {
            count: 101,
            max: 100
        }
    );
    assert!(signed_note::Note::from_bytes(too_many.as_bytes()).is_err());

    // Size: we refuse notes over 64 KiB before decoding them (a witness never
    // needs more: 16 ML-DSA-44 cosignatures fit); azul's limit is 1,000,000
    // bytes. Divergence in between.
    let padded = |size: usize| {
        let filler = size - format!("\n{text}\n\n{line}\n").len();
        format!("{}\n{text}\n\n{line}\n", "x".repeat(filler))
    };
    let at_limit = padded(MAX_NOTE_SIZE);
    assert_eq!(at_limit.len(), MAX_NOTE_SIZE);
    assert!(parse_note(at_limit.as_bytes()).is_ok());
    assert!(signed_note::Note::from_bytes(at_limit.as_bytes()).is_ok());
    let over = padded(MAX_NOTE_SIZE + 1);
    assert_eq!(parse_note(over.as_bytes()).unwrap_err().kind(), "too_large");
    assert!(signed_note::Note::from_bytes(over.as_bytes()).is_ok());
    let over_azul = padded(1_000_001);
    assert!(parse_note(over_azul.as_bytes()).is_err());
    assert!(signed_note::Note::from_bytes(over_azul.as_bytes()).is_err());
}

#[test]
fn repeated_signatures_from_a_trusted_key_diverge_as_documented() {
    let base = &*MUTATION_BASE;
    let text = parse_note(&base.bytes).unwrap().text().to_owned();
    let good = our_signature("example.com/log", &[1; 32], &text);
    let mut bad_bytes = good.signature().to_vec();
    bad_bytes[0] ^= 1;
    let bad = NoteSignature::new("example.com/log", good.key_id(), bad_bytes).unwrap();
    let list = || {
        signed_note::VerifierList::new(vec![Box::new(
            signed_note::StandardVerifier::new(&base.vkey).unwrap(),
        )])
    };
    let with = |signatures: Vec<NoteSignature>| Note::new(&text, signatures).unwrap().to_bytes();

    // A good line then a bad one from the same key: azul (like Go) skips the
    // repeat; we check it and refuse the note.
    let bytes = with(vec![good.clone(), bad.clone()]);
    let theirs = signed_note::Note::from_bytes(&bytes).unwrap();
    assert_eq!(theirs.verify(&list()).unwrap().0.len(), 1);
    assert_eq!(
        verify_note(
            parse_note(&bytes).unwrap(),
            std::slice::from_ref(&base.ours_key)
        )
        .unwrap_err()
        .kind(),
        "invalid_signature"
    );
    compare_note(&bytes);
    // The bad line first: both refuse.
    let bytes = with(vec![bad, good.clone()]);
    assert!(
        signed_note::Note::from_bytes(&bytes)
            .unwrap()
            .verify(&list())
            .is_err()
    );
    assert!(
        verify_note(
            parse_note(&bytes).unwrap(),
            std::slice::from_ref(&base.ours_key)
        )
        .is_err()
    );
    // Two good lines: both accept and count the key once.
    let bytes = with(vec![good.clone(), good]);
    assert_eq!(
        signed_note::Note::from_bytes(&bytes)
            .unwrap()
            .verify(&list())
            .unwrap()
            .0
            .len(),
        1
    );
    let verified = verify_note(
        parse_note(&bytes).unwrap(),
        std::slice::from_ref(&base.ours_key),
    )
    .unwrap();
    assert_eq!(verified.verified().len(), 1);
}

#[test]
fn signed_note_refuses_vkeys_of_other_types_that_we_take() {
    // Divergence: signed_note 0.2 knows only Ed25519 (type 0x01). We also take
    // ECDSA P-256 (0x02, Rekor v1 logs), cosignature/v1 (0x04) and ML-DSA-44
    // subtree (0x06) keys.
    let vkeys = testdata_vkeys();
    let mut others = 0;
    for vkey in &vkeys {
        let ours = VerifierKey::parse_vkey(vkey).unwrap();
        let theirs = signed_note::StandardVerifier::new(vkey);
        if ours.signature_type() == SignatureType::Ed25519 {
            assert_eq!(theirs.unwrap().key_id(), ours.key_id());
        } else {
            others += 1;
            let theirs = theirs.err().unwrap();
            // ECDSA key IDs do not hash the name, so azul sees a bad ID first.
            assert!(
                matches!(
                    theirs,
                    signed_note::VerifierError::Alg | signed_note::VerifierError::Id
                ),
                "{vkey}: {theirs}"
            );
        }
        // A trailing newline: we trim it, azul does not.
        assert!(VerifierKey::parse_vkey(&format!("{vkey}\n")).is_ok());
        assert!(signed_note::StandardVerifier::new(&format!("{vkey}\n")).is_err());
    }
    assert!(others > 0);
}

// ---------------------------------------------------------------------------
// cosignature/v1.
// ---------------------------------------------------------------------------

/// A cosignature/v1 `timestamped_signature` made from the spec: big-endian
/// timestamp, then the Ed25519 signature of the spec's message.
fn spec_cosign(seed: &[u8; 32], timestamp: u64, text: &[u8]) -> Vec<u8> {
    let signature = SigningKey::from_bytes(seed).sign(&spec_cosignature_message(timestamp, text));
    let mut blob = timestamp.to_be_bytes().to_vec();
    blob.extend_from_slice(&signature.to_bytes());
    blob
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Cosignatures we make verify with the spec verifier through azul's note
    /// verification, and cosignatures made through azul's note signing verify
    /// with our cosignature/v1 `VerifierKey`.
    #[test]
    fn cosignatures_cross_verify(
        origin in origin_strategy(),
        size in 0..=MAX_TREE_SIZE,
        hash in any::<[u8; 32]>(),
        extensions in extension_strategy(),
        witness in key_name_strategy(),
        log_seed in any::<[u8; 32]>(),
        witness_seed in any::<[u8; 32]>(),
        timestamp in prop_oneof![0..=MAX_TREE_SIZE, Just(1_679_315_147u64)],
    ) {
        let text = checkpoint_text(&origin, size, hash, &extensions);
        prop_assume!(parse_checkpoint_text(&text).is_ok());
        prop_assert_eq!(
            cosignature_v1_message(timestamp, &text),
            spec_cosignature_message(timestamp, text.as_bytes())
        );
        let witness_public = public_key(&witness_seed);
        let ours_key = VerifierKey::from_material(&witness, SignatureType::CosignatureV1, &witness_public).unwrap();
        let spec = SpecCosignatureVerifier::new(&witness, &witness_public);
        prop_assert_eq!(ours_key.key_id(), spec.key_id());
        // The same key as an Ed25519 vkey, converted as transparency-dev does.
        let converted = VerifierKey::parse_vkey(&spec_vkey(&witness, &witness_seed)).unwrap()
            .as_cosignature_v1().unwrap();
        prop_assert_eq!(converted.to_vkey(), ours_key.to_vkey());
        // azul cannot build a verifier from a cosignature vkey.
        prop_assert!(matches!(
            signed_note::StandardVerifier::new(&ours_key.to_vkey()),
            Err(signed_note::VerifierError::Alg)
        ));

        // Log-signed checkpoint, cosigned by us.
        let log_name = "log.example";
        let mut note = Note::new(&text, vec![our_signature(log_name, &log_seed, &text)]).unwrap();
        let signature =
            SigningKey::from_bytes(&witness_seed).sign(&cosignature_v1_message(timestamp, &text));
        let mut blob = timestamp.to_be_bytes().to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        note.push_signature(NoteSignature::new(&witness, ours_key.key_id(), blob).unwrap());
        let bytes = note.to_bytes();
        let log_key = VerifierKey::parse_vkey(&spec_vkey(log_name, &log_seed)).unwrap();
        let verified = verify_checkpoint(&bytes, &[log_key.clone(), ours_key.clone()], Some(&origin)).unwrap();
        prop_assert_eq!(verified.note().verified().len(), 2);
        prop_assert_eq!(verified.note().verified()[1].timestamp, Some(timestamp));
        let theirs = signed_note::Note::from_bytes(&bytes).unwrap();
        let list = signed_note::VerifierList::new(vec![
            Box::new(signed_note::StandardVerifier::new(&spec_vkey(log_name, &log_seed)).unwrap()),
            Box::new(SpecCosignatureVerifier::new(&witness, &witness_public)),
        ]);
        prop_assert_eq!(theirs.verify(&list).unwrap().0.len(), 2);

        // Signed by azul's log signer, cosignature lines built with azul's
        // `Signature` type, serialized by azul, verified by us. (signed_note
        // 0.2 has no cosignature signer; its `Signer` trait could host one, but
        // its error type is signature 2.x, which this crate does not depend on.)
        let log_signer = azul_signer(log_name, &log_seed);
        let log_signature = signed_note::Signature::new(
            log_name.to_owned(),
            log_signer.key_id(),
            log_signer.sign(text.as_bytes()).unwrap(),
        )
        .unwrap();
        let cosignature = signed_note::Signature::new(
            witness.clone(),
            spec.key_id(),
            spec_cosign(&witness_seed, timestamp, text.as_bytes()),
        )
        .unwrap();
        let theirs = signed_note::Note::new(text.as_bytes(), &[log_signature, cosignature]).unwrap();
        let bytes = theirs.to_bytes();
        let verified = verify_checkpoint(&bytes, &[log_key, ours_key.clone()], Some(&origin)).unwrap();
        prop_assert_eq!(verified.note().verified().len(), 2);
        prop_assert_eq!(verified.note().verified()[1].timestamp, Some(timestamp));
        // The timestamp is signed: changing it breaks the cosignature on both
        // sides; a cosignature over another timestamp verifies with that one.
        let wrong = spec_cosign(&witness_seed, timestamp ^ 1, text.as_bytes());
        let mut tampered = wrong.clone();
        tampered[..8].copy_from_slice(&timestamp.to_be_bytes());
        prop_assert!(ours_key.verify(&text, &tampered).is_err());
        prop_assert!(!spec.verify(text.as_bytes(), &tampered));
        prop_assert_eq!(ours_key.verify(&text, &wrong), Ok(Some(timestamp ^ 1)));
    }
}
