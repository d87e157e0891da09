//! Cosigning checkpoints, one per call or a batch at a time, through one
//! pipeline so that every item gets exactly the same treatment:
//!
//! 1. Validate the item into a core [`Checkpoint`] and proof, and check it
//!    against the fork guard's committed record, and against that record with
//!    the items before it in the batch applied on top (so two items of one
//!    origin chain). It passes if either check passes. This check is not
//!    binding; it spares the key backend from signing what will be refused.
//!    A refusal here is only ever the committed record's: an earlier item of
//!    the batch may itself be refused by the commit, so a size it would have
//!    recorded is never named to the caller.
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

/// The first, non-binding check of an item: it passes if the committed record
/// or the batch's `overlay` (the committed record with the earlier items of the
/// batch applied) lets it through. It is refused only when the committed record
/// refuses it, and then with the committed record's sizes: the earlier items are
/// not committed yet and may never be, so what they would record is no answer.
fn first_check(
    committed: Option<Record>,
    overlay: Option<Record>,
    checkpoint: &Checkpoint,
    old_size: u64,
    proof: &[Hash],
) -> Result<()> {
    if overlay.is_some() && fork_guard::check(overlay, checkpoint, old_size, proof).is_ok() {
        return Ok(());
    }
    fork_guard::check(committed, checkpoint, old_size, proof)
}

impl SignerService {
    /// Cosigns each request, in order, returning one result per request. See
    /// the module documentation for the steps.
    pub(crate) async fn cosign_all(
        &self,
        requests: &[pb::CosignCheckpointRequest],
    ) -> Vec<Result<pb::CosignCheckpointResponse>> {
        let mut overlay = HashMap::new();
        let checked: Vec<Result<Checked>> = requests
            .iter()
            .map(|request| self.check(request, &mut overlay))
            .collect();
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

    /// Validates a request and checks it against the committed record with
    /// the earlier items of its batch (`overlay`) applied; a passing item is
    /// applied to the overlay for the items after it.
    fn check(
        &self,
        request: &pb::CosignCheckpointRequest,
        overlay: &mut HashMap<String, Record>,
    ) -> Result<Checked> {
        let (checkpoint, text) = checkpoint_from(request)?;
        let proof = hashes(&request.consistency_proof)?;
        let origin = checkpoint.origin();
        first_check(
            self.guard.record(origin),
            overlay.get(origin).copied(),
            &checkpoint,
            request.old_size,
            &proof,
        )?;
        overlay.insert(
            origin.to_owned(),
            Record {
                size: checkpoint.size(),
                root: *checkpoint.root_hash(),
            },
        );
        Ok(Checked {
            proposal: Proposal {
                checkpoint,
                old_size: request.old_size,
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

#[cfg(test)]
mod tests {
    use super::*;
    use witness_core::merkle::{empty_root, leaf_hash};

    fn record(size: u64, byte: u8) -> Record {
        Record {
            size,
            root: Hash([byte; 32]),
        }
    }

    fn checkpoint(size: u64, byte: u8) -> Checkpoint {
        Checkpoint::new("example.com/log", size, Hash([byte; 32]), Vec::new()).unwrap()
    }

    /// An earlier item of the batch (49 -> 71) passed the first check but may
    /// be refused by the commit; a later item from the committed 49 must not be
    /// refused with the 71 that was never recorded.
    #[test]
    fn an_uncommitted_earlier_item_never_becomes_the_size_in_a_refusal() {
        let committed = Some(record(49, 1));
        let overlay = Some(record(71, 2));
        let same = checkpoint(49, 1);
        assert!(first_check(committed, overlay, &same, 49, &[]).is_ok());
        // Refused by both: the refusal names the committed size, not 71.
        match first_check(committed, overlay, &checkpoint(60, 3), 50, &[]) {
            Err(Error::OldSizeMismatch { claimed, stored }) => {
                assert_eq!((claimed, stored), (50, 49));
            }
            other => panic!("{other:?}"),
        }
    }

    /// Two items of one origin still chain within a batch.
    #[test]
    fn items_of_one_origin_chain_within_a_batch() {
        let committed = None;
        let overlay = Some(Record {
            size: 0,
            root: empty_root(),
        });
        let one = Checkpoint::new("example.com/log", 1, leaf_hash(b"a"), Vec::new()).unwrap();
        assert!(first_check(committed, overlay, &one, 0, &[]).is_ok());
        // Without the overlay the committed record (none) refuses old size 7.
        assert!(matches!(
            first_check(committed, None, &one, 7, &[]),
            Err(Error::OldSizeMismatch {
                claimed: 7,
                stored: 0
            })
        ));
    }
}
