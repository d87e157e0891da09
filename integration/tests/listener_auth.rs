//! Authentication and authorization of every listener of the deployed stack,
//! in one table, against the real processes: the signer's and the witness's
//! gRPC listeners (mutual TLS), and a gateway serving HTTPS with its admin API
//! (OIDC bearer tokens or administrators' client certificates) and a separate
//! metrics listener that requires client certificates.
//!
//! Each attack carries a request that would change something if it got
//! through (a cosignature the signer would grant, a log to trust, a checkpoint
//! growth), and each must be refused with nothing changed: the signer's fork
//! guard record, the witness's state and its trusted logs are read from their
//! files before and after, and the signer's audit log must name the refusal.
//! The same requests with the right credentials then succeed, so the refusals
//! were about the credentials. Finally the public endpoints are scanned for
//! anything private (key material, file paths, client addresses).
//!
//! The stack is [`Stack`] with a PKI of the test's own (the dev stack throws
//! its CA key away; the attacks need one to issue wrong identities): files are
//! written where `Material::load_or_generate` finds them, so the three
//! services run with it unchanged. The exhaustive in-process matrices stay
//! where they are: signer callers in `signer-svc/tests/grpc_mtls.rs`, token
//! attacks in `gateway/tests/gateway_admin.rs`, HTTPS in
//! `gateway/tests/gateway_tls.rs`.

#![allow(clippy::unwrap_used)]

mod attack_support;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use attack_support::{
    add_checkpoint, audit_lines, await_audit_since, fork_guard_record, trusted_origins,
    upstream_addrs, witness_state,
};
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use integration::process::{Process, free_loopback_addr};
use integration::stack::Stack;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde_json::{Value, json};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use witness_core::checkpoint::Checkpoint;
use witness_core::merkle::{Hash, LeafHashes, leaf_hash, prove_consistency, tree_root};
use witness_core::note::{Note, NoteSignature, SignatureType, VerifierKey};
use witness_core::service::dev_stack::{GATEWAY_IDENTITY, WITNESS_IDENTITY};
use witness_proto::signer as signer_pb;
use witness_proto::witness as witness_pb;

const ORIGIN: &str = "listener-auth.example/log";
const AUDIENCE: &str = "rekor-witness-admin";
const ADMIN_SUBJECT: &str = "admin@example.com";
const ADMIN_IDENTITY: &str = "spiffe://rekor-witness-quickstart/admin";
const EVIL_IDENTITY: &str = "spiffe://evil";

// ---------------------------------------------------------------------------
// The test's PKI
// ---------------------------------------------------------------------------

/// A certificate and its key, PEM.
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

    fn issue(&self, sans: Vec<SanType>, usage: ExtendedKeyUsagePurpose, expired: bool) -> Cert {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "test");
        params.subject_alt_names = sans;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
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
            false,
        )
    }

    fn client(&self, identity: &str, expired: bool) -> Cert {
        self.issue(
            vec![SanType::URI(identity.try_into().unwrap())],
            ExtendedKeyUsagePurpose::ClientAuth,
            expired,
        )
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

/// Every client certificate an attack or a control presents.
struct Clients {
    ca_pem: String,
    witness: Cert,
    gateway: Cert,
    admin: Cert,
    evil: Cert,
    expired_witness: Cert,
    expired_admin: Cert,
    /// The witness's identity, from a CA nobody trusts.
    untrusted_witness: Cert,
    untrusted_admin: Cert,
}

/// Writes the dev stack's `pki/` (the names `Material` reads) from a CA of
/// the test's own, plus the HTTPS gateway's certificate; the client
/// certificates of the attacks.
fn write_pki(stack_dir: &Path) -> Clients {
    let pki = stack_dir.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let ca = Ca::new("listener-auth test CA");
    let other = Ca::new("an untrusted CA");
    std::fs::write(pki.join("ca.pem"), &ca.pem).unwrap();
    let witness = ca.client(WITNESS_IDENTITY, false);
    let gateway = ca.client(GATEWAY_IDENTITY, false);
    for (name, cert) in [
        ("signer", ca.server()),
        ("witness-server", ca.server()),
        ("gateway-https", ca.server()),
        ("witness-client", witness.clone()),
        ("gateway-client", gateway.clone()),
    ] {
        std::fs::write(pki.join(format!("{name}.pem")), &cert.cert).unwrap();
        write_private(&pki.join(format!("{name}.key")), &cert.key);
    }
    Clients {
        ca_pem: ca.pem.clone(),
        witness,
        gateway,
        admin: ca.client(ADMIN_IDENTITY, false),
        evil: ca.client(EVIL_IDENTITY, false),
        expired_witness: ca.client(WITNESS_IDENTITY, true),
        expired_admin: ca.client(ADMIN_IDENTITY, true),
        untrusted_witness: other.client(WITNESS_IDENTITY, false),
        untrusted_admin: other.client(ADMIN_IDENTITY, false),
    }
}

// ---------------------------------------------------------------------------
// A log, and an OIDC issuer
// ---------------------------------------------------------------------------

struct Log {
    signing: ed25519_dalek::SigningKey,
    verifier: VerifierKey,
    leaves: Vec<Hash>,
}

impl Log {
    fn new(origin: &str, seed: u8, size: u64) -> Log {
        let signing = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let verifier = VerifierKey::from_material(
            origin,
            SignatureType::Ed25519,
            signing.verifying_key().as_bytes(),
        )
        .unwrap();
        let leaves = (0..size)
            .map(|i| leaf_hash(format!("{origin} {i}").as_bytes()))
            .collect();
        Log {
            signing,
            verifier,
            leaves,
        }
    }

    fn root(&self, size: u64) -> Hash {
        tree_root(&mut LeafHashes(&self.leaves), size).unwrap()
    }

    fn proof(&self, old: u64, new: u64) -> Vec<Hash> {
        if old == 0 || old == new {
            return Vec::new();
        }
        prove_consistency(&mut LeafHashes(&self.leaves), old, new).unwrap()
    }

    fn signed(&self, size: u64) -> Vec<u8> {
        use ed25519_dalek::Signer as _;
        let text = Checkpoint::new(ORIGIN, size, self.root(size), Vec::new())
            .unwrap()
            .to_text();
        let signature = self.signing.sign(text.as_bytes()).to_bytes().to_vec();
        let line =
            NoteSignature::new(self.verifier.name(), self.verifier.key_id(), signature).unwrap();
        Note::new(&text, vec![line]).unwrap().to_bytes()
    }
}

fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The modulus and exponent of a DER PKCS#1 `RSAPublicKey`.
fn rsa_components(der: &[u8]) -> (Vec<u8>, Vec<u8>) {
    fn element(input: &[u8], tag: u8) -> (&[u8], &[u8]) {
        assert_eq!(input[0], tag);
        let (len, header) = match input[1] {
            short @ 0..=0x7f => (short as usize, 2),
            long => {
                let count = (long & 0x7f) as usize;
                let len = input[2..2 + count]
                    .iter()
                    .fold(0usize, |acc, &b| (acc << 8) | b as usize);
                (len, 2 + count)
            }
        };
        (&input[header..header + len], &input[header + len..])
    }
    let (sequence, _) = element(der, 0x30);
    let (n, rest) = element(sequence, 0x02);
    let (e, _) = element(rest, 0x02);
    let strip = |v: &[u8]| v.iter().skip_while(|&&b| b == 0).copied().collect();
    (strip(n), strip(e))
}

/// How a token is signed.
enum Signature<'a> {
    Rsa(&'a RsaKeyPair),
    Hmac(&'a [u8]),
    None,
}

fn jws(header: &Value, claims: &Value, signature: Signature<'_>) -> String {
    let message = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let bytes = match signature {
        Signature::Rsa(pair) => {
            let mut out = vec![0; pair.public_modulus_len()];
            pair.sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message.as_bytes(),
                &mut out,
            )
            .unwrap();
            out
        }
        Signature::Hmac(secret) => {
            let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
            aws_lc_rs::hmac::sign(&key, message.as_bytes())
                .as_ref()
                .to_vec()
        }
        Signature::None => Vec::new(),
    };
    format!("{message}.{}", b64url(&bytes))
}

/// An OIDC issuer on loopback (discovery document and JWKS) with one RSA key.
struct OidcIssuer {
    url: String,
    key: RsaKeyPair,
    /// Never published.
    impostor: RsaKeyPair,
    /// The published key as a PEM SubjectPublicKeyInfo: what an HS256
    /// key-confusion forgery uses as its secret.
    public_pem: String,
}

impl OidcIssuer {
    async fn start() -> OidcIssuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let key = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let impostor = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let (n, e) = rsa_components(key.public_key().as_ref());
        let spki = key.public_key().as_der().unwrap();
        let body = STANDARD.encode(spki.as_ref());
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let public_pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        );
        let jwks = json!({"keys": [
            {"kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256", "n": b64url(&n), "e": b64url(&e)},
        ]});
        let discovery = json!({
            "issuer": url,
            "jwks_uri": format!("{url}/jwks"),
            "id_token_signing_alg_values_supported": ["RS256"],
        });
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || async move { axum::Json(discovery) }),
            )
            .route(
                "/jwks",
                axum::routing::get(move || async move { axum::Json(jwks) }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        OidcIssuer {
            url,
            key,
            impostor,
            public_pem,
        }
    }

    fn claims(&self) -> Value {
        json!({
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": ADMIN_SUBJECT,
            "iat": now(),
            "exp": now() + 300,
        })
    }

    fn token(&self, claims: &Value) -> String {
        jws(
            &json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-1"}),
            claims,
            Signature::Rsa(&self.key),
        )
    }
}

// ---------------------------------------------------------------------------
// The stack, and a second gateway serving HTTPS, admin and mTLS metrics
// ---------------------------------------------------------------------------

struct World {
    stack: Stack,
    clients: Clients,
    issuer: OidcIssuer,
    log: Log,
    signer: SocketAddr,
    witness: SocketAddr,
    https: SocketAddr,
    metrics: SocketAddr,
    _https_gateway: Process,
}

fn gateway_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .unwrap()
        .join("rekor-witness-gateway")
}

impl World {
    /// The stack (artifacts under `target/e2e/<name>/`), the HTTPS gateway,
    /// and the log cosigned at size 10.
    async fn start(name: &str) -> World {
        let artifacts = integration::artifacts_dir(name).unwrap();
        let clients = write_pki(&artifacts.join("stack"));
        let log = Log::new(ORIGIN, 17, 32);
        let logs_toml = format!(
            "[[log]]\norigin = \"{ORIGIN}\"\nkey = \"{}\"\n",
            log.verifier.to_vkey()
        );
        let stack = Stack::start_in(&artifacts, &logs_toml).await.unwrap();
        let (witness, signer) = upstream_addrs(&stack);
        let issuer = OidcIssuer::start().await;

        // The dev stack's gateway configuration (its witness and signer
        // channels), on another address, with HTTPS, the admin API and an
        // mTLS metrics listener.
        let (https, metrics) = (free_loopback_addr().unwrap(), free_loopback_addr().unwrap());
        let pki = stack.dir().join("pki");
        let dev = std::fs::read_to_string(stack.dir().join("config/gateway.toml")).unwrap();
        let mut config: Vec<String> = dev
            .lines()
            .map(|line| {
                if line.starts_with("listen = ") {
                    format!("listen = \"{https}\"")
                } else {
                    line.to_owned()
                }
            })
            .collect();
        let p = |name: &str| format!("{:?}", pki.join(name).display().to_string());
        config.push(format!(
            r#"
[tls]
cert = {cert}
key = {key}

[metrics]
listen = "{metrics}"
cert = {cert}
key = {key}
client_ca = {ca}

[admin]
issuer = "{issuer}"
audience = "{AUDIENCE}"
allowed_subjects = ["{ADMIN_SUBJECT}"]
client_ca = {ca}
allowed_client_identities = ["uri:{ADMIN_IDENTITY}"]
"#,
            cert = p("gateway-https.pem"),
            key = p("gateway-https.key"),
            ca = p("ca.pem"),
            issuer = issuer.url,
        ));
        let config_path = stack.dir().join("config/gateway-https.toml");
        std::fs::write(&config_path, config.join("\n")).unwrap();
        let mut https_gateway = Process::start(
            "gateway-https",
            &gateway_binary(),
            &["--config".into(), config_path.display().to_string()],
            &[("RUST_LOG".into(), "info".into())],
            &artifacts,
        )
        .unwrap();
        https_gateway.wait_listening(https).await.unwrap();
        https_gateway.wait_listening(metrics).await.unwrap();

        let world = World {
            stack,
            clients,
            issuer,
            log,
            signer,
            witness,
            https,
            metrics,
            _https_gateway: https_gateway,
        };
        let answer = add_checkpoint(
            world.stack.http(),
            &world.stack.gateway_url(),
            0,
            &[],
            &world.log.signed(10),
        )
        .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        world
    }

    /// An HTTPS client trusting the test CA, presenting `cert`.
    fn https_client(&self, cert: Option<&Cert>) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .tls_certs_only([
                reqwest::Certificate::from_pem(self.clients.ca_pem.as_bytes()).unwrap(),
            ])
            .timeout(Duration::from_secs(10));
        if let Some(cert) = cert {
            builder = builder.identity(
                reqwest::Identity::from_pem(format!("{}{}", cert.cert, cert.key).as_bytes())
                    .unwrap(),
            );
        }
        builder.build().unwrap()
    }

    /// A gRPC channel to `addr` over TLS trusting `ca_pem`, presenting `cert`
    /// (or plaintext); the connection error if it fails.
    async fn channel(
        &self,
        addr: SocketAddr,
        cert: Option<&Cert>,
        plaintext: bool,
    ) -> Result<Channel, String> {
        let endpoint = if plaintext {
            Endpoint::from_shared(format!("http://{addr}")).unwrap()
        } else {
            let mut tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&self.clients.ca_pem))
                .domain_name("localhost");
            if let Some(cert) = cert {
                tls = tls.identity(Identity::from_pem(&cert.cert, &cert.key));
            }
            Endpoint::from_shared(format!("https://{addr}"))
                .unwrap()
                .tls_config(tls)
                .unwrap()
        };
        endpoint
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .map_err(|e| format!("connect: {e:?}"))
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            record: fork_guard_record(&self.stack),
            state: witness_state(&self.stack),
            trusted: trusted_origins(&self.stack),
        }
    }
}

/// What no refused request may change.
#[derive(Debug, PartialEq)]
struct Snapshot {
    record: BTreeMap<String, (i64, Vec<u8>)>,
    state: BTreeMap<String, (i64, Vec<u8>)>,
    trusted: Vec<String>,
}

// ---------------------------------------------------------------------------
// The attacks
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Listener {
    SignerGrpc,
    WitnessGrpc,
    GatewayApi,
    GatewayMetrics,
    GatewayAdmin,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Attack {
    NoClientCertificate,
    UntrustedCa,
    ExpiredCertificate,
    WrongIdentity,
    /// The gateway's identity: an observer of the signer (metrics, keys).
    ObserverIdentity,
    Plaintext,
    Tls12Only,
    MissingToken,
    BadSignature,
    WrongAudience,
    ExpiredToken,
    AlgNone,
    HmacKeyConfusion,
}

/// How the attack was refused (the details are printed in the test's report).
#[derive(Debug)]
#[allow(dead_code)]
enum Refusal {
    /// A gRPC status from the service.
    Grpc(tonic::Code, String),
    /// The connection, the handshake or the call failed below the service.
    Transport(String),
    /// An HTTP status and JSON `error`.
    Http(u16, String),
}

/// The requests an attacker sends: a cosignature the signer would grant, a
/// growth the witness would cosign, a log to trust.
fn cosign_request(log: &Log) -> signer_pb::CosignCheckpointRequest {
    signer_pb::CosignCheckpointRequest {
        origin: ORIGIN.into(),
        size: 12,
        root_hash: log.root(12).0.to_vec(),
        extension_lines: Vec::new(),
        old_size: 10,
        consistency_proof: log.proof(10, 12).iter().map(|h| h.0.to_vec()).collect(),
    }
}

/// A log an attacker asks to be trusted: its origin and vkey.
fn attacker_log(attack: Attack, listener: Listener) -> (String, String) {
    let origin = format!("{attack:?}-{listener:?}.attack.example/log").to_lowercase();
    let vkey = vkey_for(&origin);
    (origin, vkey)
}

fn vkey_for(origin: &str) -> String {
    let key = ed25519_dalek::SigningKey::from_bytes(&[99; 32]);
    VerifierKey::from_material(
        origin,
        SignatureType::Ed25519,
        key.verifying_key().as_bytes(),
    )
    .unwrap()
    .to_vkey()
}

fn grpc_refusal(status: tonic::Status) -> Refusal {
    match status.code() {
        code @ (tonic::Code::Unauthenticated | tonic::Code::PermissionDenied) => {
            Refusal::Grpc(code, status.message().to_owned())
        }
        // A refused handshake surfaces from the transport.
        tonic::Code::Unavailable
        | tonic::Code::Unknown
        | tonic::Code::Internal
        | tonic::Code::Cancelled => Refusal::Transport(format!("{status:?}")),
        _ => panic!("the service processed the request: {status:?}"),
    }
}

/// A TLS 1.2-only handshake with `cert`, then one read: the handshake must
/// fail (a TLS 1.3-only server answers with a protocol_version alert).
async fn tls12_handshake(ca_pem: &str, addr: SocketAddr, cert: &Cert) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(cert.cert.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(cert.key.as_bytes()).unwrap(),
        )
        .unwrap();
    tokio::task::spawn_blocking(move || {
        let mut connection = rustls::ClientConnection::new(
            Arc::new(config),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let mut tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        while connection.is_handshaking() {
            connection
                .complete_io(&mut tcp)
                .map_err(|e| format!("handshake: {e}"))?;
        }
        Ok(())
    })
    .await
    .unwrap()
}

impl World {
    fn attack_cert(&self, listener: Listener, attack: Attack) -> Option<&Cert> {
        let admin_side = matches!(
            listener,
            Listener::GatewayApi | Listener::GatewayMetrics | Listener::GatewayAdmin
        );
        let c = &self.clients;
        match attack {
            Attack::UntrustedCa if admin_side => Some(&c.untrusted_admin),
            Attack::UntrustedCa => Some(&c.untrusted_witness),
            Attack::ExpiredCertificate if admin_side => Some(&c.expired_admin),
            Attack::ExpiredCertificate => Some(&c.expired_witness),
            Attack::WrongIdentity => Some(&c.evil),
            Attack::ObserverIdentity => Some(&c.gateway),
            _ => None,
        }
    }

    async fn attempt(&self, listener: Listener, attack: Attack) -> Refusal {
        let cert = self.attack_cert(listener, attack);
        let plaintext = attack == Attack::Plaintext;
        match listener {
            Listener::SignerGrpc | Listener::WitnessGrpc if attack == Attack::Tls12Only => {
                let addr = if listener == Listener::SignerGrpc {
                    self.signer
                } else {
                    self.witness
                };
                let client = if listener == Listener::SignerGrpc {
                    &self.clients.witness
                } else {
                    &self.clients.gateway
                };
                match tls12_handshake(&self.clients.ca_pem, addr, client).await {
                    Ok(()) => panic!("{listener:?} completed a TLS 1.2 handshake"),
                    Err(error) => Refusal::Transport(error),
                }
            }
            Listener::SignerGrpc => {
                let channel = match self.channel(self.signer, cert, plaintext).await {
                    Ok(channel) => channel,
                    Err(error) => return Refusal::Transport(error),
                };
                let mut client = signer_pb::signer_client::SignerClient::new(channel);
                match client.cosign_checkpoint(cosign_request(&self.log)).await {
                    Ok(response) => panic!("{attack:?} got a cosignature: {response:?}"),
                    Err(status) => grpc_refusal(status),
                }
            }
            Listener::WitnessGrpc => {
                let channel = match self.channel(self.witness, cert, plaintext).await {
                    Ok(channel) => channel,
                    Err(error) => return Refusal::Transport(error),
                };
                let mut client = witness_pb::witness_client::WitnessClient::new(channel);
                let (origin, verifier_key) = attacker_log(attack, listener);
                if let Ok(response) = client
                    .add_log(witness_pb::AddLogRequest {
                        origin,
                        verifier_key,
                    })
                    .await
                {
                    panic!("{attack:?} added a log: {response:?}");
                }
                let request = witness_pb::AddCheckpointRequest {
                    old_size: 10,
                    consistency_proof: self
                        .log
                        .proof(10, 12)
                        .iter()
                        .map(|h| h.0.to_vec())
                        .collect(),
                    checkpoint: self.log.signed(12),
                };
                match client.add_checkpoint(request).await {
                    Ok(response) => panic!("{attack:?} got a cosignature: {response:?}"),
                    Err(status) => grpc_refusal(status),
                }
            }
            Listener::GatewayApi => {
                let url = if plaintext {
                    format!("http://{}", self.https)
                } else {
                    format!("https://127.0.0.1:{}", self.https.port())
                };
                let client = self.https_client(cert);
                let body = witness_core::witness_api::serialize_add_checkpoint_body(
                    &witness_core::witness_api::AddCheckpointRequest {
                        old_size: 10,
                        consistency_proof: self.log.proof(10, 12),
                        checkpoint: self.log.signed(12),
                    },
                );
                match client
                    .post(format!("{url}/add-checkpoint"))
                    .body(body)
                    .send()
                    .await
                {
                    Err(error) => Refusal::Transport(format!("{error:?}")),
                    // Plaintext to a TLS listener: no HTTP server ever answers.
                    Ok(response) => panic!("{attack:?}: the API listener answered {response:?}"),
                }
            }
            Listener::GatewayMetrics => {
                let url = if plaintext {
                    format!("http://{}/metrics", self.metrics)
                } else {
                    format!("https://127.0.0.1:{}/metrics", self.metrics.port())
                };
                match self.https_client(cert).get(url).send().await {
                    Err(error) => Refusal::Transport(format!("{error:?}")),
                    Ok(response) => {
                        panic!("{attack:?}: the metrics listener answered {response:?}")
                    }
                }
            }
            Listener::GatewayAdmin => {
                let (origin, verifier_key) = attacker_log(attack, listener);
                let token = self.token_for(attack);
                let mut request = self
                    .https_client(cert)
                    .post(format!(
                        "https://127.0.0.1:{}/admin/v1/logs",
                        self.https.port()
                    ))
                    .json(&json!({"origin": origin, "verifier_key": verifier_key}));
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                match request.send().await {
                    Err(error) => Refusal::Transport(format!("{error:?}")),
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let body: Value = response.json().await.unwrap_or(Value::Null);
                        Refusal::Http(status, body["error"].as_str().unwrap_or("").to_owned())
                    }
                }
            }
        }
    }

    /// The bearer token of a token attack.
    fn token_for(&self, attack: Attack) -> Option<String> {
        let issuer = &self.issuer;
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-1"});
        let mut claims = issuer.claims();
        Some(match attack {
            Attack::BadSignature => jws(&header, &claims, Signature::Rsa(&issuer.impostor)),
            Attack::WrongAudience => {
                claims["aud"] = "another-service".into();
                issuer.token(&claims)
            }
            Attack::ExpiredToken => {
                claims["iat"] = (now() - 600).into();
                claims["exp"] = (now() - 120).into();
                issuer.token(&claims)
            }
            Attack::AlgNone => jws(
                &json!({"alg": "none", "typ": "JWT", "kid": "rsa-1"}),
                &claims,
                Signature::None,
            ),
            Attack::HmacKeyConfusion => jws(
                &json!({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}),
                &claims,
                Signature::Hmac(issuer.public_pem.as_bytes()),
            ),
            _ => return None,
        })
    }
}

/// What a refusal must look like, and what must be on record.
#[derive(Debug)]
enum Expected {
    /// This gRPC status, with a signer audit line of this result.
    Grpc(tonic::Code, &'static str),
    /// A failed connection or handshake; `Some` if the signer audits it.
    Transport(Option<&'static str>),
    /// This HTTP status and `error` code.
    Http(u16, &'static str),
}

fn table() -> Vec<(Listener, Attack, Expected)> {
    use Attack::*;
    use Expected::*;
    use Listener::*;
    use tonic::Code;
    vec![
        (
            SignerGrpc,
            NoClientCertificate,
            Grpc(Code::Unauthenticated, "unauthenticated"),
        ),
        (
            SignerGrpc,
            UntrustedCa,
            Grpc(Code::Unauthenticated, "unauthenticated"),
        ),
        (
            SignerGrpc,
            ExpiredCertificate,
            Grpc(Code::Unauthenticated, "unauthenticated"),
        ),
        (
            SignerGrpc,
            WrongIdentity,
            Grpc(Code::PermissionDenied, "permission_denied"),
        ),
        (
            SignerGrpc,
            ObserverIdentity,
            Grpc(Code::PermissionDenied, "permission_denied"),
        ),
        (SignerGrpc, Plaintext, Transport(Some("refused"))),
        (SignerGrpc, Tls12Only, Transport(Some("refused"))),
        (WitnessGrpc, NoClientCertificate, Transport(None)),
        (WitnessGrpc, UntrustedCa, Transport(None)),
        (WitnessGrpc, ExpiredCertificate, Transport(None)),
        (WitnessGrpc, Plaintext, Transport(None)),
        (GatewayApi, UntrustedCa, Transport(None)),
        (GatewayApi, ExpiredCertificate, Transport(None)),
        (GatewayApi, Plaintext, Transport(None)),
        (GatewayMetrics, NoClientCertificate, Transport(None)),
        (GatewayMetrics, UntrustedCa, Transport(None)),
        (GatewayMetrics, ExpiredCertificate, Transport(None)),
        (GatewayMetrics, Plaintext, Transport(None)),
        (GatewayAdmin, MissingToken, Http(401, "missing_token")),
        (GatewayAdmin, BadSignature, Http(401, "bad_signature")),
        (GatewayAdmin, WrongAudience, Http(401, "wrong_audience")),
        (GatewayAdmin, ExpiredToken, Http(401, "token_expired")),
        (GatewayAdmin, AlgNone, Http(401, "algorithm_not_accepted")),
        (
            GatewayAdmin,
            HmacKeyConfusion,
            Http(401, "algorithm_not_accepted"),
        ),
        (
            GatewayAdmin,
            WrongIdentity,
            Http(403, "identity_not_allowed"),
        ),
        (
            GatewayAdmin,
            ObserverIdentity,
            Http(403, "identity_not_allowed"),
        ),
        (GatewayAdmin, UntrustedCa, Transport(None)),
        (GatewayAdmin, ExpiredCertificate, Transport(None)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_refuses_every_bad_credential_and_nothing_changes() {
    let world = World::start("listener_auth").await;
    let mut report = Vec::new();
    for (listener, attack, expected) in table() {
        let before = world.snapshot();
        let audited = audit_lines(&world.stack).len();
        let refusal = world.attempt(listener, attack).await;
        let case = format!("{listener:?} / {attack:?}");
        match (&expected, &refusal) {
            (Expected::Grpc(code, _), Refusal::Grpc(got, _)) => {
                assert_eq!(got, code, "{case}: {refusal:?}")
            }
            (Expected::Transport(_), Refusal::Transport(_)) => {}
            (Expected::Http(status, error), Refusal::Http(got, got_error)) => {
                assert_eq!((got, got_error.as_str()), (status, *error), "{case}");
            }
            _ => panic!("{case}: expected {expected:?}, got {refusal:?}"),
        }
        // Let a refused handshake's audit line land before comparing.
        let audit_result = match expected {
            Expected::Grpc(_, result) | Expected::Transport(Some(result)) => Some(result),
            _ => None,
        };
        if let Some(result) = audit_result {
            let lines = await_audit_since(&world.stack, audited).await;
            assert!(
                !lines.is_empty() && lines.iter().all(|l| l["result"] == result),
                "{case}: signer audit {lines:?}"
            );
        } else if listener != Listener::SignerGrpc {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(world.snapshot(), before, "{case}: state changed");
        report.push(format!("{case}: {refusal:?}"));
    }
    println!("{}", report.join("\n"));

    // The same requests with the right credentials succeed: the refusals were
    // about the credentials.
    let admin = world.https_client(Some(&world.clients.admin));
    let api = format!("https://127.0.0.1:{}", world.https.port());
    let answer = add_checkpoint(
        &admin,
        &api,
        10,
        &world.log.proof(10, 12),
        &world.log.signed(12),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(world.snapshot().record[ORIGIN].0, 12);
    let metrics = admin
        .get(format!(
            "https://127.0.0.1:{}/metrics",
            world.metrics.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    for (client, token) in [
        (
            world.https_client(None),
            Some(world.issuer.token(&world.issuer.claims())),
        ),
        (admin.clone(), None),
    ] {
        let origin = format!("admin-with-token-{}.example/log", token.is_some());
        let mut request = client
            .post(format!("{api}/admin/v1/logs"))
            .json(&json!({"origin": origin, "verifier_key": vkey_for(&origin)}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
        assert!(trusted_origins(&world.stack).contains(&origin));
    }
    let mut grpc = witness_pb::witness_client::WitnessClient::new(
        world
            .channel(world.witness, Some(&world.clients.gateway), false)
            .await
            .unwrap(),
    );
    grpc.list_logs(witness_pb::ListLogsRequest {})
        .await
        .unwrap();
    let mut signer = signer_pb::signer_client::SignerClient::new(
        world
            .channel(world.signer, Some(&world.clients.gateway), false)
            .await
            .unwrap(),
    );
    signer.metrics(signer_pb::MetricsRequest {}).await.unwrap();
    world.stack.stop().await;
}

/// A workload holding another certificate from the witness's CA cannot call
/// the witness (`AddLog`, `Recosign`, ...) around the gateway's admin
/// authentication: the listener's `tls.allowed_identities` names the gateway
/// only. (Found by this test: the listener had no allowlist before.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witness_grpc_refuses_certificates_of_identities_other_than_the_gateway() {
    let world = World::start("listener_auth_witness_identity").await;
    let before = world.snapshot();
    let refusal = world
        .attempt(Listener::WitnessGrpc, Attack::WrongIdentity)
        .await;
    assert!(
        matches!(refusal, Refusal::Grpc(tonic::Code::PermissionDenied, _)),
        "{refusal:?}"
    );
    assert_eq!(world.snapshot(), before);
    world.stack.stop().await;
}

// ---------------------------------------------------------------------------
// Public endpoints
// ---------------------------------------------------------------------------

/// The base64 lines of every private key of the stack.
fn private_key_lines(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for sub in ["pki", "keys"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            if text.contains("PRIVATE KEY") {
                lines.extend(
                    text.lines()
                        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                        .map(|l| l[..16].to_owned()),
                );
            }
        }
    }
    assert!(lines.len() > 10, "the stack's private keys were found");
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_endpoints_expose_no_key_material_paths_or_client_addresses() {
    let world = World::start("listener_auth_public").await;
    let secrets = private_key_lines(world.stack.dir());
    let dir = world.stack.dir().display().to_string();
    let https = world.https_client(None);
    let admin = world.https_client(Some(&world.clients.admin));
    let mut pages = Vec::new();
    for path in ["/", "/logs", "/healthz", "/readyz", "/metrics"] {
        pages.push((
            format!("plain {path}"),
            world.stack.get_text(path).await.unwrap(),
        ));
        let response = https
            .get(format!("https://127.0.0.1:{}{path}", world.https.port()))
            .send()
            .await
            .unwrap();
        pages.push((
            format!("https {path}"),
            (response.status().as_u16(), response.text().await.unwrap()),
        ));
    }
    let metrics = admin
        .get(format!(
            "https://127.0.0.1:{}/metrics",
            world.metrics.port()
        ))
        .send()
        .await
        .unwrap();
    pages.push((
        "metrics listener".into(),
        (metrics.status().as_u16(), metrics.text().await.unwrap()),
    ));
    let monitoring = world
        .stack
        .cosigned_checkpoint(ORIGIN)
        .await
        .unwrap()
        .unwrap();
    pages.push(("monitoring".into(), (200, monitoring)));
    for (page, (status, text)) in &pages {
        assert!(*status < 500, "{page}: {status}");
        assert!(!text.is_empty() || *status == 404, "{page} is empty");
        for needle in [
            "PRIVATE KEY",
            "BEGIN",
            dir.as_str(),
            "/pki/",
            ".key",
            ".pem",
            "127.0.0.1",
            "::1",
        ] {
            assert!(!text.contains(needle), "{page} shows {needle:?}:\n{text}");
        }
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{page} shows private key material"
            );
        }
    }
    assert!(
        pages
            .iter()
            .any(|(p, (s, t))| p == "plain /logs" && *s == 200 && t.contains(ORIGIN)),
        "/logs lists the log"
    );
    world.stack.stop().await;
}
