//! The `file` backend: a PKCS#8 PEM private key on disk, readable by the owner
//! only. The key is read once at start-up and held in memory.

use std::path::Path;

use ed25519_dalek::Signer as _;
use ml_dsa::MlDsa44;

use super::{Algorithm, BoxFuture, SigningKey};
use crate::error::{Error, Result};

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

/// Refuses key files that the group or others can read or write.
#[cfg(unix)]
pub fn check_private_file_mode(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let metadata = std::fs::metadata(path)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
    let mode = metadata.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(Error::Config(format!(
            "private key {} has mode {:o}; it must not be group or world accessible (chmod 600)",
            path.display(),
            mode & 0o777
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
