//! TLS and serving: the API listener (HTTPS with a certificate reloaded on
//! change, or plain HTTP on loopback), its accept loop with graceful shutdown,
//! and the mutual-TLS gRPC channels to the witness and the signer.
//!
//! When the admin API accepts client certificates (`[admin] client_ca`), the
//! API listener asks every client for one but requires none: a client without
//! a certificate is served as before, a certificate that does not verify
//! against `client_ca` fails the handshake, and the identities of a verified
//! one travel with each request of the connection as `PeerIdentities`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::{Channel, Endpoint};
use witness_core::tls_reload::{
    self, ClientAuth, ClientFiles, ReloadTask, ReloadingClientVerifier, TlsReloadMetrics,
    TlsReloader, TrustWatched,
};

use crate::GatewayError;
use crate::config::Upstream;
use crate::protect::Limits;

/// The API listener's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (mode 0600 or stricter; a looser mode is logged).
    pub key: PathBuf,
    /// How often both files are read again (default `5s`); a changed, valid
    /// pair replaces the served certificate for new connections, without a
    /// restart. A changed pair that does not load (a half-written file, a key
    /// that does not match) is logged, counted in `tls_reload_failures_total`
    /// and the previous certificate kept. `[admin] client_ca` is reloaded
    /// the same way.
    #[serde(
        default = "default_reload_interval",
        deserialize_with = "crate::config::duration"
    )]
    pub reload_interval: Duration,
}

impl ServerTls {
    /// The certificate and key at these paths, checked every five seconds.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> ServerTls {
        ServerTls {
            cert: cert.into(),
            key: key.into(),
            reload_interval: default_reload_interval(),
        }
    }
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(5)
}

fn tls_error(path: &Path, detail: &str) -> GatewayError {
    GatewayError::Config {
        detail: format!("TLS {}: {detail}", path.display()),
    }
}

/// The identities of the verified client certificate of a connection, from
/// its subject alternative names: `uri:<URI>` and `dns:<name>`, the forms of
/// `[admin] allowed_client_identities`. Inserted into the extensions of each
/// request of a connection whose client presented a certificate that
/// verified in the handshake (and only then).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PeerIdentities(pub(crate) Vec<String>);

impl PeerIdentities {
    /// The identities of the connection's verified client certificate, if
    /// the client presented one (the handshake refuses one that does not
    /// verify, so a presented certificate here is a verified one).
    fn of<IO>(stream: &TlsStream<IO>) -> Option<PeerIdentities> {
        let (_, session) = stream.get_ref();
        let end_entity = session.peer_certificates()?.first()?;
        Some(PeerIdentities(certificate_identities(end_entity)))
    }
}

use witness_core::peer_identity::certificate_identities;

/// The API listener's TLS acceptor, and the task that reloads its certificate
/// and client CA (stopped when this is dropped).
pub(crate) struct ServingTls {
    acceptor: TlsAcceptor,
    /// The admin client CA's verifier, with `[admin] client_ca`: an open
    /// connection whose client certificate stops verifying is closed.
    client_verifier: Option<Arc<ReloadingClientVerifier>>,
    _reload: ReloadTask,
}

impl ServingTls {
    /// Loads the certificate (a failure here is a configuration error) and
    /// starts watching its files (see [`witness_core::tls_reload`]). With
    /// `client_ca`, client certificates chaining to it are asked for, not
    /// required: a client without one is served as before, and one that
    /// presents a certificate that does not verify (another CA, expired, not
    /// for client authentication) fails the handshake, so a misconfigured
    /// administrator learns it at once.
    pub(crate) async fn start(
        tls: &ServerTls,
        client_ca: Option<&Path>,
        metrics: TlsReloadMetrics,
    ) -> Result<ServingTls, GatewayError> {
        warn_if_key_is_readable_by_others(&tls.key);
        let mut reloader = TlsReloader::new("api", metrics);
        let certificate = reloader
            .certified_key(&tls.cert, &tls.key)
            .map_err(|e| tls_error(&tls.cert, &e.to_string()))?;
        let builder = rustls::ServerConfig::builder_with_provider(reloader.provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| tls_error(&tls.cert, &e.to_string()))?;
        let client_verifier = match client_ca {
            Some(path) => Some(
                reloader
                    .client_verifier(path, ClientAuth::Optional)
                    .map_err(|e| tls_error(path, &e.to_string()))?,
            ),
            None => None,
        };
        let builder = match &client_verifier {
            Some(verifier) => builder.with_client_cert_verifier(verifier.clone()),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(certificate);
        // h2 first: clients that speak it get one multiplexed connection.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        if client_ca.is_some() {
            // Administrators are checked against the client CA as it is now.
            tls_reload::no_resumption(&mut config);
        }
        Ok(ServingTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            client_verifier,
            _reload: reloader.spawn(tls.reload_interval),
        })
    }
}

fn warn_if_key_is_readable_by_others(path: &Path) {
    use std::os::unix::fs::MetadataExt as _;
    if let Ok(metadata) = std::fs::metadata(path)
        && let Some(problem) =
            witness_core::secret_file::secret_file_mode_problem(metadata.mode(), metadata.uid())
    {
        tracing::warn!(key = %path.display(), %problem, "TLS private key is readable by others than its owner");
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown`
/// completes, then lets in-flight requests finish for up to
/// `limits.drain_timeout`.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<ServingTls>,
    limits: &Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let local: SocketAddr = listener.local_addr().map_err(|e| GatewayError::Serve {
        detail: e.to_string(),
    })?;
    if tls.is_none() && !local.ip().is_loopback() {
        return Err(GatewayError::Config {
            detail: format!("plain HTTP on {local}: allowed on loopback only; configure [tls]"),
        });
    }
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Slowloris: a request head must arrive within the handshake deadline.
        .header_read_timeout(limits.handshake_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        // Finds dead HTTP/2 peers, whose connections would otherwise hold a
        // slot of `max_connections` forever.
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let acceptor = tls.as_ref().map(|tls| tls.acceptor.clone());
    let client_verifier = tls.as_ref().and_then(|tls| tls.client_verifier.clone());
    tracing::info!(%local, tls = acceptor.is_some(), "API listener serving");
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        // Client addresses are personal data: never logged.
        let (stream, _peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!("connection limit reached; connection closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        let client_verifier = client_verifier.clone();
        let handshake_timeout = limits.handshake_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            match acceptor {
                None => serve_connection(stream, app, None, &builder, watcher).await,
                // A failed or stalled handshake ends this task, never the loop.
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let peer = PeerIdentities::of(&stream);
                            let stream = match &client_verifier {
                                Some(verifier) => TrustWatched::watching("api", stream, verifier),
                                None => TrustWatched::new(stream, None),
                            };
                            serve_connection(stream, app, peer, &builder, watcher).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    match tokio::time::timeout(limits.drain_timeout, graceful.shutdown()).await {
        Ok(()) => tracing::info!("drained"),
        Err(_) => tracing::warn!("drain deadline passed; remaining connections closed"),
    }
    drop(tls);
    Ok(())
}

/// Serves one connection; every request carries the client certificate's
/// identities when there is one. They are set here, by the server, on each
/// request: a client cannot supply them in any other way.
async fn serve_connection<I>(
    io: I,
    app: Router,
    peer: Option<PeerIdentities>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let app = tower::util::MapRequest::new(app, move |mut request: Request<_>| {
        if let Some(peer) = &peer {
            request.extensions_mut().insert(peer.clone());
        }
        request
    });
    let connection = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// A lazily connected channel to `upstream`: the gateway starts (and answers
/// 503) while the service is down, instead of failing at startup or
/// crash-looping with it. `https://` endpoints use mutual TLS (TLS 1.3 with
/// the gateway's client certificate); `http://` is allowed to loopback only.
///
/// The TLS files are read again every `reload_interval` for as long as the
/// channel lives (see [`witness_core::tls_reload`]); `name` labels them in
/// the metrics.
pub(crate) fn upstream_channel(
    upstream: &Upstream,
    name: &'static str,
    reload_interval: Duration,
    metrics: &TlsReloadMetrics,
) -> Result<Channel, GatewayError> {
    let config_error = |detail: String| GatewayError::Config {
        detail: format!("endpoint {:?}: {detail}", upstream.endpoint),
    };
    let endpoint = Endpoint::from_shared(upstream.endpoint.clone())
        .map_err(|e| config_error(e.to_string()))?;
    let uri = endpoint.uri().clone();
    let configure = |endpoint: Endpoint| {
        endpoint
            .connect_timeout(upstream.timeout.min(Duration::from_secs(5)))
            .timeout(upstream.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
    };
    match uri.scheme_str() {
        Some("https") => {
            let (Some(ca), Some(cert), Some(key)) =
                (&upstream.ca, &upstream.client_cert, &upstream.client_key)
            else {
                return Err(config_error(
                    "https needs `ca`, `client_cert` and `client_key` (mutual TLS)".into(),
                ));
            };
            let (endpoint, connector) = tls_reload::grpc_client(
                name,
                &upstream.endpoint,
                upstream.server_name.as_deref(),
                ClientFiles { ca, cert, key },
                reload_interval,
                metrics.clone(),
            )
            .map_err(|e| config_error(e.to_string()))?;
            Ok(configure(endpoint).connect_with_connector_lazy(connector))
        }
        Some("http") => {
            let loopback = matches!(uri.host(), Some("localhost"))
                || uri
                    .host()
                    .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
                    .and_then(|h| h.parse::<std::net::IpAddr>().ok())
                    .is_some_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(config_error(
                    "plaintext is allowed to loopback only; use https with mutual TLS".into(),
                ));
            }
            Ok(configure(endpoint).connect_lazy())
        }
        _ => Err(config_error("the scheme must be https or http".into())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn identities_are_the_uri_and_dns_subject_alternative_names_only() {
        let mut params = rcgen::CertificateParams::new(vec!["admin.example".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::URI("spiffe://w/admin".try_into().unwrap()));
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        params.subject_alt_names.push(rcgen::SanType::Rfc822Name(
            "dns:x@example.com".try_into().unwrap(),
        ));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "uri:spiffe://w/common-name");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            certificate_identities(cert.der()),
            vec!["dns:admin.example", "uri:spiffe://w/admin"]
        );
        assert!(certificate_identities(b"not a certificate").is_empty());
    }

    #[test]
    fn a_client_ca_file_without_a_certificate_is_a_configuration_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "no PEM here\n").unwrap();
        let mut reloader = TlsReloader::new("api", TlsReloadMetrics::default());
        let error = reloader
            .client_verifier(&path, ClientAuth::Optional)
            .err()
            .unwrap();
        assert!(error.to_string().contains("no certificate"), "{error}");
        let missing = dir.path().join("missing.pem");
        assert!(
            reloader
                .client_verifier(&missing, ClientAuth::Optional)
                .is_err()
        );
    }
}
