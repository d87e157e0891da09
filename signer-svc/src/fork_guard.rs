//! The signer's own, independent record of what it last cosigned per origin.
//!
//! The witness service has its own state and checks; this guard does not trust
//! it. Before any cosignature leaves the process, the guard checks the request
//! against its record (no smaller size, no other root at the same size, no
//! growth without a consistency proof from the recorded tree) and durably
//! records the new checkpoint, in one SQLite transaction with
//! `synchronous=FULL`, so even a compromised witness core cannot obtain two
//! cosignatures on inconsistent checkpoints. Concurrent callers share
//! transactions (group commit, see [`ForkGuard`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};
use tokio::sync::oneshot;
use witness_core::checkpoint::Checkpoint;
use witness_core::merkle::{Hash, empty_root, verify_consistency};

use crate::error::{Error, Result};

/// The last checkpoint cosigned for an origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub size: u64,
    pub root: Hash,
}

/// Decides whether a checkpoint may be cosigned given the record (pure).
pub fn check(
    record: Option<Record>,
    checkpoint: &Checkpoint,
    old_size: u64,
    proof: &[Hash],
) -> Result<()> {
    let size = checkpoint.size();
    let root = checkpoint.root_hash();
    if size == 0 && *root != empty_root() {
        return Err(Error::InvalidRequest(
            witness_core::Error::ConsistencyProofInvalid {
                reason: "a size-0 checkpoint must have the empty tree's root",
            },
        ));
    }
    let stored = record.map_or(0, |r| r.size);
    if old_size != stored {
        return Err(Error::OldSizeMismatch {
            claimed: old_size,
            stored,
        });
    }
    let Some(record) = record else {
        // First checkpoint seen for this origin: every tree extends the empty tree.
        if !proof.is_empty() {
            return Err(Error::Unproven(
                witness_core::Error::ConsistencyProofInvalid {
                    reason: "proof must be empty from size 0",
                },
            ));
        }
        return Ok(());
    };
    if size < record.size {
        return Err(Error::Rollback {
            size,
            stored: record.size,
        });
    }
    if size == record.size {
        if *root != record.root {
            return Err(Error::Fork { size });
        }
        if !proof.is_empty() {
            return Err(Error::Unproven(
                witness_core::Error::ConsistencyProofInvalid {
                    reason: "proof must be empty for equal sizes",
                },
            ));
        }
        return Ok(());
    }
    if record.size == 0 {
        if !proof.is_empty() {
            return Err(Error::Unproven(
                witness_core::Error::ConsistencyProofInvalid {
                    reason: "proof must be empty from size 0",
                },
            ));
        }
        return Ok(());
    }
    verify_consistency(record.size, size, &record.root, root, proof).map_err(Error::Unproven)
}

/// A checkpoint to record, with the old size and proof the caller gave for it.
#[derive(Clone, Debug)]
pub struct Proposal {
    pub checkpoint: Checkpoint,
    pub old_size: u64,
    pub proof: Vec<Hash>,
}

/// The guard's verdict on each proposal of a commit, in order; a commit that
/// failed as a whole (the transaction did not commit) is an `Err` instead.
pub type Verdicts = Result<Vec<Result<()>>>;

/// The most proposals the writer puts in one transaction: several full batches,
/// so that a burst of calls shares fsyncs, while one transaction stays a few
/// milliseconds of work.
const MAX_TRANSACTION_PROPOSALS: usize = 4 * crate::limits::MAX_BATCH_ITEMS;

/// How long the writer waits for a lock on the state file held by someone else
/// (a backup, an operator's query) before failing the transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Proposals of one caller and where to send their verdicts.
struct Group {
    proposals: Vec<Proposal>,
    reply: oneshot::Sender<Verdicts>,
}

/// Counts of the writer's work since the guard was opened, for metrics.
#[derive(Debug, Default)]
pub struct CommitCounters {
    transactions: AtomicU64,
    records: AtomicU64,
}

impl CommitCounters {
    /// Transactions committed (each one durable write: one WAL fsync).
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    /// Records written (checkpoints that passed the check).
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }
}

/// The durable record, in SQLite, with group commit.
///
/// One writer thread owns the database connection. Callers send it their
/// proposals and wait; the writer takes every group waiting when it becomes
/// free and runs them all in one `IMMEDIATE` transaction, checking each
/// proposal against the record as the proposals before it left it, and commits
/// once (`synchronous=FULL`: one fsync) before it answers any of them. So
/// concurrent calls share one durable write instead of one each, and the
/// check-and-record of every proposal is still serialised and atomic with its
/// write. The committed record is mirrored in memory for [`ForkGuard::record`].
pub struct ForkGuard {
    /// The committed record; updated by the writer after each commit.
    committed: Arc<Mutex<HashMap<String, Record>>>,
    counters: Arc<CommitCounters>,
    /// `None` only while dropping.
    queue: Option<mpsc::Sender<Group>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl ForkGuard {
    /// Opens (or creates) the record at `path`.
    pub fn open(path: &Path) -> Result<ForkGuard> {
        let connection = Connection::open(path).map_err(state_error)?;
        ForkGuard::init(connection)
    }

    /// An in-memory record, for tests and benchmarks only.
    pub fn in_memory() -> Result<ForkGuard> {
        ForkGuard::init(Connection::open_in_memory().map_err(state_error)?)
    }

    fn init(connection: Connection) -> Result<ForkGuard> {
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 CREATE TABLE IF NOT EXISTS cosigned (
                     origin TEXT PRIMARY KEY NOT NULL,
                     size INTEGER NOT NULL CHECK (size >= 0),
                     root BLOB NOT NULL CHECK (length(root) = 32)
                 );",
            )
            .map_err(state_error)?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(state_error)?;
        let committed = Arc::new(Mutex::new(read_all(&connection)?));
        let counters = Arc::new(CommitCounters::default());
        let (queue, groups) = mpsc::channel();
        let writer = {
            let committed = committed.clone();
            let counters = counters.clone();
            std::thread::Builder::new()
                .name("fork-guard-writer".into())
                .spawn(move || write_groups(connection, &groups, &committed, &counters))
                .map_err(|e| Error::State(format!("cannot start the fork guard writer: {e}")))?
        };
        Ok(ForkGuard {
            committed,
            counters,
            queue: Some(queue),
            writer: Some(writer),
        })
    }

    /// The committed record for an origin. It is for the service's first,
    /// non-binding check only: the binding check is the writer's, in the
    /// transaction that records.
    pub fn record(&self, origin: &str) -> Option<Record> {
        lock(&self.committed).get(origin).copied()
    }

    /// Checks the proposals against the record, in order (each sees the record
    /// as the ones before it left it), and records those that pass, in one
    /// durable transaction shared with concurrent callers. Only once this
    /// returns may a cosignature of a passing proposal be released.
    pub async fn commit(&self, proposals: Vec<Proposal>) -> Verdicts {
        self.submit(proposals)?
            .await
            .map_err(|_| Error::State("the fork guard writer stopped".into()))?
    }

    /// [`ForkGuard::commit`] for a caller outside any async runtime (tests,
    /// benchmarks, tools): blocks the calling thread.
    pub fn commit_blocking(&self, proposals: Vec<Proposal>) -> Verdicts {
        self.submit(proposals)?
            .blocking_recv()
            .map_err(|_| Error::State("the fork guard writer stopped".into()))?
    }

    /// The writer's counters.
    pub fn counters(&self) -> Arc<CommitCounters> {
        self.counters.clone()
    }

    fn submit(&self, proposals: Vec<Proposal>) -> Result<oneshot::Receiver<Verdicts>> {
        let (reply, verdicts) = oneshot::channel();
        self.queue
            .as_ref()
            .ok_or_else(|| Error::State("the fork guard is closing".into()))?
            .send(Group { proposals, reply })
            .map_err(|_| Error::State("the fork guard writer stopped".into()))?;
        Ok(verdicts)
    }
}

impl Drop for ForkGuard {
    /// Lets the writer finish the groups already sent, then waits for it, so
    /// that the database is closed when the guard is gone.
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("the fork guard writer panicked");
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The map is only ever replaced entry by entry; a panic elsewhere while
    // holding the lock cannot leave it inconsistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The writer thread: one transaction per round of waiting groups.
fn write_groups(
    mut connection: Connection,
    groups: &mpsc::Receiver<Group>,
    committed: &Mutex<HashMap<String, Record>>,
    counters: &CommitCounters,
) {
    while let Ok(first) = groups.recv() {
        let mut round = vec![first];
        let mut proposals = round[0].proposals.len();
        while proposals < MAX_TRANSACTION_PROPOSALS {
            match groups.try_recv() {
                Ok(group) => {
                    proposals += group.proposals.len();
                    round.push(group);
                }
                Err(_) => break,
            }
        }
        match write_round(&mut connection, &round) {
            Ok(verdicts) => {
                {
                    let mut committed = lock(committed);
                    for (group, verdicts) in round.iter().zip(&verdicts) {
                        for (proposal, verdict) in group.proposals.iter().zip(verdicts) {
                            if verdict.is_ok() {
                                let checkpoint = &proposal.checkpoint;
                                committed.insert(
                                    checkpoint.origin().to_owned(),
                                    Record {
                                        size: checkpoint.size(),
                                        root: *checkpoint.root_hash(),
                                    },
                                );
                            }
                        }
                    }
                }
                let written = verdicts.iter().flatten().filter(|v| v.is_ok()).count();
                counters.transactions.fetch_add(1, Ordering::Relaxed);
                counters.records.fetch_add(
                    u64::try_from(written).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                for (group, verdicts) in round.into_iter().zip(verdicts) {
                    // A caller that went away no longer needs its verdicts.
                    let _ = group.reply.send(Ok(verdicts));
                }
            }
            Err(error) => {
                tracing::error!(%error, "fork guard transaction failed");
                for group in round {
                    let _ = group.reply.send(Err(Error::State(error.to_string())));
                }
            }
        }
    }
}

/// Checks and records every proposal of a round in one transaction. A refused
/// proposal is a verdict and leaves the others alone; a database failure rolls
/// the whole transaction back.
fn write_round(connection: &mut Connection, round: &[Group]) -> Result<Vec<Vec<Result<()>>>> {
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(state_error)?;
    let mut verdicts = Vec::with_capacity(round.len());
    for group in round {
        let mut group_verdicts = Vec::with_capacity(group.proposals.len());
        for proposal in &group.proposals {
            group_verdicts.push(check_and_write(&transaction, proposal)?);
        }
        verdicts.push(group_verdicts);
    }
    transaction.commit().map_err(state_error)?;
    Ok(verdicts)
}

/// The outer `Result` is a database failure (the transaction must not commit);
/// the inner one the guard's verdict.
fn check_and_write(connection: &Connection, proposal: &Proposal) -> Result<Result<()>> {
    let checkpoint = &proposal.checkpoint;
    let record = read_record(connection, checkpoint.origin())?;
    if let Err(refusal) = check(record, checkpoint, proposal.old_size, &proposal.proof) {
        return Ok(Err(refusal));
    }
    let Ok(size) = i64::try_from(checkpoint.size()) else {
        return Ok(Err(Error::BadField {
            reason: "tree size above 2^63 - 1",
        }));
    };
    connection
        .prepare_cached(
            "INSERT INTO cosigned (origin, size, root) VALUES (?1, ?2, ?3)
             ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                checkpoint.origin(),
                size,
                checkpoint.root_hash().0.as_slice()
            ])
        })
        .map_err(state_error)?;
    Ok(Ok(()))
}

fn read_all(connection: &Connection) -> Result<HashMap<String, Record>> {
    let mut statement = connection
        .prepare("SELECT origin, size, root FROM cosigned")
        .map_err(state_error)?;
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, Vec<u8>>(2)?,
            ))
        })
        .map_err(state_error)?;
    let mut records = HashMap::new();
    for row in rows {
        let (origin, size, root) = row.map_err(state_error)?;
        records.insert(origin, stored_record(size, &root)?);
    }
    Ok(records)
}

fn read_record(connection: &Connection, origin: &str) -> Result<Option<Record>> {
    let row: Option<(i64, Vec<u8>)> = connection
        .prepare_cached("SELECT size, root FROM cosigned WHERE origin = ?1")
        .and_then(|mut statement| {
            statement
                .query_row(params![origin], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .map_err(state_error)?;
    row.map(|(size, root)| stored_record(size, &root))
        .transpose()
}

fn stored_record(size: i64, root: &[u8]) -> Result<Record> {
    Ok(Record {
        size: u64::try_from(size).map_err(|_| Error::State("negative size stored".into()))?,
        root: Hash::from_slice(root).map_err(|_| Error::State("bad root stored".into()))?,
    })
}

fn state_error(error: rusqlite::Error) -> Error {
    Error::State(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use witness_core::merkle::{LeafHashes, leaf_hash, prove_consistency, tree_root};

    fn tree(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    fn checkpoint(leaves: &[Hash], size: u64) -> Checkpoint {
        let root = tree_root(&mut LeafHashes(leaves), size).unwrap();
        Checkpoint::new("example.com/log", size, root, vec![]).unwrap()
    }

    fn proof(leaves: &[Hash], old: u64, new: u64) -> Vec<Hash> {
        prove_consistency(&mut LeafHashes(leaves), old, new).unwrap()
    }

    fn proposal(checkpoint: Checkpoint, old_size: u64, proof: Vec<Hash>) -> Proposal {
        Proposal {
            checkpoint,
            old_size,
            proof,
        }
    }

    /// One proposal in its own commit.
    fn check_and_record(
        guard: &ForkGuard,
        checkpoint: Checkpoint,
        old_size: u64,
        proof: &[Hash],
    ) -> Result<()> {
        let mut verdicts = guard
            .commit_blocking(vec![proposal(checkpoint, old_size, proof.to_vec())])
            .unwrap();
        assert_eq!(verdicts.len(), 1);
        verdicts.remove(0)
    }

    #[test]
    fn rollback_fork_and_unproven_growth_are_refused_and_leave_the_record_alone() {
        let leaves = tree(20);
        let guard = ForkGuard::in_memory().unwrap();
        check_and_record(&guard, checkpoint(&leaves, 10), 0, &[]).unwrap();
        let recorded = guard.record("example.com/log");

        let rollback = check_and_record(&guard, checkpoint(&leaves, 5), 10, &[]);
        assert!(matches!(
            rollback,
            Err(Error::Rollback {
                size: 5,
                stored: 10
            })
        ));

        let other: Vec<Hash> = (100..120u64).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let fork = check_and_record(&guard, checkpoint(&other, 10), 10, &[]);
        assert!(matches!(fork, Err(Error::Fork { size: 10 })));

        let unproven = check_and_record(&guard, checkpoint(&leaves, 15), 10, &[]);
        assert!(matches!(unproven, Err(Error::Unproven(_))));
        let wrong_proof =
            check_and_record(&guard, checkpoint(&other, 15), 10, &proof(&other, 10, 15));
        assert!(matches!(wrong_proof, Err(Error::Unproven(_))));

        let stale = check_and_record(&guard, checkpoint(&leaves, 15), 7, &proof(&leaves, 7, 15));
        assert!(matches!(
            stale,
            Err(Error::OldSizeMismatch {
                claimed: 7,
                stored: 10
            })
        ));
        assert_eq!(guard.record("example.com/log"), recorded);

        check_and_record(&guard, checkpoint(&leaves, 15), 10, &proof(&leaves, 10, 15)).unwrap();
        check_and_record(&guard, checkpoint(&leaves, 15), 15, &[]).unwrap();
        assert_eq!(guard.record("example.com/log").unwrap().size, 15);
    }

    #[test]
    fn first_checkpoint_needs_old_size_zero_and_no_proof() {
        let leaves = tree(4);
        let guard = ForkGuard::in_memory().unwrap();
        assert!(matches!(
            check_and_record(&guard, checkpoint(&leaves, 4), 2, &[]),
            Err(Error::OldSizeMismatch {
                claimed: 2,
                stored: 0
            })
        ));
        assert!(
            check_and_record(&guard, checkpoint(&leaves, 4), 0, &proof(&leaves, 2, 4)).is_err()
        );
        assert_eq!(guard.record("example.com/log"), None);
        let empty = Checkpoint::new("example.com/log", 0, Hash([1; 32]), vec![]).unwrap();
        assert!(check_and_record(&guard, empty, 0, &[]).is_err());
    }

    #[test]
    fn record_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        let leaves = tree(3);
        check_and_record(
            &ForkGuard::open(&path).unwrap(),
            checkpoint(&leaves, 3),
            0,
            &[],
        )
        .unwrap();
        let reopened = ForkGuard::open(&path).unwrap();
        assert_eq!(reopened.record("example.com/log").unwrap().size, 3);
        assert!(matches!(
            check_and_record(&reopened, checkpoint(&leaves, 2), 3, &[]),
            Err(Error::Rollback { .. })
        ));
    }

    #[test]
    fn proposals_of_one_commit_see_the_ones_before_them_and_share_one_transaction() {
        let leaves = tree(40);
        let other: Vec<Hash> = (100..140u64).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let guard = ForkGuard::in_memory().unwrap();
        let elsewhere = Checkpoint::new("example.com/other", 3, Hash([7; 32]), vec![]).unwrap();
        let verdicts = guard
            .commit_blocking(vec![
                proposal(checkpoint(&leaves, 10), 0, vec![]),
                // Chains on the first: its old size is the first's size.
                proposal(checkpoint(&leaves, 20), 10, proof(&leaves, 10, 20)),
                // Another root at the size the previous one just recorded.
                proposal(checkpoint(&other, 20), 20, vec![]),
                proposal(elsewhere.clone(), 0, vec![]),
                // Refers to the record before this commit.
                proposal(checkpoint(&leaves, 30), 0, vec![]),
                proposal(checkpoint(&leaves, 15), 20, vec![]),
                proposal(checkpoint(&leaves, 40), 20, proof(&leaves, 20, 40)),
            ])
            .unwrap();
        let kinds: Vec<&str> = verdicts
            .iter()
            .map(|v| v.as_ref().map_or_else(Error::kind, |()| "ok"))
            .collect();
        assert_eq!(
            kinds,
            [
                "ok",
                "ok",
                "fork",
                "ok",
                "old_size_mismatch",
                "rollback",
                "ok"
            ]
        );
        assert_eq!(guard.record("example.com/log").unwrap().size, 40);
        assert_eq!(guard.record("example.com/other").unwrap().size, 3);
        let counters = guard.counters();
        assert_eq!((counters.transactions(), counters.records()), (1, 4));
    }

    /// Holds the write lock of the state file from another connection until
    /// dropped, so that the writer's next transaction waits for it.
    struct HeldLock(Connection);

    impl HeldLock {
        fn take(path: &Path) -> HeldLock {
            let connection = Connection::open(path).unwrap();
            connection.execute_batch("BEGIN IMMEDIATE").unwrap();
            HeldLock(connection)
        }
    }

    impl Drop for HeldLock {
        fn drop(&mut self) {
            self.0.execute_batch("ROLLBACK").unwrap();
        }
    }

    #[test]
    fn concurrent_callers_share_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        let guard = Arc::new(ForkGuard::open(&path).unwrap());
        let leaves = tree(1);
        let first = |i: usize| {
            let origin = format!("example.com/log{i}");
            let root = tree_root(&mut LeafHashes(&leaves), 1).unwrap();
            proposal(
                Checkpoint::new(&origin, 1, root, vec![]).unwrap(),
                0,
                vec![],
            )
        };
        let lock = HeldLock::take(&path);
        // The first caller's transaction waits for the lock; the 15 callers
        // that come meanwhile queue behind it.
        let mut callers = Vec::new();
        for i in 0..16 {
            let guard = guard.clone();
            let proposal = first(i);
            callers.push(std::thread::spawn(move || {
                guard.commit_blocking(vec![proposal])
            }));
            if i == 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        drop(lock);
        for caller in callers {
            let verdicts = caller.join().unwrap().unwrap();
            assert!(verdicts[0].is_ok(), "{verdicts:?}");
        }
        let counters = guard.counters();
        assert_eq!(counters.records(), 16);
        assert!(
            counters.transactions() <= 2,
            "16 callers took {} transactions",
            counters.transactions()
        );
    }

    #[test]
    fn a_transaction_that_cannot_commit_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        let guard = ForkGuard::open(&path).unwrap();
        let leaves = tree(8);
        check_and_record(&guard, checkpoint(&leaves, 4), 0, &[]).unwrap();
        let lock = HeldLock::take(&path);
        // Longer than the busy timeout: the writer gives up.
        let failed = guard.commit_blocking(vec![proposal(
            checkpoint(&leaves, 8),
            4,
            proof(&leaves, 4, 8),
        )]);
        drop(lock);
        assert!(matches!(failed, Err(Error::State(_))), "{failed:?}");
        assert_eq!(guard.record("example.com/log").unwrap().size, 4);
        assert_eq!(
            ForkGuard::open(&path)
                .unwrap()
                .record("example.com/log")
                .unwrap()
                .size,
            4
        );
        check_and_record(&guard, checkpoint(&leaves, 8), 4, &proof(&leaves, 4, 8)).unwrap();
    }
}
