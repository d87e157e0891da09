//! The admin API:
//!
//! - `POST /admin/v1/logs` with `{"origin": "...", "verifier_key": "<vkey>"}`
//!   (`origin` optional: the key's name) trusts a push log from now on
//!   (`AddLog`; persisted by the witness, never removed, never re-keyed);
//! - `GET /admin/v1/logs` lists the trusted logs (`ListLogs`);
//! - `POST /admin/v1/logs/<origin hash>/recosign` re-cosigns a log's latest
//!   checkpoint now (`Recosign`), the log named by the lowercase hex SHA-256 of
//!   its origin as on the monitoring endpoint.
//!
//! An administrator authenticates with an OIDC bearer token ([`oidc`]), or
//! with a client certificate (mutual TLS) whose identity is allowed, or
//! either, as configured. Client certificates are asked for, not required, in
//! every handshake of the HTTPS API listener ([`crate::transport`]), so the
//! public endpoints keep serving clients without one; a certificate that does
//! not chain to `client_ca` fails the handshake. The verified certificate's
//! identities reach this module with each request.
//!
//! Answers are JSON; refusals are `{"error": "<code>", "message": "<reason>"}`
//! ([`crate::error::JsonError`]) with 400 (malformed), 401 (no credentials or
//! a bad token, with `WWW-Authenticate` when tokens are accepted), 403 (a
//! subject or certificate identity not allowed), 404, 409 (a trusted origin
//! with another key), 413 or 503 (issuer or witness unavailable). Every
//! accepted admin call is logged with the administrator (a token's subject,
//! or a certificate's allowed identity).

mod oidc;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use witness_proto::witness as pb;

use crate::error::JsonError;
use crate::transport::PeerIdentities;
use crate::{Gateway, GatewayError};
use oidc::Authenticator;

/// The admin API's configuration (`[admin]`): OIDC bearer tokens (`issuer`
/// and `audience`), client certificates (`client_ca` and
/// `allowed_client_identities`), or both; at least one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The OIDC issuer URL: `https://...`, or `http://` to a loopback host
    /// (a local issuer). It must equal the `issuer` of the discovery document
    /// at `<issuer>/.well-known/openid-configuration` and the tokens' `iss`,
    /// byte for byte. With `audience`; leave both out to accept client
    /// certificates only.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The audience tokens must be issued for: one of the token's `aud`.
    #[serde(default)]
    pub audience: Option<String>,
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
    /// PEM CA certificate(s) that administrators' client certificates chain
    /// to (read at startup). Needs `[tls]`: the API listener then asks every
    /// client for a certificate without requiring one; a client presenting one
    /// that does not chain to this CA (or is expired, or not for client
    /// authentication) is refused at the TLS handshake, on every endpoint.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// The client certificate identities allowed to administer, from the
    /// certificate's subject alternative names: `uri:<URI>` (for example a
    /// SPIFFE ID) or `dns:<name>`, as the signer's allowlist. Required with
    /// `client_ca`; a verified certificate with none of them is refused (403).
    #[serde(default)]
    pub allowed_client_identities: Vec<String>,
}

fn default_jwks_refresh() -> Duration {
    Duration::from_secs(3600)
}

impl AdminConfig {
    /// OIDC bearer tokens from `issuer` for `audience`, any subject, keys
    /// refreshed hourly; no client certificates.
    pub fn oidc(issuer: impl Into<String>, audience: impl Into<String>) -> AdminConfig {
        AdminConfig {
            issuer: Some(issuer.into()),
            audience: Some(audience.into()),
            allowed_subjects: None,
            jwks_refresh: default_jwks_refresh(),
            client_ca: None,
            allowed_client_identities: Vec::new(),
        }
    }

    /// Client certificates chaining to `client_ca` with one of `identities`;
    /// no tokens.
    pub fn client_certificates(
        client_ca: impl Into<PathBuf>,
        identities: impl IntoIterator<Item = impl Into<String>>,
    ) -> AdminConfig {
        AdminConfig {
            issuer: None,
            audience: None,
            allowed_subjects: None,
            jwks_refresh: default_jwks_refresh(),
            client_ca: Some(client_ca.into()),
            allowed_client_identities: identities.into_iter().map(Into::into).collect(),
        }
    }

    /// The OIDC issuer and audience, when tokens are accepted.
    pub(crate) fn oidc_issuer(&self) -> Option<(&str, &str)> {
        Some((self.issuer.as_deref()?, self.audience.as_deref()?))
    }

    /// Checks what serde cannot: that one method at least is configured, each
    /// completely; the issuer's scheme, the audience, the subjects, the
    /// refresh interval and the form of the client identities.
    pub fn validate(&self) -> Result<(), GatewayError> {
        let invalid = |detail: String| {
            Err(GatewayError::Config {
                detail: format!("[admin] {detail}"),
            })
        };
        match (&self.issuer, &self.audience) {
            (Some(issuer), Some(audience)) => {
                let url = match Url::parse(issuer) {
                    Ok(url) => url,
                    Err(e) => return invalid(format!("issuer {issuer:?}: {e}")),
                };
                if !oidc::https_or_loopback(&url)
                    || url.query().is_some()
                    || url.fragment().is_some()
                {
                    return invalid(format!(
                        "issuer {issuer:?} must be https (or http to a loopback host), without query or fragment"
                    ));
                }
                if audience.is_empty() {
                    return invalid("audience is empty".into());
                }
            }
            (None, None) => {
                if self.allowed_subjects.is_some() {
                    return invalid("allowed_subjects needs issuer and audience".into());
                }
            }
            _ => return invalid("issuer and audience go together".into()),
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
        match (&self.client_ca, self.allowed_client_identities.is_empty()) {
            (Some(_), true) => {
                return invalid(
                    "client_ca needs allowed_client_identities (which certificates may administer)"
                        .into(),
                );
            }
            (None, false) => {
                return invalid("allowed_client_identities needs client_ca".into());
            }
            _ => {}
        }
        if let Some(bad) = self.allowed_client_identities.iter().find(|identity| {
            let value = identity
                .strip_prefix("uri:")
                .or_else(|| identity.strip_prefix("dns:"));
            value.is_none_or(str::is_empty)
        }) {
            return invalid(format!(
                "allowed client identity {bad:?} is neither uri:<URI> nor dns:<name>"
            ));
        }
        if self.oidc_issuer().is_none() && self.client_ca.is_none() {
            return invalid(
                "no way to authenticate: configure issuer and audience (OIDC tokens), client_ca and allowed_client_identities (client certificates), or both"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Admin request bodies are one small JSON object; a vkey is at most 4 KiB.
const MAX_ADMIN_BODY: usize = 16 * 1024;

/// Who an accepted admin request speaks for, handed to the handlers.
#[derive(Clone, Debug)]
pub(crate) struct Administrator {
    /// A token's `sub`, or the allowed identity of a client certificate
    /// (`uri:...` or `dns:...`).
    pub(crate) subject: String,
    /// `token` or `client_certificate`.
    pub(crate) method: &'static str,
}

/// How admin requests are authenticated: the configured methods.
struct AdminAuthentication {
    tokens: Option<Arc<Authenticator>>,
    client_identities: Option<HashSet<String>>,
}

/// The admin routes, or none when `[admin]` is not configured. The issuer's
/// keys (with OIDC) are fetched in the background from now on.
pub(crate) fn routes(config: Option<&AdminConfig>) -> Result<Router<Gateway>, GatewayError> {
    let Some(config) = config else {
        return Ok(Router::new());
    };
    config.validate()?;
    let tokens = match config.oidc_issuer() {
        Some((issuer, audience)) => {
            if jsonwebtoken::crypto::CryptoProvider::try_get_default().is_none() {
                return Err(GatewayError::Config {
                    detail: "[admin] no JWT crypto provider in this build".into(),
                });
            }
            let authenticator = Arc::new(Authenticator::new(config, issuer, audience)?);
            authenticator.spawn_refresh(config.jwks_refresh);
            Some(authenticator)
        }
        None => None,
    };
    let client_identities = config
        .client_ca
        .as_ref()
        .map(|_| config.allowed_client_identities.iter().cloned().collect());
    let authentication = Arc::new(AdminAuthentication {
        tokens,
        client_identities,
    });
    Ok(Router::new()
        .route("/admin/v1/logs", get(list_logs).post(add_log))
        .route("/admin/v1/logs/{origin_hash}/recosign", post(recosign))
        .layer(DefaultBodyLimit::max(MAX_ADMIN_BODY))
        // A route layer: only matched admin routes ask for credentials, before
        // any body is read.
        .route_layer(middleware::from_fn_with_state(
            authentication,
            require_administrator,
        )))
}

/// Lets the request through only for an administrator, and hands who it is
/// to the handler.
async fn require_administrator(
    State(authentication): State<Arc<AdminAuthentication>>,
    mut request: Request,
    next: Next,
) -> Result<Response, JsonError> {
    let peer = request.extensions().get::<PeerIdentities>();
    let administrator = authentication.authenticate(request.headers(), peer).await?;
    request.extensions_mut().insert(administrator);
    Ok(next.run(request).await)
}

impl AdminAuthentication {
    /// An allowed client certificate is enough (checked first: no network);
    /// else a bearer token, when tokens are accepted; else a certificate of an
    /// identity not allowed is 403, and no credentials at all 401.
    async fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: Option<&PeerIdentities>,
    ) -> Result<Administrator, GatewayError> {
        let presented = peer.map_or(&[][..], |peer| peer.0.as_slice());
        if let Some(allowed) = &self.client_identities
            && let Some(identity) = presented
                .iter()
                .find(|identity| allowed.contains(*identity))
        {
            return Ok(Administrator {
                subject: identity.clone(),
                method: "client_certificate",
            });
        }
        let missing = GatewayError::MissingCredentials {
            tokens: self.tokens.is_some(),
            certificates: self.client_identities.is_some(),
        };
        let token = self
            .tokens
            .as_ref()
            .map(|tokens| (tokens, bearer_token(headers)));
        match token {
            Some((tokens, Some(token))) => tokens.verify(token).await,
            // A verified certificate, but of nobody allowed (or naming no
            // identity). Without client certificate authentication configured
            // the listener asks for no certificate, so there is no peer then.
            _ if peer.is_some() => {
                tracing::warn!(
                    identities = ?presented,
                    "admin request with a client certificate of no allowed identity"
                );
                Err(GatewayError::Forbidden {
                    check: "identity_not_allowed",
                    reason: "the client certificate's identities may not administer this witness",
                })
            }
            _ => Err(missing),
        }
    }
}

/// The token of the one `Authorization: Bearer <token>` header, if there is
/// exactly one such header.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(axum::http::header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return None;
    }
    Some(token.trim())
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
) -> Result<Json<LogView>, JsonError> {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => GatewayError::BodyTooLarge {
            limit: MAX_ADMIN_BODY,
        },
        _ => GatewayError::BadRequest {
            reason: "the request body could not be read".into(),
        },
    })?;
    let body: AddLogBody = serde_json::from_slice(&body).map_err(|e| GatewayError::BadRequest {
        reason: format!("expected {{\"origin\"?, \"verifier_key\"}}: {e}"),
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
        .map_err(|status| GatewayError::from_admin_witness(&status))?
        .into_inner()
        .log
        .ok_or_else(|| GatewayError::BadUpstream {
            detail: "AddLog answered no log".into(),
        })?;
    tracing::info!(
        subject = %administrator.subject,
        method = administrator.method,
        origin = %log.origin,
        requested_origin = %origin,
        "admin: log added"
    );
    Ok(Json(LogView::from(log)))
}

async fn list_logs(
    State(gateway): State<Gateway>,
    Extension(_administrator): Extension<Administrator>,
) -> Result<Json<LogList>, JsonError> {
    let logs = trusted_logs(&gateway).await?;
    Ok(Json(LogList {
        logs: logs.into_iter().map(LogView::from).collect(),
    }))
}

async fn trusted_logs(gateway: &Gateway) -> Result<Vec<pb::Log>, GatewayError> {
    gateway
        .trusted_logs()
        .await
        .map_err(|status| GatewayError::from_admin_witness(&status))
}

async fn recosign(
    State(gateway): State<Gateway>,
    Extension(administrator): Extension<Administrator>,
    Path(hash): Path<String>,
) -> Result<Json<Recosigned>, JsonError> {
    if hash.len() != 64 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(GatewayError::BadRequest {
            reason: "the origin hash is not 64 lowercase hex digits".into(),
        }
        .into());
    }
    // Fresh from the witness (admin calls are rare): a log added a moment ago
    // is found.
    let origin = trusted_logs(&gateway)
        .await?
        .into_iter()
        .map(|log| log.origin)
        .find(|origin| origin_hash(origin) == hash)
        .ok_or(GatewayError::UnknownOrigin)?;
    let size = gateway
        .witness
        .clone()
        .recosign(pb::RecosignRequest {
            origin: origin.clone(),
        })
        .await
        .map_err(|status| GatewayError::from_admin_witness(&status))?
        .into_inner()
        .size
        .ok_or(GatewayError::NotFound)?;
    tracing::info!(
        subject = %administrator.subject,
        method = administrator.method,
        origin,
        size,
        "admin: re-cosigned"
    );
    Ok(Json(Recosigned { origin, size }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn config(issuer: &str) -> AdminConfig {
        AdminConfig::oidc(issuer, "rekor-witness")
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
    fn an_admin_api_without_any_authentication_method_is_refused() {
        let mut none = config("https://accounts.example.com");
        none.issuer = None;
        none.audience = None;
        let error = none.validate().unwrap_err();
        assert!(
            error.to_string().contains("no way to authenticate"),
            "{error}"
        );
        // Half a method is no method.
        let mut issuer_only = config("https://accounts.example.com");
        issuer_only.audience = None;
        assert!(issuer_only.validate().is_err());
        let certificates = AdminConfig::client_certificates("/ca.pem", ["uri:spiffe://w/admin"]);
        assert!(certificates.validate().is_ok());
        let mut subjects_without_issuer = certificates.clone();
        subjects_without_issuer.allowed_subjects = Some(vec!["admin".into()]);
        assert!(subjects_without_issuer.validate().is_err());
    }

    #[test]
    fn client_certificates_need_an_explicit_allowlist_of_well_formed_identities() {
        let no_identities = AdminConfig::client_certificates("/ca.pem", Vec::<String>::new());
        assert!(
            no_identities.validate().is_err(),
            "any certificate of the CA"
        );
        let mut identities_without_ca = config("https://accounts.example.com");
        identities_without_ca.allowed_client_identities = vec!["dns:admin.example".into()];
        assert!(identities_without_ca.validate().is_err());
        for bad in ["spiffe://w/admin", "uri:", "email:admin@example.com", ""] {
            let config = AdminConfig::client_certificates("/ca.pem", [bad]);
            assert!(config.validate().is_err(), "{bad:?}");
        }
        let both = AdminConfig {
            client_ca: Some("/ca.pem".into()),
            allowed_client_identities: vec!["dns:admin.example".into()],
            ..config("https://accounts.example.com")
        };
        assert!(both.validate().is_ok());
    }

    #[test]
    fn client_certificates_cannot_be_asked_for_over_plain_http() {
        let mut config = crate::GatewayConfig::new("http://127.0.0.1:1");
        config.admin = Some(AdminConfig::client_certificates(
            "/ca.pem",
            ["uri:spiffe://w/admin"],
        ));
        let error = config.validate().unwrap_err();
        assert!(
            error.to_string().contains("client_ca needs [tls]"),
            "{error}"
        );
        config.tls = Some(crate::transport::ServerTls::new("cert.pem", "key.pem"));
        assert!(config.validate().is_ok());
    }

    #[test]
    fn bearer_tokens_are_read_from_exactly_one_header() {
        let mut headers = HeaderMap::new();
        assert!(bearer_token(&headers).is_none());
        headers.insert("authorization", "Bearer abc.def.ghi".parse().unwrap());
        assert_eq!(bearer_token(&headers).unwrap(), "abc.def.ghi");
        headers.append("authorization", "Bearer other".parse().unwrap());
        assert!(bearer_token(&headers).is_none());
        let mut basic = HeaderMap::new();
        basic.insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
        assert!(bearer_token(&basic).is_none());
    }

    fn certificates_only() -> AdminAuthentication {
        AdminAuthentication {
            tokens: None,
            client_identities: Some(HashSet::from(["uri:spiffe://w/admin".to_owned()])),
        }
    }

    fn peer(identities: &[&str]) -> PeerIdentities {
        PeerIdentities(identities.iter().map(|i| (*i).to_owned()).collect())
    }

    #[tokio::test]
    async fn an_allowed_certificate_identity_is_an_administrator_and_others_are_forbidden() {
        let auth = certificates_only();
        let headers = HeaderMap::new();
        let admin = auth
            .authenticate(&headers, Some(&peer(&["dns:x", "uri:spiffe://w/admin"])))
            .await
            .unwrap();
        assert_eq!(admin.subject, "uri:spiffe://w/admin");
        assert_eq!(admin.method, "client_certificate");
        let other = auth
            .authenticate(&headers, Some(&peer(&["uri:spiffe://w/gateway"])))
            .await
            .unwrap_err();
        assert_eq!(other.status(), StatusCode::FORBIDDEN);
        // An identity differing only in case or by a prefix is another one.
        let near = auth
            .authenticate(
                &headers,
                Some(&peer(&["uri:SPIFFE://w/admin", "uri:spiffe://w/admin/x"])),
            )
            .await
            .unwrap_err();
        assert_eq!(near.status(), StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn without_tokens_configured_a_bearer_header_is_no_credential() {
        let auth = certificates_only();
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer abc.def.ghi".parse().unwrap());
        let error = auth.authenticate(&headers, None).await.unwrap_err();
        assert!(
            matches!(
                error,
                GatewayError::MissingCredentials {
                    tokens: false,
                    certificates: true
                }
            ),
            "{error:?}"
        );
        // A verified certificate naming no identity is nobody allowed.
        let certificate_of_nobody = auth.authenticate(&headers, Some(&peer(&[]))).await;
        assert_eq!(
            certificate_of_nobody.unwrap_err().status(),
            StatusCode::FORBIDDEN
        );
    }
}
