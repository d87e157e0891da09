//! The backend suite against the `gcp-kms` backend, through a fake of the KMS
//! REST API that really signs and checks request shapes, and the backend's
//! integrity checks and failure modes against injected faults.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use signer_svc::config::KeyRef;
use signer_svc::keys::gcp_kms::GcpKmsKey;
use signer_svc::keys::{Algorithm, SigningKey};
use support::fake_kms::{FakeKms, Faults, KeyAlgorithm, key_version};

fn key_ref(fake: &FakeKms, name: &str) -> KeyRef {
    KeyRef::GcpKms {
        key_version: name.to_owned(),
        endpoint: Some(fake.endpoint().to_owned()),
    }
}

async fn connect(
    fake: &FakeKms,
    name: &str,
    algorithm: Algorithm,
) -> signer_svc::error::Result<GcpKmsKey> {
    GcpKmsKey::connect(name, Some(fake.endpoint()), algorithm).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_key_passes_the_backend_suite() {
    let fake = FakeKms::start().await;
    let name = key_version("cosigner", 1);
    let public = fake.add_key(&name, KeyAlgorithm::Ed25519);
    let key = signer_svc::load_key(&key_ref(&fake, &name), Algorithm::Ed25519)
        .await
        .unwrap();
    assert_eq!(key.public_key(), public.as_slice());
    support::check_backend(key, Algorithm::Ed25519).await;
    assert_eq!(
        fake.public_key_requests(),
        1,
        "the public key is fetched once, at load"
    );
    assert_eq!(fake.sign_requests(), 3 + 16 + 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p256_key_passes_the_backend_suite() {
    let fake = FakeKms::start().await;
    let name = key_version("manifest", 3);
    let public = fake.add_key(&name, KeyAlgorithm::EcdsaP256);
    let key = signer_svc::load_key(&key_ref(&fake, &name), Algorithm::EcdsaP256)
        .await
        .unwrap();
    assert_eq!(key.public_key(), public.as_slice());
    support::check_backend(key, Algorithm::EcdsaP256).await;
}

#[tokio::test]
async fn corrupted_signature_crc32c_is_a_backend_error() {
    let fake = FakeKms::start().await;
    let name = key_version("cosigner", 1);
    fake.add_key(&name, KeyAlgorithm::Ed25519);
    let key = connect(&fake, &name, Algorithm::Ed25519).await.unwrap();
    key.sign(b"before").await.unwrap();
    fake.set_faults(Faults {
        wrong_signature_crc32c: true,
        ..Faults::default()
    });
    let error = key.sign(b"message").await.err().unwrap();
    assert_eq!(error.kind(), "backend");
    assert!(error.to_string().contains("signature_crc32c"), "{error}");
}

#[tokio::test]
async fn other_integrity_failures_are_backend_errors() {
    let fake = FakeKms::start().await;
    let ed25519 = key_version("cosigner", 1);
    let p256 = key_version("manifest", 1);
    fake.add_key(&ed25519, KeyAlgorithm::Ed25519);
    fake.add_key(&p256, KeyAlgorithm::EcdsaP256);
    let keys = [
        connect(&fake, &ed25519, Algorithm::Ed25519).await.unwrap(),
        connect(&fake, &p256, Algorithm::EcdsaP256).await.unwrap(),
    ];
    let cases = [
        (
            Faults {
                wrong_name: true,
                ..Faults::default()
            },
            "another key version",
        ),
        (
            Faults {
                unverified_request_crc32c: true,
                ..Faults::default()
            },
            "did not verify the request checksum",
        ),
        (
            Faults {
                corrupt_signature: true,
                ..Faults::default()
            },
            "does not verify",
        ),
    ];
    for (faults, expected) in cases {
        fake.set_faults(faults);
        for key in &keys {
            let error = key.sign(b"message").await.err().unwrap();
            assert_eq!(error.kind(), "backend");
            assert!(error.to_string().contains(expected), "{error}");
        }
    }
    fake.set_faults(Faults::default());
    for key in &keys {
        key.sign(b"message").await.unwrap();
    }
}

#[tokio::test]
async fn wrong_pem_crc32c_is_refused_at_load() {
    let fake = FakeKms::start().await;
    let name = key_version("cosigner", 1);
    fake.add_key(&name, KeyAlgorithm::Ed25519);
    fake.set_faults(Faults {
        wrong_pem_crc32c: true,
        ..Faults::default()
    });
    let error = connect(&fake, &name, Algorithm::Ed25519)
        .await
        .err()
        .unwrap();
    assert_eq!(error.kind(), "backend");
    assert!(error.to_string().contains("pem_crc32c"), "{error}");
}

#[tokio::test]
async fn key_algorithm_must_match_the_configuration() {
    let fake = FakeKms::start().await;
    let ed25519 = key_version("cosigner", 1);
    let p256 = key_version("manifest", 1);
    fake.add_key(&ed25519, KeyAlgorithm::Ed25519);
    fake.add_key(&p256, KeyAlgorithm::EcdsaP256);
    let error = connect(&fake, &p256, Algorithm::Ed25519)
        .await
        .err()
        .unwrap();
    assert_eq!(error.kind(), "config");
    assert!(error.to_string().contains("EC_SIGN_P256_SHA256"), "{error}");
    let error = connect(&fake, &ed25519, Algorithm::EcdsaP256)
        .await
        .err()
        .unwrap();
    assert_eq!(error.kind(), "config");
    assert!(error.to_string().contains("EC_SIGN_ED25519"), "{error}");
}

#[tokio::test]
async fn ml_dsa_44_is_not_offered() {
    let fake = FakeKms::start().await;
    let name = key_version("subtree", 1);
    let error = signer_svc::load_key(&key_ref(&fake, &name), Algorithm::MlDsa44)
        .await
        .err()
        .unwrap();
    assert_eq!(error.kind(), "config");
    assert!(error.to_string().contains("ML-DSA-44"), "{error}");
    assert_eq!(fake.public_key_requests(), 0);
}

#[tokio::test]
async fn unknown_key_version_is_a_clear_configuration_error() {
    let fake = FakeKms::start().await;
    let name = key_version("cosigner", 9);
    let error = connect(&fake, &name, Algorithm::Ed25519)
        .await
        .err()
        .unwrap();
    assert_eq!(error.kind(), "config");
    let text = error.to_string();
    assert!(text.contains(&name) && text.contains("not found"), "{text}");
    // A malformed name is refused before any call.
    let error = connect(
        &fake,
        "projects/p/keyRings/r/cryptoKeys/k",
        Algorithm::Ed25519,
    )
    .await
    .err()
    .unwrap();
    assert_eq!(error.kind(), "config");
    assert_eq!(fake.public_key_requests(), 1);
}

#[tokio::test]
async fn server_down_fails_quickly_with_a_backend_error() {
    // Nothing listens on a port that was just released.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let started = Instant::now();
    let error = GcpKmsKey::connect(
        &key_version("cosigner", 1),
        Some(&endpoint),
        Algorithm::Ed25519,
    )
    .await
    .err()
    .unwrap();
    assert_eq!(error.kind(), "backend", "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );

    // A key loaded while the server was up fails the same way once it is gone.
    let mut fake = FakeKms::start().await;
    let name = key_version("cosigner", 1);
    fake.add_key(&name, KeyAlgorithm::Ed25519);
    let key = connect(&fake, &name, Algorithm::Ed25519).await.unwrap();
    key.sign(b"up").await.unwrap();
    fake.stop().await;
    let started = Instant::now();
    let error = key.sign(b"down").await.err().unwrap();
    assert_eq!(error.kind(), "backend", "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unavailable_is_retried_a_bounded_number_of_times() {
    let fake = FakeKms::start().await;
    let name = key_version("manifest", 1);
    let public = fake.add_key(&name, KeyAlgorithm::EcdsaP256);
    let key: Arc<dyn SigningKey> =
        Arc::new(connect(&fake, &name, Algorithm::EcdsaP256).await.unwrap());

    // One transient 503 is retried and the call succeeds.
    fake.set_faults(Faults {
        unavailable: 1,
        ..Faults::default()
    });
    let signature = key.sign(b"message").await.unwrap();
    assert!(support::verify(
        Algorithm::EcdsaP256,
        &public,
        b"message",
        &signature
    ));
    assert_eq!(fake.sign_requests(), 2);

    // A persistent outage gives up after the attempt limit.
    fake.set_faults(Faults {
        unavailable: 100,
        ..Faults::default()
    });
    let started = Instant::now();
    let error = key.sign(b"message").await.err().unwrap();
    assert_eq!(error.kind(), "backend", "{error}");
    assert!(
        error.to_string().contains("UNAVAILABLE") || error.to_string().contains("unavailable"),
        "{error}"
    );
    assert_eq!(
        fake.sign_requests(),
        2 + signer_svc::keys::gcp_kms::MAX_ATTEMPTS as usize
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

/// The fake refuses what the real service refuses, so the backend's request
/// shapes are really exercised: checked here by talking to it directly.
#[tokio::test]
async fn fake_checks_request_shapes_like_the_real_api() {
    let fake = FakeKms::start().await;
    let ed25519 = key_version("cosigner", 1);
    let p256 = key_version("manifest", 1);
    fake.add_key(&ed25519, KeyAlgorithm::Ed25519);
    fake.add_key(&p256, KeyAlgorithm::EcdsaP256);
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(b"test");
    let sha256 = base64::engine::general_purpose::STANDARD.encode(digest);
    let sha256 = sha256.as_str();
    let sha256_crc = crc32c::crc32c(&digest).to_string();
    let data_crc = crc32c::crc32c(b"test").to_string();
    let unknown = key_version("nope", 1);
    let cases: Vec<(&str, serde_json::Value, u16)> = vec![
        // Ed25519 takes data, not a digest.
        (
            &ed25519,
            serde_json::json!({"data": "dGVzdA==", "dataCrc32c": data_crc}),
            200,
        ),
        (
            &ed25519,
            serde_json::json!({"digest": {"sha256": sha256}, "digestCrc32c": sha256_crc}),
            400,
        ),
        (
            &ed25519,
            serde_json::json!({"data": "dGVzdA==", "dataCrc32c": "1"}),
            400,
        ),
        (&ed25519, serde_json::json!({"data": "dGVzdA=="}), 400),
        // P-256 takes digest.sha256, not data.
        (
            &p256,
            serde_json::json!({"digest": {"sha256": sha256}, "digestCrc32c": sha256_crc}),
            200,
        ),
        (
            &p256,
            serde_json::json!({"data": "dGVzdA==", "dataCrc32c": data_crc}),
            400,
        ),
        (
            &p256,
            serde_json::json!({"digest": {"sha256": sha256}, "digestCrc32c": "7"}),
            400,
        ),
        (
            &p256,
            serde_json::json!({"digest": {"sha512": sha256}, "digestCrc32c": sha256_crc}),
            400,
        ),
        (
            &p256,
            serde_json::json!({"digest": {"sha256": sha256}}),
            400,
        ),
        // Unknown fields and unknown keys.
        (
            &p256,
            serde_json::json!({"digest": {"sha256": sha256}, "digestCrc32c": sha256_crc, "x": 1}),
            400,
        ),
        (
            &unknown,
            serde_json::json!({"data": "dGVzdA==", "dataCrc32c": data_crc}),
            404,
        ),
    ];
    for (name, body, expected) in cases {
        let (status, response) = post(
            fake.endpoint(),
            &format!("/v1/{name}:asymmetricSign"),
            &body,
        )
        .await;
        assert_eq!(status, expected, "{body} -> {response}");
        if expected != 200 {
            let error: serde_json::Value = serde_json::from_str(&response).unwrap();
            assert_eq!(error["error"]["code"], expected);
            assert!(error["error"]["status"].is_string(), "{response}");
        }
    }
}

/// A minimal HTTP/1.1 POST over a raw socket, so the fake's checks are tested
/// independently of the client library.
async fn post(endpoint: &str, path: &str, body: &serde_json::Value) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let address = endpoint.strip_prefix("http://").unwrap();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let body = body.to_string();
    let request = format!(
        "POST {path}?%24alt=json%3Benum-encoding%3Dint HTTP/1.1\r\nhost: {address}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

/// A configuration with both keys in KMS builds a service whose keys are the
/// KMS keys (the path `run` takes).
#[tokio::test]
async fn service_builds_from_a_configuration_with_kms_keys() {
    let fake = FakeKms::start().await;
    let cosigner = key_version("cosigner", 1);
    let manifest = key_version("manifest", 1);
    let cosigner_public = fake.add_key(&cosigner, KeyAlgorithm::Ed25519);
    let manifest_public = fake.add_key(&manifest, KeyAlgorithm::EcdsaP256);
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
listen = "127.0.0.1:0"
state_path = "{state}"
audit_log = "{audit}"
[tls]
cert = "c.pem"
key = "k.pem"
client_ca = "ca.pem"
allowed_identities = ["uri:spiffe://witness/core"]
[cosigner]
name = "witness.example/w1"
ed25519 = {{ backend = "gcp-kms", key_version = "{cosigner}", endpoint = "{endpoint}" }}
[manifest]
key = {{ backend = "gcp-kms", key_version = "{manifest}", endpoint = "{endpoint}" }}
"#,
        state = dir.path().join("state.sqlite").display(),
        audit = dir.path().join("audit.jsonl").display(),
        endpoint = fake.endpoint(),
    );
    let config = signer_svc::config::Config::parse(&text).unwrap();
    let service = signer_svc::build_service(&config).await.unwrap();
    assert_eq!(service.ed25519.key.public_key(), cosigner_public.as_slice());
    let manifest_key = service.manifest.unwrap().key;
    assert_eq!(manifest_key.algorithm(), Algorithm::EcdsaP256);
    assert_eq!(manifest_key.public_key(), manifest_public.as_slice());
}
