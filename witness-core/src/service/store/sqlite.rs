//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`, so
//! every committed write is on disk before its call returns.
//!
//! Durable writes cost an fsync each, which would cap a witness at a few hundred
//! cosignatures per second. So every write goes to one writer thread that owns
//! the only writing connection and commits *group-wise*: it takes everything
//! pending, applies each request on its own inside one transaction (a CAS that
//! finds another tree reports a conflict and leaves the others alone), commits
//! once, and only then answers every request of the batch. Reads use their own
//! connections, which WAL lets run alongside the writer: the per-request point
//! read of a log's state on the async worker itself (a few microseconds, less
//! than a hand-off to another thread), listings on the blocking pool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::{
    ArchiveOutbox, CasOutcome, LogState, LogStore, MisbehaviourEvidence, OutboxEntry, StoredTree,
    TrustedLog, canonical_keys, from_sql_int, root_from_sql, storage, to_sql_int,
};
use crate::{Error, Result};

/// The most requests committed in one transaction. Every request of a batch
/// waits for the batch's single commit, so the bound caps the latency a request
/// can gain from queueing behind others (a thousand small statements take a few
/// milliseconds, the order of the fsync itself) and the memory a batch holds.
/// Past a few hundred requests per fsync, the fsync is already amortized: larger
/// batches would add latency without adding throughput.
const MAX_BATCH: usize = 1024;

/// Read connections, at most: reads take microseconds, so a few serve any
/// number of concurrent requests, and bounding them keeps every connection
/// (and its page cache) reused instead of opening one per concurrent read,
/// and keeps reads from spreading over many blocking threads under load.
const MAX_READERS: usize = 4;

/// The page cache of each read connection, in KiB (SQLite's default is
/// 2,000 KiB per connection). A read is one point lookup: the few interior
/// pages of the two B-trees it walks stay cached, while at 40,000 logs the
/// state's leaf pages (16 MB) miss a cache of either size almost always and come
/// from the operating system's page cache instead. The default would hold 8 MB
/// across the readers for a hit rate of about a tenth.
const READER_CACHE_KIB: u32 = 256;

/// How long a connection waits for a lock held by another connection to the
/// same file (another store instance, or a WAL checkpoint) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The schema version this code writes (`PRAGMA user_version`).
/// Version 2 added the archive outbox: a version 1 witness would leave its
/// rows unarchived, so it must not open the file.
const SCHEMA_VERSION: i64 = 2;

/// Tables are created if missing, so opening a file is idempotent. `STRICT`
/// tables refuse values of the wrong type; the checks keep every stored
/// value decodable.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS logs (
    origin TEXT PRIMARY KEY NOT NULL,
    -- JSON array of verifier keys (vkey form), sorted.
    verifier_keys TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS state (
    origin TEXT PRIMARY KEY NOT NULL REFERENCES logs (origin),
    size INTEGER NOT NULL CHECK (size >= 0),
    root BLOB NOT NULL CHECK (length(root) = 32),
    note BLOB NOT NULL,
    cosigned_at INTEGER NOT NULL CHECK (cosigned_at >= 0)
) STRICT;
CREATE TABLE IF NOT EXISTS evidence (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    origin TEXT NOT NULL REFERENCES logs (origin),
    note BLOB NOT NULL,
    cosigned_size INTEGER CHECK (cosigned_size >= 0),
    cosigned_root BLOB CHECK (length(cosigned_root) = 32),
    reason TEXT NOT NULL,
    received_at INTEGER NOT NULL CHECK (received_at >= 0),
    CHECK ((cosigned_size IS NULL) = (cosigned_root IS NULL))
) STRICT;
CREATE INDEX IF NOT EXISTS evidence_by_origin ON evidence (origin, id);
-- One row, rewritten by each readiness write probe.
CREATE TABLE IF NOT EXISTS probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    writes INTEGER NOT NULL CHECK (writes >= 1)
) STRICT;
-- Cosigned checkpoints written with the state that reveals them, until the
-- archive of `owner` has moved them to its spool. AUTOINCREMENT: a number is
-- never reused, even after its row is removed. No index on the owner: reads
-- walk the numbers from the mover's position on, where nearly every row is
-- the reader's own, and an index would double each row's writes.
CREATE TABLE IF NOT EXISTS archive_outbox (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL CHECK (length(owner) BETWEEN 1 AND 64),
    origin TEXT NOT NULL,
    cosigned_at INTEGER NOT NULL CHECK (cosigned_at >= 0),
    note BLOB NOT NULL
) STRICT;
";

/// The SQLite-backed [`LogStore`].
pub struct SqliteStore {
    /// Taken on drop, which ends the writer thread once it has answered every
    /// request already queued.
    writes: Option<mpsc::Sender<Write>>,
    writer: Option<JoinHandle<()>>,
    readers: Arc<Readers>,
    read_permits: tokio::sync::Semaphore,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.readers.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`, creates the schema
    /// if missing, and starts the writer thread. Several stores may open the same
    /// file; their writes then take turns on SQLite's write lock.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        let mut conn = open_connection(path)?;
        conn.query_row("PRAGMA journal_mode = WAL", [], |row| {
            row.get::<_, String>(0)
        })
        .map_err(|e| storage("enabling WAL", e))
        .and_then(|mode| {
            if mode.eq_ignore_ascii_case("wal") {
                Ok(())
            } else {
                Err(storage("enabling WAL", format!("journal mode is {mode}")))
            }
        })?;
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(|e| storage("configuring the database", e))?;
        migrate(&mut conn)?;

        let (writes, queue) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_loop(conn, queue))
            .map_err(|e| storage("starting the writer thread", e))?;
        Ok(SqliteStore {
            writes: Some(writes),
            writer: Some(writer),
            readers: Arc::new(Readers {
                path: path.to_path_buf(),
                idle: Mutex::new(Vec::new()),
            }),
            read_permits: tokio::sync::Semaphore::new(MAX_READERS),
        })
    }

    /// Queues a write for the writer thread and waits for its answer.
    async fn write<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Write) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let writes = self
            .writes
            .as_ref()
            .ok_or_else(|| storage("writing", "the store is closed"))?;
        writes
            .send(make(reply))
            .map_err(|_| storage("writing", "the writer thread has stopped"))?;
        answer
            .await
            .map_err(|_| storage("writing", "the writer thread has stopped"))?
    }

    /// Runs a read on a read connection, on the blocking pool, at most
    /// [`MAX_READERS`] at once.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let _permit = self
            .read_permits
            .acquire()
            .await
            .map_err(|e| storage("reading", e))?;
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || readers.with(read))
            .await
            .map_err(|e| storage("reading", e))?
    }
}

impl SqliteStore {
    /// Runs a point read (one row by its primary key) on the calling async
    /// worker, at most [`MAX_READERS`] at once. Such a read takes a few
    /// microseconds against pages the operating system has cached, less than
    /// handing it to the blocking pool and back: at 2,000 requests/s those
    /// hand-offs (a thread woken and put back to sleep for each) cost the
    /// witness more CPU than the reads. A read that has to wait for the disk
    /// holds its worker meanwhile; the state is small and hot, so that is rare.
    async fn read_point<T>(&self, read: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let _permit = self
            .read_permits
            .acquire()
            .await
            .map_err(|e| storage("reading", e))?;
        self.readers.with(read)
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer's loop after it has answered what was
        // already queued; joining waits for at most that one batch, so the file
        // is closed when the drop returns and a new store can reopen it.
        drop(self.writes.take());
        if let Some(writer) = self.writer.take() {
            // A panic in the writer has already failed its pending requests (their
            // answer channels were dropped); nothing is left to report here.
            let _ = writer.join();
        }
    }
}

#[async_trait]
impl LogStore for SqliteStore {
    async fn add_log(&self, log: &TrustedLog) -> Result<()> {
        let log = TrustedLog {
            origin: log.origin.clone(),
            verifier_keys: canonical_keys(&log.verifier_keys),
        };
        self.write(|reply| Write::AddLog(log, reply)).await
    }

    async fn logs(&self) -> Result<Vec<TrustedLog>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT origin, verifier_keys FROM logs ORDER BY origin")
                .map_err(|e| storage("listing logs", e))?;
            let rows = stmt
                .query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })
                .map_err(|e| storage("listing logs", e))?;
            rows.map(|row| {
                let (origin, keys) = row.map_err(|e| storage("listing logs", e))?;
                Ok(TrustedLog {
                    origin,
                    verifier_keys: keys_from_json(&keys)?,
                })
            })
            .collect()
        })
        .await
    }

    async fn state(&self, origin: &str) -> Result<Option<LogState>> {
        let origin = origin.to_owned();
        self.read_point(move |conn| {
            let row = conn
                .prepare_cached("SELECT size, root, note, cosigned_at FROM state WHERE origin = ?1")
                .and_then(|mut stmt| {
                    stmt.query_row([&origin], |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, Vec<u8>>(1)?,
                            row.get::<_, Vec<u8>>(2)?,
                            row.get::<_, i64>(3)?,
                        ))
                    })
                    .optional()
                })
                .map_err(|e| storage("reading state", e))?;
            row.map(|(size, root, note, cosigned_at)| {
                Ok(LogState {
                    tree: StoredTree {
                        size: from_sql_int(size)?,
                        root: root_from_sql(&root)?,
                    },
                    note,
                    cosigned_at: from_sql_int(cosigned_at)?,
                    origin,
                })
            })
            .transpose()
        })
        .await
    }

    async fn compare_and_swap(
        &self,
        expected: Option<StoredTree>,
        new: &LogState,
    ) -> Result<CasOutcome> {
        let new = new.clone();
        self.write(|reply| Write::CompareAndSwap(expected, new, reply))
            .await
    }

    async fn compare_and_swap_archiving(
        &self,
        expected: Option<StoredTree>,
        new: &LogState,
        owner: &str,
    ) -> Result<CasOutcome> {
        let new = new.clone();
        let owner = owner.to_owned();
        self.write(|reply| Write::CompareAndSwapArchiving(expected, new, owner, reply))
            .await
    }

    async fn record_evidence(&self, evidence: &MisbehaviourEvidence) -> Result<()> {
        let evidence = evidence.clone();
        self.write(|reply| Write::Evidence(evidence, reply)).await
    }

    async fn probe_write(&self) -> Result<()> {
        self.write(Write::Probe).await
    }

    async fn evidence(&self, origin: &str) -> Result<Vec<MisbehaviourEvidence>> {
        let origin = origin.to_owned();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT note, cosigned_size, cosigned_root, reason, received_at
                     FROM evidence WHERE origin = ?1 ORDER BY id",
                )
                .map_err(|e| storage("reading evidence", e))?;
            let rows = stmt
                .query_map([&origin], |row| {
                    Ok((
                        row.get::<_, Vec<u8>>(0)?,
                        row.get::<_, Option<i64>>(1)?,
                        row.get::<_, Option<Vec<u8>>>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, i64>(4)?,
                    ))
                })
                .map_err(|e| storage("reading evidence", e))?;
            rows.map(|row| {
                let (note, size, root, reason, received_at) =
                    row.map_err(|e| storage("reading evidence", e))?;
                let cosigned = match (size, root) {
                    (Some(size), Some(root)) => Some(StoredTree {
                        size: from_sql_int(size)?,
                        root: root_from_sql(&root)?,
                    }),
                    _ => None,
                };
                Ok(MisbehaviourEvidence {
                    origin: origin.clone(),
                    note,
                    cosigned,
                    reason,
                    received_at: from_sql_int(received_at)?,
                })
            })
            .collect()
        })
        .await
    }
}

#[async_trait]
impl ArchiveOutbox for SqliteStore {
    async fn resume_outbox(
        &self,
        owner: &str,
        spooled_through: Option<u64>,
    ) -> Result<(u64, Option<u64>)> {
        let owner = owner.to_owned();
        self.write(|reply| Write::ResumeOutbox(owner, spooled_through, reply))
            .await
    }

    async fn outbox_waiting(
        &self,
        owner: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>> {
        let owner = owner.to_owned();
        let from = to_sql_int(from)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT sequence, origin, cosigned_at, note FROM archive_outbox
                     WHERE owner = ?1 AND sequence >= ?2 ORDER BY sequence LIMIT ?3",
                )
                .map_err(|e| storage("reading the archive outbox", e))?;
            let rows = stmt
                .query_map(params![owner, from, limit], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, Vec<u8>>(3)?,
                    ))
                })
                .map_err(|e| storage("reading the archive outbox", e))?;
            rows.map(|row| {
                let (sequence, origin, cosigned_at, note) =
                    row.map_err(|e| storage("reading the archive outbox", e))?;
                Ok(OutboxEntry {
                    sequence: from_sql_int(sequence)?,
                    origin,
                    cosigned_at: from_sql_int(cosigned_at)?,
                    note,
                })
            })
            .collect()
        })
        .await
    }

    async fn forget_outbox(&self, owner: &str, through: u64) -> Result<()> {
        let owner = owner.to_owned();
        self.write(|reply| Write::ForgetOutbox(owner, through, reply))
            .await
    }
}

/// A write request for the writer thread, with the channel its answer goes to.
enum Write {
    AddLog(TrustedLog, oneshot::Sender<Result<()>>),
    CompareAndSwap(
        Option<StoredTree>,
        LogState,
        oneshot::Sender<Result<CasOutcome>>,
    ),
    CompareAndSwapArchiving(
        Option<StoredTree>,
        LogState,
        String,
        oneshot::Sender<Result<CasOutcome>>,
    ),
    ResumeOutbox(
        String,
        Option<u64>,
        oneshot::Sender<Result<(u64, Option<u64>)>>,
    ),
    ForgetOutbox(String, u64, oneshot::Sender<Result<()>>),
    Evidence(MisbehaviourEvidence, oneshot::Sender<Result<()>>),
    Probe(oneshot::Sender<Result<()>>),
}

/// A request's outcome inside its batch, held until the batch commits.
enum Answer {
    Done(oneshot::Sender<Result<()>>, Result<()>),
    Cas(oneshot::Sender<Result<CasOutcome>>, Result<CasOutcome>),
    Resumed(
        oneshot::Sender<Result<(u64, Option<u64>)>>,
        Result<(u64, Option<u64>)>,
    ),
}

impl Write {
    /// Applies the request inside the batch's open transaction. A request that
    /// writes with one statement has it applied whole or not at all; one that
    /// writes with several runs in a savepoint, undone if any of them fails. So
    /// a request that fails leaves nothing behind for the batch to commit.
    fn apply(self, conn: &Connection) -> Answer {
        match self {
            Write::AddLog(log, reply) => Answer::Done(reply, add_log(conn, &log)),
            Write::CompareAndSwap(expected, new, reply) => {
                Answer::Cas(reply, compare_and_swap(conn, expected, &new))
            }
            Write::CompareAndSwapArchiving(expected, new, owner, reply) => Answer::Cas(
                reply,
                in_savepoint(conn, |conn| {
                    compare_and_swap_archiving(conn, expected, &new, &owner)
                }),
            ),
            Write::ResumeOutbox(owner, spooled_through, reply) => {
                Answer::Resumed(reply, resume_outbox(conn, &owner, spooled_through))
            }
            Write::ForgetOutbox(owner, through, reply) => {
                Answer::Done(reply, forget_outbox(conn, &owner, through))
            }
            Write::Evidence(evidence, reply) => {
                Answer::Done(reply, record_evidence(conn, &evidence))
            }
            Write::Probe(reply) => Answer::Done(reply, probe_write(conn)),
        }
    }

    /// Answers without applying: the batch failed before this request ran.
    fn fail(self, err: Error) {
        match self {
            Write::AddLog(_, reply)
            | Write::Evidence(_, reply)
            | Write::Probe(reply)
            | Write::ForgetOutbox(_, _, reply) => {
                let _ = reply.send(Err(err));
            }
            Write::CompareAndSwap(_, _, reply) | Write::CompareAndSwapArchiving(_, _, _, reply) => {
                let _ = reply.send(Err(err));
            }
            Write::ResumeOutbox(_, _, reply) => {
                let _ = reply.send(Err(err));
            }
        }
    }
}

impl Answer {
    /// Sends the outcome, or `failure` instead when the batch did not commit.
    /// A caller that stopped waiting has dropped its receiver; its write is
    /// committed all the same, which compare-and-swap makes harmless.
    fn send(self, failure: Option<&Error>) {
        match self {
            Answer::Done(reply, outcome) => {
                let _ = reply.send(failure.map_or(outcome, |e| Err(e.clone())));
            }
            Answer::Cas(reply, outcome) => {
                let _ = reply.send(failure.map_or(outcome, |e| Err(e.clone())));
            }
            Answer::Resumed(reply, outcome) => {
                let _ = reply.send(failure.map_or(outcome, |e| Err(e.clone())));
            }
        }
    }
}

/// The writer thread: one batch per iteration until the store is dropped.
fn write_loop(mut conn: Connection, queue: mpsc::Receiver<Write>) {
    while let Ok(first) = queue.recv() {
        let mut batch = Vec::with_capacity(MAX_BATCH.min(64));
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        run_batch(&mut conn, batch);
    }
}

/// Applies a batch in one transaction and answers every request once it is
/// committed. A request's own failure (an untrusted origin, a key change, a
/// constraint) is that request's answer only; a failure of the transaction
/// itself (`BEGIN`, `COMMIT`, or an error after which SQLite rolled the whole
/// transaction back) is every request's answer, since none of them is durable.
fn run_batch(conn: &mut Connection, batch: Vec<Write>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let err = storage("starting a transaction", e);
        for write in batch {
            write.fail(err.clone());
        }
        return;
    }
    let mut answers = Vec::with_capacity(batch.len());
    let mut failure = None;
    let mut writes = batch.into_iter();
    for write in writes.by_ref() {
        answers.push(write.apply(conn));
        if conn.is_autocommit() {
            // SQLite ends the transaction itself on some errors (I/O, disk full,
            // `RAISE(ROLLBACK)`): everything applied so far is gone.
            failure = Some(storage("writing", "the transaction was rolled back"));
            break;
        }
    }
    if failure.is_none()
        && let Err(e) = conn.execute_batch("COMMIT")
    {
        failure = Some(storage("committing", e));
    }
    if failure.is_some() && !conn.is_autocommit() {
        // Nothing more can be reported: the batch has already failed, and the next
        // batch's BEGIN reports a connection that cannot recover.
        let _ = conn.execute_batch("ROLLBACK");
    }
    for answer in answers {
        answer.send(failure.as_ref());
    }
    if let Some(err) = failure {
        for write in writes {
            write.fail(err.clone());
        }
    }
}

fn add_log(conn: &Connection, log: &TrustedLog) -> Result<()> {
    let keys = serde_json::to_string(&log.verifier_keys).map_err(|e| storage("adding a log", e))?;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO logs (origin, verifier_keys) VALUES (?1, ?2)
             ON CONFLICT (origin) DO NOTHING",
        )
        .and_then(|mut stmt| stmt.execute(params![log.origin, keys]))
        .map_err(|e| storage("adding a log", e))?;
    if inserted == 1 {
        return Ok(());
    }
    let stored: String = conn
        .prepare_cached("SELECT verifier_keys FROM logs WHERE origin = ?1")
        .and_then(|mut stmt| stmt.query_row([&log.origin], |row| row.get(0)))
        .map_err(|e| storage("adding a log", e))?;
    if keys_from_json(&stored)? == log.verifier_keys {
        Ok(())
    } else {
        Err(Error::LogKeyChange {
            origin: log.origin.clone(),
        })
    }
}

fn compare_and_swap(
    conn: &Connection,
    expected: Option<StoredTree>,
    new: &LogState,
) -> Result<CasOutcome> {
    let size = to_sql_int(new.tree.size)?;
    let cosigned_at = to_sql_int(new.cosigned_at)?;
    let trusted = conn
        .prepare_cached("SELECT 1 FROM logs WHERE origin = ?1")
        .and_then(|mut stmt| stmt.exists([&new.origin]))
        .map_err(|e| storage("checking the origin", e))?;
    if !trusted {
        return Err(Error::UnknownOrigin {
            origin: new.origin.clone(),
        });
    }
    let root = &new.tree.root.0[..];
    let swapped = match expected {
        Some(old) => {
            let old_size = to_sql_int(old.size)?;
            conn.prepare_cached(
                "UPDATE state SET size = ?1, root = ?2, note = ?3, cosigned_at = ?4
                 WHERE origin = ?5 AND size = ?6 AND root = ?7",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    size,
                    root,
                    new.note,
                    cosigned_at,
                    new.origin,
                    old_size,
                    &old.root.0[..],
                ])
            })
        }
        // `DO NOTHING` turns a state that appeared since the caller read it into
        // a conflict rather than an overwrite.
        None => conn
            .prepare_cached(
                "INSERT INTO state (origin, size, root, note, cosigned_at)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (origin) DO NOTHING",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![new.origin, size, root, new.note, cosigned_at])
            }),
    }
    .map_err(|e| storage("compare-and-swap", e))?;
    if swapped == 1 {
        return Ok(CasOutcome::Swapped);
    }
    let current = conn
        .prepare_cached("SELECT size, root FROM state WHERE origin = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([&new.origin], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
            })
            .optional()
        })
        .map_err(|e| storage("compare-and-swap", e))?;
    let current = current
        .map(|(size, root)| {
            Ok::<_, Error>(StoredTree {
                size: from_sql_int(size)?,
                root: root_from_sql(&root)?,
            })
        })
        .transpose()?;
    Ok(CasOutcome::Conflict { current })
}

/// Runs a request of several statements in a savepoint of the batch's
/// transaction: on failure, what it wrote is undone and the rest of the batch
/// is kept.
fn in_savepoint<T>(conn: &Connection, request: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    conn.prepare_cached("SAVEPOINT request")
        .and_then(|mut stmt| stmt.execute([]))
        .map_err(|e| storage("starting a savepoint", e))?;
    let outcome = request(conn);
    if conn.is_autocommit() {
        // SQLite rolled the whole transaction back: the batch reports it.
        return outcome;
    }
    let end = |sql: &str| {
        conn.prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute([]))
            .map(|_| ())
    };
    let ended = match &outcome {
        Ok(_) => end("RELEASE request"),
        Err(_) => end("ROLLBACK TO request").and_then(|()| end("RELEASE request")),
    };
    match ended {
        Ok(()) => outcome,
        // A savepoint that cannot be ended leaves the batch in doubt: fail it all.
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(storage("ending a savepoint", e))
        }
    }
}

/// The compare-and-swap, and the checkpoint kept in the archive outbox
/// whatever its outcome (one savepoint: both or neither).
fn compare_and_swap_archiving(
    conn: &Connection,
    expected: Option<StoredTree>,
    new: &LogState,
    owner: &str,
) -> Result<CasOutcome> {
    let outcome = compare_and_swap(conn, expected, new)?;
    let cosigned_at = to_sql_int(new.cosigned_at)?;
    conn.prepare_cached(
        "INSERT INTO archive_outbox (owner, origin, cosigned_at, note) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut stmt| stmt.execute(params![owner, new.origin, cosigned_at, new.note]))
    .map_err(|e| storage("writing the archive outbox", e))?;
    Ok(outcome)
}

/// See [`ArchiveOutbox::resume_outbox`].
fn resume_outbox(
    conn: &Connection,
    owner: &str,
    spooled_through: Option<u64>,
) -> Result<(u64, Option<u64>)> {
    let fail = |e| storage("resuming the archive outbox", e);
    if let Some(through) = spooled_through {
        forget_outbox(conn, owner, through)?;
        // Numbers from now on follow the spool's, even in a state file newer
        // than the spool (a fresh or restored file), or the mover, which
        // reads on from `through`, would never see them. SQLite lets a
        // program raise `sqlite_sequence`.
        let through = to_sql_int(through)?;
        let raised = conn
            .prepare_cached(
                "UPDATE sqlite_sequence SET seq = max(seq, ?1) WHERE name = 'archive_outbox'",
            )
            .and_then(|mut stmt| stmt.execute([through]))
            .map_err(fail)?;
        if raised == 0 {
            conn.prepare_cached(
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('archive_outbox', ?1)",
            )
            .and_then(|mut stmt| stmt.execute([through]))
            .map_err(fail)?;
        }
    }
    let (waiting, oldest) = conn
        .prepare_cached("SELECT count(*), min(cosigned_at) FROM archive_outbox WHERE owner = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([owner], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, Option<i64>>(1)?))
            })
        })
        .map_err(fail)?;
    Ok((
        from_sql_int(waiting)?,
        oldest.map(from_sql_int).transpose()?,
    ))
}

fn forget_outbox(conn: &Connection, owner: &str, through: u64) -> Result<()> {
    let through = i64::try_from(through).unwrap_or(i64::MAX);
    conn.prepare_cached("DELETE FROM archive_outbox WHERE owner = ?1 AND sequence <= ?2")
        .and_then(|mut stmt| stmt.execute(params![owner, through]))
        .map_err(|e| storage("forgetting moved archive outbox rows", e))?;
    Ok(())
}

fn record_evidence(conn: &Connection, evidence: &MisbehaviourEvidence) -> Result<()> {
    let received_at = to_sql_int(evidence.received_at)?;
    let (size, root) = match &evidence.cosigned {
        Some(tree) => (Some(to_sql_int(tree.size)?), Some(&tree.root.0[..])),
        None => (None, None),
    };
    let trusted = conn
        .prepare_cached("SELECT 1 FROM logs WHERE origin = ?1")
        .and_then(|mut stmt| stmt.exists([&evidence.origin]))
        .map_err(|e| storage("checking the origin", e))?;
    if !trusted {
        return Err(Error::UnknownOrigin {
            origin: evidence.origin.clone(),
        });
    }
    conn.prepare_cached(
        "INSERT INTO evidence (origin, note, cosigned_size, cosigned_root, reason, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            evidence.origin,
            evidence.note,
            size,
            root,
            evidence.reason,
            received_at,
        ])
    })
    .map_err(|e| storage("recording evidence", e))?;
    Ok(())
}

fn probe_write(conn: &Connection) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO probe (id, writes) VALUES (1, 1)
         ON CONFLICT (id) DO UPDATE SET writes = writes + 1",
    )
    .and_then(|mut stmt| stmt.execute([]))
    .map_err(|e| storage("write probe", e))?;
    Ok(())
}

fn keys_from_json(text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|e| storage("reading verifier keys", e))
}

/// Opens a connection with the settings every connection needs.
fn open_connection(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(|e| storage("opening the database", e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| storage("configuring the database", e))?;
    Ok(conn)
}

/// Creates the schema if missing, under the write lock so that stores opening
/// the same new file at once do not race, and refuses a file written by a newer
/// schema.
fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| storage("creating the schema", e))?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| storage("creating the schema", e))?;
    if version > SCHEMA_VERSION {
        return Err(storage(
            "opening the database",
            format!("schema version {version} is newer than this witness ({SCHEMA_VERSION})"),
        ));
    }
    tx.execute_batch(SCHEMA)
        .and_then(|()| tx.pragma_update(None, "user_version", SCHEMA_VERSION))
        .and_then(|()| tx.commit())
        .map_err(|e| storage("creating the schema", e))
}

/// Read connections, reused across reads.
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    /// Runs `read` on an idle connection, or a new one if none is idle. Each
    /// statement reads the latest committed state: WAL readers never wait for the
    /// writer.
    fn with<T>(&self, read: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        // A std mutex: it is held only to pop or push a connection, never across
        // a query or an await.
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let conn = open_connection(&self.path)?;
                conn.execute_batch(&format!(
                    "PRAGMA query_only = ON; PRAGMA cache_size = -{READER_CACHE_KIB};"
                ))
                .map_err(|e| storage("configuring the database", e))?;
                conn
            }
        };
        let result = read(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_READERS {
            idle.push(conn);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn read_connections_are_query_only_with_a_small_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        let (cache, query_only) = store
            .read(|conn| {
                let pragma = |name: &str| {
                    conn.query_row(&format!("PRAGMA {name}"), [], |row| row.get::<_, i64>(0))
                        .map_err(|e| storage("reading", e))
                };
                Ok((pragma("cache_size")?, pragma("query_only")?))
            })
            .await
            .unwrap();
        assert_eq!(cache, -i64::from(READER_CACHE_KIB));
        assert_eq!(query_only, 1);
    }

    /// A file written by the previous schema (no archive outbox) gains the
    /// outbox when opened; a file from a newer witness is refused.
    #[tokio::test]
    async fn a_version_1_file_gains_the_outbox_and_a_newer_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        drop(SqliteStore::open(&path).unwrap());
        let raw = Connection::open(&path).unwrap();
        raw.execute_batch("DROP TABLE archive_outbox; PRAGMA user_version = 1;")
            .unwrap();
        drop(raw);
        let store = SqliteStore::open(&path).unwrap();
        assert!(
            store
                .outbox_waiting("owner", 0, 1)
                .await
                .unwrap()
                .is_empty()
        );
        let version = store
            .read(|conn| {
                conn.query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0))
                    .map_err(|e| storage("reading", e))
            })
            .await
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        drop(store);

        let raw = Connection::open(&path).unwrap();
        raw.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(raw);
        let error = SqliteStore::open(&path).unwrap_err();
        assert!(
            error.to_string().contains("is newer than this witness"),
            "{error}"
        );
    }

    /// The swap and its archive row commit together or not at all: a swap
    /// whose row cannot be written would reveal a cosignature the archive
    /// never gets.
    #[tokio::test]
    async fn a_swap_whose_archive_row_cannot_be_written_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        let origin = "example.org/log";
        store
            .add_log(&TrustedLog {
                origin: origin.to_owned(),
                verifier_keys: vec!["w+00000001+AAAA".to_owned()],
            })
            .await
            .unwrap();
        let state = |size: u64| LogState {
            origin: origin.to_owned(),
            tree: StoredTree {
                size,
                root: crate::merkle::Hash([size as u8; 32]),
            },
            note: format!("note {size}").into_bytes(),
            cosigned_at: 1_767_225_600 + size,
        };
        let owner = "0123456789abcdef0123456789abcdef";
        let rows = || store.outbox_waiting(owner, 0, 10);

        // The CHECK on the owner refuses the row after the swap was applied.
        let error = store
            .compare_and_swap_archiving(None, &state(5), "")
            .await
            .unwrap_err();
        assert_eq!(error.kind(), "storage", "{error}");
        assert_eq!(store.state(origin).await.unwrap(), None);

        let swapped = store
            .compare_and_swap_archiving(None, &state(5), owner)
            .await
            .unwrap();
        assert_eq!(swapped, CasOutcome::Swapped);
        assert_eq!(store.state(origin).await.unwrap(), Some(state(5)));
        let written = rows().await.unwrap();
        assert_eq!(written.len(), 1);
        assert_eq!(
            (written[0].note.as_slice(), written[0].cosigned_at),
            (&b"note 5"[..], 1_767_225_605)
        );

        // Losing the race: archived, never revealed.
        let lost = store
            .compare_and_swap_archiving(None, &state(6), owner)
            .await
            .unwrap();
        assert!(matches!(lost, CasOutcome::Conflict { current: Some(t) } if t.size == 5));
        assert_eq!(store.state(origin).await.unwrap(), Some(state(5)));
        assert_eq!(rows().await.unwrap().len(), 2);

        // An untrusted origin writes neither.
        let stranger = LogState {
            origin: "stranger.example/log".to_owned(),
            ..state(7)
        };
        let error = store
            .compare_and_swap_archiving(None, &stranger, owner)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), "unknown_origin", "{error}");
        assert_eq!(rows().await.unwrap().len(), 2);

        store
            .forget_outbox(owner, written[0].sequence)
            .await
            .unwrap();
        let left = rows().await.unwrap();
        assert_eq!(left.len(), 1);
        assert!(left[0].sequence > written[0].sequence);
        assert_eq!(left[0].note, b"note 6");
    }
}
