//! Tile-backed proofs over tiles a hostile server chose: whatever the tiles hold
//! and whatever the sizes, building roots and proofs from them returns a value
//! or an error and never panics.
//!
//! Input: tree size, old size and leaf index (u64 each), then the tile bytes the
//! server returns, sliced per tile.

#![no_main]

use libfuzzer_sys::fuzz_target;
use witness_core::Result;
use witness_core::merkle::{HASH_SIZE, prove_consistency, prove_inclusion, tree_root};
use witness_core::tiles::{TileHashSource, TileId};

fuzz_target!(|input: (u64, u64, u64, &[u8])| {
    let (size, old, index, blob) = input;
    // Each tile is the blob from an offset picked by the tile's coordinates;
    // the first byte decides whether it is cut to the expected length.
    let serve = |tile: &TileId| -> Result<Vec<u8>> {
        let start = (usize::from(tile.level) * 131 + tile.index as usize) % (blob.len() + 1);
        let bytes = &blob[start..];
        let cut = blob.first().is_some_and(|b| b & 1 == 0);
        let want = usize::from(tile.width) * HASH_SIZE;
        Ok(if cut && bytes.len() >= want {
            &bytes[..want]
        } else {
            bytes
        }
        .to_vec())
    };
    for tree_size in [size, size % 70_000, size >> 1] {
        let mut source = TileHashSource::new(tree_size, serve);
        let _ = tree_root(&mut source, tree_size);
        let _ = prove_consistency(&mut source, old % (tree_size | 1), tree_size);
        let _ = prove_consistency(&mut source, old, tree_size);
        let _ = prove_inclusion(&mut source, index % (tree_size | 1), tree_size);
        let _ = prove_inclusion(&mut source, index, tree_size);
    }
});
