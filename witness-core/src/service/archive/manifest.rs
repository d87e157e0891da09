//! Manifests: an in-toto Statement v1 listing every checkpoint object written in
//! a period, in a DSSE envelope signed by the signer's manifest key; and their
//! verification. Pure: no I/O and no clock.

use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::Verifier as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dsse::pae;
use crate::service::archive::layout::rfc3339;
use crate::{Error, Result};

/// The DSSE payload type of manifests.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The in-toto Statement version written.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// What a manifest's predicate says.
pub const PREDICATE_TYPE: &str = "https://rekor-witness.dev/checkpoint-archive/v1";

/// The most subjects in one manifest. The signer refuses payloads over 4 MiB; a
/// subject is at most 397 bytes of JSON (a 298-byte name that needs no
/// escaping, a 64-digit digest and 35 bytes of punctuation), so 10,000 subjects
/// stay under 4 MB.
pub const MAX_MANIFEST_SUBJECTS: usize = 10_000;

/// The subjects at which the archive closes a period early; the rest go to the
/// next manifest. Sealing holds the statement several times over for a moment
/// (the payload, the signer request and its answer, the envelope and its
/// decoded check), in the witness and in the signer: at 10,000 subjects that
/// was a 15 MiB spike in the witness's memory, the largest item of its peak at
/// 40,000 logs. 2,000 keep it near 3 MiB and make about one manifest a second
/// at 2,000 cosignatures/s.
pub const ARCHIVE_MANIFEST_SUBJECTS: usize = 2_000;

/// The largest envelope read: a 4 MiB payload in base64 (5.6 MB) and signatures.
pub const MAX_ENVELOPE_SIZE: usize = 8 << 20;

/// One archived object listed in a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ManifestSubject {
    /// The object's name relative to the archive's root.
    pub name: String,
    /// SHA-256 of the object's bytes.
    pub sha256: [u8; 32],
}

/// What a manifest whose signature verified says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedManifest {
    /// The witness that wrote the archive.
    pub witness: String,
    /// Start of the period covered (RFC 3339).
    pub period_start: String,
    /// End of the period covered (RFC 3339).
    pub period_end: String,
    /// Every object written in the period, each once, in the order written.
    pub subjects: Vec<ManifestSubject>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Statement {
    #[serde(rename = "_type")]
    statement_type: String,
    subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
    predicate: Predicate,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Subject {
    name: String,
    digest: SubjectDigest,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectDigest {
    sha256: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Predicate {
    witness: String,
    period_start: String,
    period_end: String,
    count: usize,
}

/// The statement (DSSE payload) of the manifest for `[start, end]`.
pub(crate) fn statement(
    witness: &str,
    start: u64,
    end: u64,
    subjects: &[ManifestSubject],
) -> Result<Vec<u8>> {
    let (Some(period_start), Some(period_end)) = (rfc3339(start), rfc3339(end)) else {
        return Err(Error::Archive {
            detail: "manifest period is after the year 9999".to_owned(),
        });
    };
    let statement = Statement {
        statement_type: STATEMENT_TYPE.to_owned(),
        subject: subjects
            .iter()
            .map(|s| Subject {
                name: s.name.clone(),
                digest: SubjectDigest {
                    sha256: hex::encode(s.sha256),
                },
            })
            .collect(),
        predicate_type: PREDICATE_TYPE.to_owned(),
        predicate: Predicate {
            witness: witness.to_owned(),
            period_start,
            period_end,
            count: subjects.len(),
        },
    };
    serde_json::to_vec(&statement).map_err(|e| Error::Archive {
        detail: format!("encoding the manifest: {e}"),
    })
}

#[derive(Deserialize)]
struct Envelope {
    payload: String,
    #[serde(rename = "payloadType")]
    payload_type: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Deserialize)]
struct EnvelopeSignature {
    #[serde(default)]
    keyid: String,
    sig: String,
}

fn malformed(detail: impl Into<String>) -> Error {
    Error::MalformedJson {
        what: "DSSE envelope",
        detail: detail.into(),
    }
}

fn parse_envelope(envelope: &[u8]) -> Result<Envelope> {
    if envelope.len() > MAX_ENVELOPE_SIZE {
        return Err(Error::TooLarge {
            what: "DSSE envelope",
            size: envelope.len(),
            max: MAX_ENVELOPE_SIZE,
        });
    }
    serde_json::from_slice(envelope).map_err(|e| malformed(e.to_string()))
}

/// The payload type and payload of an envelope, unverified: used to check that
/// what the signer returned, or what is already stored, carries our statement.
pub(crate) fn envelope_payload(envelope: &[u8]) -> Result<(String, Vec<u8>)> {
    let envelope = parse_envelope(envelope)?;
    let payload = BASE64
        .decode(&envelope.payload)
        .map_err(|_| malformed("payload is not base64"))?;
    Ok((envelope.payload_type, payload))
}

#[derive(Clone)]
enum PublicKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    EcdsaP256(aws_lc_rs::signature::UnparsedPublicKey<Vec<u8>>),
}

/// The signer's manifest public key (ECDSA P-256 or Ed25519).
#[derive(Clone)]
pub struct ManifestVerifier {
    key: PublicKey,
    key_id: String,
}

impl ManifestVerifier {
    /// Parses a PEM SubjectPublicKeyInfo, as the signer's `PublicKeys` call
    /// returns it for the `manifest` purpose.
    pub fn from_pem(pem: &str) -> Result<ManifestVerifier> {
        use ed25519_dalek::pkcs8::DecodePublicKey as _;
        use p256::pkcs8::EncodePublicKey as _;
        if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            return Ok(ManifestVerifier {
                key_id: hex::encode(Sha256::digest(key.as_bytes())),
                key: PublicKey::Ed25519(key),
            });
        }
        if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            let der = key.to_public_key_der().map_err(|_| Error::MalformedKey {
                reason: "P-256 key cannot be re-encoded",
            })?;
            return Ok(ManifestVerifier {
                key_id: hex::encode(Sha256::digest(der.as_bytes())),
                key: PublicKey::EcdsaP256(aws_lc_rs::signature::UnparsedPublicKey::new(
                    &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
                    key.to_sec1_point(false).as_bytes().to_vec(),
                )),
            });
        }
        Err(Error::MalformedKey {
            reason: "PEM is not an Ed25519 or P-256 public key",
        })
    }

    /// The DSSE key ID the signer uses: hex SHA-256 of the raw Ed25519 key or of
    /// the P-256 key's DER SubjectPublicKeyInfo.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.key {
            PublicKey::Ed25519(key) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|signature| key.verify(message, &signature).is_ok()),
            // ASN.1 DER over SHA-256 of the message, as the signer makes them.
            PublicKey::EcdsaP256(key) => key.verify(message, signature).is_ok(),
        }
    }
}

/// Verifies a manifest envelope against the manifest key and returns what it
/// lists. Signatures naming another key ID are skipped; one valid signature by
/// `key` is required. The statement must be this archive's predicate, with
/// well-formed digests, each object listed once and a count that matches.
pub fn verify_manifest(envelope: &[u8], key: &ManifestVerifier) -> Result<VerifiedManifest> {
    let payload = verify_envelope(envelope, key)?;
    let not_ours = |detail: String| Error::MalformedJson {
        what: "archive manifest",
        detail,
    };
    let statement: Statement =
        serde_json::from_slice(&payload).map_err(|e| not_ours(e.to_string()))?;
    if statement.statement_type != STATEMENT_TYPE || statement.predicate_type != PREDICATE_TYPE {
        return Err(not_ours(format!(
            "statement {:?} with predicate {:?} is not a checkpoint archive manifest",
            statement.statement_type, statement.predicate_type
        )));
    }
    if statement.predicate.count != statement.subject.len() {
        return Err(not_ours(format!(
            "count {} does not match the {} subjects",
            statement.predicate.count,
            statement.subject.len()
        )));
    }
    let mut names = HashSet::new();
    let mut subjects = Vec::with_capacity(statement.subject.len());
    for subject in statement.subject {
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(&subject.digest.sha256, &mut sha256)
            .map_err(|_| not_ours(format!("digest of {:?} is not SHA-256", subject.name)))?;
        if !names.insert(subject.name.clone()) {
            return Err(not_ours(format!("{:?} is listed twice", subject.name)));
        }
        subjects.push(ManifestSubject {
            name: subject.name,
            sha256,
        });
    }
    Ok(VerifiedManifest {
        witness: statement.predicate.witness,
        period_start: statement.predicate.period_start,
        period_end: statement.predicate.period_end,
        subjects,
    })
}

/// Verifies a DSSE envelope of payload type [`PAYLOAD_TYPE`] against `key` and
/// returns its payload. Signatures naming another key ID are skipped; one valid
/// signature by `key` is required.
pub fn verify_envelope(envelope: &[u8], key: &ManifestVerifier) -> Result<Vec<u8>> {
    let parsed = parse_envelope(envelope)?;
    if parsed.payload_type != PAYLOAD_TYPE {
        return Err(malformed(format!(
            "payload type {:?} is not {PAYLOAD_TYPE}",
            parsed.payload_type
        )));
    }
    let payload = BASE64
        .decode(&parsed.payload)
        .map_err(|_| malformed("payload is not base64"))?;
    let message = pae(&parsed.payload_type, &payload);
    let signed = parsed
        .signatures
        .iter()
        .filter(|s| s.keyid.is_empty() || s.keyid == key.key_id)
        .filter_map(|s| BASE64.decode(&s.sig).ok())
        .any(|signature| key.verifies(&message, &signature));
    if !signed {
        return Err(Error::NoTrustedSignature);
    }
    Ok(payload)
}

/// The DSSE envelope JSON the signer returns, for a signature made here (a
/// mirror producer's file key).
pub(crate) fn envelope(
    payload_type: &str,
    payload: &[u8],
    key_id: &str,
    signature: &[u8],
) -> Vec<u8> {
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
    fn statement_lists_subjects_in_order_with_their_count() {
        let subjects = [
            ManifestSubject {
                name: "checkpoints/a/1.txt".into(),
                sha256: [1; 32],
            },
            ManifestSubject {
                name: "checkpoints/b/2.txt".into(),
                sha256: [2; 32],
            },
        ];
        let payload = statement("w.example/1", 0, 3_600, &subjects).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(json["_type"], STATEMENT_TYPE);
        assert_eq!(json["subject"][1]["name"], "checkpoints/b/2.txt");
        assert_eq!(json["subject"][0]["digest"]["sha256"], "01".repeat(32));
        assert_eq!(json["predicate"]["periodEnd"], "1970-01-01T01:00:00Z");
        assert_eq!(json["predicate"]["count"], 2);
    }

    #[test]
    fn oversized_envelope_is_refused_before_parsing() {
        let error = envelope_payload(&vec![b' '; MAX_ENVELOPE_SIZE + 1]).unwrap_err();
        assert_eq!(error.kind(), "too_large");
    }
}
