//! The supply-chain evidence bundle of issue 8 (`deploy/evidence.sh`,
//! `deploy/EVIDENCE.md`): the command runs for this test binary's cargo
//! profile, signs through a real development `signer-svc` (its manifest key,
//! `SignManifest` over mutual TLS), and every attestation it writes is then
//! verified by three implementations that share no code:
//!
//! 1. `rekor-witness verify dsse` (ours),
//! 2. sigstore's `cosign verify-blob-attestation` (Go, built at a pinned
//!    version by `scripts/go-peers`), against the binary in the image,
//! 3. `securesystemslib`'s DSSE code (PyPI, `scripts/python-env`) in
//!    `integration/checkers/verify_attestation.py`.
//!
//! The attacks each verifier must refuse: a payload swapped under a valid
//! signature (a statement claiming another binary), a corrupted signature, an
//! attacker's key, a subject file the statement does not name, and an
//! attestation of one predicate type presented as another. The index
//! must list every file of the bundle with its true sha256.
//!
//! Needs cosign (`WITNESS_TEST_GO_BIN`, default target/go-bin), the Python venv
//! (`WITNESS_TEST_PYTHON`, default target/pyvenv/bin/python), podman (the
//! images; `scripts/test` installs it) and the Helm engine venv
//! (`scripts/python-env deploy`). Fails, not skips, without them.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest as _, Sha256};

const SBOM_TYPE: &str = "https://cyclonedx.org/bom";
const PROVENANCE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// binary | image name (deploy/container/build).
const BINARIES: [(&str, &str); 3] = [
    ("signer-svc", "signer-svc"),
    ("rekor-witness", "witness-core"),
    ("rekor-witness-gateway", "gateway"),
];

/// The cargo profile of this test executable (target/<profile>/deps/<test>).
fn profile() -> String {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .and_then(|name| name.to_str())
        .unwrap()
        .to_owned()
}

fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// Runs a verifier; its exit code and output.
fn run(program: &Path, args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code(), text)
}

/// The three verifiers of one attestation.
struct Verifiers {
    rekor_witness: PathBuf,
    cosign: PathBuf,
    python: PathBuf,
    checker: PathBuf,
    /// cosign's module cache etc. stay out of $HOME.
    cosign_home: tempfile::TempDir,
}

impl Verifiers {
    fn new(profile: &str) -> Verifiers {
        let cosign = integration::go_program("cosign").unwrap_or_else(|e| panic!("{e}"));
        let python = std::env::var_os("WITNESS_TEST_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| integration::target_dir().join("pyvenv/bin/python"));
        assert!(
            python.is_file(),
            "{} is missing: run scripts/python-env (scripts/test does) or set WITNESS_TEST_PYTHON",
            python.display()
        );
        Verifiers {
            rekor_witness: integration::target_dir()
                .join(profile)
                .join("rekor-witness"),
            cosign,
            python,
            checker: integration::repo_root().join("integration/checkers/verify_attestation.py"),
            cosign_home: tempfile::tempdir().unwrap(),
        }
    }

    /// `[ours, cosign, securesystemslib]`: (accepted, output) of each.
    fn verify(
        &self,
        key: &Path,
        predicate_type: &str,
        envelope: &Path,
        subject: &Path,
    ) -> [(bool, Option<i32>, String); 3] {
        let (key, envelope, subject) = (
            key.to_str().unwrap(),
            envelope.to_str().unwrap(),
            subject.to_str().unwrap(),
        );
        let ours = run(
            &self.rekor_witness,
            &[
                "verify",
                "dsse",
                "--key",
                key,
                "--type",
                predicate_type,
                "--subject",
                subject,
                envelope,
            ],
        );
        let output = Command::new(&self.cosign)
            .env("HOME", self.cosign_home.path())
            .env("TUF_ROOT", self.cosign_home.path().join("tuf"))
            .args([
                "verify-blob-attestation",
                "--key",
                key,
                "--type",
                predicate_type,
                "--signature",
                envelope,
                "--insecure-ignore-tlog=true",
                "--new-bundle-format=false",
                "--use-signed-timestamps=false",
                subject,
            ])
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.cosign.display()));
        let cosign = (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        );
        let python = run(
            &self.python,
            &[
                self.checker.to_str().unwrap(),
                "--key",
                key,
                "--type",
                predicate_type,
                "--subject",
                subject,
                envelope,
            ],
        );
        [ours, cosign, python].map(|(code, text)| (code == Some(0), code, text))
    }
}

const NAMES: [&str; 3] = [
    "rekor-witness verify dsse",
    "cosign verify-blob-attestation",
    "securesystemslib",
];

fn assert_all_accept(results: &[(bool, Option<i32>, String); 3], what: &str) {
    for (name, (accepted, code, text)) in NAMES.iter().zip(results) {
        assert!(accepted, "{name} refused {what} ({code:?}):\n{text}");
    }
}

fn assert_all_refuse(results: &[(bool, Option<i32>, String); 3], attack: &str) {
    for (name, (accepted, code, text)) in NAMES.iter().zip(results) {
        assert!(!accepted, "{name} accepted {attack}:\n{text}");
        if *name != NAMES[1] {
            // Ours and the checker: 1 is an invalid input, 2 a usage error.
            assert_eq!(*code, Some(1), "{name} on {attack}:\n{text}");
        }
    }
}

#[test]
fn evidence_attestations_verify_with_three_independent_verifiers_and_tampering_fails_all() {
    let profile = profile();
    let repo = integration::repo_root();
    let out = integration::target_dir().join("evidence");

    let started = Instant::now();
    let output = Command::new(repo.join("deploy/evidence.sh"))
        .env("PROFILE", &profile)
        .env_remove("EVIDENCE_SIGNER_ENDPOINT")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "deploy/evidence.sh failed:\n{log}");
    eprintln!(
        "deploy/evidence.sh (PROFILE={profile}): {:.1} s\n{log}",
        started.elapsed().as_secs_f64()
    );

    // The index lists every file of the bundle, each with its true digest.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    let mut indexed = BTreeSet::new();
    for file in index["files"].as_array().unwrap() {
        let path = file["path"].as_str().unwrap();
        assert_eq!(
            file["sha256"].as_str().unwrap(),
            sha256_hex(&out.join(path)),
            "index.json's digest of {path}"
        );
        indexed.insert(path.to_owned());
    }
    let mut on_disk = BTreeSet::new();
    let mut stack = vec![out.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(&out)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                if rel != "index.json" {
                    on_disk.insert(rel);
                }
            }
        }
    }
    assert_eq!(
        indexed, on_disk,
        "index.json must list exactly the bundle's files"
    );
    assert_eq!(
        index["source_commit"].as_str().unwrap(),
        String::from_utf8(
            Command::new("git")
                .arg("-C")
                .arg(&repo)
                .args(["rev-parse", "HEAD"])
                .output()
                .unwrap()
                .stdout
        )
        .unwrap()
        .trim()
    );
    assert_eq!(
        index["files"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["path"].as_str().unwrap().starts_with("charts/")
                && f["path"].as_str().unwrap().ends_with(".tgz"))
            .count(),
        2,
        "both charts are packaged"
    );
    // The e2e artifacts are either there, with a manifest that verifies, or
    // named as missing.
    let missing = index["missing"].as_array().unwrap();
    let manifests = out.join("e2e/rekor_v2/archive/manifests");
    if manifests.is_dir() {
        let key = out.join("e2e/rekor_v2/archive/manifest-key.pem");
        for manifest in std::fs::read_dir(&manifests).unwrap() {
            let manifest = manifest.unwrap().path();
            let (code, text) = run(
                &integration::target_dir()
                    .join(&profile)
                    .join("rekor-witness"),
                &[
                    "verify",
                    "dsse",
                    "--key",
                    key.to_str().unwrap(),
                    "--type",
                    "https://rekor-witness.dev/checkpoint-archive/v1",
                    manifest.to_str().unwrap(),
                ],
            );
            assert_eq!(code, Some(0), "{}: {text}", manifest.display());
        }
    } else {
        assert!(
            missing
                .iter()
                .any(|m| m.as_str().unwrap().starts_with("e2e/rekor_v2/archive")),
            "no e2e archive, and MISSING.txt does not say so: {missing:?}"
        );
    }

    let verifiers = Verifiers::new(&profile);
    let key = out.join("manifest-key.pem");
    let tampered_dir = tempfile::tempdir().unwrap();
    let images = std::fs::read_to_string(out.join("images.txt")).unwrap();
    let mut verified = 0;
    for (binary, image) in BINARIES {
        let subject = integration::target_dir()
            .join("container")
            .join(&profile)
            .join(image)
            .join("usr/local/bin")
            .join(binary);
        let image_line = images
            .lines()
            .find(|l| l.starts_with(&format!("rekor-witness/{image}:")))
            .unwrap();
        assert_eq!(
            image_line.split(' ').nth(3).unwrap(),
            sha256_hex(&subject),
            "images.txt's sha256 of the {binary} in the image"
        );
        for (kind, predicate_type) in [("sbom", SBOM_TYPE), ("provenance", PROVENANCE_TYPE)] {
            let envelope = out.join(format!("attestations/{binary}.{kind}.dsse.json"));
            let what = format!("{binary}'s {kind} attestation");
            assert_all_accept(
                &verifiers.verify(&key, predicate_type, &envelope, &subject),
                &what,
            );
            verified += 1;

            // What the statement says.
            let json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&envelope).unwrap()).unwrap();
            let payload = BASE64.decode(json["payload"].as_str().unwrap()).unwrap();
            let statement: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            let manifest_digest = image_line.split(' ').nth(1).unwrap();
            assert!(
                statement["subject"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(
                        |s| format!("sha256:{}", s["digest"]["sha256"].as_str().unwrap())
                            == manifest_digest
                    ),
                "{what} names the image digest {manifest_digest}"
            );
            if kind == "sbom" {
                let sbom: serde_json::Value = serde_json::from_slice(
                    &std::fs::read(out.join(format!("sbom/{binary}.cdx.json"))).unwrap(),
                )
                .unwrap();
                assert_eq!(sbom["bomFormat"], "CycloneDX");
                assert_eq!(sbom["specVersion"], "1.5");
                assert_eq!(statement["predicate"], sbom, "{what} carries the SBOM");
            } else {
                assert_eq!(
                    statement["predicate"]["buildDefinition"]["externalParameters"]["source"]["digest"]
                        ["gitCommit"],
                    index["source_commit"]
                );
            }

            // A statement claiming another binary under the valid signature.
            let mut forged = statement.clone();
            forged["subject"][0]["digest"]["sha256"] = hex::encode([0x42; 32]).into();
            let mut swapped = json.clone();
            swapped["payload"] = BASE64.encode(serde_json::to_vec(&forged).unwrap()).into();
            let swapped_path = tampered_dir
                .path()
                .join(format!("{binary}.{kind}.swapped.json"));
            std::fs::write(&swapped_path, swapped.to_string()).unwrap();
            assert_all_refuse(
                &verifiers.verify(&key, predicate_type, &swapped_path, &subject),
                &format!("{what} with its payload swapped"),
            );

            // One bit of the signature flipped.
            let mut signature = BASE64
                .decode(json["signatures"][0]["sig"].as_str().unwrap())
                .unwrap();
            let last = signature.len() - 1;
            signature[last / 2] ^= 0x01;
            let mut corrupted = json.clone();
            corrupted["signatures"][0]["sig"] = BASE64.encode(&signature).into();
            let corrupted_path = tampered_dir
                .path()
                .join(format!("{binary}.{kind}.sig.json"));
            std::fs::write(&corrupted_path, corrupted.to_string()).unwrap();
            assert_all_refuse(
                &verifiers.verify(&key, predicate_type, &corrupted_path, &subject),
                &format!("{what} with a corrupted signature"),
            );
        }
    }
    assert_eq!(verified, 6, "two attestations per binary");

    // An attacker's key, and a file the statement does not name.
    let attacker = p256::ecdsa::SigningKey::from_slice(&rand::random::<[u8; 32]>()).unwrap();
    let attacker_pem = {
        use p256::pkcs8::EncodePublicKey as _;
        attacker
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap()
    };
    let attacker_key = tampered_dir.path().join("attacker.pem");
    std::fs::write(&attacker_key, attacker_pem).unwrap();
    let envelope = out.join("attestations/signer-svc.provenance.dsse.json");
    let signer_binary = integration::target_dir()
        .join("container")
        .join(&profile)
        .join("signer-svc/usr/local/bin/signer-svc");
    assert_all_refuse(
        &verifiers.verify(&attacker_key, PROVENANCE_TYPE, &envelope, &signer_binary),
        "an attestation under another key",
    );
    let sbom_envelope = out.join("attestations/signer-svc.sbom.dsse.json");
    assert_all_refuse(
        &verifiers.verify(&key, PROVENANCE_TYPE, &sbom_envelope, &signer_binary),
        "an SBOM attestation presented as provenance",
    );
    let gateway_binary = integration::target_dir()
        .join("container")
        .join(&profile)
        .join("gateway/usr/local/bin/rekor-witness-gateway");
    assert_all_refuse(
        &verifiers.verify(&key, PROVENANCE_TYPE, &envelope, &gateway_binary),
        "the signer's provenance presented for the gateway's binary",
    );
}
