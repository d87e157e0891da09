//! The stack the gateway tests run against: the real signer (mutual TLS), the
//! real witness service started in-process from a TOML configuration, and the
//! gateway in front of it, all on loopback.

#![allow(dead_code, clippy::unwrap_used)]

#[path = "../../../witness-core/tests/witness_support/mod.rs"]
pub mod witness_support;

use std::net::SocketAddr;
use std::time::Duration;

use gateway::GatewayConfig;
use tokio::sync::oneshot;
use witness_core::merkle::Hash;
use witness_core::service::config::WitnessConfig;
use witness_core::witness_api::{AddCheckpointRequest, serialize_add_checkpoint_body};
use witness_proto::witness as pb;
use witness_proto::witness::witness_client::WitnessClient;
use witness_support::{SignerHarness, TestLog};

/// The origin hash of the monitoring path: lowercase hex SHA-256 of the origin.
pub fn origin_hash(origin: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(origin.as_bytes()))
}

pub struct Stack {
    pub http: reqwest::Client,
    /// The gateway's API listener.
    pub gateway: SocketAddr,
    /// The witness's plaintext gRPC listener.
    pub witness_addr: SocketAddr,
    pub witness: WitnessClient<tonic::transport::Channel>,
    pub signer: SignerHarness,
    pub stops: Vec<oneshot::Sender<()>>,
    pub dir: tempfile::TempDir,
}

impl Stack {
    /// Starts the signer, a witness trusting `logs` (plus `extra_witness_toml`
    /// appended to its configuration), and a gateway configured by `configure`.
    pub async fn start(
        logs: &[&TestLog],
        extra_witness_toml: &str,
        configure: impl FnOnce(&mut GatewayConfig),
    ) -> Stack {
        let signer = SignerHarness::start(true).await;
        let dir = tempfile::tempdir().unwrap();
        let c = &signer.client_config;
        let mut text = format!(
            "state = {state:?}\n{extra_witness_toml}\n",
            state = dir.path().join("witness.db").display().to_string(),
        );
        for log in logs {
            text.push_str(&format!("[[log]]\nkey = {:?}\n", log.verifier.to_vkey()));
        }
        text.push_str(&format!(
            r#"
[signer]
endpoint = {endpoint:?}
server_name = "localhost"
ca = {ca:?}
client_cert = {cert:?}
client_key = {key:?}

# Each stack archives under its own directory, not the default
# /var/lib/witness shared by every witness on the machine.
[archive]
url = {archive:?}
spool_dir = {spool:?}
"#,
            endpoint = c.endpoint,
            ca = c.ca.display().to_string(),
            cert = c.client_cert.display().to_string(),
            key = c.client_key.display().to_string(),
            archive = format!("file://{}", dir.path().join("archive").display()),
            spool = dir.path().join("archive-spool").display().to_string(),
        ));
        let config = WitnessConfig::parse(&text).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let witness_addr = listener.local_addr().unwrap();
        let (stop_witness, witness_stopped) = oneshot::channel::<()>();
        let base = dir.path().to_path_buf();
        tokio::spawn(async move {
            witness_core::service::server::run(listener, &config, &base, async {
                let _ = witness_stopped.await;
            })
            .await
        });
        let mut witness = None;
        for _ in 0..100 {
            if let Ok(client) = WitnessClient::connect(format!("http://{witness_addr}")).await {
                witness = Some(client);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let witness = witness.expect("the witness did not come up");

        let mut gateway_config = GatewayConfig::new(format!("http://{witness_addr}"));
        configure(&mut gateway_config);
        let (gateway, stop_gateway) = start_gateway(gateway_config).await;
        Stack {
            http: reqwest::Client::new(),
            gateway,
            witness_addr,
            witness,
            signer,
            stops: vec![stop_witness, stop_gateway],
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway)
    }

    pub async fn post(&self, path: &str, body: Vec<u8>) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// The witness's view of the log with this origin.
    pub async fn log(&mut self, origin: &str) -> pb::Log {
        let logs = self
            .witness
            .list_logs(pb::ListLogsRequest {})
            .await
            .unwrap()
            .into_inner()
            .logs;
        logs.into_iter().find(|l| l.origin == origin).unwrap()
    }

    pub fn stop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}

/// Serves a gateway on a fresh loopback port until the sender is dropped or
/// fired.
pub async fn start_gateway(config: GatewayConfig) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        gateway::run(listener, &config, async {
            let _ = stopped.await;
        })
        .await
    });
    (addr, stop)
}

/// An add-checkpoint body.
pub fn add(old_size: u64, proof: Vec<Hash>, checkpoint: Vec<u8>) -> Vec<u8> {
    serialize_add_checkpoint_body(&AddCheckpointRequest {
        old_size,
        consistency_proof: proof,
        checkpoint,
    })
}

/// Status, content type and body of a response.
pub async fn text(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}
