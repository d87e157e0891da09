//! The one error type of the verification core.
//!
//! Every variant names the check that failed, with structured fields rather than
//! free text, so callers can map it to an exit code, an HTTP status, a gRPC code
//! or a bounded metric label (`kind()`) without parsing strings.

/// Why a verification or a parse failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input is larger than the limit for its kind, checked before decoding.
    #[error("{what} is {size} bytes, over the limit of {max}")]
    TooLarge {
        what: &'static str,
        size: usize,
        max: usize,
    },
    /// A signed note is not in the C2SP signed-note format.
    #[error("malformed signed note: {reason}")]
    MalformedNote { reason: &'static str },
    /// A note carries more signature lines than this verifier accepts.
    #[error("note has {count} signatures, over the limit of {max}")]
    TooManySignatures { count: usize, max: usize },
    /// A verifier key (vkey or PEM) could not be parsed.
    #[error("malformed verifier key: {reason}")]
    MalformedKey { reason: &'static str },
    /// A verifier key uses a signature type this implementation does not verify.
    #[error("unsupported signature type 0x{type_byte:02x}")]
    UnsupportedKeyType { type_byte: u8 },
    /// No signature from any trusted key was found on the note.
    #[error("no signature from a trusted key")]
    NoTrustedSignature,
    /// A signature line names a trusted key (name and key ID) but does not verify.
    #[error("invalid signature from trusted key {key_name}+{key_id:08x}")]
    InvalidSignature { key_name: String, key_id: u32 },
    /// The note text is not a C2SP checkpoint.
    #[error("malformed checkpoint: {reason}")]
    MalformedCheckpoint { reason: &'static str },
    /// The checkpoint is for another log than the one expected.
    #[error("checkpoint origin {found:?} is not the expected {expected:?}")]
    OriginMismatch { expected: String, found: String },
    /// A hash, proof file or proof field could not be parsed.
    #[error("malformed proof: {reason}")]
    MalformedProof { reason: &'static str },
    /// A proof has more hashes than any proof in a 2^64-leaf tree can have.
    #[error("proof has {count} hashes, over the limit of {max}")]
    ProofTooLong { count: usize, max: usize },
    /// An inclusion proof does not lead to the expected root.
    #[error("inclusion proof does not verify: {reason}")]
    InclusionProofInvalid { reason: &'static str },
    /// A consistency proof does not prove the old tree is a prefix of the new one.
    #[error("consistency proof does not verify: {reason}")]
    ConsistencyProofInvalid { reason: &'static str },
    /// A proof could not be generated because a hash it needs is unavailable or
    /// the requested sizes do not make sense.
    #[error("cannot build proof: {reason}")]
    ProofUnavailable { reason: &'static str },
    /// A JSON document (Rekor response, Sigstore bundle, trusted root) is not of
    /// the expected shape.
    #[error("malformed {what}: {detail}")]
    MalformedJson { what: &'static str, detail: String },
    /// A Sigstore bundle or Rekor entry was signed by a log absent from the trust root.
    #[error("log {log_id} is not in the trusted root")]
    UnknownLog { log_id: String },
    /// A checkpoint does not agree with the inclusion proof that carries it.
    #[error("checkpoint does not match the inclusion proof: {reason}")]
    CheckpointProofMismatch { reason: &'static str },

    // Outcomes of the witness service (c2sp.org/tlog-witness), and its failures.
    /// The checkpoint's origin is not a log this witness trusts.
    #[error("unknown origin {origin:?}")]
    UnknownOrigin { origin: String },
    /// Nothing was cosigned yet for a trusted origin.
    #[error("no checkpoint cosigned yet for {origin:?}")]
    NothingCosigned { origin: String },
    /// The request's old size is above the checkpoint's size.
    #[error("old size {old_size} is above the checkpoint size {size}")]
    OldSizeAboveSize { old_size: u64, size: u64 },
    /// The request's old size is not the size of the latest cosigned checkpoint.
    #[error("old size {old_size} is not the latest cosigned size {stored_size}")]
    OldSizeMismatch { old_size: u64, stored_size: u64 },
    /// Same size as the latest cosigned checkpoint, different root hash.
    #[error("a different root hash was cosigned at size {size}")]
    RootMismatch { size: u64 },
    /// A request is malformed at the service edge.
    #[error("invalid request: {reason}")]
    InvalidRequest { reason: &'static str },
    /// A trusted log's key cannot change, and a trusted log cannot be removed.
    #[error("log {origin:?} is already trusted with other keys")]
    LogKeyChange { origin: String },
    /// The signer refused or could not be reached.
    #[error("signer: {detail}")]
    Signer { detail: String },
    /// The signer's cosignature timestamp is off the witness's clock by more
    /// than the tolerance, or before the log's previous cosignature: refused,
    /// never revealed.
    #[error("signer clock: {detail}")]
    SignerClock { detail: String },
    /// The state store failed.
    #[error("state store: {detail}")]
    Storage { detail: String },
    /// A log endpoint could not be fetched or answered out of spec.
    #[error("fetching {url}: {detail}")]
    Fetch { url: String, detail: String },
    /// The checkpoint archive failed.
    #[error("archive: {detail}")]
    Archive { detail: String },
    /// The configuration is invalid.
    #[error("configuration: {detail}")]
    Config { detail: String },
    /// A mirror bundle failed a check; `fault` names which.
    #[error("mirror bundle: {}: {detail}", fault.label())]
    Mirror {
        fault: crate::mirror::MirrorFault,
        detail: String,
    },
}

impl Error {
    /// A short, bounded label naming the failed check, for metrics and `--json` output.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::TooLarge { .. } => "too_large",
            Error::MalformedNote { .. } => "malformed_note",
            Error::TooManySignatures { .. } => "too_many_signatures",
            Error::MalformedKey { .. } => "malformed_key",
            Error::UnsupportedKeyType { .. } => "unsupported_key_type",
            Error::NoTrustedSignature => "no_trusted_signature",
            Error::InvalidSignature { .. } => "invalid_signature",
            Error::MalformedCheckpoint { .. } => "malformed_checkpoint",
            Error::OriginMismatch { .. } => "origin_mismatch",
            Error::MalformedProof { .. } => "malformed_proof",
            Error::ProofTooLong { .. } => "proof_too_long",
            Error::InclusionProofInvalid { .. } => "inclusion_proof_invalid",
            Error::ConsistencyProofInvalid { .. } => "consistency_proof_invalid",
            Error::ProofUnavailable { .. } => "proof_unavailable",
            Error::MalformedJson { .. } => "malformed_json",
            Error::UnknownLog { .. } => "unknown_log",
            Error::CheckpointProofMismatch { .. } => "checkpoint_proof_mismatch",
            Error::UnknownOrigin { .. } => "unknown_origin",
            Error::NothingCosigned { .. } => "nothing_cosigned",
            Error::OldSizeAboveSize { .. } => "old_size_above_size",
            Error::OldSizeMismatch { .. } => "old_size_mismatch",
            Error::RootMismatch { .. } => "root_mismatch",
            Error::InvalidRequest { .. } => "invalid_request",
            Error::LogKeyChange { .. } => "log_key_change",
            Error::Signer { .. } => "signer",
            Error::SignerClock { .. } => "signer_clock",
            Error::Storage { .. } => "storage",
            Error::Fetch { .. } => "fetch",
            Error::Archive { .. } => "archive",
            Error::Config { .. } => "config",
            Error::Mirror { fault, .. } => fault.label(),
        }
    }

    /// The HTTP status c2sp.org/tlog-witness prescribes for this outcome of
    /// `add-checkpoint` (and `sign-subtree`); the gateway answers with it.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::UnknownOrigin { .. } | Error::NothingCosigned { .. } => 404,
            Error::NoTrustedSignature | Error::InvalidSignature { .. } => 403,
            Error::OldSizeMismatch { .. } | Error::LogKeyChange { .. } => 409,
            Error::ConsistencyProofInvalid { .. } | Error::RootMismatch { .. } => 422,
            Error::Signer { .. }
            | Error::SignerClock { .. }
            | Error::Storage { .. }
            | Error::Fetch { .. }
            // The spool's disk refused the checkpoint: not revealed, retry later.
            | Error::Archive { .. } => 503,
            Error::Config { .. } => 500,
            Error::TooLarge { .. } => 413,
            _ => 400,
        }
    }
}
