//! The gateway's transport, against the real stack (signer, witness, gateway):
//! HTTPS with HTTP/1.1 and HTTP/2 negotiated by ALPN, a certificate replaced on
//! disk and served to new connections without a restart (and a broken
//! replacement ignored), handshake failures and stalled handshakes that do not
//! stop the accept loop, a graceful shutdown that finishes in-flight requests,
//! and the `rekor-witness-gateway` binary itself.

#![allow(clippy::unwrap_used)]

mod gateway_support;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gateway::transport::ServerTls;
use gateway_support::witness_support::TestLog;
use gateway_support::{Stack, add, origin_hash, text};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const ORIGIN: &str = "tls.example/log";

/// A test CA issuing `localhost` server certificates.
struct TestCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A server certificate (PEM and DER) and its key (PEM).
struct ServerCert {
    pem: String,
    der: Vec<u8>,
    key_pem: String,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn server(&self, common_name: &str) -> ServerCert {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        ServerCert {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A client trusting this CA only, offering `h2` and `http/1.1` unless
    /// `http1_only`.
    fn client(&self, http1_only: bool) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.pem.as_bytes()).unwrap()])
            .tls_info(true)
            .timeout(Duration::from_secs(10));
        if http1_only {
            builder = builder.http1_only();
        }
        builder.build().unwrap()
    }
}

/// Writes the pair the way a careless operator might: key first, then the
/// certificate, in place.
fn install(dir: &Path, cert: &ServerCert) -> ServerTls {
    let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&key_path, &cert.key_pem).unwrap();
    std::fs::write(&cert_path, &cert.pem).unwrap();
    let mut tls = ServerTls::new(cert_path, key_path);
    tls.reload_interval = Duration::from_millis(100);
    tls
}

/// The DER of the certificate a fresh connection is served, and the status.
async fn served_certificate(ca: &TestCa, url: &str) -> (Vec<u8>, u16) {
    let response = ca.client(false).get(url).send().await.unwrap();
    let info = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .expect("TLS info");
    (
        info.peer_certificate().unwrap().to_vec(),
        response.status().as_u16(),
    )
}

async fn https_stack(log: &TestLog, tls: ServerTls) -> Stack {
    Stack::start(&[log], "", move |config| config.tls = Some(tls)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_negotiates_http2_and_http1_and_survives_bad_handshakes() {
    let mut log = TestLog::new(ORIGIN, 21);
    log.grow(10);
    let ca = TestCa::new("gateway test CA");
    let dir = tempfile::tempdir().unwrap();
    let stack = https_stack(&log, install(dir.path(), &ca.server("gateway"))).await;
    let base = format!("https://localhost:{}", stack.gateway.port());

    // HTTP/2 via ALPN: a real submission, cosigned by the witness.
    let response = ca
        .client(false)
        .post(format!("{base}/add-checkpoint"))
        .body(add(0, Vec::new(), log.signed(10)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let (status, _, body) = text(response).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("\u{2014} "), "{body}");

    // HTTP/1.1 when the client offers only that, several requests in a row.
    let http1 = ca.client(true);
    let monitoring = format!("{base}/{}/checkpoint", origin_hash(ORIGIN));
    for _ in 0..2 {
        let response = http1.get(&monitoring).send().await.unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_11);
        let (status, _, body) = text(response).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with(&format!("{ORIGIN}\n10\n")), "{body}");
    }

    // Plain HTTP to the TLS port, a client that stalls mid-handshake, and an
    // untrusting client: each fails alone, the listener keeps serving.
    let mut plain = tokio::net::TcpStream::connect(stack.gateway).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "plaintext was served");
    let _stalled = tokio::net::TcpStream::connect(stack.gateway).await.unwrap();
    let stranger = TestCa::new("another CA").client(false);
    assert!(stranger.get(&monitoring).send().await.is_err());
    let started = Instant::now();
    let (_, status) = served_certificate(&ca, &monitoring).await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "blocked by a stalled handshake"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_certificate_is_served_without_restart_and_a_broken_one_is_ignored() {
    let log = TestLog::new(ORIGIN, 22);
    let ca = TestCa::new("gateway test CA");
    let (first, second) = (ca.server("first"), ca.server("second"));
    let dir = tempfile::tempdir().unwrap();
    let tls = install(dir.path(), &first);
    let (cert_path, key_path) = (tls.cert.clone(), tls.key.clone());
    let stack = https_stack(&log, tls).await;
    let url = format!(
        "https://localhost:{}/{}/checkpoint",
        stack.gateway.port(),
        origin_hash(ORIGIN)
    );
    assert_eq!(served_certificate(&ca, &url).await.0, first.der);

    // Broken replacements: garbage, then a certificate with the wrong key.
    // Neither may replace the served certificate nor stop the serving.
    std::fs::write(&cert_path, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(served_certificate(&ca, &url).await.0, first.der);
    std::fs::write(&cert_path, &second.pem).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        served_certificate(&ca, &url).await.0,
        first.der,
        "a certificate whose key is not on disk was served"
    );

    // The key arrives: the pair is valid, and new connections get it.
    std::fs::write(&key_path, &second.key_pem).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (served, status) = served_certificate(&ca, &url).await;
        assert_eq!(status, 404, "served while reloading");
        if served == second.der {
            break;
        }
        assert_eq!(served, first.der);
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A later broken write keeps the second certificate.
    std::fs::write(&key_path, "junk").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(served_certificate(&ca, &url).await.0, second.der);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_request_in_flight() {
    let mut log = TestLog::new(ORIGIN, 23);
    log.grow(10);
    let mut stack = Stack::start(&[&log], "", |_| {}).await;
    let body = add(0, Vec::new(), log.signed(10));
    let (head, tail) = body.split_at(body.len() / 2);

    // Half a request, then the shutdown, then the other half.
    let mut connection = tokio::net::TcpStream::connect(stack.gateway).await.unwrap();
    connection
        .write_all(
            format!(
                "POST /add-checkpoint HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    connection.write_all(head).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stop_gateway = stack.stops.pop().unwrap();
    stop_gateway.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(stack.gateway).await.is_err(),
        "still accepting after shutdown"
    );
    connection.write_all(tail).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), connection.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(stack.log(ORIGIN).await.cosigned);
}

/// Kills the gateway process if the test fails before it is stopped.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The binary, as an operator runs it: HTTPS on the configured address, JSON
/// logs, exit status 0 after SIGTERM; and a configuration with an unknown key
/// refused at startup.
#[test]
fn binary_serves_https_and_exits_zero_on_sigterm() {
    let binary = env!("CARGO_BIN_EXE_rekor-witness-gateway");
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("gateway test CA");
    let tls = install(dir.path(), &ca.server("gateway"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = |extra: &str| -> PathBuf {
        let path = dir.path().join("gateway.toml");
        std::fs::write(
            &path,
            format!(
                "listen = \"127.0.0.1:{port}\"\n{extra}\n[tls]\ncert = {:?}\nkey = {:?}\n\n[witness]\nendpoint = \"http://127.0.0.1:1\"\n",
                tls.cert.display().to_string(),
                tls.key.display().to_string(),
            ),
        )
        .unwrap();
        path
    };

    let refused = std::process::Command::new(binary)
        .arg("--config")
        .arg(config("listne = \"typo\""))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("unknown field"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let child = std::process::Command::new(binary)
        .arg("--config")
        .arg(config(""))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut running = KillOnDrop(Some(child));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _context = runtime.enter();
    let url = format!(
        "https://localhost:{port}/{}/checkpoint",
        origin_hash(ORIGIN)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        match runtime.block_on(ca.client(false).get(&url).send()) {
            // The witness is down: the gateway is up and says so.
            Ok(response) => break response.status().as_u16(),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("the gateway never served: {e}"),
        }
    };
    assert_eq!(status, 503);

    let mut child = running.0.take().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(logs.contains("shutdown requested"), "{logs}");
    for line in logs.lines() {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok(), "not a JSON log line: {line}");
    }
}
