//! C2SP tlog-tiles: tile coordinates, resource paths, entry bundles, and a
//! [`SubtreeHashSource`] that computes any complete subtree hash from tiles.
//!
//! The core stays free of I/O: [`TileHashSource`] asks a caller-supplied
//! function for tile bytes, and [`required_tiles`] lists the tiles a proof will
//! need so an async caller can fetch them all first.

use std::collections::HashMap;

use crate::merkle::{HASH_SIZE, Hash, MAX_TREE_SIZE, RootBuilder, SubtreeHashSource};
use crate::{Error, Result};

/// Tree levels per tile.
pub const TILE_HEIGHT: u8 = 8;
/// Hashes in a full tile.
pub const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;

/// One tile of a tree at a given size: level, index and width (1 to 256 hashes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileId {
    /// Tile level (0 holds leaf hashes).
    pub level: u8,
    /// Index of the tile within its level.
    pub index: u64,
    /// Number of hashes; below 256 for a partial tile.
    pub width: u16,
}

impl TileId {
    /// The tile at `level` and `index` as it exists in a tree of `tree_size`
    /// leaves, or `None` if that tree has no hash in it.
    pub fn for_tree_size(level: u8, index: u64, tree_size: u64) -> Option<TileId> {
        let shift = u32::from(level) * u32::from(TILE_HEIGHT);
        let hashes_at_level = tree_size.checked_shr(shift).unwrap_or(0);
        let before = index.checked_mul(TILE_WIDTH)?;
        let width = hashes_at_level.checked_sub(before)?.min(TILE_WIDTH);
        (width > 0).then_some(TileId {
            level,
            index,
            width: width as u16,
        })
    }

    /// The resource path below the log prefix: `tile/<L>/<N>[.p/<W>]`.
    pub fn path(&self) -> String {
        format!("tile/{}/{}", self.level, self.index_path())
    }

    /// The entry bundle path with the same index and width:
    /// `tile/entries/<N>[.p/<W>]`.
    pub fn entries_path(&self) -> String {
        format!("tile/entries/{}", self.index_path())
    }

    fn index_path(&self) -> String {
        let mut groups = Vec::new();
        let mut n = self.index;
        loop {
            groups.push(n % 1000);
            n /= 1000;
            if n == 0 {
                break;
            }
        }
        let mut path = String::new();
        for (i, group) in groups.iter().rev().enumerate() {
            if i + 1 < groups.len() {
                path.push_str(&format!("x{group:03}/"));
            } else {
                path.push_str(&format!("{group:03}"));
            }
        }
        if u64::from(self.width) < TILE_WIDTH {
            path.push_str(&format!(".p/{}", self.width));
        }
        path
    }
}

/// Splits an entry bundle (big-endian uint16 length-prefixed entries) into its
/// entries; a truncated or over-long bundle is an error.
pub fn parse_entry_bundle(bytes: &[u8], expected_entries: usize) -> Result<Vec<&[u8]>> {
    let malformed = |reason| Error::MalformedProof { reason };
    let mut entries = Vec::with_capacity(expected_entries.min(TILE_WIDTH as usize));
    let mut rest = bytes;
    while !rest.is_empty() {
        if entries.len() == expected_entries {
            return Err(malformed("entry bundle has more entries than expected"));
        }
        let [hi, lo, tail @ ..] = rest else {
            return Err(malformed("entry bundle ends inside a length prefix"));
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        if tail.len() < len {
            return Err(malformed("entry bundle ends inside an entry"));
        }
        let (entry, next) = tail.split_at(len);
        entries.push(entry);
        rest = next;
    }
    if entries.len() != expected_entries {
        return Err(malformed("entry bundle has fewer entries than expected"));
    }
    Ok(entries)
}

/// Computes complete subtree hashes of a tree of known size from its tiles.
///
/// `fetch` returns the bytes of a tile. A full tile is accepted where a partial
/// one was asked for (it holds the partial one's hashes as a prefix). Tiles are
/// cached for the life of the source.
pub struct TileHashSource<F> {
    tree_size: u64,
    fetch: F,
    cache: HashMap<(u8, u64), Vec<Hash>>,
}

impl<F: FnMut(&TileId) -> Result<Vec<u8>>> TileHashSource<F> {
    /// A source over the tiles of a tree of `tree_size` leaves.
    pub fn new(tree_size: u64, fetch: F) -> TileHashSource<F> {
        TileHashSource {
            tree_size,
            fetch,
            cache: HashMap::new(),
        }
    }

    fn tile_hashes(&mut self, tile: TileId) -> Result<&[Hash]> {
        let key = (tile.level, tile.index);
        if self
            .cache
            .get(&key)
            .is_none_or(|hashes| hashes.len() < usize::from(tile.width))
        {
            let bytes = (self.fetch)(&tile)?;
            let count = bytes.len() / HASH_SIZE;
            if bytes.len() % HASH_SIZE != 0
                || count < usize::from(tile.width)
                || count as u64 > TILE_WIDTH
            {
                return Err(Error::ProofUnavailable {
                    reason: "tile has the wrong length",
                });
            }
            let hashes = bytes
                .chunks_exact(HASH_SIZE)
                .map(Hash::from_slice)
                .collect::<Result<Vec<_>>>()?;
            self.cache.insert(key, hashes);
        }
        Ok(&self.cache[&key])
    }
}

impl<F: FnMut(&TileId) -> Result<Vec<u8>>> SubtreeHashSource for TileHashSource<F> {
    fn subtree_hash(&mut self, level: u8, index: u64) -> Result<Hash> {
        let unavailable = |reason| Error::ProofUnavailable { reason };
        if level > 63 {
            return Err(unavailable("subtree level above 63"));
        }
        let tile_level = level / TILE_HEIGHT;
        let height_in_tile = level % TILE_HEIGHT;
        let count = 1u64 << height_in_tile;
        let first = index
            .checked_mul(count)
            .ok_or(unavailable("subtree index overflows"))?;
        let end = first
            .checked_add(count)
            .and_then(|e| e.checked_mul(1u64 << (u32::from(tile_level) * 8)))
            .ok_or(unavailable("subtree index overflows"))?;
        if end > self.tree_size || self.tree_size > MAX_TREE_SIZE {
            return Err(unavailable("subtree is not complete at this tree size"));
        }
        let tile = TileId::for_tree_size(tile_level, first / TILE_WIDTH, self.tree_size)
            .ok_or(unavailable("tile does not exist at this tree size"))?;
        let offset = (first % TILE_WIDTH) as usize;
        let hashes = self.tile_hashes(tile)?;
        let mut builder = RootBuilder::new();
        for hash in &hashes[offset..offset + count as usize] {
            builder.push(*hash);
        }
        Ok(builder.root())
    }
}

/// Lists the tiles that `compute` will read from a tree of `tree_size` leaves,
/// by running it once against placeholder hashes. The result's order is stable.
pub fn required_tiles<T>(
    tree_size: u64,
    compute: impl FnOnce(&mut dyn SubtreeHashSource) -> Result<T>,
) -> Result<Vec<TileId>> {
    let mut seen = Vec::new();
    let mut source = TileHashSource::new(tree_size, |tile: &TileId| {
        if !seen.contains(tile) {
            seen.push(*tile);
        }
        Ok(vec![0u8; usize::from(tile.width) * HASH_SIZE])
    });
    compute(&mut source)?;
    drop(source);
    seen.sort();
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{LeafHashes, leaf_hash, prove_consistency, prove_inclusion, tree_root};

    #[test]
    fn paths_follow_the_spec() {
        let tile = |level, index, width| TileId {
            level,
            index,
            width,
        };
        assert_eq!(tile(0, 1234067, 256).path(), "tile/0/x001/x234/067");
        assert_eq!(tile(1, 0, 17).path(), "tile/1/000.p/17");
        assert_eq!(tile(0, 1000, 256).entries_path(), "tile/entries/x001/000");
    }

    #[test]
    fn widths_follow_the_spec_example_of_size_70000() {
        assert_eq!(TileId::for_tree_size(0, 272, 70_000).unwrap().width, 256);
        assert_eq!(TileId::for_tree_size(0, 273, 70_000).unwrap().width, 112);
        assert_eq!(TileId::for_tree_size(1, 0, 70_000).unwrap().width, 256);
        assert_eq!(TileId::for_tree_size(1, 1, 70_000).unwrap().width, 17);
        assert_eq!(TileId::for_tree_size(2, 0, 70_000).unwrap().width, 1);
        assert_eq!(TileId::for_tree_size(0, 274, 70_000), None);
        assert_eq!(TileId::for_tree_size(3, 0, 70_000), None);
    }

    /// Builds every tile of a tree from its leaves, the way a log would.
    fn tiles_of(leaves: &[Hash]) -> HashMap<(u8, u64), Vec<u8>> {
        let mut tiles = HashMap::new();
        let mut level_hashes = leaves.to_vec();
        let mut level = 0u8;
        while !level_hashes.is_empty() {
            for (index, chunk) in level_hashes.chunks(TILE_WIDTH as usize).enumerate() {
                tiles.insert((level, index as u64), chunk.concat_bytes());
            }
            level_hashes = level_hashes
                .chunks_exact(TILE_WIDTH as usize)
                .map(|chunk| tree_root(&mut LeafHashes(chunk), TILE_WIDTH).unwrap())
                .collect();
            level += 1;
        }
        tiles
    }

    trait ConcatBytes {
        fn concat_bytes(&self) -> Vec<u8>;
    }
    impl ConcatBytes for [Hash] {
        fn concat_bytes(&self) -> Vec<u8> {
            self.iter().flat_map(|h| h.0).collect()
        }
    }

    #[test]
    fn proofs_from_tiles_equal_proofs_from_leaves() {
        let leaves: Vec<Hash> = (0..70_000u32)
            .map(|i| leaf_hash(&i.to_be_bytes()))
            .collect();
        let tiles = tiles_of(&leaves);
        for (old, new) in [
            (1, 70_000),
            (256, 65_536),
            (65_537, 70_000),
            (300, 301),
            (69_999, 70_000),
        ] {
            let mut from_tiles = TileHashSource::new(new, |t: &TileId| {
                let bytes = &tiles[&(t.level, t.index)];
                Ok(bytes[..usize::from(t.width) * HASH_SIZE].to_vec())
            });
            let mut from_leaves = LeafHashes(&leaves);
            assert_eq!(
                tree_root(&mut from_tiles, new).unwrap(),
                tree_root(&mut from_leaves, new).unwrap()
            );
            assert_eq!(
                prove_consistency(&mut from_tiles, old, new).unwrap(),
                prove_consistency(&mut from_leaves, old, new).unwrap()
            );
            assert_eq!(
                prove_inclusion(&mut from_tiles, old - 1, new).unwrap(),
                prove_inclusion(&mut from_leaves, old - 1, new).unwrap()
            );
        }
    }

    #[test]
    fn required_tiles_lists_only_what_a_proof_reads() {
        let tiles =
            required_tiles(70_000, |source| prove_consistency(source, 65_537, 70_000)).unwrap();
        assert!(tiles.len() <= 6, "{tiles:?}");
        assert!(
            tiles
                .iter()
                .all(|t| TileId::for_tree_size(t.level, t.index, 70_000) == Some(*t))
        );
    }

    #[test]
    fn short_tile_is_refused() {
        let mut source = TileHashSource::new(10, |_: &TileId| Ok(vec![0u8; 9 * HASH_SIZE]));
        assert_eq!(
            source.subtree_hash(1, 4).unwrap_err().kind(),
            "proof_unavailable"
        );
    }

    #[test]
    fn entry_bundles_parse_strictly() {
        let bundle = [0, 1, b'a', 0, 2, b'b', b'c'];
        assert_eq!(
            parse_entry_bundle(&bundle, 2).unwrap(),
            vec![&b"a"[..], &b"bc"[..]]
        );
        assert!(parse_entry_bundle(&bundle, 1).is_err());
        assert!(parse_entry_bundle(&bundle, 3).is_err());
        assert!(parse_entry_bundle(&bundle[..6], 2).is_err());
        assert!(parse_entry_bundle(&bundle[..4], 2).is_err());
    }
}
