//! `rekor-witness quickstart` as a user runs it: the real binaries as separate
//! processes over mutual TLS, a cosigned checkpoint of the built-in log on the
//! gateway's monitoring endpoint within 10 seconds, verified with the printed
//! witness key; archived checkpoints on disk; Ctrl-C stops every process; a
//! second run reuses the state and keeps cosigning the same, longer tree.
//!
//! It needs `signer-svc` and `rekor-witness-gateway` built beside
//! `rekor-witness` (as `cargo test --workspace` does).

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use witness_core::checkpoint::parse_checkpoint_text;
use witness_core::note::{VerifierKey, parse_note, verify_note};

const LOG_ORIGIN: &str = "localhost/rekor-witness-quickstart-log";

fn binary_dir() -> PathBuf {
    let witness = PathBuf::from(env!("CARGO_BIN_EXE_rekor-witness"));
    let dir = witness.parent().unwrap().to_path_buf();
    for sibling in ["signer-svc", "rekor-witness-gateway"] {
        assert!(
            dir.join(sibling).is_file(),
            "{sibling} is not built in {}: run `cargo build --workspace --bins` (cargo test --workspace does)",
            dir.display()
        );
    }
    dir
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

struct Running {
    child: Child,
    witness_vkey: String,
    started: Instant,
}

async fn start(data_dir: &Path, listen: SocketAddr) -> Running {
    let started = Instant::now();
    let mut child = Command::new(binary_dir().join("rekor-witness"))
        .args(["quickstart", "--grow-every", "1s", "--listen"])
        .arg(listen.to_string())
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let witness_vkey = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(vkey) = line.trim().strip_prefix("witness vkey") {
                return vkey.trim().to_owned();
            }
        }
        panic!("the quickstart exited before printing the witness key");
    })
    .await
    .expect("the quickstart printed no witness key in 60 s");
    // Keep draining its output so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Running {
        child,
        witness_vkey,
        started,
    }
}

/// The cosigned checkpoint served on the monitoring endpoint, verified with
/// the log's key (from the generated witness configuration) and the printed
/// witness key; its size.
async fn cosigned_size(listen: SocketAddr, data_dir: &Path, witness_vkey: &str) -> Option<u64> {
    use sha2::Digest as _;
    let hash = hex::encode(sha2::Sha256::digest(LOG_ORIGIN.as_bytes()));
    let response = reqwest::get(format!("http://{listen}/{hash}/checkpoint"))
        .await
        .ok()?;
    if response.status() != 200 {
        return None;
    }
    let body = response.bytes().await.unwrap();
    let config = std::fs::read_to_string(data_dir.join("config/witness.toml")).unwrap();
    let log_vkey = config
        .lines()
        .filter_map(|l| l.strip_prefix("key = "))
        .map(|v| v.trim_matches('"'))
        .find(|v| v.starts_with(&format!("{LOG_ORIGIN}+")))
        .unwrap();
    let log_key = VerifierKey::parse_vkey(log_vkey).unwrap();
    let witness_key = VerifierKey::parse_vkey(witness_vkey).unwrap();
    let verified = verify_note(
        parse_note(&body).unwrap(),
        &[log_key.clone(), witness_key.clone()],
    )
    .expect("the served checkpoint verifies");
    let signers: Vec<u32> = verified
        .verified()
        .iter()
        .map(|v| v.signature.key_id())
        .collect();
    assert!(
        signers.contains(&log_key.key_id()),
        "the log's signature is served"
    );
    assert!(
        signers.contains(&witness_key.key_id()),
        "the witness's cosignature verifies with the printed vkey"
    );
    let checkpoint = parse_checkpoint_text(verified.note().text()).unwrap();
    assert_eq!(checkpoint.origin(), LOG_ORIGIN);
    Some(checkpoint.size())
}

async fn wait_cosigned(running: &Running, listen: SocketAddr, data_dir: &Path, above: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(size) = cosigned_size(listen, data_dir, &running.witness_vkey).await
            && size > above
        {
            return size;
        }
        assert!(
            Instant::now() < deadline,
            "no cosigned checkpoint above {above} in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Ctrl-C (SIGINT to the quickstart process alone): every service stops and
/// the command exits 0.
async fn interrupt(mut running: Running, listen: SocketAddr) {
    let pid = running.child.id().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), running.child.wait())
        .await
        .expect("the quickstart did not stop within 30 s of Ctrl-C")
        .unwrap();
    assert!(exit.success(), "Ctrl-C is a clean stop: {exit}");
    assert!(
        tokio::net::TcpStream::connect(listen).await.is_err(),
        "the gateway stopped with it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_serves_a_cosigned_checkpoint_stops_cleanly_and_resumes() {
    let data = tempfile::tempdir().unwrap();
    let listen = free_port();

    let running = start(data.path(), listen).await;
    let first = wait_cosigned(&running, listen, data.path(), 0).await;
    let elapsed = running.started.elapsed();
    eprintln!(
        "first cosigned checkpoint (size {first}) served {elapsed:?} after the command started"
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "a cosigned checkpoint within 10 s of starting, took {elapsed:?}"
    );
    // Ready, and one scrape covers the stack: the gateway reads the signer's
    // metrics as an observer identity over mutual TLS.
    let ready = reqwest::get(format!("http://{listen}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "{:?}", ready.text().await);
    let metrics = reqwest::get(format!("http://{listen}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for service in ["witness", "signer"] {
        assert!(
            metrics.contains(&format!(
                "rekor_witness_scrape_up{{service=\"{service}\"}} 1"
            )),
            "{service} metrics scraped through the gateway:\n{metrics}"
        );
    }
    // The log keeps growing and the witness keeps cosigning it.
    let grown = wait_cosigned(&running, listen, data.path(), first).await;
    // Cosigned checkpoints reach the local archive.
    let archive = data.path().join("archive");
    let deadline = Instant::now() + Duration::from_secs(30);
    while count_files(&archive) == 0 {
        assert!(
            Instant::now() < deadline,
            "nothing archived in {}",
            archive.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    interrupt(running, listen).await;

    // Private keys are owner-only.
    for key in [
        "keys/witness-ed25519.pem",
        "keys/manifest-p256.pem",
        "keys/log-ed25519.pem",
    ] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(data.path().join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{key} mode {mode:o}");
    }

    // A second run reuses everything: the same witness key, and the witness
    // (which remembers what it cosigned) cosigns the same log, now longer. Had
    // the log or the state started over, nothing above `grown` would be cosigned.
    let listen = free_port();
    let again = start(data.path(), listen).await;
    let resumed = wait_cosigned(&again, listen, data.path(), grown).await;
    assert!(resumed > grown);
    interrupt(again, listen).await;
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() { count_files(&path) } else { 1 }
        })
        .sum()
}
