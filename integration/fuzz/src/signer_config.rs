//! The signer's configuration file (`signer_svc::config::Config::parse`): any
//! text is refused with an error or accepted, never a panic, and an accepted
//! configuration names at least one caller, only `uri:` or `dns:` identities,
//! a cosigner name that makes a note signature line, and a manifest algorithm
//! the signer has with payload types of 1 to 255 bytes.

use signer_svc::config::Config;
use witness_core::note::NoteSignature;

/// Runs one input: returns on anything the parser refuses, panics when a
/// property of an accepted input does not hold.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(text) else {
        return;
    };
    assert!(!config.tls.allowed_identities.is_empty());
    for identity in config
        .tls
        .allowed_identities
        .iter()
        .chain(&config.tls.observer_identities)
    {
        assert!(identity.starts_with("uri:") || identity.starts_with("dns:"));
    }
    assert!(NoteSignature::new(&config.cosigner.name, 0, vec![]).is_ok());
    if let Some(manifest) = &config.manifest {
        assert!(matches!(
            manifest.algorithm.as_str(),
            "ecdsa-p256" | "ed25519"
        ));
        assert!(
            manifest
                .payload_types
                .iter()
                .all(|t| !t.is_empty() && t.len() <= signer_svc::dsse::MAX_PAYLOAD_TYPE_LEN)
        );
    }
}
