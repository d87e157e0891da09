//! `rekor-witness verify` as other tooling sees it: exit statuses, the one stderr
//! line naming the failed check, and the `--json` verdict, on real Rekor data.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn shared(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata")
        .join(path)
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rekor-witness"))
        .args(args)
        .output()
        .unwrap()
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn status(output: &Output) -> i32 {
    output.status.code().unwrap()
}

fn stderr_lines(output: &Output) -> Vec<String> {
    String::from_utf8(output.stderr.clone())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap()
}

const V1_PROD: &str =
    "rekor/checkpoints/valid/rekor.sigstore.dev_-_1193050959916656506.1139201557.d191047b.txt";
const V1_OLD: &str =
    "rekor/checkpoints/valid/rekor.sigstage.dev_-_8202293616175992157.1352760.e81a8af7.txt";
const V1_NEW: &str =
    "rekor/checkpoints/valid/rekor.sigstage.dev_-_8202293616175992157.1352764.e3e958d9.txt";
const V1_PROOF: &str =
    "rekor/loginfo/rekor-v1-staging.GET-api-v1-log-proof.firstSize1352760.lastSize1352764.json";
const V2_PROD: &str = "rekor/checkpoints/valid/log2025-1.rekor.sigstore.dev.412115.f1dcce7b.txt";
const V2_VKEY: &str =
    "log2025-1.rekor.sigstore.dev+cf119915+AbfK5adZJxsI323FwGD2AJJ9F4i89cfDuLdGJBIYntuO";

fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rekor-witness-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn checkpoint_verifies_with_pem_key_named_after_v1_origin_host() {
    let key = shared("rekor/keys/rekor.sigstore.dev.pub.pem");
    let out = run(&[
        "verify",
        "checkpoint",
        "--key",
        arg(&key),
        arg(&shared(V1_PROD)),
    ]);
    assert_eq!(status(&out), 0, "{:?}", stderr_lines(&out));
    let out = run(&[
        "verify",
        "checkpoint",
        "--key",
        arg(&key),
        "--json",
        "--origin",
        "rekor.sigstore.dev - 1193050959916656506",
        arg(&shared(V1_PROD)),
    ]);
    let verdict = json(&out);
    assert_eq!(verdict["valid"], true);
    assert_eq!(verdict["details"]["size"], 1139201557);
    assert_eq!(
        verdict["details"]["verified_signatures"][0]["key"],
        "rekor.sigstore.dev+c0d23d6a"
    );
}

#[test]
fn checkpoint_verifies_with_vkey_string_and_pem_for_v2() {
    let out = run(&[
        "verify",
        "checkpoint",
        "--key",
        V2_VKEY,
        arg(&shared(V2_PROD)),
    ]);
    assert_eq!(status(&out), 0);
    let pem = shared("rekor/keys/log2025-1.rekor.sigstore.dev.pub.pem");
    let out = run(&[
        "verify",
        "checkpoint",
        "--key",
        arg(&pem),
        arg(&shared(V2_PROD)),
    ]);
    assert_eq!(status(&out), 0, "{:?}", stderr_lines(&out));
}

#[test]
fn pem_key_under_a_wrong_name_does_not_verify() {
    let pem = shared("rekor/keys/rekor.sigstore.dev.pub.pem");
    // P-256 key IDs do not hash the name, but the signature line's name must match.
    let out = run(&[
        "verify",
        "checkpoint",
        "--key",
        arg(&pem),
        "--name",
        "evil.example",
        arg(&shared(V1_PROD)),
    ]);
    assert_eq!(status(&out), 1);
    assert_eq!(
        stderr_lines(&out),
        ["invalid: no_trusted_signature: no signature from a trusted key"]
    );
}

#[test]
fn checkpoint_with_tampered_key_hash_exits_1_naming_the_check() {
    let key = shared("rekor/keys/rekor.sigstore.dev.pub.pem");
    let invalid = shared(
        "rekor/checkpoints/invalid/rekor.sigstore.dev_-_2605736670972794746.21428036.9e0d821b.txt",
    );
    let out = run(&[
        "verify",
        "checkpoint",
        "--key",
        arg(&key),
        "--json",
        arg(&invalid),
    ]);
    assert_eq!(status(&out), 1);
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].starts_with("invalid: no_trusted_signature"),
        "{lines:?}"
    );
    assert_eq!(json(&out)["check"], "no_trusted_signature");
}

#[test]
fn checkpoint_for_another_origin_exits_1() {
    let out = run(&[
        "verify",
        "checkpoint",
        "--key",
        V2_VKEY,
        "--origin",
        "log2025-2.rekor.sigstore.dev",
        arg(&shared(V2_PROD)),
    ]);
    assert_eq!(status(&out), 1);
    assert!(stderr_lines(&out)[0].starts_with("invalid: origin_mismatch"));
}

#[test]
fn forged_signature_exits_1_as_invalid_signature() {
    let mut bytes = std::fs::read(shared(V2_PROD)).unwrap();
    // Replace the last base64 character before the final newline: same key ID,
    // broken signature.
    let at = bytes.len() - 3;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let forged = temp_file("forged.txt", &bytes);
    let out = run(&["verify", "checkpoint", "--key", V2_VKEY, arg(&forged)]);
    assert_eq!(status(&out), 1);
    assert!(stderr_lines(&out)[0].starts_with("invalid: invalid_signature"));
}

#[test]
fn malformed_content_in_a_readable_file_exits_1() {
    for (name, contents) in [
        ("empty.txt", &b""[..]),
        ("binary.txt", &[0xff, 0xfe, 0x00][..]),
        ("crlf.txt", &b"log\r\n1\r\nAAAA\r\n\r\n"[..]),
    ] {
        let file = temp_file(name, contents);
        let out = run(&["verify", "checkpoint", "--key", V2_VKEY, arg(&file)]);
        assert_eq!(status(&out), 1, "{name}");
        assert_eq!(stderr_lines(&out).len(), 1, "{name}");
    }
    let garbage_key = temp_file(
        "garbage.pem",
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    );
    let out = run(&[
        "verify",
        "checkpoint",
        "--key",
        arg(&garbage_key),
        arg(&shared(V2_PROD)),
    ]);
    assert_eq!(status(&out), 1);
    assert!(stderr_lines(&out)[0].starts_with("invalid: malformed_key"));
}

#[test]
fn usage_errors_and_unreadable_files_exit_2() {
    let missing = run(&[
        "verify",
        "checkpoint",
        "--key",
        V2_VKEY,
        "/nonexistent/checkpoint",
    ]);
    assert_eq!(status(&missing), 2);
    let bad_vkey = run(&[
        "verify",
        "checkpoint",
        "--key",
        "a+zz+AAAA",
        arg(&shared(V2_PROD)),
    ]);
    assert_eq!(status(&bad_vkey), 2);
    let missing_key_file = run(&[
        "verify",
        "checkpoint",
        "--key",
        "/nonexistent.pem",
        arg(&shared(V2_PROD)),
    ]);
    assert_eq!(status(&missing_key_file), 2);
    let no_args = run(&["verify", "checkpoint"]);
    assert_eq!(status(&no_args), 2);
    let unknown = run(&["verify", "frobnicate"]);
    assert_eq!(status(&unknown), 2);
    let name_clash = run(&[
        "verify",
        "checkpoint",
        "--key",
        V2_VKEY,
        "--name",
        "other",
        arg(&shared(V2_PROD)),
    ]);
    assert_eq!(status(&name_clash), 2);
}

#[test]
fn real_v1_consistency_proof_verifies_from_json_and_from_base64_lines() {
    let key = shared("rekor/keys/rekor.sigstage.dev.pub.pem");
    let out = run(&[
        "verify",
        "consistency",
        "--key",
        arg(&key),
        "--old",
        arg(&shared(V1_OLD)),
        "--new",
        arg(&shared(V1_NEW)),
        "--proof",
        arg(&shared(V1_PROOF)),
        "--json",
    ]);
    assert_eq!(status(&out), 0, "{:?}", stderr_lines(&out));
    assert_eq!(json(&out)["details"]["proof_hashes"], 9);

    let response: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shared(V1_PROOF)).unwrap()).unwrap();
    let lines: String = response["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let hash = witness_core::merkle::Hash::parse_hex(h.as_str().unwrap()).unwrap();
            format!("{}\n", hash.to_base64())
        })
        .collect();
    let proof = temp_file("proof.txt", lines.as_bytes());
    let args = |proof: &Path| {
        run(&[
            "verify",
            "consistency",
            "--key",
            arg(&key),
            "--old",
            arg(&shared(V1_OLD)),
            "--new",
            arg(&shared(V1_NEW)),
            "--proof",
            arg(proof),
        ])
    };
    assert_eq!(status(&args(&proof)), 0);

    // Dropping a hash, or swapping old and new, must fail with exit 1.
    let short: String = lines.lines().skip(1).map(|l| format!("{l}\n")).collect();
    let out = args(&temp_file("short.txt", short.as_bytes()));
    assert_eq!(status(&out), 1);
    assert!(stderr_lines(&out)[0].starts_with("invalid: consistency_proof_invalid"));
    let swapped = run(&[
        "verify",
        "consistency",
        "--key",
        arg(&key),
        "--old",
        arg(&shared(V1_NEW)),
        "--new",
        arg(&shared(V1_OLD)),
        "--proof",
        arg(&proof),
    ]);
    assert_eq!(status(&swapped), 1);
}

#[test]
fn consistency_between_different_logs_is_refused() {
    let key = shared("rekor/keys/rekor.sigstage.dev.pub.pem");
    let other_shard = temp_file(
        "other-shard.txt",
        serde_json::from_slice::<serde_json::Value>(
            &std::fs::read(shared(
                "rekor/loginfo/rekor-v1-staging.GET-api-v1-log.new.json",
            ))
            .unwrap(),
        )
        .unwrap()["inactiveShards"][2]["signedTreeHead"]
            .as_str()
            .unwrap()
            .as_bytes(),
    );
    let out = run(&[
        "verify",
        "consistency",
        "--key",
        arg(&key),
        "--old",
        arg(&shared(V1_OLD)),
        "--new",
        arg(&other_shard),
        "--proof",
        arg(&shared(V1_PROOF)),
    ]);
    assert_eq!(status(&out), 1);
    assert!(stderr_lines(&out)[0].starts_with("invalid: origin_mismatch"));
}

#[test]
fn every_bundle_verifies_against_its_trusted_root() {
    for (root, dirs) in [
        (
            "prod.root-signing.trusted_root.json",
            ["rekor-v1-prod", "rekor-v2-prod"],
        ),
        (
            "staging.root-signing-staging.trusted_root.json",
            ["rekor-v1-staging", "rekor-v2-staging"],
        ),
    ] {
        let mut bundles: Vec<PathBuf> = Vec::new();
        for dir in dirs {
            for entry in std::fs::read_dir(shared(&format!("rekor/bundles/{dir}"))).unwrap() {
                bundles.push(entry.unwrap().path());
            }
        }
        assert!(!bundles.is_empty());
        let root = shared(&format!("rekor/trusted_root/{root}"));
        let mut args = vec!["verify", "bundle", "--json", "--trusted-root", arg(&root)];
        args.extend(bundles.iter().map(|p| arg(p)));
        let out = run(&args);
        assert_eq!(status(&out), 0, "{:?}", stderr_lines(&out));
        let verdict = json(&out);
        assert_eq!(verdict["bundles"].as_array().unwrap().len(), bundles.len());
    }
}

#[test]
fn bundle_from_a_log_missing_in_the_trusted_root_exits_1_per_file() {
    let root = shared("rekor/trusted_root/prod.root-signing.trusted_root.json");
    let good = shared(
        "rekor/bundles/rekor-v2-prod/sigstore-js.fixture.V3.MESSAGE_SIGNATURE.TLOG_HASHEDREKORDV002.json",
    );
    let staging =
        shared("rekor/bundles/rekor-v2-staging/sigstore-python.staging-rekor-v2.sigstore.json");
    let out = run(&[
        "verify",
        "bundle",
        "--trusted-root",
        arg(&root),
        arg(&good),
        arg(&staging),
    ]);
    assert_eq!(status(&out), 1);
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("invalid: unknown_log"), "{lines:?}");
}

#[test]
fn bundle_with_tampered_body_exits_1() {
    let root = shared("rekor/trusted_root/prod.root-signing.trusted_root.json");
    let path = shared("rekor/bundles/rekor-v1-prod/sigstore-rs.bundle_v03.json");
    let mut bundle: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let entry = &mut bundle["verificationMaterial"]["tlogEntries"][0];
    let body = entry["canonicalizedBody"].as_str().unwrap().to_owned();
    let mut chars: Vec<char> = body.chars().collect();
    chars[10] = if chars[10] == 'A' { 'B' } else { 'A' };
    entry["canonicalizedBody"] = chars.into_iter().collect::<String>().into();
    let tampered = temp_file("tampered-bundle.json", bundle.to_string().as_bytes());
    let out = run(&[
        "verify",
        "bundle",
        "--trusted-root",
        arg(&root),
        arg(&tampered),
    ]);
    assert_eq!(status(&out), 1);
    assert!(stderr_lines(&out)[0].contains("invalid: inclusion_proof_invalid"));
}

#[test]
fn unreadable_bundle_or_trusted_root_exits_2() {
    let root = shared("rekor/trusted_root/prod.root-signing.trusted_root.json");
    assert_eq!(
        status(&run(&[
            "verify",
            "bundle",
            "--trusted-root",
            arg(&root),
            "/nonexistent.json"
        ])),
        2
    );
    let good = shared("rekor/bundles/rekor-v1-prod/sigstore-rs.bundle_v03.json");
    assert_eq!(
        status(&run(&[
            "verify",
            "bundle",
            "--trusted-root",
            "/nonexistent.json",
            arg(&good)
        ])),
        2
    );
    assert_eq!(
        status(&run(&["verify", "bundle", "--trusted-root", arg(&root)])),
        2
    );
}
