//! The transparency-dev/merkle test probes in
//! `../shared/testdata/merkle/transparency-dev-merkle-testdata`: every inclusion
//! and consistency probe must give the expected answer through
//! `merkle::verify_inclusion` / `merkle::verify_consistency`.

#![allow(clippy::unwrap_used)]

mod shared_support;

use std::collections::BTreeSet;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;
use witness_core::Error;
use witness_core::merkle::{Hash, verify_consistency, verify_inclusion};

use shared_support::*;

const ROOT: &str = "merkle/transparency-dev-merkle-testdata";

/// A base64 hash field. A field that is null, not base64, or not 32 bytes
/// cannot become a typed `Hash`: that is an error result for the probe.
fn hash(value: &Value) -> Result<Hash, Error> {
    let text = value.as_str().ok_or(Error::MalformedProof {
        reason: "hash field is not a string",
    })?;
    let bytes = BASE64.decode(text).map_err(|_| Error::MalformedProof {
        reason: "hash field is not base64",
    })?;
    Hash::from_slice(&bytes)
}

/// The `proof` field: null is the empty proof.
fn proof(value: &Value) -> Result<Vec<Hash>, Error> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items.iter().map(hash).collect(),
        _ => panic!("proof is neither null nor an array"),
    }
}

/// A size or index field: a JSON integer; negative values cannot be a u64.
fn size(value: &Value) -> Result<u64, Error> {
    assert!(value.is_i64() || value.is_u64(), "not an integer: {value}");
    value.as_u64().ok_or(Error::MalformedProof {
        reason: "negative size or index",
    })
}

fn run_inclusion(probe: &Value) -> Result<(), Error> {
    verify_inclusion(
        &hash(&probe["leafHash"])?,
        size(&probe["leafIdx"])?,
        size(&probe["treeSize"])?,
        &proof(&probe["proof"])?,
        &hash(&probe["root"])?,
    )
}

fn run_consistency(probe: &Value) -> Result<(), Error> {
    verify_consistency(
        size(&probe["size1"])?,
        size(&probe["size2"])?,
        &hash(&probe["root1"])?,
        &hash(&probe["root2"])?,
        &proof(&probe["proof"])?,
    )
}

/// Runs every probe below `dir`; returns the probes whose outcome differs from
/// `wantErr`, and how many probes ran.
fn run_all(
    dir: &str,
    min: usize,
    run: fn(&Value) -> Result<(), Error>,
) -> (BTreeSet<String>, usize) {
    let files = files_below(&format!("{ROOT}/{dir}"), ".json", min);
    let mut divergent = BTreeSet::new();
    for path in &files {
        let probe = read_json(path);
        let want_err = probe["wantErr"]
            .as_bool()
            .unwrap_or_else(|| panic!("{}: no wantErr", rel(path)));
        let result = run(&probe);
        if let Err(err) = &result {
            // Only the errors a proof check or a hash parse may give.
            assert!(
                matches!(
                    err,
                    Error::MalformedProof { .. }
                        | Error::ProofTooLong { .. }
                        | Error::InclusionProofInvalid { .. }
                        | Error::ConsistencyProofInvalid { .. }
                ),
                "{}: {err:?}",
                rel(path)
            );
        }
        if result.is_err() != want_err {
            divergent.insert(relative_to_root(path));
        }
    }
    (divergent, files.len())
}

fn relative_to_root(path: &Path) -> String {
    path.strip_prefix(data_path(ROOT))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn every_inclusion_probe_gives_the_expected_answer() {
    let (divergent, count) = run_all("inclusion", 80, run_inclusion);
    assert!(count >= 80);
    assert_eq!(
        divergent,
        BTreeSet::new(),
        "inclusion probes with another answer"
    );
}

#[test]
fn every_consistency_probe_gives_the_expected_answer_but_the_one_with_12_byte_roots() {
    let (divergent, count) = run_all("consistency", 90, run_consistency);
    assert!(count >= 90);
    // The one deliberate divergence. This probe (from transparency-dev/merkle's
    // "additional" cases) expects success for size1 == size2 == 1 with an empty
    // proof and two equal 12-byte "roots" (base64 of "don't care 2"): Go compares
    // the byte slices and never looks at their length. Our API takes a typed
    // 32-byte `Hash`, so such roots are refused when they are parsed, before any
    // proof check. Any other divergence fails this test.
    //
    // Also by design, `verify_consistency` refuses old_size == 0 (every tree is
    // consistent with the empty tree, so there is nothing to prove); the probes
    // with size1 == 0 all expect an error, so they agree.
    assert_eq!(
        divergent,
        BTreeSet::from([
            "consistency/additional/sizes-are-equal-one-and-proof-is-empty.json".to_owned()
        ])
    );
    let probe = read_json(&data_path(&format!(
        "{ROOT}/consistency/additional/sizes-are-equal-one-and-proof-is-empty.json"
    )));
    assert_eq!(probe["root1"], probe["root2"]);
    let raw = BASE64.decode(probe["root1"].as_str().unwrap()).unwrap();
    assert_eq!(raw.len(), 12);
    assert!(matches!(
        Hash::from_slice(&raw),
        Err(Error::MalformedProof { .. })
    ));
    // With 32-byte equal roots, the same probe does succeed.
    assert!(verify_consistency(1, 1, &Hash([9; 32]), &Hash([9; 32]), &[]).is_ok());
}

#[test]
fn consistency_probes_with_size1_zero_all_expect_errors() {
    let files = files_below(&format!("{ROOT}/consistency"), ".json", 90);
    let mut zero = 0;
    for path in &files {
        let probe = read_json(path);
        if probe["size1"].as_u64() == Some(0) {
            zero += 1;
            assert_eq!(probe["wantErr"], Value::Bool(true), "{}", rel(path));
            // Even with well-formed 32-byte roots, size 0 is refused.
            assert!(matches!(
                verify_consistency(
                    0,
                    size(&probe["size2"]).unwrap(),
                    &Hash([0; 32]),
                    &Hash([0; 32]),
                    &[]
                ),
                Err(Error::ConsistencyProofInvalid { .. })
            ));
        }
    }
    assert!(zero >= 5, "only {zero} probes with size1 == 0");
}

#[test]
fn happy_path_probes_fail_once_the_root_is_changed() {
    // Guards against a verifier that accepts everything: each happy path is
    // accepted as given and refused with one bit of its root flipped.
    for (dir, run, root_fields) in [
        (
            "inclusion",
            run_inclusion as fn(&Value) -> Result<(), Error>,
            &["root"][..],
        ),
        ("consistency", run_consistency, &["root1", "root2"][..]),
    ] {
        let happy: Vec<_> = files_below(&format!("{ROOT}/{dir}"), ".json", 20)
            .into_iter()
            .filter(|p| file_name(p) == "happy-path.json")
            .collect();
        assert!(happy.len() >= 5, "{dir}: {} happy paths", happy.len());
        for path in happy {
            let probe = read_json(&path);
            assert_eq!(probe["wantErr"], Value::Bool(false));
            run(&probe).unwrap_or_else(|e| panic!("{}: {e}", rel(&path)));
            for field in root_fields {
                let mut bad = probe.clone();
                let mut raw = BASE64.decode(bad[field].as_str().unwrap()).unwrap();
                raw[0] ^= 1;
                bad[field] = Value::String(BASE64.encode(raw));
                assert!(run(&bad).is_err(), "{} with {field} changed", rel(&path));
            }
        }
    }
}
