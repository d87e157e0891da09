//! A real Rekor v2: sigstore/rekor-tiles' POSIX server (`rekor-tiles-server`,
//! built by `scripts/go-peers`), with an Ed25519 file signer and its storage in
//! the test's directory. The program does not serve reads, so its tlog-tiles
//! files are served over HTTP here (`tower-http`'s static file service), as a
//! CDN or bucket in front of the storage would. Entries are hashedrekord
//! v0.0.2 entries made with a throwaway P-256 key and added through its real
//! write API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use witness_core::note::{SignatureType, VerifierKey};

use crate::process::{Process, free_loopback_addr};

/// A peer in the log's witness policy: rekor-tiles requires a cosignature
/// from each before it publishes (and publishes anyway if one is missing: its
/// witnessing is fail-open).
pub struct PolicyWitness {
    /// A short name for the policy file.
    pub name: String,
    /// The witness's cosignature vkey.
    pub vkey: String,
    /// Its base URL (rekor-tiles POSTs to `<url>/add-checkpoint`).
    pub url: String,
}

/// The running log.
pub struct RekorTiles {
    origin: String,
    vkey: String,
    storage: PathBuf,
    write_addr: SocketAddr,
    read_addr: SocketAddr,
    process: Process,
    reads: tokio::task::JoinHandle<()>,
    http: reqwest::Client,
}

/// A log whose key, directories and addresses exist but whose server does
/// not run yet: its vkey and read URL can go into the witnesses' configuration
/// before it starts pushing to them.
pub struct PreparedRekorTiles {
    origin: String,
    vkey: String,
    dir: PathBuf,
    key_path: PathBuf,
    storage: PathBuf,
    write_addr: SocketAddr,
    reads: std::net::TcpListener,
}

impl PreparedRekorTiles {
    /// The log's Ed25519 vkey.
    pub fn vkey(&self) -> &str {
        &self.vkey
    }

    /// The checkpoint origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The tlog-tiles read URL (ends in `/`).
    pub fn tiles_url(&self) -> Result<String, String> {
        let addr = self
            .reads
            .local_addr()
            .map_err(|e| format!("read listener: {e}"))?;
        Ok(format!("http://{addr}/"))
    }

    /// Starts the server (its output in `logs/<name>.log`) and the read
    /// service, requiring cosignatures from every witness in `witnesses`
    /// (none: no witnessing).
    pub async fn start(
        self,
        name: &str,
        logs: &Path,
        witnesses: &[PolicyWitness],
    ) -> Result<RekorTiles, String> {
        let grpc_addr = free_loopback_addr()?;
        let metrics_addr = free_loopback_addr()?;
        let mut args: Vec<String> = [
            "serve",
            "--hostname",
            &self.origin,
            "--http-address",
            "127.0.0.1",
            "--grpc-address",
            "127.0.0.1",
            "--checkpoint-interval",
            "1s",
            "--batch-max-age",
            "50ms",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend([
            "--http-port".to_owned(),
            self.write_addr.port().to_string(),
            "--grpc-port".to_owned(),
            grpc_addr.port().to_string(),
            "--http-metrics-port".to_owned(),
            metrics_addr.port().to_string(),
            "--storage-dir".to_owned(),
            self.storage.display().to_string(),
            "--signer-filepath".to_owned(),
            self.key_path.display().to_string(),
        ]);
        if !witnesses.is_empty() {
            let policy = self.dir.join("witness-policy.txt");
            std::fs::write(&policy, witness_policy(witnesses))
                .map_err(|e| format!("writing {}: {e}", policy.display()))?;
            args.extend([
                "--witness-policy-path".to_owned(),
                policy.display().to_string(),
            ]);
        }
        let program = crate::go_program("rekor-tiles-server")?;
        let mut process = Process::start(name, &program, &args, &[], logs)?;
        process.wait_listening(self.write_addr).await?;

        self.reads
            .set_nonblocking(true)
            .map_err(|e| format!("read listener: {e}"))?;
        let read_addr = self
            .reads
            .local_addr()
            .map_err(|e| format!("read listener: {e}"))?;
        let listener = tokio::net::TcpListener::from_std(self.reads)
            .map_err(|e| format!("read listener: {e}"))?;
        let files = axum::Router::new()
            .fallback_service(tower_http::services::ServeDir::new(&self.storage));
        let reads = tokio::spawn(async move {
            let _ = axum::serve(listener, files).await;
        });
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(RekorTiles {
            origin: self.origin,
            vkey: self.vkey,
            storage: self.storage,
            write_addr: self.write_addr,
            read_addr,
            process,
            reads,
            http,
        })
    }
}

impl RekorTiles {
    /// Makes the key (a fresh Ed25519 key, PKCS#8 PEM) and directories of a
    /// log named `origin` (its `--hostname`) under `dir`, and reserves its
    /// addresses.
    pub fn prepare(origin: &str, dir: &Path) -> Result<PreparedRekorTiles, String> {
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage)
            .map_err(|e| format!("creating {}: {e}", storage.display()))?;
        let key = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let key_path = dir.join("log-ed25519.pem");
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| format!("encoding the log key: {e}"))?;
        std::fs::write(&key_path, pem.as_bytes())
            .map_err(|e| format!("writing {}: {e}", key_path.display()))?;
        let vkey = VerifierKey::from_material(
            origin,
            SignatureType::Ed25519,
            key.verifying_key().as_bytes(),
        )
        .map_err(|e| format!("log key: {e}"))?
        .to_vkey();
        let reads = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| format!("binding the read listener: {e}"))?;
        Ok(PreparedRekorTiles {
            origin: origin.to_owned(),
            vkey,
            dir: dir.to_path_buf(),
            key_path,
            storage,
            write_addr: free_loopback_addr()?,
            reads,
        })
    }

    /// The checkpoint origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The log's Ed25519 vkey.
    pub fn vkey(&self) -> &str {
        &self.vkey
    }

    /// The tlog-tiles read URL (ends in `/`).
    pub fn tiles_url(&self) -> String {
        format!("http://{}/", self.read_addr)
    }

    /// The storage directory (`checkpoint`, `tile/...`).
    pub fn storage(&self) -> &Path {
        &self.storage
    }

    /// The currently published checkpoint (with whatever cosignatures the
    /// policy's witnesses gave), if any.
    pub fn published_checkpoint(&self) -> Option<String> {
        std::fs::read_to_string(self.storage.join("checkpoint")).ok()
    }

    /// Adds a hashedrekord v0.0.2 entry for a fresh random artifact through
    /// `POST /api/v2/log/entries`; its log index. The call returns once the
    /// entry is integrated.
    pub async fn add_entry(&self) -> Result<u64, String> {
        use p256::ecdsa::signature::Signer as _;
        use sha2::Digest as _;
        let artifact = rand::random::<[u8; 32]>();
        let key = p256::ecdsa::SigningKey::from_slice(&rand::random::<[u8; 32]>())
            .map_err(|e| format!("throwaway key: {e}"))?;
        let signature: p256::ecdsa::Signature = key.sign(&artifact);
        let spki = key
            .verifying_key()
            .to_public_key_der()
            .map_err(|e| format!("throwaway key: {e}"))?;
        let request = serde_json::json!({
            "hashedRekordRequestV002": {
                "digest": B64.encode(sha2::Sha256::digest(artifact)),
                "signature": {
                    "content": B64.encode(signature.to_der().as_bytes()),
                    "verifier": {
                        "publicKey": { "rawBytes": B64.encode(spki.as_bytes()) },
                        "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    },
                },
            },
        });
        let response = self
            .http
            .post(format!("http://{}/api/v2/log/entries", self.write_addr))
            .header("content-type", "application/json")
            .body(request.to_string())
            .send()
            .await
            .map_err(|e| format!("adding an entry to {}: {e}", self.origin))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("adding an entry to {}: {e}", self.origin))?;
        if !status.is_success() {
            return Err(format!(
                "adding an entry to {}: HTTP {status}: {}",
                self.origin,
                String::from_utf8_lossy(&bytes)
            ));
        }
        let body: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("adding an entry to {}: {e}", self.origin))?;
        body["logIndex"]
            .as_str()
            .and_then(|index| index.parse().ok())
            .or_else(|| body["logIndex"].as_u64())
            .ok_or_else(|| format!("adding an entry to {}: no logIndex in {body}", self.origin))
    }

    /// Waits until the published checkpoint has size >= `min_size` and
    /// carries a signature line from every key name in `cosigners`.
    pub async fn wait_published(
        &self,
        min_size: u64,
        cosigners: &[&str],
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(text) = self.published_checkpoint() {
                let size_ok = crate::stack::checkpoint_size(&text).is_some_and(|s| s >= min_size);
                let signed = cosigners
                    .iter()
                    .all(|name| text.lines().any(|l| l.starts_with(&format!("— {name} "))));
                if size_ok && signed {
                    return Ok(text);
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "{}: no published checkpoint at size >= {min_size} cosigned by {cosigners:?} \
                         within {timeout:?}; the last:\n{text}\nits output ends:\n{}",
                        self.origin,
                        self.process.log_tail(20)
                    ));
                }
            } else if Instant::now() > deadline {
                return Err(format!("{}: nothing published", self.origin));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the log and its file server.
    pub async fn stop(mut self) {
        self.reads.abort();
        self.process.stop().await;
    }
}

/// The C2SP tlog-policy (Sigsum policy syntax) requiring every witness.
fn witness_policy(witnesses: &[PolicyWitness]) -> String {
    let mut policy = String::new();
    for witness in witnesses {
        policy.push_str(&format!(
            "witness {} {} {}\n",
            witness.name, witness.vkey, witness.url
        ));
    }
    let names: Vec<&str> = witnesses.iter().map(|w| w.name.as_str()).collect();
    if names.len() == 1 {
        policy.push_str(&format!("quorum {}\n", names[0]));
    } else {
        policy.push_str(&format!(
            "group required all {}\nquorum required\n",
            names.join(" ")
        ));
    }
    policy
}
