//! TLS: the API listener's server certificate (reloaded on change) and the
//! mutual-TLS gRPC channels to the witness and the signer.
//!
//! Serving TLS: skeleton until the TLS work lands.

use std::path::PathBuf;

use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

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
/// crash-looping with it. `https://` endpoints use mutual TLS (TLS 1.3 with
/// the gateway's client certificate); `http://` is allowed to loopback only.
pub(crate) fn upstream_channel(upstream: &Upstream) -> Result<Channel, GatewayError> {
    let config_error = |detail: String| GatewayError::Config {
        detail: format!("endpoint {:?}: {detail}", upstream.endpoint),
    };
    let mut endpoint = Endpoint::from_shared(upstream.endpoint.clone())
        .map_err(|e| config_error(e.to_string()))?;
    let uri = endpoint.uri().clone();
    match uri.scheme_str() {
        Some("https") => {
            let (Some(ca), Some(cert), Some(key)) =
                (&upstream.ca, &upstream.client_cert, &upstream.client_key)
            else {
                return Err(config_error(
                    "https needs `ca`, `client_cert` and `client_key` (mutual TLS)".into(),
                ));
            };
            let mut tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read_pem(ca)?))
                .identity(Identity::from_pem(read_pem(cert)?, read_pem(key)?));
            if let Some(name) = &upstream.server_name {
                tls = tls.domain_name(name.clone());
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| config_error(e.to_string()))?;
        }
        Some("http") => {
            let loopback = matches!(uri.host(), Some("localhost"))
                || uri
                    .host()
                    .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
                    .and_then(|h| h.parse::<std::net::IpAddr>().ok())
                    .is_some_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(config_error(
                    "plaintext is allowed to loopback only; use https with mutual TLS".into(),
                ));
            }
        }
        _ => return Err(config_error("the scheme must be https or http".into())),
    }
    Ok(endpoint
        .connect_timeout(upstream.timeout.min(Duration::from_secs(5)))
        .timeout(upstream.timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .connect_lazy())
}

fn read_pem(path: &Path) -> Result<Vec<u8>, GatewayError> {
    std::fs::read(path).map_err(|e| GatewayError::Config {
        detail: format!("reading {}: {e}", path.display()),
    })
}
