//! The archive's intake from the state store's outbox (SQLite): the witness
//! writes each cosigned checkpoint in the same transaction as the state that
//! reveals it, so one durable commit covers both, and the [`OutboxMover`]
//! moves the rows to the spool afterwards, off the request path.
//!
//! - A row is moved by appending it to the spool (one `fdatasync` per batch,
//!   its outbox number kept in the line), and only then removed from the
//!   outbox. A crash between the two leaves rows the spool already holds; at
//!   start, [`Spool::outbox_spooled_through`] names the last one and they are
//!   removed instead of moved again.
//! - Rows belong to the spool that moves them (its owner name), since several
//!   witnesses may share one state file, each with its own spool.
//! - While the spool refuses writes the rows stay in the outbox, as durable as
//!   the state, and are moved once it takes writes again. The outbox holds at
//!   most [`OUTBOX_ROWS_PER_QUEUE_SLOT`] × `queue_capacity` rows waiting: past
//!   that, the witness refuses new cosignatures (503) rather than let the
//!   state's disk fill, as the spool path refuses them when the spool fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::MAX_SPOOL_BATCH;
use super::layout::ArchivedCheckpoint;
use super::spool::Spool;
use crate::service::metrics::WitnessMetrics;
use crate::service::store::ArchiveOutbox;
use crate::{Error, Result};

/// The outbox may hold this many rows waiting for the spool per slot of the
/// archive's `queue_capacity` (65,536 at the default 1,024: half a minute at
/// 2,000 cosignatures a second) before new cosignatures are refused.
pub const OUTBOX_ROWS_PER_QUEUE_SLOT: u64 = 64;

/// The least time between two moves, unless a full batch waits: rows are as
/// durable in the outbox as in the spool, so moving them half a second later
/// costs nothing, and at 2,000 cosignatures a second each move then takes
/// about 1,000 rows with one read, one spool append and `fdatasync`, and one
/// delete, instead of a few rows each. Without it the mover cost the witness
/// more CPU than the spool's group commit it replaced (README, Benchmarks).
const MOVE_LINGER: Duration = Duration::from_millis(500);

/// The first wait before moving again after the spool or the store failed;
/// doubled after each failure up to [`MOVE_RETRY_MAX`].
const MOVE_RETRY_START: Duration = Duration::from_millis(100);
const MOVE_RETRY_MAX: Duration = Duration::from_secs(5);

/// What the witness needs to write to the outbox: the owner name, the check
/// before each write, and the wake-up after it.
pub struct OutboxTicket {
    owner: String,
    /// Rows written and not yet moved. Briefly below the truth when the mover
    /// counts a row off before its writer counts it in; never drifts.
    waiting: AtomicI64,
    limit: i64,
    wake: Notify,
    metrics: Arc<WitnessMetrics>,
}

impl OutboxTicket {
    /// The owner name the witness writes its rows under.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Before a compare-and-swap that writes the outbox: the note must be a
    /// checkpoint of `origin` the archive can name (as `submit` checks), and
    /// the outbox must hold fewer rows waiting for the spool than its limit.
    pub fn admit(&self, origin: &str, cosigned_at: u64, note: &[u8]) -> Result<()> {
        if let Err(error) = ArchivedCheckpoint::new(origin, cosigned_at, note) {
            self.metrics.archive_write("checkpoint", false);
            return Err(error);
        }
        let waiting = self.waiting.load(Ordering::Relaxed);
        if waiting >= self.limit {
            self.metrics.archive_write("checkpoint", false);
            return Err(Error::Archive {
                detail: format!(
                    "{waiting} cosigned checkpoints wait in the state store's outbox for the \
                     archive's spool (limit {}): refusing new cosignatures until the spool \
                     takes writes again",
                    self.limit
                ),
            });
        }
        Ok(())
    }

    /// After a compare-and-swap wrote a row: counts it and wakes the mover.
    pub fn written(&self) {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
    }
}

/// Moves the outbox's rows to the spool, a batch at a time, in order.
pub(super) struct OutboxMover {
    outbox: Arc<dyn ArchiveOutbox>,
    ticket: Arc<OutboxTicket>,
    spool: Arc<Spool>,
    /// The spool's next sequence number (a failed batch's are not reused).
    next_sequence: u64,
    /// The next outbox number to read.
    from: u64,
    metrics: Arc<WitnessMetrics>,
}

impl OutboxMover {
    /// Takes up the outbox of `spool` in `outbox`: removes the rows a crash
    /// left after moving them, counts the others. Before the witness serves.
    pub(super) async fn resume(
        outbox: Arc<dyn ArchiveOutbox>,
        spool: Arc<Spool>,
        next_sequence: u64,
        queue_capacity: usize,
        metrics: Arc<WitnessMetrics>,
    ) -> Result<(OutboxMover, Arc<OutboxTicket>)> {
        let (owner, spooled_through) = spool
            .call(|spool| Ok((spool.outbox_owner()?, spool.outbox_spooled_through()?)))
            .await?;
        let (waiting, oldest) = outbox.resume_outbox(&owner, spooled_through).await?;
        metrics.archive_oldest_in_outbox(oldest);
        if waiting > 0 {
            tracing::info!(
                checkpoints = waiting,
                "archive outbox: moving cosigned checkpoints left by the last run to the spool"
            );
        }
        let limit = OUTBOX_ROWS_PER_QUEUE_SLOT.saturating_mul(queue_capacity as u64);
        let ticket = Arc::new(OutboxTicket {
            owner,
            waiting: AtomicI64::new(i64::try_from(waiting).unwrap_or(i64::MAX)),
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
            wake: Notify::new(),
            metrics: metrics.clone(),
        });
        let mover = OutboxMover {
            outbox,
            ticket: ticket.clone(),
            spool,
            next_sequence,
            from: spooled_through.map_or(0, |through| through.saturating_add(1)),
            metrics,
        };
        Ok((mover, ticket))
    }

    /// Moves rows as they are written until `stopped`, retrying failures with
    /// backoff; then moves what the witness wrote before it stopped. Wakes
    /// `uploader` after each append to the spool.
    pub(super) async fn run(mut self, mut stopped: watch::Receiver<bool>, uploader: Arc<Notify>) {
        let mut retry = MOVE_RETRY_START;
        loop {
            let started = tokio::time::Instant::now();
            match self.move_batch().await {
                Ok(moved) if moved > 0 => {
                    uploader.notify_one();
                    retry = MOVE_RETRY_START;
                    if moved < MAX_SPOOL_BATCH {
                        tokio::select! {
                            () = tokio::time::sleep_until(started + MOVE_LINGER) => {}
                            _ = stopped.wait_for(|stop| *stop) => break,
                        }
                    }
                }
                Ok(_) => {
                    retry = MOVE_RETRY_START;
                    tokio::select! {
                        () = self.ticket.wake.notified() => {}
                        _ = stopped.wait_for(|stop| *stop) => break,
                    }
                }
                Err(error) => {
                    tracing::error!(
                        %error,
                        retry_in = ?retry,
                        "cannot move cosigned checkpoints from the state store's outbox to the \
                         archive's spool: they stay in the outbox"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(retry) => {}
                        _ = stopped.wait_for(|stop| *stop) => break,
                    }
                    retry = (retry * 2).min(MOVE_RETRY_MAX);
                }
            }
        }
        loop {
            match self.move_batch().await {
                Ok(0) => break,
                Ok(_) => uploader.notify_one(),
                Err(error) => {
                    tracing::error!(
                        %error,
                        "stopping with cosigned checkpoints in the state store's outbox: \
                         the next start moves them"
                    );
                    break;
                }
            }
        }
    }

    /// Moves the next batch of rows, if any: appends them to the spool, then
    /// removes them from the outbox. Returns how many rows it moved.
    async fn move_batch(&mut self) -> Result<usize> {
        let rows = self
            .outbox
            .outbox_waiting(&self.ticket.owner, self.from, MAX_SPOOL_BATCH)
            .await?;
        let Some(last) = rows.last().map(|row| row.sequence) else {
            self.metrics.archive_oldest_in_outbox(None);
            return Ok(0);
        };
        self.metrics
            .archive_oldest_in_outbox(rows.iter().map(|row| row.cosigned_at).min());
        let count = rows.len();
        let mut checkpoints = Vec::with_capacity(count);
        let mut refused = Vec::new();
        for row in rows {
            match ArchivedCheckpoint::new(&row.origin, row.cosigned_at, &row.note) {
                Ok(checkpoint) => checkpoints.push((row.sequence, checkpoint)),
                // Only a damaged or edited database holds one: the witness
                // checked each note before writing it.
                Err(error) => refused.push((row, error)),
            }
        }
        let first = self.next_sequence;
        if !checkpoints.is_empty() {
            // A failed batch's numbers are not reused: its lines may have landed.
            self.next_sequence += checkpoints.len() as u64;
        }
        self.spool
            .call(move |spool| {
                for (row, error) in &refused {
                    spool.set_aside_outbox_row(row, error)?;
                }
                if checkpoints.is_empty() {
                    Ok(refused.len())
                } else {
                    spool
                        .enqueue_from_outbox(first, &checkpoints)
                        .map(|()| refused.len())
                }
            })
            .await
            .map(|refused| {
                for _ in 0..refused {
                    self.metrics.archive_write("checkpoint", false);
                }
            })?;
        self.from = last.saturating_add(1);
        self.ticket
            .waiting
            .fetch_sub(i64::try_from(count).unwrap_or(i64::MAX), Ordering::Relaxed);
        // Rows left behind by a failure here are removed at the next start.
        if let Err(error) = self.outbox.forget_outbox(&self.ticket.owner, last).await {
            tracing::warn!(%error, "cannot remove moved rows from the archive outbox yet");
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::archive::layout::test_checkpoint;
    use crate::service::archive::spool::QueueCursor;
    use crate::service::store::sqlite::SqliteStore;
    use crate::service::store::{CasOutcome, LogState, LogStore, StoredTree, TrustedLog};

    const ORIGIN: &str = "example.org/log";

    async fn trusting_store(dir: &std::path::Path) -> Arc<SqliteStore> {
        let store = Arc::new(SqliteStore::open(&dir.join("state.db")).unwrap());
        store
            .add_log(&TrustedLog {
                origin: ORIGIN.to_owned(),
                verifier_keys: vec!["w+00000001+AAAA".to_owned()],
            })
            .await
            .unwrap();
        store
    }

    /// Cosigns sizes `sizes` in turn, as the witness does: each state with its
    /// outbox row under `owner`.
    async fn cosign(store: &SqliteStore, owner: &str, sizes: std::ops::RangeInclusive<u64>) {
        let mut expected = store.state(ORIGIN).await.unwrap().map(|state| state.tree);
        for size in sizes {
            let checkpoint = test_checkpoint(size);
            let new = LogState {
                origin: ORIGIN.to_owned(),
                tree: StoredTree {
                    size,
                    root: crate::merkle::Hash([7; 32]),
                },
                note: checkpoint.note().to_vec(),
                cosigned_at: checkpoint.cosigned_at(),
            };
            let outcome = store
                .compare_and_swap_archiving(expected, &new, owner)
                .await
                .unwrap();
            assert_eq!(outcome, CasOutcome::Swapped);
            expected = Some(new.tree);
        }
    }

    fn spooled(spool: &Spool) -> Vec<ArchivedCheckpoint> {
        spool
            .queued(usize::MAX, QueueCursor::default())
            .unwrap()
            .queued
            .into_iter()
            .map(|queued| queued.checkpoint)
            .collect()
    }

    #[tokio::test]
    async fn rows_a_crash_left_after_moving_them_are_removed_at_start_not_archived_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = trusting_store(dir.path()).await;
        let (spool, next) = Spool::open(&dir.path().join("spool")).unwrap();
        let owner = spool.outbox_owner().unwrap();
        cosign(&store, &owner, 1..=3).await;
        let rows = store.outbox_waiting(&owner, 0, 10).await.unwrap();
        assert_eq!(rows.len(), 3);
        // The crash: the first two rows reached the spool, their removal from
        // the outbox did not.
        let moved: Vec<_> = rows[..2]
            .iter()
            .map(|row| {
                let checkpoint =
                    ArchivedCheckpoint::new(&row.origin, row.cosigned_at, &row.note).unwrap();
                (row.sequence, checkpoint)
            })
            .collect();
        spool.enqueue_from_outbox(next, &moved).unwrap();
        drop(spool);

        let (spool, next) = Spool::open(&dir.path().join("spool")).unwrap();
        assert_eq!(
            spool.outbox_owner().unwrap(),
            owner,
            "the owner name is kept"
        );
        let spool = Arc::new(spool);
        let metrics = Arc::new(WitnessMetrics::new().unwrap());
        let (mut mover, ticket) =
            OutboxMover::resume(store.clone(), spool.clone(), next, 1_024, metrics)
                .await
                .unwrap();
        assert_eq!(ticket.waiting.load(Ordering::Relaxed), 1);
        assert_eq!(
            store.outbox_waiting(&owner, 0, 10).await.unwrap(),
            rows[2..]
        );
        assert!(mover.move_batch().await.unwrap() > 0);
        assert_eq!(mover.move_batch().await.unwrap(), 0);
        assert_eq!(
            spooled(&spool),
            [test_checkpoint(1), test_checkpoint(2), test_checkpoint(3)],
            "each checkpoint spooled once"
        );
        assert!(
            store
                .outbox_waiting(&owner, 0, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(ticket.waiting.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_fresh_state_file_behind_an_older_spool_numbers_its_rows_after_the_spools() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, next) = Spool::open(&dir.path().join("spool")).unwrap();
        // The spool moved rows up to 500 from a state file since replaced.
        spool
            .enqueue_from_outbox(next, &[(500, test_checkpoint(1))])
            .unwrap();
        let owner = spool.outbox_owner().unwrap();
        let (spool, next) = {
            drop(spool);
            Spool::open(&dir.path().join("spool")).unwrap()
        };
        let spool = Arc::new(spool);
        let store = trusting_store(dir.path()).await;
        let metrics = Arc::new(WitnessMetrics::new().unwrap());
        let (mut mover, _ticket) =
            OutboxMover::resume(store.clone(), spool.clone(), next, 1_024, metrics)
                .await
                .unwrap();
        cosign(&store, &owner, 2..=2).await;
        let rows = store.outbox_waiting(&owner, 0, 10).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].sequence > 500, "numbered {}", rows[0].sequence);
        assert!(mover.move_batch().await.unwrap() > 0);
        assert_eq!(spooled(&spool), [test_checkpoint(1), test_checkpoint(2)]);
    }

    #[tokio::test]
    async fn while_the_spool_refuses_writes_rows_stay_and_past_the_limit_cosigning_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = trusting_store(dir.path()).await;
        let root = dir.path().join("spool");
        let (spool, next) = Spool::open(&root).unwrap();
        let owner = spool.outbox_owner().unwrap();
        // Another witness sharing the state file: its rows are not ours.
        cosign(&store, "0123456789abcdef0123456789abcdef", 1..=1).await;
        cosign(&store, &owner, 2..=OUTBOX_ROWS_PER_QUEUE_SLOT + 1).await;
        let spool = Arc::new(spool);
        let metrics = Arc::new(WitnessMetrics::new().unwrap());
        // A queue capacity of 1: the outbox may hold 64 rows waiting.
        let (mut mover, ticket) =
            OutboxMover::resume(store.clone(), spool.clone(), next, 1, metrics)
                .await
                .unwrap();
        let next_note = test_checkpoint(100);
        let admitted = || ticket.admit(ORIGIN, next_note.cosigned_at(), next_note.note());
        let refused = admitted().unwrap_err();
        assert_eq!(refused.http_status(), 503, "{refused}");
        assert!(
            refused.to_string().contains("64 cosigned checkpoints wait"),
            "{refused}"
        );

        let queue = root.join("queue");
        std::fs::remove_dir(&queue).unwrap();
        std::fs::write(&queue, b"not a directory").unwrap();
        assert!(mover.move_batch().await.is_err());
        assert_eq!(
            store.outbox_waiting(&owner, 0, 1_000).await.unwrap().len() as u64,
            OUTBOX_ROWS_PER_QUEUE_SLOT,
            "a failed move keeps every row"
        );
        assert!(admitted().is_err());

        std::fs::remove_file(&queue).unwrap();
        std::fs::create_dir(&queue).unwrap();
        assert!(mover.move_batch().await.unwrap() > 0);
        admitted().unwrap();
        let expected: Vec<_> = (2..=OUTBOX_ROWS_PER_QUEUE_SLOT + 1)
            .map(test_checkpoint)
            .collect();
        assert_eq!(spooled(&spool), expected);
        assert!(
            store
                .outbox_waiting(&owner, 0, 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store
                .outbox_waiting("0123456789abcdef0123456789abcdef", 0, 10)
                .await
                .unwrap()
                .len(),
            1,
            "another owner's row is left alone"
        );
    }
}
