//! OIDC bearer-token verification for the admin API.
//!
//! The issuer's discovery document (`<issuer>/.well-known/openid-configuration`)
//! names its JWKS; both are fetched at startup, again every `jwks_refresh`, and
//! when a token names a key id the cached set lacks (at most once per
//! [`MIN_FETCH_INTERVAL`], so a flood of made-up key ids costs the issuer one
//! fetch per interval). A token is accepted only if
//!
//! - its header `alg` is an asymmetric signature algorithm ([`ACCEPTED_ALGORITHMS`]):
//!   `none` and HMAC are refused before any key is looked at, so a token
//!   "signed" with HS256 using the issuer's public key as the secret (the
//!   classic key-confusion attack) never reaches a verifier;
//! - its `kid` names a key of the issuer's JWKS, and that key's type (and
//!   curve, and `alg` when the JWK states one) fixes the one algorithm the
//!   token may use; symmetric (`oct`) JWKs are never loaded;
//! - the signature verifies, `iss` equals the configured issuer, `aud` contains
//!   the configured audience, `exp` is in the future and `nbf` (if present) in
//!   the past, each within [`CLOCK_LEEWAY`];
//! - its `sub` is allowed (when `allowed_subjects` is configured; else 403).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::Url;
use serde::Deserialize;

use super::{AdminConfig, Administrator};
use crate::GatewayError;

/// Clock skew tolerated on `exp` and `nbf`: enough for an NTP-synchronised
/// issuer and gateway, short enough that an expired token is dead within half a
/// minute.
pub(crate) const CLOCK_LEEWAY: Duration = Duration::from_secs(30);

/// The shortest time between two JWKS fetches triggered by tokens (unknown key
/// ids, or no key set loaded yet).
pub(crate) const MIN_FETCH_INTERVAL: Duration = Duration::from_secs(10);

/// The only algorithms a token may name: asymmetric signatures that
/// `jsonwebtoken` verifies. `none` and `HS*` are absent on purpose.
pub(crate) const ACCEPTED_ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Tokens longer than this are refused unread: ID and access tokens of common
/// issuers are 1 to 2 KiB; 8 KiB leaves room for large claim sets.
pub(crate) const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Discovery documents are a few KiB.
const MAX_DISCOVERY_SIZE: usize = 64 * 1024;

/// A JWKS holds a handful of keys (about 0.5 KiB each for RSA-2048).
const MAX_JWKS_SIZE: usize = 256 * 1024;

/// A fetch of the discovery document or JWKS gives up after this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// One verification key of the issuer, with the one algorithm it verifies.
struct TrustedKey {
    algorithm: Algorithm,
    key: DecodingKey,
}

/// The issuer's keys by key id, as last fetched.
#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<TrustedKey>>,
    /// Whether a fetch ever succeeded.
    loaded: bool,
}

/// Verifies bearer tokens against one issuer.
pub(crate) struct Authenticator {
    issuer: String,
    audience: String,
    allowed_subjects: Option<HashSet<String>>,
    discovery: Url,
    http: reqwest::Client,
    // A std lock: held only to read or swap the map, never across an await.
    keys: RwLock<Arc<KeySet>>,
    // A tokio mutex: held across the fetch, so concurrent misses share one
    // fetch. Holds when the last fetch started.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

/// Whether `url` is `https`, or `http` to a loopback host (a local issuer).
pub(crate) fn https_or_loopback(url: &Url) -> bool {
    match url.scheme() {
        "https" => url.host_str().is_some(),
        "http" => match url.host_str() {
            Some("localhost") => true,
            Some(host) => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()),
            None => false,
        },
        _ => false,
    }
}

impl Authenticator {
    /// An authenticator for a validated configuration's `issuer` and
    /// `audience`; no network yet.
    pub(crate) fn new(
        config: &AdminConfig,
        issuer: &str,
        audience: &str,
    ) -> Result<Authenticator, GatewayError> {
        let config_error = |detail: String| GatewayError::Config {
            detail: format!("[admin] {detail}"),
        };
        // OpenID Connect Discovery 1.0, section 4: the issuer with any trailing
        // slash removed, then the well-known path.
        let discovery = Url::parse(&format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        ))
        .map_err(|e| config_error(format!("issuer {issuer:?}: {e}")))?;
        let http = reqwest::Client::builder()
            // The issuer's documents are served where the issuer says; a
            // redirect elsewhere (or to plain HTTP) is not followed.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| config_error(format!("HTTP client: {e}")))?;
        Ok(Authenticator {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            allowed_subjects: config
                .allowed_subjects
                .as_ref()
                .map(|subjects| subjects.iter().cloned().collect()),
            discovery,
            http,
            keys: RwLock::new(Arc::new(KeySet::default())),
            fetching: tokio::sync::Mutex::new(None),
        })
    }

    /// Fetches the keys now and then every `every`, until the authenticator
    /// is dropped (with the router that holds it). Without a tokio runtime
    /// (a router built outside one) keys are fetched on first use only.
    pub(crate) fn spawn_refresh(self: &Arc<Self>, every: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this: Weak<Authenticator> = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                match this.upgrade() {
                    Some(authenticator) => authenticator.refresh().await,
                    None => return,
                }
                tokio::time::sleep(every).await;
            }
        });
    }

    async fn refresh(&self) {
        let mut last = self.fetching.lock().await;
        *last = Some(Instant::now());
        if let Err(detail) = self.fetch().await {
            tracing::warn!(issuer = %self.issuer, error = %detail, "OIDC keys not refreshed");
        }
    }

    fn key_set(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The key `kid`, fetching the JWKS again if it is unknown and the last
    /// fetch is old enough.
    async fn key(&self, kid: &str) -> Result<Arc<TrustedKey>, GatewayError> {
        if let Some(key) = self.key_set().by_kid.get(kid) {
            return Ok(key.clone());
        }
        let mut last = self.fetching.lock().await;
        // Fetched by another request while this one waited?
        let keys = self.key_set();
        if let Some(key) = keys.by_kid.get(kid) {
            return Ok(key.clone());
        }
        let recent = last.is_some_and(|at| at.elapsed() < MIN_FETCH_INTERVAL);
        if !recent {
            *last = Some(Instant::now());
            if let Err(detail) = self.fetch().await {
                tracing::warn!(issuer = %self.issuer, error = %detail, "OIDC keys not fetched");
            }
        }
        let keys = self.key_set();
        match keys.by_kid.get(kid) {
            Some(key) => Ok(key.clone()),
            None if !keys.loaded => Err(GatewayError::IssuerUnavailable),
            None => Err(unauthorized(
                "unknown_kid",
                "no key of the issuer has this key id",
            )),
        }
    }

    /// Fetches the discovery document and the JWKS it names, and replaces the
    /// cached keys. On failure the previous keys stay.
    async fn fetch(&self) -> Result<(), String> {
        let body = self.get(&self.discovery, MAX_DISCOVERY_SIZE).await?;
        let discovery: DiscoveryDocument = serde_json::from_slice(&body)
            .map_err(|e| format!("discovery document {}: {e}", self.discovery))?;
        if discovery.issuer != self.issuer {
            return Err(format!(
                "discovery document names issuer {:?}, not the configured {:?}",
                discovery.issuer, self.issuer
            ));
        }
        let jwks_uri = Url::parse(&discovery.jwks_uri)
            .map_err(|e| format!("jwks_uri {:?}: {e}", discovery.jwks_uri))?;
        if !https_or_loopback(&jwks_uri) {
            return Err(format!(
                "jwks_uri {jwks_uri} is neither https nor http on loopback"
            ));
        }
        let body = self.get(&jwks_uri, MAX_JWKS_SIZE).await?;
        let set: RawKeySet =
            serde_json::from_slice(&body).map_err(|e| format!("JWKS {jwks_uri}: {e}"))?;
        let keys = usable_keys(set.keys);
        tracing::info!(issuer = %self.issuer, keys = keys.len(), "OIDC keys loaded");
        *self
            .keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(KeySet {
            by_kid: keys,
            loaded: true,
        });
        Ok(())
    }

    /// GETs a JSON document of at most `max` bytes.
    async fn get(&self, url: &Url, max: usize) -> Result<Vec<u8>, String> {
        let mut response = self
            .http
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url}: HTTP {}", response.status()));
        }
        if response
            .content_length()
            .is_some_and(|len| len > max as u64)
        {
            return Err(format!("{url}: over {max} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("{url}: {e}"))? {
            if body.len() + chunk.len() > max {
                return Err(format!("{url}: over {max} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Verifies a bearer token; see the module documentation for the checks.
    pub(crate) async fn verify(&self, token: &str) -> Result<Administrator, GatewayError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(unauthorized("malformed_token", "the token is too long"));
        }
        let header = raw_header(token)?;
        if !ACCEPTED_ALGORITHMS.contains(&header.alg.as_str()) {
            return Err(unauthorized(
                "algorithm_not_accepted",
                "only asymmetric signature algorithms are accepted (no none, no HMAC)",
            ));
        }
        let kid = header
            .kid
            .ok_or(unauthorized("missing_kid", "the token names no key id"))?;
        let key = self.key(&kid).await?;
        if header.alg != algorithm_name(key.algorithm) {
            return Err(unauthorized(
                "algorithm_mismatch",
                "the token's algorithm is not its key's",
            ));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = CLOCK_LEEWAY.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| refusal(e.kind()))?
            .claims;
        if claims.iss.as_deref() != Some(self.issuer.as_str()) {
            return Err(unauthorized(
                "wrong_issuer",
                "the token is from another issuer",
            ));
        }
        let subject = claims.sub.ok_or(unauthorized(
            "missing_claim",
            "the token lacks one of exp, iss, aud and sub",
        ))?;
        if let Some(allowed) = &self.allowed_subjects
            && !allowed.contains(&subject)
        {
            tracing::warn!(subject, "admin request by a subject not allowed");
            return Err(GatewayError::Forbidden {
                check: "subject_not_allowed",
                reason: "the token's subject may not administer this witness",
            });
        }
        Ok(Administrator {
            subject,
            method: "token",
        })
    }
}

/// The claims the admin API reads; `exp`, `nbf` and `aud` are checked by
/// `jsonwebtoken`'s validation.
#[derive(Deserialize)]
struct Claims {
    /// One string (RFC 7519, section 4.1.1): `jsonwebtoken` would also accept
    /// an array containing the issuer. Optional here so that a missing claim
    /// is reported as such by the validation, which requires it.
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    sub: Option<String>,
}

#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    jwks_uri: String,
}

/// The JWKS with each key still raw, so one key of an unknown or malformed
/// shape does not void the others.
#[derive(Deserialize)]
struct RawKeySet {
    keys: Vec<serde_json::Value>,
}

/// The JOSE header fields read before any verification: the algorithm as a
/// string (so `none` and unknown names are refused by name, not by a parser
/// error) and the key id.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

fn raw_header(token: &str) -> Result<RawHeader, GatewayError> {
    use base64::Engine as _;
    let malformed = || unauthorized("malformed_token", "the token is not a JWS");
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| malformed())?;
    serde_json::from_slice(&json).map_err(|_| malformed())
}

/// The JOSE name of an accepted algorithm.
fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
        // Never the algorithm of a trusted key (see `trusted_key`).
        _ => "refused",
    }
}

/// The keys of a JWKS that can verify tokens, by key id. Keys without a key
/// id, for encryption, symmetric, of unsupported curves, or whose key id
/// appears twice (which key would a token mean?) are left out.
fn usable_keys(raw: Vec<serde_json::Value>) -> HashMap<String, Arc<TrustedKey>> {
    let mut keys = HashMap::new();
    let mut duplicated = HashSet::new();
    for value in raw {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            tracing::warn!("a JWKS entry that is not a JWK is ignored");
            continue;
        };
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        let Some(key) = trusted_key(&jwk) else {
            tracing::debug!(kid, "a JWK that cannot verify signatures is ignored");
            continue;
        };
        if keys.insert(kid.clone(), Arc::new(key)).is_some() {
            duplicated.insert(kid);
        }
    }
    for kid in duplicated {
        tracing::warn!(kid, "a key id appearing twice in the JWKS is ignored");
        keys.remove(&kid);
    }
    keys
}

/// The one algorithm a JWK verifies, fixed by its key type and curve (and its
/// `alg`, which must agree when present), with its decoding key.
fn trusted_key(jwk: &Jwk) -> Option<TrustedKey> {
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|usage| *usage != PublicKeyUse::Signature)
    {
        return None;
    }
    let stated = jwk.common.key_algorithm;
    let algorithm = match (&jwk.algorithm, stated) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::RS384)) => Algorithm::RS384,
        (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::RS512)) => Algorithm::RS512,
        (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::PS256)) => Algorithm::PS256,
        (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::PS384)) => Algorithm::PS384,
        (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::PS512)) => Algorithm::PS512,
        (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
            if ec.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES384))
            if ec.curve == EllipticCurve::P384 =>
        {
            Algorithm::ES384
        }
        (AlgorithmParameters::OctetKeyPair(okp), None | Some(KeyAlgorithm::EdDSA))
            if okp.curve == EllipticCurve::Ed25519 =>
        {
            Algorithm::EdDSA
        }
        // Symmetric keys (`oct`), encryption algorithms, other curves.
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(TrustedKey { algorithm, key })
}

/// A token refused by the check `check`.
fn unauthorized(check: &'static str, reason: &'static str) -> GatewayError {
    GatewayError::Unauthorized { check, reason }
}

/// The refusal of a token `jsonwebtoken` did not accept.
fn refusal(kind: &ErrorKind) -> GatewayError {
    let (code, reason) = match kind {
        ErrorKind::InvalidSignature => ("bad_signature", "the signature does not verify"),
        ErrorKind::ExpiredSignature => ("token_expired", "the token has expired"),
        ErrorKind::ImmatureSignature => ("token_not_yet_valid", "the token is not valid yet"),
        ErrorKind::InvalidIssuer => ("wrong_issuer", "the token is from another issuer"),
        ErrorKind::InvalidAudience => ("wrong_audience", "the token is for another audience"),
        ErrorKind::MissingRequiredClaim(_) => (
            "missing_claim",
            "the token lacks one of exp, iss, aud and sub",
        ),
        ErrorKind::InvalidAlgorithm => (
            "algorithm_mismatch",
            "the token's algorithm is not its key's",
        ),
        _ => ("invalid_token", "the token is malformed or does not verify"),
    };
    unauthorized(code, reason)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_https_or_loopback_http_issuers_are_accepted() {
        for good in [
            "https://issuer.example.com",
            "http://127.0.0.1:8080",
            "http://[::1]:9000/realm",
            "http://localhost:1234",
        ] {
            assert!(https_or_loopback(&Url::parse(good).unwrap()), "{good}");
        }
        for bad in [
            "http://issuer.example.com",
            "http://10.0.0.1",
            "ftp://127.0.0.1",
            "file:///etc/passwd",
        ] {
            assert!(!https_or_loopback(&Url::parse(bad).unwrap()), "{bad}");
        }
    }

    #[test]
    fn symmetric_and_encryption_keys_are_never_trusted() {
        let oct: Jwk =
            serde_json::from_str(r#"{"kty":"oct","kid":"k","k":"c2VjcmV0","alg":"HS256"}"#)
                .unwrap();
        assert!(trusted_key(&oct).is_none());
        let enc: Jwk = serde_json::from_str(
            r#"{"kty":"EC","kid":"k","use":"enc","crv":"P-256",
                "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#,
        )
        .unwrap();
        assert!(trusted_key(&enc).is_none());
        let sig: Jwk = serde_json::from_str(
            r#"{"kty":"EC","kid":"k","crv":"P-256",
                "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#,
        )
        .unwrap();
        assert_eq!(trusted_key(&sig).unwrap().algorithm, Algorithm::ES256);
    }

    #[test]
    fn a_jwk_alg_disagreeing_with_its_key_type_voids_the_key() {
        let rsa_as_es256: Jwk =
            serde_json::from_str(r#"{"kty":"RSA","kid":"k","alg":"ES256","n":"AQAB","e":"AQAB"}"#)
                .unwrap();
        assert!(trusted_key(&rsa_as_es256).is_none());
        let rsa_as_hs256: Jwk =
            serde_json::from_str(r#"{"kty":"RSA","kid":"k","alg":"HS256","n":"AQAB","e":"AQAB"}"#)
                .unwrap();
        assert!(trusted_key(&rsa_as_hs256).is_none());
    }

    #[test]
    fn duplicated_key_ids_are_dropped() {
        let ec = serde_json::json!({"kty":"EC","kid":"same","crv":"P-256",
            "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
        let mut other = ec.clone();
        other["kid"] = "other".into();
        let keys = usable_keys(vec![ec.clone(), ec, other]);
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["other"]);
    }

    #[test]
    fn none_and_hmac_headers_are_read_by_name() {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64("{}"));
        assert_eq!(raw_header(&token).ok().unwrap().alg, "none");
        assert!(!ACCEPTED_ALGORITHMS.contains(&"none"));
        assert!(!ACCEPTED_ALGORITHMS.iter().any(|a| a.starts_with("HS")));
        assert!(raw_header("a.b").is_err());
        assert!(raw_header("a.b.c.d").is_err());
    }
}
