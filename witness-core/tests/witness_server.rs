//! The whole witness service (`server::run`, as `rekor-witness serve` runs it)
//! from a TOML configuration, against the real signer over mutual TLS, a
//! tlog-tiles log served over HTTP that it pulls, and a log that pushes over
//! gRPC: cosigning, refusals with their HTTP statuses in metadata, the
//! monitoring endpoint, the split-view check, re-cosigning, metrics, health,
//! and the archive with its signed manifest written on shutdown.

#![allow(clippy::unwrap_used)]

mod support_feeders;
mod witness_support;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::sync::oneshot;
use tonic::Code;
use witness_core::merkle::{LeafHashes, prove_inclusion};
use witness_core::note::{parse_note, verify_note};
use witness_core::service::archive::{ManifestVerifier, verify_manifest};
use witness_core::service::config::WitnessConfig;
use witness_proto::witness as pb;
use witness_proto::witness::witness_client::WitnessClient;
use witness_support::{SignerHarness, TestLog};

const PUSHED: &str = "push.example/log";
const PULLED: &str = "tiles.example/log";

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<witness_core::Result<()>>,
}

async fn start(config: WitnessConfig, base: std::path::PathBuf) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        witness_core::service::server::run(listener, &config, &base, async {
            let _ = stopped.await;
        })
        .await
    });
    Running {
        addr,
        stop: Some(stop),
        task,
    }
}

async fn client(addr: SocketAddr) -> WitnessClient<tonic::transport::Channel> {
    for _ in 0..100 {
        if let Ok(client) = WitnessClient::connect(format!("http://{addr}")).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the witness did not come up");
}

async fn wait_for_size(
    client: &mut WitnessClient<tonic::transport::Channel>,
    origin: &str,
    size: u64,
) -> pb::Log {
    for _ in 0..200 {
        let logs = client
            .list_logs(pb::ListLogsRequest {})
            .await
            .unwrap()
            .into_inner()
            .logs;
        if let Some(log) = logs.iter().find(|l| l.origin == origin && l.size == size) {
            return log.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{origin} was not cosigned at size {size}");
}

fn http_status(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("x-http-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// A bare Rekor v2-style transparency log entry for leaf `index` of a tree.
fn entry_json(
    body: &[u8],
    index: u64,
    size: u64,
    leaves: &[witness_core::merkle::Hash],
    checkpoint: &[u8],
) -> Vec<u8> {
    let proof = prove_inclusion(&mut LeafHashes(leaves), index, size).unwrap();
    let root = witness_core::merkle::tree_root(&mut LeafHashes(leaves), size).unwrap();
    serde_json::json!({
        "logIndex": index.to_string(),
        "logId": {"keyId": BASE64.encode([0u8; 32])},
        "kindVersion": {"kind": "hashedrekord", "version": "0.0.2"},
        "canonicalizedBody": BASE64.encode(body),
        "inclusionProof": {
            "logIndex": index.to_string(),
            "rootHash": root.to_base64(),
            "treeSize": size.to_string(),
            "hashes": proof.iter().map(|h| h.to_base64()).collect::<Vec<_>>(),
            "checkpoint": {"envelope": String::from_utf8(checkpoint.to_vec()).unwrap()},
        },
    })
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witness_service_end_to_end() {
    let signer = SignerHarness::start(true).await;
    let dir = tempfile::tempdir().unwrap();

    let mut tiles = support_feeders::TilesLog::new(PULLED);
    tiles.grow(300);
    let tiles_vkey = tiles.verifier.to_vkey();
    let (tiles_server, tiles_url) = support_feeders::TilesServer::start(tiles).await;

    let mut pushed = TestLog::new(PUSHED, 5);
    pushed.grow(40);

    let c = &signer.client_config;
    let text = format!(
        r#"
listen = "127.0.0.1:7380"
state = {state:?}
checkpoint_interval = "3s"
poll_interval = "1s"
rekor_urls = [{tiles_url:?}]
rekor_keys = [{tiles_vkey:?}]

[[log]]
key = {pushed_vkey:?}

[signer]
endpoint = {endpoint:?}
server_name = "localhost"
ca = {ca:?}
client_cert = {cert:?}
client_key = {key:?}

[archive]
url = {archive:?}
spool_dir = {spool:?}
period = "1h"
"#,
        state = dir.path().join("witness.db").display().to_string(),
        pushed_vkey = pushed.verifier.to_vkey(),
        endpoint = c.endpoint,
        ca = c.ca.display().to_string(),
        cert = c.client_cert.display().to_string(),
        key = c.client_key.display().to_string(),
        archive = dir.path().join("archive").display().to_string(),
        spool = dir.path().join("spool").display().to_string(),
    );
    let config = WitnessConfig::parse(&text).unwrap();
    let running = start(config, dir.path().to_path_buf()).await;
    let mut client = client(running.addr).await;

    // Health.
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", running.addr))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "rekorwitness.witness.v1.Witness".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // The pulled log is cosigned by the feeder, then follows the log's growth.
    wait_for_size(&mut client, PULLED, 300).await;
    tiles_server.log.lock().unwrap().grow(200);
    wait_for_size(&mut client, PULLED, 500).await;

    // The pushed log: cosigned, then each refusal with its tlog-witness status.
    let add = |old_size: u64, proof: Vec<witness_core::merkle::Hash>, note: Vec<u8>| {
        pb::AddCheckpointRequest {
            old_size,
            consistency_proof: proof.iter().map(|h| h.0.to_vec()).collect(),
            checkpoint: note,
        }
    };
    let lines = client
        .add_checkpoint(add(0, Vec::new(), pushed.signed(30)))
        .await
        .unwrap()
        .into_inner()
        .signature_lines;
    assert_eq!(lines.len(), 2, "Ed25519 and ML-DSA-44 cosignatures");
    let stale = client
        .add_checkpoint(add(0, Vec::new(), pushed.signed(40)))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    assert_eq!(http_status(&stale), "409");
    assert_eq!(stale.metadata().get("x-stored-size").unwrap(), "30");
    let mut bad = pushed.proof(30, 40);
    bad[0].0[1] ^= 4;
    let inconsistent = client
        .add_checkpoint(add(30, bad, pushed.signed(40)))
        .await
        .unwrap_err();
    assert_eq!(inconsistent.code(), Code::Aborted);
    assert_eq!(http_status(&inconsistent), "422");
    let stranger = TestLog::new("stranger.example/log", 6);
    let unknown = client
        .add_checkpoint(add(0, Vec::new(), stranger.signed(0)))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(http_status(&unknown), "404");
    let garbage = client
        .add_checkpoint(add(0, Vec::new(), b"not a note".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(http_status(&garbage), "400");
    client
        .add_checkpoint(add(30, pushed.proof(30, 40), pushed.signed(40)))
        .await
        .unwrap();

    // Monitoring: the log's signature and the witness's cosignatures.
    let served = client
        .get_checkpoint(pb::GetCheckpointRequest {
            origin: PUSHED.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let note = parse_note(&served.checkpoint).unwrap();
    verify_note(note.clone(), &[pushed.verifier.clone()]).unwrap();
    let witness_keys: Vec<_> = {
        let grpc = signer.client(std::sync::Arc::new(
            witness_core::service::metrics::WitnessMetrics::new().unwrap(),
        ));
        grpc.keys().await.unwrap().cosigning
    };
    verify_note(note, &witness_keys).unwrap();

    // Split-view check: a bundle under the witness's checkpoint is consistent;
    // one under a fork the log signed for somebody else is not.
    let body = format!("{PUSHED}/7");
    let consistent = client
        .verify_inclusion(pb::VerifyInclusionRequest {
            bundle: entry_json(body.as_bytes(), 7, 40, &pushed.leaves, &pushed.signed(40)),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        consistent.inclusion_verified && consistent.consistent_with_witness,
        "{consistent:?}"
    );
    let mut fork = TestLog::new(PUSHED, 5);
    fork.leaves = pushed.leaves.clone();
    fork.leaves[39] = witness_core::merkle::leaf_hash(b"the other view");
    let split = client
        .verify_inclusion(pb::VerifyInclusionRequest {
            bundle: entry_json(body.as_bytes(), 7, 40, &fork.leaves, &fork.signed(40)),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(split.inclusion_verified, "{split:?}");
    assert!(
        !split.consistent_with_witness,
        "a split view is detected: {split:?}"
    );
    // On the pulled log, an older checkpoint is checked with a proof the
    // witness fetches from the log's tiles.
    let (old_entry, old_checkpoint, old_leaves) = {
        let log = tiles_server.log.lock().unwrap();
        let bundle = log.bundle(0, None, false).unwrap();
        let entries = witness_core::tiles::parse_entry_bundle(&bundle, 256).unwrap();
        (entries[3].to_vec(), log.checkpoint(), log.leaves().to_vec())
    };
    let pulled_check = client
        .verify_inclusion(pb::VerifyInclusionRequest {
            bundle: entry_json(&old_entry, 3, 500, &old_leaves, &old_checkpoint),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        pulled_check.inclusion_verified && pulled_check.consistent_with_witness,
        "{pulled_check:?}"
    );

    // Re-cosigning refreshes the newest cosignature without growth.
    let before = served.cosigned_at;
    let mut refreshed = before;
    for _ in 0..100 {
        refreshed = client
            .get_checkpoint(pb::GetCheckpointRequest {
                origin: PUSHED.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .cosigned_at;
        if refreshed > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refreshed > before, "re-cosigned within the interval");

    // Metrics.
    let metrics = client
        .metrics(pb::MetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .prometheus_text;
    for expected in [
        "witness_cosignatures_total{log=\"push.example/log\",outcome=\"ok\"}",
        "witness_cosignatures_total{log=\"push.example/log\",outcome=\"old_size_mismatch\"}",
        "witness_checkpoint_age_seconds{log=\"tiles.example/log\"}",
        "witness_backfill_queue_depth{log=\"tiles.example/log\"} 0",
        "witness_misbehaviour_total{log=\"push.example/log\",reason=\"consistency_proof_invalid\"} 1",
        "witness_signer_call_duration_seconds_bucket",
        // Each cosignature's one wait for a durable write: the SQLite state's
        // transaction, which also holds the archive's copy (its outbox).
        "witness_durable_write_duration_seconds_count{result=\"ok\",write=\"state\"}",
        "witness_log_fetches_total",
    ] {
        assert!(
            metrics.contains(expected),
            "metrics lack {expected}:\n{metrics}"
        );
    }
    assert!(
        !metrics.contains("write=\"archive_spool\""),
        "with a SQLite state the spool is written off the request path:\n{metrics}"
    );
    assert!(
        !metrics.contains("stranger.example"),
        "untrusted origins never become labels"
    );

    // Shutdown: the archive holds every cosigned checkpoint and a manifest
    // signed by the signer's manifest key listing them.
    let _ = running.stop.map(|s| s.send(()));
    tokio::time::timeout(Duration::from_secs(30), running.task)
        .await
        .expect("stops")
        .unwrap()
        .expect("run returns Ok");
    let archive = dir.path().join("archive");
    let manifests: Vec<_> = std::fs::read_dir(archive.join("manifests"))
        .unwrap()
        .collect();
    assert_eq!(manifests.len(), 1, "one manifest for the partial period");
    let envelope = std::fs::read(manifests[0].as_ref().unwrap().path()).unwrap();
    let pem = {
        let mut grpc = signer.installation.good_client(&signer.server).await;
        grpc.public_keys(witness_proto::signer::PublicKeysRequest {})
            .await
            .unwrap()
            .into_inner()
            .keys
            .into_iter()
            .find(|k| k.purpose == "manifest")
            .unwrap()
            .pem
    };
    let verified = verify_manifest(&envelope, &ManifestVerifier::from_pem(&pem).unwrap()).unwrap();
    assert!(
        verified.subjects.len() >= 4,
        "{} subjects",
        verified.subjects.len()
    );
    for subject in &verified.subjects {
        let bytes = std::fs::read(archive.join(&subject.name)).unwrap();
        use sha2::Digest as _;
        assert_eq!(
            sha2::Sha256::digest(&bytes).as_slice(),
            subject.sha256.as_slice()
        );
    }
    signer.server.stop().await;
}
