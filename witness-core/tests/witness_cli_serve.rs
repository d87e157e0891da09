//! `rekor-witness serve` as an operator runs it: the real binary with a TOML
//! configuration and the real signer, logging JSON lines, answering gRPC, and
//! stopping cleanly (exit 0) on SIGTERM.

#![allow(clippy::unwrap_used)]

mod witness_support;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use witness_proto::witness as pb;
use witness_proto::witness::witness_client::WitnessClient;
use witness_support::{SignerHarness, TestLog};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_json_answers_grpc_and_stops_cleanly_on_sigterm() {
    let signer = SignerHarness::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let mut log = TestLog::new("cli.example/log", 11);
    log.grow(12);
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let c = &signer.client_config;
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\nstate = {state:?}\n\
         [[log]]\nkey = {vkey:?}\n\
         [signer]\nendpoint = {endpoint:?}\nserver_name = \"localhost\"\nca = {ca:?}\nclient_cert = {cert:?}\nclient_key = {key:?}\n\
         [archive]\nurl = {archive:?}\nspool_dir = {spool:?}\n",
        state = dir.path().join("state.db").display().to_string(),
        vkey = log.verifier.to_vkey(),
        endpoint = c.endpoint,
        ca = c.ca.display().to_string(),
        cert = c.client_cert.display().to_string(),
        key = c.client_key.display().to_string(),
        archive = dir.path().join("archive").display().to_string(),
        spool = dir.path().join("spool").display().to_string(),
    );
    let config_path = dir.path().join("witness.toml");
    std::fs::write(&config_path, config).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_rekor-witness"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });

    let mut client = None;
    for _ in 0..200 {
        if let Ok(connected) = WitnessClient::connect(format!("http://127.0.0.1:{port}")).await {
            client = Some(connected);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut client = client.expect("the witness answers");
    let lines = client
        .add_checkpoint(pb::AddCheckpointRequest {
            old_size: 0,
            consistency_proof: Vec::new(),
            checkpoint: log.signed(12),
        })
        .await
        .unwrap()
        .into_inner()
        .signature_lines;
    assert_eq!(lines.len(), 1);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");

    // The reader thread ends at end of file, now that the process exited.
    let lines: Vec<String> = lines_rx.iter().collect();
    assert!(
        lines.iter().any(|l| l.contains("witness serving")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("shutting down")),
        "{lines:#?}"
    );
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            value.get("level").is_some() && value.get("fields").is_some(),
            "{line}"
        );
    }
    signer.server.stop().await;
}
