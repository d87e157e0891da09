//! The mirror producer's file key: an ECDSA P-256 PKCS#8 PEM private key that
//! signs mirror Statements as the signer's `SignManifest` does (DSSE, ASN.1 DER
//! signature over the PAE, key ID = hex SHA-256 of the public key's DER
//! SubjectPublicKeyInfo), for producers without a `signer-svc`.

use async_trait::async_trait;
use p256::pkcs8::{DecodePrivateKey as _, EncodePublicKey as _, LineEnding};
use sha2::{Digest, Sha256};

use crate::dsse::pae;
use crate::service::archive::{ManifestSigner, dsse_envelope};
use crate::{Error, Result};

/// A P-256 manifest key held in this process.
pub struct FileManifestSigner {
    key: p256::ecdsa::SigningKey,
    key_id: String,
}

impl FileManifestSigner {
    /// Parses a PKCS#8 PEM P-256 private key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<FileManifestSigner> {
        let key =
            p256::ecdsa::SigningKey::from_pkcs8_pem(pem).map_err(|_| Error::MalformedKey {
                reason: "the mirror key is not a PKCS#8 PEM ECDSA P-256 private key",
            })?;
        let der = key
            .verifying_key()
            .to_public_key_der()
            .map_err(|_| Error::MalformedKey {
                reason: "P-256 key cannot be re-encoded",
            })?;
        Ok(FileManifestSigner {
            key_id: hex::encode(Sha256::digest(der.as_bytes())),
            key,
        })
    }

    /// The public key as PEM SubjectPublicKeyInfo (what `--mirror-key` of
    /// `mirror verify` takes).
    pub fn public_key_pem(&self) -> Result<String> {
        self.key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|_| Error::MalformedKey {
                reason: "P-256 key cannot be re-encoded",
            })
    }
}

#[async_trait]
impl ManifestSigner for FileManifestSigner {
    async fn sign_manifest(&self, payload_type: &str, payload: Vec<u8>) -> Result<Vec<u8>> {
        let message = pae(payload_type, &payload);
        let signature: p256::ecdsa::Signature =
            p256::ecdsa::signature::Signer::sign(&self.key, &message);
        Ok(dsse_envelope(
            payload_type,
            &payload,
            &self.key_id,
            signature.to_der().as_bytes(),
        ))
    }
}
