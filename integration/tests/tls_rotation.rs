//! Certificate rotation without a restart (issue 10), against the three real
//! processes: every certificate of the stack is replaced by one from a new
//! CA the way cert-manager does it (a Kubernetes Secret volume: each version
//! in its own directory, published by an atomic rename of the `..data`
//! symlink), in the order an operator follows: the new CA added to the trust
//! bundle, then the leaf certificates swapped, then the old CA removed.
//! Cosigning works after every step, no process restarts, fresh clients see
//! the new certificates, and after the last step a client holding a
//! certificate from the old CA is refused by both gRPC listeners. A garbage
//! certificate published afterwards keeps the signer on its previous one
//! and counts a reload failure.
//!
//! The services read their TLS files every 10 s (the default), so each step
//! waits for the reloads to show in the metrics rather than for a fixed time.

#![allow(clippy::unwrap_used)]

mod attack_support;

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use attack_support::{add_checkpoint, upstream_addrs};
use integration::stack::Stack;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use witness_core::checkpoint::Checkpoint;
use witness_core::merkle::{Hash, LeafHashes, leaf_hash, prove_consistency, tree_root};
use witness_core::note::{Note, NoteSignature, SignatureType, VerifierKey};
use witness_core::service::dev_stack::{GATEWAY_IDENTITY, WITNESS_IDENTITY};
use witness_proto::signer as signer_pb;
use witness_proto::witness as witness_pb;

const ORIGIN: &str = "tls-rotation.example/log";

/// How long one rotation step may take to be picked up: the 10 s default
/// interval of each service, plus the gateway's scrape.
const STEP_DEADLINE: Duration = Duration::from_secs(45);

#[derive(Clone)]
struct Cert {
    cert: String,
    key: String,
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    fn issue(&self, sans: Vec<SanType>, usage: ExtendedKeyUsagePurpose) -> Cert {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "tls rotation");
        params.subject_alt_names = sans;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Cert {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn server(&self) -> Cert {
        self.issue(
            vec![
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress([127, 0, 0, 1].into()),
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn client(&self, identity: &str) -> Cert {
        self.issue(
            vec![SanType::URI(identity.try_into().unwrap())],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }
}

/// The leaf certificates of the stack, by file name stem.
struct Leaves {
    signer: Cert,
    witness_server: Cert,
    witness_client: Cert,
    gateway_client: Cert,
}

impl Leaves {
    fn issued_by(ca: &Ca) -> Leaves {
        Leaves {
            signer: ca.server(),
            witness_server: ca.server(),
            witness_client: ca.client(WITNESS_IDENTITY),
            gateway_client: ca.client(GATEWAY_IDENTITY),
        }
    }
}

/// The stack's `pki` directory laid out as a Kubernetes Secret volume:
/// `<name> -> ..data/<name>`, `..data -> ..<version>`.
struct SecretVolume {
    dir: PathBuf,
    versions: u32,
}

impl SecretVolume {
    fn new(dir: PathBuf) -> SecretVolume {
        std::fs::create_dir_all(&dir).unwrap();
        SecretVolume { dir, versions: 0 }
    }

    /// Publishes a new version of every file, as the kubelet does.
    fn publish(&mut self, ca_bundle: &str, leaves: &Leaves) {
        self.versions += 1;
        let version = format!("..version_{}", self.versions);
        let version_dir = self.dir.join(&version);
        std::fs::create_dir(&version_dir).unwrap();
        let mut names = vec!["ca.pem".to_owned()];
        std::fs::write(version_dir.join("ca.pem"), ca_bundle).unwrap();
        for (stem, cert) in [
            ("signer", &leaves.signer),
            ("witness-server", &leaves.witness_server),
            ("witness-client", &leaves.witness_client),
            ("gateway-client", &leaves.gateway_client),
        ] {
            std::fs::write(version_dir.join(format!("{stem}.pem")), &cert.cert).unwrap();
            write_private(&version_dir.join(format!("{stem}.key")), &cert.key);
            names.push(format!("{stem}.pem"));
            names.push(format!("{stem}.key"));
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if self.versions == 1 {
            for name in names {
                std::os::unix::fs::symlink(format!("..data/{name}"), self.dir.join(&name)).unwrap();
            }
        }
    }

    /// The current version's signer certificate replaced by `text`.
    fn publish_signer_cert(&mut self, text: &str) {
        let current = std::fs::read_link(self.dir.join("..data")).unwrap();
        self.versions += 1;
        let version = format!("..version_{}", self.versions);
        let version_dir = self.dir.join(&version);
        std::fs::create_dir(&version_dir).unwrap();
        for entry in std::fs::read_dir(self.dir.join(current)).unwrap() {
            let entry = entry.unwrap();
            let target = version_dir.join(entry.file_name());
            std::fs::copy(entry.path(), &target).unwrap();
        }
        std::fs::write(version_dir.join("signer.pem"), text).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }
}

fn write_private(path: &Path, contents: &str) {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    file.write_all(contents.as_bytes()).unwrap();
}

struct Log {
    signing: ed25519_dalek::SigningKey,
    verifier: VerifierKey,
    leaves: Vec<Hash>,
}

impl Log {
    fn new() -> Log {
        let signing = ed25519_dalek::SigningKey::from_bytes(&[10; 32]);
        let verifier = VerifierKey::from_material(
            ORIGIN,
            SignatureType::Ed25519,
            signing.verifying_key().as_bytes(),
        )
        .unwrap();
        let leaves = (0..64)
            .map(|i| leaf_hash(format!("{ORIGIN} {i}").as_bytes()))
            .collect();
        Log {
            signing,
            verifier,
            leaves,
        }
    }

    fn signed(&self, size: u64) -> Vec<u8> {
        use ed25519_dalek::Signer as _;
        let root = tree_root(&mut LeafHashes(&self.leaves), size).unwrap();
        let text = Checkpoint::new(ORIGIN, size, root, Vec::new())
            .unwrap()
            .to_text();
        let signature = self.signing.sign(text.as_bytes()).to_bytes().to_vec();
        let line =
            NoteSignature::new(self.verifier.name(), self.verifier.key_id(), signature).unwrap();
        Note::new(&text, vec![line]).unwrap().to_bytes()
    }

    fn proof(&self, old: u64, new: u64) -> Vec<Hash> {
        if old == 0 {
            return Vec::new();
        }
        prove_consistency(&mut LeafHashes(&self.leaves), old, new).unwrap()
    }
}

/// Grows the log by one entry through the gateway and expects a cosignature.
async fn cosign(stack: &Stack, log: &Log, size: &mut u64, step: &str) {
    let (old, new) = (*size, *size + 1);
    let answer = add_checkpoint(
        stack.http(),
        &stack.gateway_url(),
        old,
        &log.proof(old, new),
        &log.signed(new),
    )
    .await;
    assert_eq!(answer.status, 200, "{step}: {answer:?}");
    assert!(
        answer.body.contains("— rekor-witness"),
        "{step}: {answer:?}"
    );
    *size = new;
}

/// The sum over all samples of `family` in the gateway's merged metrics.
async fn total(stack: &Stack, family: &str) -> f64 {
    let text = stack.metrics().await.unwrap();
    text.lines()
        .filter(|line| line.starts_with(&format!("{family}{{")))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until `family` sums to at least `expected` across the stack.
async fn wait_total(stack: &mut Stack, family: &str, expected: f64, step: &str) {
    let started = Instant::now();
    loop {
        stack.check_running().unwrap();
        let now = total(stack, family).await;
        if now >= expected {
            return;
        }
        assert!(
            started.elapsed() < STEP_DEADLINE,
            "{step}: {family} is {now}, expected {expected}:\n{}",
            stack.metrics().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn tls(trusted: &str, client: &Cert) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .domain_name("localhost")
        .ca_certificate(Certificate::from_pem(trusted))
        .identity(Identity::from_pem(&client.cert, &client.key))
}

/// A connection to `addr` trusting the CAs in `trusted`, as `client`.
async fn connect(addr: SocketAddr, trusted: &str, client: &Cert) -> Result<Channel, String> {
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls(trusted, client))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))
}

/// The witness lists its logs over `channel`.
async fn lists_logs(channel: Channel) -> Result<(), String> {
    witness_pb::witness_client::WitnessClient::new(channel)
        .list_logs(witness_pb::ListLogsRequest {})
        .await
        .map(|_| ())
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
}

/// The signer gives its public keys over `channel`.
async fn gives_keys(channel: Channel) -> Result<(), String> {
    signer_pb::signer_client::SignerClient::new(channel)
        .public_keys(signer_pb::PublicKeysRequest {})
        .await
        .map(|_| ())
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
}

/// A fresh connection to the witness, listing its logs.
async fn witness_lists_logs(addr: SocketAddr, trusted: &str, client: &Cert) -> Result<(), String> {
    lists_logs(connect(addr, trusted, client).await?).await
}

/// A fresh connection to the signer, reading its public keys.
async fn signer_gives_keys(addr: SocketAddr, trusted: &str, client: &Cert) -> Result<(), String> {
    gives_keys(connect(addr, trusted, client).await?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_certificate_rotates_to_a_new_ca_without_a_restart_and_the_old_ca_is_then_refused() {
    let artifacts = integration::artifacts_dir("tls-rotation").unwrap();
    let stack_dir = artifacts.join("stack");
    let _ = std::fs::remove_dir_all(&stack_dir);
    let (old_ca, new_ca) = (Ca::new("rotation: old CA"), Ca::new("rotation: new CA"));
    let old = Leaves::issued_by(&old_ca);
    let mut volume = SecretVolume::new(stack_dir.join("pki"));
    volume.publish(&old_ca.pem, &old);

    let log = Log::new();
    let logs_toml = format!(
        "[[log]]\norigin = \"{ORIGIN}\"\nkey = \"{}\"\n",
        log.verifier.to_vkey()
    );
    let mut stack = Stack::start_in(&artifacts, &logs_toml).await.unwrap();
    let (witness, signer) = upstream_addrs(&stack);
    let mut size = 0;
    cosign(&stack, &log, &mut size, "before the rotation").await;
    assert_eq!(total(&stack, "tls_reloads_total").await, 0.0);
    let expiries = total(&stack, "tls_certificate_expiry_timestamp_seconds").await;
    assert!(expiries > 0.0, "no certificate expiry exported");

    // Five endpoints read the bundle: the signer's and the witness's
    // listeners, the witness's client to the signer, the gateway's clients
    // to the witness and to the signer.
    let both = format!("{}{}", old_ca.pem, new_ca.pem);
    volume.publish(&both, &old);
    wait_total(&mut stack, "tls_reloads_total", 5.0, "new CA trusted").await;
    cosign(&stack, &log, &mut size, "new CA trusted").await;

    let new = Leaves::issued_by(&new_ca);
    volume.publish(&both, &new);
    wait_total(&mut stack, "tls_reloads_total", 10.0, "leaves swapped").await;
    cosign(&stack, &log, &mut size, "leaves swapped").await;
    // Fresh connections trusting only the new CA, with new-CA certificates:
    // both listeners serve the new certificates and accept the new clients.
    witness_lists_logs(witness, &new_ca.pem, &new.gateway_client)
        .await
        .unwrap();
    signer_gives_keys(signer, &new_ca.pem, &new.witness_client)
        .await
        .unwrap();
    // The old clients still get in: their CA is still trusted. These two
    // connections stay open across the next step.
    let open_to_witness = connect(witness, &new_ca.pem, &old.gateway_client)
        .await
        .unwrap();
    lists_logs(open_to_witness.clone()).await.unwrap();
    let open_to_signer = connect(signer, &new_ca.pem, &old.witness_client)
        .await
        .unwrap();
    gives_keys(open_to_signer.clone()).await.unwrap();

    volume.publish(&new_ca.pem, &new);
    wait_total(&mut stack, "tls_reloads_total", 15.0, "old CA dropped").await;
    cosign(&stack, &log, &mut size, "old CA dropped").await;
    let refused = witness_lists_logs(witness, &new_ca.pem, &old.gateway_client).await;
    assert!(refused.is_err(), "the witness took an old-CA client");
    // Nor do the connections the old-CA clients opened before carry another
    // call: the listeners verified their certificates again at the reload.
    let refused = lists_logs(open_to_witness).await;
    assert!(
        refused.is_err(),
        "an open connection outlived its client's CA"
    );
    let refused = gives_keys(open_to_signer).await;
    assert!(
        refused.is_err(),
        "an open connection outlived its client's CA"
    );
    let refused = signer_gives_keys(signer, &new_ca.pem, &old.witness_client)
        .await
        .unwrap_err();
    assert!(refused.contains("Unauthenticated"), "{refused}");
    // And a client that still trusts only the old CA no longer trusts the
    // servers.
    assert!(
        witness_lists_logs(witness, &old_ca.pem, &new.gateway_client)
            .await
            .is_err()
    );

    // A garbage certificate: the signer keeps serving the previous one.
    assert_eq!(total(&stack, "tls_reload_failures_total").await, 0.0);
    volume.publish_signer_cert("-----BEGIN CERTIFICATE-----\ngarbage\n");
    wait_total(&mut stack, "tls_reload_failures_total", 1.0, "garbage").await;
    signer_gives_keys(signer, &new_ca.pem, &new.witness_client)
        .await
        .unwrap();
    cosign(&stack, &log, &mut size, "garbage certificate published").await;
    assert_eq!(total(&stack, "tls_reloads_total").await, 15.0);
    stack.check_running().unwrap();
    assert!(stack.stop().await, "a service did not stop cleanly");
}
