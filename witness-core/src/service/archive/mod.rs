//! The checkpoint archive: every cosigned checkpoint written to object storage,
//! and per period a DSSE-signed manifest listing their digests.
//!
//! # Layout
//!
//! Under the archive's root (a local directory, or an S3 bucket and prefix):
//!
//! ```text
//! checkpoints/<origin>/<size folder>/<size>-<cosigned at>-<sha256>.txt
//! manifests/<period start>-<period end>.dsse.json
//! ```
//!
//! - `<origin>` is [`origin_segment`]: the origin with every byte other than
//!   `[a-z0-9-]` and a non-leading `.` escaped as `_XX`, and names over 160
//!   bytes cut and suffixed with the SHA-256 of the origin. No origin can leave
//!   its folder or share it with another, even on case-insensitive filesystems.
//! - `<size>` is the tree size, zero-padded to 19 digits so listings sort.
//! - `<size folder>` is the size rounded down to a multiple of 1,000, also 19
//!   digits: a folder holds the checkpoints of a thousand consecutive sizes, so
//!   a log growing one entry at a time costs a new directory once per thousand
//!   cosignatures rather than at each one.
//! - `<cosigned at>` is the cosignature time, `YYYYMMDDTHHMMSSZ` (UTC).
//! - `<sha256>` is the hex SHA-256 of the object: the note exactly as the
//!   witness returned it, checkpoint text and every signature line. Every
//!   cosignature is its own object, re-cosignatures of the same tree included.
//! - A manifest is a DSSE envelope (JSON, payload type
//!   `application/vnd.in-toto+json`) over an in-toto Statement v1 listing each
//!   checkpoint object written in the period once, in the order written; a
//!   period in which nothing was written has no manifest. [`verify_manifest`]
//!   checks one against the signer's manifest key.
//!
//! ```json
//! {"_type": "https://in-toto.io/Statement/v1",
//!  "subject": [{"name": "checkpoints/…/….txt", "digest": {"sha256": "<hex>"}}],
//!  "predicateType": "https://rekor-witness.dev/checkpoint-archive/v1",
//!  "predicate": {"witness": "<name>", "periodStart": "<RFC 3339>",
//!                "periodEnd": "<RFC 3339>", "count": <number of subjects>}}
//! ```
//!
//! Nothing is ever overwritten: objects are created with `PutMode::Create`. An
//! object already holding the same bytes is a retry and accepted; other bytes
//! under the name are reported, counted and left alone, and the refused
//! checkpoint is kept in the spool's `conflicts/`.
//!
//! # Durability and ordering
//!
//! The witness reveals a cosignature only after the archive holds it durably.
//! With a SQLite state ([`Archive::open_with_outbox`]) the state's own
//! transaction holds it: the compare-and-swap that reveals the cosignature
//! also writes the note to the state's archive outbox, one durable commit for
//! both, and a mover appends the outbox's rows to the spool afterwards, a
//! batch and one `fdatasync` at a time, then removes them from the outbox
//! (see `outbox.rs`: a crash between the two moves nothing twice). The spool
//! is then off the request path.
//!
//! Otherwise (a PostgreSQL state, whose replicas each keep their own spool),
//! [`ArchiveSubmitter::submit`] parses the note, hands it to a bounded
//! in-memory queue and waits until the archive has written it to the local
//! spool (see [`ArchiveConfig::spool_dir`]). The spool is written with group
//! commit: every checkpoint submitted while one batch is being written goes
//! into the next batch, one append to the open queue segment and one
//! `fdatasync` for all of them, so the cost of durability is shared by the
//! requests in flight, and no file is created or removed per batch. When the disk falls
//! behind, the queue fills and submitters wait for room (backpressure); a
//! checkpoint is never dropped once accepted. A batch the disk refuses fails
//! every submission in it, and the witness then refuses the requests, so no
//! cosignature is revealed that the archive could lose.
//!
//! The archive then uploads from the spool with retries and exponential
//! backoff, a batch at a time, reading the queue (unless a backlog is
//! draining) at most once per [`ARCHIVE_UPLOAD_LINGER`], so that a trickle of
//! cosignatures is not a batch each: the objects of a batch are written, made durable
//! together (one `syncfs` for a local archive), listed in the period's journal
//! with one fsynced append, and only then counted off their queue segment,
//! which is removed once closed and every checkpoint in it is finished. So an
//! object store outage of any length, or a restart or crash at any point,
//! loses nothing: the spool is the queue, and at start the archive resumes it.
//! Memory stays bounded during an outage because only about `queue_capacity`
//! spooled checkpoints are read back at a time.
//!
//! Periods are aligned to multiples of [`ArchiveConfig::period`]. At each
//! boundary the period's journal is sealed and its manifest signed through the
//! [`ManifestSigner`] and written; on shutdown the partial period gets its
//! manifest too, and after a restart the rest of that period starts at the
//! restart (the manifest names give the exact span). After a crash the open
//! journal is resumed instead, and a checkpoint it lists is not written again,
//! so each object is listed once. An object can be listed in two periods'
//! manifests only if a crash cut its write short, or came after its period's
//! manifest was written but before its queue segment was removed (a period's
//! segment is closed when the period is sealed and normally removed before the
//! manifest is written; it stays while a checkpoint in it waits for a retry). A period reaching
//! [`ARCHIVE_MANIFEST_SUBJECTS`] objects is closed early. When the signer or the
//! store is unavailable the manifest is retried later, also after a restart;
//! an unsigned manifest is never written.

mod config;
mod layout;
mod local;
mod manifest;
mod outbox;
mod spool;
mod uploader;

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::service::metrics::WitnessMetrics;
use crate::service::store::ArchiveOutbox;
use crate::{Error, Result};

pub use config::ArchiveConfig;
pub use layout::{
    ArchivedCheckpoint, CHECKPOINTS_DIR, MANIFESTS_DIR, SIZES_PER_FOLDER, origin_segment,
    size_folder,
};
pub use manifest::{
    ARCHIVE_MANIFEST_SUBJECTS, MAX_ENVELOPE_SIZE, MAX_MANIFEST_SUBJECTS, ManifestSubject,
    ManifestVerifier, PAYLOAD_TYPE, PREDICATE_TYPE, STATEMENT_TYPE, VerifiedManifest,
    verify_envelope, verify_manifest,
};

pub(crate) use manifest::envelope as dsse_envelope;
pub(crate) use manifest::statement as manifest_statement;
use outbox::OutboxMover;
pub use outbox::{OUTBOX_ROWS_PER_QUEUE_SLOT, OutboxTicket};
use spool::Spool;
pub use uploader::ARCHIVE_UPLOAD_LINGER;
use uploader::{Uploader, UploaderSettings, unix_now};

/// Signs manifests: the signer's `SignManifest` call (manifest key, DSSE).
#[async_trait]
pub trait ManifestSigner: Send + Sync + 'static {
    /// Returns the DSSE envelope (JSON) over `payload` of type `payload_type`.
    async fn sign_manifest(&self, payload_type: &str, payload: Vec<u8>) -> Result<Vec<u8>>;
}

/// The archive, opened and not yet running: hand out [`ArchiveSubmitter`]s,
/// then [`Archive::run`] it.
pub struct Archive {
    spool: Arc<Spool>,
    next_sequence: u64,
    /// Set when checkpoints come from the state store's outbox instead of
    /// submissions.
    outbox: Option<OutboxMover>,
    ticket: Option<Arc<OutboxTicket>>,
    uploader: Uploader,
    metrics: Arc<WitnessMetrics>,
    sender: mpsc::Sender<Submission>,
    receiver: mpsc::Receiver<Submission>,
}

/// A checkpoint waiting for the spool, and who to tell once it is durable.
struct Submission {
    checkpoint: ArchivedCheckpoint,
    spooled: oneshot::Sender<Result<()>>,
}

/// The most checkpoints written to the spool in one batch (one file, one fsync).
const MAX_SPOOL_BATCH: usize = 1_024;

/// Hands cosigned checkpoints to the archive; cheap to clone.
#[derive(Clone)]
pub struct ArchiveSubmitter {
    sender: mpsc::Sender<Submission>,
    outbox: Option<Arc<OutboxTicket>>,
    metrics: Arc<WitnessMetrics>,
}

impl ArchiveSubmitter {
    /// When the archive reads the state store's outbox: what the witness needs
    /// to write each cosigned checkpoint there, in the state's own transaction,
    /// instead of calling [`ArchiveSubmitter::submit`].
    pub fn outbox(&self) -> Option<Arc<OutboxTicket>> {
        self.outbox.clone()
    }

    /// Archives a cosigned checkpoint note (checkpoint text and signature
    /// lines, exactly as the witness returns it) cosigned at `cosigned_at`
    /// (seconds since the Unix epoch): returns once it is durable in the spool,
    /// from where it reaches the object store whatever happens next. Waits
    /// while `queue_capacity` checkpoints are already waiting for the spool's
    /// disk. Fails, and counts a failed checkpoint write, if the note is not a
    /// checkpoint of `origin`, if the archive has stopped, or if the spool's
    /// disk refused the batch.
    pub async fn submit(&self, origin: &str, cosigned_at: u64, note: &[u8]) -> Result<()> {
        if self.outbox.is_some() {
            self.metrics.archive_write("checkpoint", false);
            return Err(Error::Archive {
                detail: "this archive takes cosigned checkpoints from the state store's outbox, \
                         not by submission"
                    .to_owned(),
            });
        }
        let checkpoint = match ArchivedCheckpoint::new(origin, cosigned_at, note) {
            Ok(checkpoint) => checkpoint,
            Err(error) => {
                self.metrics.archive_write("checkpoint", false);
                return Err(error);
            }
        };
        let stopped = || Error::Archive {
            detail: "the archive has stopped".to_owned(),
        };
        let (spooled, receipt) = oneshot::channel();
        if self
            .sender
            .send(Submission {
                checkpoint,
                spooled,
            })
            .await
            .is_err()
        {
            self.metrics.archive_write("checkpoint", false);
            return Err(stopped());
        }
        // The spooler counts its own failures.
        receipt.await.map_err(|_| stopped())?
    }
}

impl Archive {
    /// Opens the object store and the spool named by `config` (creating local
    /// directories; blocking file I/O) and recovers the spool's state.
    /// `witness_name` goes into every manifest; `signer` signs them.
    pub fn open(
        config: &ArchiveConfig,
        witness_name: &str,
        signer: Arc<dyn ManifestSigner>,
        metrics: Arc<WitnessMetrics>,
    ) -> Result<Archive> {
        config.validate()?;
        let storage = config.open_storage()?;
        let (spool, next_sequence) = Spool::open(&config.spool_dir)?;
        let spooled = spool.periods()?;
        let spool = Arc::new(spool);
        let uploader = Uploader::recover(
            UploaderSettings {
                store: storage.store,
                local_root: storage.local_root,
                spool: spool.clone(),
                signer,
                metrics: metrics.clone(),
                witness: witness_name.to_owned(),
                period: config.period.as_secs(),
                batch_limit: config.queue_capacity,
                max_retry_interval: config.max_retry_interval,
            },
            spooled,
            unix_now(),
        )?;
        let (sender, receiver) = mpsc::channel(config.queue_capacity);
        Ok(Archive {
            spool,
            next_sequence,
            outbox: None,
            ticket: None,
            uploader,
            metrics,
            sender,
            receiver,
        })
    }

    /// As [`Archive::open`], taking cosigned checkpoints from `outbox` (the
    /// state store, which writes each with the state that reveals it) instead
    /// of submissions: the witness writes them through
    /// [`ArchiveSubmitter::outbox`]. Resumes the outbox: the rows a crash left
    /// after moving them are removed.
    pub async fn open_with_outbox(
        config: &ArchiveConfig,
        witness_name: &str,
        signer: Arc<dyn ManifestSigner>,
        metrics: Arc<WitnessMetrics>,
        outbox: Arc<dyn ArchiveOutbox>,
    ) -> Result<Archive> {
        let mut archive = Archive::open(config, witness_name, signer, metrics.clone())?;
        let (mover, ticket) = OutboxMover::resume(
            outbox,
            archive.spool.clone(),
            archive.next_sequence,
            config.queue_capacity,
            metrics,
        )
        .await?;
        archive.outbox = Some(mover);
        archive.ticket = Some(ticket);
        Ok(archive)
    }

    /// A handle to submit checkpoints with; usable before and while the archive runs.
    pub fn submitter(&self) -> ArchiveSubmitter {
        ArchiveSubmitter {
            sender: self.sender.clone(),
            outbox: self.ticket.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Spools submissions and writes checkpoints and manifests until `shutdown`
    /// completes; then spools what was already submitted, makes one last pass
    /// at writing, and writes the manifest of the partial period. Failures are
    /// logged, counted and retried, never fatal.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Archive {
            spool,
            next_sequence,
            outbox,
            ticket: _,
            uploader,
            metrics,
            sender,
            receiver,
        } = self;
        // Only submitters keep the queue open.
        drop(sender);
        let wake = Arc::new(Notify::new());
        let (stop, stopped) = watch::channel(false);
        let intake = async {
            match outbox {
                Some(mover) => mover.run(stopped.clone(), wake.clone()).await,
                None => {
                    let spooler = Spooler {
                        spool,
                        next_sequence,
                        metrics,
                        wake: wake.clone(),
                    };
                    spooler.run(receiver, stopped.clone()).await;
                }
            }
        };
        let signal = async move {
            shutdown.await;
            // Both receivers live until `join!` returns.
            let _ = stop.send(true);
        };
        let ((), (), uploader) = tokio::join!(
            signal,
            intake,
            uploader.run_until(stopped.clone(), wake.clone()),
        );
        uploader.finish().await;
    }
}

/// Moves submissions from memory to the spool, a batch at a time.
struct Spooler {
    spool: Arc<Spool>,
    next_sequence: u64,
    metrics: Arc<WitnessMetrics>,
    wake: Arc<Notify>,
}

impl Spooler {
    async fn run(
        mut self,
        mut receiver: mpsc::Receiver<Submission>,
        mut stopped: watch::Receiver<bool>,
    ) {
        loop {
            let next = tokio::select! {
                next = receiver.recv() => next,
                _ = stopped.wait_for(|stop| *stop) => None,
            };
            let Some(first) = next else {
                break;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_SPOOL_BATCH {
                match receiver.try_recv() {
                    Ok(submission) => batch.push(submission),
                    Err(_) => break,
                }
            }
            self.write(batch).await;
        }
        // Spool what was submitted before the stop.
        receiver.close();
        let mut batch = Vec::new();
        while let Some(submission) = receiver.recv().await {
            batch.push(submission);
            if batch.len() == MAX_SPOOL_BATCH {
                self.write(std::mem::take(&mut batch)).await;
            }
        }
        if !batch.is_empty() {
            self.write(batch).await;
        }
    }

    /// Writes one batch and tells every submitter the outcome.
    async fn write(&mut self, batch: Vec<Submission>) {
        let first = self.next_sequence;
        // A failed batch's numbers are not reused: its file may have landed.
        self.next_sequence += batch.len() as u64;
        let (checkpoints, receipts): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|submission| (submission.checkpoint, submission.spooled))
            .unzip();
        let count = checkpoints.len();
        let written = self
            .spool
            .call(move |spool| spool.enqueue_batch(first, &checkpoints))
            .await;
        match &written {
            Ok(()) => self.wake.notify_one(),
            Err(error) => {
                tracing::error!(%error, checkpoints = count, "cannot spool checkpoints: refusing them");
                for _ in 0..count {
                    self.metrics.archive_write("checkpoint", false);
                }
            }
        }
        for receipt in receipts {
            // A submitter that gave up no longer listens; nothing to do.
            let _ = receipt.send(match &written {
                Ok(()) => Ok(()),
                Err(error) => Err(Error::Archive {
                    detail: error.to_string(),
                }),
            });
        }
    }
}
