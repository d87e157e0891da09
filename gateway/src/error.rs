//! The one error type of the gateway, and its one mapping to an HTTP response.

use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use witness_core::witness_api::{CONFLICT_CONTENT_TYPE, conflict_body};

/// Why a request was not answered with 200.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The request body is malformed or too large (refused at the edge, never
    /// forwarded).
    #[error("{0}")]
    Request(#[from] witness_core::Error),
    /// The witness refused with a tlog-witness status (400, 403, 404 or 422).
    #[error("{reason}")]
    Refused { status: StatusCode, reason: String },
    /// The old size is not the latest cosigned size.
    #[error("old size is not the latest cosigned size {stored_size}")]
    Conflict { stored_size: u64 },
    /// No log with this origin hash, or nothing cosigned for it yet.
    #[error("no cosigned checkpoint for this origin hash")]
    NotFound,
    /// The witness service (or its signer or store) cannot be reached.
    #[error("witness service unavailable: {detail}")]
    Unavailable { detail: String },
    /// The witness service answered outside its protocol.
    #[error("witness service answered out of protocol: {detail}")]
    BadUpstream { detail: String },
    /// The gateway configuration is invalid.
    #[error("configuration: {detail}")]
    Config { detail: String },
    /// The listener failed.
    #[error("serving: {detail}")]
    Serve { detail: String },
}

impl GatewayError {
    /// The HTTP status of the response.
    pub fn status(&self) -> StatusCode {
        match self {
            // The parsers only refuse malformed (400) or oversized (413) input;
            // bad input is never a 500, whatever the core's table says.
            GatewayError::Request(e) if e.http_status() == 413 => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::Request(_) => StatusCode::BAD_REQUEST,
            GatewayError::Refused { status, .. } => *status,
            GatewayError::Conflict { .. } => StatusCode::CONFLICT,
            GatewayError::NotFound => StatusCode::NOT_FOUND,
            GatewayError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::BadUpstream { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::Config { .. } | GatewayError::Serve { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// A short, bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::Request(e) => e.kind(),
            GatewayError::Refused { .. } => "refused",
            GatewayError::Conflict { .. } => "conflict",
            GatewayError::NotFound => "not_found",
            GatewayError::Unavailable { .. } => "unavailable",
            GatewayError::BadUpstream { .. } => "bad_upstream",
            GatewayError::Config { .. } => "config",
            GatewayError::Serve { .. } => "serve",
        }
    }

    /// Reads a witness refusal: the tlog-witness status travels in the
    /// `x-http-status` metadata and, for 409, the stored size in
    /// `x-stored-size` (see proto/witness/v1/witness.proto).
    pub fn from_witness(status: &tonic::Status) -> GatewayError {
        let metadata = |key| {
            status
                .metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let http = metadata("x-http-status").and_then(|v| v.parse::<u16>().ok());
        let reason = one_line(status.message());
        match http {
            Some(409) => match metadata("x-stored-size").and_then(|v| v.parse().ok()) {
                Some(stored_size) => GatewayError::Conflict { stored_size },
                None => GatewayError::BadUpstream {
                    detail: "409 without x-stored-size".into(),
                },
            },
            Some(code @ (400 | 403 | 404 | 422)) => match StatusCode::from_u16(code) {
                Ok(status) => GatewayError::Refused { status, reason },
                Err(_) => GatewayError::BadUpstream { detail: reason },
            },
            Some(503) => GatewayError::Unavailable { detail: reason },
            Some(other) => GatewayError::BadUpstream {
                detail: format!("x-http-status {other}: {reason}"),
            },
            // No refusal metadata: the call never reached the witness logic.
            None => match status.code() {
                tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled
                | tonic::Code::ResourceExhausted => GatewayError::Unavailable { detail: reason },
                _ => GatewayError::BadUpstream { detail: reason },
            },
        }
    }
}

/// Refusal reasons are relayed as a one-line body; a multi-line message from
/// upstream is folded so it cannot look like a protocol body.
fn one_line(message: &str) -> String {
    message.replace(['\r', '\n'], " ")
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            GatewayError::Conflict { stored_size } => (
                status,
                [(CONTENT_TYPE, CONFLICT_CONTENT_TYPE)],
                conflict_body(stored_size),
            )
                .into_response(),
            // What went wrong upstream is for the operator's logs, not the client.
            GatewayError::Unavailable { .. }
            | GatewayError::BadUpstream { .. }
            | GatewayError::Config { .. }
            | GatewayError::Serve { .. } => {
                tracing::warn!(kind = self.kind(), error = %self, "witness request failed");
                let reason = status.canonical_reason().unwrap_or("error");
                let mut response = (status, format!("{reason}\n")).into_response();
                if matches!(
                    self,
                    GatewayError::Unavailable { .. } | GatewayError::BadUpstream { .. }
                ) {
                    let failure = crate::metrics::UpstreamFailure(self.kind());
                    response.extensions_mut().insert(failure);
                }
                response
            }
            refusal => (status, format!("{}\n", one_line(&refusal.to_string()))).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn refusal(code: tonic::Code, http: &str, stored: Option<&str>) -> tonic::Status {
        let mut status = tonic::Status::new(code, "why\nand more");
        status
            .metadata_mut()
            .insert("x-http-status", http.parse().unwrap());
        if let Some(stored) = stored {
            status
                .metadata_mut()
                .insert("x-stored-size", stored.parse().unwrap());
        }
        status
    }

    #[test]
    fn witness_statuses_map_exactly() {
        for (code, http) in [
            (tonic::Code::InvalidArgument, 400),
            (tonic::Code::PermissionDenied, 403),
            (tonic::Code::NotFound, 404),
            (tonic::Code::Aborted, 422),
            (tonic::Code::Unavailable, 503),
        ] {
            let error = GatewayError::from_witness(&refusal(code, &http.to_string(), None));
            assert_eq!(error.status().as_u16(), http);
        }
        let conflict = GatewayError::from_witness(&refusal(
            tonic::Code::FailedPrecondition,
            "409",
            Some("30"),
        ));
        assert!(matches!(
            conflict,
            GatewayError::Conflict { stored_size: 30 }
        ));
    }

    #[test]
    fn conflict_without_stored_size_is_not_relayed_as_409() {
        let error =
            GatewayError::from_witness(&refusal(tonic::Code::FailedPrecondition, "409", None));
        assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn unexpected_upstream_status_is_never_a_500() {
        let error = GatewayError::from_witness(&refusal(tonic::Code::Internal, "500", None));
        assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
        let error = GatewayError::from_witness(&tonic::Status::unavailable("connection refused"));
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn multi_line_reason_is_folded() {
        let error = GatewayError::from_witness(&refusal(tonic::Code::InvalidArgument, "400", None));
        assert_eq!(error.to_string(), "why and more");
    }
}
