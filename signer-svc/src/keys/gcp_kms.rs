//! The `gcp-kms` backend: an asymmetric signing key version in Google Cloud KMS,
//! called through the official `google-cloud-kms-v1` client (HTTP/JSON over
//! rustls on aws-lc-rs).
//!
//! - Ed25519 (`EC_SIGN_ED25519`, cosigning): `AsymmetricSign` with `data` set to
//!   the message itself; KMS signs it with pure Ed25519.
//! - ECDSA P-256 (`EC_SIGN_P256_SHA256`, manifests): `AsymmetricSign` with
//!   `digest.sha256` set to SHA-256(message); KMS returns an ASN.1 DER signature.
//! - ML-DSA-44 is not offered by this backend (configuration error).
//!
//! Integrity, as Google documents for KMS: every sign request carries the CRC32C
//! of what it sends (`data_crc32c` or `digest_crc32c`), and the response is
//! accepted only if KMS says it verified that checksum
//! (`verified_data_crc32c` / `verified_digest_crc32c`), names the key version
//! asked for, and its `signature_crc32c` matches the signature received. On top
//! of that, every signature is verified locally against the public key fetched
//! at start-up before it leaves this backend, so a response from the wrong key
//! (or a corrupted one whose checksum happens to match) is never returned.
//!
//! The public key is fetched once, when the key is loaded (`GetPublicKey`); its
//! algorithm must be the configured one and its `pem_crc32c` must match.
//!
//! Credentials: with no `endpoint`, or an `https://` endpoint (regional or
//! private-service-connect endpoints), the client uses Application Default
//! Credentials (`GOOGLE_APPLICATION_CREDENTIALS`, the gcloud ADC file, or the
//! metadata server). An `http://` endpoint on a loopback address (`127.0.0.1`,
//! `[::1]`, `localhost`) is a local emulator or test server: the client then
//! sends no credentials at all (anonymous). Any other plaintext `http://`
//! endpoint is refused, so that bearer tokens never travel unencrypted.
//!
//! Failures are bounded: each attempt times out after [`ATTEMPT_TIMEOUT`], and a
//! call is tried at most [`MAX_ATTEMPTS`] times within [`RETRY_TIME_LIMIT`]
//! (connection failures and `UNAVAILABLE` are retried; signing the same message
//! again has no side effects).

use std::time::Duration;

use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
use google_cloud_gax::options::RequestOptionsBuilder as _;
use google_cloud_gax::retry_policy::{Aip194Strict, RetryPolicyExt as _};
use google_cloud_kms_v1::client::KeyManagementService;
use google_cloud_kms_v1::model::Digest;
use google_cloud_kms_v1::model::crypto_key_version::CryptoKeyVersionAlgorithm;
use sha2::{Digest as _, Sha256};

use super::{Algorithm, BoxFuture, SigningKey};
use crate::error::{Error, Result};

/// How long one HTTP attempt may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many attempts one call may make.
pub const MAX_ATTEMPTS: u32 = 3;
/// The total time one call may spend retrying.
pub const RETRY_TIME_LIMIT: Duration = Duration::from_secs(20);

/// A KMS key version that signs.
pub struct GcpKmsKey {
    client: KeyManagementService,
    key_version: String,
    algorithm: Algorithm,
    /// 32 raw bytes (Ed25519) or DER SubjectPublicKeyInfo (P-256).
    public: Vec<u8>,
    verifier: Verifier,
}

enum Verifier {
    Ed25519(ed25519_dalek::VerifyingKey),
    EcdsaP256(p256::ecdsa::VerifyingKey),
}

/// Which credentials a client uses for an endpoint (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialsChoice {
    /// Application Default Credentials.
    ApplicationDefault,
    /// No credentials: a local emulator or test server on a loopback address.
    Anonymous,
}

/// Decides the credentials for an endpoint override, refusing plaintext
/// endpoints that are not on a loopback address.
pub fn credentials_for(endpoint: Option<&str>) -> Result<CredentialsChoice> {
    let Some(endpoint) = endpoint else {
        return Ok(CredentialsChoice::ApplicationDefault);
    };
    if endpoint.starts_with("https://") {
        return Ok(CredentialsChoice::ApplicationDefault);
    }
    if let Some(rest) = endpoint.strip_prefix("http://") {
        let authority = rest.split('/').next().unwrap_or_default();
        let host = if let Some(bracketed) = authority.strip_prefix('[') {
            bracketed.split(']').next().unwrap_or_default()
        } else {
            authority.split(':').next().unwrap_or_default()
        };
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|address| address.is_loopback());
        if loopback {
            return Ok(CredentialsChoice::Anonymous);
        }
        return Err(Error::Config(format!(
            "gcp-kms endpoint {endpoint:?}: plaintext http is only allowed on a loopback address"
        )));
    }
    Err(Error::Config(format!(
        "gcp-kms endpoint {endpoint:?} must be an https:// URL (or http:// on a loopback address)"
    )))
}

/// Checks the shape of a key version name before any call is made.
fn check_key_version_name(key_version: &str) -> Result<()> {
    let parts: Vec<&str> = key_version.split('/').collect();
    let literals = [
        "projects",
        "locations",
        "keyRings",
        "cryptoKeys",
        "cryptoKeyVersions",
    ];
    let well_formed = parts.len() == 10
        && parts
            .chunks(2)
            .zip(literals)
            .all(|(pair, literal)| pair[0] == literal && !pair[1].is_empty());
    if well_formed {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "gcp-kms key_version {key_version:?} must be \
             projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>/cryptoKeyVersions/<v>"
        )))
    }
}

fn kms_algorithm(algorithm: Algorithm) -> Result<CryptoKeyVersionAlgorithm> {
    match algorithm {
        Algorithm::Ed25519 => Ok(CryptoKeyVersionAlgorithm::EcSignEd25519),
        Algorithm::EcdsaP256 => Ok(CryptoKeyVersionAlgorithm::EcSignP256Sha256),
        Algorithm::MlDsa44 => Err(Error::Config(
            "the gcp-kms backend does not support ML-DSA-44 keys; use the file backend".into(),
        )),
    }
}

fn crc32c(bytes: &[u8]) -> i64 {
    i64::from(::crc32c::crc32c(bytes))
}

/// Builds the KMS client for an endpoint override.
async fn client(endpoint: Option<&str>) -> Result<KeyManagementService> {
    let credentials = match credentials_for(endpoint)? {
        CredentialsChoice::Anonymous => {
            google_cloud_auth::credentials::anonymous::Builder::new().build()
        }
        CredentialsChoice::ApplicationDefault => google_cloud_auth::credentials::Builder::default()
            .build()
            .map_err(|e| {
                Error::Config(format!("gcp-kms: no Application Default Credentials: {e}"))
            })?,
    };
    let backoff = ExponentialBackoffBuilder::new()
        .with_initial_delay(Duration::from_millis(100))
        .with_maximum_delay(Duration::from_secs(2))
        .build()
        .map_err(|e| Error::Config(format!("gcp-kms backoff: {e}")))?;
    let mut builder = KeyManagementService::builder()
        .with_credentials(credentials)
        .with_attempt_timeout(ATTEMPT_TIMEOUT)
        .with_retry_policy(
            Aip194Strict
                .with_attempt_limit(MAX_ATTEMPTS)
                .with_time_limit(RETRY_TIME_LIMIT),
        )
        .with_backoff_policy(backoff);
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    builder
        .build()
        .await
        .map_err(|e| Error::Config(format!("gcp-kms client: {e}")))
}

impl GcpKmsKey {
    /// Connects to KMS, fetches the key version's public key and checks that it
    /// is a key of `algorithm`.
    pub async fn connect(
        key_version: &str,
        endpoint: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<GcpKmsKey> {
        let expected = kms_algorithm(algorithm)?;
        check_key_version_name(key_version)?;
        let client = client(endpoint).await?;
        let response = client
            .get_public_key()
            .set_name(key_version)
            .send()
            .await
            .map_err(|e| load_error(key_version, &e))?;
        if response.name != key_version {
            return Err(Error::Backend(format!(
                "gcp-kms GetPublicKey for {key_version} answered for {:?}",
                response.name
            )));
        }
        if response.pem_crc32c != Some(crc32c(response.pem.as_bytes())) {
            return Err(Error::Backend(format!(
                "gcp-kms GetPublicKey for {key_version}: pem_crc32c does not match the PEM received"
            )));
        }
        if response.algorithm != expected {
            return Err(Error::Config(format!(
                "gcp-kms key {key_version} is {:?}, but the configuration needs {} ({:?})",
                response.algorithm.name().unwrap_or("an unknown algorithm"),
                algorithm.label(),
                expected.name().unwrap_or_default(),
            )));
        }
        let bad_pem = |what: &str| {
            Error::Backend(format!(
                "gcp-kms public key of {key_version}: not a {what} PEM key"
            ))
        };
        let (public, verifier) = match algorithm {
            Algorithm::Ed25519 => {
                use ed25519_dalek::pkcs8::DecodePublicKey as _;
                let key = ed25519_dalek::VerifyingKey::from_public_key_pem(&response.pem)
                    .map_err(|_| bad_pem("Ed25519"))?;
                (key.as_bytes().to_vec(), Verifier::Ed25519(key))
            }
            Algorithm::EcdsaP256 => {
                use p256::pkcs8::{DecodePublicKey as _, EncodePublicKey as _};
                let key = p256::ecdsa::VerifyingKey::from_public_key_pem(&response.pem)
                    .map_err(|_| bad_pem("P-256"))?;
                let der = key
                    .to_public_key_der()
                    .map_err(|_| bad_pem("P-256"))?
                    .into_vec();
                (der, Verifier::EcdsaP256(key))
            }
            Algorithm::MlDsa44 => unreachable!("refused by kms_algorithm"),
        };
        tracing::info!(
            key_version,
            algorithm = algorithm.label(),
            protection_level = response.protection_level.name().unwrap_or("unknown"),
            "gcp-kms key loaded"
        );
        Ok(GcpKmsKey {
            client,
            key_version: key_version.to_owned(),
            algorithm,
            public,
            verifier,
        })
    }

    /// The key version's resource name.
    pub fn key_version(&self) -> &str {
        &self.key_version
    }

    async fn sign_now(&self, message: &[u8]) -> Result<Vec<u8>> {
        let request = self
            .client
            .asymmetric_sign()
            .set_name(&self.key_version)
            // Signing has no side effects in KMS, so UNAVAILABLE may be retried.
            .with_idempotency(true);
        let request = match self.algorithm {
            Algorithm::Ed25519 => request
                .set_data(message.to_vec())
                .set_data_crc32c(crc32c(message)),
            Algorithm::EcdsaP256 => {
                let digest = Sha256::digest(message);
                request
                    .set_digest(Digest::new().set_sha256(digest.to_vec()))
                    .set_digest_crc32c(crc32c(&digest))
            }
            Algorithm::MlDsa44 => unreachable!("refused at load time"),
        };
        let response = request.send().await.map_err(|e| {
            Error::Backend(format!(
                "gcp-kms AsymmetricSign with {}: {e}",
                self.key_version
            ))
        })?;
        let integrity = |what: &str| {
            Error::Backend(format!(
                "gcp-kms AsymmetricSign with {}: integrity check failed: {what}",
                self.key_version
            ))
        };
        let verified_request = match self.algorithm {
            Algorithm::Ed25519 => response.verified_data_crc32c,
            _ => response.verified_digest_crc32c,
        };
        if !verified_request {
            return Err(integrity("KMS did not verify the request checksum"));
        }
        if response.name != self.key_version {
            return Err(integrity("the response names another key version"));
        }
        if response.signature_crc32c != Some(crc32c(&response.signature)) {
            return Err(integrity(
                "signature_crc32c does not match the signature received",
            ));
        }
        let signature = response.signature.to_vec();
        if !self.verifies(message, &signature) {
            return Err(integrity(
                "the signature does not verify with the key version's public key",
            ));
        }
        Ok(signature)
    }

    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.verifier {
            Verifier::Ed25519(key) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|signature| key.verify_strict(message, &signature).is_ok()),
            Verifier::EcdsaP256(key) => {
                use p256::ecdsa::signature::Verifier as _;
                p256::ecdsa::DerSignature::try_from(signature)
                    .is_ok_and(|signature| key.verify(message, &signature).is_ok())
            }
        }
    }
}

/// Maps a failure to fetch the public key: a key version that does not exist or
/// cannot be used is a configuration error; anything else is the backend's.
fn load_error(key_version: &str, error: &google_cloud_kms_v1::Error) -> Error {
    match error.status().map(|status| status.code) {
        Some(Code::NotFound) => Error::Config(format!(
            "gcp-kms key version {key_version} not found: {error}"
        )),
        Some(Code::PermissionDenied | Code::Unauthenticated) => Error::Config(format!(
            "gcp-kms key version {key_version}: permission denied (needs roles/cloudkms.signerVerifier \
             and roles/cloudkms.publicKeyViewer): {error}"
        )),
        Some(Code::FailedPrecondition) => Error::Config(format!(
            "gcp-kms key version {key_version} cannot be used (disabled or destroyed?): {error}"
        )),
        _ => Error::Backend(format!("gcp-kms GetPublicKey for {key_version}: {error}")),
    }
}

impl SigningKey for GcpKmsKey {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    fn public_key(&self) -> &[u8] {
        &self.public
    }

    fn sign<'a>(&'a self, message: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(self.sign_now(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_follow_the_endpoint() {
        use CredentialsChoice::*;
        assert_eq!(credentials_for(None).unwrap(), ApplicationDefault);
        assert_eq!(
            credentials_for(Some("https://cloudkms.googleapis.com")).unwrap(),
            ApplicationDefault
        );
        assert_eq!(
            credentials_for(Some("http://127.0.0.1:8080")).unwrap(),
            Anonymous
        );
        assert_eq!(
            credentials_for(Some("http://localhost:8080/")).unwrap(),
            Anonymous
        );
        assert_eq!(
            credentials_for(Some("http://[::1]:8080")).unwrap(),
            Anonymous
        );
        assert!(credentials_for(Some("http://10.0.0.1:8080")).is_err());
        assert!(credentials_for(Some("http://kms.example")).is_err());
        assert!(credentials_for(Some("ftp://127.0.0.1")).is_err());
    }

    #[test]
    fn key_version_names_are_checked() {
        assert!(
            check_key_version_name(
                "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1"
            )
            .is_ok()
        );
        assert!(check_key_version_name("projects/p/locations/l/keyRings/r/cryptoKeys/k").is_err());
        assert!(
            check_key_version_name(
                "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/"
            )
            .is_err()
        );
        assert!(
            check_key_version_name("projects/p/locations/l/keyRings/r/cryptoKeys/k/versions/1")
                .is_err()
        );
    }

    #[test]
    fn crc32c_is_castagnoli() {
        // RFC 3720, B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
    }
}
