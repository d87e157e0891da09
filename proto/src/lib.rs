//! gRPC definitions shared by `witness-core`, `signer-svc` and `gateway`, and the
//! tonic code generated from them. Wire types are converted to the core's
//! validated domain types at the edge of each service, never used past it.

#![forbid(unsafe_code)]

/// Key custody: `rekorwitness.signer.v1`.
pub mod signer {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("rekorwitness.signer.v1");
}

/// The witness service: `rekorwitness.witness.v1`.
pub mod witness {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("rekorwitness.witness.v1");
}
