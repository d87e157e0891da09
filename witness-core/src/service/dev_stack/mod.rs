//! A development stack on one machine: the material and the configuration
//! files for the three services (`signer-svc`, `rekor-witness serve`,
//! `rekor-witness-gateway`) talking mutual TLS to each other on loopback, with
//! certificates from a development CA, file keys, SQLite state and a local
//! filesystem archive.
//!
//! `rekor-witness quickstart` runs it with a built-in log, and the end-to-end
//! tests in `integration/` run it against real Rekor instances. It is not a
//! production layout: the CA key is thrown away after issuing, the keys are
//! plain files, and the gateway serves plain HTTP on loopback.

mod material;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use material::{GATEWAY_IDENTITY, Material, WITNESS_IDENTITY};

/// The subdirectories of a stack's data directory that [`write_configs`]
/// points the services at.
pub const DATA_SUBDIRS: [&str; 6] = [
    "config",
    "signer",
    "witness",
    "archive",
    "archive-spool",
    "logs",
];

/// Where each service listens.
pub struct StackAddrs {
    /// The signer's gRPC listener (mutual TLS).
    pub signer: SocketAddr,
    /// The witness's gRPC listener (mutual TLS).
    pub witness: SocketAddr,
    /// The gateway's HTTP listener (plain HTTP, so loopback).
    pub gateway: SocketAddr,
}

/// The three configuration files.
pub struct Configs {
    pub signer: PathBuf,
    pub witness: PathBuf,
    pub gateway: PathBuf,
}

/// Writes `config/{signer,witness,gateway}.toml` under `dir` (creating the
/// data subdirectories). `witness_name` is the cosignature key name;
/// `witness_extra` is TOML placed among the witness configuration's top-level
/// keys, before its tables: top-level settings such as `poll_interval`, then
/// `[[log]]` tables.
pub fn write_configs(
    dir: &Path,
    material: &Material,
    addrs: &StackAddrs,
    witness_name: &str,
    witness_extra: &str,
) -> Result<Configs, String> {
    for sub in DATA_SUBDIRS {
        std::fs::create_dir_all(dir.join(sub))
            .map_err(|e| format!("creating {}: {e}", dir.join(sub).display()))?;
    }
    let p = |path: &Path| toml_string(&path.display().to_string());
    let StackAddrs {
        signer: signer_addr,
        witness: witness_addr,
        gateway: gateway_addr,
    } = addrs;
    let signer = format!(
        r#"# Written by the development stack on every run.
listen = "{signer_addr}"
state_path = {state}
audit_log = {audit}

[tls]
cert = {cert}
key = {key}
client_ca = {ca}
allowed_identities = ["uri:{WITNESS_IDENTITY}"]
# The gateway reads the signer's metrics and public keys, and can sign nothing.
observer_identities = ["uri:{GATEWAY_IDENTITY}"]

[cosigner]
name = {name}
ed25519 = {{ backend = "file", path = {cosigning} }}

[manifest]
key = {{ backend = "file", path = {manifest} }}
algorithm = "ecdsa-p256"
"#,
        state = p(&dir.join("signer/fork-guard.db")),
        audit = p(&dir.join("signer/audit.jsonl")),
        cert = p(&material.signer_cert),
        key = p(&material.signer_key),
        ca = p(&material.ca),
        name = toml_string(witness_name),
        cosigning = p(&material.cosigning_key),
        manifest = p(&material.manifest_key),
    );
    let witness = format!(
        r#"# Written by the development stack on every run.
listen = "{witness_addr}"
state = {state}
{witness_extra}

[tls]
cert = {cert}
key = {key}
client_ca = {ca}
# Only the gateway may call the witness.
allowed_identities = ["uri:{GATEWAY_IDENTITY}"]

[signer]
endpoint = "https://{signer_addr}"
server_name = "localhost"
ca = {ca}
client_cert = {client_cert}
client_key = {client_key}

[archive]
url = {archive}
spool_dir = {spool}
period = "10m"
"#,
        state = p(&dir.join("witness/state.db")),
        cert = p(&material.witness_server_cert),
        key = p(&material.witness_server_key),
        ca = p(&material.ca),
        client_cert = p(&material.witness_client_cert),
        client_key = p(&material.witness_client_key),
        archive = p(&dir.join("archive")),
        spool = p(&dir.join("archive-spool")),
    );
    let gateway = format!(
        r#"# Written by the development stack on every run.
listen = "{gateway_addr}"

[witness]
endpoint = "https://{witness_addr}"
server_name = "localhost"
ca = {ca}
client_cert = {client_cert}
client_key = {client_key}

# Metrics and readiness only.
[signer]
endpoint = "https://{signer_addr}"
server_name = "localhost"
ca = {ca}
client_cert = {client_cert}
client_key = {client_key}
"#,
        ca = p(&material.ca),
        client_cert = p(&material.gateway_client_cert),
        client_key = p(&material.gateway_client_key),
    );
    let configs = Configs {
        signer: dir.join("config/signer.toml"),
        witness: dir.join("config/witness.toml"),
        gateway: dir.join("config/gateway.toml"),
    };
    for (path, text) in [
        (&configs.signer, signer),
        (&configs.witness, witness),
        (&configs.gateway, gateway),
    ] {
        std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(configs)
}

/// A TOML basic string.
pub fn toml_string(text: &str) -> String {
    let mut quoted = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::toml_string;

    #[test]
    fn toml_strings_escape_quotes_backslashes_and_controls() {
        let quoted = toml_string("a\"b\\c\nd");
        assert_eq!(quoted, "\"a\\\"b\\\\c\\u000ad\"");
        let parsed: toml::Value = toml::from_str(&format!("k = {quoted}")).unwrap();
        assert_eq!(parsed["k"].as_str(), Some("a\"b\\c\nd"));
    }
}
