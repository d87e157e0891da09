//! The services' fuzz targets (one module each, `run` taking one input) and
//! the fixtures and checks they share. `fuzz_targets/*.rs` hand the modules
//! to libFuzzer; CI's smoke pass runs the same modules in the test build
//! (`integration/tests/service_fuzz_smoke.rs`, which includes this file), so
//! everything here names its siblings with `super::`, never `crate::`.
//!
//! The gRPC targets take one byte choosing the request message and the rest as
//! its protobuf encoding ([`split_message`]); `scripts/fuzz` builds its seeds
//! the same way. Keys come from the read-only shared test data, read at run
//! time (`$WITNESS_TESTDATA`, else `shared/testdata` beside the checkout).

pub mod gateway_config;
pub mod signer_config;
pub mod signer_grpc;
pub mod witness_config;
pub mod witness_grpc;

use std::path::PathBuf;
use std::sync::LazyLock;

use witness_core::checkpoint::{Checkpoint, parse_checkpoint_text};
use witness_core::merkle::Hash;
use witness_core::note::{SignatureType, VerifierKey, parse_note};

/// The shared test data directory.
pub fn testdata() -> PathBuf {
    match std::env::var_os("WITNESS_TESTDATA") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata"),
    }
}

/// The witness cosignature keys (cosignature/v1) of `rekor/keys/vkeys.txt`:
/// real witnesses, whose cosignatures one of the shared checkpoints carries,
/// so the signer target's "cosigned by us" check passes on that seed.
pub fn witness_keys() -> &'static [VerifierKey] {
    static KEYS: LazyLock<Vec<VerifierKey>> = LazyLock::new(|| {
        let path = testdata().join("rekor/keys/vkeys.txt");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read {} ({e}); set WITNESS_TESTDATA to the shared testdata directory",
                path.display()
            )
        });
        let keys: Vec<VerifierKey> = text
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter_map(|word| VerifierKey::parse_vkey(word).ok())
            .filter(|key| key.signature_type() == SignatureType::CosignatureV1)
            .collect();
        assert!(
            !keys.is_empty(),
            "no cosignature/v1 key in {}",
            path.display()
        );
        keys
    });
    &KEYS
}

/// The first byte of a fuzz input, choosing among `count` messages, and the
/// rest (the message's protobuf encoding). `None` for an empty input.
pub fn split_message(data: &[u8], count: u8) -> Option<(u8, &[u8])> {
    let (&selector, message) = data.split_first()?;
    Some((selector % count, message))
}

/// Asserts that converted hashes are the raw wire bytes, one for one.
pub fn assert_same_hashes(hashes: &[Hash], raw: &[Vec<u8>]) {
    assert_eq!(hashes.len(), raw.len(), "a proof hash was lost or added");
    for (hash, raw) in hashes.iter().zip(raw) {
        assert_eq!(&hash.0[..], &raw[..], "a hash differs from its wire bytes");
    }
}

/// The checkpoint body of a note, unverified: what a service parses before it
/// knows which keys to check the signatures with.
pub fn unverified_checkpoint(note: &[u8]) -> Option<Checkpoint> {
    let note = parse_note(note).ok()?;
    parse_checkpoint_text(note.text()).ok()
}
