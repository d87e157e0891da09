//! The `file` backend: a PKCS#8 PEM private key on disk, readable by the owner
//! only. The key is read once at start-up and held in memory.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use ed25519_dalek::Signer as _;
use ml_dsa::MlDsa44;

use super::{Algorithm, BoxFuture, SigningKey, TimedSignature};
use crate::error::{Error, Result};

/// The cores to spread a batch of signatures over (read once: on Linux the
/// answer comes from cgroup files).
fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// A key loaded from a file.
pub struct FileKey {
    secret: Secret,
    public: Vec<u8>,
}

enum Secret {
    Ed25519(Box<ed25519_dalek::SigningKey>),
    MlDsa44(Box<ml_dsa::ExpandedSigningKey<MlDsa44>>),
    EcdsaP256(Box<p256::ecdsa::SigningKey>),
}

/// Refuses key files that others than their owner can access, except a
/// root-owned group-readable file (a Kubernetes Secret mount); see
/// [`witness_core::secret_file`].
#[cfg(unix)]
pub fn check_private_file_mode(path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let metadata = std::fs::metadata(path)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
    if let Some(problem) =
        witness_core::secret_file::secret_file_mode_problem(metadata.mode(), metadata.uid())
    {
        return Err(Error::Config(format!(
            "private key {}: {problem}",
            path.display()
        )));
    }
    Ok(())
}

impl FileKey {
    /// Loads a PKCS#8 PEM private key of the given algorithm, refusing files that
    /// are group or world accessible.
    pub fn load(path: &Path, algorithm: Algorithm) -> Result<FileKey> {
        check_private_file_mode(path)?;
        let pem = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        FileKey::from_pkcs8_pem(&pem, algorithm)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Parses a PKCS#8 PEM private key.
    pub fn from_pkcs8_pem(pem: &str, algorithm: Algorithm) -> Result<FileKey> {
        use ed25519_dalek::pkcs8::DecodePrivateKey as _;
        let bad = |what: &str| Error::Config(format!("not a PKCS#8 {what} private key"));
        Ok(match algorithm {
            Algorithm::Ed25519 => {
                let key =
                    ed25519_dalek::SigningKey::from_pkcs8_pem(pem).map_err(|_| bad("Ed25519"))?;
                FileKey {
                    public: key.verifying_key().as_bytes().to_vec(),
                    secret: Secret::Ed25519(Box::new(key)),
                }
            }
            Algorithm::MlDsa44 => {
                let key = ml_dsa::SigningKey::<MlDsa44>::from_pkcs8_pem(pem)
                    .map_err(|_| bad("ML-DSA-44"))?;
                let expanded = ml_dsa::ExpandedSigningKey::<MlDsa44>::from_seed(&key.to_seed());
                FileKey {
                    public: expanded.verifying_key().encode().to_vec(),
                    secret: Secret::MlDsa44(Box::new(expanded)),
                }
            }
            Algorithm::EcdsaP256 => {
                use p256::pkcs8::EncodePublicKey as _;
                let key = p256::ecdsa::SigningKey::from_pkcs8_pem(pem).map_err(|_| bad("P-256"))?;
                let public = key
                    .verifying_key()
                    .to_public_key_der()
                    .map_err(|_| bad("P-256"))?
                    .into_vec();
                FileKey {
                    public,
                    secret: Secret::EcdsaP256(Box::new(key)),
                }
            }
        })
    }

    fn sign_now(&self, message: &[u8]) -> Result<Vec<u8>> {
        Ok(match &self.secret {
            Secret::Ed25519(key) => key.sign(message).to_bytes().to_vec(),
            Secret::MlDsa44(key) => key
                .sign_deterministic(message, &[])
                .map_err(|_| Error::Backend("ML-DSA-44 signing failed".into()))?
                .encode()
                .to_vec(),
            Secret::EcdsaP256(key) => {
                let signature: p256::ecdsa::Signature =
                    p256::ecdsa::signature::Signer::sign(key.as_ref(), message);
                signature.to_der().as_bytes().to_vec()
            }
        })
    }
}

impl SigningKey for FileKey {
    fn algorithm(&self) -> Algorithm {
        match self.secret {
            Secret::Ed25519(_) => Algorithm::Ed25519,
            Secret::MlDsa44(_) => Algorithm::MlDsa44,
            Secret::EcdsaP256(_) => Algorithm::EcdsaP256,
        }
    }

    fn public_key(&self) -> &[u8] {
        &self.public
    }

    fn sign<'a>(&'a self, message: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(async move { self.sign_now(message) })
    }

    /// One message is signed in place, like [`SigningKey::sign`]; more are cut
    /// into one chunk per core, each signed on a blocking thread, so that a
    /// batch uses every core and does not hold up the async runtime's workers.
    fn sign_all(
        self: Arc<Self>,
        messages: Vec<Vec<u8>>,
    ) -> BoxFuture<'static, Vec<TimedSignature>> {
        Box::pin(async move {
            let timed = |key: &FileKey, message: &[u8]| {
                let started = Instant::now();
                let signature = key.sign_now(message);
                (signature, started.elapsed())
            };
            if messages.len() <= 1 {
                return messages.iter().map(|m| timed(&self, m)).collect();
            }
            let per_chunk = messages.len().div_ceil(cores());
            let mut chunks = Vec::new();
            let mut messages = messages.into_iter().peekable();
            while messages.peek().is_some() {
                let chunk: Vec<Vec<u8>> = messages.by_ref().take(per_chunk).collect();
                let key = self.clone();
                chunks.push((
                    chunk.len(),
                    tokio::task::spawn_blocking(move || {
                        chunk.iter().map(|m| timed(&key, m)).collect::<Vec<_>>()
                    }),
                ));
            }
            let mut signatures = Vec::new();
            for (len, chunk) in chunks {
                match chunk.await {
                    Ok(signed) => signatures.extend(signed),
                    Err(e) => signatures.extend((0..len).map(|_| {
                        (
                            Err(Error::Backend(format!("signing task failed: {e}"))),
                            std::time::Duration::ZERO,
                        )
                    })),
                }
            }
            signatures
        })
    }
}

/// Generates a new private key as PKCS#8 PEM (for `signer-svc keygen`).
pub fn generate_pkcs8_pem(algorithm: Algorithm) -> Result<String> {
    use ed25519_dalek::pkcs8::EncodePrivateKey as _;
    use p256::pkcs8::LineEnding;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| Error::Backend(format!("no randomness: {e}")))?;
    let failed = |_| Error::Backend("cannot encode the new key".into());
    Ok(match algorithm {
        Algorithm::Ed25519 => ed25519_dalek::SigningKey::from_bytes(&seed)
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(failed)?
            .to_string(),
        Algorithm::MlDsa44 => ml_dsa::SigningKey::<MlDsa44>::from_seed(&seed.into())
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(failed)?
            .to_string(),
        Algorithm::EcdsaP256 => p256::ecdsa::SigningKey::from_slice(&seed)
            .map_err(|_| Error::Backend("random scalar out of range".into()))?
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(failed)?
            .to_string(),
    })
}
