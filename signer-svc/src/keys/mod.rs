//! Key backends. Every backend holds one private key and signs messages the
//! service built; the same test suite runs against each backend.
//!
//! - `file`: PKCS#8 PEM files (Ed25519, ML-DSA-44, ECDSA P-256); the air-gap
//!   offline key is this backend.
//! - `pkcs11` and `gcp-kms`: hardware and cloud custody.

pub mod file;
pub mod gcp_kms;
pub mod pkcs11;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;

use crate::error::Result;

/// A boxed future, so that backends with network calls fit one object-safe trait.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One signature of [`SigningKey::sign_all`], with the time the backend took
/// to make it.
pub type TimedSignature = (Result<Vec<u8>>, Duration);

/// How many signatures [`SigningKey::sign_all`] has in flight at once by
/// default: enough to keep a PKCS#11 session pool or a KMS connection pool busy
/// without opening hundreds of requests for one batch.
pub const MAX_CONCURRENT_SIGNATURES: usize = 16;

/// What a key signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// Pure Ed25519 (RFC 8032) over the message.
    Ed25519,
    /// ML-DSA-44 (FIPS 204, empty context) over the message.
    MlDsa44,
    /// ECDSA P-256 over SHA-256 of the message; ASN.1 DER signature.
    EcdsaP256,
}

impl Algorithm {
    /// The label used in `PublicKeys` and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::MlDsa44 => "ml-dsa-44",
            Algorithm::EcdsaP256 => "ecdsa-p256",
        }
    }
}

/// A private key in some custody. Only the service calls `sign`, and only over
/// messages it constructed from validated fields.
pub trait SigningKey: Send + Sync + 'static {
    /// The signature algorithm.
    fn algorithm(&self) -> Algorithm;
    /// The public key: 32 raw bytes (Ed25519), 1312 bytes (ML-DSA-44), or the DER
    /// SubjectPublicKeyInfo (ECDSA P-256).
    fn public_key(&self) -> &[u8];
    /// Signs `message`, returning the raw signature (DER for ECDSA).
    fn sign<'a>(&'a self, message: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>>>;

    /// Signs every message, in parallel where the backend allows, returning the
    /// results in the order of `messages`. By default up to
    /// [`MAX_CONCURRENT_SIGNATURES`] calls of [`SigningKey::sign`] are in
    /// flight at once; backends that sign on this machine's CPUs spread the
    /// work over its cores instead.
    fn sign_all(
        self: Arc<Self>,
        messages: Vec<Vec<u8>>,
    ) -> BoxFuture<'static, Vec<TimedSignature>> {
        Box::pin(async move {
            futures::stream::iter(messages)
                .map(|message| {
                    let key = self.clone();
                    async move {
                        let started = Instant::now();
                        let signature = key.sign(&message).await;
                        (signature, started.elapsed())
                    }
                })
                .buffered(MAX_CONCURRENT_SIGNATURES)
                .collect()
                .await
        })
    }
}

/// The PEM SubjectPublicKeyInfo of a key, where its algorithm has one.
pub fn public_key_pem(key: &dyn SigningKey) -> Option<String> {
    use ed25519_dalek::pkcs8::EncodePublicKey as _;
    use p256::pkcs8::LineEnding;
    match key.algorithm() {
        Algorithm::Ed25519 => {
            let bytes: [u8; 32] = key.public_key().try_into().ok()?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok()?;
            key.to_public_key_pem(LineEnding::LF).ok()
        }
        Algorithm::EcdsaP256 => {
            use p256::pkcs8::DecodePublicKey as _;
            let key = p256::ecdsa::VerifyingKey::from_public_key_der(key.public_key()).ok()?;
            key.to_public_key_pem(LineEnding::LF).ok()
        }
        Algorithm::MlDsa44 => None,
    }
}
