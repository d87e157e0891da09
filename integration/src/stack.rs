//! Our witness as it is deployed: `signer-svc`, `rekor-witness serve` and
//! `rekor-witness-gateway` as three real processes talking mutual TLS on
//! loopback, configured by [`witness_core::service::dev_stack`] (development
//! CA, file keys, SQLite state, local archive). The gateway serves plain HTTP
//! on loopback; the logs under test push to it or are pulled by the witness.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use witness_core::note::{SignatureType, VerifierKey};
use witness_core::service::dev_stack::{Material, StackAddrs, write_configs};

use crate::process::{Process, free_loopback_addr};

/// The witness name in our cosignature lines.
pub const WITNESS_NAME: &str = "rekor-witness.integration.test";

/// One of our three services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Signer,
    Witness,
    Gateway,
}

impl Service {
    /// All three, in start order.
    pub const ALL: [Service; 3] = [Service::Signer, Service::Witness, Service::Gateway];

    fn index(self) -> usize {
        self.index_of(0)
    }

    /// Its process's index in [`Stack`]`::processes` for replica `replica`
    /// (the signer is shared by all replicas).
    fn index_of(self, replica: usize) -> usize {
        match self {
            Service::Signer => 0,
            Service::Witness => 1 + 2 * replica,
            Service::Gateway => 2 + 2 * replica,
        }
    }
}

/// How [`Stack::start_with`] deploys the stack beyond the defaults of
/// [`Stack::start`] (SQLite state, one witness, one gateway).
#[derive(Clone, Debug)]
pub struct StackOptions {
    /// A `postgres://` URL for the witness state instead of the SQLite file
    /// `witness/state.db`; every replica shares it.
    pub postgres_state: Option<String>,
    /// How many `rekor-witness serve` replicas run, each with a gateway of its
    /// own in front (the gateway forwards to one witness endpoint), its own
    /// archive spool and its own archive directory. At least 1.
    pub replicas: usize,
    /// TOML appended to every gateway's configuration (e.g. `[limits]`).
    pub gateway_extra: String,
}

impl Default for StackOptions {
    fn default() -> StackOptions {
        StackOptions {
            postgres_state: None,
            replicas: 1,
            gateway_extra: String::new(),
        }
    }
}

/// The running stack.
pub struct Stack {
    dir: PathBuf,
    artifacts: PathBuf,
    addrs: StackAddrs,
    /// Replica `r`'s witness and gateway addresses (replica 0's are also in
    /// `addrs`).
    replica_addrs: Vec<(SocketAddr, SocketAddr)>,
    /// Replica `r`'s data directory (replica 0's is `dir`).
    replica_dirs: Vec<PathBuf>,
    material: Material,
    vkey: String,
    /// Signer, then each replica's witness and gateway.
    processes: Vec<Process>,
    http: reqwest::Client,
}

impl Stack {
    /// Starts the three services with the witness trusting the logs in
    /// `logs_toml` (`[[log]]` tables, see the witness configuration reference;
    /// the witness polls pulled logs every second). Data goes to
    /// `target/e2e/<name>/stack/`, each service's output to
    /// `target/e2e/<name>/<service>.log`.
    pub async fn start(name: &str, logs_toml: &str) -> Result<Stack, String> {
        let artifacts = crate::artifacts_dir(name)?;
        Stack::start_in(&artifacts, logs_toml).await
    }

    /// [`Stack::start`] with an artifacts directory the caller made (for tests
    /// that put more than the stack there).
    pub async fn start_in(artifacts: &Path, logs_toml: &str) -> Result<Stack, String> {
        Stack::start_with(artifacts, logs_toml, &StackOptions::default()).await
    }

    /// The data directory ([`Stack::dir`]) of a stack started in `artifacts`.
    pub fn dir_in(artifacts: &Path) -> PathBuf {
        artifacts.join("stack")
    }

    /// [`Stack::start_in`] deployed as `options` say: replica `r > 0` keeps
    /// its configuration and archive under `stack/replica-<r>/`, and its
    /// output goes to `witness-<r>.log` and `gateway-<r>.log`.
    pub async fn start_with(
        artifacts: &Path,
        logs_toml: &str,
        options: &StackOptions,
    ) -> Result<Stack, String> {
        let replicas = options.replicas.max(1);
        let dir = Stack::dir_in(artifacts);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let material = Material::load_or_generate(&dir)?;
        let signer_addr = free_loopback_addr()?;
        let mut replica_addrs = Vec::new();
        let mut replica_dirs = Vec::new();
        let mut replica_configs = Vec::new();
        for replica in 0..replicas {
            let replica_dir = if replica == 0 {
                dir.clone()
            } else {
                dir.join(format!("replica-{replica}"))
            };
            let addrs = StackAddrs {
                signer: signer_addr,
                witness: free_loopback_addr()?,
                gateway: free_loopback_addr()?,
            };
            // Replica r > 0 also gets a signer configuration of its own, which
            // nothing runs: every witness uses replica 0's signer.
            let configs = write_configs(
                &replica_dir,
                &material,
                &addrs,
                WITNESS_NAME,
                &format!("poll_interval = \"1s\"\n\n{logs_toml}"),
            )?;
            if let Some(url) = &options.postgres_state {
                point_state_at(&configs.witness, url)?;
            }
            if !options.gateway_extra.is_empty() {
                append_to(&configs.gateway, &options.gateway_extra)?;
            }
            replica_addrs.push((addrs.witness, addrs.gateway));
            replica_dirs.push(replica_dir);
            replica_configs.push(configs);
        }
        let vkey = VerifierKey::from_material(
            WITNESS_NAME,
            SignatureType::CosignatureV1,
            &material.cosigning_public_key()?,
        )
        .map_err(|e| format!("witness key: {e}"))?
        .to_vkey();
        let binaries = Binaries::locate()?;
        let config_arg = |path: &Path| vec!["--config".to_owned(), path.display().to_string()];
        let mut serve_signer = vec!["serve".to_owned()];
        serve_signer.extend(config_arg(&replica_configs[0].signer));
        let env = [("RUST_LOG".to_owned(), "info".to_owned())];
        let mut to_start = vec![(
            "signer".to_owned(),
            &binaries.signer,
            serve_signer,
            signer_addr,
        )];
        for (replica, (configs, &(witness_addr, gateway_addr))) in
            replica_configs.iter().zip(&replica_addrs).enumerate()
        {
            let suffix = if replica == 0 {
                String::new()
            } else {
                format!("-{replica}")
            };
            let mut serve_witness = vec!["serve".to_owned()];
            serve_witness.extend(config_arg(&configs.witness));
            to_start.push((
                format!("witness{suffix}"),
                &binaries.witness,
                serve_witness,
                witness_addr,
            ));
            to_start.push((
                format!("gateway{suffix}"),
                &binaries.gateway,
                config_arg(&configs.gateway),
                gateway_addr,
            ));
        }
        let mut processes = Vec::new();
        for (service, program, args, addr) in to_start {
            let mut process = Process::start(&service, program, &args, &env, artifacts)?;
            process.wait_listening(addr).await?;
            processes.push(process);
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let stack = Stack {
            dir,
            artifacts: artifacts.to_path_buf(),
            addrs: StackAddrs {
                signer: signer_addr,
                witness: replica_addrs[0].0,
                gateway: replica_addrs[0].1,
            },
            replica_addrs,
            replica_dirs,
            material,
            vkey,
            processes,
            http,
        };
        for replica in 0..replicas {
            stack.wait_ready_at(&stack.gateway_url_of(replica)).await?;
        }
        Ok(stack)
    }

    /// The gateway's base URL (`http://127.0.0.1:PORT`): the tlog-witness API,
    /// the monitoring paths, `/logs`, `/metrics`, `/readyz`.
    pub fn gateway_url(&self) -> String {
        format!("http://{}", self.addrs.gateway)
    }

    /// Replica `replica`'s gateway base URL (replica 0's is [`Stack::gateway_url`]).
    pub fn gateway_url_of(&self, replica: usize) -> String {
        match self.replica_addrs.get(replica) {
            Some((_, gateway)) => format!("http://{gateway}"),
            None => self.gateway_url(),
        }
    }

    /// How many witness replicas (each with its gateway) run.
    pub fn replicas(&self) -> usize {
        self.replica_addrs.len()
    }

    /// Replica `replica`'s data directory: its `config/`, `archive/` and
    /// `archive-spool/` (replica 0's is [`Stack::dir`], which also holds the
    /// signer's data).
    pub fn replica_dir(&self, replica: usize) -> &Path {
        self.replica_dirs
            .get(replica)
            .map(PathBuf::as_path)
            .unwrap_or(&self.dir)
    }

    /// The witness's cosignature verifier key.
    pub fn witness_vkey(&self) -> &str {
        &self.vkey
    }

    /// The stack's data directory (`witness/state.db`, `archive/`,
    /// `signer/`, `config/`, `pki/`, `keys/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the services' output goes.
    pub fn artifacts(&self) -> &Path {
        &self.artifacts
    }

    /// The archive manifest key's public half (PEM file of the P-256 key).
    pub fn manifest_key_path(&self) -> &Path {
        &self.material.manifest_key
    }

    /// An HTTP client for the gateway.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `GET /metrics` through the gateway.
    pub async fn metrics(&self) -> Result<String, String> {
        self.get_text("/metrics").await.map(|(_, text)| text)
    }

    /// `GET <gateway><path>`: the status and the body.
    pub async fn get_text(&self, path: &str) -> Result<(u16, String), String> {
        let response = self
            .http
            .get(format!("{}{path}", self.gateway_url()))
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        Ok((status, text))
    }

    /// The latest checkpoint the witness cosigned for `origin`, from the
    /// gateway's monitoring path, or `None` before the first cosignature.
    pub async fn cosigned_checkpoint(&self, origin: &str) -> Result<Option<String>, String> {
        use sha2::Digest as _;
        let hash = hex::encode(sha2::Sha256::digest(origin.as_bytes()));
        let (status, text) = self.get_text(&format!("/{hash}/checkpoint")).await?;
        match status {
            200 => Ok(Some(text)),
            404 => Ok(None),
            other => Err(format!("monitoring path of {origin}: HTTP {other}: {text}")),
        }
    }

    /// Waits until the witness has cosigned a checkpoint of `origin` at a size
    /// of at least `min_size`; the cosigned checkpoint.
    pub async fn wait_cosigned(
        &self,
        origin: &str,
        min_size: u64,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(text) = self.cosigned_checkpoint(origin).await? {
                let size = checkpoint_size(&text);
                if size.is_some_and(|size| size >= min_size) {
                    return Ok(text);
                }
                last = Some(text);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no cosigned checkpoint of {origin} at size >= {min_size} within {timeout:?} \
                     (last: {last:?}); witness output ends:\n{}",
                    self.processes[Service::Witness.index()].log_tail(20)
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits for `/readyz` to answer 200 (the store and the signer reachable).
    pub async fn wait_ready(&self) -> Result<(), String> {
        self.wait_ready_at(&self.gateway_url()).await
    }

    /// [`Stack::wait_ready`] through the gateway at `gateway_url`.
    pub async fn wait_ready_at(&self, gateway_url: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let readyz = format!("{gateway_url}/readyz");
        loop {
            let answer = match self.http.get(&readyz).send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    response
                        .text()
                        .await
                        .map(|text| (status, text))
                        .map_err(|e| format!("GET {readyz}: {e}"))
                }
                Err(e) => Err(format!("GET {readyz}: {e}")),
            };
            match answer {
                Ok((200, _)) => return Ok(()),
                Ok((status, text)) if Instant::now() > deadline => {
                    return Err(format!("/readyz: HTTP {status}: {text}"));
                }
                Err(e) if Instant::now() > deadline => return Err(e),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// SIGKILLs `service`, as a crash would.
    pub async fn kill(&mut self, service: Service) {
        self.processes[service.index()].kill().await;
    }

    /// SIGKILLs replica `replica`'s `service` (the signer is shared).
    pub async fn kill_replica(&mut self, service: Service, replica: usize) -> Result<(), String> {
        let index = service.index_of(replica);
        let process = self
            .processes
            .get_mut(index)
            .ok_or_else(|| format!("no {service:?} of replica {replica}"))?;
        process.kill().await;
        Ok(())
    }

    /// The process ID of `service` (replica 0's), while it runs.
    pub fn pid(&self, service: Service) -> Option<u32> {
        self.processes[service.index()].id()
    }

    /// Sets an environment variable of `service` (replica 0's) for its next
    /// [`Stack::restart`] (e.g. a fake clock for the signer).
    pub fn set_env(&mut self, service: Service, key: &str, value: &str) {
        self.processes[service.index()].set_env(key, value);
    }

    /// SIGTERMs `service`; whether it exited cleanly (status 0).
    pub async fn stop_service(&mut self, service: Service) -> bool {
        self.processes[service.index()].stop().await
    }

    /// Starts a stopped or killed `service` again and waits until it listens.
    pub async fn restart(&mut self, service: Service) -> Result<(), String> {
        self.restart_replica(service, 0).await
    }

    /// [`Stack::restart`] of replica `replica`'s `service`.
    pub async fn restart_replica(
        &mut self,
        service: Service,
        replica: usize,
    ) -> Result<(), String> {
        let (witness, gateway) = *self
            .replica_addrs
            .get(replica)
            .ok_or_else(|| format!("no replica {replica}"))?;
        let addr = match service {
            Service::Signer => self.addrs.signer,
            Service::Witness => witness,
            Service::Gateway => gateway,
        };
        let process = self
            .processes
            .get_mut(service.index_of(replica))
            .ok_or_else(|| format!("no {service:?} of replica {replica}"))?;
        process.restart()?;
        process.wait_listening(addr).await
    }

    /// An error naming any service that has exited.
    pub fn check_running(&mut self) -> Result<(), String> {
        for process in &mut self.processes {
            process.fail_if_exited()?;
        }
        Ok(())
    }

    /// SIGTERM to the gateway, the witness, then the signer; whether all three
    /// exited cleanly.
    pub async fn stop(mut self) -> bool {
        let mut clean = true;
        while let Some(mut process) = self.processes.pop() {
            clean &= process.stop().await;
        }
        clean
    }
}

/// Replaces the `state = ...` line of the witness configuration at `path`
/// with `url`.
fn point_state_at(path: &Path, url: &str) -> Result<(), String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mut replaced = false;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            if !replaced && line.starts_with("state = ") {
                replaced = true;
                format!(
                    "state = {}",
                    witness_core::service::dev_stack::toml_string(url)
                )
            } else {
                line.to_owned()
            }
        })
        .collect();
    if !replaced {
        return Err(format!("no `state = ` line in {}", path.display()));
    }
    std::fs::write(path, lines.join("\n") + "\n")
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Appends `extra` to the file at `path`.
fn append_to(path: &Path, extra: &str) -> Result<(), String> {
    let mut text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    text.push('\n');
    text.push_str(extra);
    text.push('\n');
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Our operator CLI, `rekor-witness`, as cargo built it beside the tests.
pub fn rekor_witness_binary() -> Result<PathBuf, String> {
    Binaries::locate().map(|binaries| binaries.witness)
}

/// The tree size line of a checkpoint's text.
pub fn checkpoint_size(text: &str) -> Option<u64> {
    text.lines().nth(1)?.parse().ok()
}

/// Our three programs, as cargo built them into this test's target directory
/// (`cargo test --workspace` builds every package's binaries); built here with
/// `cargo build` when missing.
struct Binaries {
    signer: PathBuf,
    witness: PathBuf,
    gateway: PathBuf,
}

impl Binaries {
    fn locate() -> Result<Binaries, String> {
        // The test executable is target/<profile>/deps/<test>-<hash>.
        let exe = std::env::current_exe().map_err(|e| format!("this executable: {e}"))?;
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .ok_or("the test executable has no profile directory")?
            .to_path_buf();
        let binaries = Binaries {
            signer: profile_dir.join("signer-svc"),
            witness: profile_dir.join("rekor-witness"),
            gateway: profile_dir.join("rekor-witness-gateway"),
        };
        let missing = |b: &Binaries| {
            ![&b.signer, &b.witness, &b.gateway]
                .iter()
                .all(|p| p.is_file())
        };
        if missing(&binaries) {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = std::process::Command::new(cargo)
                .current_dir(crate::repo_root())
                .args([
                    "build",
                    "--bin",
                    "signer-svc",
                    "--bin",
                    "rekor-witness",
                    "--bin",
                    "rekor-witness-gateway",
                ])
                .status()
                .map_err(|e| format!("running cargo build: {e}"))?;
            if !status.success() || missing(&binaries) {
                return Err(format!(
                    "signer-svc, rekor-witness and rekor-witness-gateway must be in {} \
                     (cargo build: {status})",
                    profile_dir.display()
                ));
            }
        }
        Ok(binaries)
    }
}
