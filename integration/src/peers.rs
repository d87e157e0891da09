//! The peer witnesses, as real processes: litewitness (`filippo.io/torchwood`)
//! and omniwitness (`github.com/transparency-dev/witness`), built by
//! `scripts/go-peers` and started as integration/GO-PEERS.md describes, on
//! loopback only.
//!
//! Each peer exposes its base URL (it serves c2sp.org/tlog-witness
//! `POST /add-checkpoint` under it), its verifier key, and `add_log` to trust a
//! log. Both sign cosignature/v1 (type 0x04) with an Ed25519 key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use witness_core::note::{SignatureType, VerifierKey};

use crate::go_program;
use crate::process::{Process, START_TIMEOUT, free_loopback_addr};

/// base64 of SHA-256 of the empty string: the root of the empty tree, the
/// state witnessctl `add-log` gives a new log.
const EMPTY_TREE_HASH: &str = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

/// The longest path a Unix socket address holds (`sun_path` is 108 bytes,
/// NUL included).
const MAX_SOCKET_PATH: usize = 107;

/// A running litewitness with its own ssh-agent holding its key (both killed
/// on drop) and its SQLite database, in which logs are registered.
pub struct Litewitness {
    process: Process,
    // Declared after `process`: the witness stops before its agent.
    _agent: Process,
    addr: SocketAddr,
    db: PathBuf,
    vkey: String,
}

impl Litewitness {
    /// Makes an Ed25519 key with `ssh-keygen` in `dir`, starts a dedicated
    /// `ssh-agent` holding it (socket `dir/agent.sock`), then litewitness
    /// named `name` with its database `dir/litewitness.db`, listening on a free
    /// loopback port. Output goes to `logs_dir/{litewitness,ssh-agent}.log`.
    /// Returns once it listens and has printed its verifier key, which must be
    /// the one computed from the key.
    pub async fn start(dir: &Path, logs_dir: &Path, name: &str) -> Result<Litewitness, String> {
        let program = go_program("litewitness")?;
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let key = dir.join("key");
        let socket = dir.join("agent.sock");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(format!(
                "{} is too long for a Unix socket: start litewitness in a shorter directory",
                socket.display()
            ));
        }
        run_tool(
            "ssh-keygen",
            &["-q", "-t", "ed25519", "-N", "", "-C", "litewitness", "-f"],
            &key,
            &[],
        )
        .await?;
        let public = std::fs::read_to_string(key.with_extension("pub"))
            .map_err(|e| format!("reading the litewitness public key: {e}"))?;
        let vkey = vkey_from_openssh(name, &public)?;

        let mut agent = Process::start(
            "ssh-agent",
            Path::new("ssh-agent"),
            &["-D".into(), "-a".into(), path_arg(&socket)?],
            &[],
            logs_dir,
        )?;
        wait_for(&mut agent, || socket.exists(), "its socket").await?;
        let auth_sock = [("SSH_AUTH_SOCK".to_owned(), path_arg(&socket)?)];
        run_tool("ssh-add", &["-q"], &key, &auth_sock).await?;
        let fingerprint = ssh_fingerprint(&key).await?;

        let addr = free_loopback_addr()?;
        let db = dir.join("litewitness.db");
        let args = [
            "-name".to_owned(),
            name.to_owned(),
            "-db".to_owned(),
            path_arg(&db)?,
            "-ssh-agent".to_owned(),
            path_arg(&socket)?,
            "-key".to_owned(),
            fingerprint,
            "-listen".to_owned(),
            addr.to_string(),
        ];
        let mut process = Process::start("litewitness", &program, &args, &[], logs_dir)?;
        process.wait_listening(addr).await?;
        let printed = wait_for_printed_vkey(&mut process).await?;
        if printed != vkey {
            return Err(format!(
                "litewitness printed the verifier key {printed}, but its key makes {vkey}"
            ));
        }
        Ok(Litewitness {
            process,
            _agent: agent,
            addr,
            db,
            vkey,
        })
    }

    /// `http://127.0.0.1:PORT`: `POST {base_url}/add-checkpoint`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its verifier key (`name+id+base64(0x04 || key)`), as it printed it.
    pub fn vkey(&self) -> &str {
        &self.vkey
    }

    /// The child process (its log, stop, restart).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Trusts the log `origin`, signed by `log_vkey`, starting from the empty
    /// tree: the two rows witnessctl `add-log` and `add-key` insert (witnessctl
    /// cannot be built here; see integration/GO-PEERS.md). Takes effect on the
    /// next request, with litewitness running.
    pub fn add_log(&self, origin: &str, log_vkey: &str) -> Result<(), String> {
        let sql =
            |e: rusqlite::Error| format!("registering {origin} in {}: {e}", self.db.display());
        let mut connection = rusqlite::Connection::open(&self.db).map_err(sql)?;
        connection
            .busy_timeout(Duration::from_secs(10))
            .map_err(sql)?;
        let transaction = connection.transaction().map_err(sql)?;
        transaction
            .execute(
                "INSERT INTO log (origin, tree_size, tree_hash) VALUES (?1, 0, ?2)",
                (origin, EMPTY_TREE_HASH),
            )
            .map_err(sql)?;
        transaction
            .execute(
                "INSERT INTO key (origin, key) VALUES (?1, ?2)",
                (origin, log_vkey),
            )
            .map_err(sql)?;
        transaction.commit().map_err(sql)
    }
}

/// A running omniwitness with its key pair from `generate_keys` and its logs
/// in an `--additional_logs` YAML file.
pub struct Omniwitness {
    process: Process,
    addr: SocketAddr,
    logs_yaml: PathBuf,
    logs: Vec<String>,
    vkey: String,
}

impl Omniwitness {
    /// Generates its key pair named `origin` in `dir` with
    /// `omniwitness-generate-keys`, then starts omniwitness with its database
    /// `dir/witness.db` and its logs in `dir/logs.yaml` (none yet), API and
    /// metrics on free loopback ports. Output goes to `logs_dir/omniwitness.log`.
    /// Its embedded public logs are known to it too, but it has no feeder
    /// configured, so it connects nowhere.
    pub async fn start(dir: &Path, logs_dir: &Path, origin: &str) -> Result<Omniwitness, String> {
        let program = go_program("omniwitness")?;
        let generate_keys = go_program("omniwitness-generate-keys")?;
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let private = dir.join("key.sec");
        let public = dir.join("key.pub");
        let generated = tokio::process::Command::new(&generate_keys)
            .args(["--origin", origin, "--out_priv"])
            .arg(&private)
            .arg("--out_pub")
            .arg(&public)
            .output()
            .await
            .map_err(|e| format!("running {}: {e}", generate_keys.display()))?;
        if !generated.status.success() {
            return Err(format!(
                "omniwitness-generate-keys failed ({}): {}",
                generated.status,
                String::from_utf8_lossy(&generated.stderr)
            ));
        }
        let vkey = std::fs::read_to_string(&public)
            .map_err(|e| format!("reading {}: {e}", public.display()))?
            .trim()
            .to_owned();
        VerifierKey::parse_vkey(&vkey)
            .map_err(|e| format!("omniwitness-generate-keys wrote a bad vkey {vkey:?}: {e}"))?;

        let logs_yaml = dir.join("logs.yaml");
        write_logs_yaml(&logs_yaml, &[])?;
        let (addr, metrics) = (free_loopback_addr()?, free_loopback_addr()?);
        let args = [
            "--listen".to_owned(),
            addr.to_string(),
            "--metrics_listen".to_owned(),
            metrics.to_string(),
            "--private_key_path".to_owned(),
            path_arg(&private)?,
            "--db_file".to_owned(),
            path_arg(&dir.join("witness.db"))?,
            "--additional_logs".to_owned(),
            path_arg(&logs_yaml)?,
        ];
        let mut process = Process::start("omniwitness", &program, &args, &[], logs_dir)?;
        process.wait_listening(addr).await?;
        Ok(Omniwitness {
            process,
            addr,
            logs_yaml,
            logs: Vec::new(),
            vkey,
        })
    }

    /// `http://127.0.0.1:PORT`: `POST {base_url}/add-checkpoint`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its verifier key (`name+id+base64(0x04 || key)`), as generate_keys
    /// wrote it.
    pub fn vkey(&self) -> &str {
        &self.vkey
    }

    /// The child process (its log, stop, restart).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Trusts the log `origin`, signed by `log_vkey` (an Ed25519 vkey): adds
    /// it to `logs.yaml` and restarts omniwitness, which reads the file only
    /// at start, on the same port and database.
    pub async fn add_log(&mut self, origin: &str, log_vkey: &str) -> Result<(), String> {
        let mut logs = self.logs.clone();
        logs.push(log_entry(origin, log_vkey)?);
        write_logs_yaml(&self.logs_yaml, &logs)?;
        self.logs = logs;
        self.process.stop().await;
        self.process.restart()?;
        self.process.wait_listening(self.addr).await
    }
}

/// One `Logs` entry of omniwitness's YAML; strings are JSON-quoted, which
/// YAML reads as double-quoted scalars.
fn log_entry(origin: &str, log_vkey: &str) -> Result<String, String> {
    let quote = |s: &str| serde_json::to_string(s).map_err(|e| format!("quoting {s:?}: {e}"));
    Ok(format!(
        "  - Origin: {}\n    URL: {}\n    PublicKey: {}\n",
        quote(origin)?,
        // Never fetched: this omniwitness has no feeder.
        quote("http://127.0.0.1:9/unused")?,
        quote(log_vkey)?
    ))
}

fn write_logs_yaml(path: &Path, entries: &[String]) -> Result<(), String> {
    let text = if entries.is_empty() {
        "Logs: []\n".to_owned()
    } else {
        format!("Logs:\n{}", entries.concat())
    };
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// The cosignature/v1 vkey of an OpenSSH Ed25519 public key line
/// (`ssh-ed25519 BASE64 comment`): the key is the blob's last 32 bytes after
/// the length-prefixed type string.
pub fn vkey_from_openssh(name: &str, line: &str) -> Result<String, String> {
    let bad = |why: &str| format!("not an OpenSSH Ed25519 public key ({why}): {line:?}");
    let mut fields = line.split_whitespace();
    if fields.next() != Some("ssh-ed25519") {
        return Err(bad("type"));
    }
    let blob = fields
        .next()
        .and_then(|b| BASE64.decode(b).ok())
        .ok_or_else(|| bad("base64"))?;
    // string "ssh-ed25519" (4 + 11 bytes), then string key (4 + 32 bytes).
    let expected_prefix = [&[0, 0, 0, 11][..], b"ssh-ed25519", &[0, 0, 0, 32]].concat();
    if blob.len() != expected_prefix.len() + 32 || !blob.starts_with(&expected_prefix) {
        return Err(bad("blob layout"));
    }
    let key = VerifierKey::from_material(
        name,
        SignatureType::CosignatureV1,
        &blob[expected_prefix.len()..],
    )
    .map_err(|e| bad(&e.to_string()))?;
    Ok(key.to_vkey())
}

/// Runs `program args path` (with `envs`), an error with its output if it fails.
async fn run_tool(
    program: &str,
    args: &[&str],
    path: &Path,
    envs: &[(String, String)],
) -> Result<(), String> {
    let output = tokio::process::Command::new(program)
        .args(args)
        .arg(path)
        .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .await
        .map_err(|e| format!("running {program} (Debian package openssh-client): {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// `SHA256:...`, the fingerprint litewitness's `-key` takes.
async fn ssh_fingerprint(key: &Path) -> Result<String, String> {
    let output = tokio::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(key.with_extension("pub"))
        .output()
        .await
        .map_err(|e| format!("running ssh-keygen -lf: {e}"))?;
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .nth(1)
        .filter(|fp| output.status.success() && fp.starts_with("SHA256:"))
        .map(str::to_owned)
        .ok_or_else(|| {
            format!(
                "ssh-keygen -lf gave no fingerprint: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

/// Waits until `ready()` or the process exits or [`START_TIMEOUT`] passes.
async fn wait_for(
    process: &mut Process,
    mut ready: impl FnMut() -> bool,
    what: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    while !ready() {
        process.fail_if_exited()?;
        if Instant::now() > deadline {
            return Err(format!(
                "{} did not create {what} within {START_TIMEOUT:?}",
                process.name()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The `vkey=` of litewitness's `msg="verifier key"` log line.
async fn wait_for_printed_vkey(process: &mut Process) -> Result<String, String> {
    let mut printed = None;
    let log = process.log_path().to_path_buf();
    wait_for(
        process,
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            printed = text
                .lines()
                .filter(|line| line.contains("verifier key"))
                .find_map(|line| {
                    line.split_whitespace()
                        .find_map(|field| field.strip_prefix("vkey="))
                        .map(|vkey| vkey.trim_matches('"').to_owned())
                });
            printed.is_some()
        },
        "its verifier key line",
    )
    .await?;
    printed.ok_or_else(|| "litewitness printed no verifier key".to_owned())
}

fn path_arg(path: &Path) -> Result<String, String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{} is not UTF-8", path.display()))
}
