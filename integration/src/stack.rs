//! Our witness as it is deployed: `signer-svc`, `rekor-witness serve` and
//! `rekor-witness-gateway` as three real processes talking mutual TLS on
//! loopback, configured by [`witness_core::service::dev_stack`] (development
//! CA, file keys, SQLite state, local archive). The gateway serves plain HTTP
//! on loopback; the logs under test push to it or are pulled by the witness.

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
        match self {
            Service::Signer => 0,
            Service::Witness => 1,
            Service::Gateway => 2,
        }
    }
}

/// The running stack.
pub struct Stack {
    dir: PathBuf,
    artifacts: PathBuf,
    addrs: StackAddrs,
    material: Material,
    vkey: String,
    /// Signer, witness, gateway.
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
        let dir = artifacts.join("stack");
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let material = Material::load_or_generate(&dir)?;
        let addrs = StackAddrs {
            signer: free_loopback_addr()?,
            witness: free_loopback_addr()?,
            gateway: free_loopback_addr()?,
        };
        let configs = write_configs(
            &dir,
            &material,
            &addrs,
            WITNESS_NAME,
            &format!("poll_interval = \"1s\"\n\n{logs_toml}"),
        )?;
        let vkey = VerifierKey::from_material(
            WITNESS_NAME,
            SignatureType::CosignatureV1,
            &material.cosigning_public_key()?,
        )
        .map_err(|e| format!("witness key: {e}"))?
        .to_vkey();
        let binaries = Binaries::locate()?;
        let config_arg = |path: &Path| vec!["--config".to_owned(), path.display().to_string()];
        let mut serve_witness = vec!["serve".to_owned()];
        serve_witness.extend(config_arg(&configs.witness));
        let mut serve_signer = vec!["serve".to_owned()];
        serve_signer.extend(config_arg(&configs.signer));
        let env = [("RUST_LOG".to_owned(), "info".to_owned())];
        let mut processes = Vec::new();
        for (service, program, args, addr) in [
            ("signer", &binaries.signer, serve_signer, addrs.signer),
            ("witness", &binaries.witness, serve_witness, addrs.witness),
            (
                "gateway",
                &binaries.gateway,
                config_arg(&configs.gateway),
                addrs.gateway,
            ),
        ] {
            let mut process = Process::start(service, program, &args, &env, artifacts)?;
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
            addrs,
            material,
            vkey,
            processes,
            http,
        };
        stack.wait_ready().await?;
        Ok(stack)
    }

    /// The gateway's base URL (`http://127.0.0.1:PORT`): the tlog-witness API,
    /// the monitoring paths, `/logs`, `/metrics`, `/readyz`.
    pub fn gateway_url(&self) -> String {
        format!("http://{}", self.addrs.gateway)
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
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.get_text("/readyz").await {
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

    /// SIGTERMs `service`; whether it exited cleanly (status 0).
    pub async fn stop_service(&mut self, service: Service) -> bool {
        self.processes[service.index()].stop().await
    }

    /// Starts a stopped or killed `service` again and waits until it listens.
    pub async fn restart(&mut self, service: Service) -> Result<(), String> {
        let addr = match service {
            Service::Signer => self.addrs.signer,
            Service::Witness => self.addrs.witness,
            Service::Gateway => self.addrs.gateway,
        };
        let process = &mut self.processes[service.index()];
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
