//! The witness service: cosigns checkpoints of the logs it trusts only when they
//! are consistent with everything it cosigned before, over gRPC (the gateway
//! serves the HTTP tlog-witness API on top of it), and pulls checkpoints from
//! logs that cannot push.
//!
//! The verification itself is the pure core of this crate; this module adds the
//! I/O around it: durable state ([`store`]), the signer client, pull feeders
//! ([`feeder`]), re-cosigning and the checkpoint archive ([`archive`]), metrics
//! and the gRPC server.

pub mod airgap;
pub mod archive;
pub mod config;
pub mod dev_stack;
pub mod feeder;
pub mod grpc;
pub mod metrics;
pub mod mirror;
pub mod recosign;
pub mod server;
pub mod signer_client;
pub mod store;
pub mod telemetry;
pub mod witness;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Deserializes a `humantime` duration ("10s", "1h", "1day") from a string.
pub(crate) fn duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<std::time::Duration, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(serde::de::Error::custom)
}
