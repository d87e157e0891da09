//! `rekor-witness healthcheck --config witness.toml`: the container image's
//! HEALTHCHECK (the image has no shell). Exits 0 when the witness service of
//! that configuration accepts TCP connections on its listen address (loopback
//! for a wildcard address), 1 when it does not, 2 when the configuration is
//! unusable. The listener speaks mutual TLS only, so this checks what a
//! Kubernetes tcpSocket probe checks; the gateway's `/readyz` asks the
//! witness itself for its readiness over mutual TLS.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use witness_core::service::config::WitnessConfig;

/// How long the probe waits for the connection (the image's HEALTHCHECK
/// timeout is 3 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Args)]
pub struct HealthcheckCommand {
    /// The TOML configuration the witness service was started with.
    #[arg(long)]
    config: PathBuf,
}

pub fn run(command: HealthcheckCommand) -> ExitCode {
    let config = match WitnessConfig::load(&command.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("rekor-witness healthcheck: {error}");
            return ExitCode::from(2);
        }
    };
    let address = probe_address(config.listen);
    match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rekor-witness healthcheck: connecting to {address}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The listen address, with a wildcard IP replaced by loopback.
fn probe_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}
