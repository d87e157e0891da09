//! Real components for the archive tests: the signer service built in-process
//! from a configuration with file keys (the real `SignManifest` and
//! `CosignCheckpoint` code, called as the gRPC layer calls it), a moto S3
//! server as a child process, and readers of what an archive stored.
//!
//! moto comes from the venv `scripts/python-env` creates (`scripts/test` runs
//! it and exports `WITNESS_TEST_PYTHON`); without it the S3 tests fail.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::TryStreamExt as _;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::{ObjectStore, ObjectStoreExt as _};
use sha2::{Digest as _, Sha256};
use signer_svc::keys::Algorithm;
use signer_svc::keys::file::generate_pkcs8_pem;
use signer_svc::service::SignerService;
use signer_svc::tls::PeerIdentity;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use witness_core::checkpoint::Checkpoint;
use witness_core::merkle::Hash;
use witness_core::service::archive::{
    Archive, ArchiveConfig, ArchiveSubmitter, ArchivedCheckpoint, ManifestSigner, ManifestSubject,
    ManifestVerifier, verify_manifest,
};
use witness_core::service::metrics::WitnessMetrics;
use witness_core::{Error, Result};
use witness_proto::signer as pb;
use witness_proto::signer::signer_server::Signer as _;

/// The witness name written into manifests.
pub const WITNESS: &str = "witness.example/archive-test";
/// The identity the signer allows; requests carry it as a verified peer.
const CALLER: &str = "uri:spiffe://witness/core";

/// The real signer service, with its keys in a temporary directory.
pub struct TestSigner {
    service: Arc<SignerService>,
    _dir: tempfile::TempDir,
}

fn key_file(dir: &Path, name: &str, algorithm: Algorithm) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, generate_pkcs8_pem(algorithm).unwrap()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

impl TestSigner {
    /// A signer whose manifest key is of `manifest` (`None`: no manifest key,
    /// so `SignManifest` is refused, as by a signer configured without one).
    pub async fn new(manifest: Option<Algorithm>) -> TestSigner {
        let dir = tempfile::tempdir().unwrap();
        let ed25519 = key_file(dir.path(), "ed25519.pem", Algorithm::Ed25519);
        let mut config = format!(
            r#"
listen = "127.0.0.1:0"
state_path = "{state}"
audit_log = "{audit}"
[tls]
cert = "unused.pem"
key = "unused.pem"
client_ca = "unused.pem"
allowed_identities = ["{CALLER}"]
[cosigner]
name = "{WITNESS}"
ed25519 = {{ backend = "file", path = "{ed25519}" }}
"#,
            state = dir.path().join("state.sqlite").display(),
            audit = dir.path().join("audit.jsonl").display(),
            ed25519 = ed25519.display(),
        );
        if let Some(algorithm) = manifest {
            let key = key_file(dir.path(), "manifest.pem", algorithm);
            config.push_str(&format!(
                "[manifest]\nkey = {{ backend = \"file\", path = \"{}\" }}\nalgorithm = \"{}\"\n",
                key.display(),
                algorithm.label()
            ));
        }
        let config = signer_svc::config::Config::parse(&config).unwrap();
        let service = signer_svc::build_service(&config).await.unwrap();
        TestSigner {
            service: Arc::new(service),
            _dir: dir,
        }
    }

    /// The manifest key's verifier, from the PEM the signer publishes; its key
    /// ID must be the one the signer puts in envelopes.
    pub fn manifest_verifier(&self) -> ManifestVerifier {
        let manifest = self.service.manifest.as_ref().unwrap();
        let pem = signer_svc::keys::public_key_pem(manifest.key.as_ref()).unwrap();
        let verifier = ManifestVerifier::from_pem(&pem).unwrap();
        assert_eq!(verifier.key_id(), manifest.key_id);
        verifier
    }

    /// Cosigns a checkpoint of `origin` at `size` (root derived from both);
    /// `old_size` is what the signer last cosigned for the origin (0, or `size`
    /// for a re-cosignature). Returns the cosigned note and its timestamp.
    pub async fn cosign(&self, origin: &str, size: u64, old_size: u64) -> Cosigned {
        let root: [u8; 32] = Sha256::digest(format!("{origin}\n{size}")).into();
        let checkpoint =
            Checkpoint::new(origin, size, Hash::from_slice(&root).unwrap(), vec![]).unwrap();
        let request = pb::CosignCheckpointRequest {
            origin: origin.to_owned(),
            size,
            root_hash: root.to_vec(),
            old_size,
            ..Default::default()
        };
        let response = self
            .service
            .cosign_checkpoint(as_caller(request))
            .await
            .unwrap()
            .into_inner();
        let mut note = checkpoint.to_text();
        note.push('\n');
        for line in &response.signature_lines {
            note.push_str(line);
        }
        Cosigned {
            origin: origin.to_owned(),
            cosigned_at: response.timestamp,
            note: note.into_bytes(),
        }
    }
}

fn as_caller<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .extensions_mut()
        .insert(PeerIdentity::verified(vec![CALLER.to_owned()]));
    request
}

#[async_trait]
impl ManifestSigner for TestSigner {
    async fn sign_manifest(&self, payload_type: &str, payload: Vec<u8>) -> Result<Vec<u8>> {
        let request = pb::SignManifestRequest {
            payload_type: payload_type.to_owned(),
            payload,
        };
        self.service
            .sign_manifest(as_caller(request))
            .await
            .map(|response| response.into_inner().envelope)
            .map_err(|status| Error::Signer {
                detail: status.message().to_owned(),
            })
    }
}

/// A checkpoint note as the witness would submit it.
#[derive(Clone, Debug)]
pub struct Cosigned {
    pub origin: String,
    pub cosigned_at: u64,
    pub note: Vec<u8>,
}

impl Cosigned {
    /// Archives it: returns once the archive holds it durably.
    pub async fn submit(&self, submitter: &ArchiveSubmitter) {
        submitter
            .submit(&self.origin, self.cosigned_at, &self.note)
            .await
            .unwrap();
    }

    /// Where the archive puts it.
    pub fn object_name(&self) -> String {
        ArchivedCheckpoint::new(&self.origin, self.cosigned_at, &self.note)
            .unwrap()
            .path()
            .to_string()
    }
}

/// A running archive.
pub struct Running {
    pub submitter: ArchiveSubmitter,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    pub fn start(
        config: &ArchiveConfig,
        signer: Arc<dyn ManifestSigner>,
        metrics: Arc<WitnessMetrics>,
    ) -> Running {
        let archive = Archive::open(config, WITNESS, signer, metrics).unwrap();
        let submitter = archive.submitter();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(archive.run(async move {
            let _ = stopped.await;
        }));
        Running {
            submitter,
            stop,
            task,
        }
    }

    /// A clean shutdown: returns once the partial period's manifest is written
    /// (or left in the spool).
    pub async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("archive stops within a minute")
            .unwrap();
    }

    /// The process dies: the task is dropped wherever it is.
    pub async fn crash(self) {
        self.task.abort();
        assert!(self.task.await.unwrap_err().is_cancelled());
    }
}

/// Polls `check` until it holds, failing after `timeout` with `what`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every object under `prefix` in `store`, by name.
pub async fn objects(store: &dyn ObjectStore, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    let prefix = object_store::path::Path::from(prefix);
    let listed: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
    let mut objects = BTreeMap::new();
    for meta in listed {
        let bytes = store
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        objects.insert(meta.location.to_string(), bytes.to_vec());
    }
    objects
}

/// How many checkpoint objects `store` holds.
pub async fn checkpoint_count(store: &dyn ObjectStore) -> usize {
    let prefix = object_store::path::Path::from("checkpoints");
    store
        .list(Some(&prefix))
        .try_collect::<Vec<_>>()
        .await
        .map_or(0, |listed| listed.len())
}

/// Verifies every manifest in `store` with `verifier` and returns every
/// subject listed, across manifests (duplicates kept), checking each
/// manifest's name against the period in its predicate.
pub async fn manifest_subjects(
    store: &dyn ObjectStore,
    verifier: &ManifestVerifier,
) -> Vec<ManifestSubject> {
    let mut subjects = Vec::new();
    for (name, envelope) in objects(store, "manifests").await {
        let manifest = verify_manifest(&envelope, verifier)
            .unwrap_or_else(|e| panic!("manifest {name} does not verify: {e}"));
        assert_eq!(manifest.witness, WITNESS);
        let basic = |rfc3339: &str| rfc3339.replace(['-', ':'], "");
        assert_eq!(
            name,
            format!(
                "manifests/{}-{}.dsse.json",
                basic(&manifest.period_start),
                basic(&manifest.period_end)
            )
        );
        subjects.extend(manifest.subjects);
    }
    subjects
}

/// Asserts that `store` holds exactly the `expected` checkpoints, byte for
/// byte, and that the signed manifests list each of them exactly once with
/// its digest.
pub async fn assert_archived_exactly(
    store: &dyn ObjectStore,
    verifier: &ManifestVerifier,
    expected: &[Cosigned],
) {
    let stored = objects(store, "checkpoints").await;
    let wanted: BTreeMap<String, Vec<u8>> = expected
        .iter()
        .map(|c| (c.object_name(), c.note.clone()))
        .collect();
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        wanted.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        stored, wanted,
        "stored bytes differ from the notes submitted"
    );
    let mut listed = manifest_subjects(store, verifier).await;
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    let stored_subjects: Vec<ManifestSubject> = stored
        .iter()
        .map(|(name, bytes)| ManifestSubject {
            name: name.clone(),
            sha256: Sha256::digest(bytes).into(),
        })
        .collect();
    assert_eq!(listed, stored_subjects);
}

/// The values of the samples in `metrics`' exposition whose line `keep` accepts.
fn sample_values(metrics: &WitnessMetrics, keep: impl Fn(&str) -> bool) -> Vec<u64> {
    metrics
        .render()
        .lines()
        .filter(|line| keep(line))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .collect()
}

/// `witness_archive_oldest_unarchived_age_seconds`, once the uploader set it.
pub fn archive_oldest_unarchived_age(metrics: &WitnessMetrics) -> Option<u64> {
    sample_values(metrics, |line| {
        line.starts_with("witness_archive_oldest_unarchived_age_seconds")
    })
    .first()
    .copied()
}

/// The archive's upload batches so far (`witness_archive_upload_batches_total`).
pub fn archive_upload_batches(metrics: &WitnessMetrics) -> u64 {
    sample_values(metrics, |line| {
        line.starts_with("witness_archive_upload_batches_total")
    })
    .iter()
    .sum()
}

/// The count of `witness_archive_writes` for `kind` and `result` (`ok`/`error`).
pub fn archive_writes(metrics: &WitnessMetrics, kind: &str, result: &str) -> u64 {
    let (kind, result) = (format!("kind=\"{kind}\""), format!("result=\"{result}\""));
    sample_values(metrics, |line| {
        line.starts_with("witness_archive_writes_total{")
            && line.contains(&kind)
            && line.contains(&result)
    })
    .iter()
    .sum()
}

/// A local archive in a temporary directory.
pub struct LocalArchive {
    pub dir: tempfile::TempDir,
    pub config: ArchiveConfig,
}

impl LocalArchive {
    pub fn new() -> LocalArchive {
        let dir = tempfile::tempdir().unwrap();
        let config = ArchiveConfig {
            url: format!("file://{}", dir.path().join("archive").display()),
            spool_dir: dir.path().join("spool"),
            max_retry_interval: Duration::from_secs(1),
            ..ArchiveConfig::default()
        };
        LocalArchive { dir, config }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("archive")
    }

    /// A reader independent of the archive's own configuration (it creates
    /// the directory, which the archive creates too when it opens).
    pub fn reader(&self) -> Arc<dyn ObjectStore> {
        std::fs::create_dir_all(self.root()).unwrap();
        Arc::new(LocalFileSystem::new_with_prefix(self.root()).unwrap())
    }
}

/// The `moto_server` of the test venv.
fn moto_server() -> PathBuf {
    let python = std::env::var_os("WITNESS_TEST_PYTHON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pyvenv/bin/python"),
        PathBuf::from,
    );
    let server = python.with_file_name("moto_server");
    assert!(
        server.exists(),
        "no moto_server at {}: run scripts/python-env (scripts/test does) or set WITNESS_TEST_PYTHON",
        server.display()
    );
    server
}

/// A moto S3 server on a loopback port, killed on drop.
pub struct MotoServer {
    port: u16,
    child: Option<Child>,
}

/// The bucket the S3 tests write to.
pub const BUCKET: &str = "witness-archive";
/// Credentials moto accepts (it checks none).
const ACCESS_KEY: &str = "testing";

impl MotoServer {
    /// Starts a server on a free port, with [`BUCKET`] created.
    pub async fn start() -> MotoServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = MotoServer { port, child: None };
        server.restart().await;
        server
    }

    /// A port with nothing listening: for an archive that starts while its
    /// store is down.
    pub fn unstarted() -> MotoServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        MotoServer { port, child: None }
    }

    /// (Re)starts the server on the same port, and creates [`BUCKET`]: moto
    /// keeps everything in memory, so a restarted server starts empty.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "server is running");
        let child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let client = reqwest::Client::new();
        let bucket = format!("{}/{BUCKET}", self.endpoint());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = client.put(&bucket).send().await
                && response.status().is_success()
            {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "moto_server exited ({status}): is the venv of scripts/python-env complete?"
                );
            }
            assert!(
                Instant::now() < deadline,
                "moto did not start on port {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the server: the store is down.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An archive configuration for `s3://BUCKET/<prefix>` on this server.
    pub fn config(&self, dir: &Path, prefix: &str) -> ArchiveConfig {
        let secret = dir.join("s3-secret");
        std::fs::write(&secret, format!("{ACCESS_KEY}\n")).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        ArchiveConfig {
            url: format!("s3://{BUCKET}/{prefix}"),
            endpoint: Some(self.endpoint()),
            region: Some("us-east-1".to_owned()),
            allow_http: true,
            access_key_id: Some(ACCESS_KEY.to_owned()),
            secret_access_key_file: Some(secret),
            spool_dir: dir.join("spool"),
            max_retry_interval: Duration::from_secs(1),
            ..ArchiveConfig::default()
        }
    }

    /// A reader of `prefix` in the bucket, built without the archive's code.
    pub fn reader(&self, prefix: &str) -> Arc<dyn ObjectStore> {
        let s3 = AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(ACCESS_KEY)
            .build()
            .unwrap();
        Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}
