//! The audit log: one JSON line per operation (per item of a batch), with the
//! operation, the log and checkpoint it concerned, the key, the caller's
//! certificate identity and the result. It holds no personal data: no client
//! addresses, no payload contents.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::error::{Error, Result};

/// Where audit lines go.
pub struct AuditLog {
    // A std mutex: each write is one short, synchronous line.
    sink: Mutex<Box<dyn Write + Send>>,
}

/// One audited operation.
#[derive(Default)]
pub struct AuditEntry<'a> {
    pub operation: &'static str,
    pub origin: Option<&'a str>,
    pub size: Option<u64>,
    pub root: Option<String>,
    pub key_id: Option<String>,
    /// The caller's verified identities (the allowlisted one when allowed).
    pub caller: Option<&'a str>,
    /// The identities a refused, unverified client certificate claims.
    pub claimed_caller: Option<&'a str>,
}

impl AuditLog {
    /// Appends to a file, or writes to standard output.
    pub fn open(path: Option<&Path>) -> Result<AuditLog> {
        let sink: Box<dyn Write + Send> = match path {
            Some(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| Error::Config(format!("audit log {}: {e}", path.display())))?,
            ),
            None => Box::new(std::io::stdout()),
        };
        Ok(AuditLog {
            sink: Mutex::new(sink),
        })
    }

    /// Records an operation and its result (`ok`, or the error's kind and text).
    pub fn record(&self, entry: &AuditEntry<'_>, result: std::result::Result<(), &Error>) {
        self.write(line(now_seconds(), entry, result));
    }

    /// Records several operations (the items of a batch), one line each, in one
    /// append.
    pub fn record_all<'a>(
        &self,
        entries: impl IntoIterator<Item = (AuditEntry<'a>, std::result::Result<(), &'a Error>)>,
    ) {
        let time = now_seconds();
        let mut text = String::new();
        for (entry, result) in entries {
            text.push_str(&line(time, &entry, result).to_string());
            text.push('\n');
        }
        self.append(&text);
    }

    /// Records a TLS handshake the listener refused (not TLS, not TLS 1.3, no
    /// proof of possession of the certificate's key). Certificates that do not
    /// verify are not refused here but per call, by the edge layer.
    pub fn handshake_refused(&self, reason: &str) {
        self.write(json!({
            "time": now_seconds(),
            "operation": "tls_handshake",
            "result": "refused",
            "reason": reason,
        }));
    }

    fn write(&self, line: Value) {
        // Serialized first, so that the line goes out in one write (one
        // O_APPEND append), not in the dozens of fragments `Display` emits.
        let mut text = line.to_string();
        text.push('\n');
        self.append(&text);
    }

    /// Writes whole lines in one append, so that concurrent writers' lines
    /// never interleave.
    fn append(&self, text: &str) {
        if text.is_empty() {
            return;
        }
        if let Ok(mut sink) = self.sink.lock() {
            // An audit line that cannot be written is reported in the service log;
            // the operation's outcome does not change.
            if sink
                .write_all(text.as_bytes())
                .and_then(|()| sink.flush())
                .is_err()
            {
                tracing::error!("cannot write the audit log");
            }
        }
    }
}

fn line(time: u64, entry: &AuditEntry<'_>, result: std::result::Result<(), &Error>) -> Value {
    let (outcome, reason) = match result {
        Ok(()) => ("ok", Value::Null),
        Err(error) => (error.kind(), Value::String(error.to_string())),
    };
    json!({
        "time": time,
        "operation": entry.operation,
        "origin": entry.origin,
        "size": entry.size,
        "root": entry.root,
        "key_id": entry.key_id,
        "caller": entry.caller,
        "claimed_caller": entry.claimed_caller,
        "result": outcome,
        "reason": reason,
    })
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
