//! The witness: c2sp.org/tlog-witness `add-checkpoint` and `sign-subtree`
//! semantics over the pure core, the state store and the signer.
//!
//! Order of an `add-checkpoint` (as litewitness and sunlight do it): parse,
//! verify the log's signature, check the old size and the consistency proof
//! against the stored state, have the signer cosign the re-encoded checkpoint
//! (it checks again against its own record), store the new state by
//! compare-and-swap on the tree that was checked, and only then reveal the
//! cosignature. A checkpoint validly signed by its log that fails a consistency
//! check is kept as evidence of misbehaviour and never cosigned.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use async_trait::async_trait;
use futures::StreamExt as _;

use crate::bundle::TransparencyLogEntry;
use crate::checkpoint::{Checkpoint, VerifiedCheckpoint, verify_checkpoint_note};
use crate::merkle::{Hash, MAX_PROOF_HASHES, empty_root, verify_consistency};
use crate::note::{Note, NoteSignature, SignatureType, VerifierKey, parse_note};
use crate::service::archive::OutboxTicket;
use crate::service::feeder::CheckpointSink;
use crate::service::metrics::WitnessMetrics;
use crate::service::now_seconds;
use crate::service::store::{
    CasOutcome, LogState, LogStore, MisbehaviourEvidence, StoredTree, TrustedLog,
};
use crate::{Error, Result};

/// A cosignature made by the signer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cosignature {
    /// Note signature lines, each ending in a newline.
    pub lines: Vec<String>,
    /// The cosignature timestamp (seconds since the epoch).
    pub timestamp: u64,
}

/// The signer, as the witness uses it (the gRPC client in production; the
/// service in-process in some tests).
#[async_trait]
pub trait Cosigner: Send + Sync + 'static {
    /// Cosigns `checkpoint`, proven consistent from `old_size` (the size the
    /// signer last cosigned for its origin) by `proof`. The signer answers
    /// `Error::OldSizeMismatch` (with its own stored size) when its record is
    /// elsewhere, and `Error::Signer` for every other refusal or failure.
    async fn cosign(
        &self,
        checkpoint: &Checkpoint,
        old_size: u64,
        proof: &[Hash],
    ) -> Result<Cosignature>;

    /// Signs a subtree of a checkpoint the signer cosigned.
    async fn sign_subtree(&self, request: &SubtreeRequest) -> Result<Vec<String>>;

    /// Whether the signer answers now (readiness), without signing anything.
    /// A cosigner that cannot tell is reported as unreachable.
    async fn reachable(&self) -> Result<()> {
        Err(Error::Signer {
            detail: "this cosigner has no reachability check".into(),
        })
    }
}

/// Where every cosigned checkpoint goes before it is revealed: the archive.
/// A cosignature is revealed only after `submit` returns `Ok`, or, when the
/// archive reads the state store's outbox, only by the same transaction that
/// writes it there.
#[async_trait]
pub trait CheckpointArchive: Send + Sync + 'static {
    /// Archives a cosigned checkpoint note: returns once it is durable (the
    /// archive uploads it later on its own, retrying as long as it takes).
    async fn submit(&self, origin: &str, cosigned_at: u64, note: Vec<u8>) -> Result<()>;

    /// When the archive takes cosigned checkpoints from the state store's
    /// outbox: the ticket to write them there with
    /// [`LogStore::compare_and_swap_archiving`] instead of calling `submit`.
    fn outbox(&self) -> Option<Arc<OutboxTicket>> {
        None
    }
}

/// Fetches consistency proofs from a log, for the split-view check of
/// `VerifyInclusion` when a client's checkpoint and the witness's differ in size.
#[async_trait]
pub trait ConsistencyProofSource: Send + Sync + 'static {
    /// An RFC 6962 consistency proof from `old_size` to `new_size` in `log`.
    async fn consistency_proof(
        &self,
        log: &LogKeys,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash>>;
}

/// The answer of `VerifyInclusion`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InclusionVerdict {
    pub origin: String,
    pub log_index: u64,
    pub checkpoint_size: u64,
    /// The witness's latest cosigned size (0 when nothing is cosigned).
    pub witness_size: u64,
    /// The entry's inclusion proof verifies against its (log-signed) checkpoint.
    pub inclusion_verified: bool,
    /// That checkpoint is consistent with the witness's latest cosigned one.
    pub consistent_with_witness: bool,
    /// Why a check failed; empty when both passed.
    pub detail: String,
}

/// A `sign-subtree` request, parsed.
#[derive(Clone, Debug)]
pub struct SubtreeRequest {
    /// The reference checkpoint note, carrying this witness's cosignature.
    pub checkpoint: Vec<u8>,
    pub start: u64,
    pub end: u64,
    pub subtree_hash: Hash,
    pub proof: Vec<Hash>,
}

/// How a trusted log reaches the witness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Feed {
    /// The log pushes checkpoints (`add-checkpoint`).
    Push,
    /// Pulled from a Rekor v1 REST API; each shard is its own origin.
    RekorV1 { url: String },
    /// Pulled from a tlog-tiles log (Rekor v2).
    Tiles { url: String },
}

impl Feed {
    /// A short label (`push`, `pull-rekor-v1`, `pull-tiles`).
    pub fn label(&self) -> &'static str {
        match self {
            Feed::Push => "push",
            Feed::RekorV1 { .. } => "pull-rekor-v1",
            Feed::Tiles { .. } => "pull-tiles",
        }
    }
}

/// A trusted log: its origin and keys.
#[derive(Clone, Debug)]
pub struct LogKeys {
    pub origin: String,
    pub keys: Vec<VerifierKey>,
    pub feed: Feed,
}

/// Rekor v1 shards are witnessed each as its own origin, `<host> - <tree ID>`;
/// new shards appear when Rekor rotates its tree. An origin of that exact shape,
/// signed by the configured key for that host, is trusted on first sight and
/// then recorded like any other trusted log (never removed, key never changed).
#[derive(Clone, Debug)]
pub struct ShardedLog {
    /// `<host> - `.
    pub origin_prefix: String,
    pub keys: Vec<VerifierKey>,
    pub url: String,
}

impl ShardedLog {
    fn matches(&self, origin: &str) -> bool {
        origin
            .strip_prefix(&self.origin_prefix)
            .is_some_and(|tree_id| {
                !tree_id.is_empty()
                    && tree_id.len() <= 20
                    && tree_id.bytes().all(|b| b.is_ascii_digit())
                    && (tree_id == "0" || !tree_id.starts_with('0'))
            })
    }
}

/// A checkpoint cosigned again by [`Witness::recosign_latest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recosigned {
    /// The tree size (unchanged: the same checkpoint).
    pub size: u64,
    /// The new cosignature's timestamp (seconds since the epoch).
    pub cosigned_at: u64,
}

/// The longest origin a log can be added with at run time: c2sp.org/tlog-cosignature
/// encodes the origin with a one-byte length in `subtree/v1` signed messages,
/// so a longer origin could never get a subtree cosignature.
pub const MAX_ORIGIN_LEN: usize = 255;

/// How many of the logs kept trusted from earlier runs (added at run time, or
/// dropped from the configuration) the start-up line names; the rest are
/// counted, and each is named at debug level.
const KEPT_LOGS_NAMED: usize = 3;

/// An origin line given at run time: one checkpoint line (no control
/// characters), without surrounding spaces that would make two origins look
/// alike, at most [`MAX_ORIGIN_LEN`] bytes.
fn check_origin(origin: &str) -> Result<()> {
    let invalid = |reason| Err(Error::InvalidRequest { reason });
    if origin.is_empty() || origin.len() > MAX_ORIGIN_LEN {
        return invalid("the origin must be 1 to 255 bytes");
    }
    if origin.chars().any(char::is_control) {
        return invalid("the origin contains a control character");
    }
    if origin.trim() != origin {
        return invalid("the origin starts or ends with white space");
    }
    Ok(())
}

// The fault-injection feature builds a witness that can be told to skip its
// own checks; it must never reach a release build.
#[cfg(all(feature = "fault-injection", not(debug_assertions)))]
compile_error!("the `fault-injection` feature is for debug test builds only");

/// The witness service.
pub struct Witness {
    logs: RwLock<HashMap<String, Arc<LogKeys>>>,
    sharded: Vec<ShardedLog>,
    /// This witness's own cosigning keys (from the signer), to recognise its
    /// cosignatures on `sign-subtree` reference checkpoints.
    own_keys: Vec<VerifierKey>,
    store: Arc<dyn LogStore>,
    cosigner: Arc<dyn Cosigner>,
    archive: Option<Arc<dyn CheckpointArchive>>,
    proofs: Option<Arc<dyn ConsistencyProofSource>>,
    metrics: Arc<WitnessMetrics>,
    /// FAULT INJECTION (tests only): see [`Witness::without_core_checks`].
    #[cfg(feature = "fault-injection")]
    skip_core_checks: bool,
}

/// `log` as the registry holds it, its key list trimmed to its length: a list
/// collected from an iterator of unknown length starts with room for four keys
/// (over 900 bytes), which at 40,000 logs of one key each was 28 MB of the
/// witness's heap (heaptrack, README "Benchmarks").
fn shared(mut log: LogKeys) -> Arc<LogKeys> {
    log.keys.shrink_to_fit();
    Arc::new(log)
}

/// The vkey form of a log's keys, sorted: what the store compares.
fn verifier_key_texts(keys: &[VerifierKey]) -> Vec<String> {
    let mut texts: Vec<String> = keys.iter().map(VerifierKey::to_vkey).collect();
    texts.sort();
    texts.dedup();
    texts
}

/// The note served by the monitoring endpoint: the re-encoded checkpoint body,
/// the log's verified signatures, and the witness's cosignature lines.
fn served_note(
    checkpoint: &Checkpoint,
    log_signatures: &[NoteSignature],
    cosignature: &[String],
) -> Vec<u8> {
    let mut note = checkpoint.to_text();
    note.push('\n');
    for signature in log_signatures {
        note.push_str(&signature.to_line());
    }
    for line in cosignature {
        note.push_str(line);
    }
    note.into_bytes()
}

impl Witness {
    /// A witness over `store` and `cosigner`. Every log in `logs` is recorded as
    /// trusted in the store first (adding, never removing); a configured key that
    /// differs from the stored one is refused.
    pub async fn new(
        logs: Vec<LogKeys>,
        sharded: Vec<ShardedLog>,
        own_keys: Vec<VerifierKey>,
        store: Arc<dyn LogStore>,
        cosigner: Arc<dyn Cosigner>,
        archive: Option<Arc<dyn CheckpointArchive>>,
        metrics: Arc<WitnessMetrics>,
    ) -> Result<Witness> {
        let mut registry = HashMap::new();
        // Concurrent adds share the store's durable commits (40,000 logs of a
        // witness-network list start in seconds, not minutes).
        let trusted: Vec<TrustedLog> = logs
            .iter()
            .map(|log| TrustedLog {
                origin: log.origin.clone(),
                verifier_keys: verifier_key_texts(&log.keys),
            })
            .collect();
        let added: Vec<Result<()>> = futures::stream::iter(trusted)
            .map(|log| {
                let store = store.clone();
                async move { store.add_log(&log).await }
            })
            .buffer_unordered(256)
            .collect()
            .await;
        added.into_iter().collect::<Result<()>>()?;
        for log in logs {
            registry.insert(log.origin.clone(), shared(log));
        }
        // Logs trusted on an earlier run stay trusted with the keys they were
        // first trusted with, whether or not the configuration still names them:
        // dropping a log would let it come back later with another key. They
        // are reported in one line: a witness of the witness network trusts
        // tens of thousands of logs added at run time, and a line each was
        // megabytes of log on every start.
        let (mut kept, mut first_kept) = (0_usize, Vec::new());
        for trusted in store.logs().await? {
            if registry.contains_key(&trusted.origin) {
                continue;
            }
            let keys = trusted
                .verifier_keys
                .iter()
                .map(|vkey| VerifierKey::parse_vkey(vkey))
                .collect::<Result<Vec<_>>>()?;
            let feed = match sharded.iter().find(|s| s.matches(&trusted.origin)) {
                Some(shard) if verifier_key_texts(&shard.keys) != trusted.verifier_keys => {
                    return Err(Error::LogKeyChange {
                        origin: trusted.origin,
                    });
                }
                Some(shard) => Feed::RekorV1 {
                    url: shard.url.clone(),
                },
                None => {
                    tracing::debug!(
                        origin = %trusted.origin,
                        "a log added at run time or no longer configured stays trusted"
                    );
                    kept += 1;
                    if first_kept.len() < KEPT_LOGS_NAMED {
                        first_kept.push(trusted.origin.clone());
                    }
                    Feed::Push
                }
            };
            registry.insert(
                trusted.origin.clone(),
                shared(LogKeys {
                    origin: trusted.origin,
                    keys,
                    feed,
                }),
            );
        }
        if kept > 0 {
            tracing::info!(
                count = kept,
                first = ?first_kept,
                "logs added at run time or no longer configured stay trusted (logs are never removed; each is named at debug level)"
            );
        }
        Ok(Witness {
            logs: RwLock::new(registry),
            sharded,
            own_keys,
            store,
            cosigner,
            archive,
            proofs: None,
            metrics,
            #[cfg(feature = "fault-injection")]
            skip_core_checks: false,
        })
    }

    /// FAULT INJECTION, for tests only (cargo feature `fault-injection`, off
    /// by default, a compile error in release builds, reachable from no
    /// binary): a deliberately broken core that skips its own old-size,
    /// rollback and consistency checks and asks the signer anyway, so a test
    /// can show that the signer's fork guard alone still refuses.
    #[cfg(feature = "fault-injection")]
    pub fn without_core_checks(mut self) -> Witness {
        self.skip_core_checks = true;
        self
    }

    /// Whether this core runs its own checks: always, except in a
    /// [`Witness::without_core_checks`] test build.
    fn core_checks(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        return !self.skip_core_checks;
        #[cfg(not(feature = "fault-injection"))]
        true
    }

    /// Where `VerifyInclusion` fetches consistency proofs from.
    pub fn with_proof_source(mut self, proofs: Arc<dyn ConsistencyProofSource>) -> Witness {
        self.proofs = Some(proofs);
        self
    }

    /// The metrics this witness records into.
    pub fn metrics(&self) -> &Arc<WitnessMetrics> {
        &self.metrics
    }

    /// The state store.
    pub fn store(&self) -> &Arc<dyn LogStore> {
        &self.store
    }

    /// Every trusted log.
    pub fn trusted_logs(&self) -> Vec<Arc<LogKeys>> {
        let logs = self
            .logs
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut logs: Vec<Arc<LogKeys>> = logs.values().cloned().collect();
        logs.sort_by(|a, b| a.origin.cmp(&b.origin));
        logs
    }

    /// Trusts a log from now on (the admin API's `AddLog`). It is recorded in
    /// the store before it is trusted in memory, so it stays trusted across
    /// restarts like a configured log (and, like every log, is never removed).
    /// An empty `origin` takes the key's name. Adding a trusted origin again
    /// with the same key changes nothing; with another key it is refused
    /// (`Error::LogKeyChange`), as is an origin of a configured Rekor v1 host
    /// with a key other than the host's. A malformed key or origin is a 400.
    pub async fn add_log(&self, origin: &str, verifier_key: &str) -> Result<Arc<LogKeys>> {
        let key = VerifierKey::parse_vkey(verifier_key).map_err(|error| match error {
            // Bad input from an operator, not an oversized protocol message.
            Error::TooLarge { .. } => Error::MalformedKey {
                reason: "verifier key is over 4096 bytes",
            },
            other => other,
        })?;
        if !matches!(
            key.signature_type(),
            SignatureType::Ed25519 | SignatureType::EcdsaP256
        ) {
            return Err(Error::InvalidRequest {
                reason: "a log key is Ed25519 or ECDSA P-256 (cosignature key types sign no checkpoints)",
            });
        }
        let origin = if origin.is_empty() {
            key.name().to_owned()
        } else {
            origin.to_owned()
        };
        check_origin(&origin)?;
        let keys = vec![key];
        let key_texts = verifier_key_texts(&keys);
        let feed = match self.sharded.iter().find(|s| s.matches(&origin)) {
            Some(shard) if verifier_key_texts(&shard.keys) != key_texts => {
                return Err(Error::LogKeyChange { origin });
            }
            Some(shard) => Feed::RekorV1 {
                url: shard.url.clone(),
            },
            None => Feed::Push,
        };
        let existing = self
            .logs
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&origin)
            .cloned();
        if let Some(existing) = existing {
            return if verifier_key_texts(&existing.keys) == key_texts {
                Ok(existing)
            } else {
                Err(Error::LogKeyChange { origin })
            };
        }
        // The store refuses another key for an origin it already trusts, also
        // one added concurrently or by another replica sharing the database.
        self.store
            .add_log(&TrustedLog {
                origin: origin.clone(),
                verifier_keys: key_texts,
            })
            .await?;
        let log = shared(LogKeys {
            origin: origin.clone(),
            keys,
            feed,
        });
        // A concurrent add of the same origin may have won since the read
        // above; the store accepted both, so both carry the same key.
        let log = self
            .logs
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(origin.clone())
            .or_insert(log)
            .clone();
        tracing::info!(origin, "trusting a log added at run time");
        Ok(log)
    }

    /// The keys of a trusted origin; a new Rekor v1 shard of a configured host
    /// becomes trusted here.
    async fn log_keys(&self, origin: &str) -> Result<Arc<LogKeys>> {
        if let Some(log) = self
            .logs
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(origin)
        {
            return Ok(log.clone());
        }
        let shard = self
            .sharded
            .iter()
            .find(|s| s.matches(origin))
            .ok_or_else(|| Error::UnknownOrigin {
                origin: origin.to_owned(),
            })?;
        let log = Arc::new(LogKeys {
            origin: origin.to_owned(),
            keys: shard.keys.clone(),
            feed: Feed::RekorV1 {
                url: shard.url.clone(),
            },
        });
        Ok(log)
    }

    /// Records a newly seen shard as trusted, once its checkpoint verified.
    async fn remember_shard(&self, log: &Arc<LogKeys>) -> Result<()> {
        let known = self
            .logs
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains_key(&log.origin);
        if known {
            return Ok(());
        }
        self.store
            .add_log(&TrustedLog {
                origin: log.origin.clone(),
                verifier_keys: verifier_key_texts(&log.keys),
            })
            .await?;
        self.logs
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(log.origin.clone(), log.clone());
        tracing::info!(origin = %log.origin, "trusting a new Rekor v1 shard");
        Ok(())
    }

    /// `add-checkpoint`: returns the cosignature lines.
    pub async fn add_checkpoint(
        &self,
        old_size: u64,
        proof: Vec<Hash>,
        note: &[u8],
    ) -> Result<Vec<String>> {
        let started = Instant::now();
        let parsed = parse_note(note);
        let origin = parsed
            .as_ref()
            .ok()
            .and_then(|n| n.text().split('\n').next().map(str::to_owned));
        let result = match parsed {
            Ok(parsed) => self.add_parsed(old_size, proof, parsed).await,
            Err(error) => Err(error),
        };
        self.metrics.request("add_checkpoint", started.elapsed());
        // Only trusted origins become metric labels.
        let label = match (&result, &origin) {
            (Err(Error::UnknownOrigin { .. }), _) | (_, None) => None,
            (_, Some(origin)) => Some(origin.as_str()),
        };
        if let Some(origin) = label {
            self.metrics
                .cosignature(origin, result.as_ref().map(|_| ()));
        }
        result
    }

    async fn add_parsed(&self, old_size: u64, proof: Vec<Hash>, note: Note) -> Result<Vec<String>> {
        if proof.len() > MAX_PROOF_HASHES {
            return Err(Error::ProofTooLong {
                count: proof.len(),
                max: MAX_PROOF_HASHES,
            });
        }
        let body = crate::checkpoint::parse_checkpoint_text(note.text())?;
        let log = self.log_keys(body.origin()).await?;
        let verified = match verify_checkpoint_note(note.clone(), &log.keys, Some(&log.origin)) {
            Ok(verified) => verified,
            Err(error) => {
                self.metrics.verify_failure(&log.origin, &error);
                return Err(error);
            }
        };
        self.remember_shard(&log).await?;
        let checkpoint = verified.checkpoint().clone();
        let checked = self.core_checks();
        if checked && old_size > checkpoint.size() {
            return Err(Error::OldSizeAboveSize {
                old_size,
                size: checkpoint.size(),
            });
        }
        let state = self.store.state(&log.origin).await?;
        let stored = state.as_ref().map(|s| s.tree);
        let stored_size = stored.map_or(0, |t| t.size);
        if checked && old_size != stored_size {
            return Err(Error::OldSizeMismatch {
                old_size,
                stored_size,
            });
        }
        if checked && let Err(error) = check_consistency(stored, &checkpoint, &proof) {
            self.keep_evidence(&log.origin, &note, stored, &error).await;
            return Err(error);
        }
        let cosignature = self.cosign(&checkpoint, stored, &proof).await?;
        // A log's cosignature times never go backwards (tlog-cosignature: each
        // states the largest tree seen as of its time). The signer recorded
        // this checkpoint; a retry once its clock is right re-cosigns it.
        if let Some(previous) = state.as_ref().map(|s| s.cosigned_at)
            && cosignature.timestamp < previous
        {
            return Err(Error::SignerClock {
                detail: format!(
                    "the cosignature time {} is before the log's previous one, {previous}",
                    cosignature.timestamp
                ),
            });
        }
        let log_signatures = log_signatures(&verified);
        self.store_and_reveal(&verified, &log_signatures, stored, cosignature)
            .await
    }

    /// Asks the signer. Its record can differ from the stored state in two
    /// benign ways: another request for this origin won a race (the signer
    /// cosigned it and its store is pending), which is a 409 with the signer's
    /// size; or the witness stopped after the signer recorded this very
    /// checkpoint but before storing it, which a same-size re-cosign resolves
    /// (granted by the signer only for the same root). The re-cosign can lose
    /// a race too, when other requests moved the signer further on meanwhile:
    /// a 409 again. Only a signer behind the witness's state is an alarm.
    async fn cosign(
        &self,
        checkpoint: &Checkpoint,
        stored: Option<StoredTree>,
        proof: &[Hash],
    ) -> Result<Cosignature> {
        let old_size = stored.map_or(0, |t| t.size);
        match self.cosigner.cosign(checkpoint, old_size, proof).await {
            Err(Error::OldSizeMismatch { stored_size, .. }) if stored_size == checkpoint.size() => {
                tracing::warn!(
                    origin = checkpoint.origin(),
                    size = stored_size,
                    "the signer already recorded this size; re-cosigning at the same size"
                );
                match self
                    .cosigner
                    .cosign(checkpoint, checkpoint.size(), &[])
                    .await
                {
                    Err(Error::OldSizeMismatch { stored_size, .. })
                        if stored_size > checkpoint.size() =>
                    {
                        Err(Error::OldSizeMismatch {
                            old_size,
                            stored_size,
                        })
                    }
                    other => other.map_err(signer_disagrees),
                }
            }
            Err(Error::OldSizeMismatch { stored_size, .. }) if stored_size > old_size => {
                Err(Error::OldSizeMismatch {
                    old_size,
                    stored_size,
                })
            }
            other => other.map_err(signer_disagrees),
        }
    }

    async fn store_and_reveal(
        &self,
        verified: &VerifiedCheckpoint,
        log_signatures: &[NoteSignature],
        expected: Option<StoredTree>,
        cosignature: Cosignature,
    ) -> Result<Vec<String>> {
        let checkpoint = verified.checkpoint();
        let note = served_note(checkpoint, log_signatures, &cosignature.lines);
        let outbox = self.archive.as_ref().and_then(|archive| archive.outbox());
        // Archived before anything can reveal it (the state is served by the
        // monitoring endpoint): a crash after this point loses nothing, and a
        // cosignature that then loses the race below is archived but never
        // revealed, which is harmless: the signer's fork guard let it through,
        // so it is consistent with everything else the witness signed. With an
        // outbox, the state's own transaction archives it instead (below).
        if let Some(archive) = self.archive.as_ref().filter(|_| outbox.is_none()) {
            let started = Instant::now();
            let spooled = archive
                .submit(checkpoint.origin(), cosignature.timestamp, note.clone())
                .await;
            self.metrics
                .durable_write("archive_spool", spooled.is_ok(), started.elapsed());
            spooled?;
        }
        let new = LogState {
            origin: checkpoint.origin().to_owned(),
            tree: StoredTree {
                size: checkpoint.size(),
                root: *checkpoint.root_hash(),
            },
            note: note.clone(),
            cosigned_at: cosignature.timestamp,
        };
        let started = Instant::now();
        let stored = match &outbox {
            Some(ticket) => {
                ticket.admit(&new.origin, new.cosigned_at, &new.note)?;
                let stored = self
                    .store
                    .compare_and_swap_archiving(expected, &new, ticket.owner())
                    .await;
                if stored.is_ok() {
                    ticket.written();
                }
                stored
            }
            None => self.store.compare_and_swap(expected, &new).await,
        };
        self.metrics
            .durable_write("state", stored.is_ok(), started.elapsed());
        match stored? {
            CasOutcome::Swapped => {}
            // Another request for this origin stored first: this cosignature is
            // never revealed.
            CasOutcome::Conflict { current } => {
                return Err(Error::OldSizeMismatch {
                    old_size: expected.map_or(0, |t| t.size),
                    stored_size: current.map_or(0, |t| t.size),
                });
            }
        }
        self.metrics
            .cosigned_at(checkpoint.origin(), cosignature.timestamp);
        Ok(cosignature.lines)
    }

    async fn keep_evidence(
        &self,
        origin: &str,
        note: &Note,
        cosigned: Option<StoredTree>,
        error: &Error,
    ) {
        // A failed check of data the log signed: a verification failure like
        // any other (the alert on witness_verify_failures_total sees it), and
        // also provable misbehaviour.
        self.metrics.verify_failure(origin, error);
        self.metrics.misbehaviour(origin, error);
        tracing::error!(
            origin,
            reason = error.kind(),
            cosigned_size = cosigned.map(|t| t.size),
            "checkpoint signed by its log fails consistency: kept as evidence, not cosigned"
        );
        let evidence = MisbehaviourEvidence {
            origin: origin.to_owned(),
            note: note.to_bytes(),
            cosigned,
            reason: error.kind().to_owned(),
            received_at: now_seconds(),
        };
        if let Err(store_error) = self.store.record_evidence(&evidence).await {
            tracing::error!(origin, error = %store_error, "could not store misbehaviour evidence");
        }
    }

    /// Re-cosigns a log's latest checkpoint with a fresh timestamp (same size,
    /// same root), so consumers can check the witness is live. Returns the new
    /// timestamp, or `None` when nothing was cosigned yet.
    pub async fn recosign(&self, origin: &str) -> Result<Option<u64>> {
        Ok(self
            .recosign_latest(origin)
            .await?
            .map(|recosigned| recosigned.cosigned_at))
    }

    /// [`Witness::recosign`], answering the size re-cosigned with the new
    /// timestamp (the admin API's `Recosign`).
    pub async fn recosign_latest(&self, origin: &str) -> Result<Option<Recosigned>> {
        let log = self.log_keys(origin).await?;
        let Some(state) = self.store.state(origin).await? else {
            return Ok(None);
        };
        // The stored note is re-read through the same checks as a pushed one:
        // only the log's verified signatures are carried over.
        let verified = verify_checkpoint_note(parse_note(&state.note)?, &log.keys, Some(origin))?;
        let checkpoint = verified.checkpoint();
        if checkpoint.size() != state.tree.size || *checkpoint.root_hash() != state.tree.root {
            return Err(Error::Storage {
                detail: format!("stored note of {origin:?} does not match its stored tree"),
            });
        }
        let log_signatures = log_signatures(&verified);
        let cosignature = self
            .cosigner
            .cosign(checkpoint, checkpoint.size(), &[])
            .await
            .map_err(signer_disagrees)?;
        let recosigned = Recosigned {
            size: checkpoint.size(),
            cosigned_at: cosignature.timestamp,
        };
        self.store_and_reveal(&verified, &log_signatures, Some(state.tree), cosignature)
            .await?;
        Ok(Some(recosigned))
    }

    /// The latest cosigned checkpoint of a log (the monitoring endpoint).
    pub async fn checkpoint(&self, origin: &str) -> Result<LogState> {
        self.log_keys(origin).await?;
        self.store
            .state(origin)
            .await?
            .ok_or_else(|| Error::NothingCosigned {
                origin: origin.to_owned(),
            })
    }

    /// `sign-subtree`.
    pub async fn sign_subtree(&self, request: SubtreeRequest) -> Result<Vec<String>> {
        let started = Instant::now();
        let result = self.sign_subtree_checked(&request).await;
        self.metrics.request("sign_subtree", started.elapsed());
        result
    }

    async fn sign_subtree_checked(&self, request: &SubtreeRequest) -> Result<Vec<String>> {
        if request.proof.len() > MAX_PROOF_HASHES {
            return Err(Error::ProofTooLong {
                count: request.proof.len(),
                max: MAX_PROOF_HASHES,
            });
        }
        let note = parse_note(&request.checkpoint)?;
        let body = crate::checkpoint::parse_checkpoint_text(note.text())?;
        self.log_keys(body.origin()).await?;
        if !crate::merkle::is_valid_subtree(request.start, request.end) || request.end > body.size()
        {
            return Err(Error::InvalidRequest {
                reason: "[start, end) is not a valid subtree of the checkpoint",
            });
        }
        // The reference checkpoint must carry one of this witness's own
        // cosignatures (403 otherwise).
        verify_checkpoint_note(note, &self.own_keys, Some(body.origin()))?;
        crate::merkle::verify_subtree_consistency(
            request.start,
            request.end,
            &request.subtree_hash,
            body.size(),
            body.root_hash(),
            &request.proof,
        )?;
        self.cosigner.sign_subtree(request).await
    }
}

impl Witness {
    /// `VerifyInclusion`: does the entry's inclusion proof verify against its
    /// checkpoint (signed by a log this witness trusts), and is that checkpoint
    /// consistent with the latest one this witness cosigned? A client whose log
    /// showed it a different view than the witness's gets `false`.
    pub async fn verify_inclusion(&self, entry: &TransparencyLogEntry) -> Result<InclusionVerdict> {
        let proof = &entry.inclusion_proof;
        let note = parse_note(proof.checkpoint.as_bytes())?;
        let body = crate::checkpoint::parse_checkpoint_text(note.text())?;
        let log = self.log_keys(body.origin()).await?;
        let mut verdict = InclusionVerdict {
            origin: log.origin.clone(),
            log_index: entry.log_index,
            checkpoint_size: body.size(),
            witness_size: 0,
            inclusion_verified: false,
            consistent_with_witness: false,
            detail: String::new(),
        };
        let included = verify_checkpoint_note(note, &log.keys, Some(&log.origin)).and_then(|_| {
            if body.size() != proof.tree_size || *body.root_hash() != proof.root_hash {
                return Err(Error::CheckpointProofMismatch {
                    reason: "the checkpoint does not state the proof's size and root",
                });
            }
            crate::merkle::verify_inclusion(
                &entry.leaf_hash(),
                proof.log_index,
                proof.tree_size,
                &proof.hashes,
                &proof.root_hash,
            )
        });
        if let Err(error) = included {
            verdict.detail = error.to_string();
            return Ok(verdict);
        }
        verdict.inclusion_verified = true;
        let Some(state) = self.store.state(&log.origin).await? else {
            verdict.detail = "the witness has not cosigned this log yet".into();
            return Ok(verdict);
        };
        verdict.witness_size = state.tree.size;
        let client = StoredTree {
            size: body.size(),
            root: *body.root_hash(),
        };
        let consistent = self.consistent(&log, client, state.tree).await;
        match consistent {
            Ok(()) => verdict.consistent_with_witness = true,
            Err(error) => verdict.detail = error.to_string(),
        }
        Ok(verdict)
    }

    /// Whether two trees of a log are consistent (one a prefix of the other),
    /// fetching a proof from the log when their sizes differ.
    async fn consistent(&self, log: &LogKeys, a: StoredTree, b: StoredTree) -> Result<()> {
        let (old, new) = if a.size <= b.size { (a, b) } else { (b, a) };
        if old.size == new.size {
            return if old.root == new.root {
                Ok(())
            } else {
                Err(Error::RootMismatch { size: old.size })
            };
        }
        if old.size == 0 {
            return Ok(());
        }
        let source = self.proofs.as_ref().ok_or(Error::ProofUnavailable {
            reason: "no consistency proof source for this log",
        })?;
        let proof = source.consistency_proof(log, old.size, new.size).await?;
        verify_consistency(old.size, new.size, &old.root, &new.root, &proof)
    }
}

/// How long a readiness check waits for the store's write probe and for the
/// signer. A probe is a single-row write and a key listing: when either takes
/// longer than this, requests would time out too, so the witness is not ready.
pub const READINESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The answer of `Readiness`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// The state store committed a write.
    pub store_writable: bool,
    /// The signer answered.
    pub signer_reachable: bool,
    /// Why a check failed; empty when both passed.
    pub detail: String,
}

impl Witness {
    /// Whether the witness can do its job now: the state store commits a
    /// write (its write probe) and the signer answers, both checked at once
    /// within [`READINESS_TIMEOUT`].
    pub async fn readiness(&self) -> Readiness {
        let (store, signer) = tokio::join!(
            within_readiness_timeout(self.store.probe_write()),
            within_readiness_timeout(self.cosigner.reachable()),
        );
        let detail = [("state store", &store), ("signer", &signer)]
            .iter()
            .filter_map(|(part, result)| result.as_ref().err().map(|e| format!("{part}: {e}")))
            .collect::<Vec<_>>()
            .join("; ");
        Readiness {
            store_writable: store.is_ok(),
            signer_reachable: signer.is_ok(),
            detail,
        }
    }
}

/// A readiness check's outcome, a timeout counting as a failure.
async fn within_readiness_timeout(
    check: impl std::future::Future<Output = Result<()>>,
) -> std::result::Result<(), String> {
    match tokio::time::timeout(READINESS_TIMEOUT, check).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {READINESS_TIMEOUT:?}")),
    }
}

/// The log's signature lines that verified (kept for the monitoring endpoint;
/// signatures from keys the witness does not know are dropped).
fn log_signatures(verified: &VerifiedCheckpoint) -> Vec<NoteSignature> {
    verified
        .note()
        .verified()
        .iter()
        .map(|v| v.signature.clone())
        .collect()
}

/// The tlog-witness consistency checks of a checkpoint against the stored tree
/// (the old size already equals the stored size).
fn check_consistency(
    stored: Option<StoredTree>,
    checkpoint: &Checkpoint,
    proof: &[Hash],
) -> Result<()> {
    let invalid = |reason| Err(Error::ConsistencyProofInvalid { reason });
    if checkpoint.size() == 0 && *checkpoint.root_hash() != empty_root() {
        return invalid("a size-0 checkpoint must have the empty tree's root");
    }
    let Some(stored) = stored.filter(|t| t.size > 0) else {
        if !proof.is_empty() {
            return invalid("the proof must be empty when the old size is 0");
        }
        return Ok(());
    };
    if stored.size == checkpoint.size() {
        if stored.root != *checkpoint.root_hash() {
            return Err(Error::RootMismatch { size: stored.size });
        }
        if !proof.is_empty() {
            return invalid("the proof must be empty when the sizes are equal");
        }
        return Ok(());
    }
    verify_consistency(
        stored.size,
        checkpoint.size(),
        &stored.root,
        checkpoint.root_hash(),
        proof,
    )
}

/// A signer refusal after the witness's own checks passed means the two records
/// disagree: never an answer the log can act on, always an alarm.
fn signer_disagrees(error: Error) -> Error {
    match error {
        Error::OldSizeMismatch {
            old_size,
            stored_size,
        } => {
            tracing::error!(
                old_size,
                stored_size,
                "the signer's record disagrees with the witness state"
            );
            Error::Signer {
                detail: format!(
                    "the signer last cosigned size {stored_size}, the witness state says {old_size}"
                ),
            }
        }
        other => other,
    }
}

#[async_trait]
impl CheckpointSink for Witness {
    async fn cosigned_tree(&self, origin: &str) -> Result<Option<StoredTree>> {
        Ok(self.store.state(origin).await?.map(|s| s.tree))
    }

    async fn add_checkpoint(
        &self,
        old_size: u64,
        consistency_proof: Vec<Hash>,
        note: Vec<u8>,
    ) -> Result<Vec<String>> {
        Witness::add_checkpoint(self, old_size, consistency_proof, &note).await
    }
}
