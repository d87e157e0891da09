//! The archive's writer: takes spooled checkpoints to the object store, keeps
//! the journal of each period, and writes each closed period's signed manifest.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::service::archive::ManifestSigner;
use crate::service::archive::layout::{manifest_path, period_start};
use crate::service::archive::local::{Created, LocalBatch, create_batch, sync_filesystem};
use crate::service::archive::manifest::{
    ARCHIVE_MANIFEST_SUBJECTS, ManifestSubject, PAYLOAD_TYPE, envelope_payload, statement,
};
use crate::service::archive::spool::{QueueCursor, Queued, Spool, SpooledPeriod};
use crate::service::metrics::WitnessMetrics;
use crate::{Error, Result};

/// Objects written at once. The writer is the only one, so this bounds the
/// connections it holds open; 8 keeps a backlog after an outage draining at
/// several times the witness's cosigning rate.
const UPLOAD_CONCURRENCY: usize = 8;

/// Objects written per batch: each batch ends with one durability barrier for
/// a local archive and one journal append, whatever its size.
const UPLOAD_BATCH: usize = 256;

/// How long the uploader waits, after a read of the queue that took all that
/// was queued, before reading it again: a steady trickle of cosignatures is
/// uploaded in batches of what arrived meanwhile, not a batch per spool group
/// commit. Each batch costs a round of hand-offs to the blocking pool, a
/// durability barrier (`syncfs` for a local archive) and a journal append
/// with its fsync, whatever its size. A backlog (a read that hit its limit)
/// is read on at once. Short on purpose: a local archive's `syncfs` writes
/// out the whole batch at once, and the requests' own fsyncs wait behind that
/// burst. A 250 ms wait (tried with the uploader at a lower CPU priority)
/// cut the witness's CPU at 700 cosignatures a second by a quarter, but p99
/// rose there from 6.5 to 9 to 10 ms and was worse at 2,000/s too (README,
/// Benchmarks); 20 ms bounds a burst to about 40 checkpoints at 2,000/s.
pub const ARCHIVE_UPLOAD_LINGER: Duration = Duration::from_millis(20);

/// The first wait after a failure; waits double up to the configured maximum.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Seconds since the Unix epoch by the wall clock (periods are wall-clock hours).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The second at which a full period that started at `start` closes early,
/// or `None` while the clock still reads `now == start`: the closed period is
/// named by its start and end, and the next one starts at its end, so a period
/// must end after it starts or two full periods in one second would share a
/// manifest name (and a sealed journal in the spool). A clock behind `start`
/// (stepped back) closes one second after it.
fn early_close_second(start: u64, now: u64) -> Option<u64> {
    match now.cmp(&start) {
        std::cmp::Ordering::Greater => Some(now),
        std::cmp::Ordering::Equal => None,
        std::cmp::Ordering::Less => Some(start + 1),
    }
}

/// Waits, for at most a second, until a full period that started at `start`
/// can close (see [`early_close_second`]), and returns when it closes. Only a
/// writer filling more than one manifest in a second waits.
async fn close_early_at(start: u64) -> u64 {
    if let Some(second) = early_close_second(start, unix_now()) {
        return second;
    }
    let into_second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(Duration::ZERO, |d| {
            Duration::from_nanos(u64::from(d.subsec_nanos()))
        });
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(into_second)).await;
    early_close_second(start, unix_now()).unwrap_or(start + 1)
}

/// Exponential backoff between attempts.
pub(crate) struct Backoff {
    next: Option<Instant>,
    delay: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Backoff {
        Backoff {
            next: None,
            delay: FIRST_RETRY.min(max),
            max,
        }
    }

    pub fn ready(&self) -> bool {
        self.next.is_none_or(|at| Instant::now() >= at)
    }

    /// When the next attempt may be made.
    pub fn deadline(&self) -> Instant {
        self.next.unwrap_or_else(Instant::now)
    }

    /// Records a failure; returns the wait before the next attempt.
    pub fn fail(&mut self) -> Duration {
        let delay = self.delay;
        self.next = Some(Instant::now() + delay);
        self.delay = (delay * 2).min(self.max);
        delay
    }

    pub fn succeed(&mut self) {
        self.next = None;
        self.delay = FIRST_RETRY.min(self.max);
    }
}

/// Why an object was not written.
enum WriteError {
    /// The store or the signer failed: try again later.
    Unavailable(Error),
    /// Another object already holds the name, or the object can never be
    /// written: trying again cannot help.
    Refused(Error),
}

/// The period objects are being listed in now.
struct OpenPeriod {
    start: u64,
    /// The period boundary at which it closes.
    end: u64,
    subjects: Vec<ManifestSubject>,
    names: HashSet<String>,
}

impl OpenPeriod {
    fn new(start: u64, period: u64, subjects: Vec<ManifestSubject>) -> OpenPeriod {
        OpenPeriod {
            start,
            end: period_start(start, period) + period,
            names: subjects.iter().map(|s| s.name.clone()).collect(),
            subjects,
        }
    }
}

/// A closed period whose manifest is not written yet.
struct SealedPeriod {
    start: u64,
    end: u64,
    subjects: Vec<ManifestSubject>,
}

/// Everything the writer needs, and its state.
pub(crate) struct Uploader {
    store: Arc<dyn ObjectStore>,
    local_root: Option<PathBuf>,
    spool: Arc<Spool>,
    signer: Arc<dyn ManifestSigner>,
    metrics: Arc<WitnessMetrics>,
    witness: String,
    period: u64,
    batch_limit: usize,
    pending: VecDeque<Queued>,
    /// How far the queue has been read.
    cursor: QueueCursor,
    /// Checkpoints read from each queue file and not yet archived (or set
    /// aside).
    unfinished: HashMap<String, usize>,
    /// Closed queue files read to their end: each is removed once it has no
    /// unfinished checkpoint.
    drained: HashSet<String>,
    more_queued: bool,
    /// When the queue may be read again: set after a read that took all that
    /// was queued (see [`ARCHIVE_UPLOAD_LINGER`]), cleared after a read that hit its
    /// limit.
    next_read: Option<Instant>,
    current: OpenPeriod,
    sealed: VecDeque<SealedPeriod>,
    upload_retry: Backoff,
    manifest_retry: Backoff,
}

/// The writer's settings.
pub(crate) struct UploaderSettings {
    pub store: Arc<dyn ObjectStore>,
    pub local_root: Option<PathBuf>,
    pub spool: Arc<Spool>,
    pub signer: Arc<dyn ManifestSigner>,
    pub metrics: Arc<WitnessMetrics>,
    pub witness: String,
    pub period: u64,
    pub batch_limit: usize,
    pub max_retry_interval: Duration,
}

impl Uploader {
    /// Picks up where the last run stopped: sealed periods wait for their
    /// manifest; the open period goes on if it has not ended, and is sealed at
    /// its boundary if it has. With no open period, one starts now: whatever was
    /// written earlier in this period is in the manifest the last run wrote when
    /// it stopped.
    pub fn recover(
        settings: UploaderSettings,
        spooled: Vec<SpooledPeriod>,
        now: u64,
    ) -> Result<Uploader> {
        let UploaderSettings {
            store,
            local_root,
            spool,
            signer,
            metrics,
            witness,
            period,
            batch_limit,
            max_retry_interval,
        } = settings;
        let mut sealed = VecDeque::new();
        let mut current = None;
        let open_count = spooled.iter().filter(|p| p.end.is_none()).count();
        let mut open_seen = 0;
        for spooled in spooled {
            let Some(end) = spooled.end else {
                open_seen += 1;
                let boundary = period_start(spooled.start, period) + period;
                if open_seen == open_count && boundary > now {
                    current = Some(OpenPeriod::new(spooled.start, period, spooled.subjects));
                } else {
                    let end = boundary.min(now).max(spooled.start);
                    spool.seal(spooled.start, end)?;
                    sealed.push_back(SealedPeriod {
                        start: spooled.start,
                        end,
                        subjects: spooled.subjects,
                    });
                }
                continue;
            };
            sealed.push_back(SealedPeriod {
                start: spooled.start,
                end,
                subjects: spooled.subjects,
            });
        }
        Ok(Uploader {
            store,
            local_root,
            spool,
            signer,
            metrics,
            witness,
            period,
            batch_limit,
            pending: VecDeque::new(),
            cursor: QueueCursor::default(),
            unfinished: HashMap::new(),
            drained: HashSet::new(),
            more_queued: true,
            next_read: None,
            current: current.unwrap_or_else(|| OpenPeriod::new(now, period, Vec::new())),
            sealed,
            upload_retry: Backoff::new(max_retry_interval),
            manifest_retry: Backoff::new(max_retry_interval),
        })
    }

    /// Publishes the cosignature time of the oldest checkpoint read and not
    /// yet archived (a backlog or an outage shows as a growing age). With
    /// nothing pending but more queued than was read, the next read follows
    /// at once and sets it, so the age does not drop to 0 in the middle of a
    /// backlog.
    fn note_oldest_unarchived(&self) {
        match self.pending.front() {
            Some(oldest) => self
                .metrics
                .archive_oldest_unarchived(Some(oldest.checkpoint.cosigned_at())),
            None if self.more_queued => {}
            None => self.metrics.archive_oldest_unarchived(None),
        }
    }

    /// Writes until `stop` turns true, then returns itself for [`Uploader::finish`].
    pub async fn run_until(mut self, mut stop: watch::Receiver<bool>, wake: Arc<Notify>) -> Self {
        loop {
            if *stop.borrow() {
                return self;
            }
            let now = unix_now();
            self.roll(now).await;
            if self.pending.is_empty()
                && self.more_queued
                && self.upload_retry.ready()
                && self.next_read.is_none_or(|at| Instant::now() >= at)
            {
                self.load_queue().await;
            }
            if !self.pending.is_empty() && self.upload_retry.ready() {
                self.upload_batch().await;
            }
            if !self.sealed.is_empty() && self.manifest_retry.ready() {
                self.write_manifests().await;
            }
            let deadline = self.next_deadline(now);
            tokio::select! {
                _ = stop.changed() => {}
                () = wake.notified() => self.more_queued = true,
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// The last pass at shutdown, after every submission was spooled: writes
    /// what the store takes without waiting out failures, closes the period
    /// now and writes the manifests that can be written. What is left stays in
    /// the spool for the next start.
    pub async fn finish(mut self) {
        // Every submission is spooled: the open segment can be removed once
        // archived.
        self.close_segment().await;
        self.more_queued = true;
        loop {
            if self.pending.is_empty()
                && (!self.more_queued || !self.load_queue().await || self.pending.is_empty())
            {
                break;
            }
            if !self.upload_batch().await {
                break;
            }
        }
        let now = unix_now();
        self.roll(now).await;
        self.seal_current(now.max(self.current.start), now).await;
        self.manifest_retry.succeed();
        self.write_manifests().await;
        if !self.sealed.is_empty() {
            tracing::warn!(
                periods = self.sealed.len(),
                "archive stopped with manifests unwritten; they will be written at the next start"
            );
        }
    }

    fn next_deadline(&self, now: u64) -> Instant {
        // Flooring `now` makes this wake at or after the boundary, never before.
        let mut deadline =
            Instant::now() + Duration::from_secs(self.current.end.saturating_sub(now));
        if !self.pending.is_empty() {
            deadline = deadline.min(self.upload_retry.deadline());
        } else if self.more_queued {
            let retry = self.upload_retry.deadline();
            deadline = deadline.min(self.next_read.map_or(retry, |at| at.max(retry)));
        }
        if !self.sealed.is_empty() {
            deadline = deadline.min(self.manifest_retry.deadline());
        }
        deadline
    }

    /// Reads the next queued checkpoints from the spool; false if it failed.
    /// Called only when nothing is pending. A checkpoint the open period's
    /// journal already lists (read again after a crash) is finished at once.
    async fn load_queue(&mut self) -> bool {
        let limit = self.batch_limit;
        let cursor = self.cursor;
        match self
            .spool
            .call(move |spool| spool.queued(limit, cursor))
            .await
        {
            Ok(scan) => {
                for _ in 0..scan.set_aside {
                    self.metrics.archive_write("checkpoint", false);
                }
                self.cursor = scan.cursor;
                self.more_queued = scan.more;
                self.next_read = (!scan.more).then(|| Instant::now() + ARCHIVE_UPLOAD_LINGER);
                for queued in &scan.queued {
                    *self.unfinished.entry(queued.file.clone()).or_default() += 1;
                }
                let mut listed = Vec::new();
                for queued in scan.queued {
                    if self
                        .current
                        .names
                        .contains(queued.checkpoint.path().as_ref())
                    {
                        listed.push(queued);
                    } else {
                        self.pending.push_back(queued);
                    }
                }
                self.drained.extend(scan.exhausted);
                self.drop_finished(&listed).await;
                self.note_oldest_unarchived();
                true
            }
            Err(error) => {
                tracing::error!(%error, "cannot read the archive spool");
                self.upload_retry.fail();
                false
            }
        }
    }

    /// Writes up to [`UPLOAD_BATCH`] pending checkpoints (to a local archive
    /// in one blocking call, to object storage [`UPLOAD_CONCURRENCY`] at a
    /// time), makes them durable together, lists them in the journal with
    /// one append and removes the queue files they finish; true if none failed
    /// for a reason worth retrying.
    async fn upload_batch(&mut self) -> bool {
        let count = self.pending.len().min(UPLOAD_BATCH);
        let batch: Vec<Queued> = self.pending.drain(..count).collect();
        self.metrics.archive_batch();
        let outcomes = match self.local_root.clone() {
            Some(root) => write_local_batch(root, &batch).await,
            None => self.write_remote_batch(&batch).await,
        };
        let mut retry = Vec::new();
        let mut written = Vec::new();
        let mut finished = Vec::new();
        for (queued, outcome) in batch.into_iter().zip(outcomes) {
            let path = queued.checkpoint.path().to_string();
            match outcome {
                Ok(()) => written.push(queued),
                Err(WriteError::Refused(error)) => {
                    tracing::error!(%error, %path, "checkpoint not archived: its name is taken by other bytes; set aside in the spool's conflicts/");
                    self.metrics.archive_write("checkpoint", false);
                    let (sequence, checkpoint) = (queued.sequence, queued.checkpoint.clone());
                    match self
                        .spool
                        .call(move |spool| spool.set_aside(sequence, &checkpoint))
                        .await
                    {
                        Ok(()) => finished.push(queued),
                        Err(error) => {
                            tracing::error!(%error, "cannot set a conflicting checkpoint aside");
                            retry.push(queued);
                        }
                    }
                }
                Err(WriteError::Unavailable(error)) => {
                    tracing::warn!(%error, %path, "cannot archive a checkpoint yet; it stays spooled");
                    self.metrics.archive_write("checkpoint", false);
                    retry.push(queued);
                }
            }
        }
        match self.record(&written).await {
            Ok(()) => {
                for _ in &written {
                    self.metrics.archive_write("checkpoint", true);
                }
                finished.extend(written);
            }
            Err(error) => {
                tracing::error!(%error, "cannot journal archived checkpoints");
                for _ in &written {
                    self.metrics.archive_write("checkpoint", false);
                }
                retry.extend(written);
            }
        }
        self.drop_finished(&finished).await;
        if retry.is_empty() {
            self.upload_retry.succeed();
            self.note_oldest_unarchived();
            return true;
        }
        let wait = self.upload_retry.fail();
        tracing::debug!(
            ?wait,
            pending = self.pending.len() + retry.len(),
            "archive upload backing off"
        );
        retry.sort_by_key(|queued| queued.sequence);
        for queued in retry.into_iter().rev() {
            self.pending.push_front(queued);
        }
        self.note_oldest_unarchived();
        false
    }

    /// Writes a batch to object storage, [`UPLOAD_CONCURRENCY`] objects at a
    /// time; each is durable once its write returns.
    async fn write_remote_batch(
        &self,
        batch: &[Queued],
    ) -> Vec<std::result::Result<(), WriteError>> {
        use futures::StreamExt as _;
        // Collected first: a stream over a borrowing closure is not `Send`.
        let writes: Vec<_> = batch
            .iter()
            .map(|queued| self.write_checkpoint(queued.checkpoint.path(), queued.checkpoint.note()))
            .collect();
        futures::stream::iter(writes)
            .buffered(UPLOAD_CONCURRENCY)
            .collect()
            .await
    }

    /// Counts `finished` checkpoints off their queue files, and removes the
    /// drained files left with none unfinished.
    async fn drop_finished(&mut self, finished: &[Queued]) {
        for queued in finished {
            if let Some(left) = self.unfinished.get_mut(&queued.file) {
                *left = left.saturating_sub(1);
                if *left == 0 {
                    self.unfinished.remove(&queued.file);
                }
            }
        }
        let unfinished = &self.unfinished;
        let done: Vec<String> = self
            .drained
            .extract_if(|file| !unfinished.contains_key(file))
            .collect();
        if done.is_empty() {
            return;
        }
        let removing = done.clone();
        if let Err(error) = self.spool.call(move |spool| spool.dequeue(&removing)).await {
            // Tried again with the next finished checkpoints. If a restart
            // comes first, they are read again: written again (accepted) and,
            // within the period, not listed twice.
            tracing::warn!(%error, "cannot remove archived checkpoints from the spool");
            self.drained.extend(done);
        }
    }

    /// Creates the object, or accepts an identical one already there (a retry
    /// of a write whose answer was lost); never overwrites.
    async fn write_checkpoint(
        &self,
        path: &Path,
        note: &[u8],
    ) -> std::result::Result<(), WriteError> {
        match self.create(path, note.to_vec()).await {
            Ok(None) => Ok(()),
            Ok(Some(existing)) => accept_existing(path.as_ref(), note, &existing),
            Err(error) => Err(WriteError::Unavailable(error)),
        }
    }

    /// `PutMode::Create`: `None` once written (not yet fsynced locally), or
    /// the bytes of the object already there.
    async fn create(&self, path: &Path, bytes: Vec<u8>) -> Result<Option<Bytes>> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let archive_error = |e: object_store::Error| Error::Archive {
            detail: format!("{path}: {e}"),
        };
        match self
            .store
            .put_opts(path, PutPayload::from(bytes), options)
            .await
        {
            Ok(_) => Ok(None),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let existing = self.store.get(path).await.map_err(archive_error)?;
                Ok(Some(existing.bytes().await.map_err(archive_error)?))
            }
            Err(error) => Err(archive_error(error)),
        }
    }

    /// Lists written checkpoints in the current period, durably, with one
    /// journal append per period touched. A crash before the append writes and
    /// lists them again; one already listed in this period is not listed twice.
    async fn record(&mut self, written: &[Queued]) -> Result<()> {
        self.roll(unix_now()).await;
        let mut lines: Vec<ManifestSubject> = Vec::new();
        let mut batch_names = HashSet::new();
        for queued in written {
            let subject = ManifestSubject {
                name: queued.checkpoint.path().to_string(),
                sha256: *queued.checkpoint.sha256(),
            };
            if self.current.names.contains(&subject.name)
                || !batch_names.insert(subject.name.clone())
            {
                continue;
            }
            if self.current.subjects.len() + lines.len() >= ARCHIVE_MANIFEST_SUBJECTS {
                self.append_to_journal(std::mem::take(&mut lines)).await?;
                batch_names.clear();
                batch_names.insert(subject.name.clone());
                let now = close_early_at(self.current.start).await;
                self.seal_current(now, now).await;
            }
            lines.push(subject);
        }
        self.append_to_journal(lines).await
    }

    /// Appends `lines` to the current period's journal, then to its subjects.
    async fn append_to_journal(&mut self, lines: Vec<ManifestSubject>) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let start = self.current.start;
        let lines = self
            .spool
            .call(move |spool| spool.record(start, &lines).map(|()| lines))
            .await?;
        for subject in lines {
            self.current.names.insert(subject.name.clone());
            self.current.subjects.push(subject);
        }
        Ok(())
    }

    /// Makes a manifest written to a local archive durable: one `syncfs` of
    /// the archive's filesystem (the object store's local backend links files
    /// into place without fsync; checkpoints get theirs in
    /// [`write_local_batch`]). Nothing to do for object storage.
    async fn sync_local_all(&self) -> Result<()> {
        let Some(root) = self.local_root.clone() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || sync_filesystem(&root))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|detail| Error::Archive {
                detail: format!("syncfs of the archive: {detail}"),
            })
    }

    /// Closes the current period once the clock passes its boundary.
    async fn roll(&mut self, now: u64) {
        if now >= self.current.end {
            let end = self.current.end;
            self.seal_current(end, period_start(now, self.period)).await;
        }
    }

    /// Closes the current period at `end` and opens the next at `next_start`.
    async fn seal_current(&mut self, end: u64, next_start: u64) {
        let next = OpenPeriod::new(next_start, self.period, Vec::new());
        let closed = std::mem::replace(&mut self.current, next);
        if closed.subjects.is_empty() {
            return;
        }
        // The segment holding the period's checkpoints is removed once read to
        // its end, normally before the manifest is written: a crash after that
        // cannot make them read again and listed in the next period too.
        self.close_segment().await;
        let start = closed.start;
        if let Err(error) = self.spool.call(move |spool| spool.seal(start, end)).await {
            // The manifest is still written from memory; at the next start the
            // journal is sealed again and the same manifest found in place.
            tracing::error!(%error, "cannot seal a period journal in the spool");
        }
        self.sealed.push_back(SealedPeriod {
            start,
            end,
            subjects: closed.subjects,
        });
    }

    /// Closes the spool's open segment (waiting for an append under way).
    async fn close_segment(&mut self) {
        let _ = self
            .spool
            .call(|spool| {
                spool.close_segment();
                Ok(())
            })
            .await;
        // The next scan reads the closed segment to its end.
        self.more_queued = true;
    }

    /// Writes the manifests of sealed periods, oldest first, until one fails.
    async fn write_manifests(&mut self) {
        while let Some(sealed) = self.sealed.front() {
            let (start, end) = (sealed.start, sealed.end);
            let outcome = if sealed.subjects.is_empty() {
                // Nothing was written: an in-toto statement needs a subject.
                Ok(())
            } else {
                let written = self.write_manifest(sealed).await;
                self.metrics.archive_write("manifest", written.is_ok());
                written
            };
            match outcome {
                Ok(()) => {
                    self.manifest_retry.succeed();
                    if let Err(error) = self.spool.call(move |s| s.forget_sealed(start, end)).await
                    {
                        tracing::warn!(%error, "cannot remove a written period from the spool");
                    }
                }
                Err(WriteError::Refused(error)) => {
                    tracing::error!(%error, "manifest not written; its period is set aside in the spool's conflicts/");
                    if let Err(error) = self
                        .spool
                        .call(move |s| s.set_aside_sealed(start, end))
                        .await
                    {
                        tracing::error!(%error, "cannot set a period aside");
                    }
                }
                Err(WriteError::Unavailable(error)) => {
                    let wait = self.manifest_retry.fail();
                    tracing::warn!(%error, ?wait, "cannot write a manifest yet; it will be retried");
                    return;
                }
            }
            self.sealed.pop_front();
        }
    }

    /// Signs the period's statement and stores the envelope. Nothing is stored
    /// unless the signer signed exactly our statement.
    async fn write_manifest(&self, sealed: &SealedPeriod) -> std::result::Result<(), WriteError> {
        let payload = statement(&self.witness, sealed.start, sealed.end, &sealed.subjects)
            .map_err(WriteError::Refused)?;
        let path = manifest_path(sealed.start, sealed.end).map_err(WriteError::Refused)?;
        let envelope = self
            .signer
            .sign_manifest(PAYLOAD_TYPE, payload.clone())
            .await
            .map_err(WriteError::Unavailable)?;
        match envelope_payload(&envelope) {
            Ok((payload_type, signed)) if payload_type == PAYLOAD_TYPE && signed == payload => {}
            _ => {
                return Err(WriteError::Unavailable(Error::Signer {
                    detail: "the envelope returned is not over the manifest sent".to_owned(),
                }));
            }
        }
        match self.create(&path, envelope).await {
            Ok(None) => self.sync_local_all().await.map_err(WriteError::Unavailable),
            // Written before a crash or a lost answer: same statement, another
            // (randomized) signature.
            Ok(Some(existing))
                if envelope_payload(&existing).is_ok_and(|(_, stored)| stored == payload) =>
            {
                self.sync_local_all().await.map_err(WriteError::Unavailable)
            }
            Ok(Some(_)) => Err(WriteError::Refused(Error::Archive {
                detail: format!("{path} already holds another manifest"),
            })),
            Err(error) => Err(WriteError::Unavailable(error)),
        }
    }
}

/// Writes a batch to a local archive in one blocking call (see
/// [`local`](super::local)) and makes it durable with one `syncfs`: an object
/// counts as written only once that barrier passed.
async fn write_local_batch(
    root: PathBuf,
    batch: &[Queued],
) -> Vec<std::result::Result<(), WriteError>> {
    let objects: Vec<(String, Vec<u8>)> = batch
        .iter()
        .map(|queued| {
            (
                queued.checkpoint.path().to_string(),
                queued.checkpoint.note().to_vec(),
            )
        })
        .collect();
    let count = objects.len();
    let unavailable = |detail: String| WriteError::Unavailable(Error::Archive { detail });
    let written = match tokio::task::spawn_blocking(move || {
        let written = create_batch(&root, &objects);
        (written, objects)
    })
    .await
    {
        Ok(written) => written,
        Err(error) => {
            return (0..count)
                .map(|_| Err(unavailable(format!("local archive task: {error}"))))
                .collect();
        }
    };
    let (
        LocalBatch {
            objects: created,
            synced,
        },
        objects,
    ) = written;
    let synced = synced.map_err(|e| format!("syncfs of the archive: {e}"));
    created
        .into_iter()
        .zip(objects)
        .map(|(outcome, (name, note))| match outcome {
            Ok(Created::New) => synced.clone().map_err(unavailable),
            Ok(Created::Existing(found)) => accept_existing(&name, &note, &found)
                .and_then(|()| synced.clone().map_err(unavailable)),
            Err(error) => Err(unavailable(format!("{name}: {error}"))),
        })
        .collect()
}

/// The rule for a checkpoint's name found taken, in every kind of archive:
/// the same bytes are a retry of a write whose answer was lost (accepted);
/// other bytes are never overwritten, and the checkpoint is refused.
fn accept_existing(name: &str, note: &[u8], found: &[u8]) -> std::result::Result<(), WriteError> {
    if found == note {
        Ok(())
    } else {
        Err(WriteError::Refused(Error::Archive {
            detail: format!("{name} already holds different bytes"),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_periods_in_one_second_never_share_a_name() {
        // Closing at the second the period started would name it `T-T`, and
        // the next full period in that second `T-T` again.
        assert_eq!(early_close_second(100, 100), None);
        assert_eq!(early_close_second(100, 101), Some(101));
        assert_eq!(early_close_second(100, 99), Some(101));
    }

    #[tokio::test]
    async fn a_full_period_closes_after_the_second_it_started() {
        let start = unix_now();
        let closed = close_early_at(start).await;
        assert!(closed > start);
        assert!(closed <= unix_now().max(start + 1));
    }
}
