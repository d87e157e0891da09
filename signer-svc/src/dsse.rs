//! DSSE envelopes (secure-systems-lab/dsse v1) over allowlisted payloads.
//!
//! The signed bytes are the Pre-Authentication Encoding
//! `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, built here.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;

pub use witness_core::dsse::pae;

use crate::error::{Error, Result};

/// The in-toto attestation payload type.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// The largest payload signed: manifests list one digest per cosigned checkpoint
/// of a period; 4 MiB is tens of thousands of entries.
pub const MAX_PAYLOAD_SIZE: usize = 4 << 20;

/// The longest payload type: a media type, whose type and subtype names are at
/// most 127 characters each (RFC 6838, section 4.2): 127 + 1 + 127. The
/// configuration refuses longer allowlist entries, so no longer type is signed.
pub const MAX_PAYLOAD_TYPE_LEN: usize = 255;

#[derive(Deserialize)]
struct StatementProbe {
    #[serde(rename = "_type")]
    statement_type: String,
    subject: Vec<serde_json::Value>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
}

/// Checks that a payload may be signed: its type is allowlisted, and an in-toto
/// payload is an in-toto Statement with subjects and a predicate type.
pub fn check_payload(payload_type: &str, payload: &[u8], allowed: &[String]) -> Result<()> {
    if payload.len() > MAX_PAYLOAD_SIZE {
        return Err(Error::PayloadRefused {
            reason: "payload is over 4 MiB",
        });
    }
    if !allowed.iter().any(|t| t == payload_type) {
        return Err(Error::PayloadRefused {
            reason: "payload type is not allowlisted",
        });
    }
    if payload_type == IN_TOTO_PAYLOAD_TYPE {
        let statement: StatementProbe =
            serde_json::from_slice(payload).map_err(|_| Error::PayloadRefused {
                reason: "payload is not an in-toto Statement",
            })?;
        if !statement
            .statement_type
            .starts_with("https://in-toto.io/Statement/")
            || statement.subject.is_empty()
            || statement.predicate_type.is_empty()
        {
            return Err(Error::PayloadRefused {
                reason: "payload is not an in-toto Statement with subjects",
            });
        }
    }
    Ok(())
}

/// The envelope JSON.
pub fn envelope(payload_type: &str, payload: &[u8], key_id: &str, signature: &[u8]) -> Vec<u8> {
    serde_json::json!({
        "payload": BASE64.encode(payload),
        "payloadType": payload_type,
        "signatures": [{"keyid": key_id, "sig": BASE64.encode(signature)}],
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowlisted_statements_pass() {
        let allowed = vec![IN_TOTO_PAYLOAD_TYPE.to_string()];
        let statement = br#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"a","digest":{"sha256":"00"}}],"predicateType":"x"}"#;
        check_payload(IN_TOTO_PAYLOAD_TYPE, statement, &allowed).unwrap();
        assert!(check_payload("text/plain", statement, &allowed).is_err());
        assert!(check_payload(IN_TOTO_PAYLOAD_TYPE, b"raw bytes", &allowed).is_err());
        assert!(
            check_payload(
                IN_TOTO_PAYLOAD_TYPE,
                br#"{"_type":"https://in-toto.io/Statement/v1","subject":[],"predicateType":"x"}"#,
                &allowed
            )
            .is_err()
        );
    }
}
