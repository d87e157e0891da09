//! Mirror bundle Statements (the DSSE payload, docs/mirror-bundle-v1.md §4):
//! what parses names one subject, the CAR file, has a well-formed range and
//! lists the entry bundles of it; it serializes back to a Statement that
//! parses to the same digest and predicate.

#![no_main]

use libfuzzer_sys::fuzz_target;
use witness_core::mirror::{parse_statement, serialize_statement, tile_paths};

fuzz_target!(|data: &[u8]| {
    let Ok((sha256, predicate)) = parse_statement(data) else {
        return;
    };
    assert!(predicate.start <= predicate.size);
    assert_eq!(predicate.previous_size.is_some(), predicate.start > 0);
    // The tiles list is as long as the input allows, so building the
    // expected one is bounded too.
    assert_eq!(predicate.tiles, tile_paths(predicate.start, predicate.size));
    let written = serialize_statement(&sha256, &predicate).expect("a parsed Statement serializes");
    let (again_sha256, again) = parse_statement(&written).expect("a written Statement parses");
    assert_eq!((again_sha256, again), (sha256, predicate));
});
