//! `add-checkpoint` and `sign-subtree`: parse the body, forward the typed
//! request, answer with the cosignature lines.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use witness_core::merkle::Hash;
use witness_core::witness_api::{
    cosignature_response_body, parse_add_checkpoint_body, parse_sign_subtree_body,
};
use witness_proto::witness as pb;

use crate::{Gateway, GatewayError};

pub(crate) async fn add_checkpoint(
    State(gateway): State<Gateway>,
    body: Bytes,
) -> Result<Response, GatewayError> {
    let request = parse_add_checkpoint_body(&body)?;
    let response = gateway
        .witness
        .clone()
        .add_checkpoint(pb::AddCheckpointRequest {
            old_size: request.old_size,
            consistency_proof: wire_hashes(&request.consistency_proof),
            checkpoint: request.checkpoint,
        })
        .await
        .map_err(|status| GatewayError::from_witness(&status))?;
    cosignatures(&response.into_inner().signature_lines)
}

pub(crate) async fn sign_subtree(
    State(gateway): State<Gateway>,
    body: Bytes,
) -> Result<Response, GatewayError> {
    let request = parse_sign_subtree_body(&body)?;
    let response = gateway
        .witness
        .clone()
        .sign_subtree(pb::SignSubtreeRequest {
            checkpoint: request.checkpoint,
            start: request.start,
            end: request.end,
            subtree_hash: request.subtree_hash.0.to_vec(),
            proof: wire_hashes(&request.proof),
        })
        .await
        .map_err(|status| GatewayError::from_witness(&status))?;
    cosignatures(&response.into_inner().signature_lines)
}

fn wire_hashes(hashes: &[Hash]) -> Vec<Vec<u8>> {
    hashes.iter().map(|h| h.0.to_vec()).collect()
}

fn cosignatures(lines: &[String]) -> Result<Response, GatewayError> {
    let body = cosignature_response_body(lines).map_err(|e| GatewayError::BadUpstream {
        detail: e.to_string(),
    })?;
    Ok(([(CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}
