//! A throw-away PKI and signer installation for tests and benchmarks that talk
//! to the real server over mutual TLS: a CA, a server certificate for
//! `localhost`/127.0.0.1, client certificates (the allowed identity, a wrong
//! identity, one from an untrusted CA, an expired one), fresh file keys, a
//! configuration file, and a server started on a bound listener with a oneshot
//! shutdown.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use signer_svc::config::Config;
use signer_svc::keys::Algorithm;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use witness_proto::signer::signer_client::SignerClient;

/// The identity the signer allows.
pub const GOOD_IDENTITY: &str = "spiffe://witness/core";
/// A well-formed identity from the trusted CA that is not on the allowlist.
pub const EVIL_IDENTITY: &str = "spiffe://evil";
/// The cosigner name written in the configuration.
pub const COSIGNER_NAME: &str = "witness.test/w1";

/// A client certificate and its private key, both PEM.
#[derive(Clone)]
pub struct ClientCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Every file and credential of one test installation.
pub struct Pki {
    pub ca_pem: String,
    pub ca_path: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// SAN uri:spiffe://witness/core, signed by the CA.
    pub good: ClientCert,
    /// SAN uri:spiffe://evil, signed by the CA.
    pub wrong_identity: ClientCert,
    /// SAN uri:spiffe://witness/core, signed by another CA.
    pub untrusted: ClientCert,
    /// SAN uri:spiffe://witness/core, signed by the CA, expired in 2021.
    pub expired: ClientCert,
}

/// Writes `contents` to a new file readable by the owner only.
pub fn write_private(path: &Path, contents: &str) {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("create private file");
    file.write_all(contents.as_bytes())
        .expect("write private file");
}

fn new_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().expect("CA key");
    let cert = params.self_signed(&key).expect("self-sign CA");
    (cert.pem(), Issuer::new(params, key))
}

fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
    expired: bool,
) -> ClientCert {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "signer-svc test");
    params.subject_alt_names = sans;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, issuer).expect("sign leaf");
    ClientCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn uri(value: &str) -> SanType {
    SanType::URI(value.try_into().expect("IA5 URI"))
}

impl Pki {
    /// Generates the PKI and writes the server's files (key mode 0600) to `dir`.
    pub fn generate(dir: &Path) -> Pki {
        let (ca_pem, ca) = new_ca("signer-svc test CA");
        let (_, other_ca) = new_ca("some other CA");
        let server = leaf(
            &ca,
            vec![
                SanType::DnsName("localhost".try_into().expect("IA5")),
                SanType::IpAddress([127, 0, 0, 1].into()),
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
            false,
        );
        let client = ExtendedKeyUsagePurpose::ClientAuth;
        let pki = Pki {
            ca_path: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            good: leaf(&ca, vec![uri(GOOD_IDENTITY)], client.clone(), false),
            wrong_identity: leaf(&ca, vec![uri(EVIL_IDENTITY)], client.clone(), false),
            untrusted: leaf(&other_ca, vec![uri(GOOD_IDENTITY)], client.clone(), false),
            expired: leaf(&ca, vec![uri(GOOD_IDENTITY)], client, true),
            ca_pem,
        };
        std::fs::write(&pki.ca_path, &pki.ca_pem).expect("write CA");
        std::fs::write(&pki.server_cert, &server.cert_pem).expect("write server cert");
        write_private(&pki.server_key, &server.key_pem);
        pki
    }

    /// tonic's TLS settings for a client presenting `cert` (or none).
    pub fn client_tls(&self, cert: Option<&ClientCert>) -> ClientTlsConfig {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name("localhost");
        match cert {
            Some(cert) => tls.identity(Identity::from_pem(&cert.cert_pem, &cert.key_pem)),
            None => tls,
        }
    }

    /// A raw rustls client configuration trusting the CA and presenting `cert`,
    /// limited to the given protocol versions.
    pub fn rustls_client(
        &self,
        cert: &ClientCert,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> rustls::ClientConfig {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).expect("CA"))
            .expect("add CA");
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).expect("cert")],
            PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key"),
        )
        .expect("client auth");
        config.alpn_protocols = vec![b"h2".to_vec()];
        config
    }
}

/// Which optional keys an installation gets.
#[derive(Clone, Copy)]
pub struct Keys {
    pub ml_dsa_44: bool,
    pub manifest: bool,
}

/// A signer installation in a temporary directory.
pub struct Installation {
    pub dir: tempfile::TempDir,
    pub pki: Pki,
    pub config: Config,
    pub state_path: PathBuf,
    pub audit_path: PathBuf,
}

impl Installation {
    /// Generates the PKI and fresh file keys, and writes the configuration.
    pub fn new(keys: Keys) -> Installation {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = Pki::generate(dir.path());
        let key = |name: &str, algorithm| {
            let path = dir.path().join(name);
            write_private(
                &path,
                &signer_svc::keys::file::generate_pkcs8_pem(algorithm).expect("keygen"),
            );
            path
        };
        let state_path = dir.path().join("state.sqlite");
        let audit_path = dir.path().join("audit.jsonl");
        let mut text = format!(
            "listen = \"127.0.0.1:0\"\nstate_path = {:?}\naudit_log = {:?}\n\
             [tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\nallowed_identities = [\"uri:{GOOD_IDENTITY}\"]\n\
             [cosigner]\nname = \"{COSIGNER_NAME}\"\ned25519 = {{ backend = \"file\", path = {:?} }}\n",
            state_path.display().to_string(),
            audit_path.display().to_string(),
            pki.server_cert.display().to_string(),
            pki.server_key.display().to_string(),
            pki.ca_path.display().to_string(),
            key("ed25519.pem", Algorithm::Ed25519).display().to_string(),
        );
        if keys.ml_dsa_44 {
            text += &format!(
                "ml_dsa_44 = {{ backend = \"file\", path = {:?} }}\n",
                key("ml-dsa-44.pem", Algorithm::MlDsa44)
                    .display()
                    .to_string()
            );
        }
        if keys.manifest {
            text += &format!(
                "[manifest]\nkey = {{ backend = \"file\", path = {:?} }}\nalgorithm = \"ecdsa-p256\"\n",
                key("manifest.pem", Algorithm::EcdsaP256)
                    .display()
                    .to_string()
            );
        }
        let config_path = dir.path().join("signer.toml");
        std::fs::write(&config_path, text).expect("write config");
        let config = Config::load(&config_path).expect("config parses");
        Installation {
            dir,
            pki,
            config,
            state_path,
            audit_path,
        }
    }

    /// Starts the server on `addr` (an ephemeral port on 127.0.0.1 if `None`).
    pub async fn start(&self, addr: Option<SocketAddr>) -> Server {
        let listener = match addr {
            None => TcpListener::bind("127.0.0.1:0").await.expect("bind"),
            // A restart on the address a stopped server used: it must have let
            // go of it (allowing its accept task a moment to notice the stop).
            Some(addr) => {
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
                loop {
                    match TcpListener::bind(addr).await {
                        Ok(listener) => break listener,
                        Err(_) if tokio::time::Instant::now() < deadline => {
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        }
                        Err(error) => {
                            panic!("{addr} is still taken after the server stopped: {error}")
                        }
                    }
                }
            }
        };
        let addr = listener.local_addr().expect("local addr");
        let (shutdown, signal) = oneshot::channel::<()>();
        let config = self.config.clone();
        let task = tokio::spawn(async move {
            signer_svc::run(listener, &config, async {
                let _ = signal.await;
            })
            .await
        });
        Server {
            addr,
            shutdown: Some(shutdown),
            task,
        }
    }

    /// A connected client presenting `cert` (or none).
    pub async fn client(
        &self,
        server: &Server,
        cert: Option<&ClientCert>,
    ) -> Result<SignerClient<Channel>, tonic::transport::Error> {
        let channel = self.endpoint(server, cert).connect().await?;
        Ok(SignerClient::new(channel))
    }

    /// The client with the allowed identity.
    pub async fn good_client(&self, server: &Server) -> SignerClient<Channel> {
        self.client(server, Some(&self.pki.good))
            .await
            .expect("good client connects")
    }

    /// An endpoint over mutual TLS to the server.
    pub fn endpoint(&self, server: &Server, cert: Option<&ClientCert>) -> Endpoint {
        Endpoint::from_shared(format!("https://{}", server.addr))
            .expect("endpoint")
            .tls_config(self.pki.client_tls(cert))
            .expect("tls config")
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(60))
    }
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<signer_svc::error::Result<()>>,
}

impl Server {
    /// Signals shutdown and waits for `run` to return.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        tokio::time::timeout(std::time::Duration::from_secs(30), &mut self.task)
            .await
            .expect("server stops within 30 s")
            .expect("server task")
            .expect("server ran without error");
    }
}
