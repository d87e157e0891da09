//! The command-line options that point a command at signer-svc over mutual
//! TLS (`mirror pack`, `evidence sign`), as one flattened group.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use witness_core::service::signer_client::SignerConfig;

/// `--signer-endpoint` and the client credentials that go with it.
#[derive(Args)]
pub struct SignerArgs {
    /// Sign through signer-svc `SignManifest` at this endpoint (mutual TLS).
    #[arg(long, value_name = "URL", requires_all = ["signer_ca", "signer_cert", "signer_key"])]
    pub signer_endpoint: Option<String>,
    /// PEM CA of the signer's server certificate.
    #[arg(long, value_name = "FILE")]
    pub signer_ca: Option<PathBuf>,
    /// PEM client certificate for the signer.
    #[arg(long, value_name = "FILE")]
    pub signer_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(long, value_name = "FILE")]
    pub signer_key: Option<PathBuf>,
    /// The name in the signer's certificate, if not the endpoint's host.
    #[arg(long)]
    pub signer_server_name: Option<String>,
}

impl SignerArgs {
    /// The signer client configuration, when `--signer-endpoint` is given
    /// (clap has required the three credential files with it).
    pub fn config(&self) -> Option<SignerConfig> {
        self.signer_endpoint.as_ref().map(|endpoint| SignerConfig {
            endpoint: endpoint.clone(),
            ca: self.signer_ca.clone().unwrap_or_default(),
            client_cert: self.signer_cert.clone().unwrap_or_default(),
            client_key: self.signer_key.clone().unwrap_or_default(),
            server_name: self.signer_server_name.clone(),
            timeout: Duration::from_secs(30),
        })
    }
}
