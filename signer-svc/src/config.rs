//! The signer's configuration file (TOML). Unknown fields are errors; secrets
//! are referenced by path or URI, never inlined. These field docs are the
//! operator manual (see also the README's configuration reference).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the gRPC listener (TLS 1.3 with client certificates; there is
    /// no plaintext option).
    pub listen: SocketAddr,
    /// SQLite file holding the fork guard's record of what was cosigned.
    pub state_path: PathBuf,
    /// Where to append the JSON-lines audit log; standard output if absent.
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
    /// Mutual TLS.
    pub tls: TlsConfig,
    /// The cosigning keys.
    pub cosigner: CosignerConfig,
    /// The DSSE manifest key; `SignManifest` is refused without one.
    #[serde(default)]
    pub manifest: Option<ManifestConfig>,
}

/// Mutual TLS settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of this server.
    pub cert: PathBuf,
    /// PEM private key of this server (owner-readable only).
    pub key: PathBuf,
    /// PEM CA certificate(s) that client certificates must chain to.
    pub client_ca: PathBuf,
    /// Client identities allowed to call, from the certificate's subject
    /// alternative names: `uri:<URI>` (for example a SPIFFE ID) or `dns:<name>`.
    pub allowed_identities: Vec<String>,
    /// Client identities that may only read the public keys and the metrics
    /// (for example the gateway, which aggregates `/metrics`); every signing
    /// call is `PERMISSION_DENIED` to them. Same forms as `allowed_identities`.
    #[serde(default)]
    pub observer_identities: Vec<String>,
    /// How often `cert`, `key` and `client_ca` are read again (default
    /// `10s`, a humantime duration); changed, valid files serve new
    /// connections without a restart, invalid ones are logged and counted in
    /// `tls_reload_failures_total` while the previous ones stay in use.
    #[serde(
        default = "default_tls_reload_interval",
        deserialize_with = "humantime_duration"
    )]
    pub reload_interval: std::time::Duration,
}

fn default_tls_reload_interval() -> std::time::Duration {
    witness_core::tls_reload::DEFAULT_RELOAD_INTERVAL
}

fn humantime_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<std::time::Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(serde::de::Error::custom)
}

/// Where a private key lives.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "backend", rename_all = "kebab-case", deny_unknown_fields)]
pub enum KeyRef {
    /// A PKCS#8 PEM file, mode 0600 or stricter.
    File { path: PathBuf },
    /// A key in a PKCS#11 token.
    Pkcs11 {
        /// The PKCS#11 module (for example `/usr/lib/softhsm/libsofthsm2.so`).
        module: PathBuf,
        /// The token's label.
        token_label: String,
        /// The private key object's label (`CKA_LABEL`).
        key_label: String,
        /// File holding the user PIN (owner-readable only).
        pin_file: PathBuf,
    },
    /// A Google Cloud KMS asymmetric signing key version.
    GcpKms {
        /// `projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>/cryptoKeyVersions/<v>`.
        key_version: String,
        /// API endpoint override (tests point it at a local server). Absent or
        /// `https://...`: Application Default Credentials. `http://` on a
        /// loopback address (`127.0.0.1`, `[::1]`, `localhost`): no credentials,
        /// for emulators and tests. Any other `http://` endpoint is refused.
        /// Ed25519 keys must be `EC_SIGN_ED25519` and ECDSA keys
        /// `EC_SIGN_P256_SHA256`; ML-DSA-44 is not available from KMS here.
        #[serde(default)]
        endpoint: Option<String>,
    },
}

/// The cosigning keys.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosignerConfig {
    /// The witness name in cosignature lines (a schema-less URL, no spaces or `+`).
    pub name: String,
    /// Ed25519 key for cosignature/v1.
    pub ed25519: KeyRef,
    /// Optional ML-DSA-44 key for subtree/v1 cosignatures (file backend only).
    #[serde(default)]
    pub ml_dsa_44: Option<KeyRef>,
}

/// The manifest (DSSE) signing key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestConfig {
    /// The key; distinct from the cosigning keys.
    pub key: KeyRef,
    /// `ecdsa-p256` (default) or `ed25519`.
    #[serde(default = "default_manifest_algorithm")]
    pub algorithm: String,
    /// Payload types that may be signed.
    #[serde(default = "default_payload_types")]
    pub payload_types: Vec<String>,
}

fn default_manifest_algorithm() -> String {
    "ecdsa-p256".into()
}

fn default_payload_types() -> Vec<String> {
    vec![crate::dsse::IN_TOTO_PAYLOAD_TYPE.into()]
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        Config::parse(&text)
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        witness_core::note::NoteSignature::new(&config.cosigner.name, 0, vec![]).map_err(|_| {
            Error::Config("cosigner.name must be non-empty with no spaces or '+'".into())
        })?;
        if config.tls.allowed_identities.is_empty() {
            return Err(Error::Config(
                "tls.allowed_identities must name at least one caller".into(),
            ));
        }
        for identity in config
            .tls
            .allowed_identities
            .iter()
            .chain(&config.tls.observer_identities)
        {
            if !(identity.starts_with("uri:") || identity.starts_with("dns:")) {
                return Err(Error::Config(format!(
                    "allowed identity {identity:?} must start with uri: or dns:"
                )));
            }
        }
        if let Some(manifest) = &config.manifest {
            if !matches!(manifest.algorithm.as_str(), "ecdsa-p256" | "ed25519") {
                return Err(Error::Config(
                    "manifest.algorithm must be ecdsa-p256 or ed25519".into(),
                ));
            }
            if let Some(long) = manifest
                .payload_types
                .iter()
                .find(|t| t.is_empty() || t.len() > crate::dsse::MAX_PAYLOAD_TYPE_LEN)
            {
                return Err(Error::Config(format!(
                    "manifest.payload_types entry {long:?} must be 1 to {} bytes",
                    crate::dsse::MAX_PAYLOAD_TYPE_LEN
                )));
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
listen = "127.0.0.1:0"
state_path = "state.sqlite"
[tls]
cert = "c.pem"
key = "k.pem"
client_ca = "ca.pem"
allowed_identities = ["uri:spiffe://witness/core"]
[cosigner]
name = "witness.example/w1"
ed25519 = { backend = "file", path = "ed.pem" }
"#;

    #[test]
    fn minimal_config_parses() {
        let config = Config::parse(MINIMAL).unwrap();
        assert!(config.manifest.is_none());
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        assert!(Config::parse(&format!("{MINIMAL}\nplaintext = true\n")).is_err());
        assert!(Config::parse(&MINIMAL.replace("witness.example/w1", "has space")).is_err());
        assert!(Config::parse(&MINIMAL.replace("uri:spiffe", "spiffe")).is_err());
        assert!(
            Config::parse(&MINIMAL.replace("backend = \"file\"", "backend = \"floppy\"")).is_err()
        );
        let manifest = |types: &str| {
            format!(
                "{MINIMAL}[manifest]\nkey = {{ backend = \"file\", path = \"m.pem\" }}\npayload_types = {types}\n"
            )
        };
        assert!(Config::parse(&manifest(&format!("[{:?}]", "t".repeat(255)))).is_ok());
        assert!(Config::parse(&manifest(&format!("[{:?}]", "t".repeat(256)))).is_err());
        assert!(Config::parse(&manifest("[\"\"]")).is_err());
    }
}
