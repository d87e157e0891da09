//! The transparency-log part of Sigstore bundles (media types v0.1 to v0.3) and
//! bare `TransparencyLogEntry` JSON (as Rekor v2 returns from
//! `POST /api/v2/log/entries`), checked against a Sigstore `trusted_root.json`.
//!
//! In scope: the entry's leaf hash from its canonicalized body, the inclusion
//! proof, the checkpoint's signature by the log key found in the trusted root by
//! log ID, the checkpoint's origin belonging to that log, and the checkpoint
//! stating the proof's size and root. Out of scope: certificates, timestamps,
//! signed entry timestamps, artifact signatures and key validity periods (the
//! core reads no clock).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::checkpoint::{Checkpoint, verify_checkpoint};
use crate::merkle::{Hash, MAX_PROOF_HASHES, MAX_TREE_SIZE, leaf_hash, verify_inclusion};
use crate::note::{SignatureType, VerifierKey};
use crate::{Error, Result};

/// The largest bundle or trusted root parsed. Bundles embed a certificate chain,
/// a DSSE envelope or message signature, and canonicalized bodies; real ones are
/// a few KB to a few hundred KB. 4 MiB refuses abuse without refusing any bundle
/// Rekor itself would have accepted (Rekor v1 caps entries well below that).
pub const MAX_BUNDLE_SIZE: usize = 4 << 20;

/// Media types of the bundle versions this module reads.
pub const BUNDLE_MEDIA_TYPES: [&str; 4] = [
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle.v0.3+json",
];

fn json<'a, T: Deserialize<'a>>(what: &'static str, bytes: &'a [u8]) -> Result<T> {
    if bytes.len() > MAX_BUNDLE_SIZE {
        return Err(Error::TooLarge {
            what,
            size: bytes.len(),
            max: MAX_BUNDLE_SIZE,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| Error::MalformedJson {
        what,
        detail: e.to_string(),
    })
}

fn malformed(what: &'static str, detail: &str) -> Error {
    Error::MalformedJson {
        what,
        detail: detail.to_owned(),
    }
}

/// Protobuf JSON writes int64 as a decimal string, and some producers as a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum Int64Wire {
    Text(String),
    Number(u64),
}

impl Int64Wire {
    fn value(&self, field: &'static str) -> Result<u64> {
        let value = match self {
            Int64Wire::Number(n) => Some(*n),
            Int64Wire::Text(text) => text.parse::<u64>().ok().filter(|n| n.to_string() == *text),
        };
        value
            .filter(|n| *n <= MAX_TREE_SIZE)
            .ok_or_else(|| malformed("transparency log entry", field))
    }
}

#[derive(Deserialize)]
struct KeyIdWire {
    #[serde(rename = "keyId")]
    key_id: String,
}

#[derive(Deserialize)]
struct CheckpointWire {
    envelope: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InclusionProofWire {
    log_index: Int64Wire,
    root_hash: String,
    tree_size: Int64Wire,
    hashes: Vec<String>,
    checkpoint: Option<CheckpointWire>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransparencyLogEntryWire {
    log_index: Int64Wire,
    log_id: KeyIdWire,
    inclusion_proof: Option<InclusionProofWire>,
    canonicalized_body: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerificationMaterialWire {
    #[serde(default)]
    tlog_entries: Vec<TransparencyLogEntryWire>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BundleWire {
    media_type: String,
    verification_material: VerificationMaterialWire,
}

/// One transparency log entry, decoded and shape-checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransparencyLogEntry {
    /// The log index as the log reports it (virtual for Rekor v1).
    pub log_index: u64,
    /// The log ID from the entry (SHA-256 identifying the log key).
    pub log_id: Vec<u8>,
    /// The canonicalized body, whose leaf hash is proven included.
    pub canonicalized_body: Vec<u8>,
    /// The inclusion proof with its checkpoint.
    pub inclusion_proof: InclusionProof,
}

/// An inclusion proof and the signed checkpoint it was made against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InclusionProof {
    /// The leaf index in the tree that signed the checkpoint (shard-local for v1).
    pub log_index: u64,
    /// The tree size.
    pub tree_size: u64,
    /// The root at that size.
    pub root_hash: Hash,
    /// Sibling hashes, leaf first.
    pub hashes: Vec<Hash>,
    /// The signed checkpoint note.
    pub checkpoint: String,
}

impl TransparencyLogEntry {
    fn from_wire(wire: TransparencyLogEntryWire) -> Result<TransparencyLogEntry> {
        const WHAT: &str = "transparency log entry";
        let proof = wire.inclusion_proof.ok_or(Error::InclusionProofInvalid {
            reason: "entry has no inclusion proof",
        })?;
        let checkpoint = proof.checkpoint.ok_or(Error::InclusionProofInvalid {
            reason: "inclusion proof has no checkpoint",
        })?;
        let body = wire
            .canonicalized_body
            .ok_or(Error::InclusionProofInvalid {
                reason: "entry has no canonicalized body",
            })?;
        if proof.hashes.len() > MAX_PROOF_HASHES {
            return Err(Error::ProofTooLong {
                count: proof.hashes.len(),
                max: MAX_PROOF_HASHES,
            });
        }
        Ok(TransparencyLogEntry {
            log_index: wire.log_index.value("logIndex")?,
            log_id: BASE64
                .decode(&wire.log_id.key_id)
                .map_err(|_| malformed(WHAT, "logId.keyId is not base64"))?,
            canonicalized_body: BASE64
                .decode(&body)
                .map_err(|_| malformed(WHAT, "canonicalizedBody is not base64"))?,
            inclusion_proof: InclusionProof {
                log_index: proof.log_index.value("inclusionProof.logIndex")?,
                tree_size: proof.tree_size.value("inclusionProof.treeSize")?,
                root_hash: Hash::parse_base64(&proof.root_hash)?,
                hashes: proof
                    .hashes
                    .iter()
                    .map(|h| Hash::parse_base64(h))
                    .collect::<Result<_>>()?,
                checkpoint: checkpoint.envelope,
            },
        })
    }

    /// The RFC 6962 leaf hash of the canonicalized body.
    pub fn leaf_hash(&self) -> Hash {
        leaf_hash(&self.canonicalized_body)
    }
}

/// Parses the transparency log entries of a Sigstore bundle.
pub fn parse_bundle_entries(bytes: &[u8]) -> Result<Vec<TransparencyLogEntry>> {
    let wire: BundleWire = json("Sigstore bundle", bytes)?;
    if !BUNDLE_MEDIA_TYPES.contains(&wire.media_type.as_str()) {
        return Err(malformed("Sigstore bundle", "unknown mediaType"));
    }
    if wire.verification_material.tlog_entries.is_empty() {
        return Err(malformed("Sigstore bundle", "no tlogEntries"));
    }
    wire.verification_material
        .tlog_entries
        .into_iter()
        .map(TransparencyLogEntry::from_wire)
        .collect()
}

/// Parses a bare `TransparencyLogEntry` JSON object.
pub fn parse_transparency_log_entry(bytes: &[u8]) -> Result<TransparencyLogEntry> {
    TransparencyLogEntry::from_wire(json("transparency log entry", bytes)?)
}

/// Parses either a bundle or a bare entry, telling them apart by `mediaType`.
pub fn parse_entries(bytes: &[u8]) -> Result<Vec<TransparencyLogEntry>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
    }
    let probe: Probe = json("Sigstore bundle", bytes)?;
    if probe.media_type.is_some() {
        parse_bundle_entries(bytes)
    } else {
        Ok(vec![parse_transparency_log_entry(bytes)?])
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublicKeyWire {
    raw_bytes: String,
    key_details: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TlogWire {
    base_url: String,
    public_key: PublicKeyWire,
    log_id: KeyIdWire,
}

#[derive(Deserialize)]
struct TrustedRootWire {
    #[serde(rename = "mediaType")]
    media_type: String,
    tlogs: Vec<TlogWire>,
}

/// A transparency log from a trusted root.
#[derive(Clone, Debug)]
pub struct TrustedLog {
    /// The log's base URL.
    pub base_url: String,
    /// The log ID (SHA-256 identifying the key).
    pub log_id: Vec<u8>,
    /// The checkpoint verifier: named after the URL's host, type 0x02 for P-256
    /// (Rekor v1) and 0x01 for Ed25519 (Rekor v2).
    pub key: VerifierKey,
}

impl TrustedLog {
    /// Whether a checkpoint origin is this log's: the key name itself (Rekor v2,
    /// tlog-tiles) or `<key name> - <tree ID>` (a Rekor v1 shard).
    pub fn owns_origin(&self, origin: &str) -> bool {
        let name = self.key.name();
        origin == name
            || origin
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(" - "))
                .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
    }
}

/// The host of a URL: what Rekor logs use as their key name.
pub fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then_some(host)
}

/// Parses the `tlogs` of a Sigstore trusted root.
pub fn parse_trusted_root(bytes: &[u8]) -> Result<Vec<TrustedLog>> {
    const WHAT: &str = "trusted root";
    let wire: TrustedRootWire = json(WHAT, bytes)?;
    if !wire
        .media_type
        .starts_with("application/vnd.dev.sigstore.trustedroot")
    {
        return Err(malformed(WHAT, "unknown mediaType"));
    }
    wire.tlogs
        .into_iter()
        .map(|tlog| {
            let name = url_host(&tlog.base_url).ok_or(malformed(WHAT, "baseUrl has no host"))?;
            let der = BASE64
                .decode(&tlog.public_key.raw_bytes)
                .map_err(|_| malformed(WHAT, "publicKey.rawBytes is not base64"))?;
            let key = match tlog.public_key.key_details.as_str() {
                "PKIX_ECDSA_P256_SHA_256" => {
                    VerifierKey::from_material(name, SignatureType::EcdsaP256, &der)?
                }
                "PKIX_ED25519" => {
                    use ed25519_dalek::pkcs8::DecodePublicKey as _;
                    let key = ed25519_dalek::VerifyingKey::from_public_key_der(&der)
                        .map_err(|_| malformed(WHAT, "PKIX_ED25519 key is not an Ed25519 SPKI"))?;
                    VerifierKey::from_material(name, SignatureType::Ed25519, key.as_bytes())?
                }
                _ => return Err(malformed(WHAT, "unsupported keyDetails")),
            };
            Ok(TrustedLog {
                base_url: tlog.base_url,
                log_id: BASE64
                    .decode(&tlog.log_id.key_id)
                    .map_err(|_| malformed(WHAT, "logId.keyId is not base64"))?,
                key,
            })
        })
        .collect()
}

/// The full log ID Sigstore assigns to a checkpoint key: SHA-256 of the DER SPKI
/// for ECDSA keys, SHA-256(name || 0x0A || 0x01 || key) for Ed25519 ones (whose
/// first four bytes are the note key ID).
pub fn log_id_of(key: &VerifierKey) -> Vec<u8> {
    let material = key.public_key_material();
    match key.signature_type() {
        SignatureType::EcdsaP256 => Sha256::digest(&material).to_vec(),
        other => {
            let mut hasher = Sha256::new();
            hasher.update(key.name().as_bytes());
            hasher.update([b'\n', other.byte()]);
            hasher.update(&material);
            hasher.finalize().to_vec()
        }
    }
}

/// What a verified entry proves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedEntry {
    /// The log's base URL from the trusted root.
    pub log_base_url: String,
    /// The signed checkpoint the entry is included under.
    pub checkpoint: Checkpoint,
    /// The entry's leaf index in that checkpoint's tree.
    pub leaf_index: u64,
    /// The entry's log index as the log reports it (virtual for Rekor v1).
    pub log_index: u64,
    /// The entry's leaf hash.
    pub leaf_hash: Hash,
}

/// Verifies an entry's transparency-log evidence against trusted logs.
pub fn verify_entry(entry: &TransparencyLogEntry, trusted: &[TrustedLog]) -> Result<VerifiedEntry> {
    let log = trusted
        .iter()
        .find(|log| log.log_id == entry.log_id)
        .ok_or_else(|| Error::UnknownLog {
            log_id: BASE64.encode(&entry.log_id),
        })?;
    let proof = &entry.inclusion_proof;
    let verified = verify_checkpoint(
        proof.checkpoint.as_bytes(),
        std::slice::from_ref(&log.key),
        None,
    )?;
    let checkpoint = verified.checkpoint();
    if !log.owns_origin(checkpoint.origin()) {
        return Err(Error::OriginMismatch {
            expected: log.key.name().to_owned(),
            found: checkpoint.origin().to_owned(),
        });
    }
    if checkpoint.size() != proof.tree_size {
        return Err(Error::CheckpointProofMismatch {
            reason: "checkpoint size differs from the proof's tree size",
        });
    }
    if *checkpoint.root_hash() != proof.root_hash {
        return Err(Error::CheckpointProofMismatch {
            reason: "checkpoint root differs from the proof's root",
        });
    }
    // A Rekor v1 shard's leaf index is offset by the earlier shards' sizes in the
    // log's (virtual) index; a tiles log has one tree, so the two must be equal.
    let index_agrees = if checkpoint.origin() == log.key.name() {
        entry.log_index == proof.log_index
    } else {
        entry.log_index >= proof.log_index
    };
    if !index_agrees {
        return Err(Error::CheckpointProofMismatch {
            reason: "entry log index disagrees with the proof's leaf index",
        });
    }
    let leaf = entry.leaf_hash();
    verify_inclusion(
        &leaf,
        proof.log_index,
        proof.tree_size,
        &proof.hashes,
        &proof.root_hash,
    )?;
    Ok(VerifiedEntry {
        log_base_url: log.base_url.clone(),
        checkpoint: checkpoint.clone(),
        leaf_index: proof.log_index,
        log_index: entry.log_index,
        leaf_hash: leaf,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceWire {
    url: String,
    major_api_version: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SigningConfigWire {
    media_type: String,
    #[serde(default)]
    rekor_tlog_urls: Vec<ServiceWire>,
}

/// A Rekor instance listed in a Sigstore signing config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RekorService {
    /// Base URL.
    pub url: String,
    /// 1 for Rekor v1 (REST), 2 for Rekor v2 (rekor-tiles).
    pub major_api_version: u32,
}

/// Parses the Rekor instances (`rekorTlogUrls`) of a Sigstore signing config.
pub fn parse_signing_config(bytes: &[u8]) -> Result<Vec<RekorService>> {
    const WHAT: &str = "signing config";
    let wire: SigningConfigWire = json(WHAT, bytes)?;
    if !wire
        .media_type
        .starts_with("application/vnd.dev.sigstore.signingconfig")
    {
        return Err(malformed(WHAT, "unknown mediaType"));
    }
    wire.rekor_tlog_urls
        .into_iter()
        .map(|s| match s.major_api_version {
            1 | 2 => Ok(RekorService {
                url: s.url,
                major_api_version: s.major_api_version,
            }),
            _ => Err(malformed(WHAT, "unsupported Rekor majorApiVersion")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_host_strips_scheme_and_path() {
        assert_eq!(
            url_host("https://rekor.sigstore.dev"),
            Some("rekor.sigstore.dev")
        );
        assert_eq!(
            url_host("https://log2025-1.rekor.sigstore.dev/api"),
            Some("log2025-1.rekor.sigstore.dev")
        );
        assert_eq!(url_host("https://"), None);
    }

    #[test]
    fn int64_fields_must_be_canonical() {
        let parse = |s: &str| serde_json::from_str::<Int64Wire>(s).unwrap().value("f");
        assert_eq!(parse("\"12\"").unwrap(), 12);
        assert_eq!(parse("12").unwrap(), 12);
        for bad in [
            "\"012\"",
            "\"+1\"",
            "\"-1\"",
            "\"\"",
            "\"9223372036854775808\"",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
