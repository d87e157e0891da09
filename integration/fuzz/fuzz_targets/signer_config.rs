#![no_main]

use libfuzzer_sys::fuzz_target;

// The body is in src/signer_config.rs, shared with CI's smoke pass
// (integration/tests/service_fuzz_smoke.rs).
fuzz_target!(|data: &[u8]| services_fuzz::signer_config::run(data));
