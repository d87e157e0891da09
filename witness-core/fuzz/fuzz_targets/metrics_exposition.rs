//! The gateway's Prometheus text-format parser (`gateway/src/metrics/exposition.rs`),
//! which reads the witness's and the signer's `Metrics` answers: parsing any
//! text never panics; what parses serializes into text that parses to the same
//! families (values compared bit for bit, so NaN and -0 count) and serializes
//! to the same text again; and merging it under a service label yields text
//! that parses, every sample labelled with that service first.

#![no_main]

// The parser is one std-only file of the gateway; included by path so that the
// fuzz build does not compile the whole gateway (tokio, hyper, tonic, ...).
#[allow(dead_code)]
#[path = "../../../gateway/src/metrics/exposition.rs"]
mod exposition;

use exposition::{Family, merge, parse, serialize};
use libfuzzer_sys::fuzz_target;

/// Families equal field by field, sample values by their bits.
fn same(a: &[Family], b: &[Family]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            a.name == b.name
                && a.help == b.help
                && a.kind == b.kind
                && a.samples.len() == b.samples.len()
                && a.samples.iter().zip(&b.samples).all(|(a, b)| {
                    a.name == b.name
                        && a.labels == b.labels
                        && a.value.to_bits() == b.value.to_bits()
                        && a.timestamp_ms == b.timestamp_ms
                })
        })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(families) = parse(&text) else {
        return;
    };
    let serialized = serialize(&families);
    let again = parse(&serialized).expect("serialized families parse");
    assert!(
        same(&families, &again),
        "the round trip changed the families:\n{families:?}\n{again:?}"
    );
    assert_eq!(serialize(&again), serialized, "serialization is not a fixpoint");

    let samples: usize = families.iter().map(|f| f.samples.len()).sum();
    let (merged, conflicts) = merge(vec![("witness", families)]);
    assert!(conflicts.is_empty(), "one service cannot conflict with itself");
    let merged = parse(&merged).expect("merged text parses");
    let kept: usize = merged.iter().map(|f| f.samples.len()).sum();
    assert!(kept <= samples);
    for sample in merged.iter().flat_map(|f| &f.samples) {
        assert_eq!(
            sample.labels.first().map(|(n, v)| (n.as_str(), v.as_str())),
            Some(("service", "witness"))
        );
    }
});
