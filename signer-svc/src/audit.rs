//! The audit log: one JSON line per operation, with the operation, the log and
//! checkpoint it concerned, the key, the caller's certificate identity and the
//! result. It holds no personal data: no client addresses, no payload contents.

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
    pub operation: &'a str,
    pub origin: Option<&'a str>,
    pub size: Option<u64>,
    pub root: Option<String>,
    pub key_id: Option<String>,
    pub caller: Option<&'a str>,
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
        let (outcome, reason) = match result {
            Ok(()) => ("ok", Value::Null),
            Err(error) => (error.kind(), Value::String(error.to_string())),
        };
        self.write(json!({
            "time": now_seconds(),
            "operation": entry.operation,
            "origin": entry.origin,
            "size": entry.size,
            "root": entry.root,
            "key_id": entry.key_id,
            "caller": entry.caller,
            "result": outcome,
            "reason": reason,
        }));
    }

    /// Records a TLS handshake the listener refused (no, untrusted or expired
    /// client certificate, wrong protocol version).
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

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
