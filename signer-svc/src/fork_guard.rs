//! The signer's own, independent record of what it last cosigned per origin.
//!
//! The witness service has its own state and checks; this guard does not trust
//! it. Before any cosignature leaves the process, the guard checks the request
//! against its record (no smaller size, no other root at the same size, no
//! growth without a consistency proof from the recorded tree) and durably
//! records the new checkpoint, in one SQLite transaction with
//! `synchronous=FULL`, so even a compromised witness core cannot obtain two
//! cosignatures on inconsistent checkpoints.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};
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

/// The durable record, in SQLite.
pub struct ForkGuard {
    // A std mutex: every use is a short, synchronous SQLite transaction run on a
    // blocking thread, never held across an await.
    connection: Mutex<Connection>,
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
        Ok(ForkGuard {
            connection: Mutex::new(connection),
        })
    }

    /// The record for an origin.
    pub fn record(&self, origin: &str) -> Result<Option<Record>> {
        let connection = self.lock()?;
        read_record(&connection, origin)
    }

    /// Checks the checkpoint against the record and, if it passes, stores it as
    /// the new record, durably, in one transaction. Only after this returns `Ok`
    /// may a cosignature be released.
    pub fn check_and_record(
        &self,
        checkpoint: &Checkpoint,
        old_size: u64,
        proof: &[Hash],
    ) -> Result<()> {
        let mut connection = self.lock()?;
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(state_error)?;
        let record = read_record(&transaction, checkpoint.origin())?;
        check(record, checkpoint, old_size, proof)?;
        let size = i64::try_from(checkpoint.size()).map_err(|_| Error::BadField {
            reason: "tree size above 2^63 - 1",
        })?;
        transaction
            .execute(
                "INSERT INTO cosigned (origin, size, root) VALUES (?1, ?2, ?3)
                 ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root",
                params![
                    checkpoint.origin(),
                    size,
                    checkpoint.root_hash().0.as_slice()
                ],
            )
            .map_err(state_error)?;
        transaction.commit().map_err(state_error)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Connection>> {
        self.connection
            .lock()
            .map_err(|_| Error::State("state lock poisoned".into()))
    }
}

fn read_record(connection: &Connection, origin: &str) -> Result<Option<Record>> {
    let row: Option<(i64, Vec<u8>)> = connection
        .query_row(
            "SELECT size, root FROM cosigned WHERE origin = ?1",
            params![origin],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(state_error)?;
    row.map(|(size, root)| {
        Ok(Record {
            size: u64::try_from(size).map_err(|_| Error::State("negative size stored".into()))?,
            root: Hash::from_slice(&root).map_err(|_| Error::State("bad root stored".into()))?,
        })
    })
    .transpose()
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

    #[test]
    fn rollback_fork_and_unproven_growth_are_refused_and_leave_the_record_alone() {
        let leaves = tree(20);
        let guard = ForkGuard::in_memory().unwrap();
        guard
            .check_and_record(&checkpoint(&leaves, 10), 0, &[])
            .unwrap();
        let recorded = guard.record("example.com/log").unwrap();

        let rollback = guard.check_and_record(&checkpoint(&leaves, 5), 10, &[]);
        assert!(matches!(
            rollback,
            Err(Error::Rollback {
                size: 5,
                stored: 10
            })
        ));

        let other: Vec<Hash> = (100..120u64).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let fork = guard.check_and_record(&checkpoint(&other, 10), 10, &[]);
        assert!(matches!(fork, Err(Error::Fork { size: 10 })));

        let unproven = guard.check_and_record(&checkpoint(&leaves, 15), 10, &[]);
        assert!(matches!(unproven, Err(Error::Unproven(_))));
        let wrong_proof =
            guard.check_and_record(&checkpoint(&other, 15), 10, &proof(&other, 10, 15));
        assert!(matches!(wrong_proof, Err(Error::Unproven(_))));

        let stale = guard.check_and_record(&checkpoint(&leaves, 15), 7, &proof(&leaves, 7, 15));
        assert!(matches!(
            stale,
            Err(Error::OldSizeMismatch {
                claimed: 7,
                stored: 10
            })
        ));
        assert_eq!(guard.record("example.com/log").unwrap(), recorded);

        guard
            .check_and_record(&checkpoint(&leaves, 15), 10, &proof(&leaves, 10, 15))
            .unwrap();
        guard
            .check_and_record(&checkpoint(&leaves, 15), 15, &[])
            .unwrap();
        assert_eq!(guard.record("example.com/log").unwrap().unwrap().size, 15);
    }

    #[test]
    fn first_checkpoint_needs_old_size_zero_and_no_proof() {
        let leaves = tree(4);
        let guard = ForkGuard::in_memory().unwrap();
        assert!(matches!(
            guard.check_and_record(&checkpoint(&leaves, 4), 2, &[]),
            Err(Error::OldSizeMismatch {
                claimed: 2,
                stored: 0
            })
        ));
        assert!(
            guard
                .check_and_record(&checkpoint(&leaves, 4), 0, &proof(&leaves, 2, 4))
                .is_err()
        );
        assert_eq!(guard.record("example.com/log").unwrap(), None);
        let empty = Checkpoint::new("example.com/log", 0, Hash([1; 32]), vec![]).unwrap();
        assert!(guard.check_and_record(&empty, 0, &[]).is_err());
    }

    #[test]
    fn record_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.sqlite");
        let leaves = tree(3);
        ForkGuard::open(&path)
            .unwrap()
            .check_and_record(&checkpoint(&leaves, 3), 0, &[])
            .unwrap();
        let reopened = ForkGuard::open(&path).unwrap();
        assert_eq!(reopened.record("example.com/log").unwrap().unwrap().size, 3);
        assert!(matches!(
            reopened.check_and_record(&checkpoint(&leaves, 2), 3, &[]),
            Err(Error::Rollback { .. })
        ));
    }
}
