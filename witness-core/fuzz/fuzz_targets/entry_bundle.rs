//! tlog-tiles entry bundles: a parsed bundle holds exactly the expected number
//! of entries, writes back to the input, and no other count parses it.
//!
//! Input: the expected entry count as a big-endian u16, then the bundle.

#![no_main]

use libfuzzer_sys::fuzz_target;
use witness_core::tiles::parse_entry_bundle;

fuzz_target!(|data: &[u8]| {
    let Some((count, bundle)) = data.split_first_chunk::<2>() else {
        return;
    };
    let expected = usize::from(u16::from_be_bytes(*count));
    let Ok(entries) = parse_entry_bundle(bundle, expected) else {
        return;
    };
    assert_eq!(entries.len(), expected);
    let mut written = Vec::with_capacity(bundle.len());
    for entry in &entries {
        let len = u16::try_from(entry.len()).expect("entries are at most 65535 bytes");
        written.extend_from_slice(&len.to_be_bytes());
        written.extend_from_slice(entry);
    }
    assert_eq!(written, bundle);
    assert!(parse_entry_bundle(bundle, expected + 1).is_err());
    if expected > 0 {
        assert!(parse_entry_bundle(bundle, expected - 1).is_err());
    }
});
