//! Witness-network `logs/v0` lists: parsing never panics, every listed log has
//! an Ed25519 key, a non-empty origin and a quota in [1, 2^31), and a list
//! rebuilt from what was parsed parses to the same logs.

#![no_main]

use libfuzzer_sys::fuzz_target;
use witness_core::log_list::parse_log_list;
use witness_core::note::SignatureType;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(logs) = parse_log_list(text) else {
        return;
    };
    let mut rebuilt = String::from("logs/v0\n");
    for log in &logs {
        assert_eq!(log.key.signature_type(), SignatureType::Ed25519);
        assert!(!log.origin.is_empty());
        assert!(log.qpd >= 1 && log.qpd < 1 << 31);
        rebuilt.push_str(&format!(
            "vkey {}\norigin {}\nqpd {}\ncontact {}\n",
            log.key.to_vkey(),
            log.origin,
            log.qpd,
            log.contact
        ));
    }
    let again = parse_log_list(&rebuilt).expect("a rebuilt list parses");
    assert_eq!(again.len(), logs.len());
    for (a, b) in again.iter().zip(&logs) {
        assert_eq!(a.key.to_vkey(), b.key.to_vkey());
        assert_eq!((&a.origin, a.qpd, &a.contact), (&b.origin, b.qpd, &b.contact));
    }
});
