//! The backend suite against the `file` backend, and its refusal of private key
//! files that others can read.

#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;

use signer_svc::keys::Algorithm;
use signer_svc::keys::file::{FileKey, generate_pkcs8_pem};

fn key_file(dir: &std::path::Path, algorithm: Algorithm, mode: u32) -> std::path::PathBuf {
    let path = dir.join(format!("{}.pem", algorithm.label()));
    std::fs::write(&path, generate_pkcs8_pem(algorithm).unwrap()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[tokio::test]
async fn file_backend_passes_the_backend_suite_for_every_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    for algorithm in [Algorithm::Ed25519, Algorithm::MlDsa44, Algorithm::EcdsaP256] {
        let path = key_file(dir.path(), algorithm, 0o600);
        support::check_backend(
            Arc::new(FileKey::load(&path, algorithm).unwrap()),
            algorithm,
        )
        .await;
    }
}

#[test]
fn group_or_world_readable_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for mode in [0o604, 0o660, 0o644, 0o620] {
        let path = key_file(dir.path(), Algorithm::Ed25519, mode);
        let error = FileKey::load(&path, Algorithm::Ed25519).err().unwrap();
        assert_eq!(error.kind(), "config");
        std::fs::remove_file(path).unwrap();
    }
}

/// A Kubernetes Secret mounted into a non-root pod is `root:<fsGroup>` 0440:
/// accepted. The same group-readable mode on a file someone else owns is
/// refused (PostgreSQL's rule for its server key).
#[test]
fn group_readable_key_file_is_accepted_only_when_root_owns_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = key_file(dir.path(), Algorithm::Ed25519, 0o440);
    let owner = std::fs::metadata(&path)
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    if owner == 0 {
        FileKey::load(&path, Algorithm::Ed25519).unwrap();
        // Hand the file to `nobody`: now group-readable is refused.
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
    }
    let error = FileKey::load(&path, Algorithm::Ed25519).err().unwrap();
    assert_eq!(error.kind(), "config");
}

#[test]
fn key_of_another_algorithm_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = key_file(dir.path(), Algorithm::EcdsaP256, 0o600);
    assert!(FileKey::load(&path, Algorithm::Ed25519).is_err());
    assert!(FileKey::load(&path, Algorithm::MlDsa44).is_err());
}
