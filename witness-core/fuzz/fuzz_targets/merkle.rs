//! Merkle proofs, differentially: over a fixed tree of up to 4096 leaves, roots
//! and proofs computed from precomputed complete subtrees, from tlog-tiles, from
//! leaf hashes and by streaming agree, every generated proof verifies, and a
//! corrupted one does not.
//!
//! Input: new size, old size, leaf index, corrupted byte (u16 each, big-endian).

#![no_main]

use std::collections::HashMap;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use witness_core::merkle::{
    HASH_SIZE, Hash, LeafHashes, RootBuilder, SubtreeHashSource, leaf_hash, node_hash,
    prove_consistency, prove_inclusion, tree_root, verify_consistency, verify_inclusion,
};
use witness_core::tiles::{TILE_WIDTH, TileHashSource, TileId, required_tiles};
use witness_core::{Error, Result};

const LEAVES: usize = 4096;
/// Leaf hashes and streaming are O(size) per call: checked on small trees only.
const SMALL: u64 = 512;

struct Tree {
    /// Hashes of every complete subtree, by level then index (level 0: leaves),
    /// built with `node_hash` alone.
    levels: Vec<Vec<Hash>>,
    /// Full tiles of the whole tree; a smaller tree reads prefixes of them.
    tiles: HashMap<(u8, u64), Vec<u8>>,
}

static TREE: LazyLock<Tree> = LazyLock::new(|| {
    let mut levels = vec![
        (0..LEAVES as u64)
            .map(|i| leaf_hash(&i.to_be_bytes()))
            .collect::<Vec<_>>(),
    ];
    while let Some(below) = levels.last().filter(|l| l.len() > 1) {
        let above = below
            .chunks_exact(2)
            .map(|pair| node_hash(&pair[0], &pair[1]))
            .collect();
        levels.push(above);
    }
    let mut tiles = HashMap::new();
    for (tile_level, level) in levels.iter().step_by(8).enumerate() {
        for (index, chunk) in level.chunks(TILE_WIDTH as usize).enumerate() {
            tiles.insert(
                (tile_level as u8, index as u64),
                chunk.iter().flat_map(|h| h.0).collect(),
            );
        }
    }
    Tree { levels, tiles }
});

/// The reference hash source: precomputed complete subtrees.
struct Precomputed;

impl SubtreeHashSource for Precomputed {
    fn subtree_hash(&mut self, level: u8, index: u64) -> Result<Hash> {
        TREE.levels
            .get(usize::from(level))
            .and_then(|hashes| hashes.get(usize::try_from(index).ok()?))
            .copied()
            .ok_or(Error::ProofUnavailable {
                reason: "beyond the fixed tree",
            })
    }
}

fn fetch(tile: &TileId) -> Result<Vec<u8>> {
    let bytes = &TREE.tiles[&(tile.level, tile.index)];
    Ok(bytes[..usize::from(tile.width) * HASH_SIZE].to_vec())
}

fn corrupt(proof: &[Hash], at: u16) -> Vec<Hash> {
    let mut bad = proof.to_vec();
    let byte = usize::from(at) % (bad.len() * HASH_SIZE);
    bad[byte / HASH_SIZE].0[byte % HASH_SIZE] ^= 1 << (at % 8);
    bad
}

fuzz_target!(init: { LazyLock::force(&TREE); }, |input: (u16, u16, u16, u16)| {
    let (new, old, index, at) = input;
    let leaves = &TREE.levels[0];
    let new = u64::from(new) % LEAVES as u64 + 1;
    let old = u64::from(old) % new + 1;
    let index = u64::from(index) % new;

    let root = tree_root(&mut Precomputed, new).expect("root");
    let old_root = tree_root(&mut Precomputed, old).expect("old root");
    let mut tiles = TileHashSource::new(new, fetch);
    assert_eq!(tree_root(&mut tiles, new).as_ref(), Ok(&root));
    if new <= SMALL {
        let mut builder = RootBuilder::new();
        leaves[..new as usize].iter().for_each(|leaf| builder.push(*leaf));
        assert_eq!(builder.root(), root);
        assert_eq!(tree_root(&mut LeafHashes(leaves), new).as_ref(), Ok(&root));
    }

    let inclusion = prove_inclusion(&mut Precomputed, index, new).expect("inclusion");
    assert_eq!(prove_inclusion(&mut tiles, index, new).as_ref(), Ok(&inclusion));
    if new <= SMALL {
        let from_leaves = prove_inclusion(&mut LeafHashes(leaves), index, new);
        assert_eq!(from_leaves.as_ref(), Ok(&inclusion));
    }
    let leaf = &leaves[index as usize];
    verify_inclusion(leaf, index, new, &inclusion, &root).expect("inclusion verifies");
    if !inclusion.is_empty() {
        let bad = corrupt(&inclusion, at);
        assert!(verify_inclusion(leaf, index, new, &bad, &root).is_err());
        assert!(verify_inclusion(leaf, index, new, &inclusion[1..], &root).is_err());
    }
    let mut long = inclusion.clone();
    long.push(root);
    assert!(verify_inclusion(leaf, index, new, &long, &root).is_err());

    let consistency = prove_consistency(&mut Precomputed, old, new).expect("consistency");
    assert_eq!(prove_consistency(&mut tiles, old, new).as_ref(), Ok(&consistency));
    if new <= SMALL {
        let from_leaves = prove_consistency(&mut LeafHashes(leaves), old, new);
        assert_eq!(from_leaves.as_ref(), Ok(&consistency));
    }
    verify_consistency(old, new, &old_root, &root, &consistency).expect("consistency verifies");
    if !consistency.is_empty() {
        let bad = corrupt(&consistency, at);
        assert!(verify_consistency(old, new, &old_root, &root, &bad).is_err());
        assert!(verify_consistency(old, new, &old_root, &root, &consistency[1..]).is_err());
    }
    if old < new {
        assert!(verify_consistency(old, new, &root, &old_root, &consistency).is_err());
    }

    // The tiles a proof reads are the ones required_tiles lists, as they exist
    // at this tree size.
    let listed = required_tiles(new, |source| {
        prove_consistency(source, old, new)?;
        prove_inclusion(source, index, new)
    })
    .expect("required tiles");
    let mut read = Vec::new();
    let mut recording = TileHashSource::new(new, |tile: &TileId| {
        read.push(*tile);
        fetch(tile)
    });
    prove_consistency(&mut recording, old, new).expect("consistency from tiles");
    prove_inclusion(&mut recording, index, new).expect("inclusion from tiles");
    drop(recording);
    read.sort();
    read.dedup();
    assert_eq!(read, listed);
    for tile in &listed {
        assert_eq!(TileId::for_tree_size(tile.level, tile.index, new), Some(*tile));
    }
});
