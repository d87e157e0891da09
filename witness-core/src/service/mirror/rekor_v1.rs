//! Rekor v1 as a source of mirror bundles. Rekor v1 serves no tiles: one shard
//! (Trillian tree) is read through its REST API.
//!
//! - The checkpoint is the shard's signed tree head from `GET /api/v1/log`
//!   (the active shard, or the inactive one whose origin was asked for).
//! - Leaf `i` of the shard is Rekor's entry at *virtual* index `offset + i`,
//!   `offset` being the sum of the sizes of the shards listed before it
//!   ([`crate::rekor::ShardTable`]); its leaf data is the entry's
//!   base64-decoded `body` (the canonicalized entry), fetched with
//!   `GET /api/v1/log/entries?logIndex=N`. Each answer must be the entry asked
//!   for: its `logIndex` the virtual index, its inclusion proof's `logIndex`
//!   the shard-local one, and its UUID ending with the body's leaf hash.
//! - An incremental bundle's FRONTIER is read off the inclusion proof of leaf
//!   `start - 1` (its left siblings, whatever tree size the proof is for, plus
//!   the leaf), once that proof verifies against the signed checkpoint it
//!   comes with; the consistency proof is `GET /api/v1/log/proof`.
//!
//! Nothing here is trusted by the packer: the entries must hash to the
//! checkpoint's root before anything is signed.

use async_trait::async_trait;
use futures::{StreamExt as _, TryStreamExt as _};

use super::pack::{PackOptions, PackSource};
use crate::merkle::{Hash, RootBuilder};
use crate::mirror::{
    BundleSpan, LogKind, MAX_BLOCK_SIZE, frontier_from_inclusion_proof, push_entry,
};
use crate::note::VerifierKey;
use crate::rekor::{LogEntry, parse_consistency_proof_response, parse_log_entry, parse_log_info};
use crate::service::feeder::LogUrl;
use crate::service::feeder::http::{HttpFetcher, Resource};
use crate::{Error, Result};

/// Entry bundles fetched at once: each is up to 256 requests.
const BUNDLES_IN_FLIGHT: usize = 2;
/// Entry requests in flight per bundle (so at most 32 in all): enough to hide
/// the round trip without queueing on Rekor's database.
const ENTRIES_IN_FLIGHT: usize = 16;
/// The most shards accepted in one log info (as the Rekor v1 feeder).
const MAX_SHARDS: usize = 64;

/// One Rekor v1 shard, located when the pack starts.
pub(super) struct RekorV1Source {
    http: HttpFetcher,
    url: LogUrl,
    log_key: VerifierKey,
    origin: String,
    tree_id: i64,
    /// Virtual index of the shard's first entry.
    offset: u64,
    /// The shard's signed tree head when the pack started.
    note: Vec<u8>,
}

impl RekorV1Source {
    /// Reads `GET /api/v1/log` and picks the shard: the one whose checkpoint
    /// origin is `options.origin`, else the active one. Its signed tree head
    /// must verify with the log key and agree with the listing.
    pub(super) async fn connect(http: HttpFetcher, options: &PackOptions) -> Result<RekorV1Source> {
        let url = options.log.clone();
        let bytes = http
            .get(url.as_str(), url.join("api/v1/log")?, Resource::LogInfo)
            .await?;
        let info = parse_log_info(&bytes)?;
        if info.inactive.len() + 1 > MAX_SHARDS {
            return Err(Error::TooLarge {
                what: "Rekor log info shard list",
                size: info.inactive.len() + 1,
                max: MAX_SHARDS,
            });
        }
        let table = info.shard_table()?;
        let log_keys = std::slice::from_ref(&options.log_key);
        let mut listed = Vec::new();
        for (shard, position) in info.shards().zip(table.shards()) {
            let verified = shard.verify(log_keys)?;
            let origin = verified.checkpoint().origin().to_owned();
            let wanted = match &options.origin {
                Some(wanted) => *wanted == origin,
                None => position.size.is_none(),
            };
            if wanted {
                return Ok(RekorV1Source {
                    http,
                    url,
                    log_key: options.log_key.clone(),
                    origin,
                    tree_id: shard.tree_id,
                    offset: position.offset,
                    note: shard.signed_tree_head.as_bytes().to_vec(),
                });
            }
            listed.push(origin);
        }
        Err(Error::Config {
            detail: format!(
                "{} lists no shard of origin {:?}; its shards: {}",
                url.as_str(),
                options.origin.as_deref().unwrap_or_default(),
                listed.join(", ")
            ),
        })
    }

    /// The entry at shard-local index `local`, checked to be that entry.
    async fn entry(&self, local: u64) -> Result<LogEntry> {
        let wrong = |reason| Error::InclusionProofInvalid { reason };
        let index = self
            .offset
            .checked_add(local)
            .ok_or(wrong("entry index overflows"))?;
        let mut url = self.url.join("api/v1/log/entries")?;
        url.query_pairs_mut()
            .append_pair("logIndex", &index.to_string());
        let bytes = self.http.get(&self.origin, url, Resource::Entry).await?;
        let entry = parse_log_entry(&bytes)?;
        if entry.log_index != index {
            return Err(wrong(
                "Rekor answered with another entry than the one asked for",
            ));
        }
        match &entry.inclusion_proof {
            Some(proof) if proof.log_index == local => {}
            Some(_) => return Err(wrong("the entry's proof is for another leaf of the shard")),
            None => return Err(wrong("the entry has no inclusion proof")),
        }
        if let Some(uuid) = &entry.uuid
            && !uuid
                .to_ascii_lowercase()
                .ends_with(&entry.leaf_hash().to_hex())
        {
            return Err(wrong(
                "the entry's UUID does not end with its body's leaf hash",
            ));
        }
        Ok(entry)
    }
}

#[async_trait]
impl PackSource for RekorV1Source {
    fn kind(&self) -> LogKind {
        LogKind::RekorV1
    }

    fn origin(&self) -> Option<&str> {
        Some(&self.origin)
    }

    fn bundles_in_flight(&self) -> usize {
        BUNDLES_IN_FLIGHT
    }

    async fn checkpoint(&self) -> Result<Vec<u8>> {
        Ok(self.note.clone())
    }

    async fn incremental(&self, start: u64, size: u64) -> Result<(Vec<Hash>, Vec<Hash>)> {
        let last = start - 1;
        let entry = self.entry(last).await?;
        let verified = entry.verify_inclusion(std::slice::from_ref(&self.log_key))?;
        if verified.checkpoint().origin() != self.origin {
            return Err(Error::OriginMismatch {
                expected: self.origin.clone(),
                found: verified.checkpoint().origin().to_owned(),
            });
        }
        let proof = entry
            .inclusion_proof
            .as_ref()
            .ok_or(Error::InclusionProofInvalid {
                reason: "the entry has no inclusion proof",
            })?;
        let before = frontier_from_inclusion_proof(last, proof.tree_size, &proof.hashes)?;
        let mut builder = RootBuilder::from_frontier(last, &before)?;
        builder.push(entry.leaf_hash());
        let frontier = builder.frontier().to_vec();
        if start == size {
            return Ok((frontier, Vec::new()));
        }
        let mut url = self.url.join("api/v1/log/proof")?;
        url.query_pairs_mut()
            .append_pair("firstSize", &start.to_string())
            .append_pair("lastSize", &size.to_string())
            .append_pair("treeID", &self.tree_id.to_string());
        let bytes = self
            .http
            .get(&self.origin, url, Resource::ConsistencyProof)
            .await?;
        // The answer's rootHash is Rekor's newest root, not the root at
        // lastSize: the caller checks the proof against the checkpoint.
        Ok((frontier, parse_consistency_proof_response(&bytes)?.hashes))
    }

    async fn bundle(&self, span: BundleSpan) -> Result<Vec<u8>> {
        let mut entries = futures::stream::iter(span.first..span.end)
            .map(|local| self.entry(local))
            .buffered(ENTRIES_IN_FLIGHT);
        let mut block = Vec::new();
        while let Some(entry) = entries.try_next().await? {
            push_entry(&mut block, &entry.body)?;
            if block.len() + 64 > MAX_BLOCK_SIZE {
                return Err(Error::TooLarge {
                    what: "entry bundle",
                    size: block.len(),
                    max: MAX_BLOCK_SIZE - 64,
                });
            }
        }
        // Each body is a leaf: its hash is checked against the entry's UUID
        // above, and all of them against the checkpoint's root at the end.
        Ok(block)
    }
}
