//! TLS certificates and CA bundles that follow their files: every TLS endpoint
//! of the three services (signer-svc's gRPC listener, the witness's gRPC
//! listener and its client to the signer, the gateway's HTTPS and metrics
//! listeners and its clients to the witness and the signer) takes its
//! certificate, key and trust bundle from here, so that an operator rotates
//! them by replacing the files, without a restart.
//!
//! # Design: polling the contents
//!
//! A [`TlsReloader`] per endpoint reads its files again every
//! `reload_interval` (10 s by default, [`DEFAULT_RELOAD_INTERVAL`]) and
//! compares their *contents* with what it loaded last. Polling rather than
//! SIGHUP because the usual rotation (cert-manager writing a Kubernetes Secret
//! volume) sends no signal: the kubelet swaps the `..data` symlink atomically,
//! and nothing in the pod is told. Contents rather than mtimes because that
//! swap (like `cp -p`) can leave every mtime as it was, and the cost is a few
//! small reads per interval. inotify is not used either: it watches inodes,
//! and a symlink swap replaces the inode under the watched path.
//!
//! A changed set of files is parsed and checked in full (a certificate chain
//! with its matching private key; a non-empty bundle of valid CA
//! certificates) before it replaces the served one for *new* handshakes;
//! established connections keep the configuration they were made with. A set
//! that does not load (half written, a key that does not match, garbage) is
//! logged at error level, counted in `tls_reload_failures_total{endpoint}`,
//! and the previous configuration stays in use; it is tried again when any of
//! its files changes again. A successful reload is logged and counted in
//! `tls_reloads_total{endpoint}`. The leaf certificate's expiry of every
//! loaded certificate is exported as
//! `tls_certificate_expiry_timestamp_seconds{endpoint}` (Unix seconds), for
//! the `TlsCertificateExpiresSoon` alert.
//!
//! A file that cannot be read at a tick (between a removal and a creation)
//! is skipped silently until the next tick.
//!
//! Session resumption is off on the mutual-TLS links ([`no_resumption`] and
//! [`grpc_client`]): a resumed TLS 1.3 session skips the certificate
//! exchange, so a peer whose CA was just removed from the bundle could
//! reconnect on a ticket issued before. gRPC connections are long-lived, so
//! the full handshakes cost nothing noticeable.
//!
//! Rotating to a new CA is done in the usual three steps: add the new CA to
//! every trust bundle, then replace the leaf certificates, then remove the old
//! CA. Each step is picked up within one interval.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::transport::Endpoint;
use tonic::transport::server::Connected;

use crate::{Error, Result};

/// How often the files are read again unless configured otherwise.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// How long a client may take to complete a handshake on a listener served
/// by [`incoming`].
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once on a listener served by [`incoming`]; more
/// wait in the kernel's backlog.
const MAX_PENDING_HANDSHAKES: usize = 64;

/// The rustls crypto provider of the workspace: aws-lc-rs.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Turns session resumption off on a server that verifies client
/// certificates, so that every connection is checked against the trust
/// bundle as it is now (see the module documentation).
pub fn no_resumption(server: &mut rustls::ServerConfig) {
    server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server.send_tls13_tickets = 0;
}

/// Reload counts and certificate expiries of a process's TLS endpoints, read
/// by its metrics at scrape time ([`TlsReloadMetrics::register`]).
#[derive(Clone, Debug, Default)]
pub struct TlsReloadMetrics {
    endpoints: Arc<Mutex<BTreeMap<&'static str, EndpointStats>>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct EndpointStats {
    reloads: u64,
    failures: u64,
    /// The loaded leaf certificate's `notAfter`, Unix seconds.
    not_after: Option<i64>,
}

impl TlsReloadMetrics {
    /// Registers `tls_certificate_expiry_timestamp_seconds`,
    /// `tls_reloads_total` and `tls_reload_failures_total`, all labelled
    /// with `endpoint`, on `meter`.
    pub fn register(&self, meter: &opentelemetry::metrics::Meter) {
        use opentelemetry::KeyValue;
        let label = |endpoint: &str| [KeyValue::new("endpoint", endpoint.to_owned())];
        let stats = self.clone();
        meter
            .i64_observable_gauge("tls_certificate_expiry_timestamp_seconds")
            .with_description("Expiry (notAfter, Unix seconds) of the served TLS certificate")
            .with_callback(move |observer| {
                for (endpoint, stats) in stats.snapshot() {
                    if let Some(not_after) = stats.not_after {
                        observer.observe(not_after, &label(endpoint));
                    }
                }
            })
            .build();
        let stats = self.clone();
        meter
            .u64_observable_counter("tls_reloads")
            .with_description("TLS files that changed and were loaded without a restart")
            .with_callback(move |observer| {
                for (endpoint, stats) in stats.snapshot() {
                    observer.observe(stats.reloads, &label(endpoint));
                }
            })
            .build();
        let stats = self.clone();
        meter
            .u64_observable_counter("tls_reload_failures")
            .with_description("Changed TLS files that did not load; the previous ones stay in use")
            .with_callback(move |observer| {
                for (endpoint, stats) in stats.snapshot() {
                    observer.observe(stats.failures, &label(endpoint));
                }
            })
            .build();
    }

    fn snapshot(&self) -> Vec<(&'static str, EndpointStats)> {
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(endpoint, stats)| (*endpoint, *stats))
            .collect()
    }

    fn update(&self, endpoint: &'static str, change: impl FnOnce(&mut EndpointStats)) {
        change(
            self.endpoints
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(endpoint)
                .or_default(),
        );
    }

    /// Records that `endpoint` serves a certificate valid until `not_after`
    /// (Unix seconds).
    pub fn certificate_loaded(&self, endpoint: &'static str, not_after: i64) {
        self.update(endpoint, |stats| stats.not_after = Some(not_after));
    }

    /// Successful reloads of `endpoint` so far.
    pub fn reloads(&self, endpoint: &str) -> u64 {
        self.get(endpoint).reloads
    }

    /// Failed reloads of `endpoint` so far.
    pub fn failures(&self, endpoint: &str) -> u64 {
        self.get(endpoint).failures
    }

    /// The `notAfter` of the certificate `endpoint` serves.
    pub fn not_after(&self, endpoint: &str) -> Option<i64> {
        self.get(endpoint).not_after
    }

    fn get(&self, endpoint: &str) -> EndpointStats {
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(endpoint)
            .copied()
            .unwrap_or_default()
    }
}

/// What a loader makes of a set of files: the value, and the leaf
/// certificate's `notAfter` when the value is a certificate.
type Loaded<T> = (T, Option<i64>);

/// Parses and checks the contents of a set of files.
type Loader<T> = Box<dyn Fn(&[Vec<u8>]) -> std::result::Result<Loaded<T>, String> + Send + Sync>;

/// A value loaded from a set of files, replaced when they change.
struct Watched<T> {
    endpoint: &'static str,
    paths: Vec<PathBuf>,
    load: Loader<T>,
    current: RwLock<T>,
    /// The contents last seen (loaded or refused).
    seen: Mutex<Vec<Vec<u8>>>,
    /// Counts the reloads, for what must act on a change (the connections
    /// re-verifying their client certificate, [`ClientTrustWatch`]).
    reloads: tokio::sync::watch::Sender<u64>,
}

impl<T: Clone> Watched<T> {
    /// Loads the files now: a failure here is a configuration error.
    fn open(
        endpoint: &'static str,
        paths: Vec<PathBuf>,
        load: Loader<T>,
    ) -> Result<(Watched<T>, Option<i64>)> {
        let contents = read_all(&paths).map_err(|detail| Error::Config { detail })?;
        let (value, not_after) = load(&contents).map_err(|detail| Error::Config {
            detail: format!("{}: {detail}", describe(&paths)),
        })?;
        let watched = Watched {
            endpoint,
            paths,
            load,
            current: RwLock::new(value),
            seen: Mutex::new(contents),
            reloads: tokio::sync::watch::Sender::new(0),
        };
        Ok((watched, not_after))
    }

    /// The value for a new handshake. A std lock: held only to clone an
    /// `Arc`, never across an await.
    fn current(&self) -> T {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// One watched set of files, whatever it loads.
trait Reload: Send + Sync {
    /// Reads the files and, when they changed, loads them.
    fn check(&self, metrics: &TlsReloadMetrics);
}

impl<T: Clone + Send + Sync> Reload for Watched<T> {
    fn check(&self, metrics: &TlsReloadMetrics) {
        let Ok(contents) = read_all(&self.paths) else {
            return;
        };
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if *seen == contents {
            return;
        }
        match (self.load)(&contents) {
            Ok((value, not_after)) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = value;
                self.reloads.send_modify(|count| *count += 1);
                metrics.update(self.endpoint, |stats| {
                    stats.reloads += 1;
                    if not_after.is_some() {
                        stats.not_after = not_after;
                    }
                });
                tracing::info!(endpoint = self.endpoint, files = %describe(&self.paths), "TLS files reloaded");
            }
            Err(error) => {
                metrics.update(self.endpoint, |stats| stats.failures += 1);
                tracing::error!(
                    endpoint = self.endpoint,
                    files = %describe(&self.paths),
                    %error,
                    "changed TLS files do not load; the previous ones stay in use"
                );
            }
        }
        // Remembered either way: a refused set is reported once and tried
        // again when a file changes again (the key written after the
        // certificate, say).
        *seen = contents;
    }
}

fn read_all(paths: &[PathBuf]) -> std::result::Result<Vec<Vec<u8>>, String> {
    paths
        .iter()
        .map(|path| std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display())))
        .collect()
}

fn describe(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_certificates(pem: &[u8]) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in the file".into());
    }
    Ok(certs)
}

/// The `notAfter` of a DER certificate, Unix seconds.
pub fn certificate_not_after(der: &[u8]) -> Option<i64> {
    use x509_parser::prelude::FromDer as _;
    x509_parser::certificate::X509Certificate::from_der(der)
        .ok()
        .map(|(_, cert)| cert.validity().not_after.timestamp())
}

fn load_certified_key(
    provider: &CryptoProvider,
    contents: &[Vec<u8>],
) -> std::result::Result<Loaded<Arc<CertifiedKey>>, String> {
    let [cert, key] = contents else {
        return Err("expected a certificate and a key".into());
    };
    let chain = parse_certificates(cert)?;
    let not_after = chain
        .first()
        .and_then(|leaf| certificate_not_after(leaf))
        .ok_or("the leaf certificate does not parse")?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("private key: {e}"))?;
    // Also checks that the key is the certificate's.
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| e.to_string())?;
    Ok((Arc::new(certified), Some(not_after)))
}

fn load_roots(contents: &[Vec<u8>]) -> std::result::Result<Arc<RootCertStore>, String> {
    let [bundle] = contents else {
        return Err("expected one CA bundle".into());
    };
    let mut roots = RootCertStore::empty();
    for ca in parse_certificates(bundle)? {
        roots.add(ca).map_err(|e| format!("CA certificate: {e}"))?;
    }
    Ok(Arc::new(roots))
}

/// Whether a listener requires a client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// No certificate, no handshake.
    Required,
    /// A client may present none; one that it presents must verify.
    Optional,
}

/// Builds the reloading TLS pieces of one endpoint and watches their files.
pub struct TlsReloader {
    endpoint: &'static str,
    provider: Arc<CryptoProvider>,
    metrics: TlsReloadMetrics,
    watched: Vec<Arc<dyn Reload>>,
}

impl TlsReloader {
    /// An endpoint named `endpoint` in the metrics (`grpc_server`,
    /// `signer_client`, ...).
    pub fn new(endpoint: &'static str, metrics: TlsReloadMetrics) -> TlsReloader {
        TlsReloader {
            endpoint,
            provider: crypto_provider(),
            metrics,
            watched: Vec::new(),
        }
    }

    /// The crypto provider the pieces use.
    pub fn provider(&self) -> Arc<CryptoProvider> {
        self.provider.clone()
    }

    /// The certificate chain in `cert` with its key in `key`, as a server or
    /// client certificate. Fails (a configuration error) if they do not load.
    pub fn certified_key(&mut self, cert: &Path, key: &Path) -> Result<Arc<ReloadingCertifiedKey>> {
        let provider = self.provider.clone();
        let (watched, not_after) = Watched::open(
            self.endpoint,
            vec![cert.to_path_buf(), key.to_path_buf()],
            Box::new(move |contents| load_certified_key(&provider, contents)),
        )?;
        let watched = Arc::new(watched);
        if let Some(not_after) = not_after {
            self.metrics.certificate_loaded(self.endpoint, not_after);
        }
        self.watched.push(watched.clone());
        Ok(Arc::new(ReloadingCertifiedKey(watched)))
    }

    /// A verifier of client certificates chaining to a CA in the bundle `ca`.
    pub fn client_verifier(
        &mut self,
        ca: &Path,
        auth: ClientAuth,
    ) -> Result<Arc<ReloadingClientVerifier>> {
        let provider = self.provider.clone();
        let (watched, _) = Watched::open(
            self.endpoint,
            vec![ca.to_path_buf()],
            Box::new(move |contents| {
                let builder = WebPkiClientVerifier::builder_with_provider(
                    load_roots(contents)?,
                    provider.clone(),
                );
                let builder = match auth {
                    ClientAuth::Required => builder,
                    ClientAuth::Optional => builder.allow_unauthenticated(),
                };
                let verifier: Arc<dyn ClientCertVerifier> =
                    builder.build().map_err(|e| e.to_string())?;
                Ok((verifier, None))
            }),
        )?;
        let watched = Arc::new(watched);
        self.watched.push(watched.clone());
        Ok(Arc::new(ReloadingClientVerifier {
            watched,
            mandatory: auth == ClientAuth::Required,
        }))
    }

    /// A verifier of server certificates chaining to a CA in the bundle `ca`.
    pub fn server_verifier(&mut self, ca: &Path) -> Result<Arc<ReloadingServerVerifier>> {
        let provider = self.provider.clone();
        let (watched, _) = Watched::open(
            self.endpoint,
            vec![ca.to_path_buf()],
            Box::new(move |contents| {
                let verifier: Arc<dyn ServerCertVerifier> =
                    WebPkiServerVerifier::builder_with_provider(
                        load_roots(contents)?,
                        provider.clone(),
                    )
                    .build()
                    .map_err(|e| e.to_string())?;
                Ok((verifier, None))
            }),
        )?;
        let watched = Arc::new(watched);
        self.watched.push(watched.clone());
        Ok(Arc::new(ReloadingServerVerifier(watched)))
    }

    /// Reads every file once and loads those that changed.
    pub fn check_now(&self) {
        for watched in &self.watched {
            watched.check(&self.metrics);
        }
    }

    /// Checks the files every `interval` in a background task, stopped when
    /// the returned handle is dropped.
    pub fn spawn(self, interval: Duration) -> ReloadTask {
        let task = tokio::spawn(async move {
            let reloader = Arc::new(self);
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick is immediate; the files were just loaded.
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let reloader = reloader.clone();
                // File reads block: off the async workers.
                if tokio::task::spawn_blocking(move || reloader.check_now())
                    .await
                    .is_err()
                {
                    tracing::error!("TLS reload check panicked");
                }
            }
        });
        ReloadTask(task)
    }
}

/// The task watching an endpoint's TLS files; dropping it stops the watch.
#[derive(Debug)]
pub struct ReloadTask(tokio::task::JoinHandle<()>);

impl Drop for ReloadTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A certificate and key that follow their files, served as a server
/// certificate or presented as a client certificate.
pub struct ReloadingCertifiedKey(Arc<Watched<Arc<CertifiedKey>>>);

impl ReloadingCertifiedKey {
    /// The certificate new handshakes use.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.0.current()
    }
}

impl std::fmt::Debug for ReloadingCertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ReloadingCertifiedKey")
            .field(&self.0.paths)
            .finish()
    }
}

impl ResolvesServerCert for ReloadingCertifiedKey {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for ReloadingCertifiedKey {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A client certificate verifier whose trusted CAs follow their file.
pub struct ReloadingClientVerifier {
    watched: Arc<Watched<Arc<dyn ClientCertVerifier>>>,
    mandatory: bool,
}

impl std::fmt::Debug for ReloadingClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingClientVerifier")
            .field("ca", &self.watched.paths)
            .field("mandatory", &self.mandatory)
            .finish()
    }
}

impl ReloadingClientVerifier {
    /// Changes each time the CA bundle is reloaded.
    fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.watched.reloads.subscribe()
    }
}

impl ClientCertVerifier for ReloadingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    /// No hints: the list would have to outlive a reload. Clients with one
    /// certificate (all of ours) ignore the hints anyway.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        self.watched
            .current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.watched
            .current()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.watched
            .current()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.watched.current().supported_verify_schemes()
    }
}

/// The longest a connection waits before checking its client certificate's
/// validity again: a timer cannot be armed for a certificate's whole life, and
/// a check a day costs nothing.
const MAX_EXPIRY_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// What resolves with the next reload of a CA bundle: the receiver again, or
/// `None` once the reloads stopped (nothing can change any more).
type NextReload = Pin<Box<dyn Future<Output = Option<tokio::sync::watch::Receiver<u64>>> + Send>>;

fn next_reload(mut reloads: tokio::sync::watch::Receiver<u64>) -> NextReload {
    Box::pin(async move {
        reloads.changed().await.ok()?;
        Some(reloads)
    })
}

/// Keeps an established connection's verdict on its client certificate
/// current. The handshake verified the chain against the CAs of that moment;
/// this verifies it again, with the same verifier, whenever the CA bundle is
/// reloaded and when the certificate's validity ends. Once the chain no longer
/// verifies, the connection's reads fail, which closes it: a client whose CA
/// was dropped from the bundle, or whose certificate expired, cannot go on
/// with a connection it opened before (new handshakes are refused by the
/// verifier itself).
pub struct ClientTrustWatch {
    endpoint: &'static str,
    verifier: Arc<ReloadingClientVerifier>,
    end_entity: CertificateDer<'static>,
    intermediates: Vec<CertificateDer<'static>>,
    not_after: Option<i64>,
    reload: NextReload,
    expiry: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Why the certificate stopped verifying, once it did.
    revoked: Option<String>,
}

impl ClientTrustWatch {
    /// Watches the chain a client presented (`peer_certificates`, the end
    /// entity first) on a connection whose handshake `verifier` accepted.
    /// `None` without a certificate: there is nothing to verify again.
    pub fn new(
        endpoint: &'static str,
        verifier: Arc<ReloadingClientVerifier>,
        peer_certificates: &[CertificateDer<'_>],
    ) -> Option<ClientTrustWatch> {
        let (end_entity, intermediates) = peer_certificates.split_first()?;
        let not_after = certificate_not_after(end_entity.as_ref());
        let reload = next_reload(verifier.reloads());
        Some(ClientTrustWatch {
            endpoint,
            verifier,
            end_entity: end_entity.clone().into_owned(),
            intermediates: intermediates
                .iter()
                .map(|c| c.clone().into_owned())
                .collect(),
            not_after,
            reload,
            expiry: expiry_timer(not_after),
            revoked: None,
        })
    }

    /// `Ready` with the error to fail the connection's read with once the
    /// certificate no longer verifies; otherwise `Pending`, and `cx` is woken
    /// at the next reload or at the certificate's expiry.
    pub fn poll_revoked(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if self.revoked.is_none() {
            let mut due = false;
            // Until pending: `cx` is then registered with the current future,
            // and no finished future is kept to be polled again.
            while let Poll::Ready(reloads) = self.reload.as_mut().poll(cx) {
                due = true;
                self.reload = match reloads {
                    Some(reloads) => next_reload(reloads),
                    None => Box::pin(std::future::pending()),
                };
            }
            if let Some(expiry) = &mut self.expiry
                && expiry.as_mut().poll(cx).is_ready()
            {
                due = true;
                self.expiry = expiry_timer(self.not_after);
                if let Some(expiry) = &mut self.expiry {
                    let _ = expiry.as_mut().poll(cx);
                }
            }
            if due {
                self.check();
            }
        }
        match &self.revoked {
            Some(reason) => Poll::Ready(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("the client certificate is no longer trusted: {reason}"),
            )),
            None => Poll::Pending,
        }
    }

    fn check(&mut self) {
        if let Err(error) =
            self.verifier
                .verify_client_cert(&self.end_entity, &self.intermediates, UnixTime::now())
        {
            tracing::warn!(
                endpoint = self.endpoint,
                %error,
                "closing a connection: its client certificate no longer verifies"
            );
            self.revoked = Some(error.to_string());
        }
    }
}

/// A timer to the first second after `not_after` (at most
/// [`MAX_EXPIRY_WAIT`] away), or none when the validity is unknown.
fn expiry_timer(not_after: Option<i64>) -> Option<Pin<Box<tokio::time::Sleep>>> {
    let not_after = not_after?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let wait = u64::try_from(not_after.saturating_add(1))
        .unwrap_or(0)
        .saturating_sub(now);
    Some(Box::pin(tokio::time::sleep(
        Duration::from_secs(wait).min(MAX_EXPIRY_WAIT),
    )))
}

/// A server certificate verifier whose trusted CAs follow their file.
pub struct ReloadingServerVerifier(Arc<Watched<Arc<dyn ServerCertVerifier>>>);

impl std::fmt::Debug for ReloadingServerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ReloadingServerVerifier")
            .field(&self.0.paths)
            .finish()
    }
}

impl ServerCertVerifier for ReloadingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        self.0.current().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().supported_verify_schemes()
    }
}

/// The TLS files of a mutual-TLS gRPC client.
#[derive(Clone, Copy, Debug)]
pub struct ClientFiles<'a> {
    /// The CA bundle the server's certificate must chain to.
    pub ca: &'a Path,
    /// The client certificate chain.
    pub cert: &'a Path,
    /// Its private key.
    pub key: &'a Path,
}

/// A gRPC client endpoint over mutual TLS 1.3 whose certificate and trusted
/// CAs follow their files, and its connector (for
/// `Endpoint::connect_with_connector_lazy`). The files are watched every
/// `reload_interval` for as long as the connector lives, that is as long as
/// any clone of the channel.
///
/// `uri` is `https://host:port`; tonic's own TLS cannot take a custom rustls
/// configuration, so the endpoint is handed to tonic as `http://` with a
/// connector that runs the TLS handshake itself: the wire is TLS all the same.
pub fn grpc_client(
    endpoint: &'static str,
    uri: &str,
    server_name: Option<&str>,
    files: ClientFiles<'_>,
    reload_interval: Duration,
    metrics: TlsReloadMetrics,
) -> Result<(Endpoint, MutualTlsConnector)> {
    let config_error = |detail: String| Error::Config {
        detail: format!("{endpoint} {uri:?}: {detail}"),
    };
    let parsed: tonic::codegen::http::Uri =
        uri.parse().map_err(|e| config_error(format!("{e}")))?;
    if parsed.scheme_str() != Some("https") {
        return Err(config_error("mutual TLS needs an https endpoint".into()));
    }
    let host = parsed
        .host()
        .ok_or_else(|| config_error("no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed.port_u16().unwrap_or(443);
    let name = ServerName::try_from(server_name.unwrap_or(&host).to_owned())
        .map_err(|e| config_error(format!("server name: {e}")))?;
    let mut reloader = TlsReloader::new(endpoint, metrics);
    let certificate = reloader.certified_key(files.cert, files.key)?;
    let verifier = reloader.server_verifier(files.ca)?;
    let mut config = rustls::ClientConfig::builder_with_provider(reloader.provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| config_error(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(certificate);
    config.alpn_protocols = vec![b"h2".to_vec()];
    // Every connection verifies the server against the bundle as it is now.
    config.resumption = rustls::client::Resumption::disabled();
    let plain = format!(
        "http://{}",
        parsed.authority().map(|a| a.as_str()).unwrap_or(&host)
    );
    let channel_endpoint = Endpoint::from_shared(plain).map_err(|e| config_error(e.to_string()))?;
    let connector = MutualTlsConnector {
        connector: TlsConnector::from(Arc::new(config)),
        host,
        port,
        server_name: name,
        _reload: Arc::new(reloader.spawn(reload_interval)),
    };
    Ok((channel_endpoint, connector))
}

/// Opens TCP connections to the configured server and runs the TLS
/// handshake on them, for `Endpoint::connect_with_connector_lazy`.
#[derive(Clone)]
pub struct MutualTlsConnector {
    connector: TlsConnector,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    _reload: Arc<ReloadTask>,
}

impl tower::Service<tonic::codegen::http::Uri> for MutualTlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: tonic::codegen::http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect((this.host.as_str(), this.port)).await?;
            tcp.set_nodelay(true)?;
            let tls = this.connector.connect(this.server_name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// The certificate chain a client presented in the handshake (verified by
/// the listener's verifier), available to gRPC handlers and interceptors as
/// a request extension.
#[derive(Clone, Debug, Default)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

/// A server-side TLS stream whose reads fail once its client certificate no
/// longer verifies ([`ClientTrustWatch`]); a stream without a watch is
/// passed through as is.
pub struct TrustWatched<S> {
    stream: TlsStream<S>,
    trust: Option<ClientTrustWatch>,
}

impl<S> TrustWatched<S> {
    /// `stream` with `trust` watching its client certificate.
    pub fn new(stream: TlsStream<S>, trust: Option<ClientTrustWatch>) -> TrustWatched<S> {
        TrustWatched { stream, trust }
    }

    /// `stream`, handshaken with `verifier`, watched when its client
    /// presented a certificate (`endpoint` names it in the log).
    pub fn watching(
        endpoint: &'static str,
        stream: TlsStream<S>,
        verifier: &Arc<ReloadingClientVerifier>,
    ) -> TrustWatched<S> {
        let (_, session) = stream.get_ref();
        let trust = session
            .peer_certificates()
            .and_then(|chain| ClientTrustWatch::new(endpoint, verifier.clone(), chain));
        TrustWatched { stream, trust }
    }

    /// The TLS stream.
    pub fn get_ref(&self) -> &TlsStream<S> {
        &self.stream
    }
}

/// A connection of the witness's gRPC listener: tells tonic the client's
/// certificates, and fails once they are no longer trusted.
pub type TlsConnection = TrustWatched<TcpStream>;

impl Connected for TrustWatched<TcpStream> {
    type ConnectInfo = PeerCertificates;

    fn connect_info(&self) -> PeerCertificates {
        let (_, session) = self.stream.get_ref();
        PeerCertificates(Arc::new(
            session
                .peer_certificates()
                .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default(),
        ))
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> tokio::io::AsyncRead
    for TrustWatched<S>
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(trust) = &mut this.trust
            && let Poll::Ready(error) = trust.poll_revoked(cx)
        {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite
    for TrustWatched<S>
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Accepts TCP connections on `listener` and runs each TLS handshake in its
/// own task (a slow client cannot stall the others), yielding established
/// connections for `Server::serve_with_incoming`. Stops accepting when the
/// server drops the stream.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    client_verifier: Arc<ReloadingClientVerifier>,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<TlsConnection>> {
    let (sender, receiver) = mpsc::channel(MAX_PENDING_HANDSHAKES);
    tokio::spawn(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
        loop {
            let accepted = tokio::select! {
                () = sender.closed() => break,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, say: back off, keep going.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            let acceptor = acceptor.clone();
            let sender = sender.clone();
            let client_verifier = client_verifier.clone();
            tokio::spawn(async move {
                let _slot = slot;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let connection =
                            TrustWatched::watching("grpc_server", tls, &client_verifier);
                        let _ = sender.send(Ok(connection)).await;
                    }
                    Ok(Err(error)) => tracing::info!(%error, "TLS handshake refused"),
                    Err(_) => tracing::info!("TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

#[cfg(all(test, feature = "service"))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose,
    };

    struct Ca {
        pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `localhost` usable as server and client certificate:
    /// (certificate PEM, key PEM, DER).
    /// Valid until January 1st of `until_year`.
    fn leaf(ca: &Ca, until_year: i32) -> (String, String, Vec<u8>) {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(until_year, 1, 1);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    fn leaf_der(key: &ReloadingCertifiedKey) -> Vec<u8> {
        key.current().cert[0].to_vec()
    }

    #[test]
    fn a_replaced_certificate_is_used_for_new_handshakes_and_its_expiry_exported() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let ca = ca("rotation CA");
        let (first, first_key, first_der) = leaf(&ca, 2030);
        std::fs::write(&cert, &first).unwrap();
        std::fs::write(&key, &first_key).unwrap();
        let metrics = TlsReloadMetrics::default();
        let mut reloader = TlsReloader::new("grpc_server", metrics.clone());
        let served = reloader.certified_key(&cert, &key).unwrap();
        assert_eq!(leaf_der(&served), first_der);
        let first_expiry = metrics.not_after("grpc_server").unwrap();
        assert_eq!(Some(first_expiry), certificate_not_after(&first_der));

        // Unchanged files: nothing happens.
        reloader.check_now();
        assert_eq!(metrics.reloads("grpc_server"), 0);

        let (second, second_key, second_der) = leaf(&ca, 2031);
        std::fs::write(&cert, &second).unwrap();
        std::fs::write(&key, &second_key).unwrap();
        reloader.check_now();
        assert_eq!(leaf_der(&served), second_der);
        assert_eq!(metrics.reloads("grpc_server"), 1);
        assert_eq!(metrics.failures("grpc_server"), 0);
        let second_expiry = metrics.not_after("grpc_server").unwrap();
        assert_eq!(second_expiry - first_expiry, 365 * 86_400);
    }

    #[test]
    fn garbage_a_half_written_file_or_a_mismatched_key_keeps_the_previous_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let ca = ca("rotation CA");
        let (first, first_key, first_der) = leaf(&ca, 2030);
        std::fs::write(&cert, &first).unwrap();
        std::fs::write(&key, &first_key).unwrap();
        let metrics = TlsReloadMetrics::default();
        let mut reloader = TlsReloader::new("api", metrics.clone());
        let served = reloader.certified_key(&cert, &key).unwrap();

        let (second, second_key, second_der) = leaf(&ca, 2031);
        let half = &second[..second.len() / 2];
        for (n, (cert_text, key_text)) in [
            ("garbage\n", first_key.as_str()),
            (half, first_key.as_str()),
            // The new certificate with the old key: written before its key.
            (second.as_str(), first_key.as_str()),
        ]
        .into_iter()
        .enumerate()
        {
            std::fs::write(&cert, cert_text).unwrap();
            std::fs::write(&key, key_text).unwrap();
            reloader.check_now();
            assert_eq!(leaf_der(&served), first_der, "case {n}");
            assert_eq!(metrics.failures("api"), n as u64 + 1, "case {n}");
            // Reported once, not at every tick.
            reloader.check_now();
            assert_eq!(metrics.failures("api"), n as u64 + 1, "case {n}");
        }
        assert_eq!(metrics.reloads("api"), 0);
        assert_eq!(
            metrics.not_after("api"),
            certificate_not_after(&first_der),
            "the exported expiry is the served certificate's"
        );
        // The key arrives: the pair loads.
        std::fs::write(&key, &second_key).unwrap();
        reloader.check_now();
        assert_eq!(leaf_der(&served), second_der);
        assert_eq!(metrics.reloads("api"), 1);
    }

    #[test]
    fn a_kubernetes_secret_symlink_swap_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let ca = ca("rotation CA");
        let write_version = |name: &str, cert: &str, key: &str| {
            let version = root.join(name);
            std::fs::create_dir(&version).unwrap();
            std::fs::write(version.join("tls.crt"), cert).unwrap();
            std::fs::write(version.join("tls.key"), key).unwrap();
        };
        let (first, first_key, _) = leaf(&ca, 2030);
        write_version("..2026_01", &first, &first_key);
        std::os::unix::fs::symlink("..2026_01", root.join("..data")).unwrap();
        for file in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{file}"), root.join(file)).unwrap();
        }
        let metrics = TlsReloadMetrics::default();
        let mut reloader = TlsReloader::new("metrics", metrics.clone());
        let served = reloader
            .certified_key(&root.join("tls.crt"), &root.join("tls.key"))
            .unwrap();

        // What the kubelet does: a new directory, a new symlink, renamed over
        // `..data` in one step.
        let (second, second_key, second_der) = leaf(&ca, 2031);
        write_version("..2026_02", &second, &second_key);
        std::os::unix::fs::symlink("..2026_02", root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        reloader.check_now();
        assert_eq!(leaf_der(&served), second_der);
        assert_eq!(metrics.reloads("metrics"), 1);
    }

    #[test]
    fn the_client_ca_bundle_follows_its_file_through_a_ca_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("ca.pem");
        let (old, new) = (ca("old CA"), ca("new CA"));
        let (_, _, old_client) = leaf(&old, 2030);
        let (_, _, new_client) = leaf(&new, 2030);
        std::fs::write(&bundle, &old.pem).unwrap();
        let metrics = TlsReloadMetrics::default();
        let mut reloader = TlsReloader::new("grpc_server", metrics.clone());
        let verifier = reloader
            .client_verifier(&bundle, ClientAuth::Required)
            .unwrap();
        let verifies = |der: &[u8]| {
            verifier
                .verify_client_cert(&CertificateDer::from(der.to_vec()), &[], UnixTime::now())
                .is_ok()
        };
        assert!(verifies(&old_client));
        assert!(!verifies(&new_client));

        // Step 1: both CAs trusted.
        std::fs::write(&bundle, format!("{}{}", old.pem, new.pem)).unwrap();
        reloader.check_now();
        assert!(verifies(&old_client) && verifies(&new_client));
        // A broken bundle changes nothing.
        std::fs::write(&bundle, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
        reloader.check_now();
        assert!(verifies(&old_client) && verifies(&new_client));
        assert_eq!(metrics.failures("grpc_server"), 1);
        // Step 3: the old CA dropped.
        std::fs::write(&bundle, &new.pem).unwrap();
        reloader.check_now();
        assert!(!verifies(&old_client));
        assert!(verifies(&new_client));
        assert_eq!(metrics.reloads("grpc_server"), 2);
        assert!(verifier.client_auth_mandatory());
    }

    #[test]
    fn a_file_that_does_not_load_at_startup_is_a_configuration_error() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, "garbage").unwrap();
        std::fs::write(&key, "garbage").unwrap();
        let mut reloader = TlsReloader::new("api", TlsReloadMetrics::default());
        let error = reloader.certified_key(&cert, &key).err().unwrap();
        assert!(error.to_string().contains("tls.crt"), "{error}");
        assert!(reloader.server_verifier(&cert).is_err());
        assert!(
            reloader
                .server_verifier(&dir.path().join("missing.pem"))
                .is_err()
        );
    }

    #[test]
    fn the_metrics_are_exported_under_the_names_the_alert_uses() {
        let metrics = crate::service::metrics::WitnessMetrics::new().unwrap();
        metrics
            .tls()
            .certificate_loaded("grpc_server", 1_900_000_000);
        metrics
            .tls()
            .update("grpc_server", |stats| stats.failures += 2);
        let text = metrics.render();
        assert!(
            text.contains(
                "tls_certificate_expiry_timestamp_seconds{endpoint=\"grpc_server\"} 1.9e+09"
            ) || text.contains(
                "tls_certificate_expiry_timestamp_seconds{endpoint=\"grpc_server\"} 1900000000"
            ),
            "{text}"
        );
        assert!(
            text.contains("tls_reload_failures_total{endpoint=\"grpc_server\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("tls_reloads_total{endpoint=\"grpc_server\"} 0"),
            "{text}"
        );
    }

    /// A client certificate from `ca` for `localhost`, valid until
    /// `not_after`: (certificate PEM, key PEM).
    fn client_until(ca: &Ca, not_after: std::time::SystemTime) -> (String, String) {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(1970, 1, 1)
            + not_after.duration_since(std::time::UNIX_EPOCH).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A listener served by [`incoming`] whose connections echo what they
    /// read, trusting the client CAs in the file `bundle`; its address.
    async fn echo_listener(
        reloader: &mut TlsReloader,
        dir: &Path,
        server_ca: &Ca,
        bundle: &Path,
    ) -> std::net::SocketAddr {
        let (cert, key, _) = leaf(server_ca, 2030);
        std::fs::write(dir.join("server.pem"), cert).unwrap();
        std::fs::write(dir.join("server.key"), key).unwrap();
        let verifier = reloader
            .client_verifier(bundle, ClientAuth::Required)
            .unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(reloader.provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(verifier.clone())
            .with_cert_resolver(
                reloader
                    .certified_key(&dir.join("server.pem"), &dir.join("server.key"))
                    .unwrap(),
            );
        no_resumption(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut connections = incoming(listener, TlsAcceptor::from(Arc::new(config)), verifier);
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            use tokio_stream::StreamExt as _;
            while let Some(Ok(mut connection)) = connections.next().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = connection.read(&mut buf).await {
                        if connection.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    /// A TLS connection to `addr` with the client certificate `client`
    /// (certificate and key PEM), trusting `server_ca`.
    async fn connect_as(
        addr: std::net::SocketAddr,
        server_ca: &Ca,
        client: &(String, String),
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(server_ca.pem.as_bytes()).unwrap())
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(client.0.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(client.1.as_bytes()).unwrap(),
            )
            .unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// Whether the connection still carries data: "ping" sent and echoed.
    async fn echoes(connection: &mut tokio_rustls::client::TlsStream<TcpStream>) -> bool {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let exchange = async {
            connection.write_all(b"ping").await?;
            let mut echoed = [0u8; 4];
            connection.read_exact(&mut echoed).await?;
            Ok::<_, io::Error>(echoed == *b"ping")
        };
        tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .unwrap()
            .unwrap_or(false)
    }

    #[tokio::test]
    async fn a_client_whose_ca_is_dropped_loses_the_connection_it_opened_before() {
        let dir = tempfile::tempdir().unwrap();
        let (server_ca, old, new) = (ca("server CA"), ca("old CA"), ca("new CA"));
        let bundle = dir.path().join("client-ca.pem");
        std::fs::write(&bundle, format!("{}{}", old.pem, new.pem)).unwrap();
        let year_3000 = std::time::UNIX_EPOCH + Duration::from_secs(32_503_680_000);
        let mut reloader = TlsReloader::new("grpc_server", TlsReloadMetrics::default());
        let addr = echo_listener(&mut reloader, dir.path(), &server_ca, &bundle).await;
        let mut revoked = connect_as(addr, &server_ca, &client_until(&old, year_3000)).await;
        let mut kept = connect_as(addr, &server_ca, &client_until(&new, year_3000)).await;
        assert!(echoes(&mut revoked).await && echoes(&mut kept).await);

        std::fs::write(&bundle, &new.pem).unwrap();
        reloader.check_now();
        assert!(
            !echoes(&mut revoked).await,
            "a connection of a client whose CA was dropped still carries data"
        );
        // A reload closes only the connections it no longer trusts.
        assert!(echoes(&mut kept).await);
    }

    #[tokio::test]
    async fn a_client_certificate_that_expires_ends_its_open_connection() {
        let dir = tempfile::tempdir().unwrap();
        let (server_ca, client_ca) = (ca("server CA"), ca("client CA"));
        let bundle = dir.path().join("client-ca.pem");
        std::fs::write(&bundle, &client_ca.pem).unwrap();
        let mut reloader = TlsReloader::new("grpc_server", TlsReloadMetrics::default());
        let addr = echo_listener(&mut reloader, dir.path(), &server_ca, &bundle).await;
        let expires = std::time::SystemTime::now() + Duration::from_secs(2);
        let mut connection = connect_as(addr, &server_ca, &client_until(&client_ca, expires)).await;
        assert!(echoes(&mut connection).await);
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(
            !echoes(&mut connection).await,
            "a connection still carries data after its client certificate expired"
        );
    }

    #[tokio::test]
    async fn a_grpc_client_connects_with_the_reloaded_certificate_and_trust() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let (old, new) = (ca("old CA"), ca("new CA"));
        let write_leaf = |ca: &Ca, prefix: &str| {
            let (cert, key, _) = leaf(ca, 2030);
            std::fs::write(path(&format!("{prefix}.pem")), cert).unwrap();
            std::fs::write(path(&format!("{prefix}.key")), key).unwrap();
        };
        write_leaf(&old, "server");
        write_leaf(&old, "client");
        std::fs::write(path("server-ca.pem"), &old.pem).unwrap();
        std::fs::write(path("client-ca.pem"), &old.pem).unwrap();

        let metrics = TlsReloadMetrics::default();
        let mut server = TlsReloader::new("grpc_server", metrics.clone());
        let server_config = rustls::ServerConfig::builder_with_provider(server.provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(
                server
                    .client_verifier(&path("client-ca.pem"), ClientAuth::Required)
                    .unwrap(),
            )
            .with_cert_resolver(
                server
                    .certified_key(&path("server.pem"), &path("server.key"))
                    .unwrap(),
            );
        let mut server_config = server_config;
        no_resumption(&mut server_config);
        let acceptor = TlsAcceptor::from(Arc::new(server_config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt as _;
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let _ = tls.write_all(b"hello").await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        let (_, mut connector) = grpc_client(
            "signer_client",
            &format!("https://{addr}"),
            Some("localhost"),
            ClientFiles {
                ca: &path("server-ca.pem"),
                cert: &path("client.pem"),
                key: &path("client.key"),
            },
            Duration::from_millis(50),
            metrics.clone(),
        )
        .unwrap();
        let handshake = |connector: &mut MutualTlsConnector| {
            let call = tower::Service::call(connector, "http://unused".parse().unwrap());
            async move {
                use tokio::io::AsyncReadExt as _;
                let mut tls = call.await?.into_inner();
                let mut hello = Vec::new();
                tls.read_to_end(&mut hello).await?;
                Ok::<_, io::Error>(hello)
            }
        };
        assert_eq!(handshake(&mut connector).await.unwrap(), b"hello");

        // The server moves to the new CA (trust first, then its leaf) while
        // the client still trusts only the old one: refused.
        std::fs::write(path("client-ca.pem"), format!("{}{}", old.pem, new.pem)).unwrap();
        server.check_now();
        write_leaf(&new, "server");
        server.check_now();
        assert_eq!(metrics.reloads("grpc_server"), 2);
        assert!(handshake(&mut connector).await.is_err());
        // The client's bundle gains the new CA: its watch picks it up.
        std::fs::write(path("server-ca.pem"), format!("{}{}", old.pem, new.pem)).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while metrics.reloads("signer_client") == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(handshake(&mut connector).await.unwrap(), b"hello");
    }
}
