//! The one error type of the signer: every refusal and failure, each mapped once
//! to a gRPC status and to a bounded label for metrics and the audit log.

use tonic::{Code, Status};

/// Why a signer operation was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is malformed (bad origin, hash length, size, payload).
    #[error("invalid request: {0}")]
    InvalidRequest(#[from] witness_core::Error),
    /// A request field is out of bounds before any core type could be built.
    #[error("invalid request: {reason}")]
    BadField { reason: &'static str },
    /// The caller's old size is not the size this signer last cosigned.
    #[error("old size {claimed} is not the last cosigned size {stored}")]
    OldSizeMismatch { claimed: u64, stored: u64 },
    /// The checkpoint is smaller than the last one cosigned for its origin.
    #[error("refusing rollback: size {size} is below the cosigned size {stored}")]
    Rollback { size: u64, stored: u64 },
    /// Same size as the last cosigned checkpoint, different root: a fork.
    #[error("refusing fork: a different root was cosigned at size {size}")]
    Fork { size: u64 },
    /// The consistency proof from the signer's own record does not verify.
    #[error("refusing unproven growth: {0}")]
    Unproven(witness_core::Error),
    /// The DSSE payload type is not on the allowlist, or the payload is not one.
    #[error("payload refused: {reason}")]
    PayloadRefused { reason: &'static str },
    /// The caller's client certificate is missing or does not verify.
    #[error("client certificate refused: {0}")]
    Unauthenticated(crate::tls::CertificateRefusal),
    /// The caller's certificate identity is not allowed.
    #[error("caller identity not allowed")]
    PermissionDenied,
    /// The request message is over the server's decoding limit; tonic refused
    /// it before any handler ran, and this is how the refusal is audited.
    #[error("request message is over the {limit}-byte limit")]
    TooLarge { limit: usize },
    /// A subtree request names a checkpoint this signer did not cosign.
    #[error("checkpoint is not cosigned by this signer")]
    NotCosignedByUs,
    /// The operation needs a key the configuration does not have.
    #[error("no {0} key is configured")]
    KeyNotConfigured(&'static str),
    /// A key backend (file, PKCS#11, KMS) failed to sign.
    #[error("key backend failed: {0}")]
    Backend(String),
    /// The durable record could not be read or written.
    #[error("state store failed: {0}")]
    State(String),
    /// The configuration is invalid; the signer does not start.
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    /// A bounded label for metrics and the audit log.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidRequest(_) | Error::BadField { .. } => "invalid_request",
            Error::OldSizeMismatch { .. } => "old_size_mismatch",
            Error::Rollback { .. } => "rollback",
            Error::Fork { .. } => "fork",
            Error::Unproven(_) => "unproven",
            Error::PayloadRefused { .. } => "payload_refused",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::PermissionDenied => "permission_denied",
            Error::TooLarge { .. } => "too_large",
            Error::NotCosignedByUs => "not_cosigned_by_us",
            Error::KeyNotConfigured(_) => "key_not_configured",
            Error::Backend(_) => "backend",
            Error::State(_) => "state",
            Error::Config(_) => "config",
        }
    }

    /// For an old-size mismatch, the size the signer last cosigned.
    pub fn stored_size(&self) -> Option<u64> {
        match self {
            Error::OldSizeMismatch { stored, .. } => Some(*stored),
            _ => None,
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        let code = match &error {
            Error::InvalidRequest(_) | Error::BadField { .. } | Error::PayloadRefused { .. } => {
                Code::InvalidArgument
            }
            // A stale old size is a precondition the caller can fix by re-reading
            // the stored size, which travels in the `x-stored-size` metadata.
            Error::OldSizeMismatch { .. } => Code::FailedPrecondition,
            // Refusals of the fork guard are distinct from every other failure.
            Error::Rollback { .. } | Error::Fork { .. } | Error::Unproven(_) => Code::Aborted,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied => Code::PermissionDenied,
            // The code tonic answers an oversized message with.
            Error::TooLarge { .. } => Code::OutOfRange,
            Error::NotCosignedByUs => Code::PermissionDenied,
            Error::KeyNotConfigured(_) => Code::Unimplemented,
            Error::Backend(_) | Error::State(_) => Code::Unavailable,
            Error::Config(_) => Code::Internal,
        };
        let mut status = Status::new(code, error.to_string());
        if let Some(stored) = error.stored_size()
            && let Ok(value) = stored.to_string().parse()
        {
            status.metadata_mut().insert("x-stored-size", value);
        }
        status
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
