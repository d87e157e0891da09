//! `/metrics`: the gateway's own metrics plus the witness's and the signer's,
//! merged with a `service` label. Skeleton until the metrics work lands.

use serde::Deserialize;

/// A separate listener for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsListener {
    pub listen: std::net::SocketAddr,
}
