#![no_main]

use libfuzzer_sys::fuzz_target;

// The body is in src/signer_grpc.rs, shared with CI's smoke pass
// (integration/tests/service_fuzz_smoke.rs).
fuzz_target!(init: { services_fuzz::witness_keys(); }, |data: &[u8]| services_fuzz::signer_grpc::run(data));
