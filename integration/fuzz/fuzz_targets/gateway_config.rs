#![no_main]

use libfuzzer_sys::fuzz_target;

// The body is in src/gateway_config.rs, shared with CI's smoke pass
// (integration/tests/service_fuzz_smoke.rs).
fuzz_target!(|data: &[u8]| services_fuzz::gateway_config::run(data));
