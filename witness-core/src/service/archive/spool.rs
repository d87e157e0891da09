//! The durable spool: the local directory holding whatever the archive accepted
//! but has not finished, so that neither a restart nor an object store outage
//! loses a checkpoint or a manifest entry. Blocking file I/O: the archive calls
//! it through `spawn_blocking`.
//!
//! - `queue/segment-<first>.jsonl`: submitted checkpoints, one JSON object a
//!   line (sequence number, origin, cosignature time, note in base64), from
//!   sequence number `first` on. The spooler appends each batch (every
//!   checkpoint submitted while the previous batch was being written) with one
//!   write and one `fdatasync`: a group commit that creates no file. A segment
//!   is closed once it holds [`SEGMENT_BYTES`] or is [`SEGMENT_AGE`] old (at
//!   its next append), when a period is sealed, and at shutdown; a new one
//!   starts at the next batch.
//!   The uploader reads the open segment only up to its last durable append,
//!   and removes a closed segment once every checkpoint in it is written and
//!   listed in the period journal. After a crash, a last append torn by it is
//!   cut off (it was never acknowledged) and kept in `conflicts/`.
//!   (`queue/<first>-<last>.jsonl` and `queue/<sequence>.json`, a batch or one
//!   checkpoint a file as earlier versions wrote them, are read too.)
//! - `periods/open-<start>.jsonl`: the journal of the objects written in the
//!   current period, one `{"name","sha256"}` line each, appended and fsynced a
//!   batch of lines at a time.
//! - `periods/sealed-<start>-<end>.jsonl`: a closed period whose manifest is not
//!   written yet. Removed once it is.
//! - `outbox-owner`: this spool's name (32 random hex digits, made at first
//!   use) as the owner of its rows in a SQLite state's archive outbox, which
//!   several witnesses may share. A segment line moved from the outbox keeps
//!   its row's number (`outbox`).
//! - `lock`: held with an exclusive `fcntl` lock for as long as a witness has
//!   the spool open, so that a second witness pointed at the same directory
//!   (two replicas on one volume) refuses to start instead of appending to the
//!   same segments and removing what the other has not uploaded.
//! - `conflicts/`: checkpoints (`<sequence>.json`) refused because a different
//!   object already holds their name, unreadable queue files, torn segment
//!   tails, and sealed journals whose manifest name is taken, kept for the
//!   operator.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead as _, BufReader, ErrorKind, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::service::archive::layout::ArchivedCheckpoint;
use crate::service::archive::manifest::ManifestSubject;
use crate::service::store::OutboxEntry;
use crate::{Error, Result};

fn io_error(what: &str, path: &Path, error: std::io::Error) -> Error {
    Error::Archive {
        detail: format!("spool: {what} {}: {error}", path.display()),
    }
}

/// Makes a directory's entries (a new or renamed file) durable.
fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("fsync", dir, e))
}

/// A queue segment is closed at its next append once it holds this many bytes
/// (about 2,000 checkpoints), so a segment is created and removed about once a
/// second at 2,000 cosignatures a second, instead of a file per batch.
pub(crate) const SEGMENT_BYTES: u64 = 1 << 20;

/// A queue segment is also closed at its next append once it is this old, so
/// that a quiet witness does not keep archived checkpoints in its spool (to be
/// read again after a crash) for long.
pub(crate) const SEGMENT_AGE: Duration = Duration::from_secs(60);

/// One queued checkpoint: a line of a segment (with its sequence number), of
/// an earlier version's batch file (without: the file name gives it), or a
/// checkpoint set aside in `conflicts/`.
#[derive(Serialize, Deserialize)]
struct QueueFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sequence: Option<u64>,
    /// The number of the state store's outbox row it was moved from, if it
    /// came that way: the last such number in the spool says which rows a
    /// crash left in the outbox after they were moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outbox: Option<u64>,
    origin: String,
    cosigned_at: u64,
    /// The note, base64: notes are UTF-8 text, but the bytes must come back
    /// exactly as submitted.
    note: String,
}

impl QueueFile {
    /// The checkpoint this line holds.
    fn checkpoint(&self) -> Result<ArchivedCheckpoint> {
        let note = BASE64.decode(&self.note).map_err(|_| Error::Archive {
            detail: "spool: queue file: note is not base64".to_owned(),
        })?;
        ArchivedCheckpoint::new(&self.origin, self.cosigned_at, &note)
    }
}

#[derive(Serialize, Deserialize)]
struct JournalLine {
    name: String,
    sha256: String,
}

/// A checkpoint read back from the queue.
pub(crate) struct Queued {
    /// The name in `queue/` of the file holding it.
    pub file: String,
    /// Its submission sequence number.
    pub sequence: u64,
    pub checkpoint: ArchivedCheckpoint,
}

/// How far the uploader has read the queue: every file starting below
/// sequence number `first` is read to its end, and the segment starting at
/// `first`, if there is one, up to byte `offset`. The default reads the whole
/// queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct QueueCursor {
    first: u64,
    offset: u64,
}

/// What [`Spool::queued`] found.
pub(crate) struct QueueScan {
    /// Checkpoints in submission order.
    pub queued: Vec<Queued>,
    /// Closed queue files now read to their end: each can be removed once
    /// every checkpoint read from it is finished.
    pub exhausted: Vec<String>,
    /// Where the next scan goes on.
    pub cursor: QueueCursor,
    /// Whether more are waiting beyond the limit.
    pub more: bool,
    /// Unreadable queue files and torn segment tails moved or copied to `conflicts/`.
    pub set_aside: usize,
}

/// A period journal read back at start.
pub(crate) struct SpooledPeriod {
    pub start: u64,
    /// `None` while the period is open.
    pub end: Option<u64>,
    pub subjects: Vec<ManifestSubject>,
}

/// The spool directory.
pub(crate) struct Spool {
    queue: PathBuf,
    periods: PathBuf,
    conflicts: PathBuf,
    /// The segment batches are appended to; only the spooler writes, a batch at
    /// a time.
    writer: Mutex<Option<SegmentWriter>>,
    /// The open segment's first sequence number and durable length, updated
    /// after each append: the uploader reads no further.
    open_segment: Mutex<Option<(u64, u64)>>,
    /// The open `lock` file: the lock lasts as long as it stays open (the
    /// kernel drops it when the process ends, however it ends).
    _lock: File,
}

/// The spool's lock file, directly under its root.
const LOCK_FILE: &str = "lock";

/// The file naming this spool as an outbox owner, directly under its root.
const OUTBOX_OWNER_FILE: &str = "outbox-owner";

/// Takes the spool's lock, or says which directory another process holds.
/// A POSIX record lock (`fcntl`, which the seccomp profile already allows
/// for SQLite): it keeps out other processes, not another open in this one.
fn lock_spool(root: &Path) -> Result<File> {
    fs::create_dir_all(root).map_err(|e| io_error("create", root, e))?;
    let path = root.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io_error("open", &path, e))?;
    match rustix::fs::fcntl_lock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(errno) if errno == rustix::io::Errno::AGAIN || errno == rustix::io::Errno::ACCESS => {
            Err(Error::Archive {
                detail: format!(
                    "spool: {} is in use by another process (it holds {}): two witnesses \
                     must not share a spool directory",
                    root.display(),
                    path.display()
                ),
            })
        }
        Err(errno) => Err(io_error("lock", &path, errno.into())),
    }
}

/// The open queue segment.
struct SegmentWriter {
    first: u64,
    path: PathBuf,
    file: File,
    /// Bytes made durable; everything after is cut off if an append fails.
    durable: u64,
    opened: Instant,
}

/// A queue file name: a segment, or an earlier version's batch file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QueueName {
    Segment { first: u64 },
    Batch { first: u64, last: u64 },
}

impl QueueName {
    fn parse(name: &str) -> Option<QueueName> {
        if let Some(first) = name
            .strip_prefix("segment-")
            .and_then(|rest| rest.strip_suffix(".jsonl"))
        {
            return Some(QueueName::Segment {
                first: first.parse().ok()?,
            });
        }
        let (first, last) = queue_sequences(name)?;
        Some(QueueName::Batch { first, last })
    }

    fn first(self) -> u64 {
        match self {
            QueueName::Segment { first } | QueueName::Batch { first, .. } => first,
        }
    }
}

fn segment_name(first: u64) -> String {
    format!("segment-{first:020}.jsonl")
}

/// What [`read_segment`] read.
struct SegmentRead {
    checkpoints: Vec<(u64, ArchivedCheckpoint)>,
    /// The offset after the last line read.
    offset: u64,
    /// Whether the end (the given one, or the file's) was reached.
    at_end: bool,
    /// What follows the last readable line, when something does: a last
    /// append torn by a crash.
    torn: Vec<u8>,
}

/// Reads complete lines of a segment from byte `start`, up to `end` (the
/// file's end if `None`), stopping once `limit` checkpoints are read. The first
/// line that is not a complete, well-formed checkpoint following the one before
/// it ends the segment: it and whatever follows are returned as `torn`. A
/// segment removed since it was listed reads as empty.
fn read_segment(path: &Path, start: u64, end: Option<u64>, limit: usize) -> Result<SegmentRead> {
    let mut read = SegmentRead {
        checkpoints: Vec::new(),
        offset: start,
        at_end: true,
        torn: Vec::new(),
    };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(read),
        Err(e) => return Err(io_error("open", path, e)),
    };
    file.seek(SeekFrom::Start(start))
        .map_err(|e| io_error("seek", path, e))?;
    let mut reader =
        BufReader::new(file.take(end.map_or(u64::MAX, |end| end.saturating_sub(start))));
    let mut line = Vec::new();
    let mut previous = None;
    loop {
        if read.checkpoints.len() >= limit {
            read.at_end = false;
            return Ok(read);
        }
        line.clear();
        let length = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| io_error("read", path, e))?;
        if length == 0 {
            return Ok(read);
        }
        match line
            .strip_suffix(b"\n")
            .and_then(|line| parse_segment_line(line, previous))
        {
            Some((sequence, checkpoint)) => {
                read.checkpoints.push((sequence, checkpoint));
                previous = Some(sequence);
                read.offset += length as u64;
            }
            None => {
                read.torn = std::mem::take(&mut line);
                reader
                    .read_to_end(&mut read.torn)
                    .map_err(|e| io_error("read", path, e))?;
                return Ok(read);
            }
        }
    }
}

/// A segment line, if it is well formed and numbered after `previous`.
fn parse_segment_line(line: &[u8], previous: Option<u64>) -> Option<(u64, ArchivedCheckpoint)> {
    let file: QueueFile = serde_json::from_slice(line).ok()?;
    let sequence = file.sequence?;
    if previous.is_some_and(|previous| sequence <= previous) {
        return None;
    }
    Some((sequence, file.checkpoint().ok()?))
}

/// The sequence numbers a queue (or set-aside) file holds: `<n>.json` holds
/// `n`, `<first>-<last>.jsonl` holds `first..=last`.
fn queue_sequences(name: &str) -> Option<(u64, u64)> {
    if let Some(stem) = name.strip_suffix(".jsonl") {
        let (first, last) = stem.split_once('-')?;
        let (first, last) = (first.parse().ok()?, last.parse().ok()?);
        return (first <= last).then_some((first, last));
    }
    let sequence = name.strip_suffix(".json")?.parse().ok()?;
    Some((sequence, sequence))
}

/// Writes `body` to `dir/name` durably: temporary file, fsync, rename, directory fsync.
fn write_durably(dir: &Path, name: &str, body: &[u8]) -> Result<()> {
    let path = dir.join(name);
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&temporary).map_err(|e| io_error("create", &temporary, e))?;
    file.write_all(body)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("write", &temporary, e))?;
    fs::rename(&temporary, &path).map_err(|e| io_error("rename", &temporary, e))?;
    fsync_dir(dir)
}

fn queue_line(sequence: Option<u64>, checkpoint: &ArchivedCheckpoint) -> Result<Vec<u8>> {
    outbox_queue_line(sequence, None, checkpoint)
}

fn outbox_queue_line(
    sequence: Option<u64>,
    outbox: Option<u64>,
    checkpoint: &ArchivedCheckpoint,
) -> Result<Vec<u8>> {
    serde_json::to_vec(&QueueFile {
        sequence,
        outbox,
        origin: checkpoint.origin().to_owned(),
        cosigned_at: checkpoint.cosigned_at(),
        note: BASE64.encode(checkpoint.note()),
    })
    .map_err(|e| Error::Archive {
        detail: format!("spool: encoding: {e}"),
    })
}

impl Spool {
    /// Runs `operation` on the blocking pool, off the async workers.
    pub async fn call<T: Send + 'static>(
        self: &Arc<Spool>,
        operation: impl FnOnce(&Spool) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let spool = self.clone();
        tokio::task::spawn_blocking(move || operation(&spool))
            .await
            .map_err(|e| Error::Archive {
                detail: format!("spool task: {e}"),
            })?
    }

    /// Opens (creating) the spool under `root`, removes temporary files of
    /// writes a crash interrupted, and returns the next queue sequence number:
    /// one past every number a queue or set-aside file holds or names. Batches
    /// go to a new segment; the segments found are only read.
    pub fn open(root: &Path) -> Result<(Spool, u64)> {
        // Before anything is read or removed: a temporary file another
        // process is writing is not a crash's leftover.
        let lock = lock_spool(root)?;
        let spool = Spool {
            queue: root.join("queue"),
            periods: root.join("periods"),
            conflicts: root.join("conflicts"),
            writer: Mutex::new(None),
            open_segment: Mutex::new(None),
            _lock: lock,
        };
        let mut next = 0;
        let mut newest_segment = None;
        for dir in [&spool.queue, &spool.periods, &spool.conflicts] {
            fs::create_dir_all(dir).map_err(|e| io_error("create", dir, e))?;
            for name in list(dir)? {
                if name.ends_with(".tmp") {
                    let path = dir.join(&name);
                    fs::remove_file(&path).map_err(|e| io_error("remove", &path, e))?;
                    continue;
                }
                match QueueName::parse(&name) {
                    // Set-aside files keep their names: never reuse one.
                    Some(QueueName::Batch { last, .. }) => {
                        next = next.max(last.saturating_add(1));
                    }
                    Some(QueueName::Segment { first }) => {
                        next = next.max(first.saturating_add(1));
                        if newest_segment.is_none_or(|newest| first > newest) {
                            newest_segment = Some(first);
                        }
                    }
                    None => {}
                }
            }
        }
        if let Some(first) = newest_segment {
            let path = spool.queue.join(segment_name(first));
            let read = read_segment(&path, 0, None, usize::MAX)?;
            if let Some((last, _)) = read.checkpoints.last() {
                next = next.max(last.saturating_add(1));
            }
        }
        fsync_dir(root)?;
        Ok((spool, next))
    }

    fn publish_open_segment(&self, open: Option<(u64, u64)>) {
        *self
            .open_segment
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = open;
    }

    /// Starts the segment for sequence numbers from `first` on. It is published
    /// as open (and empty) before it exists, so the uploader never reads it as
    /// closed.
    fn start_segment(&self, first: u64) -> Result<SegmentWriter> {
        self.publish_open_segment(Some((first, 0)));
        let path = self.queue.join(segment_name(first));
        let started = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_error("create", &path, e))
            .and_then(|file| fsync_dir(&self.queue).map(|()| file));
        match started {
            Ok(file) => Ok(SegmentWriter {
                first,
                path,
                file,
                durable: 0,
                opened: Instant::now(),
            }),
            Err(error) => {
                // A file left behind is an empty closed segment, removed once read.
                self.publish_open_segment(None);
                Err(error)
            }
        }
    }

    /// Durably queues `checkpoints` (at least one) under the sequence numbers
    /// from `first` on (above every number queued before): one append to the
    /// open segment and one `fdatasync`, starting a new segment first if the
    /// open one is full or old. An append that fails is cut off and closes the
    /// segment.
    pub fn enqueue_batch(&self, first: u64, checkpoints: &[ArchivedCheckpoint]) -> Result<()> {
        self.append_batch(
            first,
            checkpoints.iter().map(|checkpoint| (None, checkpoint)),
        )
    }

    /// As [`Spool::enqueue_batch`], for checkpoints moved from the state
    /// store's outbox: each line also keeps its outbox row's number (see
    /// [`Spool::outbox_spooled_through`]).
    pub fn enqueue_from_outbox(
        &self,
        first: u64,
        checkpoints: &[(u64, ArchivedCheckpoint)],
    ) -> Result<()> {
        self.append_batch(
            first,
            checkpoints
                .iter()
                .map(|(outbox, checkpoint)| (Some(*outbox), checkpoint)),
        )
    }

    fn append_batch<'a>(
        &self,
        first: u64,
        checkpoints: impl ExactSizeIterator<Item = (Option<u64>, &'a ArchivedCheckpoint)>,
    ) -> Result<()> {
        if checkpoints.len() == 0 || first.checked_add(checkpoints.len() as u64).is_none() {
            return Err(Error::Archive {
                detail: "spool: empty batch or sequence overflow".to_owned(),
            });
        }
        let mut body = Vec::with_capacity(checkpoints.len() * 512);
        for (sequence, (outbox, checkpoint)) in (first..).zip(checkpoints) {
            body.extend_from_slice(&outbox_queue_line(Some(sequence), outbox, checkpoint)?);
            body.push(b'\n');
        }
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if writer.as_ref().is_some_and(|open| {
            open.durable >= SEGMENT_BYTES || open.opened.elapsed() >= SEGMENT_AGE
        }) {
            *writer = None;
            self.publish_open_segment(None);
        }
        let segment = match &mut *writer {
            Some(segment) => segment,
            None => writer.insert(self.start_segment(first)?),
        };
        match segment
            .file
            .write_all(&body)
            .and_then(|()| segment.file.sync_data())
        {
            Ok(()) => {
                segment.durable += body.len() as u64;
                self.publish_open_segment(Some((segment.first, segment.durable)));
                Ok(())
            }
            Err(error) => {
                let error = io_error("append to", &segment.path, error);
                // None of this batch may be read back as queued: its
                // submitters are refused. If the cut fails too, the closed
                // segment is read to its end and the batch archived anyway,
                // which is harmless: the signer's fork guard already accepted
                // those checkpoints, so they are consistent with everything
                // the witness cosigned.
                let _ = segment
                    .file
                    .set_len(segment.durable)
                    .and_then(|()| segment.file.sync_data());
                *writer = None;
                self.publish_open_segment(None);
                Err(error)
            }
        }
    }

    /// The outbox row number of the last checkpoint the spool holds durably, if
    /// that checkpoint came from the outbox: every row up to it was moved
    /// (rows are moved in order). Reads the newest segment holding a complete
    /// line; a segment removed since it was listed is skipped. Called at start,
    /// before anything is appended or removed.
    pub fn outbox_spooled_through(&self) -> Result<Option<u64>> {
        let mut segments: Vec<u64> = list(&self.queue)?
            .iter()
            .filter_map(|name| match QueueName::parse(name)? {
                QueueName::Segment { first } => Some(first),
                QueueName::Batch { .. } => None,
            })
            .collect();
        segments.sort_unstable();
        for first in segments.into_iter().rev() {
            let path = self.queue.join(segment_name(first));
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error("read", &path, e)),
            };
            // Complete lines only: a torn last append was never acknowledged.
            let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let last = bytes[..complete]
                .split(|&b| b == b'\n')
                .rev()
                .find_map(|line| serde_json::from_slice::<QueueFile>(line).ok());
            if let Some(line) = last {
                return Ok(line.outbox);
            }
        }
        Ok(None)
    }

    /// Keeps an outbox row that is not an archivable checkpoint (only a
    /// damaged or edited database holds one) in
    /// `conflicts/outbox-<number>.json`, for the operator.
    pub fn set_aside_outbox_row(&self, row: &OutboxEntry, error: &Error) -> Result<()> {
        tracing::error!(
            outbox = row.sequence,
            origin = %row.origin,
            %error,
            "an archive outbox row is not an archivable checkpoint: kept in conflicts/"
        );
        let body = serde_json::to_vec(&QueueFile {
            sequence: None,
            outbox: Some(row.sequence),
            origin: row.origin.clone(),
            cosigned_at: row.cosigned_at,
            note: BASE64.encode(&row.note),
        })
        .map_err(|e| Error::Archive {
            detail: format!("spool: encoding: {e}"),
        })?;
        write_durably(
            &self.conflicts,
            &format!("outbox-{:020}.json", row.sequence),
            &body,
        )
    }

    /// This spool's name as the owner of outbox rows in a state store that
    /// several witnesses may share: 32 random hex digits, made at first use
    /// and kept in `outbox-owner` under the spool's root.
    pub fn outbox_owner(&self) -> Result<String> {
        let root = self.queue.parent().unwrap_or(Path::new("."));
        let path = root.join(OUTBOX_OWNER_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => {
                let owner = text.trim();
                if owner.len() == 32 && owner.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Ok(owner.to_owned());
                }
                return Err(Error::Archive {
                    detail: format!(
                        "spool: {} does not hold an owner name (32 hex digits)",
                        path.display()
                    ),
                });
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("read", &path, e)),
        }
        let mut bytes = [0u8; 16];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| Error::Archive {
            detail: "spool: the system random generator failed".to_owned(),
        })?;
        let owner: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        write_durably(root, OUTBOX_OWNER_FILE, owner.as_bytes())?;
        Ok(owner)
    }

    /// Closes the open segment, if any (waiting for an append under way): the
    /// next batch starts a new one, and this one can be removed once its
    /// checkpoints are archived. Called when a period is sealed and when the
    /// spooler has stopped.
    pub fn close_segment(&self) {
        *self.writer.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.publish_open_segment(None);
    }

    /// The queued checkpoints after `cursor`, oldest first, until at least
    /// `limit` are read (an earlier version's batch file is read whole).
    /// Unreadable batch files are moved to `conflicts/`, torn segment tails
    /// copied there, and both counted.
    pub fn queued(&self, limit: usize, cursor: QueueCursor) -> Result<QueueScan> {
        let mut names: Vec<(QueueName, String)> = list(&self.queue)?
            .into_iter()
            .filter_map(|name| Some((QueueName::parse(&name)?, name)))
            .filter(|(parsed, _)| parsed.first() >= cursor.first)
            .collect();
        // Listed before the open segment is looked up: a segment created since
        // is not listed, and one listed is either the open one or closed.
        let open = *self
            .open_segment
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // After a long outage the queue may hold many files and is read about
        // `limit` checkpoints at a time (each file holds at least one, but for
        // an empty segment): pick the oldest in linear time, sort only those.
        let limit = limit.max(1);
        let truncated = names.len() > limit;
        if truncated {
            names.select_nth_unstable_by_key(limit, |(parsed, _)| parsed.first());
            names.truncate(limit);
        }
        names.sort_unstable_by_key(|(parsed, _)| parsed.first());
        let mut scan = QueueScan {
            queued: Vec::new(),
            exhausted: Vec::new(),
            cursor,
            more: truncated,
            set_aside: 0,
        };
        for (parsed, file) in names {
            if scan.queued.len() >= limit {
                scan.more = true;
                break;
            }
            match parsed {
                QueueName::Batch { last, .. } => {
                    scan.cursor = QueueCursor {
                        first: last.saturating_add(1),
                        offset: 0,
                    };
                    self.read_batch_file(&file, &mut scan)?;
                }
                QueueName::Segment { first } => {
                    let start = if first == cursor.first {
                        cursor.offset
                    } else {
                        0
                    };
                    let end = open
                        .filter(|(open_first, _)| *open_first == first)
                        .map(|(_, durable)| durable);
                    let path = self.queue.join(&file);
                    let read = read_segment(&path, start, end, limit - scan.queued.len())?;
                    if end.is_some() && !read.torn.is_empty() {
                        // Never torn while open: fail and retry rather than
                        // skip what the spooler appends next.
                        return Err(Error::Archive {
                            detail: format!(
                                "spool: {} has an unreadable line at byte {}",
                                path.display(),
                                read.offset
                            ),
                        });
                    }
                    if !read.torn.is_empty() {
                        self.keep_torn_tail(&file, read.offset, &read.torn)?;
                        scan.set_aside += 1;
                    }
                    scan.queued.extend(read.checkpoints.into_iter().map(
                        |(sequence, checkpoint)| Queued {
                            file: file.clone(),
                            sequence,
                            checkpoint,
                        },
                    ));
                    if read.at_end && end.is_none() {
                        scan.exhausted.push(file);
                        scan.cursor = QueueCursor {
                            first: first.saturating_add(1),
                            offset: 0,
                        };
                    } else {
                        scan.cursor = QueueCursor {
                            first,
                            offset: read.offset,
                        };
                        scan.more |= !read.at_end;
                    }
                }
            }
        }
        Ok(scan)
    }

    /// Reads an earlier version's batch file whole into `scan`, or moves it to
    /// `conflicts/` if it does not parse.
    fn read_batch_file(&self, file: &str, scan: &mut QueueScan) -> Result<()> {
        let path = self.queue.join(file);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            // Removed since the listing: already archived.
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error("read", &path, e)),
        };
        match parse_queue_file(file, &bytes) {
            Ok(checkpoints) => {
                scan.exhausted.push(file.to_owned());
                scan.queued.extend(
                    checkpoints
                        .into_iter()
                        .map(|(sequence, checkpoint)| Queued {
                            file: file.to_owned(),
                            sequence,
                            checkpoint,
                        }),
                );
            }
            Err(error) => {
                tracing::error!(file = %path.display(), %error, "unreadable spooled checkpoints set aside");
                self.move_to_conflicts(&self.queue, file)?;
                scan.set_aside += 1;
            }
        }
        Ok(())
    }

    /// Keeps what follows the last readable line of closed segment `file`
    /// (normally a last append torn by a crash, which was never acknowledged)
    /// in `conflicts/<file>.<offset>.torn`.
    fn keep_torn_tail(&self, file: &str, offset: u64, tail: &[u8]) -> Result<()> {
        tracing::warn!(
            file,
            offset,
            bytes = tail.len(),
            "spool segment ends in an unreadable part (an append torn by a crash); kept in conflicts/"
        );
        write_durably(&self.conflicts, &format!("{file}.{offset}.torn"), tail)
    }

    /// Forgets queue files once every checkpoint in them is archived: one
    /// directory fsync for all of them.
    pub fn dequeue(&self, files: &[String]) -> Result<()> {
        let mut removed = false;
        for file in files {
            let path = self.queue.join(file);
            match fs::remove_file(&path) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("remove", &path, e)),
            }
        }
        if removed {
            fsync_dir(&self.queue)?;
        }
        Ok(())
    }

    /// Keeps a checkpoint the archive refused in `conflicts/<sequence>.json`.
    pub fn set_aside(&self, sequence: u64, checkpoint: &ArchivedCheckpoint) -> Result<()> {
        write_durably(
            &self.conflicts,
            &format!("{sequence:020}.json"),
            &queue_line(None, checkpoint)?,
        )
    }

    fn move_to_conflicts(&self, dir: &Path, file: &str) -> Result<()> {
        let from = dir.join(file);
        fs::rename(&from, self.conflicts.join(file)).map_err(|e| io_error("move", &from, e))?;
        fsync_dir(&self.conflicts)?;
        fsync_dir(dir)
    }

    fn open_journal(&self, start: u64) -> PathBuf {
        self.periods.join(format!("open-{start:020}.jsonl"))
    }

    fn sealed_name(start: u64, end: u64) -> String {
        format!("sealed-{start:020}-{end:020}.jsonl")
    }

    /// Appends objects to the journal of the period opened at `start`, with
    /// one fsync.
    pub fn record(&self, start: u64, subjects: &[ManifestSubject]) -> Result<()> {
        if subjects.is_empty() {
            return Ok(());
        }
        let path = self.open_journal(start);
        let created = !path.exists();
        let mut lines = Vec::with_capacity(subjects.len() * 160);
        for subject in subjects {
            serde_json::to_writer(
                &mut lines,
                &JournalLine {
                    name: subject.name.clone(),
                    sha256: hex::encode(subject.sha256),
                },
            )
            .map_err(|e| Error::Archive {
                detail: format!("spool: encoding: {e}"),
            })?;
            lines.push(b'\n');
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_error("open", &path, e))?;
        file.write_all(&lines)
            .and_then(|()| file.sync_data())
            .map_err(|e| io_error("append to", &path, e))?;
        if created {
            fsync_dir(&self.periods)?;
        }
        Ok(())
    }

    /// Closes the period opened at `start` at `end`. A period that recorded
    /// nothing has no journal, and nothing happens.
    pub fn seal(&self, start: u64, end: u64) -> Result<()> {
        let from = self.open_journal(start);
        match fs::rename(&from, self.periods.join(Spool::sealed_name(start, end))) {
            Ok(()) => fsync_dir(&self.periods),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("seal", &from, e)),
        }
    }

    /// Forgets a sealed period once its manifest is written.
    pub fn forget_sealed(&self, start: u64, end: u64) -> Result<()> {
        let path = self.periods.join(Spool::sealed_name(start, end));
        match fs::remove_file(&path) {
            Ok(()) => fsync_dir(&self.periods),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("remove", &path, e)),
        }
    }

    /// Moves a sealed period's journal to `conflicts/`.
    pub fn set_aside_sealed(&self, start: u64, end: u64) -> Result<()> {
        self.move_to_conflicts(&self.periods, &Spool::sealed_name(start, end))
    }

    /// Every period journal, oldest first. A last line torn by a crash is cut
    /// off: its checkpoint is still queued (files are dequeued only after their
    /// line is durable), so it is written and recorded again.
    pub fn periods(&self) -> Result<Vec<SpooledPeriod>> {
        let mut periods = Vec::new();
        let mut names = list(&self.periods)?;
        names.sort_unstable();
        for name in names {
            let Some((start, end)) = parse_period_name(&name) else {
                continue;
            };
            let path = self.periods.join(&name);
            periods.push(SpooledPeriod {
                start,
                end,
                subjects: read_journal(&path)?,
            });
        }
        periods.sort_by_key(|p| p.start);
        Ok(periods)
    }
}

fn list(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_error("list", dir, e))? {
        let entry = entry.map_err(|e| io_error("list", dir, e))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

/// The checkpoints of queue file `name`, with their sequence numbers.
fn parse_queue_file(name: &str, bytes: &[u8]) -> Result<Vec<(u64, ArchivedCheckpoint)>> {
    let invalid = |detail: String| Error::Archive {
        detail: format!("spool: queue file: {detail}"),
    };
    let (first, last) = queue_sequences(name).ok_or_else(|| invalid("bad name".to_owned()))?;
    let lines: Vec<&[u8]> = bytes
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .collect();
    if lines.len() as u64 != last - first + 1 {
        return Err(invalid(format!(
            "{} checkpoints where its name says {}",
            lines.len(),
            last - first + 1
        )));
    }
    let mut checkpoints = Vec::with_capacity(lines.len());
    for (sequence, line) in (first..=last).zip(lines) {
        let file: QueueFile = serde_json::from_slice(line).map_err(|e| invalid(e.to_string()))?;
        checkpoints.push((sequence, file.checkpoint()?));
    }
    Ok(checkpoints)
}

/// `open-<start>.jsonl` or `sealed-<start>-<end>.jsonl`.
fn parse_period_name(name: &str) -> Option<(u64, Option<u64>)> {
    let stem = name.strip_suffix(".jsonl")?;
    if let Some(start) = stem.strip_prefix("open-") {
        return Some((start.parse().ok()?, None));
    }
    let (start, end) = stem.strip_prefix("sealed-")?.split_once('-')?;
    Some((start.parse().ok()?, Some(end.parse().ok()?)))
}

fn read_journal(path: &Path) -> Result<Vec<ManifestSubject>> {
    let bytes = fs::read(path).map_err(|e| io_error("read", path, e))?;
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if complete < bytes.len() {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| io_error("open", path, e))?;
        file.set_len(complete as u64)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error("truncate", path, e))?;
    }
    let mut subjects = Vec::new();
    for line in bytes[..complete].split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        let parsed = serde_json::from_slice::<JournalLine>(line)
            .ok()
            .and_then(|line| {
                let mut sha256 = [0u8; 32];
                hex::decode_to_slice(&line.sha256, &mut sha256).ok()?;
                Some(ManifestSubject {
                    name: line.name,
                    sha256,
                })
            });
        match parsed {
            Some(subject) => subjects.push(subject),
            None => {
                return Err(Error::Archive {
                    detail: format!("spool: {} has a corrupt line", path.display()),
                });
            }
        }
    }
    Ok(subjects)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::archive::layout::test_checkpoint;

    fn subject(n: u8) -> ManifestSubject {
        ManifestSubject {
            name: format!("checkpoints/o/{n}.txt"),
            sha256: [n; 32],
        }
    }

    #[test]
    fn torn_journal_line_is_cut_and_later_lines_stay_readable() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        spool.record(60, &[subject(1)]).unwrap();
        let journal = spool.open_journal(60);
        let mut file = OpenOptions::new().append(true).open(&journal).unwrap();
        file.write_all(b"{\"name\":\"checkpoints/o/2.t").unwrap();
        drop(file);

        let (spool, _) = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.periods().unwrap()[0].subjects, vec![subject(1)]);
        spool.record(60, &[subject(2)]).unwrap();
        spool.seal(60, 120).unwrap();
        let periods = spool.periods().unwrap();
        assert_eq!(periods.len(), 1);
        assert_eq!(periods[0].end, Some(120));
        assert_eq!(periods[0].subjects, vec![subject(1), subject(2)]);
    }

    fn sequences(scan: &QueueScan) -> Vec<u64> {
        scan.queued.iter().map(|q| q.sequence).collect()
    }

    /// An earlier version's batch file `queue/<first>-<last>.jsonl`.
    fn write_batch_file(spool: &Spool, first: u64, checkpoints: &[ArchivedCheckpoint]) -> String {
        let name = format!(
            "{first:020}-{:020}.jsonl",
            first + checkpoints.len() as u64 - 1
        );
        let mut body = Vec::new();
        for checkpoint in checkpoints {
            body.extend(queue_line(None, checkpoint).unwrap());
            body.push(b'\n');
        }
        fs::write(spool.queue.join(&name), body).unwrap();
        name
    }

    #[test]
    fn batches_append_to_one_segment_read_on_from_a_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, next) = Spool::open(dir.path()).unwrap();
        assert_eq!(next, 0);
        let batch = [
            test_checkpoint(10),
            test_checkpoint(11),
            test_checkpoint(12),
        ];
        spool.enqueue_batch(3, &batch).unwrap();
        spool.enqueue_batch(6, &[test_checkpoint(13)]).unwrap();
        let segment = segment_name(3);
        assert_eq!(list(&spool.queue).unwrap(), [segment.as_str()]);

        let scan = spool.queued(10, QueueCursor::default()).unwrap();
        assert_eq!(sequences(&scan), [3, 4, 5, 6]);
        let read: Vec<_> = scan.queued[..3]
            .iter()
            .map(|q| q.checkpoint.clone())
            .collect();
        assert_eq!(read, batch);
        assert!(scan.queued.iter().all(|queued| queued.file == segment));
        // Open: never exhausted, whatever was read.
        assert!(scan.exhausted.is_empty());
        assert!(!scan.more);

        // The next scan reads only what was appended since.
        assert!(spool.queued(10, scan.cursor).unwrap().queued.is_empty());
        spool.enqueue_batch(7, &[test_checkpoint(14)]).unwrap();
        let later = spool.queued(10, scan.cursor).unwrap();
        assert_eq!(sequences(&later), [7]);

        // Closed and read to its end, it can go.
        spool.close_segment();
        let last = spool.queued(10, later.cursor).unwrap();
        assert!(last.queued.is_empty());
        assert_eq!(last.exhausted, [segment.as_str()]);
        let (_, next) = Spool::open(dir.path()).unwrap();
        assert_eq!(next, 8);
        spool.dequeue(&last.exhausted).unwrap();
        assert!(list(&spool.queue).unwrap().is_empty());
        assert!(spool.enqueue_batch(9, &[]).is_err());
    }

    #[test]
    fn queue_is_read_oldest_first_a_limited_batch_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let legacy = write_batch_file(&spool, 0, &[test_checkpoint(1), test_checkpoint(2)]);
        for sequence in 2..7 {
            spool
                .enqueue_batch(sequence, &[test_checkpoint(sequence + 1)])
                .unwrap();
        }
        spool.close_segment();
        let first = spool.queued(3, QueueCursor::default()).unwrap();
        assert_eq!(sequences(&first), [0, 1, 2]);
        assert_eq!(first.exhausted, [legacy]);
        assert!(first.more);
        assert_eq!(first.queued[2].checkpoint.note()[..15], *b"example.org/log");
        let second = spool.queued(3, first.cursor).unwrap();
        assert_eq!(sequences(&second), [3, 4, 5]);
        assert!(second.more && second.exhausted.is_empty());
        let third = spool.queued(3, second.cursor).unwrap();
        assert_eq!(sequences(&third), [6]);
        assert_eq!(third.exhausted, [segment_name(2)]);
        assert!(!third.more);
    }

    #[test]
    fn open_segment_is_read_only_up_to_its_last_durable_append() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        spool.enqueue_batch(0, &[test_checkpoint(1)]).unwrap();
        // An append under way: written, not yet made durable.
        let path = spool.queue.join(segment_name(0));
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&queue_line(Some(1), &test_checkpoint(2)).unwrap())
            .unwrap();
        let scan = spool.queued(10, QueueCursor::default()).unwrap();
        assert_eq!(sequences(&scan), [0]);
        assert_eq!((scan.set_aside, scan.exhausted.len()), (0, 0));
    }

    #[test]
    fn append_torn_by_a_crash_is_cut_off_kept_aside_and_its_numbers_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        spool
            .enqueue_batch(0, &[test_checkpoint(1), test_checkpoint(2)])
            .unwrap();
        // The crash: half of the next batch reached the disk.
        let path = spool.queue.join(segment_name(0));
        let line = queue_line(Some(2), &test_checkpoint(3)).unwrap();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&line[..line.len() / 2]).unwrap();
        drop((file, spool));

        let (spool, next) = Spool::open(dir.path()).unwrap();
        assert_eq!(next, 2);
        spool.enqueue_batch(next, &[test_checkpoint(4)]).unwrap();
        let scan = spool.queued(10, QueueCursor::default()).unwrap();
        assert_eq!(sequences(&scan), [0, 1, 2]);
        assert_eq!(scan.queued[2].checkpoint, test_checkpoint(4));
        assert_eq!(scan.exhausted, [segment_name(0)]);
        assert_eq!(scan.set_aside, 1);
        let kept = list(&spool.conflicts).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(
            fs::read(spool.conflicts.join(&kept[0])).unwrap(),
            line[..line.len() / 2]
        );
    }

    #[test]
    fn full_segment_is_closed_and_the_next_batch_starts_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let batch: Vec<_> = (0..256).map(test_checkpoint).collect();
        let mut first = 0;
        while list(&spool.queue).unwrap().len() < 2 {
            assert!(first < 64 * 256, "no new segment after {first} checkpoints");
            spool.enqueue_batch(first, &batch).unwrap();
            first += 256;
        }
        let newest = segment_name(first - 256);
        assert!(list(&spool.queue).unwrap().contains(&newest));
        let oldest = spool.queue.join(segment_name(0));
        assert!(fs::metadata(oldest).unwrap().len() >= SEGMENT_BYTES);
        let scan = spool.queued(usize::MAX, QueueCursor::default()).unwrap();
        assert_eq!(sequences(&scan), (0..first).collect::<Vec<_>>());
        assert_eq!(scan.exhausted, [segment_name(0)]);
    }

    #[test]
    fn sequence_numbers_are_never_reused_after_a_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, next) = Spool::open(dir.path()).unwrap();
        assert_eq!(next, 0);
        fs::write(spool.queue.join(format!("{:020}.json", 7)), b"not json").unwrap();
        fs::write(spool.queue.join("00000000000000000008.json.tmp"), b"torn").unwrap();
        let scan = spool.queued(10, QueueCursor::default()).unwrap();
        assert!(scan.queued.is_empty());
        assert_eq!(scan.set_aside, 1);
        let (spool, next) = Spool::open(dir.path()).unwrap();
        assert_eq!(next, 8);
        assert!(list(&spool.queue).unwrap().is_empty());
    }

    #[test]
    fn queue_file_holding_fewer_checkpoints_than_its_name_says_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let name = write_batch_file(&spool, 0, &[test_checkpoint(1), test_checkpoint(2)]);
        let bytes = fs::read(spool.queue.join(&name)).unwrap();
        let first_line = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        fs::write(spool.queue.join(&name), &bytes[..first_line]).unwrap();
        spool.enqueue_batch(2, &[test_checkpoint(3)]).unwrap();
        let scan = spool.queued(10, QueueCursor::default()).unwrap();
        assert_eq!(scan.set_aside, 1);
        assert_eq!(sequences(&scan), [2]);
        assert_eq!(list(&spool.conflicts).unwrap(), [name]);
        // Set-aside numbers stay taken.
        let (_, next) = Spool::open(dir.path()).unwrap();
        assert_eq!(next, 3);
    }
}
