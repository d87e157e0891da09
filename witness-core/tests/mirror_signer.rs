//! `rekor-witness mirror pack` signing through the real `signer-svc`
//! (`SignManifest`, mutual TLS on loopback): the envelope verifies with the
//! signer's manifest public key and with no other, and a client the signer
//! does not trust gets no signature and leaves no bundle.

#![allow(clippy::unwrap_used)]

mod support_feeders;
mod witness_support;

use std::path::Path;
use std::sync::Arc;

use support_feeders::{TilesLog, TilesServer};
use witness_core::mirror::{CAR_FILE, ENVELOPE_FILE};
use witness_core::service::archive::ManifestVerifier;
use witness_core::service::metrics::WitnessMetrics;
use witness_core::service::mirror::{FileManifestSigner, verify_bundle};
use witness_support::{SignerHarness, pki};

const ORIGIN: &str = "example.com/mirror-signer-test";

fn path(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

async fn cli_pack(
    url: &str,
    vkey: &str,
    out: &Path,
    signer: &SignerHarness,
    client_cert: &Path,
    client_key: &Path,
) -> std::process::Output {
    let config = &signer.client_config;
    tokio::process::Command::new(env!("CARGO_BIN_EXE_rekor-witness"))
        .args([
            "mirror",
            "pack",
            "--log",
            url,
            "--log-key",
            vkey,
            "--out",
            &path(out),
            "--signer-endpoint",
            &config.endpoint,
            "--signer-ca",
            &path(&config.ca),
            "--signer-cert",
            &path(client_cert),
            "--signer-key",
            &path(client_key),
            "--signer-server-name",
            config.server_name.as_deref().unwrap(),
        ])
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_signed_by_signer_svc_verifies_with_its_manifest_key_only() {
    let signer = SignerHarness::start(false).await;
    let keys = signer
        .client(Arc::new(WitnessMetrics::new().unwrap()))
        .keys()
        .await
        .unwrap();
    let (manifest_pem, manifest_key_id) = keys.manifest.expect("the signer has a manifest key");
    let manifest_key = ManifestVerifier::from_pem(&manifest_pem).unwrap();

    let mut log = TilesLog::new(ORIGIN);
    log.grow(300);
    let log_key = log.verifier.clone();
    let (_server, url) = TilesServer::start(log).await;
    let dir = tempfile::tempdir().unwrap();

    let bundle = dir.path().join("bundle");
    let config = &signer.client_config;
    let packed = cli_pack(
        &url,
        &log_key.to_vkey(),
        &bundle,
        &signer,
        &config.client_cert,
        &config.client_key,
    )
    .await;
    assert!(packed.status.success(), "{packed:?}");
    let verified = verify_bundle(&bundle, &log_key, &manifest_key, None)
        .await
        .unwrap();
    assert_eq!((verified.origin.as_str(), verified.size), (ORIGIN, 300));
    let envelope: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join(ENVELOPE_FILE)).unwrap()).unwrap();
    assert_eq!(envelope["signatures"][0]["keyid"], manifest_key_id.as_str());

    // Any other P-256 key refuses the envelope.
    let other_pem = {
        use p256::pkcs8::{EncodePrivateKey as _, LineEnding};
        p256::ecdsa::SigningKey::from_slice(&[9; 32])
            .unwrap()
            .to_pkcs8_pem(LineEnding::LF)
            .unwrap()
    };
    let other = FileManifestSigner::from_pkcs8_pem(&other_pem).unwrap();
    let other_key = ManifestVerifier::from_pem(&other.public_key_pem().unwrap()).unwrap();
    let error = verify_bundle(&bundle, &log_key, &other_key, None)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "mirror_manifest_signature", "{error}");

    // A client certificate from another CA: the signer refuses the handshake,
    // nothing is signed and no bundle appears.
    let untrusted_cert = dir.path().join("untrusted.pem");
    let untrusted_key = dir.path().join("untrusted.key");
    std::fs::write(&untrusted_cert, &signer.installation.pki.untrusted.cert_pem).unwrap();
    pki::write_private(&untrusted_key, &signer.installation.pki.untrusted.key_pem);
    let refused_dir = dir.path().join("refused");
    let refused = cli_pack(
        &url,
        &log_key.to_vkey(),
        &refused_dir,
        &signer,
        &untrusted_cert,
        &untrusted_key,
    )
    .await;
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(!refused_dir.join(CAR_FILE).exists());
    assert!(!refused_dir.join(ENVELOPE_FILE).exists());
}
