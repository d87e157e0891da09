//! A real Rekor v1 instance for the tests: sigstore/rekor's `rekor-server` on
//! Trillian (`trillian_log_server`, `trillian_log_signer`) on a private MariaDB,
//! every process on loopback ports of its own and all state under one directory.
//!
//! The log has two shards, as production Rekor v1 does after a reshard: a frozen
//! one holding [`INACTIVE_SHARD_ENTRIES`] entries, listed by `GET /api/v1/log`
//! under `inactiveShards`, and the active one new entries go to. The frozen shard
//! is made the way operators make one: Rekor first runs with it as the active
//! tree and receives entries, then it is frozen with `updatetree`, a new tree is
//! created, and Rekor restarts with the new tree active and the old one in its
//! sharding config.
//!
//! Rekor signs its checkpoints with a P-256 key from a PEM file, so they are real
//! Rekor v1 signed notes: key name = [`RekorV1::hostname`], origin
//! `<hostname> - <treeID>` per shard.
//!
//! Programs: the Go binaries `scripts/go-peers` builds into `target/go-bin`
//! (with Trillian's MySQL schema, `trillian-storage.sql`), and Debian's MariaDB
//! (`$WITNESS_TEST_MARIADBD`, `$WITNESS_TEST_MARIADB_INSTALL_DB`,
//! `$WITNESS_TEST_MARIADB`, defaulting to Debian's paths). Anything missing is an
//! error naming the fix, never a skip.
//!
//! One quirk cannot be configured away: rekor-server v1.5.4 also serves its
//! metrics on `:2112` (all interfaces, hard-coded, bind errors ignored). A second
//! instance on the machine runs fine without them.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use p256::ecdsa::signature::hazmat::PrehashSigner as _;
use p256::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use sha2::{Digest as _, Sha256};

use crate::go_program;
use crate::process::{Process, free_loopback_addr};

/// The hostname Rekor signs as: the note key name and the start of every origin.
pub const HOSTNAME: &str = "rekor-v1.test";

/// Entries added to the shard before it is frozen.
pub const INACTIVE_SHARD_ENTRIES: u64 = 3;

/// The MariaDB database holding Trillian's tables and Rekor's search index.
const DATABASE: &str = "trillian";

/// How long one request to Rekor may take. Adding an entry waits for Trillian
/// to sequence it (every 100 ms here), so a few seconds is generous.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a Debian program is unless the named variable says otherwise.
fn system_program(variable: &str, default: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing (${variable}): install Debian's mariadb-server (scripts/test does)",
            path.display()
        ))
    }
}

/// Trillian's MySQL schema: `target/go-bin/trillian-storage.sql`, which
/// `scripts/go-peers` copies there from the module it builds Trillian from.
fn trillian_schema() -> Result<PathBuf, String> {
    let trillian = go_program("trillian_log_server")?;
    let schema = trillian.with_file_name("trillian-storage.sql");
    if schema.is_file() {
        Ok(schema)
    } else {
        Err(format!(
            "{} is missing: run scripts/go-peers trillian, which copies Trillian's \
             storage/mysql/schema/storage.sql there",
            schema.display()
        ))
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], String> {
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("reading /dev/urandom: {e}"))?;
    Ok(bytes)
}

/// A fresh P-256 key (a random scalar; the one-in-2^32 invalid draw is redrawn).
fn new_p256_key() -> Result<p256::ecdsa::SigningKey, String> {
    loop {
        if let Ok(key) = p256::ecdsa::SigningKey::from_slice(&random_bytes::<32>()?) {
            return Ok(key);
        }
    }
}

fn public_key_pem(key: &p256::ecdsa::SigningKey) -> Result<String, String> {
    key.verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| format!("encoding a P-256 public key: {e}"))
}

/// Runs a short-lived program to completion, its output appended to
/// `logs/<name>.log`; its stdout on success.
async fn run_to_completion(
    name: &str,
    program: &Path,
    args: &[String],
    logs: &Path,
) -> Result<String, String> {
    let output = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("running {name} ({}): {e}", program.display()))?;
    let log_path = logs.join(format!("{name}.log"));
    let mut log = std::fs::read(&log_path).unwrap_or_default();
    log.extend_from_slice(format!("$ {} {}\n", program.display(), args.join(" ")).as_bytes());
    log.extend_from_slice(&output.stdout);
    log.extend_from_slice(&output.stderr);
    std::fs::write(&log_path, &log).map_err(|e| format!("writing {}: {e}", log_path.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        return Err(format!(
            "{name} failed ({}); its output ends:\n{}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    String::from_utf8(output.stdout).map_err(|_| format!("{name} printed non-UTF-8 output"))
}

/// An entry Rekor accepted.
#[derive(Clone, Debug)]
pub struct AddedEntry {
    /// Rekor's virtual log index (over all shards).
    pub log_index: u64,
    /// The entry's UUID (the key of Rekor's response object).
    pub uuid: String,
    /// Rekor's answer as it came: a JSON object with one member, keyed by the
    /// UUID, holding body, logIndex, integratedTime, and verification with the
    /// inclusion proof.
    pub answer: Vec<u8>,
}

/// A running Rekor v1 stack.
pub struct RekorV1 {
    rekor: Process,
    log_signer: Process,
    log_server: Process,
    mariadb: Process,
    rekor_addr: SocketAddr,
    public_key_pem: String,
    public_key_path: PathBuf,
    active_tree_id: i64,
    inactive_tree_id: i64,
    startup: Duration,
    http: reqwest::Client,
}

/// Everything the stack's processes are started from.
struct Programs {
    mariadbd: PathBuf,
    mariadb_install_db: PathBuf,
    mariadb: PathBuf,
    schema: PathBuf,
    trillian_log_server: PathBuf,
    trillian_log_signer: PathBuf,
    createtree: PathBuf,
    updatetree: PathBuf,
    rekor_server: PathBuf,
}

impl Programs {
    fn find() -> Result<Programs, String> {
        Ok(Programs {
            mariadbd: system_program("WITNESS_TEST_MARIADBD", "/usr/sbin/mariadbd")?,
            mariadb_install_db: system_program(
                "WITNESS_TEST_MARIADB_INSTALL_DB",
                "/usr/bin/mariadb-install-db",
            )?,
            mariadb: system_program("WITNESS_TEST_MARIADB", "/usr/bin/mariadb")?,
            schema: trillian_schema()?,
            trillian_log_server: go_program("trillian_log_server")?,
            trillian_log_signer: go_program("trillian_log_signer")?,
            createtree: go_program("createtree")?,
            updatetree: go_program("updatetree")?,
            rekor_server: go_program("rekor-server")?,
        })
    }
}

/// `rekor-server serve` arguments for one configuration.
struct RekorArgs<'a> {
    dir: &'a Path,
    addr: SocketAddr,
    signer: &'a Path,
    trillian_rpc: SocketAddr,
    mysql_dsn: &'a str,
    active_tree_id: i64,
    sharding_config: Option<&'a Path>,
}

impl RekorArgs<'_> {
    fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "serve".to_owned(),
            // The default is $HOME/.rekor-server.yaml; HOME is the stack's
            // directory too, but name a file that cannot exist to be sure.
            format!(
                "--config={}",
                self.dir.join("no-rekor-config.yaml").display()
            ),
            format!("--rekor_server.address={}", self.addr.ip()),
            format!("--port={}", self.addr.port()),
            format!("--rekor_server.hostname={HOSTNAME}"),
            format!("--rekor_server.signer={}", self.signer.display()),
            format!("--trillian_log_server.address={}", self.trillian_rpc.ip()),
            format!("--trillian_log_server.port={}", self.trillian_rpc.port()),
            format!("--trillian_log_server.tlog_id={}", self.active_tree_id),
            "--search_index.storage_provider=mysql".to_owned(),
            format!("--search_index.mysql.dsn={}", self.mysql_dsn),
            "--enabled_entry_types=hashedrekord".to_owned(),
            "--log_type=prod".to_owned(),
        ];
        if let Some(config) = self.sharding_config {
            args.push(format!(
                "--trillian_log_server.sharding_config={}",
                config.display()
            ));
        }
        args
    }
}

impl RekorV1 {
    /// Starts the whole stack with its state under `dir` (which must exist) and
    /// the processes' output in `logs/`: MariaDB, Trillian, the frozen shard with
    /// [`INACTIVE_SHARD_ENTRIES`] entries, and Rekor serving the active shard.
    pub async fn start(dir: &Path, logs: &Path) -> Result<RekorV1, String> {
        let started = Instant::now();
        let programs = Programs::find()?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| format!("building an HTTP client: {e}"))?;

        let (mut mariadb, mysql_addr) = start_mariadb(&programs, dir, logs).await?;
        let mysql_dsn = format!("root@tcp({mysql_addr})/{DATABASE}");

        // Trillian: the log server (gRPC API, also the admin API createtree
        // talks to) and the signer, which sequences queued leaves every 100 ms.
        let trillian_rpc = free_loopback_addr()?;
        let storage_args = |rpc: SocketAddr, http: SocketAddr| {
            vec![
                "--storage_system=mysql".to_owned(),
                "--quota_system=noop".to_owned(),
                format!("--mysql_uri={mysql_dsn}"),
                format!("--rpc_endpoint={rpc}"),
                format!("--http_endpoint={http}"),
            ]
        };
        let mut log_server = Process::start(
            "trillian_log_server",
            &programs.trillian_log_server,
            &storage_args(trillian_rpc, free_loopback_addr()?),
            &[],
            logs,
        )?;
        let signer_rpc = free_loopback_addr()?;
        let mut signer_args = storage_args(signer_rpc, free_loopback_addr()?);
        signer_args.extend([
            "--force_master".to_owned(),
            "--sequencer_interval=100ms".to_owned(),
            "--batch_size=100".to_owned(),
        ]);
        let mut log_signer = Process::start(
            "trillian_log_signer",
            &programs.trillian_log_signer,
            &signer_args,
            &[],
            logs,
        )?;
        log_server.wait_listening(trillian_rpc).await?;
        log_signer.wait_listening(signer_rpc).await?;

        // Rekor's signer: a P-256 key in a PKCS#8 PEM file.
        let log_key = new_p256_key()?;
        let signer_path = dir.join("rekor-signer.pem");
        let private_pem = log_key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| format!("encoding the Rekor signer key: {e}"))?;
        std::fs::write(&signer_path, private_pem.as_bytes())
            .map_err(|e| format!("writing {}: {e}", signer_path.display()))?;
        let public_key_pem = public_key_pem(&log_key)?;
        let public_key_path = dir.join("rekor-public.pem");
        std::fs::write(&public_key_path, &public_key_pem)
            .map_err(|e| format!("writing {}: {e}", public_key_path.display()))?;

        let rekor_addr = free_loopback_addr()?;
        let home = dir.join("rekor-home");
        std::fs::create_dir_all(&home).map_err(|e| format!("creating {}: {e}", home.display()))?;
        let rekor_env = [("HOME".to_owned(), home.display().to_string())];

        // Phase 1: the shard-to-be-frozen is Rekor's active tree and gets entries.
        let inactive_tree_id = create_tree(&programs, trillian_rpc, logs).await?;
        let mut first_rekor = Process::start(
            "rekor-server-first-shard",
            &programs.rekor_server,
            &RekorArgs {
                dir,
                addr: rekor_addr,
                signer: &signer_path,
                trillian_rpc,
                mysql_dsn: &mysql_dsn,
                active_tree_id: inactive_tree_id,
                sharding_config: None,
            }
            .to_args(),
            &rekor_env,
            logs,
        )?;
        first_rekor.wait_listening(rekor_addr).await?;
        let url = format!("http://{rekor_addr}");
        for _ in 0..INACTIVE_SHARD_ENTRIES {
            add_hashedrekord(&http, &url).await?;
        }
        first_rekor.stop().await;

        // Phase 2: freeze it, create the active tree, and restart Rekor with the
        // frozen tree as an inactive shard (same signer: its signingConfig is left
        // unset, which Rekor reads as "the active tree's").
        run_to_completion(
            "updatetree",
            &programs.updatetree,
            &[
                format!("--admin_server={trillian_rpc}"),
                format!("--tree_id={inactive_tree_id}"),
                "--tree_state=FROZEN".to_owned(),
            ],
            logs,
        )
        .await?;
        let active_tree_id = create_tree(&programs, trillian_rpc, logs).await?;
        let sharding_config = dir.join("rekor-shards.yaml");
        std::fs::write(
            &sharding_config,
            format!("- treeID: {inactive_tree_id}\n  treeLength: {INACTIVE_SHARD_ENTRIES}\n"),
        )
        .map_err(|e| format!("writing {}: {e}", sharding_config.display()))?;
        let mut rekor = Process::start(
            "rekor-server",
            &programs.rekor_server,
            &RekorArgs {
                dir,
                addr: rekor_addr,
                signer: &signer_path,
                trillian_rpc,
                mysql_dsn: &mysql_dsn,
                active_tree_id,
                sharding_config: Some(&sharding_config),
            }
            .to_args(),
            &rekor_env,
            logs,
        )?;
        rekor.wait_listening(rekor_addr).await?;

        // Keep the processes alive in `self` before anything else can fail.
        mariadb.fail_if_exited()?;
        Ok(RekorV1 {
            rekor,
            log_signer,
            log_server,
            mariadb,
            rekor_addr,
            public_key_pem,
            public_key_path,
            active_tree_id,
            inactive_tree_id,
            startup: started.elapsed(),
            http,
        })
    }

    /// Rekor's base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.rekor_addr)
    }

    /// The note key name of every shard's checkpoints ([`HOSTNAME`]).
    pub fn hostname(&self) -> &str {
        HOSTNAME
    }

    /// The active shard's checkpoint origin, `<hostname> - <treeID>`.
    pub fn origin(&self) -> String {
        format!("{HOSTNAME} - {}", self.active_tree_id)
    }

    /// The frozen shard's checkpoint origin.
    pub fn inactive_origin(&self) -> String {
        format!("{HOSTNAME} - {}", self.inactive_tree_id)
    }

    /// The active shard's Trillian tree ID.
    pub fn active_tree_id(&self) -> i64 {
        self.active_tree_id
    }

    /// The frozen shard's Trillian tree ID.
    pub fn inactive_tree_id(&self) -> i64 {
        self.inactive_tree_id
    }

    /// The log's public key (P-256, PEM SubjectPublicKeyInfo).
    pub fn public_key_pem(&self) -> &str {
        &self.public_key_pem
    }

    /// The file holding [`RekorV1::public_key_pem`], for a witness config.
    pub fn public_key_path(&self) -> &Path {
        &self.public_key_path
    }

    /// How long [`RekorV1::start`] took, from finding the programs to Rekor
    /// serving the active shard.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// Adds a hashedrekord v0.0.1 entry through `POST /api/v1/log/entries`, made
    /// with a throwaway P-256 key over a random artifact; its virtual log index.
    pub async fn add_entry(&self) -> Result<u64, String> {
        Ok(self.add_entry_returning_entry().await?.log_index)
    }

    /// As [`RekorV1::add_entry`], returning Rekor's whole answer.
    pub async fn add_entry_returning_entry(&self) -> Result<AddedEntry, String> {
        add_hashedrekord(&self.http, &self.url()).await
    }

    /// GETs `path` (e.g. `/api/v1/log`) from Rekor: the body of a 200 answer.
    pub async fn get(&self, path: &str) -> Result<Vec<u8>, String> {
        let url = format!("{}{path}", self.url());
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
        if status != reqwest::StatusCode::OK {
            return Err(format!(
                "GET {url}: {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        Ok(body.to_vec())
    }

    /// Stops rekor-server and starts it again with the same configuration,
    /// waiting until it serves.
    pub async fn restart_rekor_server(&mut self) -> Result<(), String> {
        self.rekor.stop().await;
        self.rekor.restart()?;
        self.rekor.wait_listening(self.rekor_addr).await
    }

    /// Stops every process: Rekor and Trillian together (Trillian's servers
    /// sleep a fixed 5 s on their way out), then MariaDB under them.
    pub async fn stop(&mut self) {
        tokio::join!(
            self.rekor.stop(),
            self.log_signer.stop(),
            self.log_server.stop()
        );
        self.mariadb.stop().await;
    }
}

/// `mariadb-install-db` into `dir/mariadb`, then `mariadbd` on a free loopback
/// port (no grant tables: any user, no password, loopback only), then the
/// database with Trillian's schema loaded through the `mariadb` client. The
/// server and its address.
async fn start_mariadb(
    programs: &Programs,
    dir: &Path,
    logs: &Path,
) -> Result<(Process, SocketAddr), String> {
    let data = dir.join("mariadb");
    let tmp = dir.join("mariadb-tmp");
    for d in [&data, &tmp] {
        std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    // mariadbd refuses to run as root unless told to; as another user the
    // option is ignored.
    let as_root = rustix::process::geteuid().is_root();
    let mut install_args = vec![
        "--no-defaults".to_owned(),
        format!("--datadir={}", data.display()),
        "--auth-root-authentication-method=normal".to_owned(),
        "--skip-test-db".to_owned(),
        "--skip-name-resolve".to_owned(),
        // Passed on to the bootstrap server. Its own temporary directory, not
        // /tmp: a starting server deletes every `#sql*` file in its tmpdir,
        // so a concurrent install (the other test of the file) removed this
        // one's temporary tables and the bootstrap aborted with
        // "Unknown table 'mysql.tmp_user_sys'".
        format!("--tmpdir={}", tmp.display()),
    ];
    if as_root {
        install_args.push("--user=root".to_owned());
    }
    run_to_completion(
        "mariadb-install-db",
        &programs.mariadb_install_db,
        &install_args,
        logs,
    )
    .await?;

    let addr = free_loopback_addr()?;
    let mut args = vec![
        // --no-defaults must come first: no /etc/mysql configuration at all.
        "--no-defaults".to_owned(),
        format!("--datadir={}", data.display()),
        format!("--tmpdir={}", tmp.display()),
        format!("--socket={}", dir.join("mariadb.sock").display()),
        format!("--pid-file={}", dir.join("mariadb.pid").display()),
        format!("--bind-address={}", addr.ip()),
        format!("--port={}", addr.port()),
        "--skip-grant-tables".to_owned(),
        "--skip-name-resolve".to_owned(),
        // A test database: durability per transaction buys nothing here.
        "--innodb-flush-log-at-trx-commit=0".to_owned(),
        "--innodb-buffer-pool-size=32M".to_owned(),
    ];
    if as_root {
        args.push("--user=root".to_owned());
    }
    let mut mariadb = Process::start("mariadbd", &programs.mariadbd, &args, &[], logs)?;
    mariadb.wait_listening(addr).await?;

    let client_args = |statement: String| {
        vec![
            "--no-defaults".to_owned(),
            "--protocol=TCP".to_owned(),
            format!("--host={}", addr.ip()),
            format!("--port={}", addr.port()),
            "--user=root".to_owned(),
            format!("--execute={statement}"),
        ]
    };
    let statement = format!(
        "CREATE DATABASE {DATABASE}; USE {DATABASE}; SOURCE {};",
        programs.schema.display()
    );
    // The port may accept connections a moment before the server is ready.
    let deadline = Instant::now() + crate::process::START_TIMEOUT;
    loop {
        match run_to_completion(
            "mariadb",
            &programs.mariadb,
            &client_args(statement.clone()),
            logs,
        )
        .await
        {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(e) if e.contains("database exists") => return Err(e),
            Err(_) => {
                mariadb.fail_if_exited()?;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Ok((mariadb, addr))
}

/// `createtree`: a new ACTIVE log tree that never signs roots on a timer; its ID.
async fn create_tree(
    programs: &Programs,
    trillian_rpc: SocketAddr,
    logs: &Path,
) -> Result<i64, String> {
    let stdout = run_to_completion(
        "createtree",
        &programs.createtree,
        &[
            format!("--admin_server={trillian_rpc}"),
            "--max_root_duration=0".to_owned(),
        ],
        logs,
    )
    .await?;
    stdout
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| format!("createtree printed no tree ID: {stdout:?}"))
}

/// A hashedrekord v0.0.1 request for a random artifact, signed with a fresh
/// P-256 key (ECDSA over the artifact's SHA-256 digest, DER signature).
fn hashedrekord_request() -> Result<Vec<u8>, String> {
    let artifact = random_bytes::<64>()?;
    let digest = Sha256::digest(artifact);
    let key = new_p256_key()?;
    let signature: p256::ecdsa::Signature = key
        .sign_prehash(&digest)
        .map_err(|e| format!("signing the artifact digest: {e}"))?;
    let body = serde_json::json!({
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": hex::encode(digest)}},
            "signature": {
                "content": BASE64.encode(signature.to_der().as_bytes()),
                "publicKey": {"content": BASE64.encode(public_key_pem(&key)?)},
            },
        },
    });
    serde_json::to_vec(&body).map_err(|e| format!("encoding the entry: {e}"))
}

async fn add_hashedrekord(http: &reqwest::Client, base_url: &str) -> Result<AddedEntry, String> {
    let url = format!("{base_url}/api/v1/log/entries");
    let response = http
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(hashedrekord_request()?)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("POST {url}: reading the answer: {e}"))?;
    if status != reqwest::StatusCode::CREATED {
        return Err(format!(
            "POST {url}: {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let answer: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&body)
        .map_err(|e| format!("POST {url}: the answer is not a JSON object: {e}"))?;
    let mut entries = answer.into_iter();
    let (Some((uuid, entry)), None) = (entries.next(), entries.next()) else {
        return Err(format!(
            "POST {url}: the answer holds not exactly one entry"
        ));
    };
    let log_index = entry
        .get("logIndex")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| format!("POST {url}: the entry has no logIndex"))?;
    Ok(AddedEntry {
        log_index,
        uuid,
        answer: body.to_vec(),
    })
}
