//! Air-gap mode: the witness consumes signed Rekor mirror bundles from a
//! directory, verifies each against what it cosigned before, cosigns through
//! the real signer (`file` backend: the offline key) and writes the audit
//! directory; it does so inside a network namespace holding only loopback
//! (the real `signer-svc` and `rekor-witness` binaries); and every kind of
//! tampered bundle is refused with its precise reason while nothing is
//! cosigned.

#![allow(clippy::unwrap_used)]

mod support_feeders;
mod witness_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use support_feeders::{TilesLog, TilesServer, root_of};
use witness_core::merkle::Hash;
use witness_core::mirror::{
    CAR_FILE, ENVELOPE_FILE, PAYLOAD_TYPE, parse_statement, serialize_statement,
};
use witness_core::note::{VerifierKey, parse_note, verify_note};
use witness_core::service::airgap::{
    AUDIT_DIR, AUDIT_MANIFEST, AUDIT_REJECTED, BundleOutcome, MirrorConsumer, audit_checkpoint_name,
};
use witness_core::service::archive::{ManifestVerifier, verify_manifest};
use witness_core::service::config::WitnessConfig;
use witness_core::service::feeder::LogUrl;
use witness_core::service::mirror::FileManifestSigner;
use witness_core::service::mirror::{PackOptions, PackStart, pack_tiles};
use witness_core::service::witness::LogKeys;
use witness_support::{SignerHarness, TestLog, WitnessHarness, pki};

/// The mirror producer's P-256 key: the private PEM (to sign bundles) and the
/// public one (the witness's `mirror_key`).
struct MirrorKey {
    private_pem: String,
    public_pem: String,
}

impl MirrorKey {
    fn generate() -> MirrorKey {
        use p256::pkcs8::{DecodePrivateKey as _, EncodePublicKey as _, LineEnding};
        let private_pem =
            signer_svc::keys::file::generate_pkcs8_pem(signer_svc::keys::Algorithm::EcdsaP256)
                .unwrap();
        let secret = p256::SecretKey::from_pkcs8_pem(&private_pem).unwrap();
        let public_pem = secret
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        MirrorKey {
            private_pem,
            public_pem,
        }
    }

    fn verifier(&self) -> ManifestVerifier {
        ManifestVerifier::from_pem(&self.public_pem).unwrap()
    }
}

/// A tlog-tiles log served on loopback (the connected side), packed into
/// bundles with the mirror writer.
struct ServedLog {
    server: Arc<TilesServer>,
    url: String,
    origin: String,
    key: VerifierKey,
}

impl ServedLog {
    async fn start(origin: &str) -> ServedLog {
        let log = TilesLog::new(origin);
        let key = log.verifier.clone();
        let (server, url) = TilesServer::start(log).await;
        ServedLog {
            server,
            url,
            origin: origin.to_owned(),
            key,
        }
    }

    fn grow(&self, count: usize) {
        self.server.log.lock().unwrap().grow(count);
    }

    fn root(&self, size: u64) -> Hash {
        root_of(self.server.log.lock().unwrap().leaves(), size)
    }

    fn checkpoint(&self) -> Vec<u8> {
        self.server.log.lock().unwrap().checkpoint()
    }

    /// Packs the log at its current size from `start` into
    /// `dir/.staging/<name>` with the mirror writer, signed by `mirror_key`,
    /// then renames it to `dir/<name>` (a bundle appears whole, as the air-gap
    /// module documentation asks of operators).
    async fn pack(&self, dir: &Path, name: &str, start: PackStart, mirror_key: &MirrorKey) {
        let staging = dir.join(".staging").join(name);
        let options = PackOptions {
            log: LogUrl::parse(&self.url).unwrap(),
            log_key: self.key.clone(),
            origin: Some(self.origin.clone()),
            out: staging.clone(),
            start,
            request_timeout: Duration::from_secs(10),
        };
        let signer = FileManifestSigner::from_pkcs8_pem(&mirror_key.private_pem).unwrap();
        pack_tiles(&options, &signer, &mut |_, _| {}).await.unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::rename(&staging, dir.join(name)).unwrap();
    }
}

fn audit_file(mirror: &Path, origin: &str, size: u64) -> PathBuf {
    mirror
        .join(AUDIT_DIR)
        .join(audit_checkpoint_name(origin, size))
}

/// Checks an audit checkpoint: the log's checkpoint at `size`, signed by the
/// log and cosigned by the witness.
fn assert_audited(mirror: &Path, log: &ServedLog, size: u64, witness_keys: &[VerifierKey]) {
    let path = audit_file(mirror, &log.origin, size);
    let note =
        std::fs::read(&path).unwrap_or_else(|e| panic!("audit checkpoint {}: {e}", path.display()));
    let body = witness_core::checkpoint::verify_checkpoint(
        &note,
        std::slice::from_ref(&log.key),
        Some(&log.origin),
    )
    .unwrap();
    assert_eq!(body.checkpoint().size(), size);
    assert_eq!(*body.checkpoint().root_hash(), log.root(size));
    let cosigned = verify_note(parse_note(&note).unwrap(), witness_keys).unwrap();
    assert!(
        cosigned.verified().iter().any(|v| v.timestamp.is_some()),
        "no cosignature of the witness in {}",
        path.display()
    );
}

/// Checks the audit manifest: signed by the signer's manifest key, and listing
/// exactly `expected` (origin, size) audit checkpoints with their digests.
fn assert_manifest(mirror: &Path, manifest_key: &ManifestVerifier, expected: &[(&str, u64)]) {
    let audit = mirror.join(AUDIT_DIR);
    let envelope = std::fs::read(audit.join(AUDIT_MANIFEST)).unwrap();
    let manifest = verify_manifest(&envelope, manifest_key).unwrap();
    let mut listed: Vec<(String, [u8; 32])> = manifest
        .subjects
        .iter()
        .map(|s| (s.name.clone(), s.sha256))
        .collect();
    listed.sort();
    let mut wanted: Vec<(String, [u8; 32])> = expected
        .iter()
        .map(|(origin, size)| {
            let name = audit_checkpoint_name(origin, *size);
            let digest = Sha256::digest(std::fs::read(audit.join(&name)).unwrap()).into();
            (name, digest)
        })
        .collect();
    wanted.sort();
    assert_eq!(listed, wanted);
    assert!(manifest.period_start <= manifest.period_end);
}

async fn eventually(what: &str, timeout: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The signer's cosignatures so far, from its audit log (one JSON line per
/// operation).
fn signer_cosignatures(audit_log: &Path) -> usize {
    std::fs::read_to_string(audit_log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| {
            entry["operation"]
                .as_str()
                .is_some_and(|op| op.starts_with("cosign"))
                && entry["result"] == "ok"
        })
        .count()
}

fn signer_client_toml(c: &witness_core::service::signer_client::SignerConfig) -> String {
    format!(
        "[signer]\nendpoint = {endpoint:?}\nserver_name = \"localhost\"\nca = {ca:?}\nclient_cert = {cert:?}\nclient_key = {key:?}\n",
        endpoint = c.endpoint,
        ca = c.ca.display().to_string(),
        cert = c.client_cert.display().to_string(),
        key = c.client_key.display().to_string(),
    )
}

#[test]
fn air_gap_configuration_is_strict() {
    let signer = "[signer]\nendpoint = \"https://s:1\"\nca = \"a\"\nclient_cert = \"b\"\nclient_key = \"c\"\n";
    for (text, reason) in [
        (
            format!("mirror_path = \"/m\"\n{signer}"),
            "needs mirror_key",
        ),
        (
            format!("mirror_key = \"/k.pem\"\n{signer}"),
            "only used with mirror_path",
        ),
        (
            format!(
                "mirror_path = \"/m\"\nmirror_key = \"/k.pem\"\n{signer}[archive]\nurl = \"file:///a\"\n"
            ),
            "[archive] is refused",
        ),
        (
            format!(
                "state = \"postgres://w@db/w\"\nmirror_path = \"/m\"\nmirror_key = \"/k.pem\"\n{signer}"
            ),
            "postgres",
        ),
        (
            format!(
                "mirror_path = \"/m\"\nmirror_key = \"/k.pem\"\nmirror_scan_interval = \"0s\"\n{signer}"
            ),
            "at least 1s",
        ),
        (
            format!("mirror_path = \"/m\"\nmirror_key = \"/k.pem\"\nmirror_typo = 1\n{signer}"),
            "unknown field",
        ),
    ] {
        let error = WitnessConfig::parse(&text).unwrap_err().to_string();
        assert!(error.contains(reason), "{text:?}: {error}");
    }
    let config = WitnessConfig::parse(&format!(
        "mirror_path = \"mirror\"\nmirror_key = \"keys/mirror.pem\"\n{signer}"
    ))
    .unwrap();
    assert_eq!(
        config.mode(Path::new("/etc/witness")),
        witness_core::service::config::ServiceMode::Airgap(
            witness_core::service::config::AirgapConfig {
                mirror_path: "/etc/witness/mirror".into(),
                mirror_key: "/etc/witness/keys/mirror.pem".into(),
                scan_interval: Duration::from_secs(10),
            }
        )
    );
}

/// The whole flow in-process through `server::run` (the code `rekor-witness
/// serve` runs) and the real signer: a full bundle, then incremental ones
/// whose directory names sort against their sizes, each cosigned in size
/// order; the audit checkpoints and the manifest verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successive_full_then_incremental_bundles_are_cosigned_and_audited() {
    let signer = SignerHarness::start(false).await;
    let metrics = Arc::new(witness_core::service::metrics::WitnessMetrics::new().unwrap());
    let keys = signer.client(metrics).keys().await.unwrap();
    let manifest_key = ManifestVerifier::from_pem(&keys.manifest.clone().unwrap().0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("mirror");
    std::fs::create_dir(&mirror).unwrap();
    let mirror_key = MirrorKey::generate();
    std::fs::write(dir.path().join("mirror.pem"), &mirror_key.public_pem).unwrap();
    let log = ServedLog::start("airgap.example/log").await;

    let config = WitnessConfig::parse(&format!(
        "state = {state:?}\nmirror_path = \"mirror\"\nmirror_key = \"mirror.pem\"\nmirror_scan_interval = \"1s\"\n\
         [[log]]\nkey = {vkey:?}\n{signer}",
        state = dir.path().join("state.db").display().to_string(),
        vkey = log.key.to_vkey(),
        signer = signer_client_toml(&signer.client_config),
    ))
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let base = dir.path().to_path_buf();
    let server = tokio::spawn(async move {
        witness_core::service::server::run(listener, &config, &base, async {
            let _ = stopped.await;
        })
        .await
    });

    log.grow(300);
    log.pack(&mirror, "full-300", PackStart::Full, &mirror_key)
        .await;
    eventually(
        "the full bundle is cosigned",
        Duration::from_secs(30),
        || {
            let rejected = mirror.join(AUDIT_DIR).join(AUDIT_REJECTED);
            assert!(
                !rejected.exists(),
                "{}",
                std::fs::read_to_string(&rejected).unwrap_or_default()
            );
            audit_file(&mirror, &log.origin, 300).is_file()
        },
    )
    .await;
    assert_audited(&mirror, &log, 300, &keys.cosigning);
    eventually(
        "the manifest lists the checkpoint",
        Duration::from_secs(10),
        || mirror.join(AUDIT_DIR).join(AUDIT_MANIFEST).is_file(),
    )
    .await;
    assert_manifest(&mirror, &manifest_key, &[(&log.origin, 300)]);

    // Incremental bundles, whose names sort the other way round: consumed by
    // size (300 -> 700 -> 1000), each against the previous witnessed tree.
    log.grow(400);
    log.pack(&mirror, "z-300-700", PackStart::FromSize(300), &mirror_key)
        .await;
    log.grow(300);
    log.pack(&mirror, "a-700-1000", PackStart::FromSize(700), &mirror_key)
        .await;
    eventually(
        "the incremental bundles are cosigned",
        Duration::from_secs(30),
        || {
            audit_file(&mirror, &log.origin, 1000).is_file()
                && mirror.join(AUDIT_DIR).join(AUDIT_MANIFEST).is_file()
        },
    )
    .await;
    for size in [300, 700, 1000] {
        assert_audited(&mirror, &log, size, &keys.cosigning);
    }
    // The manifest is rewritten after the last audit checkpoint: wait for it
    // to list all three.
    eventually(
        "the manifest lists the three checkpoints",
        Duration::from_secs(10),
        || {
            std::fs::read(mirror.join(AUDIT_DIR).join(AUDIT_MANIFEST))
                .ok()
                .and_then(|e| verify_manifest(&e, &manifest_key).ok())
                .is_some_and(|m| m.subjects.len() == 3)
        },
    )
    .await;
    assert_manifest(
        &mirror,
        &manifest_key,
        &[(&log.origin, 300), (&log.origin, 700), (&log.origin, 1000)],
    );
    assert!(!mirror.join(AUDIT_DIR).join(AUDIT_REJECTED).exists());
    // Three bundles, three cosignatures by the signer (none repeated by later
    // scans).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(signer_cosignatures(&signer.installation.audit_path), 3);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    signer.server.stop().await;
}

/// `rekor-witness` and `signer-svc` built beside this test binary.
fn binary(name: &str) -> PathBuf {
    let witness = PathBuf::from(env!("CARGO_BIN_EXE_rekor-witness"));
    let path = witness.parent().unwrap().join(name);
    assert!(
        path.is_file(),
        "{name} is not built in {}: run `cargo build --workspace --bins` (cargo test --workspace does)",
        witness.parent().unwrap().display()
    );
    path
}

/// A tool the test needs, from the environment (scripts/test exports it) or
/// its default path; the test fails without it.
fn tool(variable: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.is_file(),
        "{} is missing (set {variable}; scripts/test installs it)",
        path.display()
    );
    path
}

/// Both real binaries in a network namespace with only loopback (`unshare
/// -n`): the signer serves mutual TLS on 127.0.0.1, the witness consumes two
/// bundles (full, then incremental) and both are cosigned; the namespace has
/// no interface but `lo` and no route out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witnessing_succeeds_inside_a_network_namespace_with_only_loopback() {
    let unshare = tool("WITNESS_TEST_UNSHARE", "/usr/bin/unshare");
    let ip = tool("WITNESS_TEST_IP", "/usr/sbin/ip");
    let signer_bin = binary("signer-svc");
    let witness_bin = binary("rekor-witness");

    let installation = pki::Installation::new(pki::Keys {
        ml_dsa_44: false,
        manifest: true,
    });
    let signer_dir = installation.dir.path();
    let signer_toml = std::fs::read_to_string(signer_dir.join("signer.toml"))
        .unwrap()
        .replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:7390\"");
    std::fs::write(signer_dir.join("signer-netns.toml"), signer_toml).unwrap();
    let client_cert = signer_dir.join("witness-client.pem");
    let client_key = signer_dir.join("witness-client.key");
    std::fs::write(&client_cert, &installation.pki.good.cert_pem).unwrap();
    pki::write_private(&client_key, &installation.pki.good.key_pem);
    let manifest_key = {
        use p256::pkcs8::{DecodePrivateKey as _, EncodePublicKey as _, LineEnding};
        let pem = std::fs::read_to_string(signer_dir.join("manifest.pem")).unwrap();
        let public = p256::SecretKey::from_pkcs8_pem(&pem)
            .unwrap()
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        ManifestVerifier::from_pem(&public).unwrap()
    };
    let cosigning_key = {
        use ed25519_dalek::pkcs8::DecodePrivateKey as _;
        let pem = std::fs::read_to_string(signer_dir.join("ed25519.pem")).unwrap();
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).unwrap();
        VerifierKey::from_material(
            pki::COSIGNER_NAME,
            witness_core::note::SignatureType::CosignatureV1,
            key.verifying_key().as_bytes(),
        )
        .unwrap()
    };

    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("mirror");
    std::fs::create_dir(&mirror).unwrap();
    let mirror_key = MirrorKey::generate();
    std::fs::write(dir.path().join("mirror.pem"), &mirror_key.public_pem).unwrap();
    let log = ServedLog::start("netns.example/log").await;
    log.grow(260);
    log.pack(&mirror, "b-full", PackStart::Full, &mirror_key)
        .await;
    log.grow(340);
    log.pack(
        &mirror,
        "a-incremental",
        PackStart::FromSize(260),
        &mirror_key,
    )
    .await;
    let witness_toml = format!(
        "listen = \"127.0.0.1:7380\"\nstate = \"state.db\"\nmirror_path = \"mirror\"\nmirror_key = \"mirror.pem\"\nmirror_scan_interval = \"1s\"\n\
         [[log]]\nkey = {vkey:?}\n\
         [signer]\nendpoint = \"https://127.0.0.1:7390\"\nserver_name = \"localhost\"\nca = {ca:?}\nclient_cert = {cert:?}\nclient_key = {key:?}\n",
        vkey = log.key.to_vkey(),
        ca = installation.pki.ca_path.display().to_string(),
        cert = client_cert.display().to_string(),
        key = client_key.display().to_string(),
    );
    std::fs::write(dir.path().join("witness.toml"), witness_toml).unwrap();

    let last = audit_file(&mirror, &log.origin, 600);
    // Inside the namespace: loopback up, record the interfaces and whether a
    // route out exists, run both services until the last audit checkpoint is
    // written (at most 60 s), then stop them with SIGTERM and report their
    // exit statuses.
    let script = r#"
set -u
"$IP" link set lo up
"$IP" -o link show | cut -d: -f2 | tr -d " " > interfaces.txt
if "$IP" route get 1.1.1.1 > route.txt 2>&1; then echo routed > route-status.txt; else echo unreachable > route-status.txt; fi
"$SIGNER" serve --config "$SIGNER_CONFIG" 2> signer.log &
signer=$!
"$WITNESS" serve --config witness.toml 2> witness.log &
witness=$!
for _ in $(seq 1 600); do
  [ -f "$LAST" ] && [ -f mirror/audit/manifest.dsse.json ] && break
  sleep 0.1
done
sleep 1
kill -TERM "$witness"; wait "$witness"; echo "$?" > witness-exit.txt
kill -TERM "$signer"; wait "$signer"; echo "$?" > signer-exit.txt
"#;
    let status = tokio::process::Command::new(&unshare)
        .args(["--net", "--", "/bin/sh", "-c", script])
        .current_dir(dir.path())
        .env("IP", &ip)
        .env("SIGNER", &signer_bin)
        .env("WITNESS", &witness_bin)
        .env("SIGNER_CONFIG", signer_dir.join("signer-netns.toml"))
        .env("LAST", &last)
        .env("RUST_LOG", "info")
        .status()
        .await
        .unwrap();
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    let logs = format!(
        "witness:\n{}\nsigner:\n{}",
        read("witness.log"),
        read("signer.log")
    );
    assert!(status.success(), "unshare: {status:?}\n{logs}");
    assert_eq!(read("interfaces.txt").trim(), "lo", "{logs}");
    assert_eq!(
        read("route-status.txt").trim(),
        "unreachable",
        "{}",
        read("route.txt")
    );
    assert_eq!(read("witness-exit.txt").trim(), "0", "{logs}");
    assert_eq!(read("signer-exit.txt").trim(), "0", "{logs}");

    assert_audited(&mirror, &log, 260, std::slice::from_ref(&cosigning_key));
    assert_audited(&mirror, &log, 600, std::slice::from_ref(&cosigning_key));
    assert_manifest(
        &mirror,
        &manifest_key,
        &[(&log.origin, 260), (&log.origin, 600)],
    );
    assert_eq!(signer_cosignatures(&installation.audit_path), 2, "{logs}");
}

/// A consumer over a witness that already cosigned `log` at 300 then 700 from
/// bundles, for the tampering cases. A genuine full bundle of the log at 500
/// is kept aside in `spare` (for the rollback case), and `other` is a log
/// the witness trusts with a key other than the one its server signs with.
struct Witnessed {
    harness: WitnessHarness,
    consumer: MirrorConsumer,
    mirror: tempfile::TempDir,
    spare: tempfile::TempDir,
    mirror_key: MirrorKey,
    log: ServedLog,
    other: ServedLog,
}

async fn witnessed_at_700() -> Witnessed {
    let log = ServedLog::start("tamper.example/log").await;
    let other = ServedLog::start("other-key.example/log").await;
    let trusted = |origin: &str, key: VerifierKey| LogKeys {
        origin: origin.to_owned(),
        keys: vec![key],
        feed: witness_core::service::witness::Feed::Push,
    };
    let harness = WitnessHarness::start(
        vec![
            trusted(&log.origin, log.key.clone()),
            trusted(
                &other.origin,
                TestLog::new(&other.origin, 7).verifier.clone(),
            ),
        ],
        vec![],
        false,
    )
    .await;
    let mirror = tempfile::tempdir().unwrap();
    let spare = tempfile::tempdir().unwrap();
    let mirror_key = MirrorKey::generate();
    let consumer = MirrorConsumer::new(
        harness.witness.clone(),
        vec![],
        mirror_key.verifier(),
        mirror.path().to_path_buf(),
        harness.keys.name.clone(),
        harness.keys.cosigning.clone(),
        Arc::new(harness.grpc_signer.clone()),
    );
    log.grow(300);
    log.pack(mirror.path(), "0300", PackStart::Full, &mirror_key)
        .await;
    log.grow(200);
    log.pack(spare.path(), "full-500", PackStart::Full, &mirror_key)
        .await;
    log.grow(200);
    log.pack(mirror.path(), "0700", PackStart::FromSize(300), &mirror_key)
        .await;
    let outcomes = consumer.scan().await.unwrap();
    assert!(
        matches!(
            outcomes.as_slice(),
            [
                BundleOutcome::Cosigned { size: 300, .. },
                BundleOutcome::Cosigned { size: 700, .. }
            ]
        ),
        "{outcomes:?}"
    );
    log.grow(300);
    other.grow(100);
    Witnessed {
        harness,
        consumer,
        mirror,
        spare,
        mirror_key,
        log,
        other,
    }
}

/// Copies a directory's files (one level).
fn copy_bundle(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// The CAR's sections: (offset of the section's CID, CID length, offset of
/// the block, block length). CARv1: a varint-prefixed header, then
/// varint-prefixed sections of CID and block; every CID here is CIDv1 raw
/// sha2-256 (36 bytes).
fn car_sections(car: &[u8]) -> Vec<(usize, usize, usize, usize)> {
    fn varint(bytes: &[u8], at: &mut usize) -> usize {
        let mut value = 0usize;
        let mut shift = 0;
        loop {
            let byte = bytes[*at];
            *at += 1;
            value |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return value;
            }
            shift += 7;
        }
    }
    let mut at = 0;
    let header = varint(car, &mut at);
    at += header;
    let mut sections = Vec::new();
    while at < car.len() {
        let length = varint(car, &mut at);
        sections.push((at, 36, at + 36, length - 36));
        at += length;
    }
    sections
}

/// Re-signs a bundle's envelope over its (tampered) CAR with `key`, as a
/// producer signing whatever it wrote would: the CAR digest then matches, so
/// what fails is the check of the tampered part itself.
async fn resign(dir: &Path, key: &MirrorKey) {
    use base64::Engine as _;
    use witness_core::service::archive::ManifestSigner as _;
    let envelope: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(ENVELOPE_FILE)).unwrap()).unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    let (_, predicate) = parse_statement(&payload).unwrap();
    let car_sha256: [u8; 32] = Sha256::digest(std::fs::read(dir.join(CAR_FILE)).unwrap()).into();
    let statement = serialize_statement(&car_sha256, &predicate).unwrap();
    let signed = FileManifestSigner::from_pkcs8_pem(&key.private_pem)
        .unwrap()
        .sign_manifest(PAYLOAD_TYPE, statement)
        .await
        .unwrap();
    std::fs::write(dir.join(ENVELOPE_FILE), signed).unwrap();
}

/// Each tampering kind the issue names, applied to a bundle that would
/// otherwise be the witness's next (700 -> 1000): refused with its precise
/// reason, recorded (`rejected.jsonl`, `witness_verify_failures`), and nothing
/// cosigned: the signer signs nothing, the state stays at 700, no audit file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_bundles_are_rejected_with_a_precise_reason_and_never_cosigned() {
    let witnessed = witnessed_at_700().await;
    let Witnessed {
        harness,
        consumer,
        mirror,
        spare,
        mirror_key,
        log,
        other,
    } = &witnessed;
    let mirror = mirror.path();
    let cosignatures = signer_cosignatures(&harness.signer.installation.audit_path);
    assert_eq!(cosignatures, 2);
    let other_mirror_key = MirrorKey::generate();

    // Each case edits the CAR file of a genuine 700 -> 1000 bundle (or
    // nothing), then the envelope is re-signed over it by `signed_by` (or left
    // as it was).
    type Tamper = fn(Vec<u8>) -> Vec<u8>;
    fn flip_block<const K: usize>(mut car: Vec<u8>) -> Vec<u8> {
        let (_, _, block, length) = car_sections(&car)[K];
        car[block + length / 2] ^= 0x01;
        car
    }
    fn flip_last_block(mut car: Vec<u8>) -> Vec<u8> {
        let (_, _, block, length) = *car_sections(&car).last().unwrap();
        car[block + length / 2] ^= 0x01;
        car
    }
    fn wrong_cid(mut car: Vec<u8>) -> Vec<u8> {
        let (cid, length, _, _) = car_sections(&car)[2];
        car[cid + length - 1] ^= 0x01;
        car
    }
    fn truncate(mut car: Vec<u8>) -> Vec<u8> {
        car.truncate(car.len() - 40);
        car
    }
    fn unchanged(car: Vec<u8>) -> Vec<u8> {
        car
    }
    let cases: [(&str, &str, Tamper, Option<&MirrorKey>); 8] = [
        (
            "flipped-block-0",
            "mirror_block_cid_mismatch",
            flip_block::<0>,
            Some(mirror_key),
        ),
        (
            "flipped-block-1",
            "mirror_block_cid_mismatch",
            flip_block::<1>,
            Some(mirror_key),
        ),
        (
            "flipped-block-2",
            "mirror_block_cid_mismatch",
            flip_block::<2>,
            Some(mirror_key),
        ),
        (
            "flipped-block-last",
            "mirror_block_cid_mismatch",
            flip_last_block,
            Some(mirror_key),
        ),
        (
            "flipped-not-resigned",
            "mirror_block_cid_mismatch",
            flip_block::<2>,
            None,
        ),
        (
            "wrong-cid",
            "mirror_block_cid_mismatch",
            wrong_cid,
            Some(mirror_key),
        ),
        (
            "bad-manifest-signature",
            "mirror_manifest_signature",
            unchanged,
            Some(&other_mirror_key),
        ),
        (
            "truncated",
            "mirror_truncated_car",
            truncate,
            Some(mirror_key),
        ),
    ];
    for (name, reason, tamper, signed_by) in cases {
        log.pack(mirror, name, PackStart::FromSize(700), mirror_key)
            .await;
        let dir = mirror.join(name);
        let car = tamper(std::fs::read(dir.join(CAR_FILE)).unwrap());
        std::fs::write(dir.join(CAR_FILE), car).unwrap();
        if let Some(key) = signed_by {
            resign(&dir, key).await;
        }
        assert_rejected(&witnessed, &dir, reason).await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    // A checkpoint signed by a key other than the one the witness trusts for
    // its origin.
    other
        .pack(mirror, "wrong-log-key", PackStart::Full, mirror_key)
        .await;
    let dir = mirror.join("wrong-log-key");
    assert_rejected(&witnessed, &dir, "mirror_checkpoint_signature").await;
    assert!(harness.store.state(&other.origin).await.unwrap().is_none());
    std::fs::remove_dir_all(&dir).unwrap();

    // A rollback: a genuine full bundle of the log at 500, below the
    // witnessed 700.
    let dir = mirror.join("rollback");
    copy_bundle(&spare.path().join("full-500"), &dir);
    assert_rejected(&witnessed, &dir, "mirror_rollback").await;
    // A rejected bundle is not examined again while its files are unchanged.
    assert!(consumer.scan().await.unwrap().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();

    // A forked history signed by the log's key: another log under the same
    // origin and key, with other entries. Refused and kept as evidence.
    let forked = ServedLog::start(&log.origin).await;
    assert_eq!(forked.key.to_vkey(), log.key.to_vkey());
    forked.grow(1000);
    forked
        .pack(mirror, "fork", PackStart::Full, mirror_key)
        .await;
    let dir = mirror.join("fork");
    assert_rejected(&witnessed, &dir, "mirror_fork").await;
    let evidence = harness.store.evidence(&log.origin).await.unwrap();
    assert_eq!(evidence.len(), 1, "{evidence:?}");
    assert_eq!(evidence[0].reason, "mirror_fork");
    assert_eq!(evidence[0].note, forked.checkpoint());
    std::fs::remove_dir_all(&dir).unwrap();

    // Nothing above was cosigned; the genuine next bundle still is.
    assert_eq!(
        signer_cosignatures(&harness.signer.installation.audit_path),
        cosignatures
    );
    log.pack(mirror, "genuine", PackStart::FromSize(700), mirror_key)
        .await;
    let outcomes = consumer.scan().await.unwrap();
    assert!(
        matches!(
            outcomes.as_slice(),
            [BundleOutcome::Cosigned { size: 1000, .. }]
        ),
        "{outcomes:?}"
    );
    assert_eq!(
        signer_cosignatures(&harness.signer.installation.audit_path),
        cosignatures + 1
    );
    assert_audited(mirror, log, 1000, &harness.keys.cosigning);
}

/// Scans and expects exactly `dir` rejected with `reason`: logged in
/// `rejected.jsonl`, counted, the state unchanged at 700, no audit file.
async fn assert_rejected(witnessed: &Witnessed, dir: &Path, reason: &str) {
    let Witnessed {
        harness,
        consumer,
        mirror,
        log,
        ..
    } = witnessed;
    let outcomes = consumer.scan().await.unwrap();
    let [
        BundleOutcome::Rejected {
            dir: rejected,
            error,
        },
    ] = outcomes.as_slice()
    else {
        panic!(
            "{}: expected one rejection, got {outcomes:?}",
            dir.display()
        );
    };
    assert_eq!(rejected, dir);
    assert_eq!(error.kind(), reason, "{}: {error}", dir.display());
    let state = harness.store.state(&log.origin).await.unwrap().unwrap();
    assert_eq!(state.tree.size, 700, "{}", dir.display());
    assert!(!audit_file(mirror.path(), &log.origin, 1000).exists());
    let recorded =
        std::fs::read_to_string(mirror.path().join(AUDIT_DIR).join(AUDIT_REJECTED)).unwrap();
    let last: serde_json::Value = serde_json::from_str(recorded.lines().last().unwrap()).unwrap();
    assert_eq!(last["reason"], reason);
    assert_eq!(last["bundle"], dir.file_name().unwrap().to_str().unwrap());
    let rendered = harness.metrics.render();
    assert!(
        rendered
            .lines()
            .any(|l| l.starts_with("witness_verify_failures")
                && l.contains(&format!("reason=\"{reason}\""))),
        "{rendered}"
    );
}
