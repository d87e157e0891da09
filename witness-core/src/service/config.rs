//! The witness service's configuration (TOML). Unknown fields are refused, and
//! the documentation of each field below is the operator's manual for it.
//!
//! ```toml
//! listen = "127.0.0.1:7380"
//! state = "/var/lib/witness/state.db"          # or "postgres://..."
//! checkpoint_interval = "1h"
//! rekor_urls = ["https://rekor.sigstore.dev", "https://log2025-1.rekor.sigstore.dev"]
//! rekor_keys = ["/etc/witness/rekor.sigstore.dev.pem", "log2025-1.rekor.sigstore.dev+cf119915+Abf..."]
//!
//! [signer]
//! endpoint = "https://signer:7390"
//! ca = "/etc/witness/tls/ca.pem"
//! client_cert = "/etc/witness/tls/witness.pem"
//! client_key = "/etc/witness/tls/witness.key"
//! ```
//!
//! Air-gap mode replaces pulling by signed mirror bundles (see
//! [`crate::service::airgap`]); no `[archive]` then:
//!
//! ```toml
//! state = "/var/lib/witness/state.db"
//! mirror_path = "/media/bootstrap-pack/rekor-mirror"
//! mirror_key = "/etc/witness/mirror-producer-p256.pem"
//! mirror_scan_interval = "10s"
//! [[log]]
//! key = "log2025-1.rekor.sigstore.dev+cf119915+Abf..."
//!
//! [signer]
//! endpoint = "https://127.0.0.1:7390"
//! # ca, client_cert, client_key as above
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::bundle::url_host;
use crate::log_list::parse_log_list;
use crate::note::{SignatureType, VerifierKey};
use crate::service::archive::ArchiveConfig;
use crate::service::signer_client::SignerConfig;
use crate::service::witness::{Feed, LogKeys, ShardedLog};
use crate::{Error, Result};

/// The largest configuration file read.
const MAX_CONFIG_SIZE: u64 = 1 << 20;

/// The witness service configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    /// Address of the gRPC listener the gateway and programmatic clients call
    /// (default `127.0.0.1:7380`). The listener speaks plaintext HTTP/2 and must
    /// be a loopback address unless `tls` is set.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Mutual TLS for the gRPC listener (required for a non-loopback address).
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// How often the TLS files (the listener's `tls` and the `signer` client's)
    /// are read again (default `10s`); changed, valid files are used for new
    /// connections without a restart, invalid ones are logged and counted in
    /// `tls_reload_failures_total` while the previous ones stay in use.
    #[serde(
        default = "default_tls_reload_interval",
        deserialize_with = "crate::service::duration"
    )]
    pub tls_reload_interval: Duration,
    /// Where the witness keeps its state: a SQLite file path (the embedded
    /// default, `/var/lib/witness/state.db`), or a `postgres://` URL for several
    /// replicas sharing one database.
    #[serde(default = "default_state")]
    pub state: String,
    /// Connections in the PostgreSQL pool (default 16).
    #[serde(default = "default_pool")]
    pub state_pool_size: usize,
    /// How often every log's latest checkpoint is cosigned again with a fresh
    /// timestamp, even if the log did not grow (default `1h`).
    #[serde(
        default = "default_interval",
        deserialize_with = "crate::service::duration"
    )]
    pub checkpoint_interval: Duration,
    /// How often pulled logs are polled (default `1m`).
    #[serde(
        default = "default_poll",
        deserialize_with = "crate::service::duration"
    )]
    pub poll_interval: Duration,
    /// Base URLs of the Rekor logs to pull, paired by position with
    /// `rekor_keys`. A log whose key is ECDSA P-256 is pulled as Rekor v1 (REST
    /// API; every shard is its own origin, `<host> - <tree ID>`); an Ed25519 key
    /// means a tlog-tiles log (Rekor v2) whose origin is the key name.
    #[serde(default)]
    pub rekor_urls: Vec<String>,
    /// The keys of `rekor_urls`, by position: a path to a PEM public key (named
    /// after the URL's host) or a vkey (`name+id+base64`).
    #[serde(default)]
    pub rekor_keys: Vec<String>,
    /// Air-gap mode: a directory of signed Rekor mirror bundles to verify and
    /// cosign offline (see [`crate::service::airgap`] for the layout and the
    /// order bundles are consumed in). Setting it makes the witness verify-only:
    /// it constructs no HTTP client, starts no feeder, fetches no log list and
    /// opens no outbound connection other than its gRPC link to the signer.
    /// `rekor_urls` only name the hosts of `rekor_keys` then (nothing is
    /// pulled), `[archive]` is refused (the audit directory
    /// `<mirror_path>/audit/` takes its place) and `mirror_key` is required.
    /// The witness writes into `<mirror_path>/audit/`, so the directory must be
    /// writable.
    #[serde(default)]
    pub mirror_path: Option<PathBuf>,
    /// Air-gap mode: path to the PEM public key (ECDSA P-256
    /// SubjectPublicKeyInfo) of the mirror producer, which signs each bundle's
    /// `rekor-mirror.car.dsse.json`. Required with `mirror_path`, refused
    /// without it.
    #[serde(default)]
    pub mirror_key: Option<PathBuf>,
    /// Air-gap mode: how often `mirror_path` is scanned for new bundles
    /// (default `10s`, at least `1s`).
    #[serde(
        default = "default_mirror_scan",
        deserialize_with = "crate::service::duration"
    )]
    pub mirror_scan_interval: Duration,
    /// The signer holding the witness keys.
    pub signer: SignerConfig,
    /// The checkpoint archive (default: local files under
    /// `/var/lib/witness/checkpoints`).
    #[serde(default)]
    pub archive: Option<ArchiveConfig>,
    /// Further logs, one table each.
    #[serde(default, rename = "log")]
    pub logs: Vec<LogConfig>,
    /// Witness-network log lists (`logs/v0` files) whose logs push checkpoints.
    #[serde(default)]
    pub log_lists: Vec<PathBuf>,
}

/// What the witness service runs as; [`crate::service::server::run`] branches
/// on it once, before anything that could open a connection is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceMode {
    /// Pull feeders, log-list fetching, consistency-proof fetching and the
    /// archive (possibly in object storage): the connected witness.
    Online,
    /// Verify-only over signed mirror bundles, with no HTTP client at all.
    Airgap(AirgapConfig),
}

/// The air-gap settings, resolved against the configuration's directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AirgapConfig {
    /// The directory of mirror bundles (and of `audit/`).
    pub mirror_path: PathBuf,
    /// The mirror producer's PEM public key.
    pub mirror_key: PathBuf,
    /// How often `mirror_path` is scanned.
    pub scan_interval: Duration,
}

fn default_tls_reload_interval() -> Duration {
    crate::tls_reload::DEFAULT_RELOAD_INTERVAL
}

/// Mutual TLS of the gRPC listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// PEM server certificate chain.
    pub cert: PathBuf,
    /// PEM private key of the server certificate (mode 0600 or stricter).
    pub key: PathBuf,
    /// PEM CA that client certificates must chain to.
    pub client_ca: PathBuf,
    /// The callers allowed, by client certificate identity: `uri:<SAN URI>`
    /// (a SPIFFE ID) or `dns:<SAN DNS name>`, usually just the gateway's. A
    /// certificate from `client_ca` with no identity on this list is refused
    /// every call (`PERMISSION_DENIED`) but health checks, so a certificate
    /// issued by the same CA for something else (a signer client, a monitor)
    /// cannot add logs or ask for cosignatures. Required, non-empty.
    pub allowed_identities: Vec<String>,
}

/// One trusted log.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// The checkpoint origin (default: the key name).
    #[serde(default)]
    pub origin: Option<String>,
    /// The log key: a vkey, or a path to a PEM public key (then `origin` or
    /// `url` names it).
    pub key: String,
    /// `push` (default), `rekor-v1` or `tiles`.
    #[serde(default = "default_feed")]
    pub feed: String,
    /// The log's base URL, for pulled logs.
    #[serde(default)]
    pub url: Option<String>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7380))
}
fn default_state() -> String {
    "/var/lib/witness/state.db".into()
}
fn default_pool() -> usize {
    16
}
fn default_interval() -> Duration {
    Duration::from_secs(3600)
}
fn default_poll() -> Duration {
    Duration::from_secs(60)
}
fn default_mirror_scan() -> Duration {
    Duration::from_secs(10)
}
fn default_feed() -> String {
    "push".into()
}

fn config_error(detail: impl Into<String>) -> Error {
    Error::Config {
        detail: detail.into(),
    }
}

/// The trusted logs a configuration names.
#[derive(Debug, Default)]
pub struct Logs {
    pub logs: Vec<LogKeys>,
    pub sharded: Vec<ShardedLog>,
}

impl WitnessConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<WitnessConfig> {
        let size = std::fs::metadata(path)
            .map_err(|e| config_error(format!("{}: {e}", path.display())))?
            .len();
        if size > MAX_CONFIG_SIZE {
            return Err(config_error(format!("{}: over 1 MiB", path.display())));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| config_error(format!("{}: {e}", path.display())))?;
        WitnessConfig::parse(&text)
    }

    /// Parses and checks a configuration.
    pub fn parse(text: &str) -> Result<WitnessConfig> {
        let config: WitnessConfig =
            toml::from_str(text).map_err(|e| config_error(e.to_string()))?;
        if config.rekor_urls.len() != config.rekor_keys.len() {
            return Err(config_error(
                "rekor_urls and rekor_keys must have the same length (paired by position)",
            ));
        }
        if config.tls.is_none() && !config.listen.ip().is_loopback() {
            return Err(config_error(
                "a non-loopback listen address needs [tls] (mutual TLS)",
            ));
        }
        if let Some(tls) = &config.tls {
            if tls.allowed_identities.is_empty() {
                return Err(config_error(
                    "tls.allowed_identities must name at least one caller (the gateway's certificate identity)",
                ));
            }
            if let Some(bad) = tls
                .allowed_identities
                .iter()
                .find(|id| !(id.starts_with("uri:") || id.starts_with("dns:")) || id.len() <= 4)
            {
                return Err(config_error(format!(
                    "tls.allowed_identities: {bad:?} is not `uri:<URI>` or `dns:<name>`"
                )));
            }
        }
        match (&config.mirror_path, &config.mirror_key) {
            (Some(path), None) => {
                return Err(config_error(format!(
                    "mirror_path {} needs mirror_key (the mirror producer's P-256 PEM public key)",
                    path.display()
                )));
            }
            (None, Some(_)) => {
                return Err(config_error("mirror_key is only used with mirror_path"));
            }
            (Some(_), Some(_)) if config.state.starts_with("postgres") => {
                return Err(config_error(
                    "a postgres:// state is refused with mirror_path: air-gap mode opens no connection but the signer's (use a SQLite file)",
                ));
            }
            (Some(_), Some(_)) if config.archive.is_some() => {
                return Err(config_error(
                    "[archive] is refused with mirror_path: in air-gap mode the audit directory <mirror_path>/audit/ is the archive",
                ));
            }
            _ => {}
        }
        if config.mirror_scan_interval < Duration::from_secs(1) {
            return Err(config_error("mirror_scan_interval must be at least 1s"));
        }
        if config.checkpoint_interval < Duration::from_secs(1) {
            return Err(config_error("checkpoint_interval must be at least 1s"));
        }
        if config.poll_interval < Duration::from_secs(1) {
            return Err(config_error("poll_interval must be at least 1s"));
        }
        Ok(config)
    }

    /// The service mode this configuration selects: air gap when
    /// `mirror_path` is set (checked in [`WitnessConfig::parse`] to come with
    /// `mirror_key`), online otherwise. `base` resolves relative paths.
    pub fn mode(&self, base: &Path) -> ServiceMode {
        match (&self.mirror_path, &self.mirror_key) {
            (Some(path), Some(key)) => ServiceMode::Airgap(AirgapConfig {
                mirror_path: base.join(path),
                mirror_key: base.join(key),
                scan_interval: self.mirror_scan_interval,
            }),
            _ => ServiceMode::Online,
        }
    }

    /// Resolves every configured log: Rekor URLs with their keys, `[[log]]`
    /// tables and log lists. An origin configured twice is refused.
    pub fn trusted_logs(&self, base: &Path) -> Result<Logs> {
        let mut logs = Logs::default();
        for (url, key) in self.rekor_urls.iter().zip(&self.rekor_keys) {
            let host = url_host(url)
                .ok_or_else(|| config_error(format!("rekor URL {url:?} has no host")))?;
            let key = read_key(key, host, base)?;
            match key.signature_type() {
                SignatureType::EcdsaP256 => logs.sharded.push(ShardedLog {
                    origin_prefix: format!("{} - ", key.name()),
                    keys: vec![key],
                    url: url.clone(),
                }),
                SignatureType::Ed25519 => logs.logs.push(LogKeys {
                    origin: key.name().to_owned(),
                    keys: vec![key],
                    feed: Feed::Tiles { url: url.clone() },
                }),
                _ => return Err(config_error(format!("{url}: not a log key type"))),
            }
        }
        for log in &self.logs {
            let name = log
                .origin
                .as_deref()
                .or_else(|| log.url.as_deref().and_then(url_host))
                .unwrap_or("");
            let key = read_key(&log.key, name, base)?;
            let origin = log.origin.clone().unwrap_or_else(|| key.name().to_owned());
            let feed = match (log.feed.as_str(), &log.url) {
                ("push", _) => Feed::Push,
                ("tiles", Some(url)) => Feed::Tiles { url: url.clone() },
                ("rekor-v1", Some(url)) => {
                    logs.sharded.push(ShardedLog {
                        origin_prefix: format!("{origin} - "),
                        keys: vec![key],
                        url: url.clone(),
                    });
                    continue;
                }
                (other, _) => {
                    return Err(config_error(format!(
                        "log {origin:?}: feed {other:?} needs a url, or is not push, tiles or rekor-v1"
                    )));
                }
            };
            logs.logs.push(LogKeys {
                origin,
                keys: vec![key],
                feed,
            });
        }
        for list in &self.log_lists {
            let path = base.join(list);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| config_error(format!("{}: {e}", path.display())))?;
            for listed in parse_log_list(&text)? {
                logs.logs.push(LogKeys {
                    origin: listed.origin,
                    keys: vec![listed.key],
                    feed: Feed::Push,
                });
            }
        }
        let mut origins: Vec<&str> = logs.logs.iter().map(|l| l.origin.as_str()).collect();
        origins.sort_unstable();
        if let Some(pair) = origins.windows(2).find(|w| w[0] == w[1]) {
            return Err(config_error(format!(
                "origin {:?} is configured twice",
                pair[0]
            )));
        }
        Ok(logs)
    }
}

/// A key given as a vkey, or as a path to a PEM public key named `name`.
fn read_key(key: &str, name: &str, base: &Path) -> Result<VerifierKey> {
    if let Ok(vkey) = VerifierKey::parse_vkey(key) {
        return Ok(vkey);
    }
    let path = base.join(key);
    let pem = std::fs::read_to_string(&path).map_err(|e| {
        config_error(format!(
            "key {key:?} is not a vkey, and {}: {e}",
            path.display()
        ))
    })?;
    if name.is_empty() {
        return Err(config_error(format!(
            "PEM key {} needs an origin or url to name it",
            path.display()
        )));
    }
    VerifierKey::from_pem(name, &pem)
}
