//! `rekor-witness evidence sign`: signs in-toto Statements of the evidence
//! bundle (`deploy/evidence.sh`, `deploy/EVIDENCE.md`) through signer-svc's
//! `SignManifest` call, so the attestations carry the same manifest key (and
//! the same DSSE code) as the checkpoint archive's manifests.
//!
//! The signer is either an existing one (`--signer-endpoint` and its mutual
//! TLS material) or a development signer started here for the run: the
//! development stack's material and configuration (`dev_stack`) under
//! `--dev-dir`, `signer-svc serve` started from next to this executable, and
//! stopped when the envelopes are written.
//!
//! Exit status: 0 all signed; 1 a statement is not an in-toto Statement v1 (one
//! `invalid: ...` line on stderr, nothing signed); 2 a usage error, an
//! unreadable file, or a signer that could not be started or reached.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde::Deserialize;
use witness_core::service::archive::{
    ManifestSigner as _, ManifestVerifier, PAYLOAD_TYPE, STATEMENT_TYPE, verify_envelope,
};
use witness_core::service::dev_stack::{Material, StackAddrs, write_configs};
use witness_core::service::metrics::WitnessMetrics;
use witness_core::service::signer_client::{GrpcSigner, SignerConfig};

use crate::signer_args::SignerArgs;

/// How long a development signer may take to listen.
const SIGNER_START_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest statement signed (the signer refuses payloads over 4 MiB).
const MAX_STATEMENT_SIZE: u64 = 4 << 20;
/// The suffix of statement files, replaced by [`ENVELOPE_SUFFIX`].
const STATEMENT_SUFFIX: &str = ".statement.json";
/// The suffix of the envelopes written.
const ENVELOPE_SUFFIX: &str = ".dsse.json";
/// The manifest public key's file in `--out-dir`.
const PUBLIC_KEY_FILE: &str = "manifest-key.pem";

#[derive(Subcommand)]
pub enum EvidenceCommand {
    /// Sign in-toto Statement v1 files into DSSE envelopes with the signer's
    /// manifest key; writes `<name>.dsse.json` per `<name>.statement.json`
    /// and the public key as `manifest-key.pem`.
    Sign(SignArgs),
}

#[derive(Args)]
pub struct SignArgs {
    /// Where the envelopes and `manifest-key.pem` go.
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
    #[command(flatten)]
    signer: SignerArgs,
    /// The development signer's directory (material, configuration, logs);
    /// kept between runs, so the manifest key stays the same.
    #[arg(long, value_name = "DIR", required_unless_present = "signer_endpoint")]
    dev_dir: Option<PathBuf>,
    /// The signer-svc binary of the development signer (default: next to
    /// this executable).
    #[arg(long, value_name = "FILE")]
    signer_svc: Option<PathBuf>,
    /// in-toto Statement v1 files, named `<name>.statement.json`.
    #[arg(required = true, value_name = "STATEMENT")]
    statements: Vec<PathBuf>,
}

/// Why signing did not finish.
enum Failure {
    /// Exit status 2.
    Usage(String),
    /// A statement is not what it must be: exit status 1.
    Invalid(String),
}

pub fn run(command: EvidenceCommand) -> ExitCode {
    let EvidenceCommand::Sign(args) = command;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(sign(&args)) {
        Ok(written) => {
            for path in written {
                println!("signed: {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Invalid(message)) => {
            eprintln!("invalid: statement: {message}");
            ExitCode::from(1)
        }
    }
}

/// The fields every in-toto Statement v1 must have; the predicate is the
/// producer's business, but it must be a JSON object.
#[derive(Deserialize)]
struct StatementShape {
    #[serde(rename = "_type")]
    statement_type: String,
    subject: Vec<SubjectShape>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
    predicate: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct SubjectShape {
    name: String,
    digest: std::collections::BTreeMap<String, String>,
}

/// Checks that `bytes` is an in-toto Statement v1 with at least one subject,
/// each carrying a SHA-256 digest, and a predicate type.
fn check_statement(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let invalid = |detail: String| Failure::Invalid(format!("{}: {detail}", path.display()));
    let statement: StatementShape =
        serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    if statement.statement_type != STATEMENT_TYPE {
        return Err(invalid(format!(
            "_type {:?} is not {STATEMENT_TYPE}",
            statement.statement_type
        )));
    }
    if statement.predicate_type.is_empty() || statement.predicate.is_empty() {
        return Err(invalid("empty predicate or predicateType".into()));
    }
    if statement.subject.is_empty() {
        return Err(invalid("no subject".into()));
    }
    for subject in &statement.subject {
        let well_formed = subject.digest.get("sha256").is_some_and(|hex| {
            hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if subject.name.is_empty() || !well_formed {
            return Err(invalid(format!(
                "subject {:?} needs a name and a lowercase hex sha256 digest",
                subject.name
            )));
        }
    }
    Ok(())
}

/// The envelope's path for a statement file.
fn envelope_path(out_dir: &Path, statement: &Path) -> Result<PathBuf, Failure> {
    let name = statement
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(|name| name.strip_suffix(STATEMENT_SUFFIX))
        .filter(|stem| !stem.is_empty())
        .ok_or_else(|| {
            Failure::Usage(format!(
                "{}: statement files are named <name>{STATEMENT_SUFFIX}",
                statement.display()
            ))
        })?;
    Ok(out_dir.join(format!("{name}{ENVELOPE_SUFFIX}")))
}

fn read_statement(path: &Path) -> Result<Vec<u8>, Failure> {
    let unreadable =
        |e: std::io::Error| Failure::Usage(format!("cannot read {}: {e}", path.display()));
    let size = std::fs::metadata(path).map_err(unreadable)?.len();
    if size > MAX_STATEMENT_SIZE {
        return Err(Failure::Invalid(format!(
            "{}: {size} bytes is over the signer's {MAX_STATEMENT_SIZE}",
            path.display()
        )));
    }
    std::fs::read(path).map_err(unreadable)
}

async fn sign(args: &SignArgs) -> Result<Vec<PathBuf>, Failure> {
    // Everything is read and checked before the signer is involved.
    let mut inputs = Vec::new();
    for path in &args.statements {
        let bytes = read_statement(path)?;
        check_statement(path, &bytes)?;
        inputs.push((envelope_path(&args.out_dir, path)?, bytes));
    }
    std::fs::create_dir_all(&args.out_dir)
        .map_err(|e| Failure::Usage(format!("creating {}: {e}", args.out_dir.display())))?;

    let (config, mut dev_signer) = match args.signer.config() {
        Some(config) => (config, None),
        None => {
            let dir = args.dev_dir.as_deref().ok_or_else(|| {
                Failure::Usage("--dev-dir or --signer-endpoint is required".into())
            })?;
            let (config, child) = start_dev_signer(dir, args.signer_svc.as_deref()).await?;
            (config, Some(child))
        }
    };
    let result = sign_with(&config, &args.out_dir, &inputs).await;
    if let Some(child) = &mut dev_signer {
        let _ = child.kill().await;
    }
    result
}

async fn sign_with(
    config: &SignerConfig,
    out_dir: &Path,
    inputs: &[(PathBuf, Vec<u8>)],
) -> Result<Vec<PathBuf>, Failure> {
    let usage = |e: witness_core::Error| Failure::Usage(e.to_string());
    let metrics = Arc::new(WitnessMetrics::new().map_err(usage)?);
    let signer = GrpcSigner::connect(config, metrics).map_err(usage)?;
    let keys = signer.keys().await.map_err(usage)?;
    let Some((pem, _key_id)) = keys.manifest else {
        return Err(Failure::Usage("the signer has no manifest key".into()));
    };
    let verifier = ManifestVerifier::from_pem(&pem).map_err(usage)?;
    let key_path = out_dir.join(PUBLIC_KEY_FILE);
    std::fs::write(&key_path, &pem)
        .map_err(|e| Failure::Usage(format!("writing {}: {e}", key_path.display())))?;
    let mut written = vec![key_path];
    for (out, statement) in inputs {
        let envelope = signer
            .sign_manifest(PAYLOAD_TYPE, statement.clone())
            .await
            .map_err(usage)?;
        // What comes back must verify under the key just published and carry
        // exactly the statement sent.
        let payload = verify_envelope(&envelope, &verifier).map_err(usage)?;
        if payload != *statement {
            return Err(Failure::Usage(format!(
                "the signer returned another payload for {}",
                out.display()
            )));
        }
        std::fs::write(out, &envelope)
            .map_err(|e| Failure::Usage(format!("writing {}: {e}", out.display())))?;
        written.push(out.clone());
    }
    Ok(written)
}

/// Starts `signer-svc serve` with the development stack's material and
/// configuration under `dir`; its output goes to `dir/logs/signer.log`.
async fn start_dev_signer(
    dir: &Path,
    program: Option<&Path>,
) -> Result<(SignerConfig, tokio::process::Child), Failure> {
    let program = match program {
        Some(path) => path.to_owned(),
        None => std::env::current_exe()
            .map_err(|e| Failure::Usage(format!("locating this executable: {e}")))?
            .with_file_name("signer-svc"),
    };
    if !program.is_file() {
        return Err(Failure::Usage(format!(
            "{} is missing: build signer-svc or pass --signer-svc",
            program.display()
        )));
    }
    let material = Material::load_or_generate(dir).map_err(Failure::Usage)?;
    let addrs = StackAddrs {
        signer: free_port()?,
        witness: free_port()?,
        gateway: free_port()?,
    };
    let configs = write_configs(
        dir,
        &material,
        &addrs,
        "rekor-witness-evidence.dev/signer",
        "",
    )
    .map_err(Failure::Usage)?;
    let log_path = dir.join("logs/signer.log");
    let log = std::fs::File::create(&log_path)
        .map_err(|e| Failure::Usage(format!("creating {}: {e}", log_path.display())))?;
    let err = log
        .try_clone()
        .map_err(|e| Failure::Usage(format!("opening {}: {e}", log_path.display())))?;
    let mut child = tokio::process::Command::new(&program)
        .arg("serve")
        .arg("--config")
        .arg(&configs.signer)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Failure::Usage(format!("starting {}: {e}", program.display())))?;
    wait_listening(&mut child, addrs.signer, &log_path).await?;
    let config = SignerConfig {
        endpoint: format!("https://{}", addrs.signer),
        ca: material.ca.clone(),
        client_cert: material.witness_client_cert.clone(),
        client_key: material.witness_client_key.clone(),
        server_name: Some("localhost".to_owned()),
        timeout: Duration::from_secs(30),
    };
    Ok((config, child))
}

/// A loopback port free right now (the signer binds it moments later).
fn free_port() -> Result<SocketAddr, Failure> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|e| Failure::Usage(format!("finding a free port: {e}")))
}

/// Waits until the signer accepts connections, failing early if it exits.
async fn wait_listening(
    child: &mut tokio::process::Child,
    addr: SocketAddr,
    log: &Path,
) -> Result<(), Failure> {
    let deadline = Instant::now() + SIGNER_START_TIMEOUT;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Failure::Usage(format!(
                "the development signer exited at startup ({status}); see {}",
                log.display()
            )));
        }
        if Instant::now() > deadline {
            let _ = child.kill().await;
            return Err(Failure::Usage(format!(
                "the development signer did not listen on {addr} within {SIGNER_START_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
