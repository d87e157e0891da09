//! The witness service: cosigns checkpoints of the logs it trusts only when they
//! are consistent with everything it cosigned before, over gRPC (the gateway
//! serves the HTTP tlog-witness API on top of it), and pulls checkpoints from
//! logs that cannot push.
//!
//! The verification itself is the pure core of this crate; this module adds the
//! I/O around it: durable state ([`store`]), the signer client, pull feeders
//! ([`feeder`]), re-cosigning and the checkpoint archive ([`archive`]), metrics
//! and the gRPC server.

pub mod archive;
pub mod config;
pub mod feeder;
pub mod grpc;
pub mod metrics;
pub mod recosign;
pub mod server;
pub mod signer_client;
pub mod store;
pub mod telemetry;
pub mod witness;
