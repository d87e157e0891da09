//! Cosigning checkpoints, one per call or a batch at a time, through one
//! pipeline so that every item gets exactly the same treatment:
//!
//! 1. Validate the item into a core [`Checkpoint`] and proof, and check it
//!    against the fork guard's committed record with the earlier passing items
//!    of its origin in the batch applied on top (so two items of one origin
//!    chain). This check is not binding; it spares the key backend from
//!    signing what will be refused. A refusal that rests on earlier items of
//!    the batch is deferred until the commit: it stands if they were
//!    committed, and otherwise the item is checked again on its own, so a
//!    refusal never names a size the signer did not record.
//! 2. Sign every item still standing, in parallel where the backend allows.
//! 3. Hand all signed items to the fork guard in one commit: its writer checks
//!    each again against the durable record, in order, inside the transaction
//!    that records it (concurrent calls share that transaction).
//! 4. Only then return the signatures of the items the commit recorded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use witness_core::checkpoint::Checkpoint;
use witness_core::cosignature::{cosignature_v1_message, subtree_v1_message};
use witness_core::merkle::{Hash, MAX_PROOF_HASHES};
use witness_core::note::NoteSignature;
use witness_proto::signer as pb;

use crate::error::{Error, Result};
use crate::fork_guard::{self, Proposal, Record};
use crate::limits::{MAX_CHECKPOINT_TEXT_LEN, MAX_ORIGIN_LEN};
use crate::service::{CosigningKey, SignerService};

fn now_seconds() -> Result<u64> {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::Backend("clock is before 1970".into()))?
        .as_secs();
    // A cosignature's timestamp is never zero (tlog-witness).
    if seconds == 0 {
        return Err(Error::Backend("clock reads zero".into()));
    }
    Ok(seconds)
}

/// Proof hashes, at most [`MAX_PROOF_HASHES`] of 32 bytes each.
pub(crate) fn hashes(raw: &[Vec<u8>]) -> Result<Vec<Hash>> {
    if raw.len() > MAX_PROOF_HASHES {
        return Err(Error::BadField {
            reason: "proof has more than 63 hashes",
        });
    }
    raw.iter()
        .map(|h| Hash::from_slice(h).map_err(Error::InvalidRequest))
        .collect()
}

/// A failure of a whole step again, for each item it befell.
fn again(error: &Error) -> Error {
    match error {
        Error::State(reason) => Error::State(reason.clone()),
        Error::Backend(reason) => Error::Backend(reason.clone()),
        other => Error::State(other.to_string()),
    }
}

/// The next signature of a backend's answer to `sign_all`.
fn next(signatures: &mut impl Iterator<Item = Result<Vec<u8>>>) -> Result<Vec<u8>> {
    signatures
        .next()
        .unwrap_or_else(|| Err(Error::Backend("the key backend lost a signature".into())))
}

/// A `CosignCheckpointRequest` (alone or a batch item) validated into core
/// types, before any check against the fork guard's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointToCosign {
    /// The checkpoint the request describes.
    pub checkpoint: Checkpoint,
    /// Its note text (at most [`MAX_CHECKPOINT_TEXT_LEN`] bytes), which the
    /// cosignature/v1 signature covers.
    pub text: String,
    /// The size the caller believes this signer last cosigned for the origin.
    pub old_size: u64,
    /// The consistency proof from `old_size`: at most [`MAX_PROOF_HASHES`].
    pub proof: Vec<Hash>,
}

/// Validates a cosign request (the checkpoint, then the proof): the
/// conversion every item of `CosignCheckpoint` and `CosignCheckpoints` gets.
/// Pure, so the services' fuzz targets run it as the service does.
pub fn checkpoint_to_cosign(request: &pb::CosignCheckpointRequest) -> Result<CheckpointToCosign> {
    let (checkpoint, text) = checkpoint_from(request)?;
    Ok(CheckpointToCosign {
        checkpoint,
        text,
        old_size: request.old_size,
        proof: hashes(&request.consistency_proof)?,
    })
}

/// A request's checkpoint and its note text.
fn checkpoint_from(request: &pb::CosignCheckpointRequest) -> Result<(Checkpoint, String)> {
    if request.origin.len() > MAX_ORIGIN_LEN {
        return Err(Error::BadField {
            reason: "origin is longer than 255 bytes",
        });
    }
    let root = Hash::from_slice(&request.root_hash)?;
    let checkpoint = Checkpoint::new(
        &request.origin,
        request.size,
        root,
        request.extension_lines.clone(),
    )?;
    let text = checkpoint.to_text();
    if text.len() > MAX_CHECKPOINT_TEXT_LEN {
        return Err(Error::BadField {
            reason: "checkpoint text is longer than 4096 bytes",
        });
    }
    Ok((checkpoint, text))
}

/// An item that passed the first check.
struct Checked {
    proposal: Proposal,
    text: String,
}

/// An item signed and waiting for the commit.
struct Signed {
    proposal: Proposal,
    lines: Vec<String>,
}

/// An item's first, non-binding check.
enum FirstCheck {
    /// To be signed and committed.
    Passed(Checked),
    /// Refused against the committed record (or malformed): final.
    Refused(Error),
    /// Refused against the batch's overlay: the committed record with the
    /// earlier passing items of its origin applied. That holds only if those
    /// items (`rests_on`, by index) are committed; otherwise the item is
    /// checked again, since a refusal must never name a size the signer did
    /// not record.
    Deferred {
        refusal: Error,
        rests_on: Vec<usize>,
    },
}

/// The batch's overlay: per origin, the record the passing items so far would
/// leave, and their indices.
type Overlay = HashMap<String, (Record, Vec<usize>)>;

impl SignerService {
    /// Cosigns each request, in order, returning one result per request. See
    /// the module documentation for the steps.
    pub(crate) async fn cosign_all(
        &self,
        requests: &[pb::CosignCheckpointRequest],
    ) -> Vec<Result<pb::CosignCheckpointResponse>> {
        let mut overlay = Overlay::new();
        let mut deferred = Vec::new();
        let checked: Vec<Result<Checked>> = requests
            .iter()
            .enumerate()
            .map(
                |(index, request)| match self.check(index, request, &mut overlay) {
                    FirstCheck::Passed(checked) => Ok(checked),
                    FirstCheck::Refused(error) => Err(error),
                    FirstCheck::Deferred { refusal, rests_on } => {
                        deferred.push((index, refusal, rests_on));
                        // Replaced below, once the commit has decided.
                        Err(Error::State("deferred".into()))
                    }
                },
            )
            .collect();
        let mut results = self.sign_and_commit(checked).await;

        // A deferred refusal stands when every item it rests on was committed
        // (the record then was the overlay, at that point of the transaction);
        // otherwise the item is checked again on its own, against the record
        // as the commit left it. Each retry is smaller than its batch (the
        // first item is never deferred), so this ends.
        let mut retry = Vec::new();
        for (index, refusal, rests_on) in deferred {
            if rests_on.iter().all(|&i| results[i].is_ok()) {
                results[index] = Err(refusal);
            } else {
                retry.push(index);
            }
        }
        if !retry.is_empty() {
            let again: Vec<pb::CosignCheckpointRequest> =
                retry.iter().map(|&i| requests[i].clone()).collect();
            let answers = Box::pin(self.cosign_all(&again)).await;
            for (index, answer) in retry.into_iter().zip(answers) {
                results[index] = answer;
            }
        }
        results
    }

    /// Signs the items that passed the first check and commits them in one
    /// fork-guard transaction; an item's result is its signature lines only if
    /// the commit recorded it.
    async fn sign_and_commit(
        &self,
        checked: Vec<Result<Checked>>,
    ) -> Vec<Result<pb::CosignCheckpointResponse>> {
        let timestamp = match now_seconds() {
            Ok(timestamp) => timestamp,
            Err(error) => {
                return checked
                    .into_iter()
                    .map(|item| item.and_then(|_| Err(again(&error))))
                    .collect();
            }
        };
        let signed = self.sign_checked(checked, timestamp).await;
        let mut proposals = Vec::new();
        let signed: Vec<Result<Vec<String>>> = signed
            .into_iter()
            .map(|item| {
                item.map(|item| {
                    proposals.push(item.proposal);
                    item.lines
                })
            })
            .collect();
        let count = proposals.len();
        let verdicts = if count == 0 {
            Vec::new()
        } else {
            match self.guard.commit(proposals).await {
                Ok(verdicts) => verdicts,
                Err(error) => (0..count).map(|_| Err(again(&error))).collect(),
            }
        };
        let mut verdicts = verdicts.into_iter();
        signed
            .into_iter()
            .map(|item| {
                let lines = item?;
                verdicts.next().unwrap_or_else(|| {
                    Err(Error::State("the fork guard gave no verdict".into()))
                })?;
                Ok(pb::CosignCheckpointResponse {
                    signature_lines: lines,
                    timestamp,
                })
            })
            .collect()
    }

    /// Validates a request and checks it: against the batch's overlay when an
    /// earlier item of its origin passed, else against the committed record.
    /// A passing item is applied to the overlay for the items after it.
    fn check(
        &self,
        index: usize,
        request: &pb::CosignCheckpointRequest,
        overlay: &mut Overlay,
    ) -> FirstCheck {
        let CheckpointToCosign {
            checkpoint,
            text,
            old_size,
            proof,
        } = match checkpoint_to_cosign(request) {
            Ok(parsed) => parsed,
            Err(error) => return FirstCheck::Refused(error),
        };
        let origin = checkpoint.origin();
        let earlier = overlay.get(origin);
        let record = earlier.map_or_else(|| self.guard.record(origin), |(record, _)| Some(*record));
        if let Err(refusal) = fork_guard::check(record, &checkpoint, old_size, &proof) {
            return match earlier {
                Some((_, rests_on)) => FirstCheck::Deferred {
                    refusal,
                    rests_on: rests_on.clone(),
                },
                None => FirstCheck::Refused(refusal),
            };
        }
        let after = Record {
            size: checkpoint.size(),
            root: *checkpoint.root_hash(),
        };
        match overlay.get_mut(origin) {
            Some((record, rests_on)) => {
                *record = after;
                rests_on.push(index);
            }
            None => {
                overlay.insert(origin.to_owned(), (after, vec![index]));
            }
        }
        FirstCheck::Passed(Checked {
            proposal: Proposal {
                checkpoint,
                old_size,
                proof,
            },
            text,
        })
    }

    /// Signs every checked item with every cosigning key.
    async fn sign_checked(
        &self,
        checked: Vec<Result<Checked>>,
        timestamp: u64,
    ) -> Vec<Result<Signed>> {
        let mut ed25519_messages = Vec::new();
        let mut ml_dsa_messages = Vec::new();
        let checked: Vec<Result<Checked>> = checked
            .into_iter()
            .map(|item| {
                let item = item?;
                if self.ml_dsa_44.is_some() {
                    let checkpoint = &item.proposal.checkpoint;
                    ml_dsa_messages.push(subtree_v1_message(
                        &self.name,
                        timestamp,
                        checkpoint.origin(),
                        0,
                        checkpoint.size(),
                        checkpoint.root_hash(),
                    )?);
                }
                ed25519_messages.push(cosignature_v1_message(timestamp, &item.text));
                Ok(item)
            })
            .collect();
        let (ed25519, ml_dsa) =
            tokio::join!(self.sign_all(&self.ed25519, ed25519_messages), async {
                match &self.ml_dsa_44 {
                    Some(key) => self.sign_all(key, ml_dsa_messages).await,
                    None => Vec::new(),
                }
            });
        let (mut ed25519, mut ml_dsa) = (ed25519.into_iter(), ml_dsa.into_iter());
        checked
            .into_iter()
            .map(|item| {
                let item = item?;
                // Both signatures are taken before either is looked at, so the
                // next item gets its own.
                let ed25519_signature = next(&mut ed25519);
                let ml_dsa_signature = self.ml_dsa_44.as_ref().map(|_| next(&mut ml_dsa));
                let mut lines = vec![self.line(&self.ed25519, timestamp, ed25519_signature?)?];
                if let (Some(key), Some(signature)) = (&self.ml_dsa_44, ml_dsa_signature) {
                    lines.push(self.line(key, timestamp, signature?)?);
                }
                Ok(Signed {
                    proposal: item.proposal,
                    lines,
                })
            })
            .collect()
    }

    /// Signs the messages with one key, recording each signature's latency.
    async fn sign_all(&self, key: &CosigningKey, messages: Vec<Vec<u8>>) -> Vec<Result<Vec<u8>>> {
        if messages.is_empty() {
            return Vec::new();
        }
        let algorithm = key.key.algorithm().label();
        Arc::clone(&key.key)
            .sign_all(messages)
            .await
            .into_iter()
            .map(|(signature, elapsed)| {
                self.metrics.signing(algorithm, elapsed);
                signature
            })
            .collect()
    }

    /// A note signature line: the key's name and ID, the timestamp and the
    /// signature.
    pub(crate) fn line(
        &self,
        key: &CosigningKey,
        timestamp: u64,
        signature: Vec<u8>,
    ) -> Result<String> {
        let mut blob = timestamp.to_be_bytes().to_vec();
        blob.extend_from_slice(&signature);
        Ok(NoteSignature::new(&self.name, key.verifier.key_id(), blob)?.to_line())
    }
}
