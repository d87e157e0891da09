//! The durable spool: the local directory holding whatever the archive accepted
//! but has not finished, so that neither a restart nor an object store outage
//! loses a checkpoint or a manifest entry. Blocking file I/O: the archive calls
//! it through `spawn_blocking`.
//!
//! - `queue/<sequence>.json`: a submitted checkpoint (origin, cosignature time,
//!   note in base64), written to a temporary file that is fsynced, renamed into
//!   place and its directory fsynced. Removed once its object is written and
//!   listed in the period journal.
//! - `periods/open-<start>.jsonl`: the journal of the objects written in the
//!   current period, one `{"name","sha256"}` line each, fsynced line by line.
//! - `periods/sealed-<start>-<end>.jsonl`: a closed period whose manifest is not
//!   written yet. Removed once it is.
//! - `conflicts/`: queue files and sealed journals refused because a different
//!   object already holds their name (or unreadable), kept for the operator.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::service::archive::layout::ArchivedCheckpoint;
use crate::service::archive::manifest::ManifestSubject;
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

#[derive(Serialize, Deserialize)]
struct QueueFile {
    origin: String,
    cosigned_at: u64,
    /// The note, base64: notes are UTF-8 text, but the bytes must come back
    /// exactly as submitted.
    note: String,
}

#[derive(Serialize, Deserialize)]
struct JournalLine {
    name: String,
    sha256: String,
}

/// A checkpoint read back from the queue.
pub(crate) struct Queued {
    /// Its file name in `queue/`.
    pub file: String,
    pub checkpoint: ArchivedCheckpoint,
}

/// What [`Spool::queued`] found.
pub(crate) struct QueueScan {
    /// Checkpoints in submission order.
    pub queued: Vec<Queued>,
    /// Whether more are waiting beyond the limit.
    pub more: bool,
    /// Unreadable queue files moved to `conflicts/`.
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
}

fn queue_sequence(name: &str) -> Option<u64> {
    name.strip_suffix(".json")?.parse().ok()
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
    /// writes a crash interrupted, and returns the next queue sequence number.
    pub fn open(root: &Path) -> Result<(Spool, u64)> {
        let spool = Spool {
            queue: root.join("queue"),
            periods: root.join("periods"),
            conflicts: root.join("conflicts"),
        };
        let mut next = 0;
        for dir in [&spool.queue, &spool.periods, &spool.conflicts] {
            fs::create_dir_all(dir).map_err(|e| io_error("create", dir, e))?;
            for name in list(dir)? {
                if name.ends_with(".tmp") {
                    let path = dir.join(&name);
                    fs::remove_file(&path).map_err(|e| io_error("remove", &path, e))?;
                } else if let Some(sequence) = queue_sequence(&name) {
                    // Set-aside files keep their names: never reuse one.
                    next = next.max(sequence + 1);
                }
            }
        }
        fsync_dir(root)?;
        Ok((spool, next))
    }

    /// Durably queues a checkpoint under `sequence`.
    pub fn enqueue(&self, sequence: u64, checkpoint: &ArchivedCheckpoint) -> Result<()> {
        let body = serde_json::to_vec(&QueueFile {
            origin: checkpoint.origin().to_owned(),
            cosigned_at: checkpoint.cosigned_at(),
            note: BASE64.encode(checkpoint.note()),
        })
        .map_err(|e| Error::Archive {
            detail: format!("spool: encoding: {e}"),
        })?;
        let path = self.queue.join(format!("{sequence:020}.json"));
        let temporary = self.queue.join(format!("{sequence:020}.json.tmp"));
        let mut file = File::create(&temporary).map_err(|e| io_error("create", &temporary, e))?;
        file.write_all(&body)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error("write", &temporary, e))?;
        fs::rename(&temporary, &path).map_err(|e| io_error("rename", &temporary, e))?;
        fsync_dir(&self.queue)
    }

    /// Up to `limit` queued checkpoints, oldest first. Files that do not parse
    /// are moved to `conflicts/` and counted.
    pub fn queued(&self, limit: usize) -> Result<QueueScan> {
        let mut names: Vec<String> = list(&self.queue)?
            .into_iter()
            .filter(|name| queue_sequence(name).is_some())
            .collect();
        // After a long outage the queue holds millions of files and is read
        // `limit` at a time: pick the oldest in linear time, sort only those.
        let more = names.len() > limit;
        if more {
            names.select_nth_unstable(limit);
            names.truncate(limit);
        }
        names.sort_unstable();
        let mut scan = QueueScan {
            queued: Vec::with_capacity(names.len()),
            more,
            set_aside: 0,
        };
        for file in names {
            let path = self.queue.join(&file);
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                // Removed since the listing: already archived.
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error("read", &path, e)),
            };
            match parse_queue_file(&bytes) {
                Ok(checkpoint) => scan.queued.push(Queued { file, checkpoint }),
                Err(error) => {
                    tracing::error!(file = %path.display(), %error, "unreadable spooled checkpoint set aside");
                    self.set_aside(&file)?;
                    scan.set_aside += 1;
                }
            }
        }
        Ok(scan)
    }

    /// Forgets a queued checkpoint once it is archived.
    pub fn dequeue(&self, file: &str) -> Result<()> {
        let path = self.queue.join(file);
        match fs::remove_file(&path) {
            Ok(()) => fsync_dir(&self.queue),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("remove", &path, e)),
        }
    }

    /// Moves a queued checkpoint to `conflicts/`.
    pub fn set_aside(&self, file: &str) -> Result<()> {
        self.move_to_conflicts(&self.queue, file)
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

    /// Appends an object to the journal of the period opened at `start`.
    pub fn record(&self, start: u64, subject: &ManifestSubject) -> Result<()> {
        let path = self.open_journal(start);
        let created = !path.exists();
        let mut line = serde_json::to_vec(&JournalLine {
            name: subject.name.clone(),
            sha256: hex::encode(subject.sha256),
        })
        .map_err(|e| Error::Archive {
            detail: format!("spool: encoding: {e}"),
        })?;
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_error("open", &path, e))?;
        file.write_all(&line)
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

fn parse_queue_file(bytes: &[u8]) -> Result<ArchivedCheckpoint> {
    let file: QueueFile = serde_json::from_slice(bytes).map_err(|e| Error::Archive {
        detail: format!("spool: queue file: {e}"),
    })?;
    let note = BASE64.decode(&file.note).map_err(|_| Error::Archive {
        detail: "spool: queue file: note is not base64".to_owned(),
    })?;
    ArchivedCheckpoint::new(&file.origin, file.cosigned_at, &note)
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
        spool.record(60, &subject(1)).unwrap();
        let journal = spool.open_journal(60);
        let mut file = OpenOptions::new().append(true).open(&journal).unwrap();
        file.write_all(b"{\"name\":\"checkpoints/o/2.t").unwrap();
        drop(file);

        let (spool, _) = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.periods().unwrap()[0].subjects, vec![subject(1)]);
        spool.record(60, &subject(2)).unwrap();
        spool.seal(60, 120).unwrap();
        let periods = spool.periods().unwrap();
        assert_eq!(periods.len(), 1);
        assert_eq!(periods[0].end, Some(120));
        assert_eq!(periods[0].subjects, vec![subject(1), subject(2)]);
    }

    #[test]
    fn queue_is_read_oldest_first_a_limited_batch_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let root = BASE64.encode([7u8; 32]);
        for sequence in [9u64, 2, 5, 7, 1] {
            let note = format!("example.org/log\n{sequence}\n{root}\n\n\u{2014} w AAAAAAE=\n");
            let checkpoint =
                ArchivedCheckpoint::new("example.org/log", 1, note.as_bytes()).unwrap();
            spool.enqueue(sequence, &checkpoint).unwrap();
        }
        let scan = spool.queued(3).unwrap();
        let files: Vec<_> = scan.queued.iter().map(|q| q.file.as_str()).collect();
        assert_eq!(
            files,
            [
                "00000000000000000001.json",
                "00000000000000000002.json",
                "00000000000000000005.json"
            ]
        );
        assert!(scan.more);
        assert_eq!(
            scan.queued[2].checkpoint.note()[..17],
            *b"example.org/log\n5"
        );
        assert!(!spool.queued(5).unwrap().more);
    }

    #[test]
    fn sequence_numbers_are_never_reused_after_a_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, next) = Spool::open(dir.path()).unwrap();
        assert_eq!(next, 0);
        fs::write(spool.queue.join(format!("{:020}.json", 7)), b"not json").unwrap();
        fs::write(spool.queue.join("00000000000000000008.json.tmp"), b"torn").unwrap();
        let scan = spool.queued(10).unwrap();
        assert!(scan.queued.is_empty());
        assert_eq!(scan.set_aside, 1);
        let (spool, next) = Spool::open(dir.path()).unwrap();
        assert_eq!(next, 8);
        assert!(list(&spool.queue).unwrap().is_empty());
    }
}
