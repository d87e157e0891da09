//! The one test suite every key backend must pass: signatures made through the
//! backend verify with an independent verifier for its algorithm, bind the
//! message, and the reported public key is the one that verifies.

#![allow(dead_code)]

pub mod fake_kms;
pub mod pki;

use std::sync::Arc;

use signer_svc::keys::{Algorithm, SigningKey};

/// Verifies `signature` over `message` with `public_key` independently of the
/// backend (ed25519-dalek, ml-dsa, and aws-lc for ECDSA via witness-core's note
/// verifier would be circular, so p256 is used directly).
pub fn verify(algorithm: Algorithm, public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    match algorithm {
        Algorithm::Ed25519 => {
            use ed25519_dalek::Verifier as _;
            let Ok(bytes) = <[u8; 32]>::try_from(public_key) else {
                return false;
            };
            let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&bytes) else {
                return false;
            };
            let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
                return false;
            };
            key.verify(message, &signature).is_ok()
        }
        Algorithm::MlDsa44 => {
            let Ok(encoded) = ml_dsa::EncodedVerifyingKey::<ml_dsa::MlDsa44>::try_from(public_key)
            else {
                return false;
            };
            let key = ml_dsa::VerifyingKey::<ml_dsa::MlDsa44>::decode(&encoded);
            let Ok(signature) = ml_dsa::Signature::<ml_dsa::MlDsa44>::try_from(signature) else {
                return false;
            };
            key.verify_with_context(message, &[], &signature)
        }
        Algorithm::EcdsaP256 => {
            use p256::ecdsa::signature::Verifier as _;
            use p256::pkcs8::DecodePublicKey as _;
            let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(public_key) else {
                return false;
            };
            let Ok(signature) = p256::ecdsa::DerSignature::try_from(signature) else {
                return false;
            };
            key.verify(message, &signature).is_ok()
        }
    }
}

/// The shared backend suite.
pub async fn check_backend(key: Arc<dyn SigningKey>, expected: Algorithm) {
    assert_eq!(key.algorithm(), expected);
    let messages: [&[u8]; 3] = [
        b"",
        b"cosignature/v1\ntime 1\nexample\n1\nAAAA\n",
        &[0xffu8; 5000],
    ];
    for message in messages {
        let signature = key.sign(message).await.expect("backend signs");
        assert!(
            verify(expected, key.public_key(), message, &signature),
            "signature from the backend does not verify with its public key"
        );
        let mut other = message.to_vec();
        other.push(b'!');
        assert!(
            !verify(expected, key.public_key(), &other, &signature),
            "signature verifies over another message"
        );
    }
    // Concurrent use from many tasks gives valid signatures too.
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let message = vec![i; 64];
            let signature = key.sign(&message).await.expect("backend signs");
            verify(key.algorithm(), key.public_key(), &message, &signature)
        }));
    }
    for task in tasks {
        assert!(task.await.expect("task"));
    }
    // A batch: every signature in the order of its message, each over its own
    // message only.
    let messages: Vec<Vec<u8>> = (0..40u32).map(|i| i.to_be_bytes().repeat(9)).collect();
    let signed = key.clone().sign_all(messages.clone()).await;
    assert_eq!(signed.len(), messages.len());
    for (i, (signature, _)) in signed.iter().enumerate() {
        let signature = signature.as_ref().expect("backend signs the batch");
        assert!(
            verify(expected, key.public_key(), &messages[i], signature),
            "batch signature {i} does not verify over its message"
        );
        assert!(!verify(
            expected,
            key.public_key(),
            &messages[(i + 1) % messages.len()],
            signature
        ));
    }
    assert!(key.clone().sign_all(Vec::new()).await.is_empty());
}
