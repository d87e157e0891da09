//! `Witness::readiness` (the `Readiness` RPC behind the gateway's `/readyz`)
//! over the real signer and real stores: ready when healthy; the store's write
//! probe really commits a row (and a lock that still lets readers read makes
//! it fail, so a read-only check could not pass for it), on SQLite and on
//! PostgreSQL; a stopped signer is reported as unreachable.

#![allow(clippy::unwrap_used)]

mod witness_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use witness_core::service::store::LogStore;
use witness_core::service::store::postgres::PostgresStore;
use witness_core::service::witness::{READINESS_TIMEOUT, Witness};
use witness_support::{SignerHarness, TestLog, WitnessHarness};

/// How many writes the probe row records (0 before the first).
fn sqlite_probe_writes(path: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("SELECT coalesce(max(writes), 0) FROM probe", [], |row| {
        row.get(0)
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_witness_is_ready_and_the_probe_commits_a_write() {
    let log = TestLog::new("example.com/log", 5);
    let harness = WitnessHarness::start(vec![log.keys()], Vec::new(), false).await;
    let db = harness.state_dir.path().join("witness.db");
    let before = sqlite_probe_writes(&db);
    let readiness = harness.witness.readiness().await;
    assert!(
        readiness.store_writable && readiness.signer_reachable,
        "{readiness:?}"
    );
    assert_eq!(readiness.detail, "");
    // Committed, as another connection sees.
    assert_eq!(sqlite_probe_writes(&db), before + 1);
    harness.witness.readiness().await;
    assert_eq!(sqlite_probe_writes(&db), before + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_that_cannot_commit_is_not_ready() {
    let log = TestLog::new("example.com/log", 5);
    let harness = WitnessHarness::start(vec![log.keys()], Vec::new(), false).await;
    let db = harness.state_dir.path().join("witness.db");
    // Another connection holds the write lock; in WAL mode readers still read,
    // so only a check that writes can notice.
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    assert!(
        harness.store.state("example.com/log").await.is_ok(),
        "reads still work"
    );
    let started = Instant::now();
    let readiness = harness.witness.readiness().await;
    assert!(!readiness.store_writable, "{readiness:?}");
    assert!(readiness.signer_reachable, "{readiness:?}");
    assert!(
        readiness.detail.starts_with("state store:"),
        "{readiness:?}"
    );
    assert!(
        started.elapsed() < READINESS_TIMEOUT + Duration::from_secs(2),
        "the verdict is bounded in time: {:?}",
        started.elapsed()
    );
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    // Ready again once the lock is gone (the probe queued meanwhile commits).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let readiness = harness.witness.readiness().await;
        if readiness.store_writable {
            break;
        }
        assert!(Instant::now() < deadline, "{readiness:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_signer_is_not_ready() {
    let log = TestLog::new("example.com/log", 5);
    let harness = WitnessHarness::start(vec![log.keys()], Vec::new(), false).await;
    assert!(harness.witness.readiness().await.signer_reachable);
    let witness = harness.witness.clone();
    harness.signer.server.stop().await;
    let readiness = witness.readiness().await;
    assert!(!readiness.signer_reachable, "{readiness:?}");
    assert!(readiness.store_writable, "{readiness:?}");
    assert!(readiness.detail.starts_with("signer:"), "{readiness:?}");
}

async fn postgres_probe_writes(admin: &tokio_postgres::Client, schema: &str) -> i64 {
    let query = format!("SELECT coalesce(max(writes), 0) FROM {schema}.probe");
    admin.query_one(&query, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_probe_commits_and_a_write_locked_table_is_not_ready() {
    let base = std::env::var("WITNESS_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "WITNESS_TEST_POSTGRES_URL is not set: run scripts/postgres-env and export its \
             output as WITNESS_TEST_POSTGRES_URL (scripts/test does both)"
        )
    });
    let (mut admin, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to WITNESS_TEST_POSTGRES_URL ({e})"));
    tokio::spawn(connection);
    let schema = format!(
        "readiness_test_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let separator = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{separator}options=-c%20search_path%3D{schema}");
    let store: Arc<dyn LogStore> = Arc::new(PostgresStore::connect(&url, 2).await.unwrap());

    let signer = SignerHarness::start(false).await;
    let metrics = Arc::new(witness_core::service::metrics::WitnessMetrics::new().unwrap());
    let client = signer.client(metrics.clone());
    let keys = client.keys().await.unwrap();
    let log = TestLog::new("example.com/log", 5);
    let witness = Witness::new(
        vec![log.keys()],
        Vec::new(),
        keys.cosigning,
        store,
        Arc::new(client),
        None,
        metrics,
    )
    .await
    .unwrap();

    let before = postgres_probe_writes(&admin, &schema).await;
    let readiness = witness.readiness().await;
    assert!(
        readiness.store_writable && readiness.signer_reachable,
        "{readiness:?}"
    );
    assert_eq!(
        postgres_probe_writes(&admin, &schema).await,
        before + 1,
        "the probe committed"
    );

    // EXCLUSIVE mode lets plain reads through but no write.
    let lock = admin.transaction().await.unwrap();
    lock.batch_execute(&format!("LOCK TABLE {schema}.probe IN EXCLUSIVE MODE"))
        .await
        .unwrap();
    let readiness = witness.readiness().await;
    assert!(!readiness.store_writable, "{readiness:?}");
    assert!(readiness.signer_reachable, "{readiness:?}");
    assert!(
        readiness.detail.starts_with("state store:"),
        "{readiness:?}"
    );
    lock.rollback().await.unwrap();

    drop(witness);
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}
