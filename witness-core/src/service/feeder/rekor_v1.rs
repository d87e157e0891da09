//! The Rekor v1 feeder: every shard listed by `GET /api/v1/log` (the active
//! tree and each of `inactiveShards`) is witnessed as its own origin, with
//! proofs from `GET /api/v1/log/proof` and sampled entries from
//! `GET /api/v1/log/entries`.
//!
//! Rekor v1 re-signs every shard's tree head on each request, so the bytes of a
//! frozen shard's checkpoint change while its tree does not; a frozen shard is
//! submitted until the witness holds its final tree, and then left alone.

use std::collections::HashMap;

use super::http::Resource;
use super::{
    FeederContext, LogOutcome, LogResult, Plan, PollOutcome, plan, sample_indexes,
    stored_size_on_mismatch, submitted,
};
use crate::checkpoint::{Checkpoint, parse_checkpoint_text};
use crate::merkle::{Hash, verify_consistency, verify_inclusion};
use crate::note::parse_note;
use crate::rekor::{
    LogInfo, ShardInfo, parse_consistency_proof_response, parse_log_entry, parse_log_info,
};
use crate::service::store::StoredTree;
use crate::{Error, Result};

/// The most shards accepted in one log info. Rekor's public instances have
/// created four shards each in five years; 64 leaves ample room while bounding
/// the witness lookups a hostile server can cause per poll.
const MAX_SHARDS: usize = 64;

pub(super) struct RekorV1Feeder {
    context: FeederContext,
    /// Frozen shards seen cosigned at their final tree, by tree ID.
    frozen: HashMap<i64, StoredTree>,
}

/// A shard's checkpoint that advances past what the witness cosigned: one
/// item of the poll's backfill queue.
struct PendingShard {
    origin: String,
    tree_id: i64,
    /// Virtual index of the shard's first entry.
    offset: u64,
    frozen: bool,
    old_size: u64,
    tree: StoredTree,
    note: Vec<u8>,
}

impl RekorV1Feeder {
    pub(super) fn new(context: FeederContext) -> RekorV1Feeder {
        RekorV1Feeder {
            context,
            frozen: HashMap::new(),
        }
    }

    /// One poll: reads every shard's checkpoint, queues those the witness is
    /// behind on (publishing each one's backlog), then submits them oldest
    /// shard first. One shard's failure does not hold up the others.
    pub(super) async fn poll_once(&mut self) -> Result<PollOutcome> {
        let info = self.log_info().await?;
        let table = info.shard_table().inspect_err(|e| self.report_name(e))?;
        let mut logs = Vec::new();
        let mut queue = Vec::new();
        for (shard, position) in info.shards().zip(table.shards()) {
            let frozen = position.size.is_some();
            match self.prepare(shard, position.offset, frozen).await {
                Ok(pending) => queue.push(pending),
                Err(outcome) => logs.push(outcome),
            }
        }
        for pending in &queue {
            self.context
                .set_backlog(&pending.origin, pending.tree.size - pending.old_size);
        }
        for pending in queue {
            let result = self.advance(&pending).await;
            if let Ok(LogResult::Cosigned { .. }) = &result {
                self.context.set_backlog(&pending.origin, 0);
                if pending.frozen {
                    self.frozen.insert(pending.tree_id, pending.tree);
                }
            }
            logs.push(
                self.context
                    .outcome(&pending.origin, pending.tree.size, result),
            );
        }
        Ok(PollOutcome { logs })
    }

    /// Checks that entry `index` (Rekor's virtual index over all shards) is
    /// included in the tree the witness cosigned for its shard.
    pub(super) async fn check_inclusion(&self, index: u64) -> Result<()> {
        let info = self.log_info().await?;
        let table = info.shard_table().inspect_err(|e| self.report_name(e))?;
        let (position, local) = table.locate(index).ok_or(Error::InvalidRequest {
            reason: "entry index is beyond the log",
        })?;
        let shard = info
            .shards()
            .find(|shard| shard.tree_id == position.tree_id)
            .ok_or(Error::InvalidRequest {
                reason: "entry index is beyond the log",
            })?;
        let checkpoint = shard_checkpoint(shard).inspect_err(|e| self.report_name(e))?;
        let origin = checkpoint.origin();
        let cosigned =
            self.context
                .sink
                .cosigned_tree(origin)
                .await?
                .ok_or(Error::NothingCosigned {
                    origin: origin.to_owned(),
                })?;
        if local >= cosigned.size {
            return Err(Error::InvalidRequest {
                reason: "entry is not in the cosigned tree yet",
            });
        }
        self.check_entry(origin, shard.tree_id, position.offset, &cosigned, local)
            .await
            .inspect_err(|e| self.context.report(origin, e))
    }

    async fn log_info(&self) -> Result<LogInfo> {
        let url = self.context.url.join("api/v1/log")?;
        let bytes = self
            .context
            .http
            .get(&self.context.name, url, Resource::LogInfo)
            .await
            .inspect_err(|e| self.report_name(e))?;
        let info = parse_log_info(&bytes).inspect_err(|e| self.report_name(e))?;
        let shards = info.inactive.len() + 1;
        if shards > MAX_SHARDS {
            let error = Error::TooLarge {
                what: "Rekor log info shard list",
                size: shards,
                max: MAX_SHARDS,
            };
            self.report_name(&error);
            return Err(error);
        }
        Ok(info)
    }

    fn report_name(&self, error: &Error) {
        self.context.report(&self.context.name, error);
    }

    /// Decides what to do with one shard: a queue item, or its final outcome.
    async fn prepare(
        &self,
        shard: &ShardInfo,
        offset: u64,
        frozen: bool,
    ) -> std::result::Result<PendingShard, LogOutcome> {
        let tree = StoredTree {
            size: shard.tree_size,
            root: shard.root_hash,
        };
        let checkpoint = match shard_checkpoint(shard) {
            Ok(checkpoint) => checkpoint,
            // No origin the witness vouched for yet: counted under the name.
            Err(error) => {
                return Err(self
                    .context
                    .outcome(&self.context.name, tree.size, Err(error)));
            }
        };
        let origin = checkpoint.origin();
        if frozen && self.frozen.get(&shard.tree_id) == Some(&tree) {
            return Err(self
                .context
                .outcome(origin, tree.size, Ok(LogResult::UpToDate)));
        }
        let planned = match self.context.sink.cosigned_tree(origin).await {
            Ok(cosigned) => plan(cosigned, tree.size, &tree.root),
            Err(error) => Err(error),
        };
        match planned {
            Ok(Plan::Advance { old_size }) => Ok(PendingShard {
                origin: origin.to_owned(),
                tree_id: shard.tree_id,
                offset,
                frozen,
                old_size,
                tree,
                note: shard.signed_tree_head.as_bytes().to_vec(),
            }),
            Ok(Plan::UpToDate) => {
                self.context.set_backlog(origin, 0);
                Err(self
                    .context
                    .outcome(origin, tree.size, Ok(LogResult::UpToDate)))
            }
            Err(error) => {
                if matches!(error, Error::OldSizeAboveSize { .. }) {
                    // Nothing newer than the cosigned tree is waiting.
                    self.context.set_backlog(origin, 0);
                }
                Err(self.context.outcome(origin, tree.size, Err(error)))
            }
        }
    }

    /// Submits one queued shard checkpoint: proof, inclusion duty, then the
    /// witness, retrying once from the witness's size if it moved meanwhile.
    async fn advance(&self, pending: &PendingShard) -> Result<LogResult> {
        let origin = &pending.origin;
        let size = pending.tree.size;
        let proof = self
            .proof(origin, pending.tree_id, pending.old_size, size)
            .await?;
        // A first checkpoint has no new entries relative to anything the witness
        // holds; the duty starts with the first advance.
        if pending.old_size > 0 {
            for local in sample_indexes(pending.old_size, size, self.context.inclusion_samples) {
                self.check_entry(
                    origin,
                    pending.tree_id,
                    pending.offset,
                    &pending.tree,
                    local,
                )
                .await?;
            }
        }
        let sink = &self.context.sink;
        let mut old_size = pending.old_size;
        let mut result = sink
            .add_checkpoint(old_size, proof, pending.note.clone())
            .await;
        if let Some(stored_size) = stored_size_on_mismatch(&result) {
            if stored_size > size {
                return Err(Error::OldSizeAboveSize {
                    old_size: stored_size,
                    size,
                });
            }
            old_size = stored_size;
            let proof = self.proof(origin, pending.tree_id, old_size, size).await?;
            result = sink
                .add_checkpoint(old_size, proof, pending.note.clone())
                .await;
        }
        Ok(submitted(old_size, result))
    }

    /// The consistency proof from `old_size` to `new_size` of one shard.
    async fn proof(
        &self,
        origin: &str,
        tree_id: i64,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash>> {
        if old_size == 0 || old_size == new_size {
            return Ok(Vec::new());
        }
        let mut url = self.context.url.join("api/v1/log/proof")?;
        url.query_pairs_mut()
            .append_pair("firstSize", &old_size.to_string())
            .append_pair("lastSize", &new_size.to_string())
            .append_pair("treeID", &tree_id.to_string());
        let bytes = self
            .context
            .http
            .get(origin, url, Resource::ConsistencyProof)
            .await?;
        // The response's rootHash is the server's newest root, not the root at
        // lastSize: the witness checks the proof against the checkpoint instead.
        Ok(parse_consistency_proof_response(&bytes)?.hashes)
    }

    /// Fetches the entry at shard-local index `local` and checks that it is in
    /// `tree`. Rekor proves inclusion in its newest tree, usually larger than
    /// `tree` by the time of the request, so a proof for another size is tied
    /// to `tree` by a consistency proof between the two.
    async fn check_entry(
        &self,
        origin: &str,
        tree_id: i64,
        offset: u64,
        tree: &StoredTree,
        local: u64,
    ) -> Result<()> {
        let invalid = |reason| Error::InclusionProofInvalid { reason };
        let index = offset
            .checked_add(local)
            .ok_or(invalid("entry index overflows"))?;
        let mut url = self.context.url.join("api/v1/log/entries")?;
        url.query_pairs_mut()
            .append_pair("logIndex", &index.to_string());
        let bytes = self.context.http.get(origin, url, Resource::Entry).await?;
        let entry = parse_log_entry(&bytes)?;
        if entry.log_index != index {
            return Err(invalid("entry is not the one requested"));
        }
        let proof = entry
            .inclusion_proof
            .as_ref()
            .ok_or(invalid("entry has no inclusion proof"))?;
        if proof.log_index != local {
            return Err(invalid("proof is for another leaf of the shard"));
        }
        let leaf = entry.leaf_hash();
        if let Some(uuid) = &entry.uuid
            && !uuid.to_ascii_lowercase().ends_with(&leaf.to_hex())
        {
            return Err(invalid("entry UUID does not end with the body's leaf hash"));
        }
        if proof.tree_size == tree.size {
            if proof.root_hash != tree.root {
                return Err(Error::CheckpointProofMismatch {
                    reason: "entry's proof has another root at the witnessed size",
                });
            }
            return verify_inclusion(&leaf, local, tree.size, &proof.hashes, &tree.root);
        }
        verify_inclusion(
            &leaf,
            local,
            proof.tree_size,
            &proof.hashes,
            &proof.root_hash,
        )?;
        if proof.tree_size > tree.size {
            let link = self
                .proof(origin, tree_id, tree.size, proof.tree_size)
                .await?;
            verify_consistency(
                tree.size,
                proof.tree_size,
                &tree.root,
                &proof.root_hash,
                &link,
            )
        } else {
            let link = self
                .proof(origin, tree_id, proof.tree_size, tree.size)
                .await?;
            verify_consistency(
                proof.tree_size,
                tree.size,
                &proof.root_hash,
                &tree.root,
                &link,
            )
        }
    }
}

/// A shard's signed tree head, read but not verified (the witness verifies it):
/// it must name this shard (`<host> - <treeID>`) and state the size and root
/// listed next to it, or the listing is inconsistent with itself.
fn shard_checkpoint(shard: &ShardInfo) -> Result<Checkpoint> {
    let note = parse_note(shard.signed_tree_head.as_bytes())?;
    let checkpoint = parse_checkpoint_text(note.text())?;
    let suffix = format!(" - {}", shard.tree_id);
    if !checkpoint.origin().ends_with(&suffix) {
        return Err(Error::OriginMismatch {
            expected: format!("<host>{suffix}"),
            found: checkpoint.origin().to_owned(),
        });
    }
    if checkpoint.size() != shard.tree_size || *checkpoint.root_hash() != shard.root_hash {
        return Err(Error::CheckpointProofMismatch {
            reason: "signed tree head disagrees with treeSize or rootHash",
        });
    }
    Ok(checkpoint)
}
