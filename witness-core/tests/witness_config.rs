//! The witness configuration: the shipped example names the real Sigstore logs
//! with their real keys, the witness network's real log lists load, and
//! mistakes an operator can make are refused with a clear message.

#![allow(clippy::unwrap_used)]

mod shared_support;

use std::path::Path;

use witness_core::log_list::parse_log_list;
use witness_core::note::SignatureType;
use witness_core::service::config::WitnessConfig;
use witness_core::service::witness::Feed;

fn example() -> WitnessConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/witness.example.toml");
    WitnessConfig::load(&path).expect("the shipped example parses")
}

#[test]
fn shipped_example_lists_the_real_rekor_logs_with_keys_from_the_trusted_roots() {
    let config = example();
    assert_eq!(config.checkpoint_interval.as_secs(), 3600);
    let logs = config.trusted_logs(Path::new("/")).unwrap();
    // Rekor v1 (P-256, sharded) in production and staging.
    let prefixes: Vec<&str> = logs
        .sharded
        .iter()
        .map(|s| s.origin_prefix.as_str())
        .collect();
    assert_eq!(prefixes, ["rekor.sigstore.dev - ", "rekor.sigstage.dev - "]);
    // Rekor v2 (Ed25519, tiles).
    let tiles: Vec<&str> = logs.logs.iter().map(|l| l.origin.as_str()).collect();
    assert_eq!(
        tiles,
        [
            "log2025-1.rekor.sigstore.dev",
            "log2025-alpha3.rekor.sigstage.dev",
            "log2026-1.us-east4.rekor.sigstage.dev"
        ]
    );
    assert!(
        logs.logs
            .iter()
            .all(|l| matches!(l.feed, Feed::Tiles { .. }))
    );
    // Every key is the one in the real PEM files of the trusted roots, and the
    // real checkpoints in ../shared verify with them.
    let pems = shared_support::pem_files();
    for key in logs
        .logs
        .iter()
        .flat_map(|l| &l.keys)
        .chain(logs.sharded.iter().flat_map(|s| &s.keys))
    {
        let from_pem = pems.iter().find_map(|(name, pem)| {
            witness_core::note::VerifierKey::from_pem(key.name(), pem)
                .ok()
                .filter(|k| k.to_vkey() == key.to_vkey())
                .map(|_| name.clone())
        });
        assert!(
            from_pem.is_some(),
            "{} is not a real Rekor key",
            key.to_vkey()
        );
    }
    let v1 = &logs.sharded[0].keys[0];
    assert_eq!(v1.signature_type(), SignatureType::EcdsaP256);
    let checkpoint = shared_support::read(&shared_support::data_path(
        "rekor/checkpoints/valid/rekor.sigstore.dev_-_1193050959916656506.1139201557.d191047b.txt",
    ));
    witness_core::checkpoint::verify_checkpoint(&checkpoint, std::slice::from_ref(v1), None)
        .expect("a real production checkpoint verifies with the example's key");
}

#[test]
fn real_witness_network_log_lists_load() {
    for (file, expected) in [
        ("witness-network.testing.log-list.1", 9),
        ("witness-network.staging.log-list-100qps-40klogs.1", 11),
    ] {
        let text = shared_support::read_string(&shared_support::data_path(&format!(
            "witness-lists/{file}"
        )));
        let logs = parse_log_list(&text).unwrap();
        assert_eq!(logs.len(), expected, "{file}");
        assert!(logs.iter().all(|l| l.qpd >= 1 && !l.origin.is_empty()));
    }
    // Through the configuration: every listed log is a push log.
    let list = shared_support::data_path("witness-lists/witness-network.testing.log-list.1");
    let text = format!(
        "log_lists = [{:?}]\n[signer]\nendpoint = \"https://s:1\"\nca = \"a\"\nclient_cert = \"b\"\nclient_key = \"c\"\n",
        list.display().to_string()
    );
    let logs = WitnessConfig::parse(&text)
        .unwrap()
        .trusted_logs(Path::new("/"))
        .unwrap();
    assert_eq!(logs.logs.len(), 9);
    assert!(logs.logs.iter().all(|l| l.feed == Feed::Push));
}

#[test]
fn operator_mistakes_are_refused_with_a_reason() {
    let signer = "[signer]\nendpoint = \"https://s:1\"\nca = \"a\"\nclient_cert = \"b\"\nclient_key = \"c\"\n";
    let vkey = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
    for (text, reason) in [
        (format!("unknown_field = 1\n{signer}"), "unknown field"),
        (
            format!("rekor_urls = [\"https://a\"]\n{signer}"),
            "same length",
        ),
        (
            format!("listen = \"0.0.0.0:7380\"\n{signer}"),
            "needs [tls]",
        ),
        (
            format!("checkpoint_interval = \"forever\"\n{signer}"),
            "forever",
        ),
        (
            format!("checkpoint_interval = \"0s\"\n{signer}"),
            "at least 1s",
        ),
        ("state = \"x\"\n".to_owned(), "signer"),
        (
            format!("mirror_path = \"/srv/mirror.car\"\n{signer}"),
            "needs mirror_key",
        ),
    ] {
        let error = WitnessConfig::parse(&text).unwrap_err().to_string();
        assert!(error.contains(reason), "{text:?}: {error}");
    }
    let twice = format!("[[log]]\nkey = \"{vkey}\"\n[[log]]\nkey = \"{vkey}\"\n{signer}");
    let error = WitnessConfig::parse(&twice)
        .unwrap()
        .trusted_logs(Path::new("/"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("configured twice"), "{error}");
    let pull_without_url = format!("[[log]]\nkey = \"{vkey}\"\nfeed = \"tiles\"\n{signer}");
    let error = WitnessConfig::parse(&pull_without_url)
        .unwrap()
        .trusted_logs(Path::new("/"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("needs a url"), "{error}");
}
