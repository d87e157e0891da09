//! tlog-witness request bodies (`add-checkpoint`, `sign-subtree`): parsing
//! never panics, and a body rebuilt from what was parsed parses to the same
//! request.

#![no_main]

use libfuzzer_sys::fuzz_target;
use witness_core::witness_api::{
    parse_add_checkpoint_body, parse_sign_subtree_body, serialize_add_checkpoint_body,
    serialize_sign_subtree_body,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = parse_add_checkpoint_body(data) {
        let again = parse_add_checkpoint_body(&serialize_add_checkpoint_body(&request))
            .expect("a rebuilt add-checkpoint body parses");
        assert_eq!(again, request);
    }
    if let Ok(request) = parse_sign_subtree_body(data) {
        let again = parse_sign_subtree_body(&serialize_sign_subtree_body(&request))
            .expect("a rebuilt sign-subtree body parses");
        assert_eq!(again, request);
    }
});
