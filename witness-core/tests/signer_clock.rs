//! The witness's check of the signer's clock: a cosignature whose time is
//! more than the tolerance away from the witness's clock, either way, is
//! refused as a `signer_clock` failure (503), never revealed. The end-to-end
//! tests with the real signer under libfaketime are in
//! integration/tests/faults.rs.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use witness_core::Error;
use witness_core::service::signer_client::{MAX_SIGNER_CLOCK_SKEW, check_signer_clock};

const NOW: u64 = 1_800_000_000;

#[test]
fn signer_clock_within_the_tolerance_either_way_is_accepted() {
    let tolerance = MAX_SIGNER_CLOCK_SKEW.as_secs();
    for timestamp in [NOW, NOW - 1, NOW + 1, NOW - tolerance, NOW + tolerance] {
        check_signer_clock(timestamp, NOW, MAX_SIGNER_CLOCK_SKEW)
            .unwrap_or_else(|e| panic!("{timestamp}: {e}"));
    }
}

#[test]
fn signer_clock_in_the_past_or_future_beyond_the_tolerance_is_refused() {
    let tolerance = Duration::from_secs(60);
    for (timestamp, direction) in [
        (NOW - 61, "behind"),
        (NOW + 61, "ahead of"),
        (NOW - 86_400 * 365, "behind"),
        (1, "behind"),
        (u64::MAX, "ahead of"),
    ] {
        let error = check_signer_clock(timestamp, NOW, tolerance).unwrap_err();
        assert!(matches!(error, Error::SignerClock { .. }), "{error:?}");
        assert_eq!(error.kind(), "signer_clock");
        assert_eq!(error.http_status(), 503);
        assert!(error.to_string().contains(direction), "{error}");
    }
}
