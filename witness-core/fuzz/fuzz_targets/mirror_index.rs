//! Mirror bundle INDEX blocks (docs/mirror-bundle-v1.md §2.5): what parses has
//! a well-formed range, lists exactly the entry bundles the range lays out,
//! carries the incremental blocks exactly when incremental, and serializes
//! back to an INDEX that parses to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use witness_core::mirror::{bundle_spans, parse_index, serialize_index};

fuzz_target!(|data: &[u8]| {
    let Ok(index) = parse_index(data) else {
        return;
    };
    assert!(index.start <= index.size);
    assert_eq!(index.previous_size.is_some(), index.start > 0);
    assert_eq!(index.frontier.is_some(), index.start > 0);
    assert_eq!(index.consistency_proof.is_some(), index.start > 0);
    let spans = bundle_spans(index.start, index.size);
    assert_eq!(spans.len(), index.entry_bundles.len() as u64);
    for (listed, span) in index.entry_bundles.iter().zip(spans) {
        assert_eq!(
            (listed.index, listed.width),
            (span.tile.index, span.tile.width)
        );
    }
    let written = serialize_index(&index).expect("a parsed INDEX serializes");
    assert_eq!(
        parse_index(&written).expect("a written INDEX parses"),
        index
    );
});
