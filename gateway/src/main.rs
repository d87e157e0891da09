//! `rekor-witness-gateway --config <file.toml>`: the HTTP front door of the
//! witness. Reads the configuration strictly, logs JSON to stderr, serves
//! until SIGINT or SIGTERM, drains in-flight requests and exits 0.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use gateway::{GatewayConfig, GatewayError};
use tracing_subscriber::EnvFilter;

/// The HTTPS front door of the Rekor witness (c2sp.org/tlog-witness).
#[derive(Parser)]
#[command(name = "rekor-witness-gateway", version)]
struct Arguments {
    /// The TOML configuration (see config/gateway.example.toml).
    #[arg(long)]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let arguments = Arguments::parse();
    // JSON lines for the log pipeline; `RUST_LOG` overrides the level. The
    // gateway never logs client addresses or request bodies.
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match serve(&arguments).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(kind = error.kind(), error = %error, "gateway stopped");
            ExitCode::FAILURE
        }
    }
}

async fn serve(arguments: &Arguments) -> Result<(), GatewayError> {
    let config = GatewayConfig::from_file(&arguments.config)?;
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
