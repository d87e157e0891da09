//! One test suite for every [`LogStore`] backend: each case is a generic async
//! function over the store, run once against SQLite (a file in a temporary
//! directory) and once against PostgreSQL (a schema of its own in the database
//! that `scripts/postgres-env` provides, named by `WITNESS_TEST_POSTGRES_URL`),
//! so the cases run in parallel without seeing each other's rows.
//!
//! The PostgreSQL cases fail, not skip, when that variable is unset.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::join_all;
use rand::seq::SliceRandom;
use tokio::sync::Barrier;
use witness_core::Error;
use witness_core::merkle::Hash;
use witness_core::service::store::postgres::PostgresStore;
use witness_core::service::store::sqlite::SqliteStore;
use witness_core::service::store::{
    CasOutcome, LogState, LogStore, MisbehaviourEvidence, StoredTree, TrustedLog,
};

/// Connections per PostgreSQL store: fewer than the racing callers, so the race
/// cases also exercise waiting for a pooled connection.
const PG_POOL_SIZE: usize = 4;

/// Where a case's store lives; `open` may be called again for a second replica
/// or to reopen after a drop.
enum Backend {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres {
        admin: tokio_postgres::Client,
        schema: String,
        url: String,
    },
}

impl Backend {
    fn sqlite() -> Backend {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("witness.db");
        Backend::Sqlite { _dir: dir, path }
    }

    async fn postgres() -> Backend {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = std::env::var("WITNESS_TEST_POSTGRES_URL").unwrap_or_else(|_| {
            panic!(
                "WITNESS_TEST_POSTGRES_URL is not set: run scripts/postgres-env and export \
                 its output as WITNESS_TEST_POSTGRES_URL (scripts/test does both)"
            )
        });
        let (admin, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot connect to WITNESS_TEST_POSTGRES_URL ({e}): run scripts/postgres-env"
                )
            });
        tokio::spawn(connection);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .subsec_nanos();
        let schema = format!(
            "store_test_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .expect("create the test schema");
        // Every connection of the store sees only this schema.
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
        Backend::Postgres { admin, schema, url }
    }

    async fn open(&self) -> Arc<dyn LogStore> {
        match self {
            Backend::Sqlite { path, .. } => Arc::new(SqliteStore::open(path).expect("open SQLite")),
            Backend::Postgres { url, .. } => Arc::new(
                PostgresStore::connect(url, PG_POOL_SIZE)
                    .await
                    .expect("connect to PostgreSQL"),
            ),
        }
    }

    /// Makes the database refuse evidence whose reason is `refused`, as a
    /// constraint would: the statement fails, its transaction goes on.
    async fn refuse_evidence_with_reason_refused(&self) {
        match self {
            Backend::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).expect("open SQLite");
                conn.execute_batch(
                    "CREATE TRIGGER refuse BEFORE INSERT ON evidence WHEN NEW.reason = 'refused'
                     BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
                )
                .expect("create trigger");
            }
            Backend::Postgres { admin, schema, .. } => {
                admin
                    .batch_execute(&format!(
                        "CREATE FUNCTION {schema}.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
                         BEGIN
                             IF NEW.reason = 'refused' THEN RAISE EXCEPTION 'injected failure'; END IF;
                             RETURN NEW;
                         END $$;
                         CREATE TRIGGER refuse BEFORE INSERT ON {schema}.evidence
                         FOR EACH ROW EXECUTE FUNCTION {schema}.refuse();"
                    ))
                    .await
                    .expect("create trigger");
            }
        }
    }

    /// Drops the case's schema (a failed case keeps it, to look at).
    async fn cleanup(self) {
        if let Backend::Postgres { admin, schema, .. } = self {
            admin
                .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
                .await
                .expect("drop the test schema");
        }
    }
}

/// Runs each named case against both backends, as `sqlite::CASE` and
/// `postgres::CASE`.
macro_rules! backend_tests {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = super::Backend::sqlite();
                    super::$case(&backend).await;
                    backend.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = super::Backend::postgres().await;
                    super::$case(&backend).await;
                    backend.cleanup().await;
                }
            )*
        }
    };
}

backend_tests!(
    adding_a_trusted_log_again_is_a_no_op,
    changing_a_trusted_logs_key_is_refused,
    logs_are_listed_by_origin_and_never_dropped,
    first_compare_and_swap_from_nothing,
    stale_expected_tree_is_a_conflict_and_changes_nothing,
    same_size_other_root_is_a_conflict,
    compare_and_swap_for_an_untrusted_origin_fails,
    rollback_race_never_cosigns_smaller_tree,
    state_survives_reopening,
    evidence_round_trip,
    one_bad_request_does_not_fail_the_others,
    a_database_error_fails_only_its_request,
    hostile_origins_are_stored_verbatim,
    sizes_above_2_63_are_refused,
);

fn log(origin: &str, keys: &[&str]) -> TrustedLog {
    TrustedLog {
        origin: origin.to_owned(),
        verifier_keys: keys.iter().map(|k| (*k).to_owned()).collect(),
    }
}

/// A distinct root for each (size, variant).
fn root(size: u64, variant: u8) -> Hash {
    let mut bytes = [variant; 32];
    bytes[..8].copy_from_slice(&size.to_be_bytes());
    Hash(bytes)
}

fn tree(size: u64, variant: u8) -> StoredTree {
    StoredTree {
        size,
        root: root(size, variant),
    }
}

fn state(origin: &str, tree: StoredTree) -> LogState {
    LogState {
        origin: origin.to_owned(),
        tree,
        note: format!(
            "{origin}\n{}\n{}\n\n— witness cosignature\n",
            tree.size, tree.root
        )
        .into_bytes(),
        cosigned_at: 1_700_000_000 + tree.size,
    }
}

fn evidence(origin: &str, reason: &str, cosigned: Option<StoredTree>) -> MisbehaviourEvidence {
    MisbehaviourEvidence {
        origin: origin.to_owned(),
        note: format!("{origin}\nbad checkpoint for {reason}\n").into_bytes(),
        cosigned,
        reason: reason.to_owned(),
        received_at: 1_700_000_123,
    }
}

const KEY_A: &str = "log.example+0a1b2c3d+AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
const KEY_B: &str = "log.example+4e5f6a7b+ASEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

async fn adding_a_trusted_log_again_is_a_no_op(backend: &Backend) {
    let store = backend.open().await;
    store
        .add_log(&log("example.com/log", &[KEY_A, KEY_B]))
        .await
        .expect("add");
    store
        .add_log(&log("example.com/log", &[KEY_A, KEY_B]))
        .await
        .expect("add again");
    // The same key set in another order is the same log.
    store
        .add_log(&log("example.com/log", &[KEY_B, KEY_A]))
        .await
        .expect("add reordered");
    assert_eq!(
        store.logs().await.expect("logs"),
        vec![log("example.com/log", &[KEY_A, KEY_B])]
    );
}

async fn changing_a_trusted_logs_key_is_refused(backend: &Backend) {
    let store = backend.open().await;
    store
        .add_log(&log("example.com/log", &[KEY_A]))
        .await
        .expect("add");
    store
        .compare_and_swap(None, &state("example.com/log", tree(5, 0)))
        .await
        .expect("cas");
    for keys in [&[KEY_B][..], &[KEY_A, KEY_B][..], &[][..]] {
        assert_eq!(
            store.add_log(&log("example.com/log", keys)).await,
            Err(Error::LogKeyChange {
                origin: "example.com/log".into()
            }),
            "keys {keys:?}"
        );
    }
    assert_eq!(
        store.logs().await.expect("logs"),
        vec![log("example.com/log", &[KEY_A])]
    );
    assert_eq!(
        store.state("example.com/log").await.expect("state"),
        Some(state("example.com/log", tree(5, 0)))
    );
}

/// There is no operation to remove a log: this type implements every method of
/// the trait, so one added without a default body would have to show up here.
struct EveryOperation;

#[async_trait::async_trait]
impl LogStore for EveryOperation {
    async fn add_log(&self, _: &TrustedLog) -> witness_core::Result<()> {
        Ok(())
    }
    async fn logs(&self) -> witness_core::Result<Vec<TrustedLog>> {
        Ok(Vec::new())
    }
    async fn state(&self, _: &str) -> witness_core::Result<Option<LogState>> {
        Ok(None)
    }
    async fn compare_and_swap(
        &self,
        _: Option<StoredTree>,
        _: &LogState,
    ) -> witness_core::Result<CasOutcome> {
        Ok(CasOutcome::Conflict { current: None })
    }
    async fn record_evidence(&self, _: &MisbehaviourEvidence) -> witness_core::Result<()> {
        Ok(())
    }
    async fn evidence(&self, _: &str) -> witness_core::Result<Vec<MisbehaviourEvidence>> {
        Ok(Vec::new())
    }
}

async fn logs_are_listed_by_origin_and_never_dropped(backend: &Backend) {
    let _no_removal: Arc<dyn LogStore> = Arc::new(EveryOperation);
    let store = backend.open().await;
    assert_eq!(store.logs().await.expect("logs"), vec![]);
    for origin in ["c.example/log", "a.example/log", "b.example/log"] {
        store.add_log(&log(origin, &[KEY_A])).await.expect("add");
    }
    // Everything else the store does leaves the trusted set alone.
    store
        .compare_and_swap(None, &state("b.example/log", tree(1, 0)))
        .await
        .expect("cas");
    store
        .record_evidence(&evidence("a.example/log", "x", None))
        .await
        .expect("evidence");
    let _ = store.add_log(&log("c.example/log", &[KEY_B])).await;
    assert_eq!(
        store.logs().await.expect("logs"),
        vec![
            log("a.example/log", &[KEY_A]),
            log("b.example/log", &[KEY_A]),
            log("c.example/log", &[KEY_A]),
        ]
    );
}

async fn first_compare_and_swap_from_nothing(backend: &Backend) {
    let store = backend.open().await;
    store
        .add_log(&log("example.com/log", &[KEY_A]))
        .await
        .expect("add");
    assert_eq!(store.state("example.com/log").await.expect("state"), None);

    let first = state("example.com/log", tree(10, 0));
    assert_eq!(
        store.compare_and_swap(None, &first).await,
        Ok(CasOutcome::Swapped)
    );
    assert_eq!(
        store.state("example.com/log").await.expect("state"),
        Some(first.clone())
    );

    // A second "first" state, as from a request that read the state before the
    // first one was stored, is a conflict.
    assert_eq!(
        store
            .compare_and_swap(None, &state("example.com/log", tree(20, 0)))
            .await,
        Ok(CasOutcome::Conflict {
            current: Some(first.tree)
        })
    );
    assert_eq!(
        store.state("example.com/log").await.expect("state"),
        Some(first)
    );
}

async fn stale_expected_tree_is_a_conflict_and_changes_nothing(backend: &Backend) {
    let store = backend.open().await;
    store
        .add_log(&log("example.com/log", &[KEY_A]))
        .await
        .expect("add");
    let s10 = state("example.com/log", tree(10, 0));
    let s20 = state("example.com/log", tree(20, 0));
    assert_eq!(
        store.compare_and_swap(None, &s10).await,
        Ok(CasOutcome::Swapped)
    );
    assert_eq!(
        store.compare_and_swap(Some(s10.tree), &s20).await,
        Ok(CasOutcome::Swapped)
    );

    // Stale: expects size 10, which was replaced by 20.
    for new in [tree(30, 0), tree(15, 0), tree(10, 1)] {
        assert_eq!(
            store
                .compare_and_swap(Some(s10.tree), &state("example.com/log", new))
                .await,
            Ok(CasOutcome::Conflict {
                current: Some(s20.tree)
            }),
            "new {new:?}"
        );
    }
    assert_eq!(
        store.state("example.com/log").await.expect("state"),
        Some(s20)
    );
}

async fn same_size_other_root_is_a_conflict(backend: &Backend) {
    let store = backend.open().await;
    store
        .add_log(&log("example.com/log", &[KEY_A]))
        .await
        .expect("add");
    let stored = state("example.com/log", tree(10, 0));
    assert_eq!(
        store.compare_and_swap(None, &stored).await,
        Ok(CasOutcome::Swapped)
    );
    assert_eq!(
        store
            .compare_and_swap(Some(tree(10, 1)), &state("example.com/log", tree(11, 0)))
            .await,
        Ok(CasOutcome::Conflict {
            current: Some(stored.tree)
        })
    );
    assert_eq!(
        store.state("example.com/log").await.expect("state"),
        Some(stored)
    );
}

async fn compare_and_swap_for_an_untrusted_origin_fails(backend: &Backend) {
    let store = backend.open().await;
    store
        .add_log(&log("example.com/log", &[KEY_A]))
        .await
        .expect("add");
    let unknown = Err(Error::UnknownOrigin {
        origin: "other.example/log".into(),
    });
    for expected in [None, Some(tree(10, 0))] {
        assert_eq!(
            store
                .compare_and_swap(expected, &state("other.example/log", tree(11, 0)))
                .await,
            unknown,
            "expected {expected:?}"
        );
    }
    assert_eq!(store.state("other.example/log").await.expect("state"), None);
    assert_eq!(
        store.logs().await.expect("logs"),
        vec![log("example.com/log", &[KEY_A])]
    );
}

/// Many requests race to replace the same tree, through two store instances on
/// the same database (two witness replicas): in each round exactly one wins,
/// every loser is told a tree at least as new as the one it raced from, and a
/// late request still expecting an older tree (several propose a tree smaller
/// than the current one) never wins.
async fn rollback_race_never_cosigns_smaller_tree(backend: &Backend) {
    const CALLERS: u64 = 64;
    const STALE_CALLERS: u64 = 8;
    const ROUNDS: u64 = 6;
    let replicas = [backend.open().await, backend.open().await];
    let origin = "example.com/log";
    replicas[0]
        .add_log(&log(origin, &[KEY_A]))
        .await
        .expect("add");
    replicas[1]
        .add_log(&log(origin, &[KEY_A]))
        .await
        .expect("add on the replica");

    let mut previous: Option<StoredTree> = None;
    let mut current = tree(1, 0);
    assert_eq!(
        replicas[1]
            .compare_and_swap(None, &state(origin, current))
            .await,
        Ok(CasOutcome::Swapped)
    );
    for round in 0..ROUNDS {
        // Proposals: larger trees from the current one, and (from the second
        // round) smaller ones from the tree before it, in random order.
        let mut proposals: Vec<(Option<StoredTree>, StoredTree)> = (1..=CALLERS)
            .map(|i| (Some(current), tree(current.size + i, round as u8)))
            .collect();
        if let Some(previous) = previous {
            proposals.extend(
                (1..=STALE_CALLERS).map(|i| (Some(previous), tree(previous.size + i, 0xee))),
            );
        }
        proposals.shuffle(&mut rand::rng());
        let barrier = Arc::new(Barrier::new(proposals.len()));
        let tasks: Vec<_> = proposals
            .iter()
            .enumerate()
            .map(|(i, &(expected, new))| {
                let store = Arc::clone(&replicas[i % 2]);
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.compare_and_swap(expected, &state(origin, new)).await
                })
            })
            .collect();
        let outcomes: Vec<CasOutcome> = join_all(tasks)
            .await
            .into_iter()
            .map(|joined| joined.expect("task").expect("compare-and-swap"))
            .collect();

        let winners: Vec<(Option<StoredTree>, StoredTree)> = proposals
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| **outcome == CasOutcome::Swapped)
            .map(|(proposal, _)| *proposal)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let (winner_expected, winner) = winners[0];
        assert_eq!(
            winner_expected,
            Some(current),
            "round {round}: a stale request won"
        );
        assert!(
            winner.size > current.size,
            "round {round}: {winner:?} after {current:?}"
        );
        for ((expected, new), outcome) in proposals.iter().zip(&outcomes) {
            if *new == winner {
                continue;
            }
            let CasOutcome::Conflict {
                current: Some(seen),
            } = *outcome
            else {
                panic!("round {round}: {new:?} expecting {expected:?}: {outcome:?}");
            };
            // A stale request may have run before the winner: it then saw the
            // tree the round started from. Every other loser ran after it.
            let stale = *expected != Some(current);
            assert!(
                seen == winner || (stale && seen == current),
                "round {round}: {new:?} expecting {expected:?} saw {seen:?}"
            );
        }
        for replica in &replicas {
            assert_eq!(
                replica.state(origin).await.expect("state").map(|s| s.tree),
                Some(winner),
                "round {round}"
            );
        }
        previous = Some(current);
        current = winner;
    }
}

async fn state_survives_reopening(backend: &Backend) {
    let origin = "example.com/log";
    let stored = state(origin, tree(42, 0));
    let kept = evidence(origin, "consistency_proof_invalid", Some(tree(42, 0)));
    {
        let store = backend.open().await;
        store.add_log(&log(origin, &[KEY_A])).await.expect("add");
        store.compare_and_swap(None, &stored).await.expect("cas");
        store.record_evidence(&kept).await.expect("evidence");
    }
    let store = backend.open().await;
    assert_eq!(
        store.logs().await.expect("logs"),
        vec![log(origin, &[KEY_A])]
    );
    assert_eq!(
        store.state(origin).await.expect("state"),
        Some(stored.clone())
    );
    assert_eq!(store.evidence(origin).await.expect("evidence"), vec![kept]);
    // The reopened store goes on from the stored tree.
    assert_eq!(
        store
            .compare_and_swap(Some(stored.tree), &state(origin, tree(43, 0)))
            .await,
        Ok(CasOutcome::Swapped)
    );
}

async fn evidence_round_trip(backend: &Backend) {
    let store = backend.open().await;
    store
        .add_log(&log("a.example/log", &[KEY_A]))
        .await
        .expect("add");
    store
        .add_log(&log("b.example/log", &[KEY_A]))
        .await
        .expect("add");
    let kept = [
        evidence(
            "a.example/log",
            "consistency_proof_invalid",
            Some(tree(7, 0)),
        ),
        evidence("a.example/log", "root_mismatch", None),
        MisbehaviourEvidence {
            note: vec![0, 0xff, b'\n', 0x80],
            received_at: 0,
            ..evidence(
                "a.example/log",
                "root_mismatch",
                Some(tree(u64::MAX >> 1, 3)),
            )
        },
    ];
    for e in &kept {
        store.record_evidence(e).await.expect("record");
    }
    assert_eq!(
        store.evidence("a.example/log").await.expect("evidence"),
        kept.to_vec()
    );
    assert_eq!(
        store.evidence("b.example/log").await.expect("evidence"),
        vec![]
    );
    assert_eq!(
        store
            .record_evidence(&evidence("other.example/log", "root_mismatch", None))
            .await,
        Err(Error::UnknownOrigin {
            origin: "other.example/log".into()
        })
    );
    assert_eq!(
        store.evidence("other.example/log").await.expect("evidence"),
        vec![]
    );
}

/// A write per trusted origin, fired together with failing ones (untrusted
/// origins, a key change), so that in SQLite they share commit batches.
enum Request {
    Cas(LogState),
    Evidence(MisbehaviourEvidence),
    AddLog(TrustedLog),
}

async fn fire(store: &Arc<dyn LogStore>, requests: Vec<Request>) -> Vec<Result<(), Error>> {
    let barrier = Arc::new(Barrier::new(requests.len()));
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let store = Arc::clone(store);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                match request {
                    Request::Cas(new) => match store.compare_and_swap(None, &new).await? {
                        CasOutcome::Swapped => Ok(()),
                        conflict => panic!("{conflict:?}"),
                    },
                    Request::Evidence(e) => store.record_evidence(&e).await,
                    Request::AddLog(log) => store.add_log(&log).await,
                }
            })
        })
        .collect();
    join_all(tasks)
        .await
        .into_iter()
        .map(|joined| joined.expect("task"))
        .collect()
}

async fn one_bad_request_does_not_fail_the_others(backend: &Backend) {
    let store = backend.open().await;
    let origins: Vec<String> = (0..24).map(|i| format!("log{i}.example/log")).collect();
    for origin in &origins {
        store.add_log(&log(origin, &[KEY_A])).await.expect("add");
    }
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for (i, origin) in origins.iter().enumerate() {
        requests.push(Request::Cas(state(origin, tree(i as u64 + 1, 0))));
        expected.push(Ok(()));
        requests.push(Request::Evidence(evidence(origin, "root_mismatch", None)));
        expected.push(Ok(()));
        if i % 4 == 0 {
            let untrusted = format!("untrusted{i}.example/log");
            let unknown = Err(Error::UnknownOrigin {
                origin: untrusted.clone(),
            });
            requests.push(Request::Cas(state(&untrusted, tree(1, 0))));
            expected.push(unknown.clone());
            requests.push(Request::Evidence(evidence(
                &untrusted,
                "root_mismatch",
                None,
            )));
            expected.push(unknown);
            requests.push(Request::AddLog(log(origin, &[KEY_B])));
            expected.push(Err(Error::LogKeyChange {
                origin: origin.clone(),
            }));
        }
    }
    assert_eq!(fire(&store, requests).await, expected);
    for (i, origin) in origins.iter().enumerate() {
        assert_eq!(
            store.state(origin).await.expect("state"),
            Some(state(origin, tree(i as u64 + 1, 0)))
        );
        assert_eq!(
            store.evidence(origin).await.expect("evidence"),
            vec![evidence(origin, "root_mismatch", None)]
        );
    }
    assert_eq!(store.logs().await.expect("logs").len(), origins.len());
}

/// A statement the database itself refuses (here a trigger, standing in for a
/// constraint) fails that request with a storage error, and only it: the
/// others, committed alongside it in SQLite, succeed, and the store goes on.
async fn a_database_error_fails_only_its_request(backend: &Backend) {
    let store = backend.open().await;
    backend.refuse_evidence_with_reason_refused().await;
    let origin = "example.com/log";
    store.add_log(&log(origin, &[KEY_A])).await.expect("add");
    let reasons: Vec<String> = (0..48)
        .map(|i| {
            if i % 7 == 3 {
                "refused".to_owned()
            } else {
                format!("reason{i}")
            }
        })
        .collect();
    let results = fire(
        &store,
        reasons
            .iter()
            .map(|reason| Request::Evidence(evidence(origin, reason, None)))
            .collect(),
    )
    .await;
    for (reason, result) in reasons.iter().zip(&results) {
        match result {
            Ok(()) => assert_ne!(reason, "refused"),
            Err(Error::Storage { detail }) => {
                assert_eq!(reason, "refused");
                assert!(detail.contains("injected failure"), "{detail}");
            }
            Err(other) => panic!("{reason}: {other:?}"),
        }
    }
    let mut stored: Vec<String> = store
        .evidence(origin)
        .await
        .expect("evidence")
        .into_iter()
        .map(|e| e.reason)
        .collect();
    stored.sort();
    let mut accepted: Vec<String> = reasons.into_iter().filter(|r| r != "refused").collect();
    accepted.sort();
    assert_eq!(stored, accepted);
    assert_eq!(
        store
            .compare_and_swap(None, &state(origin, tree(1, 0)))
            .await,
        Ok(CasOutcome::Swapped)
    );
}

async fn hostile_origins_are_stored_verbatim(backend: &Backend) {
    let store = backend.open().await;
    let long = "a".repeat(2000);
    let origins = [
        "x'; DROP TABLE logs; --",
        "Robert'); DROP TABLE state;--",
        "\"double\" `back` $1 ?1 :name @p",
        "ünïcødé.example/lög 🔏",
        "back\\slash\\'",
        "%",
        "_",
        "tab\tand\nnewline",
        "",
        long.as_str(),
    ];
    for (i, origin) in origins.iter().enumerate() {
        store.add_log(&log(origin, &[KEY_A])).await.expect("add");
        assert_eq!(
            store
                .compare_and_swap(None, &state(origin, tree(i as u64 + 1, 0)))
                .await,
            Ok(CasOutcome::Swapped),
            "{origin:?}"
        );
        store
            .record_evidence(&evidence(origin, "it's; bad", None))
            .await
            .expect("evidence");
    }
    let mut listed: Vec<String> = store
        .logs()
        .await
        .expect("logs")
        .into_iter()
        .map(|l| l.origin)
        .collect();
    listed.sort();
    let mut sorted: Vec<String> = origins.iter().map(|o| (*o).to_owned()).collect();
    sorted.sort();
    assert_eq!(listed, sorted);
    for (i, origin) in origins.iter().enumerate() {
        assert_eq!(
            store.state(origin).await.expect("state"),
            Some(state(origin, tree(i as u64 + 1, 0))),
            "{origin:?}"
        );
        assert_eq!(
            store.evidence(origin).await.expect("evidence"),
            vec![evidence(origin, "it's; bad", None)]
        );
    }
    // Pattern characters match only themselves.
    assert_eq!(store.state("x").await.expect("state"), None);
    assert_eq!(store.state("%%").await.expect("state"), None);
}

/// Cases that only one backend can have.
mod sqlite_only {
    use super::*;

    /// A failure that ends the whole transaction (here `RAISE(ROLLBACK)`,
    /// standing in for an I/O error or a full disk) fails every request of its
    /// batch, since none of them was committed; requests in other batches are
    /// unaffected, and the writer goes on with the next batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rolled_back_batch_fails_every_request_in_it() {
        let backend = Backend::sqlite();
        let store = backend.open().await;
        let origin = "example.com/log";
        store.add_log(&log(origin, &[KEY_A])).await.expect("add");
        let Backend::Sqlite { path, .. } = &backend else {
            unreachable!("a SQLite backend")
        };
        rusqlite::Connection::open(path)
            .expect("open SQLite")
            .execute_batch(
                "CREATE TRIGGER roll_back BEFORE INSERT ON evidence WHEN NEW.reason = 'roll back'
                 BEGIN SELECT RAISE(ROLLBACK, 'injected failure'); END;",
            )
            .expect("create trigger");

        let reasons: Vec<String> = (0..64)
            .map(|i| {
                if i == 20 {
                    "roll back".to_owned()
                } else {
                    format!("reason{i}")
                }
            })
            .collect();
        let results = fire(
            &store,
            reasons
                .iter()
                .map(|reason| Request::Evidence(evidence(origin, reason, None)))
                .collect(),
        )
        .await;
        let stored: Vec<String> = store
            .evidence(origin)
            .await
            .expect("evidence")
            .into_iter()
            .map(|e| e.reason)
            .collect();
        // Exactly what was answered Ok is stored: no acknowledged write is lost,
        // no failed one is kept.
        for (reason, result) in reasons.iter().zip(&results) {
            match result {
                Ok(()) => assert!(stored.contains(reason), "{reason} lost"),
                Err(Error::Storage { .. }) => assert!(!stored.contains(reason), "{reason} kept"),
                Err(other) => panic!("{reason}: {other:?}"),
            }
        }
        assert!(results[20].is_err());
        assert_eq!(stored.len(), results.iter().filter(|r| r.is_ok()).count());
        assert_eq!(
            store
                .compare_and_swap(None, &state(origin, tree(1, 0)))
                .await,
            Ok(CasOutcome::Swapped)
        );
        store
            .record_evidence(&evidence(origin, "after", None))
            .await
            .expect("evidence");
    }
}

/// Cases that only one backend can have.
mod postgres_only {
    use super::*;

    #[tokio::test]
    async fn connection_errors_do_not_reveal_the_password() {
        // Port 1 on loopback: nothing listens, so connecting is refused at once.
        let url = "postgresql://witness:hunter2-secret@127.0.0.1:1/witness";
        let err = PostgresStore::connect(url, 1)
            .await
            .expect_err("nothing listens on port 1");
        let Error::Storage { detail } = &err else {
            panic!("{err:?}")
        };
        assert!(!detail.contains("hunter2"), "{detail}");
        assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
    }
}

/// Neither database has an unsigned 64-bit integer: a size or timestamp above
/// 2^63 - 1 (no valid checkpoint has one) is refused, not wrapped negative.
async fn sizes_above_2_63_are_refused(backend: &Backend) {
    let store = backend.open().await;
    let origin = "example.com/log";
    store.add_log(&log(origin, &[KEY_A])).await.expect("add");
    let stored = state(origin, tree(1, 0));
    assert_eq!(
        store.compare_and_swap(None, &stored).await,
        Ok(CasOutcome::Swapped)
    );
    let too_large = [
        state(origin, tree(1 << 63, 0)),
        LogState {
            cosigned_at: u64::MAX,
            ..state(origin, tree(2, 0))
        },
    ];
    for new in &too_large {
        assert!(
            matches!(
                store.compare_and_swap(Some(stored.tree), new).await,
                Err(Error::InvalidRequest { .. })
            ),
            "{new:?}"
        );
    }
    assert!(matches!(
        store
            .record_evidence(&evidence(origin, "root_mismatch", Some(tree(u64::MAX, 0))))
            .await,
        Err(Error::InvalidRequest { .. })
    ));
    assert_eq!(store.state(origin).await.expect("state"), Some(stored));
    assert_eq!(store.evidence(origin).await.expect("evidence"), vec![]);
}
