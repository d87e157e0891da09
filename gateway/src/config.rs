//! The gateway's configuration: a TOML file (`rekor-witness-gateway --config`),
//! read strictly (unknown keys are errors), or built in code by tests.
//!
//! Each section's type lives with the code that uses it: [`crate::transport`]
//! (serving TLS and the mTLS channels upstream), [`crate::protect`] (limits),
//! [`crate::metrics`] (the metrics listener), [`crate::admin`] (the OIDC admin
//! API).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::GatewayError;

/// Where the gateway serves the API and where it forwards requests.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address of the API listener (default `127.0.0.1:8080`). A non-loopback
    /// address requires `[tls]`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Serve the API over HTTPS with this certificate (reloaded on change).
    #[serde(default)]
    pub tls: Option<crate::transport::ServerTls>,
    /// How often the TLS files of the `witness` and `signer` clients and of
    /// the metrics listener are read again (default `10s`); changed, valid
    /// files serve new connections without a restart (`[tls]` has its own
    /// `reload_interval`).
    #[serde(default = "default_tls_reload_interval", deserialize_with = "duration")]
    pub tls_reload_interval: Duration,
    /// The witness service's gRPC endpoint.
    pub witness: Upstream,
    /// The signer's gRPC endpoint, for its metrics and readiness only (the
    /// gateway never asks it to sign).
    #[serde(default)]
    pub signer: Option<Upstream>,
    /// The tlog-witness submission prefix: `add-checkpoint` and `sign-subtree`
    /// are served under it. Empty, or `/`-separated segments starting with `/`
    /// and without a trailing `/`.
    #[serde(default)]
    pub submission_prefix: String,
    /// The tlog-witness monitoring prefix, shaped like `submission_prefix`;
    /// delegating it to a CDN is what the spec's one-hour delay allows.
    #[serde(default)]
    pub monitoring_prefix: String,
    /// Rate limits, timeouts and concurrency limits of the API listener.
    #[serde(default)]
    pub limits: crate::protect::Limits,
    /// Metrics: a separate listener for `/metrics` (optionally requiring
    /// client certificates) and OTLP export; without a separate listener
    /// `/metrics` is served on the API listener.
    #[serde(default)]
    pub metrics: Option<crate::metrics::MetricsConfig>,
    /// The admin API (add a log, list logs, force a re-cosign); off without it.
    #[serde(default)]
    pub admin: Option<crate::admin::AdminConfig>,
}

/// A gRPC service the gateway calls: the witness, or the signer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// `http://host:port` (loopback only) or `https://host:port` (mutual TLS:
    /// `ca`, `client_cert` and `client_key` are then required).
    pub endpoint: String,
    /// PEM file of the CA that issued the service's server certificate.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// PEM file of the gateway's client certificate.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// The name in the service's certificate, when it differs from the
    /// endpoint's host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Deadline of one call (connecting included); default `10s`: long enough
    /// for a cosignature through the signer, short enough that a stuck witness
    /// answers 503.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

impl Upstream {
    /// A plaintext loopback endpoint with the default deadline.
    pub fn plaintext(endpoint: impl Into<String>) -> Upstream {
        Upstream {
            endpoint: endpoint.into(),
            ca: None,
            client_cert: None,
            client_key: None,
            server_name: None,
            timeout: default_timeout(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_tls_reload_interval() -> Duration {
    witness_core::tls_reload::DEFAULT_RELOAD_INTERVAL
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Deserializes a `humantime` duration ("10s", "1h", "1day") from a string.
pub(crate) fn duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(serde::de::Error::custom)
}

impl GatewayConfig {
    /// Plain HTTP on the default listener, a plaintext witness endpoint, both
    /// prefixes empty, default limits, no signer, no metrics listener, no admin
    /// API.
    pub fn new(witness_endpoint: impl Into<String>) -> GatewayConfig {
        GatewayConfig {
            listen: default_listen(),
            tls: None,
            tls_reload_interval: default_tls_reload_interval(),
            witness: Upstream::plaintext(witness_endpoint),
            signer: None,
            submission_prefix: String::new(),
            monitoring_prefix: String::new(),
            limits: crate::protect::Limits::default(),
            metrics: None,
            admin: None,
        }
    }

    /// Reads and validates a TOML configuration file ([`GatewayConfig::parse`]
    /// of its text; errors name the file).
    pub fn from_file(path: &Path) -> Result<GatewayConfig, GatewayError> {
        let text = std::fs::read_to_string(path).map_err(|e| GatewayError::Config {
            detail: format!("reading {}: {e}", path.display()),
        })?;
        GatewayConfig::parse(&text).map_err(|error| match error {
            GatewayError::Config { detail } => GatewayError::Config {
                detail: format!("{}: {detail}", path.display()),
            },
            other => other,
        })
    }

    /// Parses and validates TOML configuration text: unknown keys are errors,
    /// and so are values the gateway cannot serve with (prefixes that would
    /// break routing, plain HTTP off loopback, invalid limits, ...).
    pub fn parse(text: &str) -> Result<GatewayConfig, GatewayError> {
        let config: GatewayConfig = toml::from_str(text).map_err(|e| GatewayError::Config {
            detail: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
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
        // Submissions and the monitoring answers are public, but plaintext on
        // a network lets anyone on the path rewrite them; loopback plaintext
        // is for a TLS-terminating proxy on the same host, and for tests.
        if self.tls.is_none() && !self.listen.ip().is_loopback() {
            return Err(GatewayError::Config {
                detail: format!(
                    "listen {} is not a loopback address: plain HTTP is allowed on loopback only; configure [tls]",
                    self.listen
                ),
            });
        }
        if self.tls.is_none() && self.admin.as_ref().is_some_and(|a| a.client_ca.is_some()) {
            return Err(GatewayError::Config {
                detail: "[admin] client_ca needs [tls]: client certificates are checked over TLS"
                    .into(),
            });
        }
        if let Some(tls) = &self.tls
            && tls.reload_interval.is_zero()
        {
            return Err(GatewayError::Config {
                detail: "tls.reload_interval must be above zero".into(),
            });
        }
        self.limits.validate()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

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

    /// The example shipped in `config/` documents every key; it must stay a
    /// configuration the gateway accepts, with the values it documents.
    #[test]
    fn shipped_example_configuration_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/gateway.example.toml");
        let config = GatewayConfig::from_file(&path).expect("example configuration");
        assert!(config.tls.is_some(), "the example serves HTTPS");
        assert!(!config.listen.ip().is_loopback());
        assert_eq!(config.limits, crate::protect::Limits::default());
        assert!(config.signer.is_some());
    }

    #[test]
    fn unknown_keys_are_refused_in_every_section() {
        let base = "[witness]\nendpoint = \"http://127.0.0.1:1\"\n";
        assert!(toml::from_str::<GatewayConfig>(base).is_ok());
        for text in [
            format!("listne = \"127.0.0.1:8080\"\n{base}"),
            format!("{base}[limits]\nrequest_timout = \"1s\"\n"),
            format!("{base}[limits.per_origin_rate]\nper_minute = 1\nburst = 1\nper_hour = 1\n"),
            format!("{base}[tls]\ncert = \"c\"\nkey = \"k\"\npassword = \"x\"\n"),
            format!("{base}timeuot = \"1s\"\n"),
        ] {
            let error = toml::from_str::<GatewayConfig>(&text).expect_err(&text);
            assert!(error.to_string().contains("unknown field"), "{error}");
        }
    }

    #[test]
    fn plain_http_is_refused_on_a_non_loopback_listen_address() {
        let mut config = GatewayConfig::new("http://127.0.0.1:1");
        for listen in ["0.0.0.0:8080", "[::]:8080", "192.0.2.1:443"] {
            config.listen = listen.parse().unwrap();
            let error = config.validate().unwrap_err();
            assert!(error.to_string().contains("loopback"), "{error}");
        }
        config.tls = Some(crate::transport::ServerTls::new("cert.pem", "key.pem"));
        assert!(config.validate().is_ok());
        config.tls = None;
        for listen in ["127.0.0.1:8080", "[::1]:8080"] {
            config.listen = listen.parse().unwrap();
            assert!(config.validate().is_ok());
        }
    }
}
