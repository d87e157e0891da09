//! gRPC definitions shared by `witness-core`, `signer-svc` and `gateway`.
//!
//! The `.proto` files and the tonic code generated from them land here with the
//! signer and witness service issues; until then the crate is intentionally empty.
