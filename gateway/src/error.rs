//! The one error type of the gateway, and its one mapping to an HTTP status,
//! rendered two ways: as the tlog-witness spec's plain-text bodies (the
//! tlog-witness and status endpoints), and as `{"error", "message"}` JSON for
//! the admin API ([`JsonError`]).

use axum::Json;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use witness_core::witness_api::{CONFLICT_CONTENT_TYPE, conflict_body};

/// Why a request was not answered with 200.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The request body is malformed or too large (refused at the edge, never
    /// forwarded).
    #[error("{0}")]
    Request(#[from] witness_core::Error),
    /// The witness refused with a status it chose (400, 403, 404, 409 or 422),
    /// `code` naming the refusal (its `x-witness-refusal`, else `refused`).
    #[error("{reason}")]
    Refused {
        status: StatusCode,
        code: String,
        reason: String,
    },
    /// The old size is not the latest cosigned size.
    #[error("old size is not the latest cosigned size {stored_size}")]
    Conflict { stored_size: u64 },
    /// No log with this origin hash, or nothing cosigned for it yet.
    #[error("no cosigned checkpoint for this origin hash")]
    NotFound,
    /// No trusted log has this origin hash (the admin API's recosign).
    #[error("no trusted log has this origin hash")]
    UnknownOrigin,
    /// An admin request with no credentials: no `Authorization: Bearer` header
    /// (or more than one) and no client certificate. `tokens` and
    /// `certificates` say which of the two the admin API accepts.
    #[error("admin credentials required")]
    MissingCredentials { tokens: bool, certificates: bool },
    /// An admin request whose bearer token was refused by the check `check`.
    #[error("{reason}")]
    Unauthorized {
        check: &'static str,
        reason: &'static str,
    },
    /// An authenticated admin caller (a token's subject, a client
    /// certificate's identities) that may not administer.
    #[error("{reason}")]
    Forbidden {
        check: &'static str,
        reason: &'static str,
    },
    /// The OIDC issuer's keys could not be fetched (and none are cached).
    #[error("the token issuer's keys cannot be fetched")]
    IssuerUnavailable,
    /// A malformed admin request.
    #[error("{reason}")]
    BadRequest { reason: String },
    /// A request body over `limit` bytes.
    #[error("the request body is over {} KiB", limit / 1024)]
    BodyTooLarge { limit: usize },
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

/// The `realm` of the admin API's `WWW-Authenticate` challenges (RFC 6750).
const REALM: &str = "rekor-witness admin";

/// The `Retry-After` (seconds) of a 503 for an unavailable witness, signer or
/// store: long enough for a restarted service to come back, short enough that
/// a log's next submission is not held up much longer than the fault.
pub const RETRY_AFTER_UNAVAILABLE_SECONDS: u64 = 5;

/// Refusal codes relayed from the witness's `x-witness-refusal` are at most
/// this long (the witness's own are about 20 characters).
const MAX_REFUSAL_CODE: usize = 64;

impl GatewayError {
    /// The HTTP status of the response.
    pub fn status(&self) -> StatusCode {
        match self {
            // The parsers only refuse malformed (400) or oversized (413) input;
            // bad input is never a 500, whatever the core's table says.
            GatewayError::Request(e) if e.http_status() == 413 => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::Request(_) | GatewayError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            GatewayError::Refused { status, .. } => *status,
            GatewayError::Conflict { .. } => StatusCode::CONFLICT,
            GatewayError::NotFound | GatewayError::UnknownOrigin => StatusCode::NOT_FOUND,
            GatewayError::MissingCredentials { .. } | GatewayError::Unauthorized { .. } => {
                StatusCode::UNAUTHORIZED
            }
            GatewayError::Forbidden { .. } => StatusCode::FORBIDDEN,
            GatewayError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::Unavailable { .. } | GatewayError::IssuerUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
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
            GatewayError::UnknownOrigin => "unknown_origin",
            GatewayError::MissingCredentials { .. } => "missing_credentials",
            GatewayError::Unauthorized { .. } => "unauthorized",
            GatewayError::Forbidden { .. } => "forbidden",
            GatewayError::IssuerUnavailable => "issuer_unavailable",
            GatewayError::BadRequest { .. } => "bad_request",
            GatewayError::BodyTooLarge { .. } => "too_large",
            GatewayError::Unavailable { .. } => "unavailable",
            GatewayError::BadUpstream { .. } => "bad_upstream",
            GatewayError::Config { .. } => "config",
            GatewayError::Serve { .. } => "serve",
        }
    }

    /// Reads a refusal of a tlog-witness RPC (`AddCheckpoint`, `SignSubtree`,
    /// `GetCheckpoint`): the tlog-witness status travels in the
    /// `x-http-status` metadata and, for 409, the stored size in
    /// `x-stored-size` (see proto/witness/v1/witness.proto).
    pub fn from_witness(status: &tonic::Status) -> GatewayError {
        let http = metadata(status, "x-http-status").and_then(|v| v.parse::<u16>().ok());
        let reason = one_line(status.message());
        match http {
            Some(409) => match metadata(status, "x-stored-size").and_then(|v| v.parse().ok()) {
                Some(stored_size) => GatewayError::Conflict { stored_size },
                None => GatewayError::BadUpstream {
                    detail: "409 without x-stored-size".into(),
                },
            },
            Some(code @ (400 | 403 | 404 | 422)) => match StatusCode::from_u16(code) {
                Ok(http) => GatewayError::Refused {
                    status: http,
                    code: refusal_code(status),
                    reason,
                },
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
                // The connection failed under the call (the witness was
                // killed mid-request): a transport error, not an answer out
                // of protocol.
                tonic::Code::Unknown if std::error::Error::source(status).is_some() => {
                    GatewayError::Unavailable { detail: reason }
                }
                _ => GatewayError::BadUpstream { detail: reason },
            },
        }
    }

    /// Reads a refusal of an admin RPC (`AddLog`, `ListLogs`, `Recosign`): its
    /// `x-http-status` when it is one the admin API answers, else its gRPC
    /// code. Unlike [`GatewayError::from_witness`], a 409 is a refusal of its
    /// own (a trusted origin with another key), not a checkpoint conflict.
    pub fn from_admin_witness(status: &tonic::Status) -> GatewayError {
        let http = metadata(status, "x-http-status").and_then(|v| v.parse::<u16>().ok());
        let by_http = match http {
            Some(400) => Some(StatusCode::BAD_REQUEST),
            Some(403) => Some(StatusCode::FORBIDDEN),
            Some(404) => Some(StatusCode::NOT_FOUND),
            Some(409) => Some(StatusCode::CONFLICT),
            Some(503) => Some(StatusCode::SERVICE_UNAVAILABLE),
            _ => None,
        };
        let code = by_http.or(match status.code() {
            tonic::Code::InvalidArgument => Some(StatusCode::BAD_REQUEST),
            tonic::Code::PermissionDenied => Some(StatusCode::FORBIDDEN),
            tonic::Code::NotFound => Some(StatusCode::NOT_FOUND),
            tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists => {
                Some(StatusCode::CONFLICT)
            }
            tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::ResourceExhausted => Some(StatusCode::SERVICE_UNAVAILABLE),
            _ => None,
        });
        let reason = one_line(status.message());
        match code {
            None => GatewayError::BadUpstream { detail: reason },
            Some(StatusCode::SERVICE_UNAVAILABLE) => GatewayError::Unavailable { detail: reason },
            Some(http) => GatewayError::Refused {
                status: http,
                code: refusal_code(status),
                reason,
            },
        }
    }

    /// The admin API's JSON `error` code and `message`. Failures upstream are
    /// described without their cause, which is for the operator's logs.
    fn code_and_message(&self) -> (&str, String) {
        match self {
            GatewayError::Refused { code, reason, .. } => (code, reason.clone()),
            GatewayError::NotFound => (
                "nothing_cosigned",
                "nothing was cosigned for this log yet".into(),
            ),
            GatewayError::MissingCredentials {
                tokens: true,
                certificates,
            } => (
                "missing_token",
                if *certificates {
                    "an Authorization: Bearer token or an allowed client certificate is required"
                } else {
                    "an Authorization: Bearer token is required"
                }
                .into(),
            ),
            GatewayError::MissingCredentials { tokens: false, .. } => (
                "missing_client_certificate",
                "an allowed client certificate is required".into(),
            ),
            GatewayError::Unauthorized { check, reason }
            | GatewayError::Forbidden { check, reason } => (check, (*reason).into()),
            GatewayError::Unavailable { .. } => {
                ("unavailable", "the witness service is unavailable".into())
            }
            GatewayError::BadUpstream { .. } => (
                "bad_upstream",
                "the witness answered out of protocol".into(),
            ),
            GatewayError::Config { .. } | GatewayError::Serve { .. } => {
                ("internal", "internal error".into())
            }
            other => (other.kind(), one_line(&other.to_string())),
        }
    }

    /// The RFC 6750 challenge of a 401: without credentials, no error code.
    fn challenge(&self) -> Option<HeaderValue> {
        let challenge = match self {
            GatewayError::MissingCredentials { tokens: true, .. } => {
                format!("Bearer realm=\"{REALM}\"")
            }
            GatewayError::Unauthorized { reason, .. } => format!(
                "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{}\"",
                reason.replace(['"', '\\'], "'")
            ),
            _ => return None,
        };
        HeaderValue::from_str(&challenge).ok()
    }

    /// Logs a failure that is the gateway's or a service's, not the
    /// client's, marks the response for the request metrics, and gives a 503
    /// its `Retry-After`.
    fn mark_failure(&self, response: &mut Response) {
        if matches!(
            self,
            GatewayError::Unavailable { .. }
                | GatewayError::BadUpstream { .. }
                | GatewayError::Config { .. }
                | GatewayError::Serve { .. }
        ) {
            tracing::warn!(kind = self.kind(), error = %self, "witness request failed");
        }
        if matches!(
            self,
            GatewayError::Unavailable { .. } | GatewayError::BadUpstream { .. }
        ) {
            let failure = crate::metrics::UpstreamFailure(self.kind());
            response.extensions_mut().insert(failure);
        }
        if let Some(challenge) = self.challenge() {
            response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
        }
        // A 503 is temporary by definition: say when to try again (RFC 9110,
        // 10.2.3), so a log's client backs off instead of hammering a witness
        // whose signer or store is down.
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                RETRY_AFTER,
                HeaderValue::from(RETRY_AFTER_UNAVAILABLE_SECONDS),
            );
        }
    }
}

fn metadata<'a>(status: &'a tonic::Status, key: &str) -> Option<&'a str> {
    status.metadata().get(key).and_then(|v| v.to_str().ok())
}

/// The witness's `x-witness-refusal` when it is a short snake-case code (it is
/// relayed to clients), else `refused`.
fn refusal_code(status: &tonic::Status) -> String {
    match metadata(status, "x-witness-refusal") {
        Some(code)
            if !code.is_empty()
                && code.len() <= MAX_REFUSAL_CODE
                && code
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') =>
        {
            code.to_owned()
        }
        _ => "refused".to_owned(),
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
        let mut response = match &self {
            GatewayError::Conflict { stored_size } => (
                status,
                [(CONTENT_TYPE, CONFLICT_CONTENT_TYPE)],
                conflict_body(*stored_size),
            )
                .into_response(),
            // What went wrong upstream is for the operator's logs, not the client.
            GatewayError::Unavailable { .. }
            | GatewayError::BadUpstream { .. }
            | GatewayError::Config { .. }
            | GatewayError::Serve { .. } => {
                let reason = status.canonical_reason().unwrap_or("error");
                (status, format!("{reason}\n")).into_response()
            }
            refusal => (status, format!("{}\n", one_line(&refusal.to_string()))).into_response(),
        };
        self.mark_failure(&mut response);
        response
    }
}

/// A [`GatewayError`] answered as the admin API's JSON,
/// `{"error": "<code>", "message": "<reason>"}`, with the same status and
/// `WWW-Authenticate` challenge as the plain-text answer.
#[derive(Debug)]
pub struct JsonError(pub GatewayError);

impl From<GatewayError> for JsonError {
    fn from(error: GatewayError) -> JsonError {
        JsonError(error)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl IntoResponse for JsonError {
    fn into_response(self) -> Response {
        let error = self.0;
        let (code, message) = error.code_and_message();
        let mut response = (
            error.status(),
            Json(ErrorBody {
                error: code,
                message: &message,
            }),
        )
            .into_response();
        error.mark_failure(&mut response);
        response
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
    fn connection_lost_under_a_call_is_503_not_a_protocol_violation() {
        let broken = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "connection reset");
        let status = tonic::Status::from_error(Box::new(broken));
        assert_eq!(status.code(), tonic::Code::Unknown);
        let error = GatewayError::from_witness(&status);
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        // An Unknown status the witness sent itself, without refusal
        // metadata, is still out of protocol.
        let sent = GatewayError::from_witness(&tonic::Status::unknown("odd"));
        assert_eq!(sent.status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn unexpected_upstream_status_is_never_a_500() {
        let error = GatewayError::from_witness(&refusal(tonic::Code::Internal, "500", None));
        assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
        let error = GatewayError::from_witness(&tonic::Status::unavailable("connection refused"));
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn admin_witness_refusals_keep_their_status_and_failures_are_never_500() {
        let mut conflict = refusal(tonic::Code::FailedPrecondition, "409", None);
        conflict
            .metadata_mut()
            .insert("x-witness-refusal", "log_key_change".parse().unwrap());
        let error = GatewayError::from_admin_witness(&conflict);
        assert_eq!(error.status(), StatusCode::CONFLICT);
        assert_eq!(error.code_and_message().0, "log_key_change");
        let internal = tonic::Status::internal("boom");
        assert_eq!(
            GatewayError::from_admin_witness(&internal).status(),
            StatusCode::BAD_GATEWAY
        );
        let down = tonic::Status::unavailable("connection refused");
        assert_eq!(
            GatewayError::from_admin_witness(&down).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let denied = tonic::Status::permission_denied("no");
        assert_eq!(
            GatewayError::from_admin_witness(&denied).status(),
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn refusal_codes_relayed_from_upstream_are_short_snake_case() {
        for (code, relayed) in [
            ("log_key_change", "log_key_change"),
            ("Log-Key", "refused"),
            ("a\"b", "refused"),
            ("", "refused"),
        ] {
            let mut status = refusal(tonic::Code::InvalidArgument, "400", None);
            status
                .metadata_mut()
                .insert("x-witness-refusal", code.parse().unwrap());
            let error = GatewayError::from_admin_witness(&status);
            assert_eq!(error.code_and_message().0, relayed, "{code:?}");
        }
        let mut long = refusal(tonic::Code::InvalidArgument, "400", None);
        long.metadata_mut()
            .insert("x-witness-refusal", "a".repeat(65).parse().unwrap());
        assert_eq!(
            GatewayError::from_admin_witness(&long).code_and_message().0,
            "refused"
        );
    }

    async fn json(error: GatewayError) -> (StatusCode, Option<String>, serde_json::Value) {
        let response = JsonError(error).into_response();
        let status = response.status();
        let challenge = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        (status, challenge, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn admin_refusals_are_json_with_a_bearer_challenge_on_401() {
        let (status, challenge, body) = json(GatewayError::Unauthorized {
            check: "token_expired",
            reason: "the token has expired",
        })
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"], "token_expired");
        assert_eq!(body["message"], "the token has expired");
        let challenge = challenge.unwrap();
        assert!(challenge.starts_with("Bearer realm="), "{challenge}");
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        assert!(challenge.contains("the token has expired"), "{challenge}");

        let (status, challenge, body) = json(GatewayError::MissingCredentials {
            tokens: true,
            certificates: true,
        })
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"], "missing_token");
        assert!(
            !challenge.unwrap().contains("error="),
            "no error code without a token"
        );

        // Certificates only: no Bearer scheme to offer.
        let (status, challenge, body) = json(GatewayError::MissingCredentials {
            tokens: false,
            certificates: true,
        })
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"], "missing_client_certificate");
        assert!(challenge.is_none());

        // Upstream causes stay in the logs.
        let (status, _, body) = json(GatewayError::Unavailable {
            detail: "postgres at 10.0.0.7 refused".into(),
        })
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!body["message"].as_str().unwrap().contains("10.0.0.7"));
    }

    #[tokio::test]
    async fn unavailable_upstream_says_when_to_retry_and_refusals_do_not() {
        let down = GatewayError::from_witness(&refusal(tonic::Code::Unavailable, "503", None));
        let response = down.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get(RETRY_AFTER).unwrap(),
            &RETRY_AFTER_UNAVAILABLE_SECONDS.to_string()
        );
        let timeout = GatewayError::from_witness(&tonic::Status::deadline_exceeded("slow"));
        let response = JsonError(timeout).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().get(RETRY_AFTER).is_some());
        let refused =
            GatewayError::from_witness(&refusal(tonic::Code::InvalidArgument, "400", None));
        assert!(refused.into_response().headers().get(RETRY_AFTER).is_none());
    }

    #[test]
    fn multi_line_reason_is_folded() {
        let error = GatewayError::from_witness(&refusal(tonic::Code::InvalidArgument, "400", None));
        assert_eq!(error.to_string(), "why and more");
    }
}
