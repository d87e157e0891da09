//! `rekor-witness-gateway --config <file.toml>`: the HTTP front door of the
//! witness. Reads the configuration strictly, logs JSON to stderr, serves
//! until SIGINT or SIGTERM, drains in-flight requests and exits 0.
//!
//! `rekor-witness-gateway healthcheck --config <file.toml>`: the container
//! image's HEALTHCHECK (the image has no shell and no curl): exits 0 when the
//! gateway of that configuration answers `GET /healthz` with 200.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use gateway::{GatewayConfig, GatewayError};
use tracing_subscriber::EnvFilter;

/// The HTTPS front door of the Rekor witness (c2sp.org/tlog-witness).
#[derive(Parser)]
#[command(
    name = "rekor-witness-gateway",
    version,
    subcommand_negates_reqs = true
)]
struct Arguments {
    /// The TOML configuration (see config/gateway.example.toml).
    #[arg(long, required = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Exit 0 when the gateway of this configuration answers GET /healthz
    /// with 200 on its listen address (loopback for a wildcard address);
    /// exit 1 otherwise. The container image's HEALTHCHECK.
    Healthcheck {
        /// The TOML configuration the gateway was started with.
        #[arg(long)]
        config: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let arguments = Arguments::parse();
    let config_path = match (arguments.command, arguments.config) {
        (Some(Command::Healthcheck { config }), _) => return healthcheck(&config).await,
        (None, Some(config)) => config,
        // clap requires --config without a subcommand.
        (None, None) => return ExitCode::from(2),
    };
    // JSON lines for the log pipeline; `RUST_LOG` overrides the level. The
    // gateway never logs client addresses or request bodies.
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match serve(&config_path).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(kind = error.kind(), error = %error, "gateway stopped");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config_path: &Path) -> Result<(), GatewayError> {
    let config = GatewayConfig::from_file(config_path)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| GatewayError::Serve {
            detail: format!("binding {}: {e}", config.listen),
        })?;
    let shutdown = shutdown_signal()?;
    gateway::run(listener, &config, shutdown).await
}

/// Completes on the first SIGINT or SIGTERM.
fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static, GatewayError> {
    use tokio::signal::unix::{SignalKind, signal};
    let install = |kind| {
        signal(kind).map_err(|e| GatewayError::Serve {
            detail: format!("installing a signal handler: {e}"),
        })
    };
    let mut interrupt = install(SignalKind::interrupt())?;
    let mut terminate = install(SignalKind::terminate())?;
    Ok(async move {
        let signal = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(signal, "shutdown requested");
    })
}

/// The probe of `healthcheck`: one `GET /healthz` to the configured listener,
/// over HTTPS when the configuration has `[tls]`. Like the kubelet's HTTPS
/// probe it does not check the certificate: it connects to its own listener
/// on loopback, sends nothing secret and trusts nothing but the status code.
async fn healthcheck(config_path: &Path) -> ExitCode {
    let result = async {
        let config = GatewayConfig::from_file(config_path).map_err(|e| e.to_string())?;
        let mut address = config.listen;
        if address.ip().is_unspecified() {
            address.set_ip(match address {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .tls_danger_accept_invalid_certs(true)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let url = format!("{scheme}://{address}/healthz");
        let response = client
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        match response.status().as_u16() {
            200 => Ok(()),
            status => Err(format!("GET {url}: HTTP {status}")),
        }
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rekor-witness-gateway healthcheck: {error}");
            ExitCode::FAILURE
        }
    }
}
