//! `rekor-witness serve --config witness.toml`: the witness service.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use witness_core::service::config::WitnessConfig;

#[derive(Args)]
pub struct ServeCommand {
    /// The TOML configuration file.
    #[arg(long)]
    config: PathBuf,
}

/// Completes on SIGTERM (container stop) or Ctrl-C.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}

pub fn run(command: ServeCommand) -> ExitCode {
    witness_core::service::telemetry::init("rekor-witness");
    // One TLS stack: rustls on aws-lc-rs, chosen once for the whole process.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config = match WitnessConfig::load(&command.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("rekor-witness serve: {error}");
            return ExitCode::from(2);
        }
    };
    let base = command
        .config
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let runtime = match witness_core::service::runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("rekor-witness serve: {error}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| witness_core::Error::Config {
                detail: format!("listen on {}: {e}", config.listen),
            })?;
        tracing::info!(listen = %config.listen, "witness serving");
        witness_core::service::server::run(listener, &config, &base, shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "witness stopped");
            eprintln!("rekor-witness serve: {error}");
            ExitCode::from(1)
        }
    }
}
