//! The durable spool: the local directory holding whatever the archive accepted
//! but has not finished, so that neither a restart nor an object store outage
//! loses a checkpoint or a manifest entry. Blocking file I/O: the archive calls
//! it through `spawn_blocking`.
//!
//! - `queue/<first>-<last>.jsonl`: a batch of submitted checkpoints with the
//!   sequence numbers `first..=last`, one JSON object a line (origin,
//!   cosignature time, note in base64), written to a temporary file that is
//!   fsynced, renamed into place and its directory fsynced: one group commit
//!   for every checkpoint submitted while the previous batch was being
//!   written. Removed once every checkpoint in it is written and listed in the
//!   period journal. (`queue/<sequence>.json`, one checkpoint, is read too.)
//! - `periods/open-<start>.jsonl`: the journal of the objects written in the
//!   current period, one `{"name","sha256"}` line each, appended and fsynced a
//!   batch of lines at a time.
//! - `periods/sealed-<start>-<end>.jsonl`: a closed period whose manifest is not
//!   written yet. Removed once it is.
//! - `conflicts/`: checkpoints (`<sequence>.json`) refused because a different
//!   object already holds their name, unreadable queue files, and sealed
//!   journals whose manifest name is taken, kept for the operator.

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
    /// The name in `queue/` of the file holding it.
    pub file: String,
    /// Its submission sequence number.
    pub sequence: u64,
    pub checkpoint: ArchivedCheckpoint,
}

/// What [`Spool::queued`] found.
pub(crate) struct QueueScan {
    /// Checkpoints in submission order.
    pub queued: Vec<Queued>,
    /// Each queue file read, with the number of checkpoints it holds.
    pub files: Vec<(String, usize)>,
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

fn queue_line(checkpoint: &ArchivedCheckpoint) -> Result<Vec<u8>> {
    serde_json::to_vec(&QueueFile {
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
                } else if let Some((_, last)) = queue_sequences(&name) {
                    // Set-aside files keep their names: never reuse one.
                    next = next.max(last.saturating_add(1));
                }
            }
        }
        fsync_dir(root)?;
        Ok((spool, next))
    }

    /// Durably queues `checkpoints` (at least one) under the sequence numbers
    /// from `first` on, in one file and one fsync.
    pub fn enqueue_batch(&self, first: u64, checkpoints: &[ArchivedCheckpoint]) -> Result<()> {
        let Some(last) = (checkpoints.len() as u64)
            .checked_sub(1)
            .and_then(|n| first.checked_add(n))
        else {
            return Err(Error::Archive {
                detail: "spool: empty batch or sequence overflow".to_owned(),
            });
        };
        let mut body = Vec::with_capacity(checkpoints.len() * 512);
        for checkpoint in checkpoints {
            body.extend_from_slice(&queue_line(checkpoint)?);
            body.push(b'\n');
        }
        write_durably(&self.queue, &format!("{first:020}-{last:020}.jsonl"), &body)
    }

    /// The oldest queued checkpoints: whole queue files, oldest first, until
    /// at least `limit` checkpoints are read. Files that do not parse are
    /// moved to `conflicts/` and counted.
    pub fn queued(&self, limit: usize) -> Result<QueueScan> {
        let mut names: Vec<String> = list(&self.queue)?
            .into_iter()
            .filter(|name| queue_sequences(name).is_some())
            .collect();
        // After a long outage the queue holds many files and is read about
        // `limit` checkpoints at a time (each file holds at least one): pick
        // the oldest in linear time, sort only those. Zero-padded names sort
        // by their first sequence number.
        let limit = limit.max(1);
        let truncated = names.len() > limit;
        if truncated {
            names.select_nth_unstable(limit);
            names.truncate(limit);
        }
        names.sort_unstable();
        let mut scan = QueueScan {
            queued: Vec::new(),
            files: Vec::new(),
            more: false,
            set_aside: 0,
        };
        scan.more = truncated;
        for file in &names {
            if scan.queued.len() >= limit {
                scan.more = true;
                break;
            }
            let path = self.queue.join(file);
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                // Removed since the listing: already archived.
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error("read", &path, e)),
            };
            match parse_queue_file(file, &bytes) {
                Ok(checkpoints) => {
                    scan.files.push((file.clone(), checkpoints.len()));
                    scan.queued
                        .extend(
                            checkpoints
                                .into_iter()
                                .map(|(sequence, checkpoint)| Queued {
                                    file: file.clone(),
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
        }
        Ok(scan)
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
            &queue_line(checkpoint)?,
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
        let note = BASE64
            .decode(&file.note)
            .map_err(|_| invalid("note is not base64".to_owned()))?;
        checkpoints.push((
            sequence,
            ArchivedCheckpoint::new(&file.origin, file.cosigned_at, &note)?,
        ));
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

    #[test]
    fn queue_is_read_oldest_first_a_limited_batch_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let root = BASE64.encode([7u8; 32]);
        for sequence in [9u64, 2, 5, 7, 1] {
            let note = format!("example.org/log\n{sequence}\n{root}\n\n\u{2014} w AAAAAAE=\n");
            let checkpoint =
                ArchivedCheckpoint::new("example.org/log", 1, note.as_bytes()).unwrap();
            spool.enqueue_batch(sequence, &[checkpoint]).unwrap();
        }
        let scan = spool.queued(3).unwrap();
        let sequences: Vec<_> = scan.queued.iter().map(|q| q.sequence).collect();
        assert_eq!(sequences, [1, 2, 5]);
        assert_eq!(
            scan.files[0].0,
            "00000000000000000001-00000000000000000001.jsonl"
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

    #[test]
    fn batch_is_one_durable_file_read_back_whole_with_its_sequence_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        let batch = [
            test_checkpoint(10),
            test_checkpoint(11),
            test_checkpoint(12),
        ];
        spool.enqueue_batch(3, &batch).unwrap();
        assert_eq!(
            list(&spool.queue).unwrap(),
            ["00000000000000000003-00000000000000000005.jsonl"]
        );
        // A file is read whole even past the limit: its checkpoints are
        // finished together.
        let scan = spool.queued(1).unwrap();
        let sequences: Vec<_> = scan.queued.iter().map(|q| q.sequence).collect();
        assert_eq!(sequences, [3, 4, 5]);
        let read: Vec<_> = scan.queued.iter().map(|q| q.checkpoint.clone()).collect();
        assert_eq!(read, batch);
        assert!(!scan.more);
        let (spool, next) = Spool::open(dir.path()).unwrap();
        assert_eq!(next, 6);
        spool.dequeue(&[scan.files[0].0.clone()]).unwrap();
        assert!(list(&spool.queue).unwrap().is_empty());
        assert!(spool.enqueue_batch(7, &[]).is_err());
    }

    #[test]
    fn queue_file_holding_fewer_checkpoints_than_its_name_says_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = Spool::open(dir.path()).unwrap();
        spool
            .enqueue_batch(0, &[test_checkpoint(1), test_checkpoint(2)])
            .unwrap();
        let name = "00000000000000000000-00000000000000000001.jsonl";
        let bytes = fs::read(spool.queue.join(name)).unwrap();
        let first_line = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        fs::write(spool.queue.join(name), &bytes[..first_line]).unwrap();
        spool.enqueue_batch(2, &[test_checkpoint(3)]).unwrap();
        let scan = spool.queued(10).unwrap();
        assert_eq!(scan.set_aside, 1);
        let sequences: Vec<_> = scan.queued.iter().map(|q| q.sequence).collect();
        assert_eq!(sequences, [2]);
        assert_eq!(list(&spool.conflicts).unwrap(), [name]);
        // Set-aside numbers stay taken.
        let (_, next) = Spool::open(dir.path()).unwrap();
        assert_eq!(next, 3);
    }
}
