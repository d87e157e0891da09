//! Consistency proofs fetched on demand, for `VerifyInclusion`'s split-view
//! check when a client's checkpoint and the witness's differ in size: from the
//! Rekor v1 proof API, or computed from a tlog-tiles log's tiles.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{StreamExt as _, TryStreamExt as _};

use super::http::{HttpFetcher, Resource};
use super::tiles::fetch_tile;
use super::{DEFAULT_REQUEST_TIMEOUT, LogUrl, default_user_agent};
use crate::merkle::{Hash, prove_consistency};
use crate::rekor::parse_consistency_proof_response;
use crate::service::metrics::WitnessMetrics;
use crate::service::witness::{ConsistencyProofSource, Feed, LogKeys};
use crate::tiles::{TileHashSource, required_tiles};
use crate::{Error, Result};

/// Tile requests in flight at once for one proof.
const MAX_CONCURRENT_FETCHES: usize = 8;

/// Fetches consistency proofs from the pulled logs themselves. The proofs are
/// verified by the caller against roots it trusts; nothing here is trusted.
pub struct LogProofSource {
    http: HttpFetcher,
}

impl LogProofSource {
    pub fn new(metrics: Arc<WitnessMetrics>) -> Result<LogProofSource> {
        Ok(LogProofSource {
            http: HttpFetcher::new(DEFAULT_REQUEST_TIMEOUT, &default_user_agent(), metrics)?,
        })
    }

    async fn rekor_v1(&self, log: &LogKeys, url: &str, old: u64, new: u64) -> Result<Vec<Hash>> {
        let tree_id =
            log.origin
                .rsplit_once(" - ")
                .map(|(_, id)| id)
                .ok_or(Error::ProofUnavailable {
                    reason: "a Rekor v1 origin ends in \" - <tree ID>\"",
                })?;
        let mut url = LogUrl::parse(url)?.join("api/v1/log/proof")?;
        url.query_pairs_mut()
            .append_pair("firstSize", &old.to_string())
            .append_pair("lastSize", &new.to_string())
            .append_pair("treeID", tree_id);
        let bytes = self
            .http
            .get(&log.origin, url, Resource::ConsistencyProof)
            .await?;
        Ok(parse_consistency_proof_response(&bytes)?.hashes)
    }

    async fn tiles(&self, log: &LogKeys, url: &str, old: u64, new: u64) -> Result<Vec<Hash>> {
        let base = LogUrl::parse(url)?;
        let needed = required_tiles(new, |source| prove_consistency(source, old, new))?;
        let fetched: HashMap<(u8, u64), Vec<u8>> = futures::stream::iter(needed)
            .map(|tile| fetch_tile(&self.http, &log.origin, &base, tile))
            .buffer_unordered(MAX_CONCURRENT_FETCHES)
            .map_ok(|(tile, bytes)| ((tile.level, tile.index), bytes))
            .try_collect()
            .await?;
        let mut source = TileHashSource::new(new, |tile: &crate::tiles::TileId| {
            fetched
                .get(&(tile.level, tile.index))
                .and_then(|bytes| bytes.get(..usize::from(tile.width) * crate::merkle::HASH_SIZE))
                .map(<[u8]>::to_vec)
                .ok_or(Error::ProofUnavailable {
                    reason: "tile was not fetched",
                })
        });
        prove_consistency(&mut source, old, new)
    }
}

#[async_trait]
impl ConsistencyProofSource for LogProofSource {
    async fn consistency_proof(
        &self,
        log: &LogKeys,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash>> {
        match &log.feed {
            Feed::RekorV1 { url } => self.rekor_v1(log, url, old_size, new_size).await,
            Feed::Tiles { url } => self.tiles(log, url, old_size, new_size).await,
            Feed::Push => Err(Error::ProofUnavailable {
                reason: "the witness cannot fetch proofs from a log that pushes",
            }),
        }
    }
}
