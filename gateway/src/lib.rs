//! HTTP front door of the Rekor witness: the c2sp.org/tlog-witness API
//! (`add-checkpoint`, `sign-subtree`) and its monitoring endpoint
//! (`<monitoring prefix>/<origin hash>/checkpoint`), forwarded to the witness
//! service over gRPC.
//!
//! The gateway holds no witness state and no keys: it parses request bodies at
//! the edge ([`witness_core::witness_api`]), forwards typed requests, and maps
//! the witness's refusals to the HTTP statuses the spec prescribes. In this
//! slice it serves plain HTTP on the listener it is given and reaches the
//! witness service over plaintext gRPC (loopback).

#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod error;
pub mod metrics;
mod monitoring;
pub mod protect;
mod status;
mod submission;
pub mod transport;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tonic::transport::Channel;
use witness_core::witness_api::{MAX_ADD_CHECKPOINT_BODY, MAX_SIGN_SUBTREE_BODY};
use witness_proto::signer::signer_client::SignerClient;
use witness_proto::witness::witness_client::WitnessClient;

pub use config::{GatewayConfig, Upstream};
pub use error::GatewayError;

/// Shared by every handler: the witness client (cheap to clone, one HTTP/2
/// connection underneath), the signer client when configured (metrics and
/// readiness only), and the origin index of the monitoring endpoint.
#[derive(Clone)]
pub(crate) struct Gateway {
    witness: WitnessClient<Channel>,
    signer: Option<SignerClient<Channel>>,
    origins: Arc<monitoring::OriginIndex>,
}

/// Serves the gateway on `listener` until `shutdown` completes, then drains
/// in-flight requests.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: &GatewayConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let app = router(config)?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| GatewayError::Serve {
            detail: e.to_string(),
        })
}

fn router(config: &GatewayConfig) -> Result<Router, GatewayError> {
    config.validate()?;
    let signer = match &config.signer {
        Some(upstream) => Some(SignerClient::new(transport::upstream_channel(upstream)?)),
        None => None,
    };
    let gateway = Gateway {
        witness: WitnessClient::new(transport::upstream_channel(&config.witness)?),
        signer,
        origins: Arc::new(monitoring::OriginIndex::default()),
    };
    let submission = &config.submission_prefix;
    let monitoring = &config.monitoring_prefix;
    Ok(Router::new()
        .route(
            &format!("{submission}/add-checkpoint"),
            post(submission::add_checkpoint),
        )
        .route(
            &format!("{submission}/sign-subtree"),
            post(submission::sign_subtree),
        )
        // Sized to the largest body either endpoint accepts, so an oversized
        // body is refused with 413 while it streams in, before it is buffered;
        // the parsers check their own exact caps again.
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .route(
            &format!("{monitoring}/{{origin_hash}}/checkpoint"),
            get(monitoring::checkpoint),
        )
        .merge(status::routes())
        .with_state(gateway))
}

/// The body limit of the submission endpoints.
const MAX_BODY: usize = if MAX_ADD_CHECKPOINT_BODY > MAX_SIGN_SUBTREE_BODY {
    MAX_ADD_CHECKPOINT_BODY
} else {
    MAX_SIGN_SUBTREE_BODY
};
