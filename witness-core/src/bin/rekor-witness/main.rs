//! `rekor-witness`: the operator CLI of the Rekor witness.
//!
//! Exit status: 0 when the input is valid; 1 when it is invalid, including
//! malformed content in a readable file, with one line on stderr naming the check
//! that failed; 2 for a usage error or an unreadable file.

#![forbid(unsafe_code)]

mod evidence;
mod healthcheck;
mod mirror;
mod quickstart;
mod serve;
mod signer_args;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Operator CLI of the Rekor transparency-log witness.
#[derive(Parser)]
#[command(name = "rekor-witness", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify checkpoints, Sigstore bundles and consistency proofs offline.
    #[command(subcommand)]
    Verify(verify::VerifyCommand),
    /// Run the witness service (gRPC, pull feeders, re-cosigning, archive).
    Serve(serve::ServeCommand),
    /// Run the whole stack locally (signer, witness, gateway and a built-in
    /// log) over mutual TLS, with generated development keys and certificates.
    Quickstart(quickstart::QuickstartCommand),
    /// Pack and verify signed CAR mirrors of a log, for air-gapped witnessing.
    #[command(subcommand)]
    Mirror(mirror::MirrorCommand),
    /// Exit 0 when the witness service of a configuration accepts connections
    /// (the container image's HEALTHCHECK).
    Healthcheck(healthcheck::HealthcheckCommand),
    /// Sign the evidence bundle's in-toto attestations through the signer's
    /// manifest key (deploy/evidence.sh).
    #[command(subcommand)]
    Evidence(evidence::EvidenceCommand),
}

fn main() -> ExitCode {
    // clap exits with status 2 on usage errors and 0 for --help / --version.
    let cli = Cli::parse();
    match cli.command {
        Command::Verify(command) => verify::run(command),
        Command::Serve(command) => serve::run(command),
        Command::Quickstart(command) => quickstart::run(command),
        Command::Mirror(command) => mirror::run(command),
        Command::Healthcheck(command) => healthcheck::run(command),
        Command::Evidence(command) => evidence::run(command),
    }
}
