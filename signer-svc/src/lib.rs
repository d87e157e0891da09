//! Key custody for the Rekor witness: the only process that ever holds a
//! witness private key.
//!
//! It serves typed signing calls (`proto/signer/v1/signer.proto`) over gRPC with
//! mutual TLS 1.3, keeps keys in a file, a PKCS#11 token or Google Cloud KMS, and
//! keeps its own durable record of what it cosigned, so that it refuses to cosign
//! a rollback or a fork even when the witness service asking it is compromised.
//! Checkpoints may be cosigned one per call or in batches, and concurrent calls
//! share the fork guard's durable writes (group commit).
//! [`run`] is the whole server; `main` and the tests call it.

#![forbid(unsafe_code)]

pub mod audit;
pub mod config;
pub mod cosign;
pub mod dsse;
pub mod edge;
pub mod error;
pub mod fork_guard;
pub mod keys;
pub mod limits;
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

/// Loads a key from wherever the configuration says it lives. PKCS#11 start-up
/// (module loading, login, self-test) runs on a blocking thread, and gcp-kms
/// start-up is network I/O, so neither blocks the async runtime.
pub async fn load_key(key: &KeyRef, algorithm: Algorithm) -> Result<Arc<dyn SigningKey>> {
    match key {
        KeyRef::File { path } => Ok(Arc::new(keys::file::FileKey::load(path, algorithm)?)),
        KeyRef::Pkcs11 {
            module,
            token_label,
            key_label,
            pin_file,
        } => {
            let (module, token_label, key_label, pin_file) = (
                module.clone(),
                token_label.clone(),
                key_label.clone(),
                pin_file.clone(),
            );
            let key = tokio::task::spawn_blocking(move || {
                keys::pkcs11::Pkcs11Key::load(
                    &module,
                    &token_label,
                    &key_label,
                    &pin_file,
                    algorithm,
                )
            })
            .await
            .map_err(|e| Error::Config(format!("PKCS#11 start-up failed: {e}")))??;
            Ok(Arc::new(key))
        }
        KeyRef::GcpKms {
            key_version,
            endpoint,
        } => Ok(Arc::new(
            keys::gcp_kms::GcpKmsKey::connect(key_version, endpoint.as_deref(), algorithm).await?,
        )),
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

/// Builds the service from its configuration: loads every key and opens the
/// fork guard's record and the audit log.
pub async fn build_service(config: &Config) -> Result<SignerService> {
    let keys = LoadedKeys {
        ed25519: load_key(&config.cosigner.ed25519, Algorithm::Ed25519).await?,
        ml_dsa_44: match &config.cosigner.ml_dsa_44 {
            Some(key) => Some(load_key(key, Algorithm::MlDsa44).await?),
            None => None,
        },
        manifest: match &config.manifest {
            Some(manifest) => Some(load_key(&manifest.key, manifest_algorithm(manifest)).await?),
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
    let guard = Arc::new(fork_guard::ForkGuard::open(&config.state_path)?);
    Ok(SignerService {
        name: name.clone(),
        ed25519,
        ml_dsa_44,
        manifest,
        metrics: Arc::new(metrics::Metrics::new(guard.counters())?),
        guard,
        audit: Arc::new(audit::AuditLog::open(config.audit_log.as_deref())?),
        allowed_identities: config.tls.allowed_identities.clone(),
        observer_identities: config.tls.observer_identities.clone(),
    })
}

/// Serves the signer on `listener` until `shutdown` completes, then drains
/// in-flight calls.
pub async fn run(
    listener: TcpListener,
    config: &Config,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    use witness_proto::signer::signer_server::SignerServer;

    let service = Arc::new(build_service(config).await?);
    let tls = tls::server_config(&config.tls, service.metrics.tls().clone())?;
    let incoming = tls::incoming(listener, tls, service.audit.clone());
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<SignerServer<SignerService>>()
        .await;
    let (audit, metrics) = (service.audit.clone(), service.metrics.clone());
    tonic::transport::Server::builder()
        // Outermost, around the whole router: no service code, not even the
        // decoding of a request, runs for a caller whose client certificate
        // did not verify (see `edge`).
        .layer(edge::AuthenticateLayer {
            audit: audit.clone(),
            metrics: metrics.clone(),
        })
        // Around the router, to see every service's refusals of oversized
        // requests, which tonic makes before any handler runs.
        .layer(edge::AuditTooLargeLayer { audit, metrics })
        .add_service(health_service)
        .add_service(
            SignerServer::from_arc(service)
                .max_decoding_message_size(limits::MAX_REQUEST_MESSAGE_SIZE),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Backend(format!("gRPC server: {e}")))
}
