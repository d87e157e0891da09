//! A real Rekor v1 (rekor-server on Trillian on MariaDB) started by the test:
//! its signed checkpoints, consistency proofs, inclusion proofs and frozen
//! shard all verify with our verification core, and tampering with any of them
//! is caught.

use integration::rekor_v1::{HOSTNAME, INACTIVE_SHARD_ENTRIES, RekorV1};
use witness_core::checkpoint::VerifiedCheckpoint;
use witness_core::merkle::{Hash, verify_consistency};
use witness_core::note::VerifierKey;
use witness_core::rekor::{
    LogInfo, parse_consistency_proof_response, parse_log_entry, parse_log_info,
};

fn log_key(rekor: &RekorV1) -> VerifierKey {
    VerifierKey::from_pem(HOSTNAME, rekor.public_key_pem()).expect("Rekor's public key parses")
}

async fn log_info(rekor: &RekorV1) -> (LogInfo, Vec<u8>) {
    let body = rekor.get("/api/v1/log").await.expect("GET /api/v1/log");
    let info = parse_log_info(&body).expect("GET /api/v1/log parses");
    (info, body)
}

fn verified_active(rekor: &RekorV1, info: &LogInfo, key: &VerifierKey) -> VerifiedCheckpoint {
    let verified = info
        .active
        .verify(std::slice::from_ref(key))
        .expect("the active shard's signed checkpoint verifies with the log key");
    assert_eq!(verified.checkpoint().origin(), rekor.origin());
    assert_eq!(info.active.tree_id, rekor.active_tree_id());
    verified
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekor_v1_checkpoints_proofs_and_frozen_shard_verify_and_tampering_is_caught() {
    let artifacts = integration::artifacts_dir("rekor_v1_stack").expect("artifacts dir");
    let state = tempfile::tempdir().expect("temp dir");
    let mut rekor = RekorV1::start(state.path(), &artifacts)
        .await
        .unwrap_or_else(|e| panic!("starting Rekor v1: {e}"));
    let startup = rekor.startup_time();
    eprintln!("Rekor v1 stack started in {startup:.2?}");
    std::fs::write(
        artifacts.join("startup-time.txt"),
        format!("{:.3}\n", startup.as_secs_f64()),
    )
    .expect("writing startup-time.txt");
    let key = log_key(&rekor);

    // The frozen shard: listed, sized, signed by the same key under its own origin.
    let (info, body) = log_info(&rekor).await;
    std::fs::write(artifacts.join("log-info-start.json"), &body).expect("saving log info");
    assert_eq!(info.inactive.len(), 1, "one inactive shard is listed");
    let frozen = &info.inactive[0];
    assert_eq!(frozen.tree_id, rekor.inactive_tree_id());
    assert_eq!(frozen.tree_size, INACTIVE_SHARD_ENTRIES);
    let frozen_checkpoint = frozen
        .verify(std::slice::from_ref(&key))
        .expect("the frozen shard's checkpoint verifies");
    assert_eq!(
        frozen_checkpoint.checkpoint().origin(),
        rekor.inactive_origin()
    );
    assert_eq!(
        frozen_checkpoint.checkpoint().size(),
        INACTIVE_SHARD_ENTRIES
    );
    let empty = verified_active(&rekor, &info, &key);
    assert_eq!(
        empty.checkpoint().size(),
        0,
        "the active shard starts empty"
    );

    // An entry of the frozen shard, fetched by virtual index 0: its inclusion
    // proof leads to a checkpoint of the frozen shard.
    let first = rekor
        .get("/api/v1/log/entries?logIndex=0")
        .await
        .expect("GET entry 0");
    let first = parse_log_entry(&first).expect("entry 0 parses");
    let included = first
        .verify_inclusion(std::slice::from_ref(&key))
        .expect("entry 0's inclusion proof verifies");
    assert_eq!(included.checkpoint().origin(), rekor.inactive_origin());
    assert_eq!(first.shard_offset(), Some(0));

    // New entries go to the active shard, after the frozen shard's indexes;
    // each comes back with an inclusion proof that verifies.
    let mut added = Vec::new();
    for expected in 0..2u64 {
        let entry = rekor
            .add_entry_returning_entry()
            .await
            .unwrap_or_else(|e| panic!("adding an entry: {e}"));
        assert_eq!(entry.log_index, INACTIVE_SHARD_ENTRIES + expected);
        let parsed = parse_log_entry(&entry.answer).expect("Rekor's answer parses");
        assert_eq!(parsed.uuid.as_deref(), Some(entry.uuid.as_str()));
        let checkpoint = parsed
            .verify_inclusion(std::slice::from_ref(&key))
            .expect("the new entry's inclusion proof verifies");
        assert_eq!(checkpoint.checkpoint().origin(), rekor.origin());
        assert_eq!(parsed.shard_offset(), Some(INACTIVE_SHARD_ENTRIES));
        added.push(parsed);
    }
    let (info, _) = log_info(&rekor).await;
    let old = verified_active(&rekor, &info, &key);
    assert_eq!(old.checkpoint().size(), 2);

    for _ in 0..3 {
        rekor
            .add_entry()
            .await
            .unwrap_or_else(|e| panic!("adding an entry: {e}"));
    }
    let (info, body) = log_info(&rekor).await;
    std::fs::write(artifacts.join("log-info-grown.json"), &body).expect("saving log info");
    let new = verified_active(&rekor, &info, &key);
    assert_eq!(new.checkpoint().size(), 5);
    assert_eq!(info.inactive.len(), 1, "the frozen shard is still listed");
    assert_eq!(
        info.inactive[0].tree_size, INACTIVE_SHARD_ENTRIES,
        "and did not grow"
    );

    // The consistency proof between the two signed checkpoints verifies.
    let path = format!(
        "/api/v1/log/proof?firstSize=2&lastSize=5&treeID={}",
        rekor.active_tree_id()
    );
    let body = rekor.get(&path).await.expect("GET consistency proof");
    std::fs::write(artifacts.join("consistency-2-5.json"), &body).expect("saving the proof");
    let proof = parse_consistency_proof_response(&body).expect("the proof parses");
    verify_consistency(
        2,
        5,
        old.checkpoint().root_hash(),
        new.checkpoint().root_hash(),
        &proof.hashes,
    )
    .expect("the consistency proof from size 2 to 5 verifies");

    // Tampering is caught: a flipped proof hash, a wrong old root, or a
    // checkpoint whose signature is from another key.
    let mut bad = proof.hashes.clone();
    bad[0].0[0] ^= 1;
    assert!(
        verify_consistency(
            2,
            5,
            old.checkpoint().root_hash(),
            new.checkpoint().root_hash(),
            &bad
        )
        .is_err()
    );
    assert!(
        verify_consistency(
            2,
            5,
            &Hash([7; 32]),
            new.checkpoint().root_hash(),
            &proof.hashes
        )
        .is_err()
    );
    let other_pem = {
        use p256::pkcs8::{EncodePublicKey as _, LineEnding};
        p256::ecdsa::SigningKey::from_slice(&[9u8; 32])
            .expect("a valid scalar")
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("PEM")
    };
    let other = VerifierKey::from_pem(HOSTNAME, &other_pem).expect("the other key parses");
    assert!(info.active.verify(std::slice::from_ref(&other)).is_err());
    assert!(
        added[0]
            .verify_inclusion(std::slice::from_ref(&other))
            .is_err()
    );

    rekor.stop().await;
}

/// The sum of a counter's samples in a Prometheus exposition (`name` with or
/// without the `_total` suffix OpenTelemetry adds) whose labels contain `label`.
fn counter_sum(exposition: &str, name: &str, label: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && line.contains(label))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            (metric == name || metric == format!("{name}_total"))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// Our cosignature on `text`, checked with the witness's key, and the log's
/// signature, checked with Rekor's key: the checkpoint the gateway serves.
fn verify_cosigned(text: &str, origin: &str, log_key: &VerifierKey, witness: &VerifierKey) -> u64 {
    let by_log = witness_core::checkpoint::verify_checkpoint(
        text.as_bytes(),
        std::slice::from_ref(log_key),
        Some(origin),
    )
    .unwrap_or_else(|e| panic!("the cosigned checkpoint of {origin} keeps Rekor's signature: {e}"));
    let note = witness_core::note::parse_note(text.as_bytes()).expect("the note parses");
    let by_witness = witness_core::note::verify_note(note, std::slice::from_ref(witness))
        .unwrap_or_else(|e| panic!("our cosignature on {origin} verifies: {e}"));
    assert_eq!(
        by_witness.verified().len(),
        1,
        "exactly our cosignature verifies"
    );
    by_log.checkpoint().size()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witness_pulls_rekor_v1_and_cosigns_both_shards_again_after_growth() {
    let artifacts = integration::artifacts_dir("rekor_v1_witness").expect("artifacts dir");
    let state = tempfile::tempdir().expect("temp dir");
    let mut rekor = RekorV1::start(state.path(), &artifacts)
        .await
        .unwrap_or_else(|e| panic!("starting Rekor v1: {e}"));
    eprintln!("Rekor v1 stack started in {:.2?}", rekor.startup_time());
    for _ in 0..2 {
        rekor
            .add_entry()
            .await
            .unwrap_or_else(|e| panic!("adding an entry: {e}"));
    }
    let logs_toml = format!(
        "[[log]]\nkey = \"{}\"\norigin = \"{}\"\nfeed = \"rekor-v1\"\nurl = \"{}\"\n",
        rekor.public_key_path().display(),
        rekor.hostname(),
        rekor.url()
    );
    let stack = integration::stack::Stack::start_in(&artifacts, &logs_toml)
        .await
        .unwrap_or_else(|e| panic!("starting our witness stack: {e}"));
    let log_key = log_key(&rekor);
    let witness = VerifierKey::parse_vkey(stack.witness_vkey()).expect("our witness vkey parses");
    let timeout = std::time::Duration::from_secs(30);

    // Both shards are witnessed, each under its own origin.
    let frozen = stack
        .wait_cosigned(&rekor.inactive_origin(), INACTIVE_SHARD_ENTRIES, timeout)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let size = verify_cosigned(&frozen, &rekor.inactive_origin(), &log_key, &witness);
    assert_eq!(size, INACTIVE_SHARD_ENTRIES);
    let active = stack
        .wait_cosigned(&rekor.origin(), 2, timeout)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        verify_cosigned(&active, &rekor.origin(), &log_key, &witness),
        2
    );
    std::fs::write(artifacts.join("cosigned-active-2.txt"), &active).expect("saving");
    std::fs::write(artifacts.join("cosigned-frozen.txt"), &frozen).expect("saving");

    // The log grows; the witness follows it with a consistency proof.
    for _ in 0..3 {
        rekor
            .add_entry()
            .await
            .unwrap_or_else(|e| panic!("adding an entry: {e}"));
    }
    let grown = stack
        .wait_cosigned(&rekor.origin(), 5, timeout)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        verify_cosigned(&grown, &rekor.origin(), &log_key, &witness),
        5
    );
    std::fs::write(artifacts.join("cosigned-active-5.txt"), &grown).expect("saving");

    let metrics = stack
        .metrics()
        .await
        .unwrap_or_else(|e| panic!("metrics: {e}"));
    std::fs::write(artifacts.join("metrics.txt"), &metrics).expect("saving the scrape");
    let cosignatures = counter_sum(&metrics, "witness_cosignatures", "outcome=\"ok\"");
    assert!(
        cosignatures >= 3.0,
        "witness_cosignatures counts the frozen shard and both active checkpoints, got {cosignatures}"
    );
    assert_eq!(counter_sum(&metrics, "witness_verify_failures", ""), 0.0);

    assert!(stack.stop().await, "our services exit cleanly");
    rekor.stop().await;
}
