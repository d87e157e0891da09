//! Air-gap mode: the witness verifies signed Rekor mirror bundles from a
//! directory and cosigns them with the signer's (offline) key, with no network
//! beyond its gRPC link to the signer.
//!
//! # No HTTP client, by construction
//!
//! [`crate::service::server::run`] branches on
//! [`ServiceMode`](crate::service::config::ServiceMode) before building
//! anything, and air-gap mode runs [`run`] here instead of the online path.
//! This module never names the feeders, the consistency-proof fetcher
//! (`feeder::LogProofSource`), the archive (whose object-store backends speak
//! HTTP) or `reqwest`, so no code path from it can construct an HTTP client:
//! the only connections it opens are the signer's tonic channel
//! ([`GrpcSigner`]) and, inbound, the gRPC listener. The state store must be a
//! SQLite file (a PostgreSQL URL is refused with `mirror_path`). The test
//! `witness-core/tests/airgap.rs` runs the real binaries inside a network
//! namespace holding only loopback to show it.
//!
//! # The mirror directory
//!
//! ```text
//! <mirror_path>/<bundle>/rekor-mirror.car            one bundle per subdirectory
//! <mirror_path>/<bundle>/rekor-mirror.car.dsse.json
//! <mirror_path>/audit/<origin-hash>/<size>.checkpoint written by the witness
//! <mirror_path>/audit/manifest.dsse.json              written by the witness
//! <mirror_path>/audit/rejected.jsonl                  written by the witness
//! ```
//!
//! - A bundle is a subdirectory holding both files; `audit` and names starting
//!   with `.` are not bundles (copy a bundle in under a `.name` and rename it
//!   into place, so it is never seen half-written; a half-written one is only
//!   rejected until its files change).
//! - Each scan reads every bundle's statement (unverified, only to order and
//!   route it) and processes bundles in order of their predicate's `size`,
//!   then of their directory name, so successive bundles of a log (a full
//!   mirror, then incremental ones) are consumed oldest first, whatever their
//!   names.
//! - A bundle is consumed once its audit checkpoint
//!   `audit/<origin-hash>/<size>.checkpoint` exists (`<origin-hash>` is the hex
//!   SHA-256 of the origin, `<size>` the tree size in decimal); later scans skip
//!   it.
//! - Otherwise it is checked by [`verify_bundle`] against the log's configured
//!   key, the mirror producer's key and the tree this witness last cosigned for
//!   the log (from its state store), then goes through the very same
//!   [`Witness::add_checkpoint`] as a checkpoint pushed online (old size = the
//!   stored size, the consistency proof the verifier returned), so the
//!   witness's no-rollback/no-fork rules, the store's compare-and-swap and the
//!   signer's fork guard all apply. Then the cosigned note (checkpoint, the
//!   log's signatures, the witness's cosignatures: what the monitoring endpoint
//!   serves) is written to its audit file, and `audit/manifest.dsse.json` is
//!   re-signed over every audit checkpoint.
//! - A bundle that fails is not cosigned. Its reason (the error's kind and
//!   message) is logged, appended to `audit/rejected.jsonl` and counted in
//!   `witness_verify_failures_total`; when the bundle carries a checkpoint
//!   validly signed by the log that is inconsistent with what this witness
//!   cosigned (a fork), the note is kept as misbehaviour evidence in the state
//!   store, as the online path does. The rejection is remembered by the files'
//!   sizes and modification times, so it is not retried until they change (or
//!   the witness restarts).
//!
//! The manifest is the archive's (see [`crate::service::archive`]): an in-toto
//! Statement v1 with predicate `https://rekor-witness.dev/checkpoint-archive/v1`
//! whose subjects are the audit checkpoints (names relative to `audit/`), in a
//! DSSE envelope signed by the signer's manifest key, so
//! [`verify_manifest`](crate::service::archive::verify_manifest) checks it. Its
//! period runs from the earliest to the latest cosignature timestamp in the
//! audit checkpoints. It is rewritten whole (temporary file, fsync, rename)
//! after each cosigned bundle; at most
//! [`MAX_MANIFEST_SUBJECTS`](crate::service::archive::MAX_MANIFEST_SUBJECTS)
//! audit checkpoints fit in it.
//!
//! Re-cosigning on `checkpoint_interval` does not run in air-gap mode: every
//! cosignature is of a bundle that was just verified, and recorded in the audit
//! directory.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::checkpoint::verify_checkpoint_note;
use crate::mirror::{
    CAR_FILE as BUNDLE_CAR, ENVELOPE_FILE as BUNDLE_ENVELOPE, MirrorFault, parse_statement,
};
use crate::note::{VerifierKey, parse_note, verify_note};
use crate::service::archive::{
    MAX_MANIFEST_SUBJECTS, ManifestSigner, ManifestSubject, ManifestVerifier, PAYLOAD_TYPE,
};
use crate::service::config::{AirgapConfig, WitnessConfig};
use crate::service::metrics::WitnessMetrics;
use crate::service::mirror::{TrustedTree, VerifiedMirror, verify_bundle};
use crate::service::server::{open_store, serve_grpc, signer_keys, stopping};
use crate::service::signer_client::GrpcSigner;
use crate::service::store::{MisbehaviourEvidence, StoredTree};
use crate::service::witness::{ShardedLog, Witness};
use crate::service::{archive, now_seconds};
use crate::{Error, Result};

/// The audit directory inside the mirror path.
pub const AUDIT_DIR: &str = "audit";
/// The audit manifest inside the audit directory.
pub const AUDIT_MANIFEST: &str = "manifest.dsse.json";
/// The rejection record inside the audit directory (JSON lines).
pub const AUDIT_REJECTED: &str = "rejected.jsonl";

/// The largest bundle envelope read to order bundles. Its predicate lists the
/// entry-bundle paths (about 40 bytes each, one per 256 entries): a
/// 100,000,000-entry mirror lists 390,625 of them, about 16 MB, 21 MB in base64.
/// 64 MiB leaves room above that; verification applies its own bound.
const MAX_BUNDLE_ENVELOPE_SIZE: u64 = 64 << 20;

/// What the statement of a bundle says, read without verifying it: only to
/// order bundles, pick the log's key and previous state, and name the bundle
/// in logs. [`verify_bundle`] parses it strictly and checks it is signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleClaim {
    /// The origin the predicate names.
    pub origin: String,
    /// The tree size the predicate names.
    pub size: u64,
    /// The checkpoint note the predicate carries.
    pub checkpoint: String,
}

/// The envelope's payload; the signature is [`verify_bundle`]'s business.
#[derive(Deserialize)]
struct EnvelopeForOrdering {
    payload: String,
}

/// Reads the (unverified) claim of the bundle in `dir`.
pub fn read_claim(dir: &Path) -> Result<BundleClaim> {
    let path = dir.join(BUNDLE_ENVELOPE);
    let unreadable =
        |e: std::io::Error| MirrorFault::Unreadable.error(format!("{}: {e}", path.display()));
    let malformed = |detail: String| MirrorFault::MalformedManifest.error(detail);
    let size = std::fs::metadata(&path).map_err(unreadable)?.len();
    if size > MAX_BUNDLE_ENVELOPE_SIZE {
        return Err(Error::TooLarge {
            what: "mirror bundle envelope",
            size: usize::try_from(size).unwrap_or(usize::MAX),
            max: MAX_BUNDLE_ENVELOPE_SIZE as usize,
        });
    }
    let bytes = std::fs::read(&path).map_err(unreadable)?;
    let envelope: EnvelopeForOrdering =
        serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))?;
    let payload = BASE64
        .decode(envelope.payload)
        .map_err(|_| malformed("payload is not base64".into()))?;
    let (_, predicate) = parse_statement(&payload)?;
    Ok(BundleClaim {
        origin: predicate.origin,
        size: predicate.size,
        checkpoint: predicate.checkpoint,
    })
}

/// The audit folder of a log: the hex SHA-256 of its origin, so that no origin
/// can leave the audit directory or share a folder with another.
pub fn origin_hash(origin: &str) -> String {
    hex::encode(Sha256::digest(origin.as_bytes()))
}

/// The audit checkpoint of `origin` at `size`, relative to the audit directory.
pub fn audit_checkpoint_name(origin: &str, size: u64) -> String {
    format!("{}/{size}.checkpoint", origin_hash(origin))
}

/// What became of one bundle in a scan.
#[derive(Debug)]
pub enum BundleOutcome {
    /// Verified, cosigned, and written to the audit directory.
    Cosigned {
        dir: PathBuf,
        origin: String,
        size: u64,
    },
    /// Refused: nothing was cosigned.
    Rejected { dir: PathBuf, error: Error },
}

/// The sizes and modification times of a bundle's two files: a rejected bundle
/// is examined again only once they change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    car: (u64, Option<SystemTime>),
    envelope: (u64, Option<SystemTime>),
}

fn fingerprint(dir: &Path) -> Option<Fingerprint> {
    let of = |name: &str| {
        std::fs::metadata(dir.join(name))
            .ok()
            .filter(std::fs::Metadata::is_file)
            .map(|m| (m.len(), m.modified().ok()))
    };
    Some(Fingerprint {
        car: of(BUNDLE_CAR)?,
        envelope: of(BUNDLE_ENVELOPE)?,
    })
}

/// Consumes the mirror bundles of a directory: see the module documentation.
pub struct MirrorConsumer {
    witness: Arc<Witness>,
    sharded: Vec<ShardedLog>,
    mirror_key: ManifestVerifier,
    mirror_path: PathBuf,
    witness_name: String,
    own_keys: Vec<VerifierKey>,
    manifest_signer: Arc<dyn ManifestSigner>,
    rejected: Mutex<HashMap<PathBuf, Fingerprint>>,
}

impl MirrorConsumer {
    /// A consumer of the bundles in `mirror_path`, cosigning through `witness`
    /// and signing the audit manifest with `manifest_signer`. `sharded` are the
    /// Rekor v1 hosts whose shard origins take their key; `witness_name` and
    /// `own_keys` are the signer's cosigner name and keys (the manifest's
    /// `witness`, and the keys whose cosignature timestamps date it).
    pub fn new(
        witness: Arc<Witness>,
        sharded: Vec<ShardedLog>,
        mirror_key: ManifestVerifier,
        mirror_path: PathBuf,
        witness_name: String,
        own_keys: Vec<VerifierKey>,
        manifest_signer: Arc<dyn ManifestSigner>,
    ) -> MirrorConsumer {
        MirrorConsumer {
            witness,
            sharded,
            mirror_key,
            mirror_path,
            witness_name,
            own_keys,
            manifest_signer,
            rejected: Mutex::new(HashMap::new()),
        }
    }

    fn audit_dir(&self) -> PathBuf {
        self.mirror_path.join(AUDIT_DIR)
    }

    /// Scans until `stop` completes, every `interval`.
    pub async fn run(self, interval: Duration, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            if let Err(error) = self.scan().await {
                tracing::error!(
                    mirror_path = %self.mirror_path.display(),
                    error = %error,
                    "mirror scan failed"
                );
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// One pass over the mirror directory: every bundle not consumed yet and
    /// not already rejected in its current form, in order (see the module
    /// documentation). Errors of the directory itself (unreadable, audit not
    /// writable) end the pass; a bundle's own failure is its outcome.
    pub async fn scan(&self) -> Result<Vec<BundleOutcome>> {
        let mut bundles = Vec::new();
        let entries =
            std::fs::read_dir(&self.mirror_path).map_err(|e| io_error(&self.mirror_path, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&self.mirror_path, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name == AUDIT_DIR || name.starts_with('.') {
                continue;
            }
            let dir = entry.path();
            let Some(print) = fingerprint(&dir) else {
                continue;
            };
            if self.lock_rejected().get(&dir) == Some(&print) {
                continue;
            }
            let claim = read_claim(&dir);
            let order = claim.as_ref().map_or(0, |c| c.size);
            bundles.push((order, name.to_owned(), dir, print, claim));
        }
        bundles.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));

        let mut outcomes = Vec::new();
        for (_, _, dir, print, claim) in bundles {
            let claim = match claim {
                Ok(claim) => claim,
                Err(error) => {
                    outcomes.push(self.reject(dir, print, None, error).await);
                    continue;
                }
            };
            let audit_name = audit_checkpoint_name(&claim.origin, claim.size);
            if self.audit_dir().join(&audit_name).is_file() {
                continue;
            }
            match self.consume(&dir, &claim).await {
                Ok(verified) => {
                    tracing::info!(
                        bundle = %dir.display(),
                        origin = %verified.origin,
                        size = verified.size,
                        start = verified.start,
                        "mirror bundle verified and cosigned"
                    );
                    outcomes.push(BundleOutcome::Cosigned {
                        dir,
                        origin: verified.origin,
                        size: verified.size,
                    });
                }
                Err(error) => {
                    outcomes.push(self.reject(dir, print, Some(&claim), error).await);
                }
            }
        }
        Ok(outcomes)
    }

    fn lock_rejected(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Fingerprint>> {
        self.rejected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The configured keys of `origin`: a trusted log's, or its Rekor v1
    /// host's for a shard origin `<host> - <tree ID>` (the witness re-checks
    /// the exact shard shape when it cosigns).
    fn log_keys(&self, origin: &str) -> Result<Vec<VerifierKey>> {
        if let Some(log) = self
            .witness
            .trusted_logs()
            .into_iter()
            .find(|l| l.origin == origin)
        {
            return Ok(log.keys.clone());
        }
        self.sharded
            .iter()
            .find(|s| {
                origin
                    .strip_prefix(&s.origin_prefix)
                    .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(|s| s.keys.clone())
            .ok_or_else(|| Error::UnknownOrigin {
                origin: origin.to_owned(),
            })
    }

    /// Verifies one bundle, cosigns it through the witness and writes the audit
    /// files.
    async fn consume(&self, dir: &Path, claim: &BundleClaim) -> Result<VerifiedMirror> {
        let keys = self.log_keys(&claim.origin)?;
        // A configured log has exactly one key (`[[log]] key`, `rekor_keys`).
        let log_key = keys.first().ok_or_else(|| Error::UnknownOrigin {
            origin: claim.origin.clone(),
        })?;
        let stored = self.witness.store().state(&claim.origin).await?;
        let previous = stored.as_ref().map(|s| TrustedTree {
            size: s.tree.size,
            root: s.tree.root,
        });
        let verified = verify_bundle(dir, log_key, &self.mirror_key, previous.as_ref()).await?;
        if verified.origin != claim.origin {
            return Err(Error::OriginMismatch {
                expected: claim.origin.clone(),
                found: verified.origin,
            });
        }
        // The same path as a pushed checkpoint: parse, the log's signature, old
        // size = the stored size, consistency, the signer's fork guard, the
        // compare-and-swap, and only then the cosignature.
        let old_size = previous.as_ref().map_or(0, |t| t.size);
        self.witness
            .add_checkpoint(
                old_size,
                verified.consistency_proof.clone(),
                &verified.checkpoint_note,
            )
            .await?;
        let state = self.witness.store().state(&verified.origin).await?;
        let state = state
            .filter(|s| {
                s.tree
                    == StoredTree {
                        size: verified.size,
                        root: verified.root,
                    }
            })
            .ok_or_else(|| Error::Storage {
                detail: format!(
                    "the stored state of {:?} moved on before its audit checkpoint was written",
                    verified.origin
                ),
            })?;
        let audit_dir = self.audit_dir();
        let name = audit_checkpoint_name(&verified.origin, verified.size);
        write_durably(&audit_dir.join(&name), &state.note)?;
        self.write_manifest().await?;
        Ok(verified)
    }

    /// Records a rejected bundle: log line, `rejected.jsonl`, metrics, and
    /// misbehaviour evidence for a log-signed checkpoint inconsistent with the
    /// witness's state.
    async fn reject(
        &self,
        dir: PathBuf,
        print: Fingerprint,
        claim: Option<&BundleClaim>,
        error: Error,
    ) -> BundleOutcome {
        // A lost race with another cosignature of the same log is retried on
        // the next scan, not remembered as a rejection.
        if !matches!(
            error,
            Error::OldSizeMismatch { .. } | Error::Signer { .. } | Error::Storage { .. }
        ) {
            self.lock_rejected().insert(dir.clone(), print);
        }
        let origin = claim.map(|c| c.origin.as_str());
        tracing::error!(
            bundle = %dir.display(),
            origin,
            size = claim.map(|c| c.size),
            reason = error.kind(),
            error = %error,
            "mirror bundle rejected: nothing cosigned"
        );
        let record = serde_json::json!({
            "bundle": dir.file_name().map(|n| n.to_string_lossy().into_owned()),
            "origin": origin,
            "size": claim.map(|c| c.size),
            "reason": error.kind(),
            "detail": error.to_string(),
            "at": now_seconds(),
        });
        if let Err(write_error) =
            append_line(&self.audit_dir().join(AUDIT_REJECTED), &record.to_string())
        {
            tracing::error!(error = %write_error, "could not record the rejection");
        }
        // Only trusted origins become metric labels (bounded cardinality).
        if let Some(claim) = claim
            && let Ok(keys) = self.log_keys(&claim.origin)
        {
            self.witness.metrics().verify_failure(&claim.origin, &error);
            if is_inconsistency(&error) {
                self.keep_evidence(claim, &keys, &error).await;
            }
        }
        BundleOutcome::Rejected { dir, error }
    }

    /// Keeps the bundle's checkpoint as misbehaviour evidence when the log's
    /// signature on it verifies (an unsigned claim proves nothing about the
    /// log).
    async fn keep_evidence(&self, claim: &BundleClaim, keys: &[VerifierKey], error: &Error) {
        let Ok(note) = parse_note(claim.checkpoint.as_bytes()) else {
            return;
        };
        if verify_checkpoint_note(note.clone(), keys, Some(&claim.origin)).is_err() {
            return;
        }
        let cosigned = match self.witness.store().state(&claim.origin).await {
            Ok(state) => state.map(|s| s.tree),
            Err(_) => None,
        };
        self.witness.metrics().misbehaviour(&claim.origin, error);
        let evidence = MisbehaviourEvidence {
            origin: claim.origin.clone(),
            note: note.to_bytes(),
            cosigned,
            reason: error.kind().to_owned(),
            received_at: now_seconds(),
        };
        if let Err(store_error) = self.witness.store().record_evidence(&evidence).await {
            tracing::error!(origin = %claim.origin, error = %store_error, "could not store misbehaviour evidence");
        }
    }

    /// Re-signs `audit/manifest.dsse.json` over every audit checkpoint.
    async fn write_manifest(&self) -> Result<()> {
        let audit_dir = self.audit_dir();
        let mut subjects = Vec::new();
        let mut period: Option<(u64, u64)> = None;
        for log_dir in sorted_entries(&audit_dir)? {
            if !log_dir.is_dir() {
                continue;
            }
            for file in sorted_entries(&log_dir)? {
                let Some(name) = relative_name(&audit_dir, &file) else {
                    continue;
                };
                if !name.ends_with(".checkpoint") {
                    continue;
                }
                let note = std::fs::read(&file).map_err(|e| io_error(&file, e))?;
                // Only this witness's cosignatures date the period; an audit
                // file without one is not ours and is refused.
                let timestamps: Vec<u64> = verify_note(parse_note(&note)?, &self.own_keys)?
                    .verified()
                    .iter()
                    .filter_map(|v| v.timestamp)
                    .collect();
                for timestamp in timestamps {
                    period = Some(period.map_or((timestamp, timestamp), |(start, end)| {
                        (start.min(timestamp), end.max(timestamp))
                    }));
                }
                subjects.push(ManifestSubject {
                    name,
                    sha256: Sha256::digest(&note).into(),
                });
            }
        }
        if subjects.len() > MAX_MANIFEST_SUBJECTS {
            return Err(Error::Archive {
                detail: format!(
                    "{} audit checkpoints are more than one manifest lists ({MAX_MANIFEST_SUBJECTS})",
                    subjects.len()
                ),
            });
        }
        let (start, end) = period.unwrap_or((0, 0));
        let payload = archive::manifest_statement(&self.witness_name, start, end, &subjects)?;
        let envelope = self
            .manifest_signer
            .sign_manifest(PAYLOAD_TYPE, payload)
            .await?;
        write_durably(&audit_dir.join(AUDIT_MANIFEST), &envelope)
    }
}

/// Verification failures that say the log's history differs from the one this
/// witness cosigned (a fork), as opposed to a damaged or unsigned bundle.
/// (The witness's own consistency failures after verification keep their
/// evidence in [`Witness::add_checkpoint`].)
fn is_inconsistency(error: &Error) -> bool {
    matches!(
        error,
        Error::Mirror {
            fault: MirrorFault::Fork,
            ..
        }
    )
}

fn io_error(path: &Path, error: std::io::Error) -> Error {
    Error::Archive {
        detail: format!("{}: {error}", path.display()),
    }
}

/// The entries of a directory, sorted by name (none if it does not exist).
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io_error(dir, error)),
    };
    let mut paths = entries
        .map(|entry| entry.map(|e| e.path()).map_err(|e| io_error(dir, e)))
        .collect::<Result<Vec<_>>>()?;
    paths.sort();
    Ok(paths)
}

/// `file` relative to `root`, with `/` separators.
fn relative_name(root: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = relative.iter().map(|p| p.to_str()).collect();
    Some(parts?.join("/"))
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new one:
/// a temporary file, fsynced, renamed into place, and the directory fsynced.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().ok_or_else(|| Error::Archive {
        detail: format!("{} has no parent directory", path.display()),
    })?;
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    std::fs::File::create(&temporary)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .map_err(|e| io_error(&temporary, e))?;
    std::fs::rename(&temporary, path).map_err(|e| io_error(path, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

/// Appends one line to a JSON-lines file, fsynced.
fn append_line(path: &Path, line: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| {
            file.write_all(format!("{line}\n").as_bytes())?;
            file.sync_all()
        })
        .map_err(|e| io_error(path, e))
}

/// Serves the witness in air-gap mode on `listener` until `shutdown`
/// completes: the gRPC service (the monitoring endpoint serves what was
/// cosigned) and the mirror consumer. No feeder, no proof fetcher, no archive,
/// no re-cosigning: see the module documentation.
pub async fn run(
    listener: TcpListener,
    config: &WitnessConfig,
    airgap: &AirgapConfig,
    base: &Path,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let pem = std::fs::read_to_string(&airgap.mirror_key).map_err(|e| Error::Config {
        detail: format!("mirror_key {}: {e}", airgap.mirror_key.display()),
    })?;
    let mirror_key = ManifestVerifier::from_pem(&pem).map_err(|e| Error::Config {
        detail: format!("mirror_key {}: {e}", airgap.mirror_key.display()),
    })?;
    if !airgap.mirror_path.is_dir() {
        return Err(Error::Config {
            detail: format!(
                "mirror_path {} is not a directory",
                airgap.mirror_path.display()
            ),
        });
    }
    let (stop, stopped) = watch::channel(false);
    let metrics = Arc::new(WitnessMetrics::new()?);
    let store = open_store(config).await?;
    let signer = GrpcSigner::connect(&config.signer, metrics.clone())?;
    let keys = signer_keys(&signer, &mut stopped.clone()).await?;
    tracing::info!(
        witness = %keys.name,
        mirror_path = %airgap.mirror_path.display(),
        "air-gap mode: verify-only over mirror bundles, no outbound network"
    );
    let logs = config.trusted_logs(base)?;
    let sharded = logs.sharded.clone();
    let witness = Arc::new(
        Witness::new(
            logs.logs,
            logs.sharded,
            keys.cosigning.clone(),
            store,
            Arc::new(signer.clone()),
            None,
            metrics,
        )
        .await?,
    );
    let consumer = MirrorConsumer::new(
        witness.clone(),
        sharded,
        mirror_key,
        airgap.mirror_path.clone(),
        keys.name.clone(),
        keys.cosigning.clone(),
        Arc::new(signer),
    );
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(consumer.run(airgap.scan_interval, stopping(stopped.clone())));
    let served = serve_grpc(listener, config, witness, shutdown, &stop).await;
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_names_cannot_leave_the_audit_directory() {
        for origin in ["../../etc", "a/b", "", "log.example/😀"] {
            let name = audit_checkpoint_name(origin, 42);
            let (folder, file) = name.split_once('/').unwrap();
            assert_eq!(folder.len(), 64);
            assert!(folder.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(file, "42.checkpoint");
        }
        assert_ne!(origin_hash("a"), origin_hash("A"));
    }

    #[test]
    fn unreadable_or_malformed_claims_are_mirror_faults() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read_claim(dir.path()).unwrap_err().kind(),
            "mirror_unreadable"
        );
        for garbage in [
            &b"not json"[..],
            br#"{"payload":"%%%"}"#,
            br#"{"payload":"e30="}"#,
        ] {
            std::fs::write(dir.path().join(BUNDLE_ENVELOPE), garbage).unwrap();
            assert_eq!(
                read_claim(dir.path()).unwrap_err().kind(),
                "mirror_malformed_manifest"
            );
        }
    }
}
