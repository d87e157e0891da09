//! Logs added at run time (the admin API's `AddLog`): persisted like configured
//! logs so a restarted witness still trusts them with the key they were first
//! trusted with, and never re-keyed; malformed keys and origins are refused as
//! bad input. Over the real signer (mutual TLS gRPC) and a real SQLite store.

#![allow(clippy::unwrap_used)]

mod witness_support;

use std::sync::Arc;

use tonic::Request;
use witness_core::Error;
use witness_core::note::{SignatureType, VerifierKey};
use witness_core::service::grpc::WitnessGrpc;
use witness_core::service::store::LogStore;
use witness_core::service::store::sqlite::SqliteStore;
use witness_core::service::witness::{Feed, LogKeys, ShardedLog, Witness};
use witness_proto::witness as pb;
use witness_proto::witness::witness_server::Witness as _;
use witness_support::{TestLog, WitnessHarness};

/// A witness over the harness's signer and a fresh connection to the same
/// SQLite file: what a restarted process sees.
async fn restarted(h: &WitnessHarness, sharded: Vec<ShardedLog>) -> Witness {
    let store: Arc<dyn LogStore> =
        Arc::new(SqliteStore::open(&h.state_dir.path().join("witness.db")).unwrap());
    Witness::new(
        Vec::new(),
        sharded,
        h.own_keys(),
        store,
        Arc::new(h.grpc_signer.clone()),
        None,
        h.metrics.clone(),
    )
    .await
    .unwrap()
}

fn trusted_keys(witness: &Witness, origin: &str) -> Option<Vec<String>> {
    witness
        .trusted_logs()
        .iter()
        .find(|l| l.origin == origin)
        .map(|l| l.keys.iter().map(VerifierKey::to_vkey).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_added_at_run_time_survives_a_restart_and_is_witnessed() {
    let h = WitnessHarness::start(Vec::new(), Vec::new(), false).await;
    let mut log = TestLog::new("example.com/added", 21);
    log.grow(5);
    let vkey = log.verifier.to_vkey();

    // Unknown before it is added.
    let refused = h
        .witness
        .add_checkpoint(0, Vec::new(), &log.signed(5))
        .await;
    assert!(
        matches!(refused, Err(Error::UnknownOrigin { .. })),
        "{refused:?}"
    );

    // An empty origin takes the key's name.
    let added = h.witness.add_log("", &vkey).await.unwrap();
    assert_eq!(added.origin, log.origin);
    assert_eq!(
        trusted_keys(&h.witness, &log.origin),
        Some(vec![vkey.clone()])
    );
    h.witness
        .add_checkpoint(0, Vec::new(), &log.signed(5))
        .await
        .expect("an added log's checkpoint is cosigned");

    let restarted = restarted(&h, Vec::new()).await;
    assert_eq!(
        trusted_keys(&restarted, &log.origin),
        Some(vec![vkey]),
        "the restarted witness trusts the added log with its key"
    );
    log.grow(3);
    restarted
        .add_checkpoint(5, log.proof(5, 8), &log.signed(8))
        .await
        .expect("the restarted witness goes on from the cosigned size");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekeying_an_existing_origin_is_refused_and_nothing_of_it_persists() {
    let configured = TestLog::new("example.com/configured", 31);
    let h = WitnessHarness::start(vec![configured.keys()], Vec::new(), false).await;
    let impostor = TestLog::new("example.com/configured", 32);

    // A configured log cannot be re-keyed at run time.
    let refused = h
        .witness
        .add_log(&configured.origin, &impostor.verifier.to_vkey())
        .await;
    assert!(
        matches!(refused, Err(Error::LogKeyChange { .. })),
        "{refused:?}"
    );

    // Nor can a log added at run time.
    let added = TestLog::new("example.com/added", 33);
    h.witness
        .add_log(&added.origin, &added.verifier.to_vkey())
        .await
        .unwrap();
    let other = TestLog::new("example.com/added", 34);
    let refused = h
        .witness
        .add_log(&added.origin, &other.verifier.to_vkey())
        .await;
    assert!(
        matches!(refused, Err(Error::LogKeyChange { .. })),
        "{refused:?}"
    );
    // The same key again is no change.
    h.witness
        .add_log(&added.origin, &added.verifier.to_vkey())
        .await
        .expect("re-adding with the same key is idempotent");

    // The refusal is an operator-visible conflict over gRPC too.
    let grpc = WitnessGrpc::new(h.witness.clone());
    let status = grpc
        .add_log(Request::new(pb::AddLogRequest {
            origin: added.origin.clone(),
            verifier_key: other.verifier.to_vkey(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert_eq!(status.metadata().get("x-http-status").unwrap(), "409");

    // Nothing of the refused keys was persisted.
    let restarted = restarted(&h, Vec::new()).await;
    assert_eq!(
        trusted_keys(&restarted, &added.origin),
        Some(vec![added.verifier.to_vkey()])
    );
    assert_eq!(
        trusted_keys(&restarted, &configured.origin),
        Some(vec![configured.verifier.to_vkey()])
    );
    let signed = impostor.signed(0);
    let refused = restarted.add_checkpoint(0, Vec::new(), &signed).await;
    assert!(
        refused.is_err(),
        "the impostor key is not trusted after a restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rekor_v1_shard_origin_cannot_be_added_with_another_key() {
    // An ECDSA P-256 key for a configured Rekor v1 host, and another one.
    let host_key = ecdsa_vkey("rekor.example.com");
    let sharded = ShardedLog {
        origin_prefix: "rekor.example.com - ".into(),
        keys: vec![VerifierKey::parse_vkey(&host_key).unwrap()],
        url: "https://rekor.example.com".into(),
    };
    let h = WitnessHarness::start(Vec::new(), vec![sharded.clone()], false).await;
    let refused = h
        .witness
        .add_log("rekor.example.com - 42", &ecdsa_vkey("rekor.example.com"))
        .await;
    assert!(
        matches!(refused, Err(Error::LogKeyChange { .. })),
        "{refused:?}"
    );
    // Had it been stored, the restart would refuse to start (a shard's key
    // differing from its host's).
    restarted(&h, vec![sharded.clone()]).await;
    h.witness
        .add_log("rekor.example.com - 42", &host_key)
        .await
        .expect("the shard with its host's key");
    let restarted = restarted(&h, vec![sharded]).await;
    assert_eq!(
        trusted_keys(&restarted, "rekor.example.com - 42"),
        Some(vec![host_key])
    );
}

fn ecdsa_vkey(name: &str) -> String {
    use aws_lc_rs::encoding::AsDer as _;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
    let spki = pair.public_key().as_der().unwrap();
    VerifierKey::from_material(name, SignatureType::EcdsaP256, spki.as_ref())
        .unwrap()
        .to_vkey()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_keys_and_origins_are_invalid_arguments_and_change_nothing() {
    let h = WitnessHarness::start(Vec::new(), Vec::new(), false).await;
    let grpc = WitnessGrpc::new(h.witness.clone());
    let log = TestLog::new("example.com/log", 41);
    let vkey = log.verifier.to_vkey();
    let cosignature_key = h
        .own_keys()
        .into_iter()
        .find(|k| k.signature_type() == SignatureType::CosignatureV1)
        .unwrap()
        .to_vkey();
    let cases = [
        (
            "vkey not in three parts",
            "example.com/log",
            "not-a-vkey".to_owned(),
        ),
        ("wrong key id", "example.com/log", {
            let mut parts: Vec<&str> = vkey.splitn(3, '+').collect();
            parts[1] = "00000000";
            parts.join("+")
        }),
        ("bad base64", "example.com/log", format!("{vkey}!")),
        ("oversized", "example.com/log", "a".repeat(10_000)),
        ("a cosignature key", "example.com/log", cosignature_key),
        ("empty origin and empty key", "", String::new()),
        ("newline in origin", "example.com/log\n5", vkey.clone()),
        ("trailing space in origin", "example.com/log ", vkey.clone()),
        ("origin over 255 bytes", &"o".repeat(256), vkey.clone()),
    ];
    for (case, origin, verifier_key) in cases {
        let status = grpc
            .add_log(Request::new(pb::AddLogRequest {
                origin: origin.to_owned(),
                verifier_key,
            }))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{case}: {status:?}"
        );
        assert_eq!(
            status.metadata().get("x-http-status").unwrap(),
            "400",
            "{case}"
        );
    }
    assert!(h.witness.trusted_logs().is_empty());
    assert!(h.store.logs().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recosign_over_grpc_answers_the_cosigned_size_with_a_newer_timestamp() {
    let mut log = TestLog::new("example.com/log", 51);
    log.grow(7);
    let h = WitnessHarness::start(vec![log.keys()], Vec::new(), false).await;
    let grpc = WitnessGrpc::new(h.witness.clone());
    let recosign = |origin: &str| {
        grpc.recosign(Request::new(pb::RecosignRequest {
            origin: origin.to_owned(),
        }))
    };
    let nothing = recosign(&log.origin).await.unwrap().into_inner();
    assert_eq!(nothing.size, None, "nothing cosigned yet");
    let unknown = recosign("example.com/unknown").await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    h.witness
        .add_checkpoint(0, Vec::new(), &log.signed(7))
        .await
        .unwrap();
    let before = h.store.state(&log.origin).await.unwrap().unwrap();
    // Cosignature timestamps are in seconds.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let answer = recosign(&log.origin).await.unwrap().into_inner();
    assert_eq!(answer.size, Some(7));
    let after = h.store.state(&log.origin).await.unwrap().unwrap();
    assert_eq!(after.tree, before.tree);
    assert!(after.cosigned_at > before.cosigned_at);
    assert_ne!(after.note, before.note);
}

/// Memory at 40,000 logs: a key list read back from the store was collected
/// with room for four keys, 28 MB of spare capacity across the registry
/// (heaptrack). Every list the registry holds, from the store, from a run-time
/// add or from the configuration, is exactly as long as its capacity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_key_lists_carry_no_spare_capacity_at_many_logs() {
    // A configured log whose key list has room to spare, as a parser may build it.
    let configured = TestLog::new("example.com/capacity-configured", 29);
    let mut keys = Vec::with_capacity(8);
    keys.push(configured.verifier.clone());
    let logs = vec![LogKeys {
        origin: configured.origin.clone(),
        keys,
        feed: Feed::Push,
    }];
    let h = WitnessHarness::start(logs, Vec::new(), false).await;
    for index in 0..3 {
        let log = TestLog::new(&format!("example.com/capacity-{index}"), 30 + index);
        h.witness
            .add_log("", &log.verifier.to_vkey())
            .await
            .unwrap();
    }
    let check = |witness: &Witness, when: &str| {
        let logs = witness.trusted_logs();
        assert_eq!(logs.len(), 4, "{when}");
        for log in logs {
            assert_eq!(
                log.keys.capacity(),
                log.keys.len(),
                "{when}: {} holds spare key slots",
                log.origin
            );
        }
    };
    check(&h.witness, "added at run time");
    check(&restarted(&h, Vec::new()).await, "read back from the store");
}
