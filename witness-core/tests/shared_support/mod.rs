//! Helpers shared by the `shared_*` integration tests, which read the read-only
//! test data in `../shared/testdata` (a sibling of the repository root). The
//! files are never copied into the repository; directories are enumerated with
//! `read_dir` so that files added there are covered automatically.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use witness_core::note::{NoteSignature, SignatureType, VerifierKey};

/// The shared test data directory.
pub fn testdata() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/testdata"
    ))
}

/// A path below the test data directory.
pub fn data_path(relative: &str) -> PathBuf {
    testdata().join(relative)
}

/// The regular files directly in `relative`, sorted, at least `min` of them.
pub fn files_in(relative: &str, min: usize) -> Vec<PathBuf> {
    let dir = data_path(relative);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() >= min,
        "{} holds {} files, expected at least {min}",
        dir.display(),
        files.len()
    );
    files
}

/// Every regular file below `relative` (recursively) whose name ends with
/// `suffix`, sorted, at least `min` of them.
pub fn files_below(relative: &str, suffix: &str, min: usize) -> Vec<PathBuf> {
    fn walk(dir: &Path, suffix: &str, out: &mut Vec<PathBuf>) {
        for entry in
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, suffix, out);
            } else if file_name(&path).ends_with(suffix) {
                out.push(path);
            }
        }
    }
    let dir = data_path(relative);
    let mut files = Vec::new();
    walk(&dir, suffix, &mut files);
    files.sort();
    assert!(
        files.len() >= min,
        "{} holds {} *{suffix} files, expected at least {min}",
        dir.display(),
        files.len()
    );
    files
}

/// The file name as a string.
pub fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// The path relative to the test data directory, for messages.
pub fn rel(path: &Path) -> String {
    path.strip_prefix(testdata())
        .unwrap_or(path)
        .display()
        .to_string()
}

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

pub fn read_string(path: &Path) -> String {
    String::from_utf8(read(path)).unwrap()
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&read(path))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// One line of `rekor/keys/vkeys.txt`.
#[derive(Clone, Debug)]
pub struct VkeyLine {
    pub vkey: String,
    pub comment: String,
    pub key: VerifierKey,
    /// Whether the line is in the "# witnesses" section (after the log keys).
    pub witness: bool,
}

/// Every vkey in `rekor/keys/vkeys.txt` (lines `vkey<TAB># comment`), parsed.
pub fn vkeys_txt() -> Vec<VkeyLine> {
    let text = read_string(&data_path("rekor/keys/vkeys.txt"));
    let mut witness = false;
    let mut lines = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with("# witnesses") {
            witness = true;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (vkey, comment) = line.split_once('\t').unwrap_or((line, ""));
        let key = VerifierKey::parse_vkey(vkey)
            .unwrap_or_else(|e| panic!("vkeys.txt line {vkey:?} does not parse: {e}"));
        assert_eq!(key.to_vkey(), vkey, "vkey does not re-encode identically");
        lines.push(VkeyLine {
            vkey: vkey.to_owned(),
            comment: comment.trim().to_owned(),
            key,
            witness,
        });
    }
    assert!(lines.len() >= 12, "vkeys.txt has only {} keys", lines.len());
    lines
}

/// The log keys of vkeys.txt (before the witness section): types 0x01
/// (Ed25519) and 0x02 (ECDSA P-256) only.
pub fn log_keys() -> Vec<VerifierKey> {
    let keys: Vec<VerifierKey> = vkeys_txt()
        .into_iter()
        .filter(|line| !line.witness)
        .map(|line| line.key)
        .collect();
    for key in &keys {
        assert!(
            matches!(
                key.signature_type(),
                SignatureType::Ed25519 | SignatureType::EcdsaP256
            ),
            "log key {key:?}"
        );
    }
    assert!(keys.len() >= 8, "only {} log keys", keys.len());
    keys
}

/// The type 0x04 (cosignature/v1) witness keys of vkeys.txt's witness section.
pub fn witness_keys() -> Vec<VerifierKey> {
    vkeys_txt()
        .into_iter()
        .filter(|line| line.witness)
        .map(|line| line.key)
        .filter(|key| key.signature_type() == SignatureType::CosignatureV1)
        .collect()
}

/// The PEM files of `rekor/keys/`: (file name, contents).
pub fn pem_files() -> Vec<(String, String)> {
    files_in("rekor/keys", 9)
        .into_iter()
        .filter(|path| file_name(path).ends_with(".pem"))
        .map(|path| (file_name(&path), read_string(&path)))
        .collect()
}

/// The key name a Rekor log signs with, from a checkpoint origin: the host
/// before " - <treeID>" for Rekor v1 shards, the origin itself otherwise.
pub fn key_name_for_origin(origin: &str) -> &str {
    origin.split_once(" - ").map_or(origin, |(host, _)| host)
}

/// The keys that a signature line claims (same name and key ID).
pub fn keys_matching<'a>(
    keys: &'a [VerifierKey],
    signature: &NoteSignature,
) -> Vec<&'a VerifierKey> {
    keys.iter().filter(|key| key.matches(signature)).collect()
}

/// Extracts every whitespace-separated token that looks like a vkey
/// (`<name>+<hex key ID>+<base64>`) from a text.
pub fn vkey_tokens(text: &str) -> Vec<String> {
    text.split_whitespace()
        .filter(|token| {
            let parts: Vec<&str> = token.splitn(3, '+').collect();
            parts.len() == 3
                && !parts[0].is_empty()
                && parts[0] != "PRIVATE"
                && !parts[1].is_empty()
                && parts[1].bytes().all(|b| b.is_ascii_hexdigit())
                && !parts[2].is_empty()
        })
        .map(str::to_owned)
        .collect()
}

/// An Ed25519 signing key from a fixed seed, and its vkey verifier (type 0x01).
pub fn fixed_ed25519_key(name: &str, seed: u8) -> (ed25519_dalek::SigningKey, VerifierKey) {
    let signing = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let verifier = VerifierKey::from_material(
        name,
        SignatureType::Ed25519,
        signing.verifying_key().as_bytes(),
    )
    .unwrap();
    (signing, verifier)
}

/// A note signature line by a fixed-seed Ed25519 key over `text`.
pub fn ed25519_signature_line(
    signing: &ed25519_dalek::SigningKey,
    verifier: &VerifierKey,
    text: &str,
) -> NoteSignature {
    use ed25519_dalek::Signer as _;
    let signature = signing.sign(text.as_bytes());
    NoteSignature::new(
        verifier.name(),
        verifier.key_id(),
        signature.to_bytes().to_vec(),
    )
    .unwrap()
}
