//! Defence in depth: a compromised witness core cannot get a rollback or a
//! fork cosigned, because the signer keeps its own record and checks every
//! request against it (the fork guard).
//!
//! The real stack (signer, witness, gateway as processes) cosigns a log up to
//! size 10. Then the witness process is stopped and a broken core takes over
//! its state and its signer identity: witness-core built with the test-only
//! `fault-injection` feature, `Witness::without_core_checks`, which skips the
//! core's own old-size, rollback and consistency checks and asks the signer
//! anyway. Every attack must be refused by the signer (an audit line says so),
//! leave the signer's record and the witness's state as they were, and
//! produce no cosignature; an honest core refuses the same attacks itself,
//! without the signer ever hearing of them. Afterwards the real witness takes
//! over again and serves the untouched history.
//!
//! Run with `cargo test -p integration --features fault-injection --test
//! broken_core` (scripts/test does).

#![allow(clippy::unwrap_used)]

mod attack_support;
#[path = "../../witness-core/tests/witness_support/mod.rs"]
mod witness_support;

use std::sync::Arc;
use std::time::Duration;

use attack_support::{
    add_checkpoint, audit_lines, audit_lines_since, fork_guard_record, upstream_addrs,
    witness_state,
};
use integration::stack::{Service, Stack};
use witness_core::merkle::leaf_hash;
use witness_core::note::{VerifierKey, parse_note, verify_note};
use witness_core::service::metrics::WitnessMetrics;
use witness_core::service::signer_client::{GrpcSigner, SignerConfig};
use witness_core::service::store::LogStore;
use witness_core::service::store::sqlite::SqliteStore;
use witness_core::service::witness::Witness;
use witness_support::TestLog;

const ORIGIN: &str = "broken-core.example/log";

/// The log's tree with its leaves from `common` on replaced: signed by the
/// log's real key, a different history.
fn fork(log: &TestLog, common: usize, size: u64) -> TestLog {
    let mut forked = TestLog::new(ORIGIN, 31);
    forked.leaves = log.leaves[..common].to_vec();
    for i in common as u64..size {
        forked
            .leaves
            .push(leaf_hash(format!("fork {i}").as_bytes()));
    }
    forked
}

/// A core over the stack's witness state and signer, with the witness's own
/// signer identity (as a compromised witness host would have).
async fn core_over(stack: &Stack, store: Arc<dyn LogStore>, log: &TestLog) -> Witness {
    let (_, signer) = upstream_addrs(stack);
    let pki = stack.dir().join("pki");
    let metrics = Arc::new(WitnessMetrics::new().unwrap());
    let signer = GrpcSigner::connect(
        &SignerConfig {
            endpoint: format!("https://{signer}"),
            ca: pki.join("ca.pem"),
            client_cert: pki.join("witness-client.pem"),
            client_key: pki.join("witness-client.key"),
            server_name: Some("localhost".into()),
            timeout: Duration::from_secs(10),
        },
        metrics.clone(),
    )
    .unwrap();
    let keys = signer.keys().await.unwrap();
    Witness::new(
        vec![log.keys()],
        Vec::new(),
        keys.cosigning,
        store,
        Arc::new(signer),
        None,
        metrics,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_guard_refuses_rollbacks_and_forks_from_a_core_that_skips_its_checks() {
    let mut log = TestLog::new(ORIGIN, 31);
    log.grow(16);
    let logs_toml = format!(
        "[[log]]\norigin = \"{ORIGIN}\"\nkey = \"{}\"\n",
        log.verifier.to_vkey()
    );
    let mut stack = Stack::start("broken_core", &logs_toml).await.unwrap();
    let gateway = stack.gateway_url();
    let answer = add_checkpoint(stack.http(), &gateway, 0, &[], &log.signed(10)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(stack.stop_service(Service::Witness).await, "clean stop");

    let store: Arc<dyn LogStore> =
        Arc::new(SqliteStore::open(&stack.dir().join("witness/state.db")).unwrap());
    let honest = core_over(&stack, store.clone(), &log).await;
    let broken = core_over(&stack, store.clone(), &log)
        .await
        .without_core_checks();

    let same_size_fork = fork(&log, 4, 10);
    let longer_fork = fork(&log, 4, 14);
    // (attack, old size claimed, proof, checkpoint note)
    let attacks = [
        ("rollback to 5", 10, Vec::new(), log.signed(5)),
        ("rollback to 5 claiming old 5", 5, Vec::new(), log.signed(5)),
        ("rollback to 0", 0, Vec::new(), log.signed(0)),
        (
            "fork at the cosigned size",
            10,
            Vec::new(),
            same_size_fork.signed(10),
        ),
        (
            "longer fork with a proof within the fork",
            10,
            longer_fork.proof(10, 14),
            longer_fork.signed(14),
        ),
        (
            "longer fork claiming the fork point as old",
            4,
            longer_fork.proof(4, 14),
            longer_fork.signed(14),
        ),
        (
            "longer fork claiming nothing was cosigned",
            0,
            Vec::new(),
            longer_fork.signed(14),
        ),
    ];
    let record = fork_guard_record(&stack);
    let state = witness_state(&stack);
    assert_eq!(record[ORIGIN].0, 10);
    assert_eq!(state[ORIGIN].0, 10);
    assert_eq!(record[ORIGIN].1, log.root(10).0.to_vec());

    for (attack, old, proof, note) in &attacks {
        // The honest core refuses by itself: the signer never hears of it.
        let audited = audit_lines(&stack).len();
        let error = honest
            .add_checkpoint(*old, proof.clone(), note)
            .await
            .expect_err(attack);
        assert!(
            matches!(error.http_status(), 400 | 409 | 422),
            "{attack}: honest core: {error}"
        );
        assert_eq!(
            audit_lines_since(&stack, audited),
            Vec::<serde_json::Value>::new(),
            "{attack}: the honest core asked the signer"
        );

        // The broken core asks; the signer refuses, and says so.
        let audited = audit_lines(&stack).len();
        let error = broken
            .add_checkpoint(*old, proof.clone(), note)
            .await
            .expect_err(attack);
        let lines = audit_lines_since(&stack, audited);
        assert!(
            !lines.is_empty()
                && lines.iter().all(|line| {
                    line["operation"]
                        .as_str()
                        .is_some_and(|o| o.starts_with("cosign_checkpoint"))
                        && line["result"] != "ok"
                        && line["origin"] == ORIGIN
                }),
            "{attack}: the broken core's request must reach the signer and be refused \
             ({error}): {lines:?}"
        );
        assert_eq!(fork_guard_record(&stack), record, "{attack}: signer record");
        assert_eq!(witness_state(&stack), state, "{attack}: witness state");
    }

    // The broken core is otherwise a working core: an honest growth is
    // cosigned, so the refusals above were the fork guard's.
    let lines = broken
        .add_checkpoint(10, log.proof(10, 12), &log.signed(12))
        .await
        .unwrap();
    let cosigned = format!("{}\n{}", log.checkpoint(12).to_text(), lines.concat());
    let witness_key = VerifierKey::parse_vkey(stack.witness_vkey()).unwrap();
    verify_note(
        parse_note(cosigned.as_bytes()).unwrap(),
        std::slice::from_ref(&witness_key),
    )
    .unwrap();
    drop((honest, broken, store));

    // The real witness takes over again and serves the one history.
    stack.restart(Service::Witness).await.unwrap();
    stack.wait_ready().await.unwrap();
    let served = stack
        .wait_cosigned(ORIGIN, 12, Duration::from_secs(10))
        .await
        .unwrap();
    let note = verify_note(parse_note(served.as_bytes()).unwrap(), &[witness_key]).unwrap();
    assert!(
        note.note()
            .text()
            .starts_with(&log.checkpoint(12).to_text())
    );
    assert_eq!(fork_guard_record(&stack)[ORIGIN].0, 12);
    let answer = add_checkpoint(
        stack.http(),
        &gateway,
        12,
        &longer_fork.proof(12, 14),
        &longer_fork.signed(14),
    )
    .await;
    assert_eq!(answer.status, 422, "{answer:?}");
    assert!(stack.stop().await, "every service exits cleanly");
}
