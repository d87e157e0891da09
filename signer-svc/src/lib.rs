//! Key custody: the only process that ever holds a witness private key.
//!
//! The service (typed signing calls over gRPC with mutual TLS, file / PKCS#11 /
//! Google Cloud KMS backends, an independent fork guard) is built in its own issue;
//! until then the crate is intentionally empty.
