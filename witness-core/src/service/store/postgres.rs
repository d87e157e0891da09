//! The shared store: PostgreSQL, for several witness replicas behind one
//! address.
//!
//! Every write is one statement, so each is atomic on its own and needs no
//! explicit transaction: compare-and-swap is `UPDATE ... WHERE size = $ AND
//! root = $` (PostgreSQL re-checks the condition on the latest row version
//! when two updates race, so exactly one replica wins) and the first state is
//! `INSERT ... ON CONFLICT DO NOTHING`. A commit is durable when it returns
//! under PostgreSQL's default `synchronous_commit = on`, and the server groups
//! concurrent commits into one WAL flush by itself.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use super::{
    CasOutcome, LogState, LogStore, MisbehaviourEvidence, StoredTree, TrustedLog, canonical_keys,
    from_sql_int, root_from_sql, storage, to_sql_int,
};
use crate::{Error, Result};

/// How long a call waits for a pooled connection, for a new connection, and
/// for a connection's health check before it fails rather than hang while the
/// database is unreachable.
const POOL_TIMEOUT: Duration = Duration::from_secs(10);

/// The key of the advisory lock held while the schema is created, so replicas
/// starting at once do not race on `CREATE TABLE IF NOT EXISTS` (which can fail
/// with a unique violation in the catalog when two run concurrently). The value
/// is arbitrary but fixed: "witness" in ASCII.
const MIGRATION_LOCK: i64 = 0x0077_6974_6e65_7373;

/// Tables are created in the connection's first `search_path` schema.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS logs (
    origin TEXT PRIMARY KEY,
    -- Verifier keys (vkey form), sorted.
    verifier_keys TEXT[] NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
    origin TEXT PRIMARY KEY REFERENCES logs (origin),
    size BIGINT NOT NULL CHECK (size >= 0),
    root BYTEA NOT NULL CHECK (octet_length(root) = 32),
    note BYTEA NOT NULL,
    cosigned_at BIGINT NOT NULL CHECK (cosigned_at >= 0)
);
CREATE TABLE IF NOT EXISTS evidence (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    origin TEXT NOT NULL REFERENCES logs (origin),
    note BYTEA NOT NULL,
    cosigned_size BIGINT CHECK (cosigned_size >= 0),
    cosigned_root BYTEA CHECK (octet_length(cosigned_root) = 32),
    reason TEXT NOT NULL,
    received_at BIGINT NOT NULL CHECK (received_at >= 0),
    CHECK ((cosigned_size IS NULL) = (cosigned_root IS NULL))
);
CREATE INDEX IF NOT EXISTS evidence_by_origin ON evidence (origin, id);
-- One row, rewritten by each readiness write probe.
CREATE TABLE IF NOT EXISTS probe (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    writes BIGINT NOT NULL CHECK (writes >= 1)
);
";

/// The PostgreSQL-backed [`LogStore`].
pub struct PostgresStore {
    pool: Pool,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The pool's configuration holds the password: show only its size.
        f.debug_struct("PostgresStore")
            .field("pool_size", &self.pool.status().max_size)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (a `postgresql://` URL or a libpq
    /// key=value string) with a pool of at most `pool_size` connections, and
    /// creates the schema if missing. Fails if the database cannot be reached.
    pub async fn connect(url: &str, pool_size: usize) -> Result<PostgresStore> {
        // The parse error names the offending option, never the URL itself.
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| failed("parsing the database URL", e))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .build()
            .map_err(|e| failed("creating the connection pool", e))?;
        let store = PostgresStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn client(&self) -> Result<Object> {
        self.pool
            .get()
            .await
            .map_err(|e| failed("connecting to the database", e))
    }

    async fn migrate(&self) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| failed("creating the schema", e))?;
        // Released at commit (or rollback, if the connection drops).
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| failed("creating the schema", e))?;
        tx.batch_execute(SCHEMA)
            .await
            .map_err(|e| failed("creating the schema", e))?;
        tx.commit()
            .await
            .map_err(|e| failed("creating the schema", e))
    }
}

#[async_trait]
impl LogStore for PostgresStore {
    async fn add_log(&self, log: &TrustedLog) -> Result<()> {
        let keys = canonical_keys(&log.verifier_keys);
        let client = self.client().await?;
        let insert = client
            .prepare_cached(
                "INSERT INTO logs (origin, verifier_keys) VALUES ($1, $2)
                 ON CONFLICT (origin) DO NOTHING",
            )
            .await
            .map_err(|e| failed("adding a log", e))?;
        let inserted = client
            .execute(&insert, &[&log.origin, &keys])
            .await
            .map_err(|e| failed("adding a log", e))?;
        if inserted == 1 {
            return Ok(());
        }
        // The row exists (logs are never removed), so this read finds it.
        let row = client
            .query_one(
                "SELECT verifier_keys FROM logs WHERE origin = $1",
                &[&log.origin],
            )
            .await
            .map_err(|e| failed("adding a log", e))?;
        let stored: Vec<String> = row.try_get(0).map_err(|e| failed("adding a log", e))?;
        if stored == keys {
            Ok(())
        } else {
            Err(Error::LogKeyChange {
                origin: log.origin.clone(),
            })
        }
    }

    async fn logs(&self) -> Result<Vec<TrustedLog>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT origin, verifier_keys FROM logs ORDER BY origin",
                &[],
            )
            .await
            .map_err(|e| failed("listing logs", e))?;
        rows.iter()
            .map(|row| {
                Ok(TrustedLog {
                    origin: row.try_get(0).map_err(|e| failed("listing logs", e))?,
                    verifier_keys: row.try_get(1).map_err(|e| failed("listing logs", e))?,
                })
            })
            .collect()
    }

    async fn state(&self, origin: &str) -> Result<Option<LogState>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT size, root, note, cosigned_at FROM state WHERE origin = $1")
            .await
            .map_err(|e| failed("reading state", e))?;
        let row = client
            .query_opt(&stmt, &[&origin])
            .await
            .map_err(|e| failed("reading state", e))?;
        row.map(|row| {
            let get = |e| failed("reading state", e);
            Ok(LogState {
                origin: origin.to_owned(),
                tree: StoredTree {
                    size: from_sql_int(row.try_get(0).map_err(get)?)?,
                    root: root_from_sql(row.try_get(1).map_err(get)?)?,
                },
                note: row.try_get(2).map_err(get)?,
                cosigned_at: from_sql_int(row.try_get(3).map_err(get)?)?,
            })
        })
        .transpose()
    }

    async fn compare_and_swap(
        &self,
        expected: Option<StoredTree>,
        new: &LogState,
    ) -> Result<CasOutcome> {
        let size = to_sql_int(new.tree.size)?;
        let cosigned_at = to_sql_int(new.cosigned_at)?;
        let root = &new.tree.root.0[..];
        let client = self.client().await?;
        let swapped = match expected {
            // A row with the expected tree exists only for a trusted origin (the
            // foreign key, and logs are never removed), so a swap needs no
            // separate trust check.
            Some(old) => {
                let old_size = to_sql_int(old.size)?;
                let stmt = client
                    .prepare_cached(
                        "UPDATE state SET size = $1, root = $2, note = $3, cosigned_at = $4
                         WHERE origin = $5 AND size = $6 AND root = $7",
                    )
                    .await
                    .map_err(|e| failed("compare-and-swap", e))?;
                client
                    .execute(
                        &stmt,
                        &[
                            &size,
                            &root,
                            &new.note,
                            &cosigned_at,
                            &new.origin,
                            &old_size,
                            &&old.root.0[..],
                        ],
                    )
                    .await
            }
            // Inserting from `logs` inserts nothing for an untrusted origin, and
            // `DO NOTHING` turns a state another replica inserted meanwhile into a
            // conflict rather than an error or an overwrite.
            None => {
                let stmt = client
                    .prepare_cached(
                        "INSERT INTO state (origin, size, root, note, cosigned_at)
                         SELECT origin, $2, $3, $4, $5 FROM logs WHERE origin = $1
                         ON CONFLICT (origin) DO NOTHING",
                    )
                    .await
                    .map_err(|e| failed("compare-and-swap", e))?;
                client
                    .execute(&stmt, &[&new.origin, &size, &root, &new.note, &cosigned_at])
                    .await
            }
        }
        .map_err(|e| failed("compare-and-swap", e))?;
        if swapped == 1 {
            return Ok(CasOutcome::Swapped);
        }
        // Nothing changed: tell an untrusted origin from another tree.
        let stmt = client
            .prepare_cached(
                "SELECT s.size, s.root FROM logs l LEFT JOIN state s ON s.origin = l.origin
                 WHERE l.origin = $1",
            )
            .await
            .map_err(|e| failed("compare-and-swap", e))?;
        let row = client
            .query_opt(&stmt, &[&new.origin])
            .await
            .map_err(|e| failed("compare-and-swap", e))?
            .ok_or_else(|| Error::UnknownOrigin {
                origin: new.origin.clone(),
            })?;
        let get = |e| failed("compare-and-swap", e);
        let size: Option<i64> = row.try_get(0).map_err(get)?;
        let root: Option<&[u8]> = row.try_get(1).map_err(get)?;
        let current = match (size, root) {
            (Some(size), Some(root)) => Some(StoredTree {
                size: from_sql_int(size)?,
                root: root_from_sql(root)?,
            }),
            _ => None,
        };
        Ok(CasOutcome::Conflict { current })
    }

    async fn record_evidence(&self, evidence: &MisbehaviourEvidence) -> Result<()> {
        let received_at = to_sql_int(evidence.received_at)?;
        let (size, root) = match &evidence.cosigned {
            Some(tree) => (Some(to_sql_int(tree.size)?), Some(&tree.root.0[..])),
            None => (None, None),
        };
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO evidence (origin, note, cosigned_size, cosigned_root, reason, received_at)
                 SELECT origin, $2, $3, $4, $5, $6 FROM logs WHERE origin = $1",
            )
            .await
            .map_err(|e| failed("recording evidence", e))?;
        let inserted = client
            .execute(
                &stmt,
                &[
                    &evidence.origin,
                    &evidence.note,
                    &size,
                    &root,
                    &evidence.reason,
                    &received_at,
                ],
            )
            .await
            .map_err(|e| failed("recording evidence", e))?;
        if inserted == 1 {
            Ok(())
        } else {
            Err(Error::UnknownOrigin {
                origin: evidence.origin.clone(),
            })
        }
    }

    async fn evidence(&self, origin: &str) -> Result<Vec<MisbehaviourEvidence>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT note, cosigned_size, cosigned_root, reason, received_at
                 FROM evidence WHERE origin = $1 ORDER BY id",
            )
            .await
            .map_err(|e| failed("reading evidence", e))?;
        let rows = client
            .query(&stmt, &[&origin])
            .await
            .map_err(|e| failed("reading evidence", e))?;
        rows.iter()
            .map(|row| {
                let get = |e| failed("reading evidence", e);
                let size: Option<i64> = row.try_get(1).map_err(get)?;
                let root: Option<&[u8]> = row.try_get(2).map_err(get)?;
                let cosigned = match (size, root) {
                    (Some(size), Some(root)) => Some(StoredTree {
                        size: from_sql_int(size)?,
                        root: root_from_sql(root)?,
                    }),
                    _ => None,
                };
                Ok(MisbehaviourEvidence {
                    origin: origin.to_owned(),
                    note: row.try_get(0).map_err(get)?,
                    cosigned,
                    reason: row.try_get(3).map_err(get)?,
                    received_at: from_sql_int(row.try_get(4).map_err(get)?)?,
                })
            })
            .collect()
    }

    async fn probe_write(&self) -> Result<()> {
        let client = self.client().await?;
        // Autocommit: durable when it returns, like every write of this store.
        client
            .execute(
                "INSERT INTO probe (id, writes) VALUES (1, 1)
                 ON CONFLICT (id) DO UPDATE SET writes = probe.writes + 1",
                &[],
            )
            .await
            .map_err(|e| failed("write probe", e))?;
        Ok(())
    }
}

/// A database or pool failure as `Error::Storage`, with the error's causes:
/// tokio-postgres shows only "db error" or "error connecting to server" at the
/// top, and keeps the server's message and the I/O error as sources. None of
/// them carries the URL or a password. A cause that its wrapper's message
/// already ends with (the pool's errors quote theirs) is not repeated.
fn failed(what: &str, err: impl std::error::Error) -> Error {
    let mut detail = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !detail.ends_with(&text) {
            detail.push_str(": ");
            detail.push_str(&text);
        }
        source = cause.source();
    }
    storage(what, detail)
}
