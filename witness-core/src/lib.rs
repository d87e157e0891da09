//! Verification core of the Rekor witness.
//!
//! In scope: C2SP signed notes and verifier keys ([`note`]), C2SP checkpoints
//! ([`checkpoint`]), C2SP tlog-cosignature messages ([`cosignature`]), RFC 6962 /
//! RFC 9162 Merkle trees with proof verification and generation ([`merkle`]),
//! C2SP tlog-tiles coordinates and a tile-backed hash source ([`tiles`]), Rekor v1
//! REST formats ([`rekor`]), the transparency-log part of Sigstore bundles
//! ([`bundle`]) and the c2sp.org/tlog-witness HTTP bodies ([`witness_api`]).
//!
//! Out of scope: certificates, timestamps and artifact signatures in bundles, and
//! any I/O. The modules above are pure: no async runtime, no network, no clock and
//! no global state. Callers hand in bytes and get typed values or an [`Error`].

#![forbid(unsafe_code)]

pub mod bundle;
pub mod checkpoint;
pub mod cosignature;
pub mod dsse;
pub mod error;
pub mod log_list;
pub mod merkle;
pub mod mirror;
/// CARv1 reading and writing for mirror bundles (feature `car`, part of
/// `service`; alone for the fuzz targets).
#[cfg(feature = "car")]
pub mod mirror_car;
pub mod note;
pub mod peer_identity;
pub mod rekor;
pub mod secret_file;
pub mod tiles;
#[cfg(feature = "tls-reload")]
pub mod tls_reload;
pub mod witness_api;

pub use error::Error;

/// Result type of the verification core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(feature = "service")]
pub mod service;
