//! Pull feeders: for logs that do not push checkpoints to the witness, fetch the
//! log's latest checkpoint and a consistency proof from the witness's latest
//! cosigned size, and hand both to the witness exactly as a push would.

use async_trait::async_trait;

use crate::Result;
use crate::merkle::Hash;
use crate::service::store::StoredTree;

/// Where a feeder hands what it fetched: the witness itself (the same checks as
/// a pushed `add-checkpoint`).
#[async_trait]
pub trait CheckpointSink: Send + Sync + 'static {
    /// The tree this witness last cosigned for `origin`, if any.
    async fn cosigned_tree(&self, origin: &str) -> Result<Option<StoredTree>>;

    /// Submits a checkpoint note with a consistency proof from `old_size`, as
    /// `add-checkpoint` does; returns the cosignature lines. An
    /// `Error::OldSizeMismatch` carries the size to fetch a proof from instead.
    async fn add_checkpoint(
        &self,
        old_size: u64,
        consistency_proof: Vec<Hash>,
        note: Vec<u8>,
    ) -> Result<Vec<String>>;
}
