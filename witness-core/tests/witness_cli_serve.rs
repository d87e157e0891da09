//! `rekor-witness serve` as an operator runs it: the real binary with a TOML
//! configuration and the real signer, logging JSON lines, answering gRPC, and
//! stopping cleanly (exit 0) on SIGTERM.

#![allow(clippy::unwrap_used)]

mod witness_support;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use futures::StreamExt as _;
use witness_core::service::store::sqlite::SqliteStore;
use witness_core::service::store::{LogStore as _, TrustedLog};
use witness_proto::witness as pb;
use witness_proto::witness::witness_client::WitnessClient;
use witness_support::{SignerHarness, TestLog, files_under};

/// A configuration for `rekor-witness serve` on a free loopback port with its
/// state, archive and spool under `dir`, trusting `log`: the file and the port.
fn write_config(dir: &Path, signer: &SignerHarness, log: &TestLog) -> (std::path::PathBuf, u16) {
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
        state = dir.join("state.db").display().to_string(),
        vkey = log.verifier.to_vkey(),
        endpoint = c.endpoint,
        ca = c.ca.display().to_string(),
        cert = c.client_cert.display().to_string(),
        key = c.client_key.display().to_string(),
        archive = dir.join("archive").display().to_string(),
        spool = dir.join("spool").display().to_string(),
    );
    let config_path = dir.join("witness.toml");
    std::fs::write(&config_path, config).unwrap();
    (config_path, port)
}

/// Starts the real binary at `info` level; its stderr lines arrive on the
/// receiver until it exits.
fn serve(config: &Path) -> (Child, Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rekor-witness"))
        .args(["serve", "--config"])
        .arg(config)
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
    (child, lines_rx)
}

/// A gRPC client of the witness on `port`, once it answers (10 s at most).
async fn connect(port: u16) -> WitnessClient<tonic::transport::Channel> {
    for _ in 0..200 {
        if let Ok(connected) = WitnessClient::connect(format!("http://127.0.0.1:{port}")).await {
            return connected;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the witness does not answer on port {port}");
}

/// The signature lines of the witness for `log`'s checkpoint of `size`,
/// pushed with a consistency proof from `old_size` (none from 0).
async fn cosign(
    client: &mut WitnessClient<tonic::transport::Channel>,
    log: &TestLog,
    old_size: u64,
    size: u64,
) -> Vec<String> {
    client
        .add_checkpoint(pb::AddCheckpointRequest {
            old_size,
            consistency_proof: log
                .proof(old_size, size)
                .iter()
                .map(|hash| hash.0.to_vec())
                .collect(),
            checkpoint: log.signed(size),
        })
        .await
        .unwrap()
        .into_inner()
        .signature_lines
}

/// SIGTERM; asserts exit 0 and returns every line the witness logged.
async fn stop(mut child: Child, lines: Receiver<String>) -> Vec<String> {
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
    lines.iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_json_answers_grpc_and_stops_cleanly_on_sigterm() {
    let signer = SignerHarness::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let mut log = TestLog::new("cli.example/log", 11);
    log.grow(12);
    let (config, port) = write_config(dir.path(), &signer, &log);
    let (child, lines) = serve(&config);

    let mut client = connect(port).await;
    assert_eq!(cosign(&mut client, &log, 0, 12).await.len(), 1);

    let lines = stop(child, lines).await;
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

/// Logs added at run time (the admin API's `AddLog`) stay trusted across
/// restarts. A witness of the witness network holds tens of thousands: a
/// start logged a line for each (40,000 lines, 10 MB, at every restart of the
/// 40,000-log benchmark). Now one line counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_with_thousands_of_run_time_logs_counts_them_in_one_line_not_one_each() {
    const RUN_TIME_LOGS: usize = 2_000;
    let signer = SignerHarness::start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let log = TestLog::new("cli.example/configured", 12);
    let (config, port) = write_config(dir.path(), &signer, &log);
    {
        // As the admin API records them: in the state's logs table.
        let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        let added: Vec<_> = futures::stream::iter(0..RUN_TIME_LOGS)
            .map(|i| {
                let origin = format!("run-time.example/log-{i:05}");
                let vkey = TestLog::new(&origin, 13).verifier.to_vkey();
                let store = &store;
                async move {
                    store
                        .add_log(&TrustedLog {
                            origin,
                            verifier_keys: vec![vkey],
                        })
                        .await
                }
            })
            .buffer_unordered(256)
            .collect()
            .await;
        assert!(added.iter().all(Result::is_ok));
    }
    let (child, lines) = serve(&config);
    let mut client = connect(port).await;
    // Every one of them is trusted: a checkpoint of the last one is cosigned.
    let mut last = TestLog::new(
        &format!("run-time.example/log-{:05}", RUN_TIME_LOGS - 1),
        13,
    );
    last.grow(3);
    assert_eq!(cosign(&mut client, &last, 0, 3).await.len(), 1);

    let lines = stop(child, lines).await;
    let naming: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains("run-time.example/log-"))
        .collect();
    assert_eq!(naming.len(), 1, "one line for the kept logs: {naming:#?}");
    let summary: serde_json::Value = serde_json::from_str(naming[0]).unwrap();
    assert_eq!(
        summary["fields"]["count"],
        serde_json::json!(RUN_TIME_LOGS),
        "{summary}"
    );
    assert!(
        lines.len() < 50,
        "{} lines logged by a start and one request",
        lines.len()
    );
    signer.server.stop().await;
}

/// Two witnesses pointed at one spool directory (two replicas on a shared
/// volume, or a copied configuration) would append to the same segments and
/// each remove what the other has not uploaded yet. The second one refuses to
/// start, naming the directory, and the first goes on cosigning and archiving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_witness_on_the_same_spool_refuses_to_start_and_the_first_keeps_its_queue_and_archive()
 {
    let signer = SignerHarness::start(false).await;
    let first_dir = tempfile::tempdir().unwrap();
    let mut log = TestLog::new("cli.example/shared-spool", 14);
    log.grow(20);
    let (first_config, first_port) = write_config(first_dir.path(), &signer, &log);
    let (first, first_lines) = serve(&first_config);
    let mut client = connect(first_port).await;
    assert_eq!(cosign(&mut client, &log, 0, 10).await.len(), 1);

    // The second has its own port, state and archive, but the first's spool.
    let second_dir = tempfile::tempdir().unwrap();
    let (second_config, _) = write_config(second_dir.path(), &signer, &log);
    let own_spool = second_dir.path().join("spool").display().to_string();
    let shared_spool = first_dir.path().join("spool").display().to_string();
    let text = std::fs::read_to_string(&second_config).unwrap();
    assert!(text.contains(&format!("{own_spool:?}")), "{text}");
    std::fs::write(
        &second_config,
        text.replace(&format!("{own_spool:?}"), &format!("{shared_spool:?}")),
    )
    .unwrap();
    let (mut second, second_lines) = serve(&second_config);
    let exit = tokio::task::spawn_blocking(move || {
        for _ in 0..200 {
            if let Some(status) = second.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = second.kill();
        None
    })
    .await
    .unwrap();
    let second_lines: Vec<String> = second_lines.iter().collect();
    let exit = exit.unwrap_or_else(|| panic!("the second witness kept running: {second_lines:#?}"));
    assert!(!exit.success(), "{exit:?}");
    assert!(
        second_lines
            .iter()
            .any(|l| l.contains("in use by another process") && l.contains(&shared_spool)),
        "{second_lines:#?}"
    );

    // The first still cosigns, and its spool and archive are its own.
    assert_eq!(cosign(&mut client, &log, 10, 20).await.len(), 1);
    // Both checkpoints reach the first's archive: nothing of its queue went.
    let checkpoints = first_dir.path().join("archive").join("checkpoints");
    let mut archived = 0;
    for _ in 0..200 {
        archived = files_under(&checkpoints)
            .iter()
            .filter(|path| path.extension().is_some_and(|e| e == "txt"))
            .count();
        if archived >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        archived,
        2,
        "checkpoints archived under {}",
        checkpoints.display()
    );
    stop(first, first_lines).await;
    signer.server.stop().await;
}
