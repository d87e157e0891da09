//! Key custody for the Rekor witness: the only process that ever holds a
//! witness private key.
//!
//! It serves typed signing calls (`proto/signer/v1/signer.proto`) over gRPC with
//! mutual TLS 1.3, keeps keys in a file, a PKCS#11 token or Google Cloud KMS, and
//! keeps its own durable record of what it cosigned, so that it refuses to cosign
//! a rollback or a fork even when the witness service asking it is compromised.
//! [`run`] is the whole server; `main` and the tests call it.

#![forbid(unsafe_code)]

pub mod audit;
pub mod config;
pub mod dsse;
pub mod error;
pub mod fork_guard;
pub mod keys;
pub mod metrics;
pub mod service;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::config::{Config, KeyRef};
use crate::error::{Error, Result};
use crate::keys::{Algorithm, SigningKey};
use crate::service::{CosigningKey, ManifestKey, SignerService};

/// Loads a key from wherever the configuration says it lives.
pub fn load_key(key: &KeyRef, algorithm: Algorithm) -> Result<Arc<dyn SigningKey>> {
    match key {
        KeyRef::File { path } => Ok(Arc::new(keys::file::FileKey::load(path, algorithm)?)),
        KeyRef::Pkcs11 {
            module,
            token_label,
            key_label,
            pin_file,
        } => Ok(Arc::new(keys::pkcs11::Pkcs11Key::load(
            module,
            token_label,
            key_label,
            pin_file,
            algorithm,
        )?)),
        KeyRef::GcpKms {
            key_version,
            endpoint,
        } => {
            let connect =
                keys::gcp_kms::GcpKmsKey::connect(key_version, endpoint.as_deref(), algorithm);
            Ok(Arc::new(block_on_runtime(connect)?))
        }
    }
}

/// Runs a key backend's async start-up from the synchronous [`load_key`]: on a
/// multi-threaded Tokio runtime it blocks this worker in place; elsewhere it
/// refuses, pointing at [`load_key_async`] (a client built on a throwaway
/// runtime would keep resources bound to that runtime).
fn block_on_runtime<T>(future: impl Future<Output = Result<T>>) -> Result<T> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| handle.block_on(future))
        }
        _ => Err(Error::Config(
            "gcp-kms keys need load_key_async, or load_key on a multi-threaded Tokio runtime"
                .into(),
        )),
    }
}

/// Loads a key from wherever the configuration says it lives, without blocking
/// the runtime on backends that start up over the network (gcp-kms).
pub async fn load_key_async(key: &KeyRef, algorithm: Algorithm) -> Result<Arc<dyn SigningKey>> {
    match key {
        KeyRef::GcpKms {
            key_version,
            endpoint,
        } => Ok(Arc::new(
            keys::gcp_kms::GcpKmsKey::connect(key_version, endpoint.as_deref(), algorithm).await?,
        )),
        other => load_key(other, algorithm),
    }
}

/// The keys a configuration names, loaded.
struct LoadedKeys {
    ed25519: Arc<dyn SigningKey>,
    ml_dsa_44: Option<Arc<dyn SigningKey>>,
    manifest: Option<Arc<dyn SigningKey>>,
}

fn manifest_algorithm(manifest: &config::ManifestConfig) -> Algorithm {
    if manifest.algorithm == "ed25519" {
        Algorithm::Ed25519
    } else {
        Algorithm::EcdsaP256
    }
}

/// Builds the service from its configuration: loads every key (with
/// [`load_key_async`], so network-backed keys do not block the runtime) and opens
/// the fork guard's record and the audit log.
pub async fn build_service(config: &Config) -> Result<SignerService> {
    let keys = LoadedKeys {
        ed25519: load_key_async(&config.cosigner.ed25519, Algorithm::Ed25519).await?,
        ml_dsa_44: match &config.cosigner.ml_dsa_44 {
            Some(key) => Some(load_key_async(key, Algorithm::MlDsa44).await?),
            None => None,
        },
        manifest: match &config.manifest {
            Some(manifest) => {
                Some(load_key_async(&manifest.key, manifest_algorithm(manifest)).await?)
            }
            None => None,
        },
    };
    assemble_service(config, keys)
}

fn assemble_service(config: &Config, keys: LoadedKeys) -> Result<SignerService> {
    let name = &config.cosigner.name;
    let ed25519 = CosigningKey::new(name, keys.ed25519)?;
    let ml_dsa_44 = keys
        .ml_dsa_44
        .map(|key| CosigningKey::new(name, key))
        .transpose()?;
    let manifest = match (&config.manifest, keys.manifest) {
        (Some(manifest), Some(key)) => {
            if key.public_key() == ed25519.key.public_key() {
                return Err(Error::Config(
                    "the manifest key must differ from the cosigning key".into(),
                ));
            }
            Some(ManifestKey {
                key_id: hex::encode(Sha256::digest(key.public_key())),
                key,
                payload_types: manifest.payload_types.clone(),
            })
        }
        _ => None,
    };
    Ok(SignerService {
        name: name.clone(),
        ed25519,
        ml_dsa_44,
        manifest,
        guard: Arc::new(fork_guard::ForkGuard::open(&config.state_path)?),
        audit: Arc::new(audit::AuditLog::open(config.audit_log.as_deref())?),
        metrics: Arc::new(metrics::Metrics::new()?),
        allowed_identities: config.tls.allowed_identities.clone(),
    })
}

/// Serves the signer on `listener` until `shutdown` completes, then drains
/// in-flight calls.
pub async fn run(
    listener: TcpListener,
    config: &Config,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let service = Arc::new(build_service(config).await?);
    let tls = tls::server_config(&config.tls)?;
    let incoming = tls::incoming(listener, tls, service.audit.clone());
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<witness_proto::signer::signer_server::SignerServer<SignerService>>()
        .await;
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(witness_proto::signer::signer_server::SignerServer::from_arc(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Backend(format!("gRPC server: {e}")))
}
