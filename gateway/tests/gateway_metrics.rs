//! `/metrics` over the real stack: the gateway's own metrics merged with the
//! real witness's and the real signer's (fetched over mutual TLS with the
//! gateway's own client identity, which the signer knows as an observer: its
//! metrics and public keys, never a signature), checked with `promtool`; the
//! separate metrics listener scraped by a real Prometheus over mutual TLS (and
//! refused to a Prometheus without a client certificate); a stopped signer
//! leaving the scrape up with `rekor_witness_scrape_up{service="signer"} 0`.
//!
//! Needs the Debian package `prometheus` (`prometheus` and `promtool`), which
//! `scripts/test` installs; paths from `WITNESS_TEST_PROMETHEUS` and
//! `WITNESS_TEST_PROMTOOL`. The tests fail, not skip, without them.

#![allow(clippy::unwrap_used)]

mod gateway_support;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gateway::metrics::MetricsConfig;
use gateway::{GatewayConfig, Upstream};
use gateway_support::witness_support::{SignerHarness, TestLog, pki};
use gateway_support::{Stack, add, origin_hash, start_gateway, text};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use witness_proto::signer as signer_pb;
use witness_proto::signer::signer_client::SignerClient;

const PUSHED: &str = "push.example/metrics";
/// The gateway's identity towards the signer (not the witness's).
const GATEWAY_IDENTITY: &str = "spiffe://witness/gateway";

fn tool(variable: &str, default: &str) -> PathBuf {
    let path = PathBuf::from(std::env::var(variable).unwrap_or_else(|_| default.into()));
    assert!(
        path.is_file(),
        "{} not found: install the Debian package `prometheus` (scripts/test does) or set {variable}",
        path.display()
    );
    path
}

fn promtool() -> PathBuf {
    tool("WITNESS_TEST_PROMTOOL", "/usr/bin/promtool")
}

fn prometheus() -> PathBuf {
    tool("WITNESS_TEST_PROMETHEUS", "/usr/bin/prometheus")
}

/// `promtool check metrics` on `text`: its exit status and report.
fn promtool_check(text: &str) -> (i32, String) {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), report)
}

/// A CA of the test's own, issuing the metrics listener's server certificate,
/// Prometheus's client certificate and the gateway's client certificate.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "gateway metrics test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// Writes `<name>.pem` and `<name>.key` to `dir`.
    fn issue(
        &self,
        dir: &Path,
        name: &str,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
    ) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = sans;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_path, key_path) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        pki::write_private(&key_path, &key.serialize_pem());
        (cert_path, key_path)
    }
}

/// The stack plus what the metrics tests add: the signer restarted to know
/// the gateway's identity as an observer, and files of the test CA.
struct MetricsStack {
    stack: Stack,
    ca: TestCa,
    ca_path: PathBuf,
    files: tempfile::TempDir,
    signer_upstream: Upstream,
}

impl MetricsStack {
    async fn start(log: &TestLog) -> MetricsStack {
        let mut stack = Stack::start(&[log], "", |_| {}).await;
        let files = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let ca_path = files.path().join("test-ca.pem");
        std::fs::write(&ca_path, &ca.pem).unwrap();
        let (client_cert, client_key) = ca.issue(
            files.path(),
            "gateway-client",
            vec![SanType::URI(GATEWAY_IDENTITY.try_into().unwrap())],
            ExtendedKeyUsagePurpose::ClientAuth,
        );

        // The signer, restarted on its address to trust the test CA too and
        // to let the gateway's identity observe (read metrics and public
        // keys); only the witness's identity may sign.
        let SignerHarness {
            mut installation,
            server,
            client_config,
        } = stack.signer;
        let addr = server.addr;
        server.stop().await;
        let bundle = files.path().join("signer-client-cas.pem");
        std::fs::write(&bundle, format!("{}{}", installation.pki.ca_pem, ca.pem)).unwrap();
        installation.config.tls.client_ca = bundle;
        installation
            .config
            .tls
            .observer_identities
            .push(format!("uri:{GATEWAY_IDENTITY}"));
        let server = installation.start(Some(addr)).await;
        let signer_upstream = Upstream {
            endpoint: format!("https://{addr}"),
            ca: Some(installation.pki.ca_path.clone()),
            client_cert: Some(client_cert),
            client_key: Some(client_key),
            server_name: Some("localhost".into()),
            timeout: Duration::from_secs(10),
        };
        stack.signer = SignerHarness {
            installation,
            server,
            client_config,
        };
        MetricsStack {
            stack,
            ca,
            ca_path,
            files,
            signer_upstream,
        }
    }

    /// A gRPC client of the signer presenting the gateway's own client
    /// certificate, as the gateway's channel does.
    async fn signer_as_gateway(&self) -> SignerClient<tonic::transport::Channel> {
        let upstream = &self.signer_upstream;
        let read = |path: &Option<PathBuf>| std::fs::read(path.as_ref().unwrap()).unwrap();
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read(&upstream.ca)))
            .identity(tonic::transport::Identity::from_pem(
                read(&upstream.client_cert),
                read(&upstream.client_key),
            ))
            .domain_name("localhost");
        let channel = tonic::transport::Endpoint::from_shared(upstream.endpoint.clone())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        SignerClient::new(channel)
    }

    /// A certificate and key for the metrics listener (`localhost`,
    /// 127.0.0.1) from the test CA.
    fn metrics_server_certificate(&self) -> (PathBuf, PathBuf) {
        self.ca.issue(
            self.files.path(),
            "metrics-server",
            vec![
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress([127, 0, 0, 1].into()),
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A gateway over the stack's witness and signer.
    async fn gateway(&mut self, metrics: Option<MetricsConfig>) -> SocketAddr {
        self.gateway_with(metrics, |_| {}).await
    }

    /// A gateway over the stack's witness and signer, its configuration
    /// changed by `adjust`.
    async fn gateway_with(
        &mut self,
        metrics: Option<MetricsConfig>,
        adjust: impl FnOnce(&mut GatewayConfig),
    ) -> SocketAddr {
        let mut config = GatewayConfig::new(format!("http://{}", self.stack.witness_addr));
        config.signer = Some(self.signer_upstream.clone());
        config.metrics = metrics;
        adjust(&mut config);
        let (addr, stop) = start_gateway(config).await;
        self.stack.stops.push(stop);
        addr
    }
}

/// Cosigns a checkpoint through the gateway, so every service has counted
/// something.
async fn cosign_through(stack: &Stack, gateway: SocketAddr, log: &TestLog) {
    let response = stack
        .http
        .post(format!("http://{gateway}/add-checkpoint"))
        .body(add(0, Vec::new(), log.signed(8)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn scrape(http: &reqwest::Client, gateway: SocketAddr) -> (u16, String, String) {
    text(
        http.get(format!("http://{gateway}/metrics"))
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// The sample lines of `family` (its own or suffixed names) in `text`.
fn samples<'a>(text: &'a str, family: &'a str) -> impl Iterator<Item = &'a str> {
    text.lines()
        .filter(move |l| !l.starts_with('#') && l.starts_with(family))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_scrape_merges_gateway_witness_and_signer_into_valid_exposition() {
    let mut log = TestLog::new(PUSHED, 21);
    log.grow(8);
    let mut stack = MetricsStack::start(&log).await;
    let gateway = stack.gateway(None).await;
    cosign_through(&stack.stack, gateway, &log).await;
    // A monitoring read and a probe of an unknown path: neither the origin
    // hash nor the probe path may become a label.
    let hash = origin_hash(PUSHED);
    let monitoring = format!("http://{gateway}/{hash}/checkpoint");
    assert_eq!(
        stack
            .stack
            .http
            .get(monitoring)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let probe = format!("http://{gateway}/probe-7f3a9c");
    assert_eq!(
        stack.stack.http.get(probe).send().await.unwrap().status(),
        404
    );

    let (status, content_type, text) = scrape(&stack.stack.http, gateway).await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );

    // Each service's own metrics, labelled with the service.
    let route = "route=\"/add-checkpoint\"";
    assert!(
        samples(&text, "gateway_http_requests_total").any(|l| l.contains("service=\"gateway\"")
            && l.contains(route)
            && l.contains("status=\"2xx\"")),
        "{text}"
    );
    assert!(
        samples(&text, "witness_cosignatures_total")
            .any(|l| l.contains("service=\"witness\"") && l.contains(&format!("log=\"{PUSHED}\""))),
        "{text}"
    );
    assert!(
        samples(&text, "signer_operations_total").any(|l| l.contains("service=\"signer\"")),
        "{text}"
    );
    assert!(
        text.contains("rekor_witness_scrape_up{service=\"witness\"} 1.0\n"),
        "{text}"
    );
    assert!(
        text.contains("rekor_witness_scrape_up{service=\"signer\"} 1.0\n"),
        "{text}"
    );
    assert!(
        text.contains("route=\"/{origin_hash}/checkpoint\""),
        "{text}"
    );
    assert!(
        text.contains("route=\"unmatched\",status=\"4xx\""),
        "{text}"
    );
    assert!(!text.contains(&hash) && !text.contains("probe-7f3a9c"));

    // Every sample names its service, and each family is declared once.
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(line.contains("{service=\""), "unlabelled sample: {line}");
    }
    let mut types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let declared = types.len();
    types.sort_unstable();
    types.dedup();
    assert_eq!(types.len(), declared, "a family declared twice:\n{text}");

    // And Prometheus's own parser and linter accept the whole exposition.
    let (code, report) = promtool_check(&text);
    assert_eq!(code, 0, "promtool check metrics:\n{report}\n{text}");
    // promtool does refuse a broken exposition (the check can fail).
    let broken = format!("{text}gateway_http_requests_total{{service=\"x\" 1\n");
    assert_ne!(promtool_check(&broken).0, 0);

    // Least privilege, end to end: the identity whose certificate fetched the
    // signer's metrics above cannot make the signer sign. It reads the public
    // keys over the same kind of channel (so the refusal is no TLS failure),
    // and a checkpoint the witness's identity would get cosigned (a new log,
    // from size 0) is PERMISSION_DENIED to it.
    let mut signer = stack.signer_as_gateway().await;
    let keys = signer
        .public_keys(signer_pb::PublicKeysRequest {})
        .await
        .expect("an observer reads the public keys");
    assert!(!keys.into_inner().keys.is_empty());
    let mut unseen = TestLog::new("least-privilege.example/log", 26);
    unseen.grow(5);
    let checkpoint = unseen.checkpoint(5);
    let refused = signer
        .cosign_checkpoint(signer_pb::CosignCheckpointRequest {
            origin: checkpoint.origin().to_owned(),
            size: 5,
            root_hash: checkpoint.root_hash().0.to_vec(),
            extension_lines: Vec::new(),
            old_size: 0,
            consistency_proof: Vec::new(),
        })
        .await
        .expect_err("the gateway's identity must never get a cosignature");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    stack.stack.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_signer_leaves_the_scrape_up_with_scrape_up_zero() {
    let mut log = TestLog::new(PUSHED, 22);
    log.grow(8);
    let mut stack = MetricsStack::start(&log).await;
    let gateway = stack.gateway(None).await;
    cosign_through(&stack.stack, gateway, &log).await;
    let (_, _, before) = scrape(&stack.stack.http, gateway).await;
    assert!(
        before.contains("rekor_witness_scrape_up{service=\"signer\"} 1.0\n"),
        "{before}"
    );

    let SignerHarness {
        installation,
        server,
        client_config,
    } = stack.stack.signer;
    server.stop().await;
    let started = std::time::Instant::now();
    let (status, _, text) = scrape(&stack.stack.http, gateway).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the scrape waited on the dead signer"
    );
    assert_eq!(status, 200);
    assert!(
        text.contains("rekor_witness_scrape_up{service=\"signer\"} 0.0\n"),
        "{text}"
    );
    assert!(
        text.contains("rekor_witness_scrape_up{service=\"witness\"} 1.0\n"),
        "{text}"
    );
    assert!(
        samples(&text, "signer_").all(|l| !l.contains("service=\"signer\"")),
        "{text}"
    );
    assert!(
        samples(&text, "witness_").any(|l| l.contains("service=\"witness\"")),
        "{text}"
    );
    assert!(
        samples(&text, "gateway_upstream_errors_total")
            .any(|l| l.contains("upstream=\"signer\"") && l.contains("kind=\"unavailable\"")),
        "{text}"
    );
    let (code, report) = promtool_check(&text);
    assert_eq!(code, 0, "promtool check metrics:\n{report}\n{text}");
    drop((installation, client_config));
    stack.stack.stops.drain(..).for_each(|stop| {
        let _ = stop.send(());
    });
}

/// A Prometheus server, killed on drop.
struct PrometheusProcess {
    child: Child,
    web: SocketAddr,
    _data: tempfile::TempDir,
}

impl Drop for PrometheusProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PrometheusProcess {
    /// Scrapes `target` every second over HTTPS with `tls_config`.
    fn start(target: SocketAddr, tls_config: &str) -> PrometheusProcess {
        let data = tempfile::tempdir().unwrap();
        let config = data.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: gateway\n    scheme: https\n\
                 \x20   tls_config:\n{tls_config}\
                 \x20   static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let web = free_port();
        let log = std::fs::File::create(data.path().join("prometheus.log")).unwrap();
        let child = Command::new(prometheus())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                data.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        PrometheusProcess {
            child,
            web,
            _data: data,
        }
    }

    /// The result vector of an instant query, or `None` while Prometheus is
    /// not answering yet.
    async fn query(&self, http: &reqwest::Client, query: &str) -> Option<Vec<serde_json::Value>> {
        let encoded: String = query
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let response = http
            .get(format!("http://{}/api/v1/query?query={encoded}", self.web))
            .send()
            .await
            .ok()?;
        let body: serde_json::Value = serde_json::from_str(&response.text().await.ok()?).ok()?;
        body["data"]["result"].as_array().cloned()
    }

    /// Polls `query` until `accept` holds for its result (30 s at most);
    /// returns the last result.
    async fn wait_for(
        &self,
        http: &reqwest::Client,
        query: &str,
        accept: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let result = self.query(http, query).await.unwrap_or_default();
            if accept(&result) || std::time::Instant::now() > deadline {
                return result;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._data.path().join("prometheus.log")).unwrap_or_default()
    }
}

/// The value of the first sample of a query result.
fn first_value(result: &[serde_json::Value]) -> Option<&str> {
    result.first()?["value"][1].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_mtls_metrics_listener_and_one_without_a_certificate_is_refused() {
    let mut log = TestLog::new(PUSHED, 23);
    log.grow(8);
    let mut stack = MetricsStack::start(&log).await;
    let dir = stack.files.path().to_path_buf();
    let (server_cert, server_key) = stack.metrics_server_certificate();
    let (prometheus_cert, prometheus_key) = stack.ca.issue(
        &dir,
        "prometheus",
        vec![SanType::URI(
            "spiffe://witness/prometheus".try_into().unwrap(),
        )],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let metrics_addr = free_port();
    let gateway = stack
        .gateway(Some(MetricsConfig {
            listen: Some(metrics_addr),
            cert: Some(server_cert),
            key: Some(server_key),
            client_ca: Some(stack.ca_path.clone()),
            ..MetricsConfig::new()
        }))
        .await;
    cosign_through(&stack.stack, gateway, &log).await;
    // With a separate listener, the API listener does not serve /metrics.
    assert_eq!(scrape(&stack.stack.http, gateway).await.0, 404);

    let ca = stack.ca_path.display();
    let with_cert = PrometheusProcess::start(
        metrics_addr,
        &format!(
            "      ca_file: {ca}\n      cert_file: {}\n      key_file: {}\n      server_name: localhost\n",
            prometheus_cert.display(),
            prometheus_key.display()
        ),
    );
    let without_cert = PrometheusProcess::start(
        metrics_addr,
        &format!("      ca_file: {ca}\n      server_name: localhost\n"),
    );
    let http = reqwest::Client::new();

    let up = with_cert
        .wait_for(&http, "up", |r| first_value(r) == Some("1"))
        .await;
    assert_eq!(first_value(&up), Some("1"), "{up:?}\n{}", with_cert.log());
    let query = format!("witness_cosignatures_total{{service=\"witness\",log=\"{PUSHED}\"}}");
    let cosignatures = with_cert.wait_for(&http, &query, |r| !r.is_empty()).await;
    assert_eq!(first_value(&cosignatures), Some("1"), "{cosignatures:?}");
    let signer = with_cert
        .wait_for(&http, "rekor_witness_scrape_up{service=\"signer\"}", |r| {
            first_value(r) == Some("1")
        })
        .await;
    assert_eq!(first_value(&signer), Some("1"), "{signer:?}");

    let refused = without_cert
        .wait_for(&http, "up", |r| first_value(r).is_some())
        .await;
    assert_eq!(
        first_value(&refused),
        Some("0"),
        "{refused:?}\n{}",
        without_cert.log()
    );
    // Refused at the TLS handshake, for want of a client certificate.
    let targets: serde_json::Value = serde_json::from_str(
        &http
            .get(format!("http://{}/api/v1/targets", without_cert.web))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    let error = targets["data"]["activeTargets"][0]["lastError"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("certificate required"), "{targets}");
    stack.stack.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scraper_whose_client_ca_is_dropped_loses_its_open_metrics_connection() {
    let mut log = TestLog::new(PUSHED, 24);
    log.grow(8);
    let mut stack = MetricsStack::start(&log).await;
    let dir = stack.files.path().to_path_buf();
    let (server_cert, server_key) = stack.metrics_server_certificate();
    let (scraper_cert, scraper_key) = stack.ca.issue(
        &dir,
        "scraper",
        vec![SanType::URI(
            "spiffe://witness/prometheus".try_into().unwrap(),
        )],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let scraper_cas = dir.join("scraper-cas.pem");
    std::fs::write(&scraper_cas, &stack.ca.pem).unwrap();
    let metrics_addr = free_port();
    stack
        .gateway_with(
            Some(MetricsConfig {
                listen: Some(metrics_addr),
                cert: Some(server_cert),
                key: Some(server_key),
                client_ca: Some(scraper_cas.clone()),
                ..MetricsConfig::new()
            }),
            |config| config.tls_reload_interval = Duration::from_millis(100),
        )
        .await;
    let identity = format!(
        "{}{}",
        std::fs::read_to_string(&scraper_cert).unwrap(),
        std::fs::read_to_string(&scraper_key).unwrap()
    );
    let scraper = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(stack.ca.pem.as_bytes()).unwrap()])
        .identity(reqwest::Identity::from_pem(identity.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/metrics", metrics_addr.port());
    // The metrics listener binds in the background.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(metrics_addr).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "no metrics listener");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = scraper.get(&url).send().await.unwrap().status();
    assert_eq!(status, 200);

    // The scrapers' CA is replaced: the open scrape connection goes with it.
    std::fs::write(&scraper_cas, TestCa::new().pem).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = scraper.get(&url).send().await;
    assert!(
        after.is_err(),
        "metrics served over a connection whose client CA was dropped: {:?}",
        after.map(|response| response.status())
    );
    stack.stack.stop();
}

#[test]
fn hostile_upstream_text_never_breaks_the_merged_exposition() {
    use gateway::metrics::exposition::{merge, parse};
    // Parseable but hostile: label values with quotes, braces, backslashes and
    // newlines, a `service` label of its own, NaN and infinities, the same
    // family as another service with another type, a series repeated.
    let witness = r#"# HELP shared_total Witness \\ help\n with escapes
# TYPE shared_total counter
shared_total{service="gateway",v="a\"} b{c=\"d\\e\nf"} 1
shared_total{service="gateway",v="a\"} b{c=\"d\\e\nf"} 2
# HELP odd Odd
odd NaN
# HELP odd2 Odder
odd2 -Inf 1700000000000
"#;
    let signer = r#"# TYPE shared_total gauge
shared_total 3
# HELP h Latency
# TYPE h histogram
h_bucket{le="+Inf"} 1
h_sum 1e300
h_count 1
"#;
    let (text, conflicts) = merge(vec![
        ("witness", parse(witness).unwrap()),
        ("signer", parse(signer).unwrap()),
    ]);
    assert_eq!(conflicts.len(), 1, "the gauge shared_total is dropped");
    let (code, report) = promtool_check(&text);
    assert_eq!(code, 0, "promtool check metrics:\n{report}\n{text}");
    assert!(text.contains(r#"exported_service="gateway""#), "{text}");
    assert_eq!(text.matches("shared_total{").count(), 1, "{text}");

    // Malformed text is refused before it can reach the merge; promtool
    // refuses the same text, so the parser is not laxer than Prometheus.
    for malformed in [
        "m{a=\"x} 1\n",
        "m{a=\"x\"} 1 2 3\n",
        "m 1\nn 1\nm 2\n",
        "# TYPE h histogram\nh_bucket 1\n",
        "m{a=\"\\q\"} 1\n",
    ] {
        assert!(parse(malformed).is_err(), "{malformed:?}");
        assert_ne!(promtool_check(malformed).0, 0, "{malformed:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_metrics_are_pushed_to_an_otlp_collector() {
    use axum::body::Bytes;
    use axum::http::HeaderMap;
    // A collector's OTLP/HTTP receiver: records what is posted to it.
    let (posted, mut received) = tokio::sync::mpsc::unbounded_channel::<(String, Bytes)>();
    let collector = axum::Router::new().route(
        "/v1/metrics",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let _ = posted.send((content_type, body));
            async { "" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let mut log = TestLog::new(PUSHED, 24);
    log.grow(8);
    let mut stack = Stack::start(&[&log], "", |config| {
        config.metrics = Some(MetricsConfig {
            otlp_endpoint: Some(format!("http://{collector_addr}/v1/metrics")),
            otlp_interval: Duration::from_millis(200),
            ..MetricsConfig::new()
        });
    })
    .await;
    cosign_through(&stack, stack.gateway, &log).await;
    // Without a separate listener, /metrics stays on the API listener.
    assert_eq!(scrape(&stack.http, stack.gateway).await.0, 200);

    // The pushes are OTLP protobuf; metric names and label values travel as
    // plain strings inside it. Cumulative, so a later push holds the request.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (content_type, body) = tokio::time::timeout_at(deadline, received.recv())
            .await
            .expect("no OTLP push with the request within 15 s")
            .unwrap();
        assert_eq!(content_type, "application/x-protobuf");
        let has = |needle: &str| body.windows(needle.len()).any(|w| w == needle.as_bytes());
        if has("gateway_http_requests") && has("/add-checkpoint") {
            break;
        }
    }
    stack.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_witness_is_counted_and_reported_not_a_failed_scrape() {
    let dead = free_port();
    let (gateway, _stop) = start_gateway(GatewayConfig::new(format!("http://{dead}"))).await;
    let http = reqwest::Client::new();
    let log = TestLog::new(PUSHED, 25);
    let response = http
        .post(format!("http://{gateway}/add-checkpoint"))
        .body(add(0, Vec::new(), log.signed(0)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);

    let (status, _, text) = scrape(&http, gateway).await;
    assert_eq!(status, 200);
    assert!(
        text.contains("rekor_witness_scrape_up{service=\"witness\"} 0.0\n"),
        "{text}"
    );
    // One failed add-checkpoint and one failed scrape, both counted.
    let errors: Vec<&str> = samples(&text, "gateway_upstream_errors_total")
        .filter(|l| l.contains("upstream=\"witness\"") && l.contains("kind=\"unavailable\""))
        .collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert!(errors[0].ends_with(" 2.0"), "{text}");
    let (code, report) = promtool_check(&text);
    assert_eq!(code, 0, "promtool check metrics:\n{report}\n{text}");
}
