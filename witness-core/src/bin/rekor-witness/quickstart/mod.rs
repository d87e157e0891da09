//! `rekor-witness quickstart`: the whole stack on one machine, with no network,
//! in one command.
//!
//! It runs the signer (`signer-svc`), the witness service (`rekor-witness
//! serve`) and the gateway (`rekor-witness-gateway`) as separate processes that
//! talk mutual TLS to each other, with certificates from a development CA and
//! file keys generated in the data directory, SQLite state and a local
//! filesystem archive, and a built-in tlog-tiles log on loopback that grows on
//! a timer and that the witness pulls. A second run reuses the data directory:
//! the same keys, the same witness state, the same log.
//!
//! Data directory layout (see also the README):
//!
//! ```text
//! pki/        development CA and the services' certificates and keys
//! keys/       witness-ed25519.pem (cosigning), manifest-p256.pem (archive
//!             manifests), log-ed25519.pem (the built-in log)
//! config/     signer.toml, witness.toml, gateway.toml (rewritten every run)
//! signer/     the signer's fork-guard database and audit log
//! witness/    the witness's state database
//! archive/    cosigned checkpoints and signed manifests
//! archive-spool/  the archive's durable spool
//! log/        the built-in log's entries
//! logs/       each service's output
//! ```

mod tiles_log;

use std::future::IntoFuture as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use tokio::process::{Child, Command};
use witness_core::note::{SignatureType, VerifierKey};

use tiles_log::TilesLog;
use witness_core::service::dev_stack::{DATA_SUBDIRS, Material, StackAddrs, write_configs};

/// The witness name in cosignature lines.
const WITNESS_NAME: &str = "localhost/rekor-witness-quickstart";
/// The built-in log's origin.
const LOG_ORIGIN: &str = "localhost/rekor-witness-quickstart-log";
/// How long a service gets to start listening, and to stop after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Args)]
pub struct QuickstartCommand {
    /// The data directory (created if missing, reused if present).
    #[arg(long, default_value = "rekor-witness-quickstart")]
    data_dir: PathBuf,
    /// Where the gateway listens (plain HTTP, loopback only).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// How often the built-in log grows.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    grow_every: Duration,
}

pub fn run(command: QuickstartCommand) -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = match witness_core::service::runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("rekor-witness quickstart: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(quickstart(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rekor-witness quickstart: {error}");
            ExitCode::from(1)
        }
    }
}

/// A running service process.
struct Service {
    name: &'static str,
    child: Child,
}

async fn quickstart(command: QuickstartCommand) -> Result<(), String> {
    if !command.listen.ip().is_loopback() {
        return Err(format!(
            "--listen {}: the quickstart serves plain HTTP, so loopback only",
            command.listen
        ));
    }
    std::fs::create_dir_all(&command.data_dir)
        .map_err(|e| format!("creating {}: {e}", command.data_dir.display()))?;
    let dir = std::fs::canonicalize(&command.data_dir)
        .map_err(|e| format!("{}: {e}", command.data_dir.display()))?;
    for sub in DATA_SUBDIRS.iter().chain(&["log"]) {
        std::fs::create_dir_all(dir.join(sub))
            .map_err(|e| format!("creating {}: {e}", dir.join(sub).display()))?;
    }
    let binaries = Binaries::locate()?;
    let material = Material::load_or_generate(&dir)?;

    // The built-in log: served on loopback, grown on a timer.
    let log = Arc::new(TilesLog::open(
        LOG_ORIGIN,
        material.log_signing_key()?,
        &dir.join("log/entries"),
    )?);
    if log.size() == 0 {
        log.grow(4)?;
    }
    let log_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("binding the built-in log's listener: {e}"))?;
    let log_addr = log_listener
        .local_addr()
        .map_err(|e| format!("built-in log: {e}"))?;
    let log_server =
        tokio::spawn(axum::serve(log_listener, Arc::clone(&log).router()).into_future());
    let grower = {
        let log = Arc::clone(&log);
        tokio::spawn(tiles_log::grow_forever(log, command.grow_every))
    };

    let signer_addr = free_port()?;
    let witness_addr = free_port()?;
    let configs = write_configs(
        &dir,
        &material,
        &StackAddrs {
            signer: signer_addr,
            witness: witness_addr,
            gateway: command.listen,
        },
        WITNESS_NAME,
        // The built-in log is polled every second, so its growth is cosigned at once.
        &format!(
            "poll_interval = \"1s\"\n\n[[log]]\nkey = \"{vkey}\"\nfeed = \"tiles\"\nurl = \"http://{log_addr}/\"\n",
            vkey = log.vkey()
        ),
    )?;

    let mut services: Vec<Service> = Vec::new();
    let started = async {
        for (name, program, args, addr) in [
            (
                "signer",
                &binaries.signer,
                vec![
                    "serve".to_owned(),
                    "--config".to_owned(),
                    path_arg(&configs.signer),
                ],
                signer_addr,
            ),
            (
                "witness",
                &binaries.witness,
                vec![
                    "serve".to_owned(),
                    "--config".to_owned(),
                    path_arg(&configs.witness),
                ],
                witness_addr,
            ),
            (
                "gateway",
                &binaries.gateway,
                vec!["--config".to_owned(), path_arg(&configs.gateway)],
                command.listen,
            ),
        ] {
            let service = spawn(name, program, &args, &dir.join("logs"))?;
            services.push(service);
            wait_listening(services.last_mut(), addr).await?;
        }
        Ok::<(), String>(())
    }
    .await;
    if let Err(error) = started {
        stop_all(&mut services).await;
        return Err(error);
    }

    let vkey = VerifierKey::from_material(
        WITNESS_NAME,
        SignatureType::CosignatureV1,
        &material.cosigning_public_key()?,
    )
    .map_err(|e| format!("witness key: {e}"))?
    .to_vkey();
    println!(
        "rekor-witness quickstart is running (Ctrl-C stops it).\n\
         \n  gateway        http://{gateway}\n  \
         log list       http://{gateway}/logs\n  \
         monitoring     http://{gateway}/{hash}/checkpoint  (the built-in log, cosigned)\n  \
         witness vkey   {vkey}\n  \
         built-in log   http://{log_addr}/checkpoint  ({LOG_ORIGIN})\n  \
         archive        {archive}\n  \
         data           {data}  (service output in {data}/logs)\n\
         \nTo witness the public Rekor logs instead, start from config/witness.example.toml\n\
         in the repository: `rekor-witness serve --config <file>` with the signer and gateway\n\
         configured as in {data}/config.",
        gateway = command.listen,
        hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            LOG_ORIGIN.as_bytes()
        )),
        archive = dir.join("archive").display(),
        data = dir.display(),
    );

    let outcome = wait_for_stop(&mut services).await;
    stop_all(&mut services).await;
    grower.abort();
    log_server.abort();
    outcome
}

/// Completes on Ctrl-C or SIGTERM (Ok), or when a service exits on its own
/// (Err naming it).
async fn wait_for_stop(services: &mut [Service]) -> Result<(), String> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("installing the SIGTERM handler: {e}"))?;
    let exited = async {
        loop {
            for service in services.iter_mut() {
                if let Ok(Some(status)) = service.child.try_wait() {
                    return format!(
                        "the {} exited ({status}); its output is in logs/{}.log",
                        service.name, service.name
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = terminate.recv() => Ok(()),
        reason = exited => Err(reason),
    }
}

/// SIGTERM to each service, the gateway first and the signer last; a service
/// still running after [`STOP_TIMEOUT`] is killed.
async fn stop_all(services: &mut Vec<Service>) {
    while let Some(mut service) = services.pop() {
        if let Some(pid) = service.child.id() {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            match tokio::time::timeout(STOP_TIMEOUT, service.child.wait()).await {
                Ok(_) => {}
                Err(_) => {
                    eprintln!(
                        "rekor-witness quickstart: the {} did not stop in {STOP_TIMEOUT:?}; killing it",
                        service.name
                    );
                    let _ = service.child.kill().await;
                }
            }
        }
    }
}

fn spawn(
    name: &'static str,
    program: &Path,
    args: &[String],
    logs: &Path,
) -> Result<Service, String> {
    let log_path = logs.join(format!("{name}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
    let err = log
        .try_clone()
        .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        // Ctrl-C in a terminal reaches the whole foreground process group; the
        // services get their own group so that they stop in order, from here.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting the {name} ({}): {e}", program.display()))?;
    Ok(Service { name, child })
}

/// Waits until `addr` accepts connections, failing early if the service exits.
async fn wait_listening(service: Option<&mut Service>, addr: SocketAddr) -> Result<(), String> {
    let Some(service) = service else {
        return Ok(());
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = service.child.try_wait() {
            return Err(format!(
                "the {} exited at startup ({status}); its output is in logs/{}.log",
                service.name, service.name
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the {} did not listen on {addr} within {START_TIMEOUT:?}",
                service.name
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A loopback port free right now (the services bind it moments later).
fn free_port() -> Result<SocketAddr, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|e| format!("finding a free port: {e}"))
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

/// The three programs: `signer-svc` and `rekor-witness-gateway` next to this
/// executable (as cargo builds them into one target directory).
struct Binaries {
    signer: PathBuf,
    witness: PathBuf,
    gateway: PathBuf,
}

impl Binaries {
    fn locate() -> Result<Binaries, String> {
        let witness = std::env::current_exe().map_err(|e| format!("this executable: {e}"))?;
        let dir = witness
            .parent()
            .ok_or("this executable has no directory")?
            .to_path_buf();
        let binaries = Binaries {
            signer: dir.join("signer-svc"),
            gateway: dir.join("rekor-witness-gateway"),
            witness,
        };
        let missing = || !binaries.signer.is_file() || !binaries.gateway.is_file();
        if missing() {
            // Under `cargo run`, build the two siblings with the same profile.
            if let Some(cargo) = std::env::var_os("CARGO") {
                let release = dir.file_name().is_some_and(|name| name == "release");
                let mut build = std::process::Command::new(cargo);
                build.args([
                    "build",
                    "--bin",
                    "signer-svc",
                    "--bin",
                    "rekor-witness-gateway",
                ]);
                if release {
                    build.arg("--release");
                }
                eprintln!(
                    "rekor-witness quickstart: building signer-svc and rekor-witness-gateway"
                );
                let status = build
                    .status()
                    .map_err(|e| format!("running cargo build: {e}"))?;
                if !status.success() {
                    return Err(format!("cargo build of the services failed ({status})"));
                }
            }
        }
        if missing() {
            return Err(format!(
                "signer-svc and rekor-witness-gateway must be next to this executable in {}; \
                 build them with `cargo build --release --workspace --bins`",
                dir.display()
            ));
        }
        Ok(binaries)
    }
}
