//! TLS: the API listener's server certificate (reloaded on change) and the
//! mutual-TLS gRPC channels to the witness and the signer.
//!
//! Skeleton: plaintext only until the TLS work lands.

use std::path::PathBuf;

use serde::Deserialize;
use tonic::transport::{Channel, Endpoint};

use crate::GatewayError;
use crate::config::Upstream;

/// The API listener's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (mode 0600 or stricter).
    pub key: PathBuf,
}

/// A lazily connected channel to `upstream`: the gateway starts (and answers
/// 503) while the service is down, instead of failing at startup or
/// crash-looping with it.
pub(crate) fn upstream_channel(upstream: &Upstream) -> Result<Channel, GatewayError> {
    let endpoint =
        Endpoint::from_shared(upstream.endpoint.clone()).map_err(|e| GatewayError::Config {
            detail: format!("endpoint {:?}: {e}", upstream.endpoint),
        })?;
    Ok(endpoint
        .connect_timeout(upstream.timeout)
        .timeout(upstream.timeout)
        .connect_lazy())
}
