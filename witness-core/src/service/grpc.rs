//! The gRPC `Witness` service: wire messages become core types here, and every
//! error becomes a status here, in one place (`status_of`).

use std::sync::Arc;
use std::time::Instant;

use tonic::{Code, Request, Response, Status};
use witness_proto::witness as pb;

use crate::Error;
use crate::bundle::{TransparencyLogEntry, parse_entries};
use crate::merkle::Hash;
use crate::service::witness::{LogKeys, SubtreeRequest, Witness};
use crate::witness_api::AddCheckpointRequest;

/// The gRPC code for an error, following the tlog-witness outcome.
pub fn grpc_code(error: &Error) -> Code {
    match error.http_status() {
        404 => Code::NotFound,
        403 => Code::PermissionDenied,
        409 => Code::FailedPrecondition,
        422 => Code::Aborted,
        413 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        500 => Code::Internal,
        _ => Code::InvalidArgument,
    }
}

/// The status for an error: its gRPC code, the tlog-witness HTTP status in
/// `x-http-status`, and for a 409 the stored size in `x-stored-size`.
pub fn status_of(error: &Error) -> Status {
    let mut status = Status::new(grpc_code(error), error.to_string());
    let metadata = status.metadata_mut();
    metadata.insert("x-http-status", error.http_status().into());
    metadata.insert(
        "x-witness-refusal",
        tonic::metadata::MetadataValue::from_static(error.kind()),
    );
    if let Error::OldSizeMismatch { stored_size, .. } = error
        && let Ok(value) = stored_size.to_string().parse()
    {
        metadata.insert("x-stored-size", value);
    }
    status
}

fn hashes(raw: &[Vec<u8>]) -> Result<Vec<Hash>, Error> {
    if raw.len() > crate::merkle::MAX_PROOF_HASHES {
        return Err(Error::ProofTooLong {
            count: raw.len(),
            max: crate::merkle::MAX_PROOF_HASHES,
        });
    }
    raw.iter().map(|h| Hash::from_slice(h)).collect()
}

// The wire-to-domain conversions of the requests, pure and public so that the
// services' fuzz targets (integration/fuzz) run exactly what the handlers run.
// What needs the witness's state (trusted keys, stored sizes) stays in
// `Witness`; `AddLog`, `GetCheckpoint` and `Recosign` pass their strings on
// unconverted.

/// An `AddCheckpoint` request as the core takes it: the proof as hashes (at
/// most [`crate::merkle::MAX_PROOF_HASHES`] of 32 bytes), the note bytes as
/// sent (`Witness::add_checkpoint` parses them).
pub fn add_checkpoint_request(
    request: pb::AddCheckpointRequest,
) -> Result<AddCheckpointRequest, Error> {
    Ok(AddCheckpointRequest {
        consistency_proof: hashes(&request.consistency_proof)?,
        old_size: request.old_size,
        checkpoint: request.checkpoint,
    })
}

/// A `SignSubtree` request as the core takes it: the subtree hash and proof
/// as hashes; the range and the note are checked by `Witness::sign_subtree`
/// against the log's checkpoint.
pub fn sign_subtree_request(request: pb::SignSubtreeRequest) -> Result<SubtreeRequest, Error> {
    Ok(SubtreeRequest {
        checkpoint: request.checkpoint,
        start: request.start,
        end: request.end,
        subtree_hash: Hash::from_slice(&request.subtree_hash)?,
        proof: hashes(&request.proof)?,
    })
}

/// The log entry a `VerifyInclusion` request asks about: the first entry of
/// its bundle (a Sigstore bundle or a Rekor v1 entry response). A bundle
/// without one is a 400.
pub fn verify_inclusion_entry(
    request: &pb::VerifyInclusionRequest,
) -> Result<TransparencyLogEntry, Error> {
    parse_entries(&request.bundle)?
        .into_iter()
        .next()
        .ok_or(Error::InvalidRequest {
            reason: "the bundle has no transparency log entry",
        })
}

/// The gRPC face of a [`Witness`].
pub struct WitnessGrpc {
    witness: Arc<Witness>,
}

impl WitnessGrpc {
    pub fn new(witness: Arc<Witness>) -> WitnessGrpc {
        WitnessGrpc { witness }
    }

    /// A trusted log as `ListLogs` and `AddLog` answer it, with its state.
    async fn log_message(&self, log: &LogKeys) -> Result<pb::Log, Status> {
        let state = self
            .witness
            .store()
            .state(&log.origin)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(pb::Log {
            origin: log.origin.clone(),
            verifier_keys: log.keys.iter().map(|k| k.to_vkey()).collect(),
            feed: log.feed.label().to_owned(),
            size: state.as_ref().map_or(0, |s| s.tree.size),
            cosigned: state.is_some(),
            cosigned_at: state.as_ref().map_or(0, |s| s.cosigned_at),
        })
    }
}

#[tonic::async_trait]
impl pb::witness_server::Witness for WitnessGrpc {
    async fn add_checkpoint(
        &self,
        request: Request<pb::AddCheckpointRequest>,
    ) -> Result<Response<pb::AddCheckpointResponse>, Status> {
        let request = add_checkpoint_request(request.into_inner()).map_err(|e| status_of(&e))?;
        let lines = self
            .witness
            .add_checkpoint(
                request.old_size,
                request.consistency_proof,
                &request.checkpoint,
            )
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(pb::AddCheckpointResponse {
            signature_lines: lines,
        }))
    }

    async fn sign_subtree(
        &self,
        request: Request<pb::SignSubtreeRequest>,
    ) -> Result<Response<pb::SignSubtreeResponse>, Status> {
        let parsed = sign_subtree_request(request.into_inner()).map_err(|e| status_of(&e))?;
        let lines = self
            .witness
            .sign_subtree(parsed)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(pb::SignSubtreeResponse {
            signature_lines: lines,
        }))
    }

    async fn get_checkpoint(
        &self,
        request: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::GetCheckpointResponse>, Status> {
        let started = Instant::now();
        let result = self.witness.checkpoint(&request.get_ref().origin).await;
        self.witness
            .metrics()
            .request("get_checkpoint", started.elapsed());
        let state = result.map_err(|e| status_of(&e))?;
        Ok(Response::new(pb::GetCheckpointResponse {
            checkpoint: state.note,
            cosigned_at: state.cosigned_at,
        }))
    }

    async fn list_logs(
        &self,
        _request: Request<pb::ListLogsRequest>,
    ) -> Result<Response<pb::ListLogsResponse>, Status> {
        let mut logs = Vec::new();
        for log in self.witness.trusted_logs() {
            logs.push(self.log_message(&log).await?);
        }
        Ok(Response::new(pb::ListLogsResponse { logs }))
    }

    async fn verify_inclusion(
        &self,
        request: Request<pb::VerifyInclusionRequest>,
    ) -> Result<Response<pb::VerifyInclusionResponse>, Status> {
        let started = Instant::now();
        let entry = verify_inclusion_entry(request.get_ref()).map_err(|e| status_of(&e))?;
        let verdict = self.witness.verify_inclusion(&entry).await;
        self.witness
            .metrics()
            .request("verify_inclusion", started.elapsed());
        let verdict = verdict.map_err(|e| status_of(&e))?;
        Ok(Response::new(pb::VerifyInclusionResponse {
            inclusion_verified: verdict.inclusion_verified,
            consistent_with_witness: verdict.consistent_with_witness,
            origin: verdict.origin,
            log_index: verdict.log_index,
            checkpoint_size: verdict.checkpoint_size,
            witness_size: verdict.witness_size,
            detail: verdict.detail,
        }))
    }

    async fn metrics(
        &self,
        _request: Request<pb::MetricsRequest>,
    ) -> Result<Response<pb::MetricsResponse>, Status> {
        Ok(Response::new(pb::MetricsResponse {
            prometheus_text: self.witness.metrics().render(),
        }))
    }

    async fn readiness(
        &self,
        _request: Request<pb::ReadinessRequest>,
    ) -> Result<Response<pb::ReadinessResponse>, Status> {
        let readiness = self.witness.readiness().await;
        if !readiness.detail.is_empty() {
            tracing::warn!(detail = %readiness.detail, "not ready");
        }
        Ok(Response::new(pb::ReadinessResponse {
            store_writable: readiness.store_writable,
            signer_reachable: readiness.signer_reachable,
            detail: readiness.detail,
        }))
    }

    async fn add_log(
        &self,
        request: Request<pb::AddLogRequest>,
    ) -> Result<Response<pb::AddLogResponse>, Status> {
        let request = request.into_inner();
        let log = self
            .witness
            .add_log(&request.origin, &request.verifier_key)
            .await
            .map_err(|e| status_of(&e))?;
        let log = self.log_message(&log).await?;
        Ok(Response::new(pb::AddLogResponse { log: Some(log) }))
    }

    async fn recosign(
        &self,
        request: Request<pb::RecosignRequest>,
    ) -> Result<Response<pb::RecosignResponse>, Status> {
        let recosigned = self
            .witness
            .recosign_latest(&request.get_ref().origin)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(pb::RecosignResponse {
            size: recosigned.map(|r| r.size),
        }))
    }
}
