//! The signer end to end, over real mutual TLS on a local socket: who may call
//! (TLS 1.3 with a certificate from the configured CA carrying an allowlisted
//! identity), what the fork guard lets through, how bad input is refused, and
//! that every returned signature verifies with the published keys.
//!
//! Every refusal is checked three ways besides its status code: nothing was
//! signed (the signing histogram of the `Metrics` call does not move), the fork
//! guard's record did not change (read from its SQLite file, read-only), and
//! an audit line was written.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use signer_svc::dsse::MAX_PAYLOAD_SIZE;
use signer_svc::keys::Algorithm;
use signer_svc::limits::{MAX_BATCH_ITEMS, MAX_REQUEST_MESSAGE_SIZE};
use support::pki::{COSIGNER_NAME, ClientCert, GOOD_IDENTITY, Installation, Keys, Server};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use witness_core::checkpoint::Checkpoint;
use witness_core::merkle::{
    Hash, LeafHashes, leaf_hash, prove_consistency, prove_subtree_consistency, subtree_hash,
    tree_root, verify_consistency,
};
use witness_core::note::{SignatureType, VerifierKey, parse_note, verify_note};
use witness_proto::signer as pb;
use witness_proto::signer::cosign_checkpoint_result::Result as Outcome;
use witness_proto::signer::signer_client::SignerClient;

type Client = SignerClient<Channel>;

const ORIGIN: &str = "example.com/log";
const ALL_KEYS: Keys = Keys {
    ml_dsa_44: true,
    manifest: true,
};

// ---------------------------------------------------------------------------
// Trees and requests
// ---------------------------------------------------------------------------

fn tree(seed: &str, n: u64) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(format!("{seed} {i}").as_bytes()))
        .collect()
}

/// A tree of the same size as `base` sharing only its first `common` leaves.
fn fork_of(base: &[Hash], common: usize, seed: &str) -> Vec<Hash> {
    let mut leaves = base[..common].to_vec();
    leaves.extend(
        (common as u64..base.len() as u64).map(|i| leaf_hash(format!("{seed} {i}").as_bytes())),
    );
    leaves
}

fn root(leaves: &[Hash], size: u64) -> Hash {
    tree_root(&mut LeafHashes(leaves), size).unwrap()
}

/// The consistency proof a signer expects from `old` to `new` (none from 0 or
/// between equal sizes).
fn proof(leaves: &[Hash], old: u64, new: u64) -> Vec<Hash> {
    if old == 0 || old == new {
        Vec::new()
    } else {
        prove_consistency(&mut LeafHashes(leaves), old, new).unwrap()
    }
}

fn raw(hashes: &[Hash]) -> Vec<Vec<u8>> {
    hashes.iter().map(|h| h.0.to_vec()).collect()
}

/// An honest request: the tree's root at `size` and a valid proof from `old_size`.
fn request(origin: &str, leaves: &[Hash], size: u64, old_size: u64) -> pb::CosignCheckpointRequest {
    pb::CosignCheckpointRequest {
        origin: origin.into(),
        size,
        root_hash: root(leaves, size).0.to_vec(),
        extension_lines: Vec::new(),
        old_size,
        consistency_proof: raw(&proof(leaves, old_size, size)),
    }
}

fn checkpoint_text(request: &pb::CosignCheckpointRequest) -> String {
    Checkpoint::new(
        &request.origin,
        request.size,
        Hash::from_slice(&request.root_hash).unwrap(),
        request.extension_lines.clone(),
    )
    .unwrap()
    .to_text()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---------------------------------------------------------------------------
// Published keys and verification
// ---------------------------------------------------------------------------

struct Published {
    ed25519: VerifierKey,
    ml_dsa_44: VerifierKey,
    manifest_pem: String,
    manifest_key_id: String,
}

async fn published_keys(client: &mut Client) -> Published {
    let keys = client
        .public_keys(pb::PublicKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    let find = |purpose: &str, algorithm: &str| {
        keys.iter()
            .find(|k| k.purpose == purpose && k.algorithm == algorithm)
            .unwrap_or_else(|| panic!("no {purpose} {algorithm} key in {keys:?}"))
            .clone()
    };
    let note_key = |key: &pb::PublicKey, signature_type| {
        assert_eq!(key.name, COSIGNER_NAME);
        let verifier = VerifierKey::parse_vkey(&key.vkey).unwrap();
        assert_eq!(verifier.signature_type(), signature_type);
        assert_eq!(key.key_id, format!("{:08x}", verifier.key_id()));
        verifier
    };
    let manifest = find("manifest", "ecdsa-p256");
    Published {
        ed25519: note_key(&find("cosign", "ed25519"), SignatureType::CosignatureV1),
        ml_dsa_44: note_key(&find("cosign", "ml-dsa-44"), SignatureType::MlDsa44Subtree),
        manifest_pem: manifest.pem,
        manifest_key_id: manifest.key_id,
    }
}

/// The checkpoint as a signed note carrying `lines`.
fn note_with(text: &str, lines: &[String]) -> Vec<u8> {
    let mut note = format!("{text}\n");
    for line in lines {
        note.push_str(line);
    }
    note.into_bytes()
}

/// Checks that a `CosignCheckpoint` response is an Ed25519 cosignature/v1 and an
/// ML-DSA-44 subtree/v1 cosignature of exactly the requested checkpoint, both
/// with the response's timestamp, which is close to now.
fn verify_cosignatures(
    keys: &Published,
    request: &pb::CosignCheckpointRequest,
    response: &pb::CosignCheckpointResponse,
) {
    assert_eq!(response.signature_lines.len(), 2, "{response:?}");
    let text = checkpoint_text(request);
    let trusted = [keys.ed25519.clone(), keys.ml_dsa_44.clone()];
    let note = parse_note(&note_with(&text, &response.signature_lines)).unwrap();
    let verified = verify_note(note, &trusted).unwrap();
    let mut types: Vec<SignatureType> = verified
        .verified()
        .iter()
        .map(|v| v.signature_type)
        .collect();
    types.sort_by_key(|t| t.byte());
    assert_eq!(
        types,
        [SignatureType::CosignatureV1, SignatureType::MlDsa44Subtree]
    );
    for signature in verified.verified() {
        let timestamp = signature.timestamp.unwrap();
        assert_eq!(timestamp, response.timestamp);
        assert!(
            timestamp > 0 && now().abs_diff(timestamp) <= 120,
            "timestamp {timestamp}"
        );
    }
}

/// Splits a note signature line into key ID, timestamp and signature.
fn split_line(line: &str) -> (u32, u64, Vec<u8>) {
    let rest = line
        .strip_prefix("\u{2014} ")
        .unwrap()
        .strip_suffix('\n')
        .unwrap();
    let (name, encoded) = rest.split_once(' ').unwrap();
    assert_eq!(name, COSIGNER_NAME);
    let blob = BASE64.decode(encoded).unwrap();
    let key_id = u32::from_be_bytes(blob[..4].try_into().unwrap());
    let timestamp = u64::from_be_bytes(blob[4..12].try_into().unwrap());
    (key_id, timestamp, blob[12..].to_vec())
}

/// The ML-DSA-44 public key from a vkey, decoded here rather than by witness-core.
fn ml_dsa_public_key(vkey: &str) -> Vec<u8> {
    let encoded = vkey.splitn(3, '+').nth(2).unwrap();
    let blob = BASE64.decode(encoded).unwrap();
    assert_eq!(blob[0], 0x06);
    blob[1..].to_vec()
}

/// c2sp.org/tlog-cosignature `cosigned_message`, built from the spec:
/// label "subtree/v1\n\0", cosigner_name<1..255>, uint64 timestamp,
/// log_origin<1..255>, uint64 start, uint64 end, hash[32].
fn cosigned_message(
    name: &str,
    timestamp: u64,
    origin: &str,
    start: u64,
    end: u64,
    hash: &Hash,
) -> Vec<u8> {
    let mut message = b"subtree/v1\n\x00".to_vec();
    message.push(u8::try_from(name.len()).unwrap());
    message.extend_from_slice(name.as_bytes());
    message.extend_from_slice(&timestamp.to_be_bytes());
    message.push(u8::try_from(origin.len()).unwrap());
    message.extend_from_slice(origin.as_bytes());
    message.extend_from_slice(&start.to_be_bytes());
    message.extend_from_slice(&end.to_be_bytes());
    message.extend_from_slice(&hash.0);
    message
}

/// DSSE v1 Pre-Authentication Encoding, from the DSSE protocol document.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = b"DSSEv1 ".to_vec();
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

// ---------------------------------------------------------------------------
// Observing the signer from outside: record, signatures made, audit log
// ---------------------------------------------------------------------------

/// The fork guard's whole record, read from its SQLite file (read-only).
fn guard_record(installation: &Installation) -> BTreeMap<String, (i64, Vec<u8>)> {
    let connection = rusqlite::Connection::open_with_flags(
        &installation.state_path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut statement = connection
        .prepare("SELECT origin, size, root FROM cosigned")
        .unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, (row.get(1)?, row.get(2)?))))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn stored(installation: &Installation, origin: &str) -> Option<(u64, Hash)> {
    guard_record(installation).get(origin).map(|(size, root)| {
        (
            u64::try_from(*size).unwrap(),
            Hash::from_slice(root).unwrap(),
        )
    })
}

/// Parses the Prometheus text into `(name, labels) -> value`.
fn parse_metrics(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.strip_suffix('}').unwrap()),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap();
                (k.to_owned(), v.trim_matches('"').to_owned())
            })
            .collect();
        out.push((name.to_owned(), labels, value.parse().unwrap()));
    }
    out
}

/// The sum of the series named `name` carrying all of `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    parse_metrics(text)
        .into_iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

const SIGNATURES_MADE: &str = "signer_signing_duration_seconds_count";

async fn metrics_text(client: &mut Client) -> String {
    client
        .metrics(pb::MetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .prometheus_text
}

fn audit_lines(installation: &Installation) -> Vec<Value> {
    std::fs::read_to_string(&installation.audit_path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Whether an audit line is an observer's own `Metrics` scrape (the tests
/// count signatures through it), which every check of "what was audited"
/// leaves out.
fn is_observation(line: &Value) -> bool {
    line["operation"] == "metrics" && line["result"] == "ok"
}

/// The audit lines after the first `from`, without observers' scrapes.
fn audit_lines_since(installation: &Installation, from: usize) -> Vec<Value> {
    audit_lines(installation)
        .split_off(from)
        .into_iter()
        .filter(|line| !is_observation(line))
        .collect()
}

/// What a refusal must leave as it was.
struct Before {
    record: BTreeMap<String, (i64, Vec<u8>)>,
    metrics: String,
    signatures: f64,
    audit: usize,
}

async fn before(installation: &Installation, observer: &mut Client) -> Before {
    let metrics = metrics_text(observer).await;
    Before {
        record: guard_record(installation),
        signatures: metric(&metrics, SIGNATURES_MADE, &[]),
        metrics,
        audit: audit_lines(installation).len(),
    }
}

/// Asserts that nothing was signed and the record did not move since `before`,
/// and returns the audit lines written since (waiting for at least one: a
/// refused handshake is audited by the server's accept task, which may finish
/// after the client has seen the failure).
async fn unchanged_and_audited(
    installation: &Installation,
    observer: &mut Client,
    before: &Before,
) -> Vec<Value> {
    assert_eq!(
        guard_record(installation),
        before.record,
        "the fork guard's record changed"
    );
    let signatures = metric(&metrics_text(observer).await, SIGNATURES_MADE, &[]);
    assert_eq!(signatures, before.signatures, "something was signed");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let lines = audit_lines_since(installation, before.audit);
        if !lines.is_empty() {
            return lines;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no audit line was written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends a `CosignCheckpoint` that must be refused with `code`, and checks that
/// nothing was signed or recorded and that one audit line says `kind`.
async fn refused_cosign(
    installation: &Installation,
    client: &mut Client,
    request: &pb::CosignCheckpointRequest,
    code: Code,
    kind: &str,
) -> Status {
    let before = before(installation, client).await;
    let status = client
        .cosign_checkpoint(request.clone())
        .await
        .expect_err("must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    let lines = unchanged_and_audited(installation, client, &before).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!(line["operation"], "cosign_checkpoint");
    assert_eq!(line["result"], kind, "{line}");
    assert_eq!(line["origin"], request.origin.as_str());
    assert_eq!(line["size"], request.size);
    assert_eq!(line["caller"], format!("uri:{GOOD_IDENTITY}"));
    assert!(line["reason"].as_str().is_some_and(|r| !r.is_empty()));
    status
}

fn stored_size_metadata(status: &Status) -> u64 {
    status
        .metadata()
        .get("x-stored-size")
        .unwrap_or_else(|| panic!("no x-stored-size in {status:?}"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn cosign(
    client: &mut Client,
    keys: &Published,
    request: &pb::CosignCheckpointRequest,
) -> pb::CosignCheckpointResponse {
    let response = client
        .cosign_checkpoint(request.clone())
        .await
        .unwrap()
        .into_inner();
    verify_cosignatures(keys, request, &response);
    response
}

// ---------------------------------------------------------------------------
// Who may call
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Caller {
    NoCertificate,
    UntrustedCa,
    Expired,
    WrongIdentity,
    /// The allowed caller's certificate, without its private key.
    StolenCertificate,
    Plaintext,
    Tls12Only,
}

/// How an attempt failed.
#[derive(Debug)]
enum Failure {
    /// The server answered the call with this status.
    Status(Status),
    /// The connection or the call failed at the transport.
    Transport(String),
}

/// Presents a certificate with a private key that is not its own, as a client
/// that copied someone's certificate would.
#[derive(Debug)]
struct StolenCertificate(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for StolenCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn stolen_certificate_client(installation: &Installation) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pki = &installation.pki;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let certificate = CertificateDer::from_pem_slice(pki.good.cert_pem.as_bytes()).unwrap();
    // A valid key of the same type, belonging to another certificate.
    let key = PrivateKeyDer::from_pem_slice(pki.wrong_identity.key_pem.as_bytes()).unwrap();
    let key = provider.key_provider.load_private_key(key).unwrap();
    let stolen = rustls::sign::CertifiedKey::new(vec![certificate], key);
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(StolenCertificate(Arc::new(stolen))));
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// A TLS handshake with a raw rustls client, then one read: a server that
/// refused the handshake answers with an alert (the client may complete its
/// side of a TLS 1.3 handshake before the server checks its certificate).
async fn raw_handshake(server: &Server, config: rustls::ClientConfig) -> Failure {
    use tokio::io::AsyncReadExt as _;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    match connector.connect(name, tcp).await {
        Ok(mut tls) => {
            let mut buffer = [0u8; 64];
            match tls.read(&mut buffer).await {
                Ok(0) => Failure::Transport("connection closed".into()),
                Ok(_) => panic!("the server spoke to a client it should have refused"),
                Err(error) => Failure::Transport(format!("read: {error}")),
            }
        }
        Err(error) => Failure::Transport(format!("handshake: {error}")),
    }
}

async fn attempt(
    installation: &Installation,
    server: &Server,
    caller: Caller,
    request: &pb::CosignCheckpointRequest,
) -> Failure {
    let pki = &installation.pki;
    let via_tonic = |endpoint: Result<Endpoint, tonic::transport::Error>| async move {
        let channel = match endpoint.unwrap().connect().await {
            Ok(channel) => channel,
            Err(error) => return Failure::Transport(format!("connect: {error:?}")),
        };
        match SignerClient::new(channel)
            .cosign_checkpoint(request.clone())
            .await
        {
            Ok(response) => panic!("{caller:?} got cosignatures: {response:?}"),
            // Statuses the signer itself produces for refused callers; a failed
            // handshake surfaces as UNAVAILABLE/UNKNOWN from the transport.
            Err(status)
                if matches!(
                    status.code(),
                    Code::Unauthenticated | Code::PermissionDenied
                ) =>
            {
                Failure::Status(status)
            }
            Err(status) => Failure::Transport(format!("call: {status:?}")),
        }
    };
    let tls = |cert: Option<&ClientCert>| -> Result<Endpoint, tonic::transport::Error> {
        Ok(installation.endpoint(server, cert))
    };
    match caller {
        Caller::NoCertificate => via_tonic(tls(None)).await,
        Caller::UntrustedCa => via_tonic(tls(Some(&pki.untrusted))).await,
        Caller::Expired => via_tonic(tls(Some(&pki.expired))).await,
        Caller::WrongIdentity => via_tonic(tls(Some(&pki.wrong_identity))).await,
        Caller::StolenCertificate => {
            raw_handshake(server, stolen_certificate_client(installation)).await
        }
        Caller::Plaintext => {
            via_tonic(Endpoint::from_shared(format!("http://{}", server.addr))).await
        }
        // A valid, allowlisted certificate, but only TLS 1.2 on offer.
        Caller::Tls12Only => {
            raw_handshake(
                server,
                pki.rustls_client(&pki.good, &[&rustls::version::TLS12]),
            )
            .await
        }
    }
}

/// What a refused caller must get.
enum Expected {
    /// This status, with a message containing every one of these, and one
    /// audit line with this result and this claimed identity.
    Status(
        Code,
        &'static [&'static str],
        &'static str,
        Option<&'static str>,
    ),
    /// A refused handshake, audited with a reason containing one of these.
    Handshake(&'static [&'static str]),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_tls13_callers_with_an_allowlisted_certificate_from_the_ca_get_anything_signed() {
    let installation = Installation::new(ALL_KEYS);
    let server = installation.start(None).await;
    let mut observer = installation.good_client(&server).await;
    let keys = published_keys(&mut observer).await;
    let leaves = tree("callers", 10);
    cosign(&mut observer, &keys, &request(ORIGIN, &leaves, 4, 0)).await;
    // Each caller asks for a growth the signer would grant the allowed caller.
    let growth = request(ORIGIN, &leaves, 9, 4);
    let first = request("example.com/other-log", &leaves, 3, 0);

    let good = "uri:spiffe://witness/core";
    let cases: [(Caller, Expected); 7] = [
        (
            Caller::NoCertificate,
            Expected::Status(
                Code::Unauthenticated,
                &["no client certificate"],
                "unauthenticated",
                None,
            ),
        ),
        (
            Caller::UntrustedCa,
            Expected::Status(
                Code::Unauthenticated,
                &["unknown issuer", "configured client CA"],
                "unauthenticated",
                Some(good),
            ),
        ),
        (
            Caller::Expired,
            Expected::Status(
                Code::Unauthenticated,
                &["expired", "2021-01-01T00:00:00Z"],
                "unauthenticated",
                Some(good),
            ),
        ),
        (
            Caller::WrongIdentity,
            Expected::Status(
                Code::PermissionDenied,
                &["not allowed"],
                "permission_denied",
                None,
            ),
        ),
        (
            Caller::StolenCertificate,
            Expected::Handshake(&["BadSignature", "signature", "decrypt"]),
        ),
        (
            Caller::Plaintext,
            Expected::Handshake(&["InvalidContentType", "corrupt message", "InvalidMessage"]),
        ),
        (
            Caller::Tls12Only,
            Expected::Handshake(&[
                "ProtocolVersion",
                "Tls12NotOffered",
                "incompatible",
                "not offered",
            ]),
        ),
    ];
    for (caller, expected) in &cases {
        for request in [&growth, &first] {
            let before = before(&installation, &mut observer).await;
            let failure = attempt(&installation, &server, *caller, request).await;
            unchanged_and_audited(&installation, &mut observer, &before).await;
            // Let any further handshake refusal of this attempt land, so that
            // it is counted here and not in the next case.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let lines = audit_lines_since(&installation, before.audit);
            match (expected, &failure) {
                (Expected::Status(code, parts, result, claimed), Failure::Status(status)) => {
                    assert_eq!(status.code(), *code, "{caller:?}: {status:?}");
                    for part in *parts {
                        assert!(
                            status.message().contains(part),
                            "{caller:?}: {:?} does not say {part:?}",
                            status.message()
                        );
                    }
                    assert_eq!(lines.len(), 1, "{caller:?}: {lines:?}");
                    let line = &lines[0];
                    assert_eq!(line["operation"], "cosign_checkpoint", "{line}");
                    assert_eq!(line["result"], *result, "{line}");
                    assert!(
                        line["reason"]
                            .as_str()
                            .is_some_and(|r| r.contains(parts[0])),
                        "{line}"
                    );
                    if *code == Code::Unauthenticated {
                        // Refused at the edge: no service code ran, so the
                        // request was never read, and no identity verified.
                        assert_eq!(line["origin"], Value::Null, "{line}");
                        assert_eq!(line["caller"], Value::Null, "{line}");
                        assert_eq!(
                            line["claimed_caller"],
                            claimed.map_or(Value::Null, Value::from),
                            "{line}"
                        );
                    } else {
                        assert_eq!(line["origin"], request.origin.as_str());
                        // The refused caller's verified identity is on record.
                        assert_eq!(line["caller"], "uri:spiffe://evil", "{line}");
                    }
                }
                (Expected::Handshake(reasons), Failure::Transport(error)) => {
                    // The request never reached the service: only refused
                    // handshakes are on record.
                    assert!(!lines.is_empty());
                    for line in &lines {
                        assert_eq!(line["operation"], "tls_handshake", "{line}");
                        assert_eq!(line["result"], "refused", "{line}");
                        let reason = line["reason"].as_str().unwrap();
                        assert!(
                            reasons
                                .iter()
                                .any(|r| reason.to_lowercase().contains(&r.to_lowercase())),
                            "{caller:?}: unexpected handshake refusal {reason:?} ({error})"
                        );
                    }
                }
                (_, failure) => panic!("{caller:?}: unexpected {failure:?}"),
            }
        }
    }

    // The same requests from the allowed caller are granted: the refusals above
    // were about the caller alone.
    cosign(&mut observer, &keys, &growth).await;
    cosign(&mut observer, &keys, &first).await;
    drop(observer);
    server.stop().await;
}

/// Every call of the listener, `grpc.health.v1` included: each operation's
/// audit name and its outcome.
async fn call_everything(channel: Channel) -> Vec<(&'static str, Result<(), Status>)> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let mut client = SignerClient::new(channel.clone());
    let mut health = HealthClient::new(channel);
    let cosign = request(ORIGIN, &tree("everything", 2), 2, 0);
    let mut statuses = Vec::new();
    let mut push = |operation, result: Result<(), Status>| statuses.push((operation, result));
    push(
        "cosign_checkpoint",
        client.cosign_checkpoint(cosign.clone()).await.map(drop),
    );
    push(
        "cosign_checkpoints",
        client
            .cosign_checkpoints(pb::CosignCheckpointsRequest {
                items: vec![cosign],
            })
            .await
            .map(drop),
    );
    push(
        "sign_subtree",
        client
            .sign_subtree(pb::SignSubtreeRequest::default())
            .await
            .map(drop),
    );
    push(
        "sign_manifest",
        client
            .sign_manifest(pb::SignManifestRequest::default())
            .await
            .map(drop),
    );
    push(
        "public_keys",
        client.public_keys(pb::PublicKeysRequest {}).await.map(drop),
    );
    push(
        "metrics",
        client.metrics(pb::MetricsRequest {}).await.map(drop),
    );
    push(
        "health_check",
        health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(drop),
    );
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_including_health_is_refused_to_callers_without_a_verified_certificate() {
    let installation = Installation::new(ALL_KEYS);
    let server = installation.start(None).await;
    let mut observer = installation.good_client(&server).await;
    let pki = &installation.pki;
    for (cert, reason) in [
        (None, "no client certificate"),
        (Some(&pki.untrusted), "unknown issuer"),
        (Some(&pki.expired), "expired"),
    ] {
        let before = before(&installation, &mut observer).await;
        let channel = installation
            .endpoint(&server, cert)
            .connect()
            .await
            .unwrap();
        let statuses = call_everything(channel).await;
        unchanged_and_audited(&installation, &mut observer, &before).await;
        let lines = audit_lines_since(&installation, before.audit);
        assert_eq!(lines.len(), statuses.len(), "{lines:?}");
        for ((operation, status), line) in statuses.iter().zip(&lines) {
            let status = status.as_ref().expect_err(operation);
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "{operation}: {status:?}"
            );
            assert!(status.message().contains(reason), "{operation}: {status:?}");
            assert_eq!(line["operation"], *operation, "{line}");
            assert_eq!(line["result"], "unauthenticated", "{line}");
            assert!(line["reason"].as_str().unwrap().contains(reason), "{line}");
        }
    }

    // A verified certificate with an identity that is not allowed: the health
    // check answers (it is not a signer operation), every signer call is
    // PERMISSION_DENIED and audited with the caller's identity.
    let before = before(&installation, &mut observer).await;
    let channel = installation
        .endpoint(&server, Some(&pki.wrong_identity))
        .connect()
        .await
        .unwrap();
    let mut statuses = call_everything(channel).await;
    let (health, health_status) = statuses.pop().unwrap();
    assert_eq!(health, "health_check");
    health_status.unwrap();
    unchanged_and_audited(&installation, &mut observer, &before).await;
    let lines = audit_lines_since(&installation, before.audit);
    assert_eq!(lines.len(), statuses.len(), "{lines:?}");
    for ((operation, status), line) in statuses.iter().zip(&lines) {
        let status = status.as_ref().expect_err(operation);
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{operation}: {status:?}"
        );
        assert_eq!(line["operation"], *operation, "{line}");
        assert_eq!(line["result"], "permission_denied", "{line}");
        assert_eq!(line["caller"], "uri:spiffe://evil", "{line}");
    }
    drop(observer);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_keys_and_metrics_calls_are_audited() {
    let installation = Installation::new(ALL_KEYS);
    let server = installation.start(None).await;
    let mut client = installation.good_client(&server).await;
    let start = audit_lines(&installation).len();
    client.public_keys(pb::PublicKeysRequest {}).await.unwrap();
    client.metrics(pb::MetricsRequest {}).await.unwrap();
    let lines = audit_lines(&installation).split_off(start);
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (line, operation) in lines.iter().zip(["public_keys", "metrics"]) {
        assert_eq!(line["operation"], operation, "{line}");
        assert_eq!(line["result"], "ok", "{line}");
        assert_eq!(line["caller"], format!("uri:{GOOD_IDENTITY}"), "{line}");
    }
    // The scrape counts itself and the key listing.
    let text = metrics_text(&mut client).await;
    for operation in ["public_keys", "metrics"] {
        assert!(
            metric(
                &text,
                "signer_operations_total",
                &[("operation", operation), ("result", "ok")]
            ) >= 1.0,
            "{text}"
        );
    }
    drop(client);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// The fork guard
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cosign_flow_grants_consistent_growth_and_refuses_rollback_fork_and_unproven_jumps() {
    let installation = Installation::new(ALL_KEYS);
    let server = installation.start(None).await;
    let mut client = installation.good_client(&server).await;
    let keys = published_keys(&mut client).await;
    let leaves = tree("flow", 64);
    let other = fork_of(&leaves, 5, "flow-fork");

    // First checkpoint, from nothing.
    let first = request(ORIGIN, &leaves, 10, 0);
    let response = cosign(&mut client, &keys, &first).await;
    // The lines bind the checkpoint: they do not verify over a neighbour.
    let mut neighbour = request(ORIGIN, &leaves, 11, 0);
    neighbour.root_hash = first.root_hash.clone();
    let note = parse_note(&note_with(
        &checkpoint_text(&neighbour),
        &response.signature_lines,
    ))
    .unwrap();
    assert!(verify_note(note, &[keys.ed25519.clone(), keys.ml_dsa_44.clone()]).is_err());
    assert_eq!(stored(&installation, ORIGIN), Some((10, root(&leaves, 10))));

    // Growth with a valid proof, then the same size again.
    cosign(&mut client, &keys, &request(ORIGIN, &leaves, 17, 10)).await;
    cosign(&mut client, &keys, &request(ORIGIN, &leaves, 17, 17)).await;
    // With extension lines: the checkpoint text they cosign includes them.
    let mut with_extension = request(ORIGIN, &leaves, 17, 17);
    with_extension.extension_lines = vec!["Timestamp: 1234".into()];
    cosign(&mut client, &keys, &with_extension).await;
    assert_eq!(stored(&installation, ORIGIN), Some((17, root(&leaves, 17))));

    // Rollback.
    let mut rollback = request(ORIGIN, &leaves, 12, 0);
    rollback.old_size = 17;
    refused_cosign(
        &installation,
        &mut client,
        &rollback,
        Code::Aborted,
        "rollback",
    )
    .await;
    let mut to_empty = request(ORIGIN, &leaves, 0, 0);
    to_empty.old_size = 17;
    refused_cosign(
        &installation,
        &mut client,
        &to_empty,
        Code::Aborted,
        "rollback",
    )
    .await;

    // Fork: another root at the recorded size.
    refused_cosign(
        &installation,
        &mut client,
        &request(ORIGIN, &other, 17, 17),
        Code::Aborted,
        "fork",
    )
    .await;

    // Unproven jumps.
    let jump = request(ORIGIN, &leaves, 30, 17);
    let mut empty_proof = jump.clone();
    empty_proof.consistency_proof.clear();
    refused_cosign(
        &installation,
        &mut client,
        &empty_proof,
        Code::Aborted,
        "unproven",
    )
    .await;
    let mut other_tree_proof = jump.clone();
    other_tree_proof.consistency_proof = raw(&proof(&other, 17, 30));
    refused_cosign(
        &installation,
        &mut client,
        &other_tree_proof,
        Code::Aborted,
        "unproven",
    )
    .await;
    // A proof valid for its own fork, from the fork's root at 17.
    refused_cosign(
        &installation,
        &mut client,
        &request(ORIGIN, &other, 30, 17),
        Code::Aborted,
        "unproven",
    )
    .await;
    let mut truncated = jump.clone();
    truncated.consistency_proof.pop();
    refused_cosign(
        &installation,
        &mut client,
        &truncated,
        Code::Aborted,
        "unproven",
    )
    .await;
    let mut extended = jump.clone();
    extended.consistency_proof.push(vec![7; 32]);
    refused_cosign(
        &installation,
        &mut client,
        &extended,
        Code::Aborted,
        "unproven",
    )
    .await;
    let mut flipped = jump.clone();
    flipped.consistency_proof[0][0] ^= 1;
    refused_cosign(
        &installation,
        &mut client,
        &flipped,
        Code::Aborted,
        "unproven",
    )
    .await;
    let mut proof_for_other_size = jump.clone();
    proof_for_other_size.consistency_proof = raw(&proof(&leaves, 17, 31));
    refused_cosign(
        &installation,
        &mut client,
        &proof_for_other_size,
        Code::Aborted,
        "unproven",
    )
    .await;
    let mut proof_at_equal_size = request(ORIGIN, &leaves, 17, 17);
    proof_at_equal_size.consistency_proof = raw(&proof(&leaves, 10, 17));
    refused_cosign(
        &installation,
        &mut client,
        &proof_at_equal_size,
        Code::Aborted,
        "unproven",
    )
    .await;

    // Stale old sizes, below and above the record, even with valid proofs.
    for old in [10, 25, 0] {
        let stale = request(ORIGIN, &leaves, 30, old);
        let status = refused_cosign(
            &installation,
            &mut client,
            &stale,
            Code::FailedPrecondition,
            "old_size_mismatch",
        )
        .await;
        assert_eq!(stored_size_metadata(&status), 17);
    }
    // A log never cosigned has stored size 0.
    let status = refused_cosign(
        &installation,
        &mut client,
        &request("example.com/new-log", &leaves, 30, 10),
        Code::FailedPrecondition,
        "old_size_mismatch",
    )
    .await;
    assert_eq!(stored_size_metadata(&status), 0);

    // None of that moved the record: the honest growth still proceeds from 17.
    assert_eq!(stored(&installation, ORIGIN), Some((17, root(&leaves, 17))));
    cosign(&mut client, &keys, &jump).await;
    cosign(&mut client, &keys, &request(ORIGIN, &leaves, 64, 30)).await;
    assert_eq!(stored(&installation, ORIGIN), Some((64, root(&leaves, 64))));

    // The metrics tell the story.
    let text = metrics_text(&mut client).await;
    let operations = "signer_operations_total";
    let ok = metric(
        &text,
        operations,
        &[("operation", "cosign_checkpoint"), ("result", "ok")],
    );
    assert_eq!(ok, 6.0, "{text}");
    for (reason, count) in [
        ("rollback", 2.0),
        ("fork", 1.0),
        ("unproven", 8.0),
        ("old_size_mismatch", 4.0),
    ] {
        assert_eq!(
            metric(
                &text,
                operations,
                &[("operation", "cosign_checkpoint"), ("result", reason)]
            ),
            count,
            "{reason}: {text}"
        );
        assert_eq!(
            metric(&text, "signer_refusals_total", &[("reason", reason)]),
            count,
            "{reason}: {text}"
        );
    }
    // One Ed25519 and one ML-DSA-44 signature per granted cosignature, no more.
    assert_eq!(
        metric(&text, SIGNATURES_MADE, &[("algorithm", "ed25519")]),
        6.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, SIGNATURES_MADE, &[("algorithm", "ml-dsa-44")]),
        6.0,
        "{text}"
    );
    drop(client);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_guard_record_survives_a_restart() {
    let installation = Installation::new(ALL_KEYS);
    let server = installation.start(None).await;
    let addr = server.addr;
    let leaves = tree("restart", 40);
    let other = fork_of(&leaves, 3, "restart-fork");
    {
        let mut client = installation.good_client(&server).await;
        let keys = published_keys(&mut client).await;
        cosign(&mut client, &keys, &request(ORIGIN, &leaves, 10, 0)).await;
        cosign(&mut client, &keys, &request(ORIGIN, &leaves, 20, 10)).await;
    }
    server.stop().await;

    // Same state file, same address (the first server must have let go of it).
    let server = installation.start(Some(addr)).await;
    let mut client = installation.good_client(&server).await;
    let keys = published_keys(&mut client).await;
    let mut rollback = request(ORIGIN, &leaves, 15, 0);
    rollback.old_size = 20;
    refused_cosign(
        &installation,
        &mut client,
        &rollback,
        Code::Aborted,
        "rollback",
    )
    .await;
    refused_cosign(
        &installation,
        &mut client,
        &request(ORIGIN, &other, 20, 20),
        Code::Aborted,
        "fork",
    )
    .await;
    let status = refused_cosign(
        &installation,
        &mut client,
        &request(ORIGIN, &leaves, 30, 10),
        Code::FailedPrecondition,
        "old_size_mismatch",
    )
    .await;
    assert_eq!(stored_size_metadata(&status), 20);
    cosign(&mut client, &keys, &request(ORIGIN, &leaves, 20, 20)).await;
    cosign(&mut client, &keys, &request(ORIGIN, &leaves, 40, 20)).await;
    drop(client);
    server.stop().await;
}

/// A deterministic generator for the liar's choices (xorshift64*).
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

const LIAR_TREE_SIZE: u64 = 400;

/// A lie of a kind chosen by `r`, built on a tree chosen by `r`, aimed at a
/// signer believed to have cosigned `believed`; and whether it is an
/// honest-looking growth (which a chain of requests builds on).
fn lie(trees: &[Vec<Hash>], r: u64, believed: u64) -> (pb::CosignCheckpointRequest, bool) {
    let pick = (r % trees.len() as u64) as usize;
    let family = &trees[pick];
    let other = &trees[(pick + 1) % trees.len()];
    let s = believed;
    let target = (s + 1 + (r >> 8) % 40).min(LIAR_TREE_SIZE);
    let mut request = request(ORIGIN, family, target, s);
    match (r >> 16) % 9 {
        // An honest-looking growth on this tree (a fork, if the tree is not
        // the one the signer has been following).
        0 | 1 => return (request, true),
        // A lie about the old size, with a proof valid from the lie.
        2 => {
            let mut old = 1 + (r >> 24) % target;
            if old == s {
                old = if old > 1 { old - 1 } else { old + 1 };
            }
            request.old_size = old;
            request.consistency_proof = raw(&proof(family, old.min(target), target));
        }
        // No proof at all.
        3 => request.consistency_proof.clear(),
        // A proof from another tree.
        4 => request.consistency_proof = raw(&proof(other, s, target)),
        // Rollback to a smaller size of this tree.
        5 => {
            let size = (r >> 24) % s;
            request = pb::CosignCheckpointRequest {
                root_hash: root(family, size).0.to_vec(),
                size,
                consistency_proof: Vec::new(),
                ..request
            };
        }
        // Another tree's root at the stored size.
        6 => {
            request = pb::CosignCheckpointRequest {
                root_hash: root(other, s).0.to_vec(),
                size: s,
                consistency_proof: Vec::new(),
                ..request
            };
        }
        // A proof of the right length full of garbage.
        7 => {
            for hash in &mut request.consistency_proof {
                *hash = leaf_hash(&r.to_be_bytes()).0.to_vec();
            }
        }
        // A valid proof in this tree, glued to another tree's root.
        _ => request.root_hash = root(other, target).0.to_vec(),
    }
    (request, false)
}

/// What a compromised core got cosigned, and its refusals by code.
type Haul = (Vec<(u64, Hash)>, BTreeMap<i32, usize>);

/// One compromised-core task: up to `attempts` requests, each a lie (see
/// [`lie`]), re-aiming at the stored size the signer reveals.
async fn liar(
    mut client: Client,
    keys: Arc<Published>,
    trees: Arc<Vec<Vec<Hash>>>,
    mut rng: u64,
    mut believed: u64,
    attempts: usize,
) -> Haul {
    let mut granted = Vec::new();
    let mut refused = BTreeMap::new();
    for _ in 0..attempts {
        let (request, _) = lie(&trees, next(&mut rng), believed);
        match client.cosign_checkpoint(request.clone()).await {
            Ok(response) => {
                verify_cosignatures(&keys, &request, response.get_ref());
                granted.push((request.size, Hash::from_slice(&request.root_hash).unwrap()));
                believed = request.size;
            }
            Err(status) => {
                match status.code() {
                    Code::FailedPrecondition => believed = stored_size_metadata(&status),
                    Code::Aborted | Code::InvalidArgument => {}
                    _ => panic!("unexpected failure {status:?}"),
                }
                *refused.entry(status.code() as i32).or_default() += 1;
            }
        }
    }
    (granted, refused)
}

/// One compromised-core task sending `batches` batches of `len` lies. Within a
/// batch the lies are chained as an honest core chains growths: each aims at
/// the size the last honest-looking growth before it would leave. Between
/// batches it re-aims at what the signer revealed.
async fn batch_liar(
    mut client: Client,
    keys: Arc<Published>,
    trees: Arc<Vec<Vec<Hash>>>,
    mut rng: u64,
    mut believed: u64,
    batches: usize,
    len: usize,
) -> Haul {
    let mut granted = Vec::new();
    let mut refused = BTreeMap::new();
    for _ in 0..batches {
        let mut items = Vec::new();
        let mut aim = believed;
        for _ in 0..len {
            let (request, honest) = lie(&trees, next(&mut rng), aim);
            if honest {
                aim = request.size;
            }
            items.push(request);
        }
        let results = client
            .cosign_checkpoints(pb::CosignCheckpointsRequest {
                items: items.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .results;
        assert_eq!(results.len(), items.len());
        for (request, result) in items.iter().zip(results) {
            match result.result.unwrap() {
                Outcome::Cosigned(response) => {
                    verify_cosignatures(&keys, request, &response);
                    granted.push((request.size, Hash::from_slice(&request.root_hash).unwrap()));
                    believed = request.size;
                }
                Outcome::Error(error) => {
                    match Code::from_i32(error.code) {
                        Code::FailedPrecondition => believed = error.stored_size.unwrap(),
                        Code::Aborted | Code::InvalidArgument => {}
                        _ => panic!("unexpected failure {error:?}"),
                    }
                    *refused.entry(error.code).or_default() += 1;
                }
            }
        }
    }
    (granted, refused)
}

/// Asserts that cosigned `(size, root)` pairs form one consistent chain: one
/// root per size, one of the trees explains them all, and each step verifies
/// as a consistency proof.
fn assert_consistent_chain(granted: &[(u64, Hash)], trees: &[Vec<Hash>]) {
    let mut by_size: BTreeMap<u64, Hash> = BTreeMap::new();
    for (size, root) in granted {
        let previous = by_size.insert(*size, *root);
        assert!(
            previous.is_none_or(|p| p == *root),
            "two roots cosigned at size {size}"
        );
    }
    let explained = trees
        .iter()
        .filter(|t| by_size.iter().all(|(size, r)| root(t, *size) == *r))
        .count();
    assert!(
        explained > 0,
        "no single tree explains every cosigned checkpoint: {by_size:?}"
    );
    let steps: Vec<(u64, Hash)> = by_size.into_iter().collect();
    for pair in steps.windows(2) {
        let [(old, old_root), (new, new_root)] = pair else {
            unreachable!()
        };
        let tree = trees
            .iter()
            .find(|t| root(t, *old) == *old_root && root(t, *new) == *new_root)
            .unwrap();
        verify_consistency(*old, *new, old_root, new_root, &proof(tree, *old, *new)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compromised_core_cannot_obtain_cosignatures_on_inconsistent_checkpoints() {
    let installation = Installation::new(ALL_KEYS);
    let server = installation.start(None).await;
    let mut client = installation.good_client(&server).await;
    let keys = Arc::new(published_keys(&mut client).await);
    // The honest tree and two forks of it (after leaf 100 and after leaf 40).
    let honest = tree("liar", LIAR_TREE_SIZE);
    let trees = Arc::new(vec![
        fork_of(&honest, 100, "liar-fork-b"),
        fork_of(&honest, 40, "liar-fork-c"),
        honest,
    ]);
    cosign(&mut client, &keys, &request(ORIGIN, &trees[2], 30, 0)).await;
    let mut granted = vec![(30, root(&trees[2], 30))];
    let mut refused: BTreeMap<i32, usize> = BTreeMap::new();

    // 64 concurrent requests with 64 different old sizes (0, 2, ..., 126), each
    // with a proof valid from its old size: only the true one, 30, may win.
    let mut tasks = Vec::new();
    for i in 0..64u64 {
        let mut client = client.clone();
        let trees = trees.clone();
        tasks.push(tokio::spawn(async move {
            let request = request(ORIGIN, &trees[(i % 3) as usize], 150 + i, 2 * i);
            (request.clone(), client.cosign_checkpoint(request).await)
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    let mut winners = Vec::new();
    for (request, result) in &results {
        if let Ok(response) = result {
            verify_cosignatures(&keys, request, response.get_ref());
            winners.push((request.size, Hash::from_slice(&request.root_hash).unwrap()));
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(winners[0].0, 150 + 15);
    for (_, result) in results {
        if let Err(status) = result {
            // Every other old size is stale, before or after the winner's grant.
            assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
            assert!([30, winners[0].0].contains(&stored_size_metadata(&status)));
            *refused.entry(status.code() as i32).or_default() += 1;
        }
    }
    granted.extend(winners);

    // 64 concurrent requests with the true old size, each taking the log along
    // one of the trees to its own size: all pass the first, non-binding check
    // at once, and only the check in the recording transaction keeps more than
    // one from being released.
    let from = stored(&installation, ORIGIN).unwrap().0;
    let mut tasks = Vec::new();
    for i in 0..64u64 {
        let mut client = client.clone();
        let trees = trees.clone();
        tasks.push(tokio::spawn(async move {
            let request = request(ORIGIN, &trees[(i % 3) as usize], from + 10 + i, from);
            (request.clone(), client.cosign_checkpoint(request).await)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (request, result) = task.await.unwrap();
        match result {
            Ok(response) => {
                verify_cosignatures(&keys, &request, response.get_ref());
                winners.push((request.size, Hash::from_slice(&request.root_hash).unwrap()));
            }
            Err(status) => {
                assert!(
                    matches!(status.code(), Code::FailedPrecondition | Code::Aborted),
                    "{status:?}"
                );
                *refused.entry(status.code() as i32).or_default() += 1;
            }
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    granted.extend(winners);

    // Then rounds of 64 concurrent liars over one HTTP/2 channel, each lying in
    // every way it can and re-aiming at whatever the signer says it stored.
    for round in 0..6u64 {
        let believed = stored(&installation, ORIGIN).unwrap().0;
        let mut tasks = Vec::new();
        for i in 0..64u64 {
            let seed = (round * 64 + i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            tasks.push(tokio::spawn(liar(
                client.clone(),
                keys.clone(),
                trees.clone(),
                seed,
                believed,
                4,
            )));
        }
        for task in tasks {
            let (won, lost) = task.await.unwrap();
            granted.extend(won);
            for (code, count) in lost {
                *refused.entry(code).or_default() += count;
            }
        }
        assert_consistent_chain(&granted, &trees);
    }

    assert_consistent_chain(&granted, &trees);
    // The record is the largest cosigned checkpoint.
    let largest = *granted.iter().max_by_key(|(size, _)| *size).unwrap();
    assert_eq!(stored(&installation, ORIGIN), Some(largest));
    // The run was not vacuous: the log grew, and every kind of refusal happened.
    let sizes: std::collections::BTreeSet<u64> = granted.iter().map(|(size, _)| *size).collect();
    assert!(sizes.len() >= 4, "{sizes:?}");
    assert!(
        refused.get(&(Code::Aborted as i32)).copied().unwrap_or(0) > 50,
        "{refused:?}"
    );
    assert!(
        refused
            .get(&(Code::FailedPrecondition as i32))
            .copied()
            .unwrap_or(0)
            > 50,
        "{refused:?}"
    );
    // Exactly one signature pair per grant was made: none leaked from refusals.
    let text = metrics_text(&mut client).await;
    let grants = metric(
        &text,
        "signer_operations_total",
        &[("operation", "cosign_checkpoint"), ("result", "ok")],
    );
    assert_eq!(grants, granted.len() as f64);
    assert!(metric(&text, SIGNATURES_MADE, &[("algorithm", "ed25519")]) >= grants);
    drop(client);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compromised_core_cannot_get_two_cosignatures_on_a_fork_through_batches() {
    let installation = Installation::new(ALL_KEYS);
    let server = installation.start(None).await;
    let mut client = installation.good_client(&server).await;
    let keys = Arc::new(published_keys(&mut client).await);
    let honest = tree("batch-liar", LIAR_TREE_SIZE);
    let trees = Arc::new(vec![
        fork_of(&honest, 100, "batch-liar-fork-b"),
        fork_of(&honest, 40, "batch-liar-fork-c"),
        honest,
    ]);
    cosign(&mut client, &keys, &request(ORIGIN, &trees[2], 30, 0)).await;
    let mut granted = vec![(30, root(&trees[2], 30))];
    let mut refused: BTreeMap<i32, usize> = BTreeMap::new();

    // 32 concurrent batches, each taking the log from 30 along one of the trees
    // in two chained steps, to sizes no two batches share: every batch passes
    // the first check, and exactly one may be recorded and released.
    let mut tasks = Vec::new();
    for i in 0..32u64 {
        let mut client = client.clone();
        let trees = trees.clone();
        tasks.push(tokio::spawn(async move {
            let tree = &trees[(i % 3) as usize];
            let items = vec![
                request(ORIGIN, tree, 150 + i, 30),
                request(ORIGIN, tree, 200 + i, 150 + i),
            ];
            let response = client
                .cosign_checkpoints(pb::CosignCheckpointsRequest {
                    items: items.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            (items, response.results)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (items, results) = task.await.unwrap();
        let mut won = Vec::new();
        for (item, result) in items.iter().zip(results) {
            match result.result.unwrap() {
                Outcome::Cosigned(response) => {
                    verify_cosignatures(&keys, item, &response);
                    won.push((item.size, Hash::from_slice(&item.root_hash).unwrap()));
                }
                Outcome::Error(error) => {
                    assert_eq!(
                        Code::from_i32(error.code),
                        Code::FailedPrecondition,
                        "{error:?}"
                    );
                    assert_eq!(error.reason, "old_size_mismatch");
                    *refused.entry(error.code).or_default() += 1;
                }
            }
        }
        if !won.is_empty() {
            assert_eq!(won.len(), 2, "a batch won only in part: {won:?}");
            winners.push(won);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let winner = winners.remove(0);
    assert_eq!(stored(&installation, ORIGIN), Some(winner[1]));
    granted.extend(winner);

    // Then rounds of 16 concurrent liars, each sending batches of chained lies.
    for round in 0..4u64 {
        let believed = stored(&installation, ORIGIN).unwrap().0;
        let mut tasks = Vec::new();
        for i in 0..16u64 {
            let seed = (round * 16 + i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            tasks.push(tokio::spawn(batch_liar(
                client.clone(),
                keys.clone(),
                trees.clone(),
                seed,
                believed,
                3,
                8,
            )));
        }
        for task in tasks {
            let (won, lost) = task.await.unwrap();
            granted.extend(won);
            for (code, count) in lost {
                *refused.entry(code).or_default() += count;
            }
        }
        assert_consistent_chain(&granted, &trees);
    }

    let largest = *granted.iter().max_by_key(|(size, _)| *size).unwrap();
    assert_eq!(stored(&installation, ORIGIN), Some(largest));
    let sizes: std::collections::BTreeSet<u64> = granted.iter().map(|(size, _)| *size).collect();
    assert!(sizes.len() >= 4, "{sizes:?}");
    for code in [Code::Aborted, Code::FailedPrecondition] {
        assert!(
            refused.get(&(code as i32)).copied().unwrap_or(0) > 50,
            "{refused:?}"
        );
    }
    let text = metrics_text(&mut client).await;
    let batch_grants = metric(
        &text,
        "signer_operations_total",
        &[("operation", "cosign_checkpoints"), ("result", "ok")],
    );
    // The first cosignature was a single call.
    assert_eq!(batch_grants, (granted.len() - 1) as f64);
    drop(client);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------

const TRANSACTIONS: &str = "signer_fork_guard_transactions_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_cosigns_exactly_the_items_that_pass_and_records_them_in_one_transaction() {
    let installation = Installation::new(ALL_KEYS);
    let server = installation.start(None).await;
    let mut client = installation.good_client(&server).await;
    let keys = published_keys(&mut client).await;
    let leaves = tree("batch", 64);
    let other = fork_of(&leaves, 5, "batch-fork");
    let elsewhere = tree("batch-elsewhere", 16);
    cosign(&mut client, &keys, &request(ORIGIN, &leaves, 10, 0)).await;
    cosign(
        &mut client,
        &keys,
        &request("example.com/b", &elsewhere, 5, 0),
    )
    .await;

    let mut malformed = request("example.com/c", &elsewhere, 3, 0);
    malformed.origin = "bad\norigin".into();
    let mut rollback = request(ORIGIN, &leaves, 25, 0);
    rollback.old_size = 30;
    let mut long_proof = request(ORIGIN, &leaves, 40, 30);
    long_proof.consistency_proof = vec![vec![1; 32]; 64];
    let items = vec![
        request(ORIGIN, &leaves, 20, 10),
        // Chains on the item before: its old size is that item's size.
        request(ORIGIN, &leaves, 30, 20),
        rollback,
        // Another root at the size the batch just reached.
        request(ORIGIN, &other, 30, 30),
        malformed,
        request("example.com/b", &elsewhere, 8, 5),
        request("example.com/c", &elsewhere, 3, 0),
        // Stale: the record is at 30 once the second item is in.
        request(ORIGIN, &leaves, 40, 10),
        long_proof,
        request(ORIGIN, &leaves, 40, 30),
        // The same checkpoint again, as a re-cosign at the same size.
        request(ORIGIN, &leaves, 40, 40),
    ];
    // (code, reason) of each refused item.
    let refusals: BTreeMap<usize, (Code, &str)> = [
        (2, (Code::Aborted, "rollback")),
        (3, (Code::Aborted, "fork")),
        (4, (Code::InvalidArgument, "invalid_request")),
        (7, (Code::FailedPrecondition, "old_size_mismatch")),
        (8, (Code::InvalidArgument, "invalid_request")),
    ]
    .into();
    let granted = items.len() - refusals.len();

    let before = before(&installation, &mut client).await;
    let text = metrics_text(&mut client).await;
    let transactions = metric(&text, TRANSACTIONS, &[]);
    let results = client
        .cosign_checkpoints(pb::CosignCheckpointsRequest {
            items: items.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), items.len());
    let mut timestamps = Vec::new();
    for (i, (item, result)) in items.iter().zip(&results).enumerate() {
        match (result.result.as_ref().unwrap(), refusals.get(&i)) {
            (Outcome::Cosigned(response), None) => {
                verify_cosignatures(&keys, item, response);
                timestamps.push(response.timestamp);
            }
            (Outcome::Error(error), Some((code, reason))) => {
                assert_eq!(Code::from_i32(error.code), *code, "item {i}: {error:?}");
                assert_eq!(error.reason, *reason, "item {i}");
                assert!(!error.message.is_empty());
                let expected_stored = (*code == Code::FailedPrecondition).then_some(30);
                assert_eq!(error.stored_size, expected_stored, "item {i}");
            }
            (outcome, expected) => panic!("item {i}: {outcome:?}, expected {expected:?}"),
        }
    }
    // One timestamp for the batch.
    assert!(timestamps.windows(2).all(|pair| pair[0] == pair[1]));

    // Recorded: the last granted checkpoint of each origin, in one transaction.
    assert_eq!(stored(&installation, ORIGIN), Some((40, root(&leaves, 40))));
    assert_eq!(
        stored(&installation, "example.com/b"),
        Some((8, root(&elsewhere, 8)))
    );
    assert_eq!(
        stored(&installation, "example.com/c"),
        Some((3, root(&elsewhere, 3)))
    );
    assert!(stored(&installation, "bad\norigin").is_none());
    let text = metrics_text(&mut client).await;
    assert_eq!(
        metric(&text, TRANSACTIONS, &[]),
        transactions + 1.0,
        "{text}"
    );
    // Signed: exactly the granted items, with both keys; nothing for refusals.
    for algorithm in ["ed25519", "ml-dsa-44"] {
        assert_eq!(
            metric(&text, SIGNATURES_MADE, &[("algorithm", algorithm)])
                - metric(
                    &before_text(&before),
                    SIGNATURES_MADE,
                    &[("algorithm", algorithm)]
                ),
            granted as f64,
            "{algorithm}"
        );
    }
    // Audited: one line per item, in order, with its outcome.
    let lines = audit_lines_since(&installation, before.audit);
    assert_eq!(lines.len(), items.len(), "{lines:?}");
    for (i, (item, line)) in items.iter().zip(&lines).enumerate() {
        assert_eq!(line["operation"], "cosign_checkpoints", "{line}");
        assert_eq!(line["origin"], item.origin.as_str(), "{line}");
        assert_eq!(line["size"], item.size, "{line}");
        assert_eq!(line["caller"], format!("uri:{GOOD_IDENTITY}"), "{line}");
        let result = refusals.get(&i).map_or("ok", |(_, reason)| reason);
        assert_eq!(line["result"], result, "{line}");
    }
    drop(client);
    server.stop().await;
}

/// A batch item refused only because an earlier item of the batch would move
/// the record must not name that item's size when the earlier item is itself
/// refused by the commit: the log would be told the witness cosigned a size it
/// never did. Here a concurrent commit (written into the state file behind the
/// signer's in-memory record) moves the record to 15 between the first check
/// and the commit, so `10 -> 20` is refused by the commit, and `10 -> 30`,
/// first refused against the overlay's 20, is checked again: refused with 15.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_never_names_a_size_an_uncommitted_batch_item_would_have_recorded() {
    let installation = Installation::new(ALL_KEYS);
    let server = installation.start(None).await;
    let mut client = installation.good_client(&server).await;
    let keys = published_keys(&mut client).await;
    let leaves = tree("deferred", 32);
    cosign(&mut client, &keys, &request(ORIGIN, &leaves, 10, 0)).await;
    {
        let connection = rusqlite::Connection::open(&installation.state_path).unwrap();
        connection
            .busy_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        let changed = connection
            .execute(
                "UPDATE cosigned SET size = 15, root = ?1 WHERE origin = ?2",
                rusqlite::params![root(&leaves, 15).0.to_vec(), ORIGIN],
            )
            .unwrap();
        assert_eq!(changed, 1);
    }
    let items = vec![
        request(ORIGIN, &leaves, 20, 10),
        request(ORIGIN, &leaves, 30, 10),
    ];
    let results = client
        .cosign_checkpoints(pb::CosignCheckpointsRequest { items })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 2);
    for (i, result) in results.iter().enumerate() {
        match result.result.as_ref().unwrap() {
            Outcome::Error(error) => {
                assert_eq!(error.reason, "old_size_mismatch", "item {i}: {error:?}");
                assert_eq!(error.stored_size, Some(15), "item {i}: {error:?}");
            }
            other => panic!("item {i}: {other:?}"),
        }
    }
    assert_eq!(stored(&installation, ORIGIN), Some((15, root(&leaves, 15))));
    drop(client);
    server.stop().await;
}

/// The signature counts at `before`, as Prometheus text for [`metric`].
fn before_text(before: &Before) -> String {
    before.metrics.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_that_are_empty_too_large_or_from_refused_callers_sign_nothing() {
    let installation = Installation::new(ALL_KEYS);
    let server = installation.start(None).await;
    let mut client = installation.good_client(&server).await;
    let keys = published_keys(&mut client).await;
    let leaves = tree("batch-refusals", 8);
    cosign(&mut client, &keys, &request(ORIGIN, &leaves, 2, 0)).await;
    let growth = request(ORIGIN, &leaves, 4, 2);

    let too_many = vec![growth.clone(); MAX_BATCH_ITEMS + 1];
    for (name, items) in [("empty", Vec::new()), ("513 items", too_many)] {
        let before = before(&installation, &mut client).await;
        let status = client
            .cosign_checkpoints(pb::CosignCheckpointsRequest { items })
            .await
            .expect_err(name);
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert!(status.message().contains("1 to 512 items"), "{status:?}");
        let lines = unchanged_and_audited(&installation, &mut client, &before).await;
        assert_eq!(lines.len(), 1, "{name}: one line for the call: {lines:?}");
        assert_eq!(lines[0]["operation"], "cosign_checkpoints");
        assert_eq!(lines[0]["result"], "invalid_request");
    }

    // A caller that is not allowed: every item is on record as refused.
    let mut evil = installation
        .client(&server, Some(&installation.pki.wrong_identity))
        .await
        .unwrap();
    let before = before(&installation, &mut client).await;
    let status = evil
        .cosign_checkpoints(pb::CosignCheckpointsRequest {
            items: vec![growth.clone(), request("example.com/other", &leaves, 3, 0)],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let lines = unchanged_and_audited(&installation, &mut client, &before).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in &lines {
        assert_eq!(line["result"], "permission_denied", "{line}");
        assert_eq!(line["caller"], "uri:spiffe://evil", "{line}");
    }

    // The batch the refusals were about is granted to the allowed caller.
    let results = client
        .cosign_checkpoints(pb::CosignCheckpointsRequest {
            items: vec![growth.clone()],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let Some(Outcome::Cosigned(response)) = &results[0].result else {
        panic!("{results:?}")
    };
    verify_cosignatures(&keys, &growth, response);
    drop((client, evil));
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Request size
// ---------------------------------------------------------------------------

/// An in-toto Statement of exactly `len` bytes.
fn statement_of(len: usize) -> Vec<u8> {
    let head = r#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"x","digest":{"sha256":"00"}}],"predicateType":"https://example.com/p","predicate":{"pad":""#;
    let tail = r#""}}"#;
    let mut statement = head.as_bytes().to_vec();
    statement.resize(len - tail.len(), b'x');
    statement.extend_from_slice(tail.as_bytes());
    assert_eq!(statement.len(), len);
    statement
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_at_the_size_cap_is_signed_and_larger_requests_are_refused_and_audited() {
    let installation = Installation::new(ALL_KEYS);
    let server = installation.start(None).await;
    // The envelope of the largest payload is over tonic's default 4 MiB.
    let mut client = installation
        .good_client(&server)
        .await
        .max_decoding_message_size(8 << 20);
    let keys = published_keys(&mut client).await;
    let payload_type = "application/vnd.in-toto+json";

    // At the cap: signed, and the envelope verifies.
    let payload = statement_of(MAX_PAYLOAD_SIZE);
    let envelope = client
        .sign_manifest(pb::SignManifestRequest {
            payload_type: payload_type.into(),
            payload: payload.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .envelope;
    let envelope: Value = serde_json::from_slice(&envelope).unwrap();
    {
        use p256::ecdsa::signature::Verifier as _;
        use p256::pkcs8::DecodePublicKey as _;
        let key = p256::ecdsa::VerifyingKey::from_public_key_pem(&keys.manifest_pem).unwrap();
        let der = BASE64
            .decode(envelope["signatures"][0]["sig"].as_str().unwrap())
            .unwrap();
        let signature = p256::ecdsa::DerSignature::try_from(der.as_slice()).unwrap();
        key.verify(&pae(payload_type, &payload), &signature)
            .unwrap();
    }

    // One byte over the cap: the service refuses it (the request is within the
    // decoding limit), audited, nothing signed.
    let over_cap = before(&installation, &mut client).await;
    let status = client
        .sign_manifest(pb::SignManifestRequest {
            payload_type: payload_type.into(),
            payload: statement_of(MAX_PAYLOAD_SIZE + 1),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("over 4 MiB"), "{status:?}");
    let lines = unchanged_and_audited(&installation, &mut client, &over_cap).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["operation"], "sign_manifest");
    assert_eq!(lines[0]["result"], "payload_refused");

    // Over the decoding limit: tonic refuses the message before any handler
    // runs; the edge layer audits it.
    for (name, request) in [
        (
            "manifest",
            Either::Manifest(pb::SignManifestRequest {
                payload_type: payload_type.into(),
                payload: statement_of(MAX_REQUEST_MESSAGE_SIZE + 1),
            }),
        ),
        (
            "batch",
            Either::Batch(pb::CosignCheckpointsRequest {
                items: vec![
                    pb::CosignCheckpointRequest {
                        extension_lines: vec!["x".repeat(MAX_REQUEST_MESSAGE_SIZE / 100)],
                        ..request(ORIGIN, &tree("size", 2), 2, 0)
                    };
                    101
                ],
            }),
        ),
    ] {
        let before = before(&installation, &mut client).await;
        let (operation, status) = match request {
            Either::Manifest(request) => (
                "sign_manifest",
                client.sign_manifest(request).await.unwrap_err(),
            ),
            Either::Batch(request) => (
                "cosign_checkpoints",
                client.cosign_checkpoints(request).await.unwrap_err(),
            ),
        };
        assert_eq!(status.code(), Code::OutOfRange, "{name}: {status:?}");
        let lines = unchanged_and_audited(&installation, &mut client, &before).await;
        assert_eq!(lines.len(), 1, "{name}: {lines:?}");
        assert_eq!(lines[0]["operation"], operation);
        assert_eq!(lines[0]["result"], "too_large");
        assert_eq!(lines[0]["caller"], format!("uri:{GOOD_IDENTITY}"));
        assert!(
            lines[0]["reason"]
                .as_str()
                .unwrap()
                .contains(&MAX_REQUEST_MESSAGE_SIZE.to_string()),
            "{}",
            lines[0]
        );
    }
    drop(client);
    server.stop().await;
}

/// A request of one of two calls.
enum Either {
    Manifest(pb::SignManifestRequest),
    Batch(pb::CosignCheckpointsRequest),
}

// ---------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_invalid_argument_and_sign_nothing() {
    let installation = Installation::new(ALL_KEYS);
    let server = installation.start(None).await;
    let mut client = installation.good_client(&server).await;
    let keys = published_keys(&mut client).await;
    let leaves = tree("bad-input", 20);
    cosign(&mut client, &keys, &request(ORIGIN, &leaves, 8, 0)).await;
    // Every case is a mutation of this valid growth, granted at the end.
    let valid = request(ORIGIN, &leaves, 12, 8);
    // Bytes of extension line that fill the checkpoint text to the 4096-byte
    // cap (each line also takes a newline).
    let text_room = 4096 - checkpoint_text(&valid).len() - 1;
    let with = |mutate: &dyn Fn(&mut pb::CosignCheckpointRequest)| {
        let mut request = valid.clone();
        mutate(&mut request);
        request
    };
    let cases: Vec<(&str, pb::CosignCheckpointRequest)> = vec![
        ("origin of 256 bytes", with(&|r| r.origin = "o".repeat(256))),
        ("origin of 256 bytes, first checkpoint", {
            let mut r = request(&"o".repeat(256), &leaves, 3, 0);
            r.consistency_proof.clear();
            r
        }),
        ("empty origin", with(&|r| r.origin.clear())),
        (
            "origin with a newline",
            with(&|r| r.origin.push_str("\n12\nAAAA")),
        ),
        (
            "origin with a carriage return",
            with(&|r| r.origin.push('\r')),
        ),
        ("origin with NUL", with(&|r| r.origin.push('\0'))),
        ("origin with ESC", with(&|r| r.origin.push('\x1b'))),
        ("origin with a tab", with(&|r| r.origin.push('\t'))),
        (
            "extension line with a newline",
            with(&|r| r.extension_lines = vec!["a\n\n— evil AAAA".into()]),
        ),
        (
            "extension line with a carriage return",
            with(&|r| r.extension_lines = vec!["Timestamp: 1\r".into()]),
        ),
        (
            "extension line with a control character",
            with(&|r| r.extension_lines = vec!["x\x07".into()]),
        ),
        (
            "empty extension line",
            with(&|r| r.extension_lines = vec![String::new()]),
        ),
        ("root hash of 31 bytes", with(&|r| r.root_hash.truncate(31))),
        ("root hash of 33 bytes", with(&|r| r.root_hash.push(0))),
        ("empty root hash", with(&|r| r.root_hash.clear())),
        ("size 2^63", with(&|r| r.size = 1 << 63)),
        ("size 2^64 - 1", with(&|r| r.size = u64::MAX)),
        (
            "proof of 64 hashes",
            with(&|r| r.consistency_proof = vec![vec![1; 32]; 64]),
        ),
        (
            "proof of 1000 hashes",
            with(&|r| r.consistency_proof = vec![vec![1; 32]; 1000]),
        ),
        (
            "proof hash of 31 bytes",
            with(&|r| r.consistency_proof[0].truncate(31)),
        ),
        (
            "proof hash of 33 bytes",
            with(&|r| r.consistency_proof[0].push(0)),
        ),
        (
            "empty proof hash",
            with(&|r| r.consistency_proof[0].clear()),
        ),
        (
            "checkpoint text of 4097 bytes",
            with(&|r| r.extension_lines = vec!["x".repeat(text_room + 1)]),
        ),
        (
            "checkpoint text of 4097 bytes in many lines",
            with(&|r| r.extension_lines = vec!["x".into(); (text_room + 3) / 2]),
        ),
        ("size 0 with another root than the empty tree's", {
            let mut r = request("example.com/empty", &leaves, 0, 0);
            r.root_hash = root(&leaves, 1).0.to_vec();
            r
        }),
    ];
    for (name, request) in &cases {
        let status = refused_cosign(
            &installation,
            &mut client,
            request,
            Code::InvalidArgument,
            "invalid_request",
        )
        .await;
        assert!(!status.message().is_empty(), "{name}");
    }

    // SignManifest: only in-toto Statements, only the allowlisted type.
    let statement = br#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"x","digest":{"sha256":"00"}}],"predicateType":"https://example.com/p"}"#;
    let manifests: Vec<(&str, &str, &[u8])> = vec![
        ("unknown payload type", "text/plain", statement),
        ("payload type differing in case", "application/vnd.in-toto+JSON", statement),
        ("payload that is not JSON", "application/vnd.in-toto+json", b"\x00\x01 raw bytes"),
        ("JSON that is not a Statement", "application/vnd.in-toto+json", br#"{"hello":"world"}"#),
        (
            "Statement without subjects",
            "application/vnd.in-toto+json",
            br#"{"_type":"https://in-toto.io/Statement/v1","subject":[],"predicateType":"p"}"#,
        ),
        (
            "Statement of another type",
            "application/vnd.in-toto+json",
            br#"{"_type":"https://example.com/Other","subject":[{"name":"x"}],"predicateType":"p"}"#,
        ),
        ("empty payload", "application/vnd.in-toto+json", b""),
    ];
    for (name, payload_type, payload) in manifests {
        let before = before(&installation, &mut client).await;
        let status = client
            .sign_manifest(pb::SignManifestRequest {
                payload_type: payload_type.into(),
                payload: payload.to_vec(),
            })
            .await
            .expect_err(name);
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        let lines = unchanged_and_audited(&installation, &mut client, &before).await;
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["operation"], "sign_manifest");
        assert_eq!(lines[0]["result"], "payload_refused", "{name}");
    }

    // The boundaries themselves are fine: a 255-byte origin, and the valid
    // request every case above was a mutation of (the record never moved).
    cosign(
        &mut client,
        &keys,
        &request(&"o".repeat(255), &leaves, 3, 0),
    )
    .await;
    assert_eq!(stored(&installation, ORIGIN).unwrap().0, 8);
    cosign(&mut client, &keys, &valid).await;
    let mut at_cap = request(ORIGIN, &leaves, 12, 12);
    at_cap.extension_lines = vec!["x".repeat(text_room)];
    assert_eq!(checkpoint_text(&at_cap).len(), 4096);
    cosign(&mut client, &keys, &at_cap).await;
    drop(client);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// SignManifest and SignSubtree
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_envelope_verifies_with_the_published_p256_key() {
    use p256::ecdsa::signature::Verifier as _;
    use p256::pkcs8::{DecodePublicKey as _, EncodePublicKey as _};

    let installation = Installation::new(ALL_KEYS);
    let server = installation.start(None).await;
    let mut client = installation.good_client(&server).await;
    let keys = published_keys(&mut client).await;
    let payload_type = "application/vnd.in-toto+json";
    let payload = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "checkpoints-2025-01", "digest": {"sha256": hex::encode(Sha256::digest(b"manifest"))}}],
        "predicateType": "https://example.com/witness-manifest/v1",
        "predicate": {"entries": 3},
    })
    .to_string()
    .into_bytes();
    let before = before(&installation, &mut client).await;
    let envelope = client
        .sign_manifest(pb::SignManifestRequest {
            payload_type: payload_type.into(),
            payload: payload.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .envelope;
    assert_eq!(
        guard_record(&installation),
        before.record,
        "signing a manifest touched the fork guard"
    );
    let envelope: Value = serde_json::from_slice(&envelope).unwrap();
    assert_eq!(envelope["payloadType"], payload_type);
    assert_eq!(
        BASE64
            .decode(envelope["payload"].as_str().unwrap())
            .unwrap(),
        payload
    );
    let signatures = envelope["signatures"].as_array().unwrap();
    assert_eq!(signatures.len(), 1);

    let key = p256::ecdsa::VerifyingKey::from_public_key_pem(&keys.manifest_pem).unwrap();
    let spki = key.to_public_key_der().unwrap();
    assert_eq!(
        keys.manifest_key_id,
        hex::encode(Sha256::digest(spki.as_bytes()))
    );
    assert_eq!(signatures[0]["keyid"], keys.manifest_key_id.as_str());
    let der = BASE64
        .decode(signatures[0]["sig"].as_str().unwrap())
        .unwrap();
    let signature = p256::ecdsa::DerSignature::try_from(der.as_slice()).unwrap();
    key.verify(&pae(payload_type, &payload), &signature)
        .unwrap();
    // Over the PAE, not the bare payload.
    assert!(key.verify(&payload, &signature).is_err());
    // The manifest key is not a cosigning key.
    assert_ne!(keys.ed25519.public_key_material(), spki.as_bytes());

    let lines = audit_lines(&installation);
    let line = lines.last().unwrap();
    assert_eq!(line["operation"], "sign_manifest");
    assert_eq!(line["result"], "ok");
    assert_eq!(line["key_id"], keys.manifest_key_id.as_str());
    // The audit log keeps no payload contents.
    assert!(!line.to_string().contains("checkpoints-2025-01"));
    drop(client);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subtree_signatures_only_for_subtrees_of_checkpoints_this_signer_cosigned() {
    let installation = Installation::new(ALL_KEYS);
    let server = installation.start(None).await;
    let mut client = installation.good_client(&server).await;
    let keys = published_keys(&mut client).await;
    let public = ml_dsa_public_key(&keys.ml_dsa_44.to_vkey());
    let leaves = tree("subtree", 21);
    let cosigned = request(ORIGIN, &leaves, 21, 0);
    let response = cosign(&mut client, &keys, &cosigned).await;
    let checkpoint = note_with(&checkpoint_text(&cosigned), &response.signature_lines);
    // Only the Ed25519 line, then only the ML-DSA-44 line: either of ours will do.
    let ed25519_only = note_with(&checkpoint_text(&cosigned), &response.signature_lines[..1]);
    let ml_dsa_only = note_with(&checkpoint_text(&cosigned), &response.signature_lines[1..]);

    let subtree = |start: u64, end: u64, checkpoint: &[u8]| pb::SignSubtreeRequest {
        checkpoint: checkpoint.to_vec(),
        start,
        end,
        subtree_hash: subtree_hash(&mut LeafHashes(&leaves), start, end)
            .unwrap()
            .0
            .to_vec(),
        proof: raw(&prove_subtree_consistency(&mut LeafHashes(&leaves), start, end, 21).unwrap()),
    };
    let record = guard_record(&installation);
    for (start, end, note) in [
        (0, 21, &checkpoint),
        (0, 16, &checkpoint),
        (8, 13, &checkpoint),
        (16, 21, &ed25519_only),
        (20, 21, &ml_dsa_only),
        (4, 8, &checkpoint),
        (0, 1, &checkpoint),
    ] {
        let request = subtree(start, end, note);
        let lines = client
            .sign_subtree(request.clone())
            .await
            .unwrap()
            .into_inner()
            .signature_lines;
        assert_eq!(lines.len(), 1);
        let (key_id, timestamp, signature) = split_line(&lines[0]);
        assert_eq!(key_id, keys.ml_dsa_44.key_id());
        assert_eq!(timestamp, 0, "subtree cosignatures carry a zero timestamp");
        let hash = Hash::from_slice(&request.subtree_hash).unwrap();
        let message = cosigned_message(COSIGNER_NAME, 0, ORIGIN, start, end, &hash);
        assert!(
            support::verify(Algorithm::MlDsa44, &public, &message, &signature),
            "[{start}, {end}) does not verify as subtree/v1"
        );
        let other = cosigned_message(COSIGNER_NAME, 0, ORIGIN, start, end + 1, &hash);
        assert!(!support::verify(
            Algorithm::MlDsa44,
            &public,
            &other,
            &signature
        ));
    }
    assert_eq!(
        guard_record(&installation),
        record,
        "SignSubtree touched the fork guard"
    );

    let refused = |request: pb::SignSubtreeRequest, code: Code, kind: &'static str| {
        let installation = &installation;
        let mut client = client.clone();
        async move {
            let before = before(installation, &mut client).await;
            let status = client.sign_subtree(request).await.expect_err(kind);
            assert_eq!(status.code(), code, "{status:?}");
            let lines = unchanged_and_audited(installation, &mut client, &before).await;
            assert_eq!(lines.len(), 1);
            assert_eq!(lines[0]["operation"], "sign_subtree");
            assert_eq!(lines[0]["result"], kind, "{}", lines[0]);
        }
    };

    // Not cosigned by this signer: another witness's cosignature on the same
    // checkpoint, our lines on another checkpoint, no signature at all.
    let stranger = {
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let verifier = VerifierKey::from_material(
            "witness.test/stranger",
            SignatureType::CosignatureV1,
            key.verifying_key().as_bytes(),
        )
        .unwrap();
        let text = checkpoint_text(&cosigned);
        let message = witness_core::cosignature::cosignature_v1_message(now(), &text);
        let mut blob = now().to_be_bytes().to_vec();
        blob.extend_from_slice(&ed25519_dalek::Signer::sign(&key, &message).to_bytes());
        let line = witness_core::note::NoteSignature::new(
            "witness.test/stranger",
            verifier.key_id(),
            blob,
        )
        .unwrap()
        .to_line();
        note_with(&text, &[line])
    };
    refused(
        subtree(8, 13, &stranger),
        Code::PermissionDenied,
        "not_cosigned_by_us",
    )
    .await;
    let mut other_checkpoint = cosigned.clone();
    other_checkpoint.root_hash = root(&leaves, 20).0.to_vec();
    let moved = note_with(
        &checkpoint_text(&other_checkpoint),
        &response.signature_lines,
    );
    refused(
        subtree(8, 13, &moved),
        Code::PermissionDenied,
        "not_cosigned_by_us",
    )
    .await;

    // Bad proofs and subtrees.
    let mut flipped = subtree(8, 13, &checkpoint);
    flipped.proof[0][5] ^= 0x80;
    refused(flipped, Code::InvalidArgument, "invalid_request").await;
    let mut truncated = subtree(8, 13, &checkpoint);
    truncated.proof.pop();
    refused(truncated, Code::InvalidArgument, "invalid_request").await;
    let mut wrong_hash = subtree(8, 13, &checkpoint);
    wrong_hash.subtree_hash = subtree_hash(&mut LeafHashes(&leaves), 8, 12)
        .unwrap()
        .0
        .to_vec();
    refused(wrong_hash, Code::InvalidArgument, "invalid_request").await;
    let mut other_range = subtree(8, 13, &checkpoint);
    other_range.end = 14;
    refused(other_range, Code::InvalidArgument, "invalid_request").await;
    let mut long_proof = subtree(8, 13, &checkpoint);
    long_proof.proof = vec![vec![1; 32]; 64];
    refused(long_proof, Code::InvalidArgument, "invalid_request").await;
    let mut short_hash = subtree(8, 13, &checkpoint);
    short_hash.proof[0].truncate(31);
    refused(short_hash, Code::InvalidArgument, "invalid_request").await;
    let unaligned = pb::SignSubtreeRequest {
        start: 3,
        end: 7,
        ..subtree(4, 8, &checkpoint)
    };
    refused(unaligned, Code::InvalidArgument, "invalid_request").await;
    let beyond = pb::SignSubtreeRequest {
        end: 24,
        ..subtree(16, 21, &checkpoint)
    };
    refused(beyond, Code::InvalidArgument, "invalid_request").await;
    let empty = pb::SignSubtreeRequest {
        end: 8,
        ..subtree(8, 13, &checkpoint)
    };
    refused(empty, Code::InvalidArgument, "invalid_request").await;
    refused(
        pb::SignSubtreeRequest {
            checkpoint: b"not a note".to_vec(),
            ..subtree(8, 13, &checkpoint)
        },
        Code::InvalidArgument,
        "invalid_request",
    )
    .await;
    drop(client);
    server.stop().await;
}

/// An observer identity (the gateway aggregating metrics) reads the public
/// keys and the metrics, and gets `PERMISSION_DENIED` for every signing call:
/// a compromised gateway cannot obtain a signature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observer_identity_reads_metrics_but_cannot_obtain_any_signature() {
    let mut installation = Installation::new(ALL_KEYS);
    installation
        .config
        .tls
        .observer_identities
        .push("uri:spiffe://evil".into());
    let server = installation.start(None).await;
    let channel = installation
        .endpoint(&server, Some(&installation.pki.wrong_identity))
        .connect()
        .await
        .unwrap();
    let statuses = call_everything(channel).await;
    for (operation, status) in &statuses {
        match *operation {
            "public_keys" | "metrics" | "health_check" => {
                assert!(
                    status.is_ok(),
                    "{operation} is allowed to an observer: {status:?}"
                );
            }
            _ => assert_eq!(
                status.as_ref().expect_err(operation).code(),
                Code::PermissionDenied,
                "{operation}"
            ),
        }
    }
    assert_eq!(statuses.len(), 7, "every call was tried");
    server.stop().await;
}
