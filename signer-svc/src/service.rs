//! The gRPC `Signer` service: typed signing calls only. Each call checks the
//! caller's certificate identity against the allowlist, validates its fields
//! into core types, builds the exact bytes to sign itself, and writes one audit
//! line whatever the outcome.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tonic::{Request, Response, Status};
use witness_core::checkpoint::{Checkpoint, verify_checkpoint};
use witness_core::cosignature::{cosignature_v1_message, subtree_v1_message};
use witness_core::merkle::{Hash, MAX_PROOF_HASHES};
use witness_core::note::{NoteSignature, SignatureType, VerifierKey};
use witness_proto::signer as pb;

use crate::audit::{AuditEntry, AuditLog};
use crate::dsse;
use crate::error::{Error, Result};
use crate::fork_guard::{self, ForkGuard};
use crate::keys::{self, Algorithm, SigningKey};
use crate::metrics::Metrics;
use crate::tls::PeerIdentity;

/// The longest origin accepted: the ML-DSA-44 cosigned message length-prefixes
/// the origin with one byte, and one limit for every key keeps behaviour uniform.
pub const MAX_ORIGIN_LEN: usize = 255;

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
}

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

fn hashes(raw: &[Vec<u8>]) -> Result<Vec<Hash>> {
    if raw.len() > MAX_PROOF_HASHES {
        return Err(Error::BadField {
            reason: "proof has more than 63 hashes",
        });
    }
    raw.iter()
        .map(|h| Hash::from_slice(h).map_err(Error::InvalidRequest))
        .collect()
}

fn checkpoint_from(request: &pb::CosignCheckpointRequest) -> Result<Checkpoint> {
    if request.origin.len() > MAX_ORIGIN_LEN {
        return Err(Error::BadField {
            reason: "origin is longer than 255 bytes",
        });
    }
    let root = Hash::from_slice(&request.root_hash)?;
    Ok(Checkpoint::new(
        &request.origin,
        request.size,
        root,
        request.extension_lines.clone(),
    )?)
}

impl SignerService {
    /// The caller's allowlisted identity.
    fn caller<T>(&self, request: &Request<T>) -> Result<String> {
        request
            .extensions()
            .get::<PeerIdentity>()
            .and_then(|peer| {
                peer.identities
                    .iter()
                    .find(|id| self.allowed_identities.contains(id))
            })
            .cloned()
            .ok_or(Error::PermissionDenied)
    }

    /// Whom the audit log names: the allowlisted identity, or else every
    /// identity the refused caller's certificate presented.
    fn audit_caller<T>(&self, request: &Request<T>, caller: &Result<String>) -> Option<String> {
        match caller {
            Ok(identity) => Some(identity.clone()),
            Err(_) => request
                .extensions()
                .get::<PeerIdentity>()
                .map(|peer| peer.identities.join(","))
                .filter(|identities| !identities.is_empty()),
        }
    }

    async fn sign_timed(&self, key: &dyn SigningKey, message: &[u8]) -> Result<Vec<u8>> {
        let started = Instant::now();
        let signature = key.sign(message).await;
        self.metrics
            .signing(key.algorithm().label(), started.elapsed());
        signature
    }

    async fn cosign(
        &self,
        request: &pb::CosignCheckpointRequest,
    ) -> Result<pb::CosignCheckpointResponse> {
        let checkpoint = checkpoint_from(request)?;
        let proof = hashes(&request.consistency_proof)?;
        // A first, non-binding check spares the key backend from signing what
        // will be refused; the binding check is the transaction below.
        let guard = self.guard.clone();
        let origin = checkpoint.origin().to_owned();
        let record = tokio::task::spawn_blocking(move || guard.record(&origin))
            .await
            .map_err(|e| Error::State(e.to_string()))??;
        fork_guard::check(record, &checkpoint, request.old_size, &proof)?;

        let timestamp = now_seconds()?;
        let mut lines = Vec::new();
        let message = cosignature_v1_message(timestamp, &checkpoint.to_text());
        let signature = self.sign_timed(self.ed25519.key.as_ref(), &message).await?;
        lines.push(self.line(&self.ed25519, timestamp, signature)?);
        if let Some(ml_dsa) = &self.ml_dsa_44 {
            let message = subtree_v1_message(
                &self.name,
                timestamp,
                checkpoint.origin(),
                0,
                checkpoint.size(),
                checkpoint.root_hash(),
            )?;
            let signature = self.sign_timed(ml_dsa.key.as_ref(), &message).await?;
            lines.push(self.line(ml_dsa, timestamp, signature)?);
        }

        // Store before revealing: the record is checked again and updated in one
        // durable transaction, and only then do the signatures leave.
        let guard = self.guard.clone();
        let old_size = request.old_size;
        tokio::task::spawn_blocking(move || guard.check_and_record(&checkpoint, old_size, &proof))
            .await
            .map_err(|e| Error::State(e.to_string()))??;
        Ok(pb::CosignCheckpointResponse {
            signature_lines: lines,
            timestamp,
        })
    }

    fn line(&self, key: &CosigningKey, timestamp: u64, signature: Vec<u8>) -> Result<String> {
        let mut blob = timestamp.to_be_bytes().to_vec();
        blob.extend_from_slice(&signature);
        Ok(NoteSignature::new(&self.name, key.verifier.key_id(), blob)?.to_line())
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
        let mut ours = vec![self.ed25519.verifier.clone()];
        ours.push(ml_dsa.verifier.clone());
        let verified =
            verify_checkpoint(&request.checkpoint, &ours, None).map_err(|e| match e {
                witness_core::Error::NoTrustedSignature
                | witness_core::Error::InvalidSignature { .. } => Error::NotCosignedByUs,
                other => Error::InvalidRequest(other),
            })?;
        let checkpoint = verified.checkpoint();
        if !witness_core::merkle::is_valid_subtree(request.start, request.end)
            || request.end > checkpoint.size()
        {
            return Err(Error::BadField {
                reason: "[start, end) is not a valid subtree of the checkpoint",
            });
        }
        let subtree_hash = Hash::from_slice(&request.subtree_hash)?;
        let proof = hashes(&request.proof)?;
        witness_core::merkle::verify_subtree_consistency(
            request.start,
            request.end,
            &subtree_hash,
            checkpoint.size(),
            checkpoint.root_hash(),
            &proof,
        )?;
        // Subtree cosignatures carry a zero timestamp (tlog-witness sign-subtree).
        let message = subtree_v1_message(
            &self.name,
            0,
            checkpoint.origin(),
            request.start,
            request.end,
            &subtree_hash,
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
        dsse::check_payload(
            &request.payload_type,
            &request.payload,
            &manifest.payload_types,
        )?;
        let message = dsse::pae(&request.payload_type, &request.payload);
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

#[tonic::async_trait]
impl pb::signer_server::Signer for SignerService {
    async fn cosign_checkpoint(
        &self,
        request: Request<pb::CosignCheckpointRequest>,
    ) -> Result<Response<pb::CosignCheckpointResponse>, Status> {
        let caller = self.caller(&request);
        let audit_caller = self.audit_caller(&request, &caller);
        let body = request.get_ref();
        let result = match &caller {
            Ok(_) => self.cosign(body).await,
            Err(_) => Err(Error::PermissionDenied),
        };
        let key_id = format!("{:08x}", self.ed25519.verifier.key_id());
        self.audit.record(
            &AuditEntry {
                operation: "cosign_checkpoint",
                origin: Some(&body.origin),
                size: Some(body.size),
                root: Some(hex::encode(&body.root_hash)),
                key_id: Some(key_id),
                caller: audit_caller.as_deref(),
            },
            result.as_ref().map(|_| ()),
        );
        self.metrics
            .operation("cosign_checkpoint", "cosign", result.as_ref().map(|_| ()));
        Ok(Response::new(result?))
    }

    async fn sign_subtree(
        &self,
        request: Request<pb::SignSubtreeRequest>,
    ) -> Result<Response<pb::SignSubtreeResponse>, Status> {
        let caller = self.caller(&request);
        let audit_caller = self.audit_caller(&request, &caller);
        let body = request.get_ref();
        let result = match &caller {
            Ok(_) => SignerService::sign_subtree(self, body).await,
            Err(_) => Err(Error::PermissionDenied),
        };
        self.audit.record(
            &AuditEntry {
                operation: "sign_subtree",
                size: Some(body.end),
                root: Some(hex::encode(&body.subtree_hash)),
                caller: audit_caller.as_deref(),
                ..AuditEntry::default()
            },
            result.as_ref().map(|_| ()),
        );
        self.metrics
            .operation("sign_subtree", "cosign", result.as_ref().map(|_| ()));
        Ok(Response::new(result?))
    }

    async fn sign_manifest(
        &self,
        request: Request<pb::SignManifestRequest>,
    ) -> Result<Response<pb::SignManifestResponse>, Status> {
        let caller = self.caller(&request);
        let audit_caller = self.audit_caller(&request, &caller);
        let body = request.get_ref();
        let result = match &caller {
            Ok(_) => SignerService::sign_manifest(self, body).await,
            Err(_) => Err(Error::PermissionDenied),
        };
        self.audit.record(
            &AuditEntry {
                operation: "sign_manifest",
                key_id: self.manifest.as_ref().map(|m| m.key_id.clone()),
                caller: audit_caller.as_deref(),
                ..AuditEntry::default()
            },
            result.as_ref().map(|_| ()),
        );
        self.metrics
            .operation("sign_manifest", "manifest", result.as_ref().map(|_| ()));
        Ok(Response::new(result?))
    }

    async fn public_keys(
        &self,
        request: Request<pb::PublicKeysRequest>,
    ) -> Result<Response<pb::PublicKeysResponse>, Status> {
        self.caller(&request)?;
        Ok(Response::new(SignerService::public_keys(self)))
    }

    async fn metrics(
        &self,
        request: Request<pb::MetricsRequest>,
    ) -> Result<Response<pb::MetricsResponse>, Status> {
        self.caller(&request)?;
        Ok(Response::new(pb::MetricsResponse {
            prometheus_text: self.metrics.render(),
        }))
    }
}
