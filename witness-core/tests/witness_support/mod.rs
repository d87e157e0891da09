//! A witness wired to real components for tests and benchmarks: the real
//! signer (`signer-svc`) serving mutual TLS on loopback, reached through the
//! production gRPC client, and a SQLite state store in a temporary directory;
//! plus a test log that signs checkpoints over a tree held in memory.

#![allow(dead_code)]

#[path = "../../../signer-svc/tests/support/pki.rs"]
pub mod pki;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use witness_core::checkpoint::Checkpoint;
use witness_core::merkle::{Hash, LeafHashes, leaf_hash, prove_consistency, tree_root};
use witness_core::note::{Note, NoteSignature, SignatureType, VerifierKey};
use witness_core::service::metrics::WitnessMetrics;
use witness_core::service::signer_client::{GrpcSigner, SignerConfig, SignerKeys};
use witness_core::service::store::LogStore;
use witness_core::service::store::sqlite::SqliteStore;
use witness_core::service::witness::{Feed, LogKeys, ShardedLog, Witness};

/// A log under test: an Ed25519 note key and the leaves of its tree.
pub struct TestLog {
    pub origin: String,
    pub signing: ed25519_dalek::SigningKey,
    pub verifier: VerifierKey,
    pub leaves: Vec<Hash>,
}

impl TestLog {
    pub fn new(origin: &str, seed: u8) -> TestLog {
        let signing = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let verifier = VerifierKey::from_material(
            origin,
            SignatureType::Ed25519,
            signing.verifying_key().as_bytes(),
        )
        .expect("verifier");
        TestLog {
            origin: origin.to_owned(),
            signing,
            verifier,
            leaves: Vec::new(),
        }
    }

    /// Appends `count` leaves.
    pub fn grow(&mut self, count: u64) {
        for _ in 0..count {
            let n = self.leaves.len() as u64;
            self.leaves
                .push(leaf_hash(format!("{}/{n}", self.origin).as_bytes()));
        }
    }

    pub fn root(&self, size: u64) -> Hash {
        tree_root(&mut LeafHashes(&self.leaves), size).expect("root")
    }

    /// The checkpoint body at `size`.
    pub fn checkpoint(&self, size: u64) -> Checkpoint {
        Checkpoint::new(&self.origin, size, self.root(size), Vec::new()).expect("checkpoint")
    }

    /// A signed note of an arbitrary body.
    pub fn sign(&self, checkpoint: &Checkpoint) -> Vec<u8> {
        use ed25519_dalek::Signer as _;
        let text = checkpoint.to_text();
        let signature = self.signing.sign(text.as_bytes());
        let line = NoteSignature::new(
            self.verifier.name(),
            self.verifier.key_id(),
            signature.to_bytes().to_vec(),
        )
        .expect("signature line");
        Note::new(&text, vec![line]).expect("note").to_bytes()
    }

    /// The signed checkpoint at `size`.
    pub fn signed(&self, size: u64) -> Vec<u8> {
        self.sign(&self.checkpoint(size))
    }

    pub fn proof(&self, old: u64, new: u64) -> Vec<Hash> {
        if old == 0 || old == new {
            return Vec::new();
        }
        prove_consistency(&mut LeafHashes(&self.leaves), old, new).expect("proof")
    }

    pub fn keys(&self) -> LogKeys {
        LogKeys {
            origin: self.origin.clone(),
            keys: vec![self.verifier.clone()],
            feed: Feed::Push,
        }
    }
}

/// A running signer and the client configuration that reaches it.
pub struct SignerHarness {
    pub installation: pki::Installation,
    pub server: pki::Server,
    pub client_config: SignerConfig,
}

impl SignerHarness {
    pub async fn start(ml_dsa_44: bool) -> SignerHarness {
        let installation = pki::Installation::new(pki::Keys {
            ml_dsa_44,
            manifest: true,
        });
        let server = installation.start(None).await;
        let dir = installation.dir.path();
        let client_cert = dir.join("witness-client.pem");
        let client_key = dir.join("witness-client.key");
        std::fs::write(&client_cert, &installation.pki.good.cert_pem).expect("client cert");
        pki::write_private(&client_key, &installation.pki.good.key_pem);
        let client_config = SignerConfig {
            endpoint: format!("https://{}", server.addr),
            ca: installation.pki.ca_path.clone(),
            client_cert,
            client_key,
            server_name: Some("localhost".into()),
            timeout: std::time::Duration::from_secs(30),
        };
        SignerHarness {
            installation,
            server,
            client_config,
        }
    }

    pub fn client(&self, metrics: Arc<WitnessMetrics>) -> GrpcSigner {
        GrpcSigner::connect(&self.client_config, metrics).expect("signer client")
    }
}

/// A witness over the real signer and a SQLite store.
pub struct WitnessHarness {
    pub signer: SignerHarness,
    pub grpc_signer: GrpcSigner,
    pub keys: SignerKeys,
    pub store: Arc<dyn LogStore>,
    pub metrics: Arc<WitnessMetrics>,
    pub witness: Arc<Witness>,
    pub state_dir: tempfile::TempDir,
}

impl WitnessHarness {
    pub async fn start(
        logs: Vec<LogKeys>,
        sharded: Vec<ShardedLog>,
        ml_dsa_44: bool,
    ) -> WitnessHarness {
        let signer = SignerHarness::start(ml_dsa_44).await;
        let metrics = Arc::new(WitnessMetrics::new().expect("metrics"));
        let grpc_signer = signer.client(metrics.clone());
        let keys = grpc_signer.keys().await.expect("signer keys");
        let state_dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn LogStore> =
            Arc::new(SqliteStore::open(&state_dir.path().join("witness.db")).expect("store"));
        let witness = Witness::new(
            logs,
            sharded,
            keys.cosigning.clone(),
            store.clone(),
            Arc::new(grpc_signer.clone()),
            None,
            metrics.clone(),
        )
        .await
        .expect("witness");
        WitnessHarness {
            signer,
            grpc_signer,
            keys,
            store,
            metrics,
            witness: Arc::new(witness),
            state_dir,
        }
    }

    /// The witness's cosigning verifiers (cosignature/v1 and ML-DSA-44).
    pub fn own_keys(&self) -> Vec<VerifierKey> {
        self.keys.cosigning.clone()
    }
}

/// Every file under `dir`, at any depth (none when `dir` does not exist): the
/// objects a local archive wrote, for instance.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(next) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for path in entries.map_while(Result::ok).map(|entry| entry.path()) {
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}
