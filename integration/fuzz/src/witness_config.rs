//! The witness service's configuration file (`WitnessConfig::parse`): any text
//! is refused with an error or accepted, never a panic, and an accepted
//! configuration has every property `parse` checks. When its logs are all
//! given as vkeys (no file to read), resolving them (`trusted_logs`, the
//! service's start-up) is checked too: no origin twice, one key per log.

use std::path::Path;
use std::time::Duration;

use witness_core::note::VerifierKey;
use witness_core::service::config::{ServiceMode, WitnessConfig};

/// Runs one input: returns on anything the parser refuses, panics when a
/// property of an accepted input does not hold.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = WitnessConfig::parse(text) else {
        return;
    };
    assert_eq!(config.rekor_urls.len(), config.rekor_keys.len());
    assert!(config.tls.is_some() || config.listen.ip().is_loopback());
    if let Some(tls) = &config.tls {
        assert!(!tls.allowed_identities.is_empty());
        for identity in &tls.allowed_identities {
            assert!(identity.len() > 4);
            assert!(identity.starts_with("uri:") || identity.starts_with("dns:"));
        }
    }
    assert_eq!(config.mirror_path.is_some(), config.mirror_key.is_some());
    let airgap = matches!(config.mode(Path::new("/base")), ServiceMode::Airgap(_));
    assert_eq!(airgap, config.mirror_path.is_some());
    for interval in [
        config.mirror_scan_interval,
        config.checkpoint_interval,
        config.poll_interval,
    ] {
        assert!(interval >= Duration::from_secs(1));
    }

    // Only files could make resolving the logs depend on more than the text.
    let keys_inline = config.log_lists.is_empty()
        && config
            .rekor_keys
            .iter()
            .chain(config.logs.iter().map(|log| &log.key))
            .all(|key| VerifierKey::parse_vkey(key).is_ok());
    if !keys_inline {
        return;
    }
    let Ok(logs) = config.trusted_logs(Path::new("/nonexistent")) else {
        return;
    };
    let mut origins: Vec<&str> = logs.logs.iter().map(|log| log.origin.as_str()).collect();
    origins.sort_unstable();
    let count = origins.len();
    origins.dedup();
    assert_eq!(origins.len(), count, "an origin is trusted twice");
    assert!(logs.logs.iter().all(|log| log.keys.len() == 1));
    assert!(
        logs.sharded
            .iter()
            .all(|shard| shard.origin_prefix.ends_with(" - "))
    );
    assert!(logs.logs.len() + logs.sharded.len() <= config.rekor_urls.len() + config.logs.len());
}
