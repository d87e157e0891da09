//! `rekor-witness verify …`: offline verification of checkpoints, the
//! transparency-log part of Sigstore bundles, and consistency proofs.
//!
//! Inputs are read in two stages so the exit status is predictable: first every
//! argument and file is resolved (a failure there is a usage error or an
//! unreadable file, status 2), then the contents are parsed and verified (any
//! failure there is an invalid input, status 1).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use witness_core::bundle::{self, VerifiedEntry};
use witness_core::checkpoint::{VerifiedCheckpoint, parse_checkpoint_text, verify_checkpoint};
use witness_core::merkle::verify_consistency;
use witness_core::note::{VerifierKey, parse_note};
use witness_core::rekor::parse_proof_file;

#[derive(Subcommand)]
pub enum VerifyCommand {
    /// Verify a signed checkpoint with a log key.
    Checkpoint(CheckpointArgs),
    /// Verify the transparency-log part of Sigstore bundles (leaf hash, inclusion
    /// proof, checkpoint signature, checkpoint/proof agreement). Certificates,
    /// timestamps and artifact signatures are not checked.
    Bundle(BundleArgs),
    /// Verify that one checkpoint's tree is a prefix of another's.
    Consistency(ConsistencyArgs),
    /// Verify a DSSE envelope holding an in-toto Statement v1 (the evidence
    /// bundle's attestations, the archive's manifests) with a PEM public key.
    Dsse(DsseArgs),
}

#[derive(Args)]
pub struct DsseArgs {
    /// The signer's public key: PEM (ECDSA P-256 or Ed25519).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Require this predicate type (e.g. https://slsa.dev/provenance/v1).
    #[arg(long = "type", value_name = "URI")]
    predicate_type: Option<String>,
    /// Require that this file's SHA-256 is one of the statement's subjects.
    #[arg(long, value_name = "FILE")]
    subject: Option<PathBuf>,
    /// Print a machine-readable verdict on stdout.
    #[arg(long)]
    json: bool,
    /// The DSSE envelope (JSON).
    envelope: PathBuf,
}

#[derive(Args)]
pub struct KeyArgs {
    /// The log's key: a vkey (`name+keyid+base64`), or a file holding a vkey or a
    /// PEM public key (Ed25519 or ECDSA P-256).
    #[arg(long, value_name = "VKEY|FILE")]
    key: String,
    /// Key name for a PEM key. Defaults to the origin's host for Rekor v1 origins
    /// (`<host> - <treeID>`) and to the origin otherwise.
    #[arg(long)]
    name: Option<String>,
    /// Print a machine-readable verdict on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct CheckpointArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// Require this origin line.
    #[arg(long)]
    origin: Option<String>,
    /// The signed checkpoint.
    file: PathBuf,
}

#[derive(Args)]
pub struct BundleArgs {
    /// A Sigstore `trusted_root.json` holding the logs' keys.
    #[arg(long, value_name = "FILE")]
    trusted_root: PathBuf,
    /// Print a machine-readable verdict on stdout.
    #[arg(long)]
    json: bool,
    /// Sigstore bundles, or bare TransparencyLogEntry JSON files.
    #[arg(required = true, value_name = "BUNDLE")]
    bundles: Vec<PathBuf>,
}

#[derive(Args)]
pub struct ConsistencyArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// Require this origin line on both checkpoints.
    #[arg(long)]
    origin: Option<String>,
    /// The older signed checkpoint.
    #[arg(long, value_name = "CHECKPOINT")]
    old: PathBuf,
    /// The newer signed checkpoint.
    #[arg(long, value_name = "CHECKPOINT")]
    new: PathBuf,
    /// A Rekor v1 `/api/v1/log/proof` JSON response, or one base64 hash per line.
    #[arg(long, value_name = "FILE")]
    proof: PathBuf,
}

/// Why a verification did not succeed.
enum Failure {
    /// Bad arguments: exit status 2.
    Usage(String),
    /// A file could not be read: exit status 2.
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The input is invalid: exit status 1. `check` is a bounded label.
    Invalid {
        check: &'static str,
        message: String,
    },
}

impl From<witness_core::Error> for Failure {
    fn from(error: witness_core::Error) -> Failure {
        Failure::Invalid {
            check: error.kind(),
            message: error.to_string(),
        }
    }
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Invalid { .. } => 1,
            Failure::Usage(_) | Failure::Unreadable { .. } => 2,
        }
    }

    fn check(&self) -> &'static str {
        match self {
            Failure::Usage(_) => "usage",
            Failure::Unreadable { .. } => "unreadable_file",
            Failure::Invalid { check, .. } => check,
        }
    }

    fn message(&self) -> String {
        match self {
            Failure::Usage(message) => message.clone(),
            Failure::Unreadable { path, error } => {
                format!("cannot read {}: {error}", path.display())
            }
            Failure::Invalid { message, .. } => message.clone(),
        }
    }

    /// The one stderr line.
    fn line(&self) -> String {
        match self {
            Failure::Invalid { check, message } => format!("invalid: {check}: {message}"),
            other => format!("error: {}", other.message()),
        }
    }

    fn to_json(&self) -> Value {
        json!({"valid": false, "check": self.check(), "error": self.message()})
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|error| Failure::Unreadable {
        path: path.to_owned(),
        error,
    })
}

/// Where a `--key` came from, resolved before any content is verified.
enum KeySource {
    Vkey(VerifierKey),
    File { path: PathBuf, contents: Vec<u8> },
}

fn resolve_key(args: &KeyArgs) -> Result<KeySource, Failure> {
    let path = Path::new(&args.key);
    if path.is_file() {
        return Ok(KeySource::File {
            path: path.to_owned(),
            contents: read(path)?,
        });
    }
    match VerifierKey::parse_vkey(&args.key) {
        Ok(key) => {
            if let Some(name) = &args.name
                && name != key.name()
            {
                return Err(Failure::Usage(format!(
                    "--name {name:?} differs from the vkey's name {:?}",
                    key.name()
                )));
            }
            Ok(KeySource::Vkey(key))
        }
        // A value with the shape of a vkey is reported as one; anything else is
        // taken for a path that does not exist.
        Err(error) if args.key.matches('+').count() >= 2 => Err(Failure::Usage(format!(
            "--key is not a valid vkey: {error}"
        ))),
        Err(_) => Err(Failure::Unreadable {
            path: path.to_owned(),
            error: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        }),
    }
}

/// The key name Rekor logs use: the host of a v1 origin `<host> - <treeID>`, the
/// origin itself otherwise.
fn default_key_name(origin: &str) -> &str {
    match origin.split_once(" - ") {
        Some((host, tree_id))
            if !tree_id.is_empty() && tree_id.bytes().all(|b| b.is_ascii_digit()) =>
        {
            host
        }
        _ => origin,
    }
}

/// Turns a resolved key into a verifier; `origin` names PEM keys without `--name`.
fn load_key(source: KeySource, name: Option<&str>, origin: &str) -> Result<VerifierKey, Failure> {
    match source {
        KeySource::Vkey(key) => Ok(key),
        KeySource::File { path, contents } => {
            let text = std::str::from_utf8(&contents).map_err(|_| Failure::Invalid {
                check: "malformed_key",
                message: format!("{} is not UTF-8", path.display()),
            })?;
            let key = if text.contains("-----BEGIN") {
                VerifierKey::from_pem(name.unwrap_or(default_key_name(origin)), text)?
            } else {
                let key = VerifierKey::parse_vkey(text.trim())?;
                if let Some(name) = name
                    && name != key.name()
                {
                    return Err(Failure::Usage(format!(
                        "--name {name:?} differs from the vkey's name {:?}",
                        key.name()
                    )));
                }
                key
            };
            Ok(key)
        }
    }
}

/// The origin a checkpoint claims, read before verification only to name a key.
fn claimed_origin(bytes: &[u8]) -> Result<String, Failure> {
    let note = parse_note(bytes)?;
    Ok(parse_checkpoint_text(note.text())?.origin().to_owned())
}

fn checkpoint_json(verified: &VerifiedCheckpoint) -> Value {
    let checkpoint = verified.checkpoint();
    let signatures: Vec<Value> = verified
        .note()
        .verified()
        .iter()
        .map(|s| {
            json!({
                "key": format!("{}+{:08x}", s.signature.key_name(), s.signature.key_id()),
                "type": format!("{:?}", s.signature_type),
                "timestamp": s.timestamp,
            })
        })
        .collect();
    json!({
        "origin": checkpoint.origin(),
        "size": checkpoint.size(),
        "root_hash": checkpoint.root_hash().to_base64(),
        "verified_signatures": signatures,
        "unverified_signatures": verified.note().unverified().count(),
    })
}

fn finish(
    json_output: bool,
    result: Result<Value, Failure>,
    success_line: impl Fn(&Value) -> String,
) -> ExitCode {
    match result {
        Ok(details) => {
            if json_output {
                let mut verdict = json!({"valid": true});
                verdict["details"] = details;
                println!("{verdict}");
            } else {
                println!("{}", success_line(&details));
            }
            ExitCode::SUCCESS
        }
        Err(failure) => {
            if json_output {
                println!("{}", failure.to_json());
            }
            eprintln!("{}", failure.line());
            ExitCode::from(failure.exit_code())
        }
    }
}

pub fn run(command: VerifyCommand) -> ExitCode {
    match command {
        VerifyCommand::Checkpoint(args) => {
            let json_output = args.key.json;
            finish(json_output, checkpoint(&args), |d| {
                format!(
                    "valid: checkpoint {} at size {} with root {}",
                    d["origin"].as_str().unwrap_or_default(),
                    d["size"],
                    d["root_hash"].as_str().unwrap_or_default()
                )
            })
        }
        VerifyCommand::Consistency(args) => {
            let json_output = args.key.json;
            finish(json_output, consistency(&args), |d| {
                format!(
                    "valid: {} size {} is consistent with size {}",
                    d["origin"].as_str().unwrap_or_default(),
                    d["old_size"],
                    d["new_size"]
                )
            })
        }
        VerifyCommand::Bundle(args) => bundles(&args),
        VerifyCommand::Dsse(args) => finish(args.json, dsse(&args), |d| {
            format!(
                "valid: {} statement over {} subject(s) signed by key {}",
                d["predicate_type"].as_str().unwrap_or_default(),
                d["subjects"].as_array().map_or(0, Vec::len),
                d["key_id"].as_str().unwrap_or_default()
            )
        }),
    }
}

fn dsse(args: &DsseArgs) -> Result<Value, Failure> {
    use sha2::{Digest as _, Sha256};
    use witness_core::service::archive::{ManifestVerifier, STATEMENT_TYPE, verify_envelope};
    let key_bytes = read(&args.key)?;
    let envelope = read(&args.envelope)?;
    let subject_sha256 = match &args.subject {
        Some(path) => Some(hex::encode(Sha256::digest(read(path)?))),
        None => None,
    };
    let pem = std::str::from_utf8(&key_bytes).map_err(|_| Failure::Invalid {
        check: "malformed_key",
        message: format!("{} is not UTF-8", args.key.display()),
    })?;
    let key = ManifestVerifier::from_pem(pem)?;
    let payload = verify_envelope(&envelope, &key)?;
    let not_statement = |message: String| Failure::Invalid {
        check: "not_an_in_toto_statement",
        message,
    };
    let statement: Value =
        serde_json::from_slice(&payload).map_err(|e| not_statement(e.to_string()))?;
    if statement["_type"] != STATEMENT_TYPE {
        return Err(not_statement(format!(
            "_type {} is not {STATEMENT_TYPE}",
            statement["_type"]
        )));
    }
    let Some(predicate_type) = statement["predicateType"].as_str() else {
        return Err(not_statement("no predicateType".into()));
    };
    let subjects: Vec<Value> = statement["subject"]
        .as_array()
        .map(|subjects| {
            subjects
                .iter()
                .map(|s| json!({"name": s["name"], "sha256": s["digest"]["sha256"]}))
                .collect()
        })
        .unwrap_or_default();
    if subjects.is_empty() {
        return Err(not_statement("no subject".into()));
    }
    if let Some(wanted) = &args.predicate_type
        && wanted != predicate_type
    {
        return Err(Failure::Invalid {
            check: "predicate_type_mismatch",
            message: format!("predicate type {predicate_type:?} is not {wanted:?}"),
        });
    }
    if let Some(sha256) = &subject_sha256
        && !subjects.iter().any(|s| s["sha256"] == sha256.as_str())
    {
        return Err(Failure::Invalid {
            check: "subject_mismatch",
            message: format!(
                "sha256 {sha256} of {} is not a subject of the statement",
                args.subject.as_deref().unwrap_or(Path::new("")).display()
            ),
        });
    }
    Ok(json!({
        "key_id": key.key_id(),
        "predicate_type": predicate_type,
        "subjects": subjects,
    }))
}

fn checkpoint(args: &CheckpointArgs) -> Result<Value, Failure> {
    let source = resolve_key(&args.key)?;
    let bytes = read(&args.file)?;
    let origin = match &args.origin {
        Some(origin) => origin.clone(),
        None => claimed_origin(&bytes)?,
    };
    let key = load_key(source, args.key.name.as_deref(), &origin)?;
    let verified = verify_checkpoint(&bytes, &[key], args.origin.as_deref())?;
    Ok(checkpoint_json(&verified))
}

fn consistency(args: &ConsistencyArgs) -> Result<Value, Failure> {
    let source = resolve_key(&args.key)?;
    let old_bytes = read(&args.old)?;
    let new_bytes = read(&args.new)?;
    let proof_bytes = read(&args.proof)?;
    let origin = match &args.origin {
        Some(origin) => origin.clone(),
        None => claimed_origin(&old_bytes)?,
    };
    let key = load_key(source, args.key.name.as_deref(), &origin)?;
    let keys = [key];
    let old = verify_checkpoint(&old_bytes, &keys, args.origin.as_deref())?;
    let new = verify_checkpoint(&new_bytes, &keys, Some(old.checkpoint().origin()))?;
    let proof = parse_proof_file(&proof_bytes)?;
    let (old, new) = (old.checkpoint(), new.checkpoint());
    if old.size() == 0 {
        // Every tree extends the empty tree; a proof would have nothing to show.
        if !proof.is_empty() {
            return Err(Failure::Invalid {
                check: "consistency_proof_invalid",
                message:
                    "consistency proof does not verify: proof must be empty for an empty old tree"
                        .into(),
            });
        }
    } else {
        verify_consistency(
            old.size(),
            new.size(),
            old.root_hash(),
            new.root_hash(),
            &proof,
        )?;
    }
    Ok(json!({
        "origin": old.origin(),
        "old_size": old.size(),
        "new_size": new.size(),
        "old_root_hash": old.root_hash().to_base64(),
        "new_root_hash": new.root_hash().to_base64(),
        "proof_hashes": proof.len(),
    }))
}

fn entry_json(entry: &VerifiedEntry) -> Value {
    json!({
        "log": entry.log_base_url,
        "origin": entry.checkpoint.origin(),
        "tree_size": entry.checkpoint.size(),
        "root_hash": entry.checkpoint.root_hash().to_base64(),
        "log_index": entry.log_index,
        "leaf_index": entry.leaf_index,
        "leaf_hash": entry.leaf_hash.to_hex(),
    })
}

fn bundles(args: &BundleArgs) -> ExitCode {
    // Stage 1: read everything; any unreadable file is status 2.
    let mut inputs = Vec::new();
    for path in std::iter::once(&args.trusted_root).chain(&args.bundles) {
        match read(path) {
            Ok(bytes) => inputs.push(bytes),
            Err(failure) => return finish(args.json, Err(failure), |_| String::new()),
        }
    }
    // Stage 2: verify each bundle on its own.
    let trusted = match bundle::parse_trusted_root(&inputs[0]) {
        Ok(trusted) => trusted,
        Err(error) => return finish(args.json, Err(error.into()), |_| String::new()),
    };
    let mut results = Vec::new();
    let mut all_valid = true;
    for (path, bytes) in args.bundles.iter().zip(&inputs[1..]) {
        let verdict = bundle::parse_entries(bytes).and_then(|entries| {
            entries
                .iter()
                .map(|entry| bundle::verify_entry(entry, &trusted))
                .collect::<witness_core::Result<Vec<_>>>()
        });
        match verdict {
            Ok(entries) => {
                for entry in &entries {
                    if !args.json {
                        println!(
                            "valid: {}: entry {} (leaf {}) included in {} at size {}",
                            path.display(),
                            entry.log_index,
                            entry.leaf_index,
                            entry.checkpoint.origin(),
                            entry.checkpoint.size()
                        );
                    }
                }
                let entries: Vec<Value> = entries.iter().map(entry_json).collect();
                results.push(json!({"file": path, "valid": true, "entries": entries}));
            }
            Err(error) => {
                all_valid = false;
                let failure = Failure::from(error);
                eprintln!("{}: {}", path.display(), failure.line());
                let mut verdict = failure.to_json();
                verdict["file"] = json!(path);
                results.push(verdict);
            }
        }
    }
    if args.json {
        println!("{}", json!({"valid": all_valid, "bundles": results}));
    }
    if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
