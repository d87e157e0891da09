//! Our deployed witness (signer, witness and gateway as real processes) against
//! the misbehaving log, on both of its faces: tlog-tiles (Ed25519) and Rekor v1
//! (ECDSA P-256). Each test first lets the witness cosign the honest log, then
//! switches the log into one misbehaviour at run time and checks that the
//! witness never cosigns what it serves, records evidence where the
//! misbehaviour is provable (a checkpoint validly signed by the log that fails
//! a consistency check), and shows the failure in the metrics scraped through
//! the gateway's `/metrics`. Where a misbehaviour is recoverable, the log then
//! turns honest again and the witness must cosign it, so every refusal is shown
//! to come from the misbehaviour and not from a broken setup.
//!
//! Artifacts (every service's output, a metrics scrape per test, the state
//! database and archive) stay under `target/e2e/misbehaving-log-*/`.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use integration::misbehaving_log::{Face, MisbehavingLog, Mode};
use integration::stack::{Stack, checkpoint_size};
use witness_core::merkle::Hash;

/// How long the witness (polling every second) gets to act on a change.
const WITNESS_REACTION: Duration = Duration::from_secs(30);
/// The feeder's per-request limit (`DEFAULT_REQUEST_TIMEOUT`) plus margin: how
/// long a stalled request can take to count as failed.
const STALL_DETECTION: Duration = Duration::from_secs(50);
/// Entries of every test log at start.
const INITIAL_ENTRIES: u64 = 7;

const FACES: [Face; 2] = [Face::Tiles, Face::RekorV1];

/// One test: a misbehaving log (both faces pulled) and our witness stack.
struct Setup {
    log: MisbehavingLog,
    stack: Stack,
    name: String,
}

impl Setup {
    /// Starts the log and the stack, and waits until the witness cosigned the
    /// honest log on both faces.
    async fn start(name: &str) -> Setup {
        let log = MisbehavingLog::start(name, INITIAL_ENTRIES).await.unwrap();
        let logs_toml = format!("{}\n{}", log.tiles_log_toml(), log.rekor_v1_log_toml());
        let stack = Stack::start(name, &logs_toml).await.unwrap();
        let setup = Setup {
            log,
            stack,
            name: name.to_owned(),
        };
        setup
            .wait_cosigned_honest(&setup.log, INITIAL_ENTRIES)
            .await;
        setup
    }

    /// Waits until the witness cosigned `log`'s honest tree at `size` on both
    /// faces, and checks the root.
    async fn wait_cosigned_honest(&self, log: &MisbehavingLog, size: u64) {
        self.wait_cosigned_honest_within(log, size, WITNESS_REACTION)
            .await;
    }

    /// [`Setup::wait_cosigned_honest`] within `timeout`.
    async fn wait_cosigned_honest_within(
        &self,
        log: &MisbehavingLog,
        size: u64,
        timeout: Duration,
    ) {
        for face in FACES {
            let origin = log.origin(face);
            let text = self
                .stack
                .wait_cosigned(&origin, size, timeout)
                .await
                .unwrap();
            let (cosigned_size, root) = size_and_root(&text);
            assert_eq!(cosigned_size, size, "{origin}: {text}");
            assert_eq!(root, log.honest_root(size).unwrap(), "{origin}: {text}");
        }
    }

    /// The tree the witness last cosigned for `origin`.
    async fn cosigned(&self, origin: &str) -> (u64, Hash) {
        let text = self
            .stack
            .cosigned_checkpoint(origin)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("nothing cosigned for {origin}"));
        size_and_root(&text)
    }

    /// Waits until the sum of the `name` series with `labels` reaches `min`.
    async fn wait_metric(&self, name: &str, labels: &[(&str, &str)], min: f64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.stack.metrics().await.unwrap();
            let value = metric_sum(&text, name, labels);
            if value >= min {
                return;
            }
            if Instant::now() > deadline {
                let relevant: Vec<&str> = text
                    .lines()
                    .filter(|line| line.starts_with("witness_"))
                    .collect();
                panic!(
                    "{name}{labels:?} is {value} after {timeout:?}, expected >= {min}; \
                     witness metrics:\n{}",
                    relevant.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The misbehaviour evidence the witness stored for `origin`: (note, reason).
    fn evidence(&self, origin: &str) -> Vec<(String, String)> {
        let path = self.stack.dir().join("witness").join("state.db");
        let db = rusqlite::Connection::open(&path).unwrap();
        db.busy_timeout(Duration::from_secs(10)).unwrap();
        let mut query = db
            .prepare("SELECT note, reason FROM evidence WHERE origin = ?1 ORDER BY id")
            .unwrap();
        query
            .query_map([origin], |row| {
                let note: Vec<u8> = row.get(0)?;
                Ok((String::from_utf8_lossy(&note).into_owned(), row.get(1)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Waits until evidence for `origin` with `reason` about a checkpoint of
    /// `root` is stored.
    async fn wait_evidence(&self, origin: &str, reason: &str, root: &Hash) {
        let deadline = Instant::now() + WITNESS_REACTION;
        loop {
            let evidence = self.evidence(origin);
            let found = evidence.iter().any(|(note, found_reason)| {
                found_reason == reason && note.contains(&format!("\n{}\n", root.to_base64()))
            });
            if found {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {reason} evidence about root {root} for {origin}: {evidence:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The witness's state and archive never name `root` for `origin`, and its
    /// latest cosigned checkpoint is still the honest one at `honest_size`.
    async fn assert_never_cosigned(&self, origin: &str, root: &Hash, honest_size: u64) {
        let (size, cosigned_root) = self.cosigned(origin).await;
        assert_ne!(cosigned_root, *root, "{origin}: the bad root was cosigned");
        assert_eq!(size, honest_size, "{origin}: the cosigned size moved");
        assert_eq!(
            Some(cosigned_root),
            self.log.honest_root(size),
            "{origin}: the cosigned root is not the honest one"
        );
        let needle = root.to_base64();
        for file in files_below(&self.stack.dir().join("archive")) {
            let bytes = std::fs::read(&file).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(&needle),
                "{} archives the bad root {root} of {origin}",
                file.display()
            );
        }
    }

    /// Saves a metrics scrape next to the services' output and stops.
    async fn finish(self) {
        if let Ok(text) = self.stack.metrics().await {
            let _ = std::fs::write(self.stack.artifacts().join("metrics.txt"), text);
        }
        self.stack.stop().await;
        self.log.stop().await;
        eprintln!("artifacts: target/e2e/{}", self.name);
    }
}

/// Size and root of a checkpoint note's text.
fn size_and_root(text: &str) -> (u64, Hash) {
    let size = checkpoint_size(text).unwrap();
    let root = Hash::parse_base64(text.lines().nth(2).unwrap()).unwrap();
    (size, root)
}

/// The sum of every sample of `name` whose labels include `labels`.
fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((series_name, rest)) => (series_name, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let matches = series_name == name
                && labels
                    .iter()
                    .all(|(key, value)| series_labels.contains(&format!("{key}=\"{value}\"")));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Every file below `dir` (none if it does not exist).
fn files_below(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn split_view_at_a_cosigned_size_is_never_cosigned_and_kept_as_evidence() {
    let setup = Setup::start("misbehaving-log-fork").await;
    // A real Prometheus scraping the gateway with the project's alert rules:
    // before the fork, the misbehaviour alerts are quiet.
    let prometheus = integration::prometheus::Prometheus::start(
        &setup.stack.artifacts().join("prometheus"),
        setup.stack.artifacts(),
        setup.stack.gateway_url().trim_start_matches("http://"),
    )
    .await
    .unwrap();
    prometheus
        .wait_for("up{job=\"rekor-witness\"}", |v| v == 1.0, WITNESS_REACTION)
        .await
        .unwrap();
    assert!(
        prometheus
            .query("ALERTS{alertstate=\"firing\"}")
            .await
            .unwrap()
            .is_empty()
    );
    let log = &setup.log;
    log.set_mode(Mode::Fork { extra: 0 });
    for face in FACES {
        let fork = log.served(face);
        assert_eq!(fork.size, INITIAL_ENTRIES, "a fork at the cosigned size");
        let origin = log.origin(face);
        setup
            .wait_metric(
                "witness_misbehaviour_total",
                &[("log", &origin), ("reason", "root_mismatch")],
                1.0,
                WITNESS_REACTION,
            )
            .await;
        // Also a verification failure, for the WitnessVerifyFailures alert.
        setup
            .wait_metric(
                "witness_verify_failures_total",
                &[("log", &origin), ("reason", "root_mismatch")],
                1.0,
                WITNESS_REACTION,
            )
            .await;
        setup
            .wait_evidence(&origin, "root_mismatch", &fork.root)
            .await;
        setup
            .assert_never_cosigned(&origin, &fork.root, INITIAL_ENTRIES)
            .await;
    }
    // The plan's alert and the misbehaviour alert fire for both faces.
    for alert in ["WitnessVerifyFailures", "WitnessLogMisbehaviour"] {
        let firing = prometheus
            .wait_for(
                &format!("count(ALERTS{{alertname=\"{alert}\",alertstate=\"firing\"}})"),
                |v| v >= 2.0,
                WITNESS_REACTION,
            )
            .await
            .unwrap();
        assert!(!firing.is_empty(), "{alert}");
    }
    prometheus.stop().await;
    setup.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn forked_continuation_is_never_cosigned_and_kept_as_evidence() {
    let setup = Setup::start("misbehaving-log-fork-continued").await;
    let log = &setup.log;
    // A fork that grew on its own: its checkpoints, tiles, entries and proofs
    // agree with each other, only not with the tree the witness cosigned.
    log.set_mode(Mode::Fork { extra: 4 });
    for face in FACES {
        let fork = log.served(face);
        assert_eq!(fork.size, INITIAL_ENTRIES + 4);
        let origin = log.origin(face);
        setup
            .wait_metric(
                "witness_misbehaviour_total",
                &[("log", &origin), ("reason", "consistency_proof_invalid")],
                1.0,
                WITNESS_REACTION,
            )
            .await;
        // Also a verification failure, for the WitnessVerifyFailures alert.
        setup
            .wait_metric(
                "witness_verify_failures_total",
                &[("log", &origin), ("reason", "consistency_proof_invalid")],
                1.0,
                WITNESS_REACTION,
            )
            .await;
        setup
            .wait_evidence(&origin, "consistency_proof_invalid", &fork.root)
            .await;
        setup
            .assert_never_cosigned(&origin, &fork.root, INITIAL_ENTRIES)
            .await;
    }
    setup.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_to_a_smaller_tree_is_never_cosigned() {
    let setup = Setup::start("misbehaving-log-rollback").await;
    let log = &setup.log;
    log.set_mode(Mode::Rollback { by: 3 });
    for face in FACES {
        let rollback = log.served(face);
        assert_eq!(rollback.size, INITIAL_ENTRIES - 3);
        let origin = log.origin(face);
        // The feeder refuses to submit a tree smaller than the cosigned one:
        // no consistency proof can exist, and it counts the log's fault.
        setup
            .wait_metric(
                "witness_verify_failures_total",
                &[("log", &origin), ("reason", "old_size_above_size")],
                1.0,
                WITNESS_REACTION,
            )
            .await;
        setup
            .assert_never_cosigned(&origin, &rollback.root, INITIAL_ENTRIES)
            .await;
    }
    // Back to honest and grown: the witness resumes from what it cosigned.
    log.grow_then_set_mode(2, Mode::Honest);
    setup.wait_cosigned_honest(log, INITIAL_ENTRIES + 2).await;
    setup.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn checkpoints_signed_by_another_key_named_like_the_log_are_never_cosigned() {
    let setup = Setup::start("misbehaving-log-wrong-key").await;
    let log = &setup.log;
    // A new size, so the witness would cosign it if the signature were good;
    // first with the impostor key's own key ID, then claiming the log's.
    for (mode, reason) in [
        (Mode::WrongKey, "no_trusted_signature"),
        (Mode::ImpersonatedKey, "invalid_signature"),
    ] {
        log.grow_then_set_mode(2, mode);
        for face in FACES {
            let forged = log.served(face);
            let origin = log.origin(face);
            setup
                .wait_metric(
                    "witness_verify_failures_total",
                    &[("log", &origin), ("reason", reason)],
                    1.0,
                    WITNESS_REACTION,
                )
                .await;
            setup
                .assert_never_cosigned(&origin, &forged.root, INITIAL_ENTRIES)
                .await;
            // A note the log never signed proves nothing about the log.
            assert!(
                setup.evidence(&origin).is_empty(),
                "{origin}: unattributable note kept as evidence"
            );
        }
    }
    // The same tree, signed by the log's key, is cosigned.
    log.set_mode(Mode::Honest);
    setup.wait_cosigned_honest(log, INITIAL_ENTRIES + 4).await;
    setup.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_consistency_proofs_and_tiles_are_never_cosigned() {
    let setup = Setup::start("misbehaving-log-bad-proof").await;
    let log = &setup.log;
    log.grow_then_set_mode(3, Mode::BadProof);
    let grown = INITIAL_ENTRIES + 3;
    let tiles = log.served(Face::Tiles);
    assert_eq!(tiles.size, grown);
    // Tiles: the feeder recomputes the root from the tiles and never submits
    // a checkpoint its tiles do not hash to.
    let tiles_origin = log.origin(Face::Tiles);
    setup
        .wait_metric(
            "witness_verify_failures_total",
            &[
                ("log", &tiles_origin),
                ("reason", "checkpoint_proof_mismatch"),
            ],
            1.0,
            WITNESS_REACTION,
        )
        .await;
    // Rekor v1: the log's own proof is submitted and refused by the witness,
    // which keeps the signed checkpoint as evidence.
    let rekor = log.served(Face::RekorV1);
    let rekor_origin = log.origin(Face::RekorV1);
    setup
        .wait_metric(
            "witness_misbehaviour_total",
            &[
                ("log", &rekor_origin),
                ("reason", "consistency_proof_invalid"),
            ],
            1.0,
            WITNESS_REACTION,
        )
        .await;
    setup
        .wait_evidence(&rekor_origin, "consistency_proof_invalid", &rekor.root)
        .await;
    for (origin, root) in [(&tiles_origin, tiles.root), (&rekor_origin, rekor.root)] {
        setup
            .assert_never_cosigned(origin, &root, INITIAL_ENTRIES)
            .await;
    }
    // The same checkpoints with honest proofs are cosigned.
    log.set_mode(Mode::Honest);
    setup.wait_cosigned_honest(log, grown).await;
    setup.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_and_trickling_logs_do_not_hold_up_other_logs() {
    let name = "misbehaving-log-stall";
    let stalled = MisbehavingLog::start("stalled", INITIAL_ENTRIES)
        .await
        .unwrap();
    let trickling = MisbehavingLog::start("trickling", INITIAL_ENTRIES)
        .await
        .unwrap();
    let honest = MisbehavingLog::start("honest", INITIAL_ENTRIES)
        .await
        .unwrap();
    let logs_toml: String = [&stalled, &trickling, &honest]
        .iter()
        .map(|log| format!("{}\n{}\n", log.tiles_log_toml(), log.rekor_v1_log_toml()))
        .collect();
    let stack = Stack::start(name, &logs_toml).await.unwrap();
    let setup = Setup {
        log: honest,
        stack,
        name: name.to_owned(),
    };
    for log in [&stalled, &trickling, &setup.log] {
        setup.wait_cosigned_honest(log, INITIAL_ENTRIES).await;
    }

    stalled.grow_then_set_mode(5, Mode::Stall);
    trickling.grow_then_set_mode(
        5,
        Mode::Trickle {
            every: Duration::from_secs(2),
        },
    );
    let started = Instant::now();
    // Wait until both faces of the stalled log have a request held open.
    while stalled.stalled_requests() < 2 {
        assert!(
            started.elapsed() < WITNESS_REACTION,
            "the witness never reached the stalled log"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    setup.log.grow(5);
    setup
        .wait_cosigned_honest(&setup.log, INITIAL_ENTRIES + 5)
        .await;
    assert!(
        stalled.stalled_requests() >= 2,
        "the honest log was cosigned only after the stalled requests ended"
    );
    let honest_done = started.elapsed();
    assert!(
        honest_done < Duration::from_secs(25),
        "the honest log took {honest_done:?}, as long as a stalled request"
    );

    // Each stalled or trickled request fails at the feeder's time limit, and
    // is counted against its log.
    for log in [&stalled, &trickling] {
        for feeder in [log.tiles_origin(), log.rekor_v1_name()] {
            setup
                .wait_metric(
                    "witness_log_fetches_total",
                    &[("log", feeder), ("outcome", "fetch")],
                    1.0,
                    STALL_DETECTION,
                )
                .await;
        }
        for face in FACES {
            let (size, _) = setup.cosigned(&log.origin(face)).await;
            assert_eq!(size, INITIAL_ENTRIES, "{}", log.origin(face));
        }
    }

    // Answering again, they are cosigned again (after the feeders' backoff,
    // and a trickled request still in flight running into its time limit).
    for log in [&stalled, &trickling] {
        log.set_mode(Mode::Honest);
    }
    for log in [&stalled, &trickling] {
        setup
            .wait_cosigned_honest_within(log, INITIAL_ENTRIES + 5, STALL_DETECTION)
            .await;
    }
    stalled.stop().await;
    trickling.stop().await;
    setup.finish().await;
}
