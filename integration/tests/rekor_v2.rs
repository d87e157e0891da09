//! Rekor v2 end to end: real rekor-tiles logs witnessed by our three services
//! (as processes, over mutual TLS) beside a real litewitness, across a crash
//! or restart of every one of our services.
//!
//! - The pushed log's witness policy requires our witness, litewitness and
//!   omniwitness, so rekor-tiles itself is the client pushing `add-checkpoint`
//!   to our gateway, and every published checkpoint carries the three
//!   cosignatures of the same checkpoint (interop: the peers' code, tessera's
//!   witness client, checked our cosignature before publishing it; our code
//!   checks the peers').
//! - The pulled log has no witness policy; our witness pulls it through its
//!   tlog-tiles files.
//! - Every cosignature is verified by our core, by our operator CLI
//!   (`rekor-witness verify checkpoint --key <vkey>`), by the Go peers' note
//!   library (`verify-note`, built from `integration/go`) and by an independent
//!   Python checker (`integration/checkers/verify_note.py`, `cryptography`).
//! - A real Prometheus scrapes the gateway with the project's alert rules.
//! - At the end the archive's DSSE manifest verifies and lists every archived
//!   checkpoint, and every cosigned checkpoint is a prefix of the log's final
//!   tree (no fork, no rollback, across the restarts).
//!
//! Output of every process, a metrics scrape and the cosigned checkpoints are
//! kept under `target/e2e/rekor_v2/`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use integration::prometheus::Prometheus;
use integration::rekor_tiles::{PolicyWitness, RekorTiles};
use integration::stack::{Service, Stack, WITNESS_NAME, checkpoint_size};
use witness_core::checkpoint::parse_checkpoint_text;
use witness_core::merkle::{Hash, tree_root};
use witness_core::note::{VerifierKey, parse_note, verify_note};
use witness_core::service::archive::{ManifestVerifier, verify_manifest};
use witness_core::tiles::{TileHashSource, TileId};

const PUSHED: &str = "rekor-v2-push.integration.test";
const PULLED: &str = "rekor-v2-pull.integration.test";
const LITEWITNESS: &str = "litewitness.integration.test";
const OMNIWITNESS: &str = "omniwitness.integration.test";
const WAIT: Duration = Duration::from_secs(45);

/// Every checkpoint our witness cosigned that the test saw, in the order seen.
#[derive(Default)]
struct Seen {
    notes: Vec<(&'static str, String)>,
}

impl Seen {
    fn record(&mut self, origin: &'static str, note: String) {
        if !self.notes.iter().any(|(o, n)| *o == origin && *n == note) {
            self.notes.push((origin, note));
        }
    }

    fn of(&self, origin: &str) -> Vec<&String> {
        self.notes
            .iter()
            .filter(|(o, _)| *o == origin)
            .map(|(_, n)| n)
            .collect()
    }
}

fn python() -> PathBuf {
    std::env::var_os("WITNESS_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| integration::target_dir().join("pyvenv/bin/python"))
}

/// Runs our operator CLI (`rekor-witness verify checkpoint`, once per key),
/// the Go peers' verifier and the Python checker on `note`, requiring every
/// key in `vkeys`; all three must agree with `expect_ok`.
fn independent_verdicts(dir: &Path, note: &str, vkeys: &[&str], expect_ok: bool) {
    let file = dir.join("note-under-check");
    std::fs::write(&file, note).unwrap();
    let cli = integration::stack::rekor_witness_binary().unwrap();
    let cli_ok = vkeys.iter().all(|vkey| {
        Command::new(&cli)
            .args(["verify", "checkpoint", "--key", vkey])
            .arg(&file)
            .output()
            .unwrap()
            .status
            .success()
    });
    assert_eq!(
        cli_ok, expect_ok,
        "rekor-witness verify checkpoint on\n{note}"
    );
    let go = Command::new(integration::go_program("verify-note").unwrap())
        .args(vkeys)
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert_eq!(
        go.status.success(),
        expect_ok,
        "Go verify-note on\n{note}\n{}{}",
        String::from_utf8_lossy(&go.stdout),
        String::from_utf8_lossy(&go.stderr)
    );
    let script = integration::repo_root().join("integration/checkers/verify_note.py");
    let py = Command::new(python())
        .arg(script)
        .arg(&file)
        .args(vkeys)
        .output()
        .unwrap();
    assert_eq!(
        py.status.success(),
        expect_ok,
        "Python verify_note.py on\n{note}\n{}{}",
        String::from_utf8_lossy(&py.stdout),
        String::from_utf8_lossy(&py.stderr)
    );
}

/// The root of the first `size` leaves of the log, recomputed from the tiles
/// in its storage directory at its final size.
fn root_from_tiles(storage: &Path, final_size: u64, size: u64) -> Hash {
    let mut source = TileHashSource::new(final_size, |tile: &TileId| {
        let path = storage.join(tile.path());
        std::fs::read(&path).map_err(|_| witness_core::Error::ProofUnavailable {
            reason: "tile missing from storage",
        })
    });
    tree_root(&mut source, size).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekor_v2_is_witnessed_pushed_and_pulled_beside_litewitness_across_restarts() {
    let artifacts = integration::artifacts_dir("rekor_v2").unwrap();
    let pushed = RekorTiles::prepare(PUSHED, &artifacts.join("rekor-push")).unwrap();
    let pulled = RekorTiles::prepare(PULLED, &artifacts.join("rekor-pull")).unwrap();
    let logs_toml = format!(
        "[[log]]\nkey = \"{}\"\n\n[[log]]\nkey = \"{}\"\nfeed = \"tiles\"\nurl = \"{}\"\n",
        pushed.vkey(),
        pulled.vkey(),
        pulled.tiles_url().unwrap()
    );
    let mut stack = Stack::start_in(&artifacts, &logs_toml).await.unwrap();
    let litewitness =
        integration::peers::Litewitness::start(&artifacts.join("lw"), &artifacts, LITEWITNESS)
            .await
            .unwrap();
    litewitness.add_log(PUSHED, pushed.vkey()).unwrap();
    let mut omniwitness =
        integration::peers::Omniwitness::start(&artifacts.join("ow"), &artifacts, OMNIWITNESS)
            .await
            .unwrap();
    omniwitness.add_log(PUSHED, pushed.vkey()).await.unwrap();
    let ours = stack.witness_vkey().to_owned();
    let peers = [
        (LITEWITNESS, litewitness.vkey().to_owned()),
        (OMNIWITNESS, omniwitness.vkey().to_owned()),
    ];
    let pushed = pushed
        .start(
            "rekor-tiles-push",
            &artifacts,
            &[
                PolicyWitness {
                    name: "ours".into(),
                    vkey: ours.clone(),
                    url: stack.gateway_url(),
                },
                PolicyWitness {
                    name: "litewitness".into(),
                    vkey: litewitness.vkey().to_owned(),
                    url: litewitness.base_url(),
                },
                PolicyWitness {
                    name: "omniwitness".into(),
                    vkey: omniwitness.vkey().to_owned(),
                    url: omniwitness.base_url(),
                },
            ],
        )
        .await
        .unwrap();
    let pulled = pulled
        .start("rekor-tiles-pull", &artifacts, &[])
        .await
        .unwrap();
    let gateway_target = stack.gateway_url().trim_start_matches("http://").to_owned();
    let prometheus = Prometheus::start(&artifacts.join("prometheus"), &artifacts, &gateway_target)
        .await
        .unwrap();

    let mut seen = Seen::default();
    let mut size = 0u64;
    // Grows both logs by `n` entries each (through the real write API) and
    // waits until both are cosigned at the new size.
    async fn grow(
        logs: [&RekorTiles; 2],
        stack: &Stack,
        seen: &mut Seen,
        size: &mut u64,
        n: u64,
        pushed_cosigners: &[&str],
    ) {
        for _ in 0..n {
            for log in logs {
                let index = log.add_entry().await.unwrap();
                assert_eq!(
                    index,
                    *size,
                    "{}: entries are appended in order",
                    log.origin()
                );
            }
            *size += 1;
        }
        let published = logs[0]
            .wait_published(*size, pushed_cosigners, WAIT)
            .await
            .unwrap();
        if pushed_cosigners.contains(&WITNESS_NAME) {
            seen.record(PUSHED, published);
        }
        let cosigned = stack.wait_cosigned(PULLED, *size, WAIT).await.unwrap();
        seen.record(PULLED, cosigned);
        if let Some(monitored) = stack.cosigned_checkpoint(PUSHED).await.unwrap() {
            seen.record(PUSHED, monitored);
        }
    }

    let all = [WITNESS_NAME, LITEWITNESS, OMNIWITNESS];
    for _ in 0..3 {
        grow([&pushed, &pulled], &stack, &mut seen, &mut size, 2, &all).await;
    }

    // Every service of ours, crashed or stopped mid-run: the logs keep
    // growing while it is down (rekor-tiles publishes without our cosignature
    // then: its witnessing is fail-open), and after the restart both logs are
    // cosigned again at their new size.
    for (service, crash) in [
        (Service::Witness, true),
        (Service::Signer, true),
        (Service::Gateway, false),
    ] {
        if crash {
            stack.kill(service).await;
        } else {
            assert!(
                stack.stop_service(service).await,
                "{service:?} exits 0 on SIGTERM"
            );
        }
        for log in [&pushed, &pulled] {
            log.add_entry().await.unwrap();
        }
        size += 1;
        pushed
            .wait_published(size, &[LITEWITNESS, OMNIWITNESS], WAIT)
            .await
            .unwrap();
        stack.restart(service).await.unwrap();
        stack.wait_ready().await.unwrap();
        grow([&pushed, &pulled], &stack, &mut seen, &mut size, 2, &all).await;
        stack.check_running().unwrap();
    }

    // Prometheus scraped the merged metrics through the gateway: the
    // witness's cosignature counters are non-zero for both logs, every
    // upstream is up, and the alert rules evaluate (health ok) with none
    // firing for honest logs.
    let cosignatures = prometheus
        .wait_for(
            "sum by (log) (witness_cosignatures_total)",
            |v| v > 0.0,
            WAIT,
        )
        .await
        .unwrap();
    assert!(cosignatures.len() >= 2, "{cosignatures:?}");
    prometheus
        .wait_for("rekor_witness_scrape_up", |v| v == 1.0, WAIT)
        .await
        .unwrap();
    let failures = prometheus
        .query("witness_verify_failures_total")
        .await
        .unwrap();
    assert!(failures.iter().all(|(_, v)| *v == 0.0), "{failures:?}");
    let rules = prometheus.alert_rules().await.unwrap();
    assert!(
        rules.len() >= 6,
        "the project's alert rules are loaded: {rules:?}"
    );
    for (name, state, health) in &rules {
        assert_eq!(health, "ok", "{name} evaluates");
        assert_ne!(state, "firing", "{name} fires on an honest run");
    }
    std::fs::write(
        artifacts.join("metrics-sample.txt"),
        stack.metrics().await.unwrap(),
    )
    .unwrap();

    // Every cosigned checkpoint: both signatures verify here, with the Go
    // peers' library and with the Python checker; the published ones also
    // carry litewitness's cosignature of the same checkpoint, which verifies
    // under all three. Sizes never go back, and every one is a prefix of the
    // final tree, recomputed from the log's own tiles.
    let log_keys = [
        (PUSHED, pushed.vkey(), pushed.storage()),
        (PULLED, pulled.vkey(), pulled.storage()),
    ];
    let checks = artifacts.join("checks");
    std::fs::create_dir_all(&checks).unwrap();
    let mut all_notes = String::new();
    for (origin, log_vkey, storage) in log_keys {
        let notes = seen.of(origin);
        assert!(
            notes.len() >= 6,
            "{origin}: {} cosigned checkpoints seen",
            notes.len()
        );
        let mut last_size = 0;
        let final_size =
            checkpoint_size(&std::fs::read_to_string(storage.join("checkpoint")).unwrap()).unwrap();
        for note in notes {
            all_notes.push_str(note);
            all_notes.push('\n');
            let mut keys = vec![
                VerifierKey::parse_vkey(log_vkey).unwrap(),
                VerifierKey::parse_vkey(&ours).unwrap(),
            ];
            let mut vkeys = vec![log_vkey, ours.as_str()];
            if origin == PUSHED && note.contains(&format!("— {LITEWITNESS} ")) {
                for (_, vkey) in &peers {
                    keys.push(VerifierKey::parse_vkey(vkey).unwrap());
                    vkeys.push(vkey.as_str());
                }
            }
            let verified = verify_note(parse_note(note.as_bytes()).unwrap(), &keys).unwrap();
            assert_eq!(verified.verified().len(), keys.len(), "{note}");
            independent_verdicts(&checks, note, &vkeys, true);
            let checkpoint = parse_checkpoint_text(verified.note().text()).unwrap();
            assert_eq!(checkpoint.origin(), origin);
            assert!(
                checkpoint.size() >= last_size,
                "{origin}: rollback to {}",
                checkpoint.size()
            );
            last_size = checkpoint.size();
            assert_eq!(
                *checkpoint.root_hash(),
                root_from_tiles(storage, final_size, checkpoint.size()),
                "{origin} at {}: the cosigned root is not the log's",
                checkpoint.size()
            );
        }
    }
    std::fs::write(artifacts.join("cosigned-checkpoints.txt"), &all_notes).unwrap();
    // The independent checkers can fail: a flipped byte in a cosignature.
    let sample = seen.of(PULLED)[0].clone();
    let tampered = tamper_last_signature(&sample);
    independent_verdicts(&checks, &tampered, &[pulled.vkey(), &ours], false);
    assert!(
        verify_note(
            parse_note(tampered.as_bytes()).unwrap(),
            &[VerifierKey::parse_vkey(&ours).unwrap()]
        )
        .is_err()
    );

    // Shutdown: every service exits 0, and the archive's signed manifest lists
    // the archived checkpoints, each byte-exact and cosigned by us.
    prometheus.stop().await;
    pushed.stop().await;
    pulled.stop().await;
    let dir = stack.dir().to_path_buf();
    let manifest_key = stack.manifest_key_path().to_path_buf();
    assert!(stack.stop().await, "all three services exit 0 on SIGTERM");
    let archive = dir.join("archive");
    let manifests: Vec<_> = std::fs::read_dir(archive.join("manifests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!manifests.is_empty(), "a manifest is sealed at shutdown");
    let verifier = ManifestVerifier::from_pem(&public_pem(&manifest_key)).unwrap();
    let mut archived: Vec<(String, String)> = Vec::new();
    for manifest in manifests {
        let verified = verify_manifest(&std::fs::read(&manifest).unwrap(), &verifier).unwrap();
        for subject in &verified.subjects {
            use sha2::Digest as _;
            let bytes = std::fs::read(archive.join(&subject.name)).unwrap();
            assert_eq!(
                sha2::Sha256::digest(&bytes).as_slice(),
                subject.sha256.as_slice()
            );
            let note = String::from_utf8(bytes).unwrap();
            verify_note(
                parse_note(note.as_bytes()).unwrap(),
                &[VerifierKey::parse_vkey(&ours).unwrap()],
            )
            .unwrap();
            let text = parse_note(note.as_bytes()).unwrap().text().to_owned();
            let origin = parse_checkpoint_text(&text).unwrap().origin().to_owned();
            archived.push((origin, text));
        }
    }
    // No cosignature is lost: every checkpoint a client saw cosigned, before
    // and after each crash, is in the signed archive.
    for (origin, note) in &seen.notes {
        let text = parse_note(note.as_bytes()).unwrap().text().to_owned();
        assert!(
            archived.iter().any(|(o, t)| o == origin && *t == text),
            "{origin}: cosigned but not archived:\n{text}"
        );
    }
}

/// The PEM public key of the P-256 private key in `path`.
fn public_pem(path: &Path) -> String {
    use p256::pkcs8::{DecodePrivateKey as _, EncodePublicKey as _, LineEnding};
    let key = p256::SecretKey::from_pkcs8_pem(&std::fs::read_to_string(path).unwrap()).unwrap();
    key.public_key().to_public_key_pem(LineEnding::LF).unwrap()
}

/// `note` with one bit of its last signature flipped.
fn tamper_last_signature(note: &str) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    let mut lines: Vec<String> = note.lines().map(str::to_owned).collect();
    let last = lines.last_mut().unwrap();
    let (head, b64) = last.rsplit_once(' ').unwrap();
    let mut blob = STANDARD.decode(b64).unwrap();
    let n = blob.len();
    blob[n - 1] ^= 1;
    *last = format!("{head} {}", STANDARD.encode(blob));
    lines.join("\n") + "\n"
}
