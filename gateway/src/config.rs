//! The gateway's configuration.

use std::time::Duration;

use crate::GatewayError;

/// Where the gateway serves the API and where it forwards requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// gRPC endpoint of the witness service, e.g. `http://127.0.0.1:7380`.
    pub witness_endpoint: String,
    /// The tlog-witness submission prefix: `add-checkpoint` and `sign-subtree`
    /// are served under it. Empty, or `/`-separated segments starting with `/`
    /// and without a trailing `/`.
    pub submission_prefix: String,
    /// The tlog-witness monitoring prefix, shaped like `submission_prefix`;
    /// delegating it to a CDN is what the spec's one-hour delay allows.
    pub monitoring_prefix: String,
    /// Deadline of one call to the witness service (connecting included).
    pub witness_timeout: Duration,
}

impl GatewayConfig {
    /// Both prefixes empty, and a 10 s deadline: long enough for a cosignature
    /// through the signer, short enough that a stuck witness answers 503.
    pub fn new(witness_endpoint: impl Into<String>) -> GatewayConfig {
        GatewayConfig {
            witness_endpoint: witness_endpoint.into(),
            submission_prefix: String::new(),
            monitoring_prefix: String::new(),
            witness_timeout: Duration::from_secs(10),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), GatewayError> {
        for (name, prefix) in [
            ("submission_prefix", &self.submission_prefix),
            ("monitoring_prefix", &self.monitoring_prefix),
        ] {
            // Braces would be read by the router as path parameters.
            let valid = prefix.is_empty()
                || (prefix.starts_with('/')
                    && !prefix.ends_with('/')
                    && !prefix.contains(['{', '}', '*']));
            if !valid {
                return Err(GatewayError::Config {
                    detail: format!(
                        "{name} {prefix:?} is neither empty nor `/segment` without a trailing slash"
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_that_would_break_routing_are_refused() {
        for prefix in ["witness", "/witness/", "/{origin_hash}", "/*rest"] {
            let mut config = GatewayConfig::new("http://127.0.0.1:1");
            config.submission_prefix = prefix.into();
            assert!(config.validate().is_err(), "{prefix}");
        }
        let mut config = GatewayConfig::new("http://127.0.0.1:1");
        config.submission_prefix = "/witness/v1".into();
        config.monitoring_prefix = "/monitoring".into();
        assert!(config.validate().is_ok());
    }
}
