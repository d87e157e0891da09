//! The admin API, behind OIDC bearer tokens ([`oidc`]):
//!
//! - `POST /admin/v1/logs` with `{"origin": "...", "verifier_key": "<vkey>"}`
//!   (`origin` optional: the key's name) trusts a push log from now on
//!   (`AddLog`; persisted by the witness, never removed, never re-keyed);
//! - `GET /admin/v1/logs` lists the trusted logs (`ListLogs`);
//! - `POST /admin/v1/logs/<origin hash>/recosign` re-cosigns a log's latest
//!   checkpoint now (`Recosign`), the log named by the lowercase hex SHA-256 of
//!   its origin as on the monitoring endpoint.
//!
//! Answers are JSON; refusals are `{"error": "<code>", "message": "<reason>"}`
//! with 400 (malformed), 401 (no or bad token, with `WWW-Authenticate`), 403
//! (subject not allowed), 404, 409 (a trusted origin with another key), 413 or
//! 503 (issuer or witness unavailable). Every accepted admin call is logged
//! with the token's subject.
//!
//! Client-certificate (mutual TLS) authentication as an alternative to tokens
//! is not offered: the API listener's TLS does not hand the verified peer
//! certificate to the routes.

mod oidc;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use witness_proto::witness as pb;

use crate::{Gateway, GatewayError};
use oidc::{Administrator, Authenticator};

/// The admin API's configuration (`[admin]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The OIDC issuer URL: `https://...`, or `http://` to a loopback host
    /// (a local issuer). It must equal the `issuer` of the discovery document
    /// at `<issuer>/.well-known/openid-configuration` and the tokens' `iss`,
    /// byte for byte.
    pub issuer: String,
    /// The audience tokens must be issued for: one of the token's `aud`.
    pub audience: String,
    /// The token subjects (`sub`) allowed to administer. Unset: any subject
    /// the issuer authenticates for the audience. An empty list is refused
    /// (it would lock every administrator out).
    #[serde(default)]
    pub allowed_subjects: Option<Vec<String>>,
    /// How often the issuer's keys (JWKS) are fetched again (default `1h`,
    /// at least `1min`). A token naming an unknown key id also triggers a
    /// fetch, at most once per 10 s.
    #[serde(
        default = "default_jwks_refresh",
        deserialize_with = "crate::config::duration"
    )]
    pub jwks_refresh: Duration,
}

fn default_jwks_refresh() -> Duration {
    Duration::from_secs(3600)
}

impl AdminConfig {
    /// Checks what serde cannot: the issuer's scheme, the audience, the list
    /// of subjects and the refresh interval.
    pub fn validate(&self) -> Result<(), GatewayError> {
        let invalid = |detail: String| {
            Err(GatewayError::Config {
                detail: format!("[admin] {detail}"),
            })
        };
        let issuer = match Url::parse(&self.issuer) {
            Ok(url) => url,
            Err(e) => return invalid(format!("issuer {:?}: {e}", self.issuer)),
        };
        if !oidc::https_or_loopback(&issuer)
            || issuer.query().is_some()
            || issuer.fragment().is_some()
        {
            return invalid(format!(
                "issuer {:?} must be https (or http to a loopback host), without query or fragment",
                self.issuer
            ));
        }
        if self.audience.is_empty() {
            return invalid("audience is empty".into());
        }
        if let Some(subjects) = &self.allowed_subjects
            && (subjects.is_empty() || subjects.iter().any(String::is_empty))
        {
            return invalid(
                "allowed_subjects is empty or has an empty subject (leave it out to allow any)"
                    .into(),
            );
        }
        if self.jwks_refresh < Duration::from_secs(60) {
            return invalid("jwks_refresh must be at least 1min".into());
        }
        Ok(())
    }
}

/// Admin request bodies are one small JSON object; a vkey is at most 4 KiB.
const MAX_ADMIN_BODY: usize = 16 * 1024;

/// The admin routes, or none when `[admin]` is not configured. The issuer's
/// keys are fetched in the background from now on.
pub(crate) fn routes(config: Option<&AdminConfig>) -> Result<Router<Gateway>, GatewayError> {
    let Some(config) = config else {
        return Ok(Router::new());
    };
    config.validate()?;
    if jsonwebtoken::crypto::CryptoProvider::try_get_default().is_none() {
        return Err(GatewayError::Config {
            detail: "[admin] no JWT crypto provider in this build".into(),
        });
    }
    let authenticator = Arc::new(Authenticator::new(config)?);
    authenticator.spawn_refresh(config.jwks_refresh);
    Ok(Router::new()
        .route("/admin/v1/logs", get(list_logs).post(add_log))
        .route("/admin/v1/logs/{origin_hash}/recosign", post(recosign))
        .layer(DefaultBodyLimit::max(MAX_ADMIN_BODY))
        // A route layer: only matched admin routes ask for a token, before
        // any body is read.
        .route_layer(middleware::from_fn_with_state(
            authenticator,
            require_administrator,
        )))
}

/// Lets the request through only with a valid bearer token, and hands its
/// subject to the handler.
async fn require_administrator(
    State(authenticator): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Result<Response, AdminError> {
    let token = bearer_token(request.headers())?;
    let administrator = authenticator.verify(token).await?;
    request.extensions_mut().insert(administrator);
    Ok(next.run(request).await)
}

/// The token of the one `Authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Result<&str, AdminError> {
    let mut values = headers.get_all(axum::http::header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(AdminError::MissingToken);
    };
    let value = value.to_str().map_err(|_| AdminError::MissingToken)?;
    let (scheme, token) = value.split_once(' ').ok_or(AdminError::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AdminError::MissingToken);
    }
    Ok(token.trim())
}

/// `POST /admin/v1/logs`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddLogBody {
    #[serde(default)]
    origin: Option<String>,
    verifier_key: String,
}

/// A trusted log as the admin API shows it.
#[derive(Serialize)]
struct LogView {
    origin: String,
    /// Lowercase hex SHA-256 of the origin (the monitoring and recosign path).
    origin_hash: String,
    verifier_keys: Vec<String>,
    /// `push`, `pull-rekor-v1` or `pull-tiles`.
    feed: String,
    cosigned: bool,
    /// The latest cosigned size (0 when nothing is cosigned).
    size: u64,
    /// When the newest cosignature was made (seconds since the epoch), if any.
    cosigned_at: Option<u64>,
}

impl From<pb::Log> for LogView {
    fn from(log: pb::Log) -> LogView {
        LogView {
            origin_hash: origin_hash(&log.origin),
            origin: log.origin,
            verifier_keys: log.verifier_keys,
            feed: log.feed,
            cosigned: log.cosigned,
            size: log.size,
            cosigned_at: log.cosigned.then_some(log.cosigned_at),
        }
    }
}

#[derive(Serialize)]
struct LogList {
    logs: Vec<LogView>,
}

#[derive(Serialize)]
struct Recosigned {
    origin: String,
    /// The size cosigned again (that of the latest cosigned checkpoint).
    size: u64,
}

fn origin_hash(origin: &str) -> String {
    hex::encode(Sha256::digest(origin.as_bytes()))
}

async fn add_log(
    State(gateway): State<Gateway>,
    Extension(administrator): Extension<Administrator>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<LogView>, AdminError> {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => AdminError::TooLarge,
        _ => AdminError::BadRequest {
            message: "the request body could not be read".into(),
        },
    })?;
    let body: AddLogBody = serde_json::from_slice(&body).map_err(|e| AdminError::BadRequest {
        message: format!("expected {{\"origin\"?, \"verifier_key\"}}: {e}"),
    })?;
    let request = pb::AddLogRequest {
        origin: body.origin.unwrap_or_default(),
        verifier_key: body.verifier_key,
    };
    let origin = request.origin.clone();
    let log = gateway
        .witness
        .clone()
        .add_log(request)
        .await
        .map_err(|status| AdminError::from_witness(&status))?
        .into_inner()
        .log
        .ok_or_else(|| AdminError::bad_upstream("AddLog answered no log"))?;
    tracing::info!(
        subject = %administrator.subject,
        origin = %log.origin,
        requested_origin = %origin,
        "admin: log added"
    );
    Ok(Json(LogView::from(log)))
}

async fn list_logs(
    State(gateway): State<Gateway>,
    Extension(_administrator): Extension<Administrator>,
) -> Result<Json<LogList>, AdminError> {
    let logs = trusted_logs(&gateway).await?;
    Ok(Json(LogList {
        logs: logs.into_iter().map(LogView::from).collect(),
    }))
}

async fn trusted_logs(gateway: &Gateway) -> Result<Vec<pb::Log>, AdminError> {
    Ok(gateway
        .witness
        .clone()
        .list_logs(pb::ListLogsRequest {})
        .await
        .map_err(|status| AdminError::from_witness(&status))?
        .into_inner()
        .logs)
}

async fn recosign(
    State(gateway): State<Gateway>,
    Extension(administrator): Extension<Administrator>,
    Path(hash): Path<String>,
) -> Result<Json<Recosigned>, AdminError> {
    if hash.len() != 64 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(AdminError::BadRequest {
            message: "the origin hash is not 64 lowercase hex digits".into(),
        });
    }
    // Fresh from the witness (admin calls are rare): a log added a moment ago
    // is found.
    let origin = trusted_logs(&gateway)
        .await?
        .into_iter()
        .map(|log| log.origin)
        .find(|origin| origin_hash(origin) == hash)
        .ok_or(AdminError::NotFound {
            error: "unknown_origin",
            message: "no trusted log has this origin hash",
        })?;
    let size = gateway
        .witness
        .clone()
        .recosign(pb::RecosignRequest {
            origin: origin.clone(),
        })
        .await
        .map_err(|status| AdminError::from_witness(&status))?
        .into_inner()
        .size
        .ok_or(AdminError::NotFound {
            error: "nothing_cosigned",
            message: "nothing was cosigned for this log yet",
        })?;
    tracing::info!(subject = %administrator.subject, origin, size, "admin: re-cosigned");
    Ok(Json(Recosigned { origin, size }))
}

/// Why an admin request was refused; answered as JSON.
#[derive(Debug)]
pub(crate) enum AdminError {
    /// No `Authorization: Bearer` header (or more than one).
    MissingToken,
    /// The token was refused by a check named by `error`.
    Unauthenticated {
        error: &'static str,
        message: &'static str,
    },
    /// A valid token of a subject not in `allowed_subjects`.
    SubjectNotAllowed,
    /// The issuer's keys could not be fetched (and none are cached).
    IssuerUnavailable,
    /// The request is malformed.
    BadRequest { message: String },
    /// The request body is over [`MAX_ADMIN_BODY`].
    TooLarge,
    /// No such log, or nothing cosigned for it.
    NotFound {
        error: &'static str,
        message: &'static str,
    },
    /// The witness refused or failed (status relayed from its gRPC answer).
    Witness {
        status: StatusCode,
        error: String,
        message: String,
    },
}

impl AdminError {
    fn unauthenticated(error: &'static str, message: &'static str) -> AdminError {
        AdminError::Unauthenticated { error, message }
    }

    fn bad_upstream(detail: &str) -> AdminError {
        tracing::warn!(detail, "witness answered the admin API out of protocol");
        AdminError::Witness {
            status: StatusCode::BAD_GATEWAY,
            error: "bad_upstream".into(),
            message: "the witness answered out of protocol".into(),
        }
    }

    /// Maps a witness refusal: its `x-http-status` when it is one the admin
    /// API answers, else its gRPC code; the refusal's kind from
    /// `x-witness-refusal`.
    fn from_witness(status: &tonic::Status) -> AdminError {
        let metadata = |key| status.metadata().get(key).and_then(|v| v.to_str().ok());
        let http = metadata("x-http-status").and_then(|v| v.parse::<u16>().ok());
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
        let Some(code) = code else {
            return AdminError::bad_upstream(status.message());
        };
        if code == StatusCode::SERVICE_UNAVAILABLE {
            // The cause (a database or signer message) is for the logs.
            tracing::warn!(error = %status.message(), "witness unavailable to the admin API");
            return AdminError::Witness {
                status: code,
                error: "unavailable".into(),
                message: "the witness service is unavailable".into(),
            };
        }
        AdminError::Witness {
            status: code,
            error: metadata("x-witness-refusal")
                .unwrap_or("refused")
                .to_owned(),
            message: status.message().replace(['\r', '\n'], " "),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            AdminError::MissingToken | AdminError::Unauthenticated { .. } => {
                StatusCode::UNAUTHORIZED
            }
            AdminError::SubjectNotAllowed => StatusCode::FORBIDDEN,
            AdminError::IssuerUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            AdminError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AdminError::NotFound { .. } => StatusCode::NOT_FOUND,
            AdminError::Witness { status, .. } => *status,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

/// The `realm` of the `WWW-Authenticate` challenges (RFC 6750).
const REALM: &str = "rekor-witness admin";

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (error, message): (&str, &str) = match &self {
            AdminError::MissingToken => (
                "missing_token",
                "an Authorization: Bearer token is required",
            ),
            AdminError::Unauthenticated { error, message } => (error, message),
            AdminError::SubjectNotAllowed => (
                "subject_not_allowed",
                "the token's subject may not administer this witness",
            ),
            AdminError::IssuerUnavailable => (
                "issuer_unavailable",
                "the token issuer's keys cannot be fetched",
            ),
            AdminError::BadRequest { message } => ("bad_request", message),
            AdminError::TooLarge => ("too_large", "the request body is over 16 KiB"),
            AdminError::NotFound { error, message } => (error, message),
            AdminError::Witness { error, message, .. } => (error, message),
        };
        let mut response = (status, Json(ErrorBody { error, message })).into_response();
        // RFC 6750, section 3: a challenge on every 401; without a token, no
        // error code.
        let challenge = match &self {
            AdminError::MissingToken => Some(format!("Bearer realm=\"{REALM}\"")),
            AdminError::Unauthenticated { error, .. } => Some(format!(
                "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{error}\""
            )),
            _ => None,
        };
        if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response.headers_mut().insert(WWW_AUTHENTICATE, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn config(issuer: &str) -> AdminConfig {
        AdminConfig {
            issuer: issuer.into(),
            audience: "rekor-witness".into(),
            allowed_subjects: None,
            jwks_refresh: default_jwks_refresh(),
        }
    }

    #[test]
    fn plain_http_issuers_off_loopback_are_refused() {
        assert!(config("https://accounts.example.com").validate().is_ok());
        assert!(config("http://127.0.0.1:5556/dex").validate().is_ok());
        for issuer in [
            "http://accounts.example.com",
            "https://accounts.example.com/?realm=x",
            "not a url",
        ] {
            assert!(config(issuer).validate().is_err(), "{issuer}");
        }
    }

    #[test]
    fn an_empty_subject_list_is_refused_rather_than_locking_everyone_out() {
        let mut empty = config("https://accounts.example.com");
        empty.allowed_subjects = Some(Vec::new());
        assert!(empty.validate().is_err());
    }

    #[test]
    fn bearer_tokens_are_read_from_exactly_one_header() {
        let mut headers = HeaderMap::new();
        assert!(bearer_token(&headers).is_err());
        headers.insert("authorization", "Bearer abc.def.ghi".parse().unwrap());
        assert_eq!(bearer_token(&headers).unwrap(), "abc.def.ghi");
        headers.append("authorization", "Bearer other".parse().unwrap());
        assert!(bearer_token(&headers).is_err());
        let mut basic = HeaderMap::new();
        basic.insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
        assert!(bearer_token(&basic).is_err());
    }

    #[test]
    fn witness_refusals_keep_their_status_and_failures_are_never_500() {
        let mut conflict = tonic::Status::failed_precondition("log is already trusted");
        conflict
            .metadata_mut()
            .insert("x-http-status", "409".parse().unwrap());
        conflict
            .metadata_mut()
            .insert("x-witness-refusal", "log_key_change".parse().unwrap());
        let error = AdminError::from_witness(&conflict);
        assert_eq!(error.status(), StatusCode::CONFLICT);
        assert!(
            matches!(error, AdminError::Witness { ref error, .. } if error == "log_key_change")
        );
        let internal = tonic::Status::internal("boom");
        assert_eq!(
            AdminError::from_witness(&internal).status(),
            StatusCode::BAD_GATEWAY
        );
        let down = tonic::Status::unavailable("connection refused");
        assert_eq!(
            AdminError::from_witness(&down).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
