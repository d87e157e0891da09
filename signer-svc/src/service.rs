//! The gRPC `Signer` service: typed signing calls only. Each call checks the
//! caller's certificate identity against the allowlist, validates its fields
//! into core types, builds the exact bytes to sign itself, and writes one audit
//! line whatever the outcome (one per item of a batch). Callers without a
//! verified certificate never get here: the edge layer refuses them.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};
use witness_core::checkpoint::{VerifiedCheckpoint, verify_checkpoint};
use witness_core::cosignature::subtree_v1_message;
use witness_core::merkle::Hash;
use witness_core::note::{SignatureType, VerifierKey};
use witness_proto::signer as pb;

use crate::audit::{AuditEntry, AuditLog};
use crate::cosign::hashes;
use crate::dsse;
use crate::error::{Error, Result};
use crate::fork_guard::ForkGuard;
use crate::keys::{self, Algorithm, SigningKey};
use crate::limits::check_batch_len;
use crate::metrics::Metrics;
use crate::tls::PeerIdentity;

/// A cosigning key with the note key ID it signs under.
pub struct CosigningKey {
    pub key: Arc<dyn SigningKey>,
    pub verifier: VerifierKey,
}

impl CosigningKey {
    /// Wraps a key, deriving its note verifier (type 0x04 for Ed25519, 0x06 for
    /// ML-DSA-44) under the cosigner name.
    pub fn new(name: &str, key: Arc<dyn SigningKey>) -> Result<CosigningKey> {
        let signature_type = match key.algorithm() {
            Algorithm::Ed25519 => SignatureType::CosignatureV1,
            Algorithm::MlDsa44 => SignatureType::MlDsa44Subtree,
            Algorithm::EcdsaP256 => {
                return Err(Error::Config(
                    "cosigning keys must be Ed25519 or ML-DSA-44".into(),
                ));
            }
        };
        let verifier = VerifierKey::from_material(name, signature_type, key.public_key())?;
        Ok(CosigningKey { key, verifier })
    }
}

/// The DSSE manifest key.
pub struct ManifestKey {
    pub key: Arc<dyn SigningKey>,
    /// Hex SHA-256 of the public key (DER SPKI or raw Ed25519 key).
    pub key_id: String,
    pub payload_types: Vec<String>,
}

/// The service state.
pub struct SignerService {
    pub name: String,
    pub ed25519: CosigningKey,
    pub ml_dsa_44: Option<CosigningKey>,
    pub manifest: Option<ManifestKey>,
    pub guard: Arc<ForkGuard>,
    pub audit: Arc<AuditLog>,
    pub metrics: Arc<Metrics>,
    pub allowed_identities: Vec<String>,
    /// Identities that may only read: `PublicKeys` and `Metrics` (a gateway
    /// aggregating metrics, a monitor); every signing call is refused to them.
    pub observer_identities: Vec<String>,
}

impl SignerService {
    /// The caller's allowlisted identity. The edge layer already refused
    /// callers whose certificate did not verify; they are refused here too.
    fn caller<T>(&self, request: &Request<T>) -> Result<String> {
        self.caller_among(request, &[&self.allowed_identities])
    }

    /// The caller's identity for a read-only call: allowlisted or an observer.
    fn observer<T>(&self, request: &Request<T>) -> Result<String> {
        self.caller_among(
            request,
            &[&self.allowed_identities, &self.observer_identities],
        )
    }

    fn caller_among<T>(&self, request: &Request<T>, lists: &[&Vec<String>]) -> Result<String> {
        let Some(peer) = request.extensions().get::<PeerIdentity>() else {
            return Err(Error::Unauthenticated(
                crate::tls::CertificateRefusal::NoCertificate,
            ));
        };
        let identities = peer
            .certificate
            .as_ref()
            .map_err(|refusal| Error::Unauthenticated(refusal.clone()))?;
        identities
            .iter()
            .find(|id| lists.iter().any(|list| list.contains(id)))
            .cloned()
            .ok_or(Error::PermissionDenied)
    }

    /// Whom the audit log names: the allowlisted identity, or else every
    /// verified identity of the refused caller's certificate.
    fn audit_caller<T>(&self, request: &Request<T>, caller: &Result<String>) -> Option<String> {
        match caller {
            Ok(identity) => Some(identity.clone()),
            Err(_) => request
                .extensions()
                .get::<PeerIdentity>()
                .and_then(|peer| peer.certificate.as_ref().ok())
                .map(|identities| identities.join(","))
                .filter(|identities| !identities.is_empty()),
        }
    }

    /// The Ed25519 cosigning key's note key ID, as the audit log names it.
    fn cosign_key_id(&self) -> String {
        format!("{:08x}", self.ed25519.verifier.key_id())
    }

    /// Writes a call's audit line and counts it, and turns its result into the
    /// gRPC answer.
    fn finish<T>(
        &self,
        entry: &AuditEntry<'_>,
        key: &'static str,
        result: Result<T>,
    ) -> Result<Response<T>, Status> {
        self.audit.record(entry, result.as_ref().map(|_| ()));
        self.metrics
            .operation(entry.operation, key, result.as_ref().map(|_| ()));
        Ok(Response::new(result?))
    }

    async fn sign_timed(&self, key: &dyn SigningKey, message: &[u8]) -> Result<Vec<u8>> {
        let started = Instant::now();
        let signature = key.sign(message).await;
        self.metrics
            .signing(key.algorithm().label(), started.elapsed());
        signature
    }

    async fn sign_subtree(
        &self,
        request: &pb::SignSubtreeRequest,
    ) -> Result<pb::SignSubtreeResponse> {
        let ml_dsa = self
            .ml_dsa_44
            .as_ref()
            .ok_or(Error::KeyNotConfigured("ML-DSA-44 subtree"))?;
        // The reference checkpoint must carry one of this signer's cosignatures.
        let ours = [self.ed25519.verifier.clone(), ml_dsa.verifier.clone()];
        let verified = reference_checkpoint(&request.checkpoint, &ours)?;
        let checkpoint = verified.checkpoint();
        let subtree = subtree_to_sign(request, checkpoint.size())?;
        witness_core::merkle::verify_subtree_consistency(
            subtree.start,
            subtree.end,
            &subtree.subtree_hash,
            checkpoint.size(),
            checkpoint.root_hash(),
            &subtree.proof,
        )?;
        // Subtree cosignatures carry a zero timestamp (tlog-witness sign-subtree).
        let message = subtree_v1_message(
            &self.name,
            0,
            checkpoint.origin(),
            subtree.start,
            subtree.end,
            &subtree.subtree_hash,
        )?;
        let signature = self.sign_timed(ml_dsa.key.as_ref(), &message).await?;
        Ok(pb::SignSubtreeResponse {
            signature_lines: vec![self.line(ml_dsa, 0, signature)?],
        })
    }

    async fn sign_manifest(
        &self,
        request: &pb::SignManifestRequest,
    ) -> Result<pb::SignManifestResponse> {
        let manifest = self
            .manifest
            .as_ref()
            .ok_or(Error::KeyNotConfigured("manifest"))?;
        let message = manifest_message(request, &manifest.payload_types)?;
        let signature = self.sign_timed(manifest.key.as_ref(), &message).await?;
        Ok(pb::SignManifestResponse {
            envelope: dsse::envelope(
                &request.payload_type,
                &request.payload,
                &manifest.key_id,
                &signature,
            ),
        })
    }

    fn public_keys(&self) -> pb::PublicKeysResponse {
        let mut keys = Vec::new();
        for key in std::iter::once(&self.ed25519).chain(self.ml_dsa_44.as_ref()) {
            keys.push(pb::PublicKey {
                purpose: "cosign".into(),
                algorithm: key.key.algorithm().label().into(),
                name: self.name.clone(),
                vkey: key.verifier.to_vkey(),
                pem: keys::public_key_pem(key.key.as_ref()).unwrap_or_default(),
                key_id: format!("{:08x}", key.verifier.key_id()),
            });
        }
        if let Some(manifest) = &self.manifest {
            keys.push(pb::PublicKey {
                purpose: "manifest".into(),
                algorithm: manifest.key.algorithm().label().into(),
                name: String::new(),
                vkey: String::new(),
                pem: keys::public_key_pem(manifest.key.as_ref()).unwrap_or_default(),
                key_id: manifest.key_id.clone(),
            });
        }
        pb::PublicKeysResponse { keys }
    }
}

// The wire-to-domain conversions of `SignSubtree` and `SignManifest`, pure
// (no key, no record) and public so that the services' fuzz targets
// (integration/fuzz) run exactly what the handlers run. `CosignCheckpoint`'s
// is `crate::cosign::checkpoint_to_cosign`, and a batch's size check is
// `crate::limits::check_batch_len`.

/// A `SignSubtree` request's reference checkpoint: a note carrying a
/// signature by one of `ours` (this signer's cosigning keys), else
/// `NotCosignedByUs`; a malformed note is an invalid request.
pub fn reference_checkpoint(note: &[u8], ours: &[VerifierKey]) -> Result<VerifiedCheckpoint> {
    verify_checkpoint(note, ours, None).map_err(|e| match e {
        witness_core::Error::NoTrustedSignature | witness_core::Error::InvalidSignature { .. } => {
            Error::NotCosignedByUs
        }
        other => Error::InvalidRequest(other),
    })
}

/// The subtree a `SignSubtree` request asks to sign, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubtreeToSign {
    /// The first leaf of the subtree.
    pub start: u64,
    /// One past its last leaf.
    pub end: u64,
    /// Its Merkle tree hash.
    pub subtree_hash: Hash,
    /// The subtree consistency proof to the reference checkpoint (at most 63
    /// hashes).
    pub proof: Vec<Hash>,
}

/// A `SignSubtree` request's subtree, checked against the size of its
/// (verified) reference checkpoint: `[start, end)` is a valid subtree within
/// it, and the hash and proof are 32-byte hashes. The proof itself is
/// verified by the caller against the checkpoint's root.
pub fn subtree_to_sign(
    request: &pb::SignSubtreeRequest,
    checkpoint_size: u64,
) -> Result<SubtreeToSign> {
    if !witness_core::merkle::is_valid_subtree(request.start, request.end)
        || request.end > checkpoint_size
    {
        return Err(Error::BadField {
            reason: "[start, end) is not a valid subtree of the checkpoint",
        });
    }
    Ok(SubtreeToSign {
        start: request.start,
        end: request.end,
        subtree_hash: Hash::from_slice(&request.subtree_hash)?,
        proof: hashes(&request.proof)?,
    })
}

/// The bytes a `SignManifest` request has signed: the DSSE pre-authentication
/// encoding of its payload, once the payload is allowed (an `allowed` type,
/// at most 4 MiB, an in-toto Statement for the in-toto type).
pub fn manifest_message(request: &pb::SignManifestRequest, allowed: &[String]) -> Result<Vec<u8>> {
    dsse::check_payload(&request.payload_type, &request.payload, allowed)?;
    Ok(dsse::pae(&request.payload_type, &request.payload))
}

/// A batch item's result on the wire.
fn item_result(result: Result<pb::CosignCheckpointResponse>) -> pb::CosignCheckpointResult {
    use pb::cosign_checkpoint_result::Result as Outcome;
    let outcome = match result {
        Ok(cosigned) => Outcome::Cosigned(cosigned),
        Err(error) => {
            let reason = error.kind().to_owned();
            let stored_size = error.stored_size();
            let status = Status::from(error);
            Outcome::Error(pb::CosignCheckpointError {
                code: status.code() as i32,
                message: status.message().to_owned(),
                reason,
                stored_size,
            })
        }
    };
    pb::CosignCheckpointResult {
        result: Some(outcome),
    }
}

#[tonic::async_trait]
impl pb::signer_server::Signer for SignerService {
    async fn cosign_checkpoint(
        &self,
        request: Request<pb::CosignCheckpointRequest>,
    ) -> Result<Response<pb::CosignCheckpointResponse>, Status> {
        let caller = self.caller(&request);
        let audit_caller = self.audit_caller(&request, &caller);
        let body = request.get_ref();
        let result = match caller {
            Ok(_) => self
                .cosign_all(std::slice::from_ref(body))
                .await
                .pop()
                .unwrap_or_else(|| Err(Error::State("no result for the checkpoint".into()))),
            Err(error) => Err(error),
        };
        self.finish(
            &AuditEntry {
                operation: "cosign_checkpoint",
                origin: Some(&body.origin),
                size: Some(body.size),
                root: Some(hex::encode(&body.root_hash)),
                key_id: Some(self.cosign_key_id()),
                caller: audit_caller.as_deref(),
                ..AuditEntry::default()
            },
            "cosign",
            result,
        )
    }

    async fn cosign_checkpoints(
        &self,
        request: Request<pb::CosignCheckpointsRequest>,
    ) -> Result<Response<pb::CosignCheckpointsResponse>, Status> {
        const OPERATION: &str = "cosign_checkpoints";
        let caller = self.caller(&request);
        let audit_caller = self.audit_caller(&request, &caller);
        let items = &request.get_ref().items;
        let key_id = self.cosign_key_id();
        fn item_entry<'a>(
            item: &'a pb::CosignCheckpointRequest,
            key_id: &str,
            caller: Option<&'a str>,
        ) -> AuditEntry<'a> {
            AuditEntry {
                operation: OPERATION,
                origin: Some(&item.origin),
                size: Some(item.size),
                root: Some(hex::encode(&item.root_hash)),
                key_id: Some(key_id.to_owned()),
                caller,
                ..AuditEntry::default()
            }
        }
        let entry = |item| item_entry(item, &key_id, audit_caller.as_deref());
        if let Err(error) = check_batch_len(items.len()) {
            // One line for the call: its items are not looked at.
            let entry = AuditEntry {
                operation: OPERATION,
                caller: audit_caller.as_deref(),
                ..AuditEntry::default()
            };
            return self.finish(&entry, "cosign", Err(error));
        }
        let results = match caller {
            Ok(_) => self.cosign_all(items).await,
            Err(error) => {
                // The whole call is refused; each item is on record as refused.
                self.audit
                    .record_all(items.iter().map(|item| (entry(item), Err(&error))));
                for _ in items {
                    self.metrics.operation(OPERATION, "cosign", Err(&error));
                }
                return Err(error.into());
            }
        };
        self.audit.record_all(
            items
                .iter()
                .zip(&results)
                .map(|(item, result)| (entry(item), result.as_ref().map(|_| ()))),
        );
        for result in &results {
            self.metrics
                .operation(OPERATION, "cosign", result.as_ref().map(|_| ()));
        }
        Ok(Response::new(pb::CosignCheckpointsResponse {
            results: results.into_iter().map(item_result).collect(),
        }))
    }

    async fn sign_subtree(
        &self,
        request: Request<pb::SignSubtreeRequest>,
    ) -> Result<Response<pb::SignSubtreeResponse>, Status> {
        let caller = self.caller(&request);
        let audit_caller = self.audit_caller(&request, &caller);
        let body = request.get_ref();
        let result = match caller {
            Ok(_) => SignerService::sign_subtree(self, body).await,
            Err(error) => Err(error),
        };
        self.finish(
            &AuditEntry {
                operation: "sign_subtree",
                size: Some(body.end),
                root: Some(hex::encode(&body.subtree_hash)),
                caller: audit_caller.as_deref(),
                ..AuditEntry::default()
            },
            "cosign",
            result,
        )
    }

    async fn sign_manifest(
        &self,
        request: Request<pb::SignManifestRequest>,
    ) -> Result<Response<pb::SignManifestResponse>, Status> {
        let caller = self.caller(&request);
        let audit_caller = self.audit_caller(&request, &caller);
        let body = request.get_ref();
        let result = match caller {
            Ok(_) => SignerService::sign_manifest(self, body).await,
            Err(error) => Err(error),
        };
        self.finish(
            &AuditEntry {
                operation: "sign_manifest",
                key_id: self.manifest.as_ref().map(|m| m.key_id.clone()),
                caller: audit_caller.as_deref(),
                ..AuditEntry::default()
            },
            "manifest",
            result,
        )
    }

    async fn public_keys(
        &self,
        request: Request<pb::PublicKeysRequest>,
    ) -> Result<Response<pb::PublicKeysResponse>, Status> {
        let caller = self.observer(&request);
        let audit_caller = self.audit_caller(&request, &caller);
        let result = caller.map(|_| SignerService::public_keys(self));
        self.finish(
            &AuditEntry {
                operation: "public_keys",
                caller: audit_caller.as_deref(),
                ..AuditEntry::default()
            },
            "none",
            result,
        )
    }

    async fn metrics(
        &self,
        request: Request<pb::MetricsRequest>,
    ) -> Result<Response<pb::MetricsResponse>, Status> {
        let caller = self.observer(&request);
        let audit_caller = self.audit_caller(&request, &caller);
        // Audited and counted before rendering, so the scrape includes itself.
        let entry = AuditEntry {
            operation: "metrics",
            caller: audit_caller.as_deref(),
            ..AuditEntry::default()
        };
        self.audit.record(&entry, caller.as_ref().map(|_| ()));
        self.metrics
            .operation("metrics", "none", caller.as_ref().map(|_| ()));
        caller?;
        Ok(Response::new(pb::MetricsResponse {
            prometheus_text: self.metrics.render(),
        }))
    }
}
