//! Fixtures shared by the fuzz targets: the real verifier keys and trusted roots
//! from the read-only shared test data, loaded once per fuzzing process.
//!
//! The data is read at run time, never copied into the repository. Its directory
//! is `$WITNESS_TESTDATA` when set, else `shared/testdata` beside the project
//! checkout (where `scripts/fuzz` expects it too).

use std::path::PathBuf;
use std::sync::LazyLock;

use witness_core::bundle::{TrustedLog, parse_trusted_root};
use witness_core::note::{ML_DSA_44_PUBLIC_KEY_SIZE, SignatureType, VerifierKey};

/// The shared test data directory.
pub fn testdata() -> PathBuf {
    match std::env::var_os("WITNESS_TESTDATA") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata"),
    }
}

fn read(relative: &str) -> String {
    let path = testdata().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}); set WITNESS_TESTDATA to the shared testdata directory",
            path.display()
        )
    })
}

/// Every real verifier key of the shared data: the Rekor v1 and v2 log keys and
/// the witnesses' cosignature keys of `rekor/keys/vkeys.txt`, the sumdb keys of
/// `note/`, the cosignature/v1 form of each Ed25519 key, and one ML-DSA-44
/// subtree key (any 1312 bytes decode as one) so that path is reachable too.
pub fn keys() -> &'static [VerifierKey] {
    static KEYS: LazyLock<Vec<VerifierKey>> = LazyLock::new(|| {
        let mut vkeys: Vec<String> = read("rekor/keys/vkeys.txt")
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|word| !word.starts_with('#'))
            .map(str::to_owned)
            .collect();
        vkeys.push(read("note/sum.golang.org.vkey.txt").trim().to_owned());
        let vectors: serde_json::Value =
            serde_json::from_str(&read("note/golang-mod-sumdb-note.vectors.json"))
                .expect("note vectors are JSON");
        for field in ["peter_vkey", "enoch_vkey"] {
            vkeys.push(vectors[field].as_str().expect("vkey field").to_owned());
        }
        let mut keys: Vec<VerifierKey> = vkeys
            .iter()
            .map(|vkey| {
                VerifierKey::parse_vkey(vkey).unwrap_or_else(|e| panic!("vkey {vkey}: {e}"))
            })
            .collect();
        let cosigners: Vec<VerifierKey> = keys
            .iter()
            .filter(|key| key.signature_type() == SignatureType::Ed25519)
            .map(|key| key.as_cosignature_v1().expect("Ed25519 key"))
            .collect();
        keys.extend(cosigners);
        keys.push(ml_dsa_key());
        keys
    });
    &KEYS
}

/// The synthetic ML-DSA-44 subtree key included in [`keys`]; `scripts/fuzz`
/// builds a seed note signed (invalidly) under the same name and key ID.
pub fn ml_dsa_key() -> VerifierKey {
    VerifierKey::from_material(
        "mldsa-fuzz",
        SignatureType::MlDsa44Subtree,
        &[7u8; ML_DSA_44_PUBLIC_KEY_SIZE],
    )
    .expect("any 1312 bytes are an ML-DSA-44 public key")
}

/// The transparency logs of every real trusted root in the shared data.
pub fn trusted_logs() -> &'static [TrustedLog] {
    static LOGS: LazyLock<Vec<TrustedLog>> = LazyLock::new(|| {
        let dir = testdata().join("rekor/trusted_root");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {} ({e})", dir.display()))
            .map(|entry| entry.expect("directory entry").path())
            .filter(|path| path.to_string_lossy().ends_with("trusted_root.json"))
            .collect();
        paths.sort();
        let logs: Vec<TrustedLog> = paths
            .iter()
            .flat_map(|path| {
                let bytes = std::fs::read(path).expect("trusted root is readable");
                parse_trusted_root(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            })
            .collect();
        assert!(!logs.is_empty(), "no trusted root in {}", dir.display());
        logs
    });
    &LOGS
}
