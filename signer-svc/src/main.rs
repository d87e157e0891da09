//! `signer-svc`: runs the key custody service, or generates file keys.
//! `signer-svc healthcheck --config <file>` is the container image's
//! HEALTHCHECK (the image has no shell).

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use signer_svc::config::Config;
use signer_svc::keys::{self, Algorithm};

#[derive(Parser)]
#[command(
    name = "signer-svc",
    version,
    about = "Key custody for the Rekor witness"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the signer (gRPC over mutual TLS 1.3).
    Serve {
        /// The TOML configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Generate a private key file (PKCS#8 PEM, mode 0600) and print its public key.
    Keygen {
        #[arg(long, value_enum)]
        algorithm: KeyAlgorithm,
        /// Where to write the key; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
        /// Cosigner name, to print the vkey of a cosigning key.
        #[arg(long)]
        name: Option<String>,
    },
    /// Exit 0 when the signer of this configuration accepts TCP connections
    /// on its listen address (loopback for a wildcard address), 1 otherwise.
    /// The listener speaks mutual TLS only, so this checks what a Kubernetes
    /// tcpSocket probe checks. The container image's HEALTHCHECK.
    Healthcheck {
        /// The TOML configuration the signer was started with.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum KeyAlgorithm {
    Ed25519,
    MlDsa44,
    EcdsaP256,
}

impl From<KeyAlgorithm> for Algorithm {
    fn from(algorithm: KeyAlgorithm) -> Algorithm {
        match algorithm {
            KeyAlgorithm::Ed25519 => Algorithm::Ed25519,
            KeyAlgorithm::MlDsa44 => Algorithm::MlDsa44,
            KeyAlgorithm::EcdsaP256 => Algorithm::EcdsaP256,
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Serve { config } => serve(config),
        Command::Keygen {
            algorithm,
            out,
            name,
        } => keygen(algorithm.into(), &out, name.as_deref()),
        Command::Healthcheck { config } => healthcheck(&config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "signer-svc failed");
            eprintln!("signer-svc: {error}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config_path: PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::load(&config_path)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        tracing::info!(address = %listener.local_addr()?, "signer listening");
        signer_svc::run(listener, &config, shutdown_signal()).await?;
        tracing::info!("signer stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

fn healthcheck(config_path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::load(config_path)?;
    let mut address = config.listen;
    if address.ip().is_unspecified() {
        address.set_ip(match address {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(2))
        .map_err(|e| format!("connecting to {address}: {e}"))?;
    Ok(())
}

fn keygen(
    algorithm: Algorithm,
    out: &std::path::Path,
    name: Option<&str>,
) -> Result<(), Box<dyn std::error::Error>> {
    let pem = keys::file::generate_pkcs8_pem(algorithm)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)?;
    file.write_all(pem.as_bytes())?;
    file.sync_all()?;
    let key = keys::file::FileKey::from_pkcs8_pem(&pem, algorithm)?;
    if let Some(public) = keys::public_key_pem(&key) {
        print!("{public}");
    }
    if let Some(name) = name {
        let key = signer_svc::service::CosigningKey::new(name, std::sync::Arc::new(key))?;
        println!("{}", key.verifier.to_vkey());
    }
    Ok(())
}
