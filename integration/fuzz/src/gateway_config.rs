//! The gateway's configuration file (`GatewayConfig::parse`, which
//! `from_file` runs): any text is refused with an error or accepted, never a
//! panic, and an accepted configuration routes (its prefixes are empty or
//! `/segment` without a trailing slash or router syntax), serves plain HTTP on
//! loopback only, and parses again from the same text to an equal value.

use gateway::config::GatewayConfig;

fn routable(prefix: &str) -> bool {
    prefix.is_empty()
        || (prefix.starts_with('/') && !prefix.ends_with('/') && !prefix.contains(['{', '}', '*']))
}

/// Runs one input: returns on anything the parser refuses, panics when a
/// property of an accepted input does not hold.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = GatewayConfig::parse(text) else {
        return;
    };
    assert!(routable(&config.submission_prefix));
    assert!(routable(&config.monitoring_prefix));
    assert!(config.tls.is_some() || config.listen.ip().is_loopback());
    if let Some(tls) = &config.tls {
        assert!(!tls.reload_interval.is_zero());
    }
    let again = GatewayConfig::parse(text).expect("an accepted configuration parses again");
    assert_eq!(again, config);
}
