//! Durable state of the witness: the trusted logs, the latest cosigned
//! checkpoint of each, and evidence of log misbehaviour.
//!
//! One trait, [`LogStore`], with two implementations that pass the same test
//! suite: [`sqlite`] (the embedded default: WAL, `synchronous=FULL`, concurrent
//! writes batched into one transaction) and [`postgres`] (several witness
//! replicas sharing one database). Both update a log's state only by
//! compare-and-swap on the stored tree, so two racing requests can never roll a
//! log back or fork it, however many replicas run.

pub mod postgres;
pub mod sqlite;

use std::fmt::Display;

use async_trait::async_trait;

use crate::merkle::Hash;
use crate::{Error, Result};

/// A log the witness trusts. Logs are added, never removed, and their keys never
/// change: re-adding a log with other keys would allow a split view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedLog {
    /// The checkpoint origin line.
    pub origin: String,
    /// The log's verifier keys in vkey form (`name+keyid+base64`), sorted.
    pub verifier_keys: Vec<String>,
}

/// A tree the witness cosigned: what compare-and-swap compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredTree {
    pub size: u64,
    pub root: Hash,
}

/// The latest cosigned checkpoint of a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogState {
    pub origin: String,
    pub tree: StoredTree,
    /// The checkpoint as served by the monitoring endpoint: the re-encoded
    /// checkpoint body, the log's verified signature lines, then this witness's
    /// cosignature lines.
    pub note: Vec<u8>,
    /// This witness's cosignature timestamp (seconds since the epoch).
    pub cosigned_at: u64,
}

/// The result of a compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    /// The state was replaced.
    Swapped,
    /// The stored tree was not the expected one; nothing changed.
    Conflict { current: Option<StoredTree> },
}

/// A checkpoint validly signed by its log that failed a consistency check: kept
/// as evidence of misbehaviour, never cosigned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MisbehaviourEvidence {
    pub origin: String,
    /// The checkpoint note as received.
    pub note: Vec<u8>,
    /// The tree this witness had cosigned when the checkpoint arrived.
    pub cosigned: Option<StoredTree>,
    /// The failed check (`Error::kind()`).
    pub reason: String,
    /// When it was received (seconds since the epoch).
    pub received_at: u64,
}

/// The witness's durable state. Every write is durable when the call returns.
#[async_trait]
pub trait LogStore: Send + Sync + 'static {
    /// Adds a trusted log. Adding a log already trusted with the same keys does
    /// nothing; with other keys it fails with `Error::LogKeyChange`.
    async fn add_log(&self, log: &TrustedLog) -> Result<()>;

    /// Every trusted log, by origin.
    async fn logs(&self) -> Result<Vec<TrustedLog>>;

    /// The latest cosigned checkpoint of a log, if any.
    async fn state(&self, origin: &str) -> Result<Option<LogState>>;

    /// Replaces a log's state with `new` if and only if its stored tree is
    /// `expected` (`None`: nothing stored yet). The origin must be trusted.
    async fn compare_and_swap(
        &self,
        expected: Option<StoredTree>,
        new: &LogState,
    ) -> Result<CasOutcome>;

    /// As [`LogStore::compare_and_swap`], and in the same transaction keeps
    /// `new` (its origin, note and cosignature time) in the archive outbox under
    /// `owner`, swapped or not: a cosignature that loses the race is archived and
    /// never revealed. Only a store that is also an [`ArchiveOutbox`] has one.
    async fn compare_and_swap_archiving(
        &self,
        expected: Option<StoredTree>,
        new: &LogState,
        owner: &str,
    ) -> Result<CasOutcome> {
        let _ = (expected, new, owner);
        Err(storage(
            "compare-and-swap",
            "this store has no archive outbox",
        ))
    }

    /// Keeps evidence of misbehaviour.
    async fn record_evidence(&self, evidence: &MisbehaviourEvidence) -> Result<()>;

    /// The evidence kept for a log, oldest first.
    async fn evidence(&self, origin: &str) -> Result<Vec<MisbehaviourEvidence>>;

    /// Proves the store accepts a durable write now (readiness): commits a
    /// write to a table of its own, touching no witness state, so a read-only
    /// or full disk, a locked file or a stopped database fails here. A store
    /// that cannot prove it is writable is reported as not writable.
    async fn probe_write(&self) -> Result<()> {
        Err(storage("write probe", "this store has no write probe"))
    }
}

/// A cosigned checkpoint kept in the state's own transaction, waiting for the
/// archive to move it to its spool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Its number: increasing in commit order, never reused.
    pub sequence: u64,
    pub origin: String,
    pub cosigned_at: u64,
    /// The note as revealed.
    pub note: Vec<u8>,
}

/// The archive outbox of a store that has one (SQLite): each cosigned
/// checkpoint is written by [`LogStore::compare_and_swap_archiving`] in the
/// same transaction as the state that reveals it, so one durable commit covers
/// both, and the archive moves it to its spool afterwards. Rows belong to an
/// owner (one archive spool), since several witnesses may share a state file.
#[async_trait]
pub trait ArchiveOutbox: Send + Sync + 'static {
    /// Takes up `owner`'s rows after a start: forgets those numbered up to
    /// `spooled_through` (the spool already holds them: a crash came between
    /// the move and the forget), numbers every row written from now on above
    /// `spooled_through`, and returns how many rows wait and the oldest one's
    /// cosignature time.
    async fn resume_outbox(
        &self,
        owner: &str,
        spooled_through: Option<u64>,
    ) -> Result<(u64, Option<u64>)>;

    /// Up to `limit` of `owner`'s rows numbered from `from` on, in order.
    async fn outbox_waiting(
        &self,
        owner: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>>;

    /// Removes `owner`'s rows numbered up to `through` (moved to the spool).
    async fn forget_outbox(&self, owner: &str, through: u64) -> Result<()>;
}

/// A failure of the database itself. The detail is the driver's message, which
/// names the failed operation but never carries the connection URL or a password.
fn storage(what: &str, err: impl Display) -> Error {
    Error::Storage {
        detail: format!("{what}: {err}"),
    }
}

/// A tree size or timestamp as the signed 64-bit integer both databases store.
/// Every valid value fits: tree sizes and cosignature timestamps are bounded by
/// 2^63 - 1 ([`crate::merkle::MAX_TREE_SIZE`]).
fn to_sql_int(value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::InvalidRequest {
        reason: "tree size or timestamp above 2^63 - 1",
    })
}

/// A stored integer back as the unsigned value it was written from; the schemas'
/// CHECK constraints keep it non-negative.
fn from_sql_int(value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| storage("reading stored state", "negative integer"))
}

/// A stored root hash, which the schemas constrain to 32 bytes.
fn root_from_sql(bytes: &[u8]) -> Result<Hash> {
    Hash::from_slice(bytes).map_err(|_| storage("reading stored state", "root is not 32 bytes"))
}

/// The keys of a trusted log in the one form both stores keep and compare:
/// sorted, without duplicates, so the same key set in another order is the same log.
fn canonical_keys(keys: &[String]) -> Vec<String> {
    let mut keys = keys.to_vec();
    keys.sort();
    keys.dedup();
    keys
}
