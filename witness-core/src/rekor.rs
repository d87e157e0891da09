//! Rekor v1 REST formats: `GET /api/v1/log` (with `inactiveShards`),
//! `GET /api/v1/log/proof`, log entries with inclusion proofs, and the mapping
//! between Rekor's virtual entry index and a shard's own leaf index.
//!
//! Rekor v1 shards its log over several Trillian trees. Each shard signs its own
//! checkpoints with origin `<host> - <treeID>`, and is witnessed as its own log.
//! Hashes are hex on this API. Two traps are handled here:
//! - the `rootHash` of a `/api/v1/log/proof` response is the server's *newest*
//!   root, not the root at `lastSize`; [`ConsistencyProofResponse`] keeps it apart
//!   so nobody verifies against it by mistake;
//! - an entry's `logIndex` is virtual (over all shards), while its inclusion
//!   proof's `logIndex` is the shard-local leaf index.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;

use crate::checkpoint::{VerifiedCheckpoint, verify_checkpoint};
use crate::merkle::{Hash, MAX_PROOF_HASHES, MAX_TREE_SIZE, leaf_hash, verify_inclusion};
use crate::note::VerifierKey;
use crate::{Error, Result};

/// The largest Rekor JSON document parsed. Log info with a few inactive shards
/// is about 2 KB; entries embed the canonicalized body (attestations may be
/// large, Rekor v1 caps entries at about 128 KB before base64): 1 MiB is ample.
pub const MAX_REKOR_JSON_SIZE: usize = 1 << 20;

fn json<'a, T: Deserialize<'a>>(what: &'static str, bytes: &'a [u8]) -> Result<T> {
    if bytes.len() > MAX_REKOR_JSON_SIZE {
        return Err(Error::TooLarge {
            what,
            size: bytes.len(),
            max: MAX_REKOR_JSON_SIZE,
        });
    }
    serde_json::from_slice(bytes).map_err(|e| Error::MalformedJson {
        what,
        detail: e.to_string(),
    })
}

fn hex_hashes(hashes: &[String]) -> Result<Vec<Hash>> {
    if hashes.len() > MAX_PROOF_HASHES {
        return Err(Error::ProofTooLong {
            count: hashes.len(),
            max: MAX_PROOF_HASHES,
        });
    }
    hashes.iter().map(|h| Hash::parse_hex(h)).collect()
}

fn tree_id(text: &str) -> Result<i64> {
    // Trillian tree IDs are positive int64 values, sent as decimal strings.
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0 && id.to_string() == text)
        .ok_or(Error::MalformedJson {
            what: "Rekor log info",
            detail: "treeID is not a positive decimal int64".into(),
        })
}

fn tree_size(size: u64) -> Result<u64> {
    if size > MAX_TREE_SIZE {
        return Err(Error::MalformedJson {
            what: "Rekor log info",
            detail: "treeSize is above 2^63 - 1".into(),
        });
    }
    Ok(size)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ShardWire {
    root_hash: String,
    signed_tree_head: String,
    tree_size: u64,
    #[serde(rename = "treeID")]
    tree_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogInfoWire {
    #[serde(flatten)]
    active: ShardWire,
    #[serde(default)]
    inactive_shards: Vec<ShardWire>,
}

/// One shard (Trillian tree) as reported by `GET /api/v1/log`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardInfo {
    /// The Trillian tree ID.
    pub tree_id: i64,
    /// The shard's size (leaves in this tree only).
    pub tree_size: u64,
    /// The shard's root at `tree_size`.
    pub root_hash: Hash,
    /// The signed checkpoint for this shard, as a note.
    pub signed_tree_head: String,
}

impl ShardInfo {
    fn from_wire(wire: ShardWire) -> Result<ShardInfo> {
        Ok(ShardInfo {
            tree_id: tree_id(&wire.tree_id)?,
            tree_size: tree_size(wire.tree_size)?,
            root_hash: Hash::parse_hex(&wire.root_hash)?,
            signed_tree_head: wire.signed_tree_head,
        })
    }

    /// Verifies the shard's signed tree head with the log's keys and checks that it
    /// names this shard (`<anything> - <treeID>`) and states its size and root.
    pub fn verify(&self, log_keys: &[VerifierKey]) -> Result<VerifiedCheckpoint> {
        let verified = verify_checkpoint(self.signed_tree_head.as_bytes(), log_keys, None)?;
        let checkpoint = verified.checkpoint();
        let suffix = format!(" - {}", self.tree_id);
        if !checkpoint.origin().ends_with(&suffix) {
            return Err(Error::OriginMismatch {
                expected: format!("<host>{suffix}"),
                found: checkpoint.origin().to_owned(),
            });
        }
        if checkpoint.size() != self.tree_size || *checkpoint.root_hash() != self.root_hash {
            return Err(Error::CheckpointProofMismatch {
                reason: "signed tree head disagrees with treeSize or rootHash",
            });
        }
        Ok(verified)
    }
}

/// `GET /api/v1/log`: the active shard and the frozen (inactive) ones, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogInfo {
    /// The shard that receives new entries.
    pub active: ShardInfo,
    /// Frozen shards, in the order Rekor lists them (oldest first).
    pub inactive: Vec<ShardInfo>,
}

/// Parses a `GET /api/v1/log` response.
pub fn parse_log_info(bytes: &[u8]) -> Result<LogInfo> {
    let wire: LogInfoWire = json("Rekor log info", bytes)?;
    Ok(LogInfo {
        active: ShardInfo::from_wire(wire.active)?,
        inactive: wire
            .inactive_shards
            .into_iter()
            .map(ShardInfo::from_wire)
            .collect::<Result<_>>()?,
    })
}

impl LogInfo {
    /// Every shard, oldest first, the active one last.
    pub fn shards(&self) -> impl Iterator<Item = &ShardInfo> {
        self.inactive.iter().chain(std::iter::once(&self.active))
    }

    /// The table mapping virtual entry indexes to shards.
    pub fn shard_table(&self) -> Result<ShardTable> {
        let mut offset = 0u64;
        let mut shards = Vec::new();
        for shard in &self.inactive {
            shards.push(ShardOffset {
                tree_id: shard.tree_id,
                offset,
                size: Some(shard.tree_size),
            });
            offset = offset
                .checked_add(shard.tree_size)
                .filter(|o| *o <= MAX_TREE_SIZE)
                .ok_or(Error::MalformedJson {
                    what: "Rekor log info",
                    detail: "shard sizes overflow".into(),
                })?;
        }
        shards.push(ShardOffset {
            tree_id: self.active.tree_id,
            offset,
            size: None,
        });
        Ok(ShardTable { shards })
    }
}

/// Where a shard's entries start in Rekor's virtual index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardOffset {
    /// The Trillian tree ID.
    pub tree_id: i64,
    /// Virtual index of the shard's first entry.
    pub offset: u64,
    /// Final size of a frozen shard; `None` for the active one.
    pub size: Option<u64>,
}

/// Rekor's virtual index over all shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardTable {
    shards: Vec<ShardOffset>,
}

impl ShardTable {
    /// The shards, oldest first.
    pub fn shards(&self) -> &[ShardOffset] {
        &self.shards
    }

    /// The shard holding a virtual index, and the shard-local leaf index.
    pub fn locate(&self, virtual_index: u64) -> Option<(ShardOffset, u64)> {
        self.shards.iter().find_map(|shard| {
            let local = virtual_index.checked_sub(shard.offset)?;
            match shard.size {
                Some(size) if local >= size => None,
                _ => Some((*shard, local)),
            }
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConsistencyProofWire {
    hashes: Vec<String>,
    root_hash: String,
}

/// `GET /api/v1/log/proof?firstSize=..&lastSize=..&treeID=..`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsistencyProofResponse {
    /// The proof, in RFC 6962 order.
    pub hashes: Vec<Hash>,
    /// The server's newest root at the time of the request. It is NOT the root at
    /// `lastSize`; verify against the checkpoint at `lastSize` instead.
    pub server_newest_root: Hash,
}

/// Parses a `GET /api/v1/log/proof` response.
pub fn parse_consistency_proof_response(bytes: &[u8]) -> Result<ConsistencyProofResponse> {
    let wire: ConsistencyProofWire = json("Rekor consistency proof", bytes)?;
    Ok(ConsistencyProofResponse {
        hashes: hex_hashes(&wire.hashes)?,
        server_newest_root: Hash::parse_hex(&wire.root_hash)?,
    })
}

/// Reads a proof file: either a Rekor v1 `/api/v1/log/proof` JSON response or one
/// base64 hash per line (the tlog-witness proof lines). Blank lines are not
/// allowed between hashes; one final newline is optional.
pub fn parse_proof_file(bytes: &[u8]) -> Result<Vec<Hash>> {
    // 63 base64 lines are under 3 KB and the JSON form under 5 KB; 64 KiB is a
    // generous cap that still refuses anything that cannot be a proof.
    const MAX_PROOF_FILE_SIZE: usize = 64 * 1024;
    if bytes.len() > MAX_PROOF_FILE_SIZE {
        return Err(Error::TooLarge {
            what: "proof file",
            size: bytes.len(),
            max: MAX_PROOF_FILE_SIZE,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| Error::MalformedProof {
        reason: "proof file is not UTF-8",
    })?;
    if text.trim_start().starts_with('{') {
        return Ok(parse_consistency_proof_response(bytes)?.hashes);
    }
    let body = text.strip_suffix('\n').unwrap_or(text);
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let lines: Vec<&str> = body.split('\n').collect();
    if lines.len() > MAX_PROOF_HASHES {
        return Err(Error::ProofTooLong {
            count: lines.len(),
            max: MAX_PROOF_HASHES,
        });
    }
    lines.into_iter().map(Hash::parse_base64).collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InclusionProofWire {
    hashes: Vec<String>,
    log_index: u64,
    root_hash: String,
    tree_size: u64,
    checkpoint: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerificationWire {
    inclusion_proof: Option<InclusionProofWire>,
    signed_entry_timestamp: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogEntryWire {
    body: String,
    integrated_time: i64,
    #[serde(rename = "logID")]
    log_id: String,
    log_index: u64,
    verification: Option<VerificationWire>,
}

/// An inclusion proof as Rekor v1 returns it, hashes decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RekorInclusionProof {
    /// Shard-local leaf index.
    pub log_index: u64,
    /// Shard size the proof is for.
    pub tree_size: u64,
    /// Shard root at `tree_size`.
    pub root_hash: Hash,
    /// Sibling hashes, leaf first.
    pub hashes: Vec<Hash>,
    /// The signed checkpoint at `tree_size`.
    pub checkpoint: String,
}

/// A Rekor v1 log entry (`GET /api/v1/log/entries/...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// The entry UUID (tree ID hex and leaf hash hex), when the response keyed
    /// the entry by it.
    pub uuid: Option<String>,
    /// The canonicalized entry body (base64-decoded).
    pub body: Vec<u8>,
    /// Seconds since the epoch at which the entry was integrated.
    pub integrated_time: i64,
    /// The log ID: hex SHA-256 of the log's DER public key.
    pub log_id: String,
    /// The virtual index over all shards.
    pub log_index: u64,
    /// The inclusion proof, when the response carries one.
    pub inclusion_proof: Option<RekorInclusionProof>,
    /// The signed entry timestamp (base64 DER), when present.
    pub signed_entry_timestamp: Option<String>,
}

/// Parses a log entry: either a bare entry object, or the API's response shape,
/// an object with exactly one member keyed by the entry UUID.
pub fn parse_log_entry(bytes: &[u8]) -> Result<LogEntry> {
    let value: serde_json::Value = json("Rekor log entry", bytes)?;
    let malformed = |detail: String| Error::MalformedJson {
        what: "Rekor log entry",
        detail,
    };
    let (uuid, entry) = match value.as_object() {
        Some(map) if map.len() == 1 && !map.contains_key("body") => {
            let (uuid, entry) = map.iter().next().ok_or(malformed("empty object".into()))?;
            (Some(uuid.clone()), entry.clone())
        }
        _ => (None, value),
    };
    let wire: LogEntryWire = serde_json::from_value(entry).map_err(|e| malformed(e.to_string()))?;
    let body = BASE64
        .decode(&wire.body)
        .map_err(|_| malformed("body is not base64".into()))?;
    let verification = wire.verification;
    let inclusion_proof = match verification
        .as_ref()
        .and_then(|v| v.inclusion_proof.as_ref())
    {
        Some(proof) => Some(RekorInclusionProof {
            log_index: proof.log_index,
            tree_size: tree_size(proof.tree_size)?,
            root_hash: Hash::parse_hex(&proof.root_hash)?,
            hashes: hex_hashes(&proof.hashes)?,
            checkpoint: proof.checkpoint.clone(),
        }),
        None => None,
    };
    Ok(LogEntry {
        uuid,
        body,
        integrated_time: wire.integrated_time,
        log_id: wire.log_id,
        log_index: wire.log_index,
        inclusion_proof,
        signed_entry_timestamp: verification.and_then(|v| v.signed_entry_timestamp),
    })
}

impl LogEntry {
    /// The RFC 6962 leaf hash of the canonicalized body.
    pub fn leaf_hash(&self) -> Hash {
        leaf_hash(&self.body)
    }

    /// Virtual index of the first entry of this entry's shard.
    pub fn shard_offset(&self) -> Option<u64> {
        let proof = self.inclusion_proof.as_ref()?;
        self.log_index.checked_sub(proof.log_index)
    }

    /// Verifies the entry's inclusion proof against its signed checkpoint: the
    /// checkpoint verifies with the log's keys, states the proof's size and root,
    /// and the proof leads from this entry's leaf hash to that root. When the entry
    /// is keyed by UUID, the UUID's leaf hash part must be this entry's.
    pub fn verify_inclusion(&self, log_keys: &[VerifierKey]) -> Result<VerifiedCheckpoint> {
        let proof = self
            .inclusion_proof
            .as_ref()
            .ok_or(Error::InclusionProofInvalid {
                reason: "entry has no inclusion proof",
            })?;
        let leaf = self.leaf_hash();
        if let Some(uuid) = &self.uuid
            && !uuid.to_ascii_lowercase().ends_with(&leaf.to_hex())
        {
            return Err(Error::InclusionProofInvalid {
                reason: "entry UUID does not end with the body's leaf hash",
            });
        }
        let verified = verify_checkpoint(proof.checkpoint.as_bytes(), log_keys, None)?;
        let checkpoint = verified.checkpoint();
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
        verify_inclusion(
            &leaf,
            proof.log_index,
            proof.tree_size,
            &proof.hashes,
            &proof.root_hash,
        )?;
        Ok(verified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_file_accepts_base64_lines_and_refuses_garbage() {
        let line = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        assert_eq!(
            parse_proof_file(format!("{line}\n{line}\n").as_bytes())
                .unwrap()
                .len(),
            2
        );
        assert_eq!(parse_proof_file(line.as_bytes()).unwrap().len(), 1);
        assert_eq!(parse_proof_file(b"").unwrap().len(), 0);
        assert!(parse_proof_file(format!("{line}\n\n{line}\n").as_bytes()).is_err());
        assert!(parse_proof_file(format!("{line}\r\n").as_bytes()).is_err());
        assert!(parse_proof_file(&[0xff, 0xfe]).is_err());
        let long = format!("{line}\n").repeat(64);
        assert_eq!(
            parse_proof_file(long.as_bytes()).unwrap_err().kind(),
            "proof_too_long"
        );
    }

    #[test]
    fn tree_ids_must_be_canonical_positive_decimals() {
        assert_eq!(tree_id("8202293616175992157").unwrap(), 8202293616175992157);
        for bad in ["0", "-1", "+5", "05", "9223372036854775808", "1e3", ""] {
            assert!(tree_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shard_table_maps_virtual_indexes() {
        let shard = |tree_id, tree_size| ShardInfo {
            tree_id,
            tree_size,
            root_hash: Hash([0; 32]),
            signed_tree_head: String::new(),
        };
        let info = LogInfo {
            active: shard(3, 5),
            inactive: vec![shard(1, 10), shard(2, 20)],
        };
        let table = info.shard_table().unwrap();
        assert_eq!(table.locate(0).unwrap().0.tree_id, 1);
        assert_eq!(table.locate(9).unwrap(), (table.shards()[0], 9));
        assert_eq!(table.locate(10).unwrap(), (table.shards()[1], 0));
        assert_eq!(table.locate(30).unwrap(), (table.shards()[2], 0));
        assert_eq!(table.locate(1_000).unwrap().1, 970);
    }
}
