//! The atomicity of `add-checkpoint` through the real deployment: 64
//! concurrent requests for one log, with different old sizes, sent to the
//! gateway process, which forwards them to the witness process, which asks
//! the signer process.
//!
//! c2sp.org/tlog-witness: a request succeeds only if its old size is the
//! latest cosigned size at the moment it is applied, so from a given prior
//! state the successes form one chain (each starting where the previous one
//! ended; never two from the same size), and every other request is a 409
//! whose `text/x.tlog.size` body is a size the log really had in that chain.
//! Every cosignature returned verifies, every pair of cosigned checkpoints is
//! consistent, and the witness's state, the signer's record and the
//! monitoring endpoint agree at the end of each round.
//!
//! The forced race of two store instances is in
//! `witness-core/tests/store_backends.rs`, the in-process race of the witness
//! core in `witness-core/tests/witness_semantics.rs`
//! (`rollback_race_never_cosigns_smaller_tree`); this one adds the gateway,
//! the process boundaries and the 409 bodies a log actually receives.

#![allow(clippy::unwrap_used)]

mod attack_support;
#[path = "../../witness-core/tests/witness_support/mod.rs"]
mod witness_support;

use std::collections::BTreeSet;
use std::sync::Arc;

use attack_support::{add_checkpoint, fork_guard_record, witness_state};
use integration::stack::{Service, Stack, checkpoint_size};
use witness_core::merkle::verify_consistency;
use witness_core::note::{VerifierKey, parse_note, verify_note};
use witness_support::TestLog;

const ORIGIN: &str = "races.example/log";
const CONCURRENT: u64 = 64;
const ROUNDS: u64 = 4;

/// Per-origin rate limits off the way (the defaults allow a burst of 30
/// submissions per log): this test is about atomicity, not rate limiting,
/// which `gateway/tests/gateway_limits.rs` covers.
const UNLIMITED: &str = "
[limits]
submission_concurrency = 256

[limits.submission_rate]
per_minute = 100000
burst = 10000

[limits.per_origin_rate]
per_minute = 100000
burst = 10000
";

/// The old and new sizes of request `i` of a round from `prior`: a quarter
/// from the current size, the rest from stale sizes, from 0, and from sizes
/// the log reaches only if an earlier request of the round succeeds.
fn sizes(i: u64, round: u64, prior: u64) -> (u64, u64) {
    let old = match i % 8 {
        0 | 1 => prior,
        2 => prior - 1,
        3 => prior / 2,
        4 => 0,
        5 => prior + 3,
        6 => prior + 7,
        _ => prior + 1 + (i % 5),
    };
    let new = old.max(prior) + 1 + (i * 7 + round) % 23;
    (old, new)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_add_checkpoints_succeed_exactly_along_one_chain_and_409_with_a_real_size() {
    let mut log = TestLog::new(ORIGIN, 43);
    log.grow(8 + ROUNDS * 40);
    let log = Arc::new(log);
    let logs_toml = format!(
        "[[log]]\norigin = \"{ORIGIN}\"\nkey = \"{}\"\n",
        log.verifier.to_vkey()
    );
    let mut stack = Stack::start("races", &logs_toml).await.unwrap();
    let gateway_config = stack.dir().join("config/gateway.toml");
    let mut text = std::fs::read_to_string(&gateway_config).unwrap();
    text.push_str(UNLIMITED);
    std::fs::write(&gateway_config, text).unwrap();
    assert!(stack.stop_service(Service::Gateway).await);
    stack.restart(Service::Gateway).await.unwrap();
    stack.wait_ready().await.unwrap();

    let gateway = stack.gateway_url();
    let witness_key = VerifierKey::parse_vkey(stack.witness_vkey()).unwrap();
    let first = add_checkpoint(stack.http(), &gateway, 0, &[], &log.signed(8)).await;
    assert_eq!(first.status, 200, "{first:?}");
    let mut cosigned: Vec<u64> = vec![8];
    let mut prior = 8u64;

    for round in 0..ROUNDS {
        let mut tasks = Vec::new();
        for i in 0..CONCURRENT {
            let (old, new) = sizes(i, round, prior);
            let (http, gateway, log) = (stack.http().clone(), gateway.clone(), log.clone());
            tasks.push(tokio::spawn(async move {
                let answer =
                    add_checkpoint(&http, &gateway, old, &log.proof(old, new), &log.signed(new))
                        .await;
                (old, new, answer)
            }));
        }
        let mut successes = Vec::new();
        let mut conflicts = Vec::new();
        for task in tasks {
            let (old, new, answer) = task.await.unwrap();
            match answer.status {
                200 => {
                    let note = format!("{}\n{}", log.checkpoint(new).to_text(), answer.body);
                    verify_note(
                        parse_note(note.as_bytes()).unwrap(),
                        std::slice::from_ref(&witness_key),
                    )
                    .unwrap_or_else(|e| panic!("cosignature of {old}->{new}: {e}"));
                    successes.push((old, new));
                }
                409 => {
                    assert!(
                        answer.content_type.starts_with("text/x.tlog.size"),
                        "{old}->{new}: {answer:?}"
                    );
                    let size: u64 = answer
                        .body
                        .strip_suffix('\n')
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| panic!("409 body {:?}", answer.body));
                    assert_ne!(size, old, "a 409 names a size other than the old one");
                    conflicts.push((old, new, size));
                }
                _ => panic!("round {round}: {old}->{new}: {answer:?}"),
            }
        }

        // The successes form one chain from the prior state.
        successes.sort();
        assert!(!successes.is_empty(), "round {round}: nothing succeeded");
        let mut at = prior;
        for &(old, new) in &successes {
            assert_eq!(
                old, at,
                "round {round}: successes {successes:?} are not one chain from {prior}"
            );
            at = new;
        }
        let chain: BTreeSet<u64> = std::iter::once(prior)
            .chain(successes.iter().map(|&(_, new)| new))
            .collect();
        for &(old, new, size) in &conflicts {
            assert!(
                chain.contains(&size),
                "round {round}: {old}->{new} got 409 {size}, not a size of the chain {chain:?}"
            );
        }
        // Every request from the prior state but the winner lost to it.
        let from_prior = (0..CONCURRENT)
            .filter(|&i| sizes(i, round, prior).0 == prior)
            .count();
        assert_eq!(
            conflicts.iter().filter(|c| c.0 == prior).count(),
            from_prior - 1,
            "round {round}"
        );

        // The state, the signer's record and the monitoring answer agree.
        let served = stack.cosigned_checkpoint(ORIGIN).await.unwrap().unwrap();
        assert_eq!(checkpoint_size(&served), Some(at), "round {round}");
        verify_note(
            parse_note(served.as_bytes()).unwrap(),
            std::slice::from_ref(&witness_key),
        )
        .unwrap();
        let root = log.root(at).0.to_vec();
        assert_eq!(witness_state(&stack)[ORIGIN], (at as i64, root.clone()));
        assert_eq!(fork_guard_record(&stack)[ORIGIN], (at as i64, root));
        cosigned.extend(successes.iter().map(|&(_, new)| new));
        println!(
            "round {round}: from {prior}: {} successes {successes:?}, {} conflicts",
            successes.len(),
            conflicts.len()
        );
        prior = at;
    }

    // Every pair of cosigned checkpoints is consistent, with proofs from the log.
    for (i, &a) in cosigned.iter().enumerate() {
        for &b in &cosigned[i + 1..] {
            assert!(a < b, "cosigned sizes only grow: {cosigned:?}");
            verify_consistency(a, b, &log.root(a), &log.root(b), &log.proof(a, b))
                .unwrap_or_else(|e| panic!("{a} and {b}: {e}"));
        }
    }
    assert!(stack.stop().await, "every service exits cleanly");
}
