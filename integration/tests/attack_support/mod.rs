//! What the attack tests (`listener_auth.rs`, `races.rs`, `broken_core.rs`)
//! share: pushing checkpoints through the real gateway, and reading the
//! stack's records from outside (the signer's fork guard and audit log, the
//! witness's SQLite state), read-only, so a test can say "nothing changed".

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use integration::stack::Stack;
use serde_json::Value;
use witness_core::merkle::Hash;
use witness_core::witness_api::{AddCheckpointRequest, serialize_add_checkpoint_body};

/// A gateway's answer: status, content type and body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// `POST <gateway>/add-checkpoint`.
pub async fn add_checkpoint(
    http: &reqwest::Client,
    gateway: &str,
    old_size: u64,
    proof: &[Hash],
    note: &[u8],
) -> Answer {
    let body = serialize_add_checkpoint_body(&AddCheckpointRequest {
        old_size,
        consistency_proof: proof.to_vec(),
        checkpoint: note.to_vec(),
    });
    let response = http
        .post(format!("{gateway}/add-checkpoint"))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    Answer {
        status,
        content_type,
        body: response.text().await.unwrap(),
    }
}

/// The `https://` endpoints the dev stack's gateway configuration names, in
/// order: the witness's, then the signer's.
pub fn upstream_addrs(stack: &Stack) -> (SocketAddr, SocketAddr) {
    let text = std::fs::read_to_string(stack.dir().join("config/gateway.toml")).unwrap();
    let addrs: Vec<SocketAddr> = text
        .lines()
        .filter_map(|line| line.strip_prefix("endpoint = \"https://"))
        .map(|rest| rest.trim_end_matches('"').parse().unwrap())
        .collect();
    assert_eq!(addrs.len(), 2, "witness and signer endpoints in {text}");
    (addrs[0], addrs[1])
}

/// The signer fork guard's whole record: origin -> (size, root).
pub fn fork_guard_record(stack: &Stack) -> BTreeMap<String, (i64, Vec<u8>)> {
    read_table(
        &stack.dir().join("signer/fork-guard.db"),
        "SELECT origin, size, root FROM cosigned",
    )
}

/// The witness's stored state: origin -> (size, root).
pub fn witness_state(stack: &Stack) -> BTreeMap<String, (i64, Vec<u8>)> {
    read_table(
        &stack.dir().join("witness/state.db"),
        "SELECT origin, size, root FROM state",
    )
}

/// The origins the witness trusts, from its SQLite store.
pub fn trusted_origins(stack: &Stack) -> Vec<String> {
    let connection = read_only(&stack.dir().join("witness/state.db"));
    let mut statement = connection
        .prepare("SELECT origin FROM logs ORDER BY origin")
        .unwrap();
    statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn read_only(path: &Path) -> rusqlite::Connection {
    let connection =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    connection
        .busy_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    connection
}

fn read_table(path: &Path, query: &str) -> BTreeMap<String, (i64, Vec<u8>)> {
    let connection = read_only(path);
    let mut statement = connection.prepare(query).unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, (row.get(1)?, row.get(2)?))))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The signer's audit log (JSON lines).
pub fn audit_lines(stack: &Stack) -> Vec<Value> {
    std::fs::read_to_string(stack.dir().join("signer/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The audit lines after the first `from`, without the gateway's own
/// `metrics`/`public_keys` observations (it scrapes the signer for `/metrics`
/// and `/readyz`).
pub fn audit_lines_since(stack: &Stack, from: usize) -> Vec<Value> {
    audit_lines(stack)
        .split_off(from.min(audit_lines(stack).len()))
        .into_iter()
        .filter(|line| {
            !(matches!(line["operation"].as_str(), Some("metrics" | "public_keys"))
                && line["result"] == "ok")
        })
        .collect()
}

/// Waits up to 10 s for at least one audit line after `from` (a refused
/// handshake is audited by the signer's accept task, which may finish after
/// the client saw the failure); the lines.
pub async fn await_audit_since(stack: &Stack, from: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let lines = audit_lines_since(stack, from);
        if !lines.is_empty() || tokio::time::Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
