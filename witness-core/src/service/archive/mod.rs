//! The checkpoint archive: every cosigned checkpoint written to object storage,
//! and per period a DSSE-signed manifest listing their digests.

use async_trait::async_trait;

use crate::Result;

/// Signs manifests: the signer's `SignManifest` call (manifest key, DSSE).
#[async_trait]
pub trait ManifestSigner: Send + Sync + 'static {
    /// Returns the DSSE envelope (JSON) over `payload` of type `payload_type`.
    async fn sign_manifest(&self, payload_type: &str, payload: Vec<u8>) -> Result<Vec<u8>>;
}
