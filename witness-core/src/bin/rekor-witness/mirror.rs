//! `rekor-witness mirror pack|verify`: signed CAR mirrors of a log for
//! air-gapped witnessing (`docs/mirror-bundle-v1.md`).
//!
//! Exit status as for `verify`: 0 valid (or packed), 1 invalid bundle (one
//! `invalid: <check>: <reason>` line on stderr), 2 usage error, unreadable
//! file, or a pack that failed.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;
use witness_core::merkle::Hash;
use witness_core::mirror::{ENVELOPE_FILE, MirrorFault, parse_statement};
use witness_core::note::VerifierKey;
use witness_core::service::archive::{ManifestSigner, ManifestVerifier, verify_envelope};
use witness_core::service::feeder::LogUrl;
use witness_core::service::metrics::WitnessMetrics;
use witness_core::service::mirror::{
    FileManifestSigner, PackOptions, PackStart, TrustedTree, pack_rekor_v1, pack_tiles,
    verify_bundle,
};
use witness_core::service::signer_client::GrpcSigner;

use crate::signer_args::SignerArgs;

#[derive(Subcommand)]
pub enum MirrorCommand {
    /// Pack a log's entries into a signed mirror bundle (connected side).
    Pack(PackArgs),
    /// Verify a mirror bundle offline.
    Verify(VerifyArgs),
}

/// The log's API.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    /// c2sp.org/tlog-tiles (Rekor v2).
    Tiles,
    /// Rekor v1's REST API: one shard (`--origin <host> - <treeID>`, default
    /// the active one), entry by entry.
    RekorV1,
}

#[derive(Args)]
pub struct LogKeyArgs {
    /// The log's key: a vkey, or a file holding a vkey or a PEM public key.
    #[arg(long, value_name = "VKEY|FILE")]
    log_key: String,
    /// Key name for a PEM log key (default: the origin; for a Rekor v1 origin
    /// `<host> - <treeID>`, the host).
    #[arg(long)]
    key_name: Option<String>,
}

#[derive(Args)]
pub struct PackArgs {
    /// The log's tlog-tiles prefix URL, or Rekor v1's base URL.
    #[arg(long, value_name = "URL")]
    log: String,
    /// The log's API.
    #[arg(long, value_enum, default_value = "tiles")]
    kind: Kind,
    #[command(flatten)]
    key: LogKeyArgs,
    /// Require this checkpoint origin.
    #[arg(long)]
    origin: Option<String>,
    /// The bundle directory (resumed if it holds an interrupted pack).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Start an incremental bundle at this size.
    #[arg(long, value_name = "N")]
    from_size: Option<u64>,
    /// Start an incremental bundle where this previous bundle ends; the log's
    /// tree at that size must have its root.
    #[arg(long, value_name = "DIR")]
    previous: Option<PathBuf>,
    /// Sign with this PKCS#8 PEM ECDSA P-256 private key.
    #[arg(long, value_name = "FILE", conflicts_with = "signer_endpoint")]
    mirror_key: Option<PathBuf>,
    #[command(flatten)]
    signer: SignerArgs,
    /// Limit on one HTTP request to the log.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The bundle directory.
    dir: PathBuf,
    #[command(flatten)]
    key: LogKeyArgs,
    /// The mirror producer's public key (PEM, P-256 or Ed25519).
    #[arg(long, value_name = "FILE")]
    mirror_key: PathBuf,
    /// The previous bundle: this one must extend its tree.
    #[arg(long, value_name = "DIR")]
    previous: Option<PathBuf>,
    /// Print a machine-readable verdict on stdout.
    #[arg(long)]
    json: bool,
}

/// A usage error or unreadable input (2), or an invalid bundle (1).
enum Failure {
    Usage(String),
    Invalid(witness_core::Error),
}

impl From<witness_core::Error> for Failure {
    fn from(error: witness_core::Error) -> Failure {
        match error {
            witness_core::Error::Mirror {
                fault: MirrorFault::Unreadable,
                detail,
            } => Failure::Usage(detail),
            other => Failure::Invalid(other),
        }
    }
}

pub fn run(command: MirrorCommand) -> ExitCode {
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
    match command {
        MirrorCommand::Pack(args) => match runtime.block_on(pack(&args)) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::from(2)
            }
        },
        MirrorCommand::Verify(args) => {
            let result = runtime.block_on(verify(&args));
            match result {
                Ok(details) => {
                    if args.json {
                        println!("{}", json!({"valid": true, "details": details}));
                    } else {
                        println!(
                            "valid: mirror of {} [{}, {}) with root {}",
                            details["origin"].as_str().unwrap_or_default(),
                            details["start"],
                            details["size"],
                            details["root_hash"].as_str().unwrap_or_default()
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(Failure::Usage(message)) => {
                    if args.json {
                        println!(
                            "{}",
                            json!({"valid": false, "check": "usage", "error": message})
                        );
                    }
                    eprintln!("error: {message}");
                    ExitCode::from(2)
                }
                Err(Failure::Invalid(error)) => {
                    if args.json {
                        println!(
                            "{}",
                            json!({"valid": false, "check": error.kind(), "error": error.to_string()})
                        );
                    }
                    eprintln!("invalid: {}: {error}", error.kind());
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))
}

/// The log key; a PEM key is named `--key-name`, else `origin`.
fn log_key(args: &LogKeyArgs, origin: Option<&str>) -> Result<VerifierKey, Failure> {
    let path = Path::new(&args.log_key);
    let text = if path.is_file() {
        String::from_utf8(read(path)?)
            .map_err(|_| Failure::Usage(format!("{} is not UTF-8", path.display())))?
    } else {
        args.log_key.clone()
    };
    if text.contains("-----BEGIN") {
        let name = args
            .key_name
            .as_deref()
            .or(origin.map(key_name_of_origin))
            .ok_or_else(|| Failure::Usage("a PEM --log-key needs --key-name or --origin".into()))?;
        return VerifierKey::from_pem(name, &text).map_err(Failure::Invalid);
    }
    VerifierKey::parse_vkey(text.trim())
        .map_err(|e| Failure::Usage(format!("--log-key is neither a vkey nor a key file: {e}")))
}

/// The note key name of a log: a Rekor v1 shard's origin is
/// `<host> - <treeID>` and its key is named `<host>`; other logs name their key
/// after their origin.
fn key_name_of_origin(origin: &str) -> &str {
    match origin.rsplit_once(" - ") {
        Some((host, tree_id))
            if !tree_id.is_empty() && tree_id.bytes().all(|b| b.is_ascii_digit()) =>
        {
            host
        }
        _ => origin,
    }
}

/// The Statement of a bundle whose envelope the mirror key signed, when given.
fn statement(
    dir: &Path,
    key: Option<&ManifestVerifier>,
) -> Result<witness_core::mirror::MirrorPredicate, Failure> {
    let envelope = read(&dir.join(ENVELOPE_FILE))?;
    let payload = match key {
        Some(key) => verify_envelope(&envelope, key)?,
        None => {
            let json: serde_json::Value = serde_json::from_slice(&envelope)
                .map_err(|e| Failure::Usage(format!("{}: {e}", dir.display())))?;
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(json["payload"].as_str().unwrap_or_default())
                .map_err(|e| Failure::Usage(format!("{}: {e}", dir.display())))?
        }
    };
    Ok(parse_statement(&payload)?.1)
}

fn previous_tree(dir: &Path, key: Option<&ManifestVerifier>) -> Result<TrustedTree, Failure> {
    let predicate = statement(dir, key)?;
    Ok(TrustedTree {
        size: predicate.size,
        root: Hash::parse_base64(&predicate.root_hash)?,
    })
}

async fn verify(args: &VerifyArgs) -> Result<serde_json::Value, Failure> {
    let pem = String::from_utf8(read(&args.mirror_key)?)
        .map_err(|_| Failure::Usage("--mirror-key is not UTF-8".into()))?;
    let mirror_key = ManifestVerifier::from_pem(&pem).map_err(|e| Failure::Usage(e.to_string()))?;
    // The claimed origin only names a PEM log key; verification checks it.
    let claimed = statement(&args.dir, None).ok().map(|p| p.origin);
    let key = log_key(&args.key, claimed.as_deref())?;
    let previous = match &args.previous {
        Some(dir) => Some(previous_tree(dir, Some(&mirror_key))?),
        None => None,
    };
    let verified = verify_bundle(&args.dir, &key, &mirror_key, previous.as_ref()).await?;
    Ok(json!({
        "origin": verified.origin,
        "start": verified.start,
        "size": verified.size,
        "previous_size": verified.previous_size,
        "root_hash": verified.root.to_base64(),
        "car_sha256": hex::encode(verified.car_sha256),
    }))
}

async fn pack(args: &PackArgs) -> Result<String, String> {
    let usage = |f: Failure| match f {
        Failure::Usage(message) => message,
        Failure::Invalid(error) => format!("{}: {error}", error.kind()),
    };
    let key = log_key(&args.key, args.origin.as_deref()).map_err(usage)?;
    let start = match (&args.previous, args.from_size) {
        (Some(dir), from) => {
            let tree = previous_tree(dir, None).map_err(usage)?;
            if from.is_some_and(|n| n != tree.size) {
                return Err(format!(
                    "--from-size differs from the previous bundle's size {}",
                    tree.size
                ));
            }
            PackStart::Previous(tree)
        }
        (None, Some(0)) | (None, None) => PackStart::Full,
        (None, Some(n)) => PackStart::FromSize(n),
    };
    let signer: Box<dyn ManifestSigner> = match (&args.mirror_key, args.signer.config()) {
        (Some(path), None) => {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Box::new(FileManifestSigner::from_pkcs8_pem(&pem).map_err(|e| e.to_string())?)
        }
        (None, Some(config)) => {
            let metrics = std::sync::Arc::new(WitnessMetrics::new().map_err(|e| e.to_string())?);
            Box::new(GrpcSigner::connect(&config, metrics).map_err(|e| e.to_string())?)
        }
        _ => return Err("one of --mirror-key or --signer-endpoint is required".into()),
    };
    let options = PackOptions {
        log: LogUrl::parse(&args.log).map_err(|e| e.to_string())?,
        log_key: key,
        origin: args.origin.clone(),
        out: args.out.clone(),
        start,
        request_timeout: args.request_timeout,
    };
    let terminal = std::io::stderr().is_terminal();
    let mut last = std::time::Instant::now();
    let mut progress = move |done: u64, total: u64| {
        if terminal && (done == total || last.elapsed() >= Duration::from_millis(200)) {
            last = std::time::Instant::now();
            let percent = (done * 100).checked_div(total).unwrap_or(100);
            eprint!("\rpacked {done}/{total} entries ({percent}%)");
            if done == total {
                eprintln!();
            }
        }
    };
    let packed = match args.kind {
        Kind::Tiles => pack_tiles(&options, signer.as_ref(), &mut progress).await,
        Kind::RekorV1 => pack_rekor_v1(&options, signer.as_ref(), &mut progress).await,
    }
    .map_err(|e| format!("{}: {e}", e.kind()))?;
    Ok(format!(
        "packed {} [{}, {}) with root {} into {} (CAR sha256 {})",
        packed.origin,
        packed.start,
        packed.size,
        packed.root.to_base64(),
        args.out.display(),
        hex::encode(packed.car_sha256)
    ))
}
