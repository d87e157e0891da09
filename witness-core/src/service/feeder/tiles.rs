//! The tlog-tiles feeder (Rekor v2, rekor-tiles): `<prefix>/checkpoint`, and
//! consistency and inclusion proofs computed from `<prefix>/tile/<L>/<N>[.p/<W>]`
//! with the core's [`required_tiles`] and [`TileHashSource`].
//!
//! Tiles are fetched only after the checkpoint that implies them, all at once
//! (a few in parallel), and the feeder checks that they hash to the
//! checkpoint's root before anything is submitted. Full tiles never change, so
//! they are cached between polls; a partial tile is cached only until the tree
//! outgrows it. Tiles enter the cache only once the witness accepted the proof
//! they made, and any verification failure empties the cache, so one bad tile
//! can never fail every later poll.

use std::collections::{BTreeMap, HashMap};

use futures::{StreamExt as _, TryStreamExt as _};

use super::LogUrl;
use super::http::{HttpFetcher, Resource};
use super::{
    FeederContext, LogResult, Plan, PollOutcome, is_log_fault, plan, sample_indexes,
    stored_size_on_mismatch, submitted,
};
use crate::checkpoint::{Checkpoint, parse_checkpoint_text};
use crate::merkle::{
    HASH_SIZE, Hash, SubtreeHashSource, leaf_hash, prove_consistency, prove_inclusion, tree_root,
    verify_inclusion,
};
use crate::note::parse_note;
use crate::tiles::{TILE_WIDTH, TileHashSource, TileId, parse_entry_bundle, required_tiles};
use crate::{Error, Result};

/// Tiles kept between polls. A poll reads about two tiles per tile level (at
/// most eight levels below 2^63 leaves) for the root and the consistency proof,
/// and as many per sampled entry; 256 tiles (2 MiB) hold several polls' worth.
const MAX_CACHED_TILES: usize = 256;

/// Tile requests in flight at once per log.
const MAX_CONCURRENT_FETCHES: usize = 8;

/// Tiles fetched during one poll, by level and index, not yet trusted.
type FreshTiles = HashMap<(u8, u64), Vec<u8>>;

pub(super) struct TilesFeeder {
    context: FeederContext,
    cache: TileCache,
}

/// What one poll computes from tiles.
struct TreeView {
    root: Hash,
    consistency: Vec<Hash>,
    inclusion: Vec<Vec<Hash>>,
}

impl TreeView {
    fn compute(
        source: &mut dyn SubtreeHashSource,
        old_size: u64,
        size: u64,
        samples: &[u64],
    ) -> Result<TreeView> {
        let root = tree_root(source, size)?;
        let consistency = if old_size > 0 && old_size < size {
            prove_consistency(source, old_size, size)?
        } else {
            Vec::new()
        };
        let inclusion = samples
            .iter()
            .map(|&index| prove_inclusion(source, index, size))
            .collect::<Result<_>>()?;
        Ok(TreeView {
            root,
            consistency,
            inclusion,
        })
    }
}

impl TilesFeeder {
    pub(super) fn new(context: FeederContext) -> TilesFeeder {
        TilesFeeder {
            context,
            cache: TileCache::default(),
        }
    }

    /// One poll: the checkpoint, then (if it advances) the tiles for its root,
    /// the consistency proof and the sampled entries' inclusion proofs.
    pub(super) async fn poll_once(&mut self) -> Result<PollOutcome> {
        let (note, checkpoint) = self
            .checkpoint()
            .await
            .inspect_err(|e| self.context.report(&self.context.name, e))?;
        let result = self.advance(&note, &checkpoint).await;
        if matches!(result, Ok(LogResult::Cosigned { .. })) {
            self.context.set_backlog(checkpoint.origin(), 0);
        }
        Ok(PollOutcome {
            logs: vec![
                self.context
                    .outcome(checkpoint.origin(), checkpoint.size(), result),
            ],
        })
    }

    /// Checks that entry `index` is included in the tree the witness cosigned.
    pub(super) async fn check_inclusion(&mut self, index: u64) -> Result<()> {
        let origin = self.context.name.clone();
        let cosigned =
            self.context
                .sink
                .cosigned_tree(&origin)
                .await?
                .ok_or(Error::NothingCosigned {
                    origin: origin.clone(),
                })?;
        if index >= cosigned.size {
            return Err(Error::InvalidRequest {
                reason: "entry is not in the cosigned tree yet",
            });
        }
        let mut fresh = FreshTiles::new();
        let result = async {
            let proof = self
                .compute(cosigned.size, &mut fresh, |source| {
                    prove_inclusion(source, index, cosigned.size)
                })
                .await?;
            self.check_entries(cosigned.size, &cosigned.root, &[index], &[proof])
                .await
        }
        .await;
        result.inspect_err(|e| self.context.report(&origin, e))
    }

    /// The log's checkpoint, read but not verified (the witness verifies it).
    async fn checkpoint(&self) -> Result<(Vec<u8>, Checkpoint)> {
        let name = &self.context.name;
        let url = self.context.url.join("checkpoint")?;
        let bytes = self
            .context
            .http
            .get(name, url, Resource::Checkpoint)
            .await?;
        let note = parse_note(&bytes)?;
        let checkpoint = parse_checkpoint_text(note.text())?;
        if checkpoint.origin() != name {
            return Err(Error::OriginMismatch {
                expected: name.clone(),
                found: checkpoint.origin().to_owned(),
            });
        }
        Ok((bytes, checkpoint))
    }

    async fn advance(&mut self, note: &[u8], checkpoint: &Checkpoint) -> Result<LogResult> {
        let origin = checkpoint.origin();
        let size = checkpoint.size();
        let cosigned = self.context.sink.cosigned_tree(origin).await?;
        let old_size = match plan(cosigned, size, checkpoint.root_hash()) {
            Ok(Plan::Advance { old_size }) => old_size,
            Ok(Plan::UpToDate) => {
                self.context.set_backlog(origin, 0);
                return Ok(LogResult::UpToDate);
            }
            Err(error) => {
                self.context.set_backlog(origin, 0);
                return Err(error);
            }
        };
        self.context.set_backlog(origin, size - old_size);
        // A first checkpoint has no new entries relative to anything the witness
        // holds; the duty starts with the first advance.
        let samples = if old_size > 0 {
            sample_indexes(old_size, size, self.context.inclusion_samples)
        } else {
            Vec::new()
        };
        let mut fresh = FreshTiles::new();
        let view = self
            .compute(size, &mut fresh, |source| {
                TreeView::compute(source, old_size, size, &samples)
            })
            .await?;
        if view.root != *checkpoint.root_hash() {
            self.cache.clear();
            return Err(Error::CheckpointProofMismatch {
                reason: "the log's tiles do not hash to the checkpoint's root",
            });
        }
        self.check_entries(size, &view.root, &samples, &view.inclusion)
            .await?;
        let sink = self.context.sink.clone();
        let mut from = old_size;
        let mut result = sink
            .add_checkpoint(from, view.consistency, note.to_vec())
            .await;
        if let Some(stored_size) = stored_size_on_mismatch(&result) {
            if stored_size > size {
                return Err(Error::OldSizeAboveSize {
                    old_size: stored_size,
                    size,
                });
            }
            from = stored_size;
            let proof = if from == 0 || from == size {
                Vec::new()
            } else {
                self.compute(size, &mut fresh, |source| {
                    prove_consistency(source, from, size)
                })
                .await?
            };
            result = sink.add_checkpoint(from, proof, note.to_vec()).await;
        }
        match &result {
            Ok(_) => self.cache.commit(fresh, size),
            // A proof from a bad tile fails at the witness; the tile may be
            // cached from an earlier poll that did not read that part of it.
            Err(error) if is_log_fault(error) => self.cache.clear(),
            Err(_) => {}
        }
        Ok(submitted(from, result))
    }

    /// Runs `compute` over the tiles of the tree of `size` leaves: first to
    /// list the tiles it reads, then, once the missing ones are fetched (into
    /// `fresh`), for real.
    async fn compute<T>(
        &mut self,
        size: u64,
        fresh: &mut FreshTiles,
        compute: impl Fn(&mut dyn SubtreeHashSource) -> Result<T>,
    ) -> Result<T> {
        let needed = required_tiles(size, |source| compute(source))?;
        let missing: Vec<TileId> = needed
            .into_iter()
            .filter(|tile| !covers(fresh.get(&(tile.level, tile.index)), tile))
            .filter(|tile| !self.cache.touch(tile))
            .collect();
        let fetched: Vec<(TileId, Vec<u8>)> = futures::stream::iter(missing)
            .map(|tile| self.fetch_tile(tile))
            .buffer_unordered(MAX_CONCURRENT_FETCHES)
            .try_collect()
            .await?;
        for (tile, bytes) in fetched {
            fresh.insert((tile.level, tile.index), bytes);
        }
        let cache = &self.cache;
        let mut source = TileHashSource::new(size, |tile: &TileId| {
            let key = (tile.level, tile.index);
            fresh
                .get(&key)
                .filter(|bytes| covers(Some(bytes), tile))
                .map(Vec::as_slice)
                .or_else(|| cache.bytes(tile))
                .map(<[u8]>::to_vec)
                .ok_or(Error::ProofUnavailable {
                    reason: "tile was not fetched",
                })
        });
        compute(&mut source)
    }

    async fn fetch_tile(&self, tile: TileId) -> Result<(TileId, Vec<u8>)> {
        fetch_tile(
            &self.context.http,
            &self.context.name,
            &self.context.url,
            tile,
        )
        .await
    }

    /// Fetches the entry bundles holding `samples` and checks each sampled entry
    /// against its inclusion proof (`proofs`, in the same order) in the tree of
    /// `size` leaves with `root`.
    async fn check_entries(
        &self,
        size: u64,
        root: &Hash,
        samples: &[u64],
        proofs: &[Vec<Hash>],
    ) -> Result<()> {
        let mut by_bundle: BTreeMap<u64, Vec<(u64, &[Hash])>> = BTreeMap::new();
        for (&index, proof) in samples.iter().zip(proofs) {
            by_bundle
                .entry(index / TILE_WIDTH)
                .or_default()
                .push((index, proof));
        }
        for (bundle, entries) in by_bundle {
            let (count, bytes) = self.fetch_bundle(bundle, size).await?;
            let parsed = parse_entry_bundle(&bytes, usize::from(count))?;
            for (index, proof) in entries {
                let entry = parsed.get((index % TILE_WIDTH) as usize).ok_or(
                    Error::InclusionProofInvalid {
                        reason: "entry bundle is shorter than the tree",
                    },
                )?;
                verify_inclusion(&leaf_hash(entry), index, size, proof, root)?;
            }
        }
        Ok(())
    }

    /// The entry bundle at `index` in the tree of `size` leaves, with the
    /// number of entries it holds (the full bundle stands in for a deleted
    /// partial one).
    async fn fetch_bundle(&self, index: u64, size: u64) -> Result<(u16, Vec<u8>)> {
        let name = &self.context.name;
        let http = &self.context.http;
        let bundle = TileId::for_tree_size(0, index, size).ok_or(Error::ProofUnavailable {
            reason: "entry bundle is beyond the tree",
        })?;
        let url = self.context.url.join(&bundle.entries_path())?;
        let resource = Resource::EntryBundle {
            entries: bundle.width,
        };
        if u64::from(bundle.width) == TILE_WIDTH {
            return Ok((bundle.width, http.get(name, url, resource).await?));
        }
        if let Some(bytes) = http.get_if_found(name, url, resource).await? {
            return Ok((bundle.width, bytes));
        }
        let full = TileId {
            width: TILE_WIDTH as u16,
            ..bundle
        };
        let url = self.context.url.join(&full.entries_path())?;
        let resource = Resource::EntryBundle {
            entries: full.width,
        };
        Ok((full.width, http.get(name, url, resource).await?))
    }
}

/// Whether `bytes`, a tile at `tile`'s position, holds at least its hashes.
fn covers(bytes: Option<&Vec<u8>>, tile: &TileId) -> bool {
    bytes.is_some_and(|bytes| bytes.len() >= usize::from(tile.width) * HASH_SIZE)
}

/// Tiles kept between polls, least recently used evicted first.
#[derive(Default)]
struct TileCache {
    tiles: HashMap<(u8, u64), CachedTile>,
    clock: u64,
}

struct CachedTile {
    bytes: Vec<u8>,
    last_used: u64,
}

impl TileCache {
    /// Whether a tile covering `tile` is cached; marks it used.
    fn touch(&mut self, tile: &TileId) -> bool {
        self.clock += 1;
        match self.tiles.get_mut(&(tile.level, tile.index)) {
            Some(cached) if covers(Some(&cached.bytes), tile) => {
                cached.last_used = self.clock;
                true
            }
            _ => false,
        }
    }

    fn bytes(&self, tile: &TileId) -> Option<&[u8]> {
        self.tiles
            .get(&(tile.level, tile.index))
            .filter(|cached| covers(Some(&cached.bytes), tile))
            .map(|cached| cached.bytes.as_slice())
    }

    /// Keeps tiles the witness accepted a proof from, for a tree now of
    /// `tree_size` leaves.
    fn commit(&mut self, fresh: FreshTiles, tree_size: u64) {
        self.clock += 1;
        for (key, bytes) in fresh {
            let wider = self
                .tiles
                .get(&key)
                .is_none_or(|cached| cached.bytes.len() < bytes.len());
            if wider {
                self.tiles.insert(
                    key,
                    CachedTile {
                        bytes,
                        last_used: self.clock,
                    },
                );
            }
        }
        // Trees only grow: a partial tile narrower than the tree now implies is
        // never read again.
        self.tiles.retain(|&(level, index), cached| {
            let width = cached.bytes.len() / HASH_SIZE;
            width as u64 == TILE_WIDTH
                || TileId::for_tree_size(level, index, tree_size)
                    .is_some_and(|now| usize::from(now.width) <= width)
        });
        if self.tiles.len() > MAX_CACHED_TILES {
            let mut by_age: Vec<((u8, u64), u64)> = self
                .tiles
                .iter()
                .map(|(key, cached)| (*key, cached.last_used))
                .collect();
            by_age.sort_by_key(|(_, last_used)| *last_used);
            let excess = self.tiles.len() - MAX_CACHED_TILES;
            for (key, _) in by_age.into_iter().take(excess) {
                self.tiles.remove(&key);
            }
        }
    }

    fn clear(&mut self) {
        self.tiles.clear();
    }
}

/// Fetches one tile; the full tile stands in for a partial one the log
/// deleted, as tlog-tiles allows. Returns the tile actually fetched.
pub(crate) async fn fetch_tile(
    http: &HttpFetcher,
    name: &str,
    base: &LogUrl,
    tile: TileId,
) -> Result<(TileId, Vec<u8>)> {
    let full = TileId {
        width: TILE_WIDTH as u16,
        ..tile
    };
    let (fetched, bytes) = if tile.width < full.width {
        let url = base.join(&tile.path())?;
        match http.get_if_found(name, url, Resource::Tile).await? {
            Some(bytes) => (tile, bytes),
            None => {
                let url = base.join(&full.path())?;
                (full, http.get(name, url, Resource::Tile).await?)
            }
        }
    } else {
        let url = base.join(&tile.path())?;
        (tile, http.get(name, url, Resource::Tile).await?)
    };
    if bytes.len() != usize::from(fetched.width) * HASH_SIZE {
        return Err(Error::MalformedProof {
            reason: "tile is not as wide as its path says",
        });
    }
    Ok((fetched, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(level: u8, index: u64, width: u16) -> TileId {
        TileId {
            level,
            index,
            width,
        }
    }

    fn bytes(width: usize) -> Vec<u8> {
        vec![7; width * HASH_SIZE]
    }

    #[test]
    fn partial_tiles_are_dropped_once_the_tree_outgrows_them() {
        let mut cache = TileCache::default();
        let fresh = FreshTiles::from([((0, 0), bytes(256)), ((0, 1), bytes(10))]);
        cache.commit(fresh, 266);
        assert!(cache.touch(&tile(0, 1, 10)));
        assert!(cache.touch(&tile(0, 1, 5)));
        assert!(!cache.touch(&tile(0, 1, 11)));
        cache.commit(FreshTiles::new(), 267);
        assert!(!cache.touch(&tile(0, 1, 10)));
        assert!(cache.touch(&tile(0, 0, 256)));
    }

    #[test]
    fn a_narrower_tile_never_replaces_a_wider_one() {
        let mut cache = TileCache::default();
        cache.commit(FreshTiles::from([((1, 0), bytes(256))]), 70_000);
        cache.commit(FreshTiles::from([((1, 0), bytes(17))]), 70_000);
        assert_eq!(cache.bytes(&tile(1, 0, 256)).map(<[u8]>::len), Some(8192));
    }

    #[test]
    fn cache_is_bounded_and_keeps_recently_used_tiles() {
        let mut cache = TileCache::default();
        let size = 1 << 20;
        cache.commit(
            (0..MAX_CACHED_TILES as u64)
                .map(|index| ((0, index), bytes(256)))
                .collect(),
            size,
        );
        assert!(cache.touch(&tile(0, 0, 256)));
        cache.commit(
            (1000..1010).map(|index| ((0, index), bytes(256))).collect(),
            size,
        );
        assert_eq!(cache.tiles.len(), MAX_CACHED_TILES);
        assert!(cache.bytes(&tile(0, 0, 256)).is_some());
        assert!((1000..1010).all(|index| cache.bytes(&tile(0, index, 256)).is_some()));
        let older = (1..MAX_CACHED_TILES as u64)
            .filter(|&index| cache.bytes(&tile(0, index, 256)).is_some())
            .count();
        assert_eq!(older, MAX_CACHED_TILES - 1 - 10);
    }
}
