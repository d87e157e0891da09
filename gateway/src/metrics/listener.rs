//! The separate metrics listener: plain HTTP on loopback, or HTTPS (TLS 1.3,
//! rustls on aws-lc-rs) that can require client certificates. Its
//! certificate, key and client CA are read again every
//! `tls_reload_interval` (see [`witness_core::tls_reload`]).

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use witness_core::tls_reload::{
    ClientAuth, ReloadTask, ReloadingClientVerifier, TlsReloadMetrics, TlsReloader, TrustWatched,
};

use super::MetricsConfig;
use crate::GatewayError;

/// How long a client may take to complete the TLS handshake: a stalled
/// handshake holds a slot, not the accept loop.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once. A scraper opens one connection and keeps it
/// alive; more than this many half-open connections is an attack, and further
/// connections wait in the kernel's backlog.
const MAX_PENDING_HANDSHAKES: usize = 64;

type ClientVerifier = Arc<ReloadingClientVerifier>;

/// A bound metrics listener, plain or TLS.
pub(super) enum MetricsServer {
    Plain(TcpListener),
    /// With the client verifier when client certificates are required: an
    /// open connection whose certificate stops verifying is closed.
    Tls(TcpListener, TlsAcceptor, Option<ClientVerifier>, ReloadTask),
}

fn config_error(detail: String) -> GatewayError {
    GatewayError::Config {
        detail: format!("[metrics] {detail}"),
    }
}

/// Checks the section, loads the TLS files and binds the address.
pub(super) async fn bind(
    listen: SocketAddr,
    config: &MetricsConfig,
    metrics: TlsReloadMetrics,
    reload_interval: Duration,
) -> Result<MetricsServer, GatewayError> {
    let acceptor = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => Some(acceptor(
            cert,
            key,
            config.client_ca.as_deref(),
            metrics,
            reload_interval,
        )?),
        (None, None) if config.client_ca.is_some() => {
            return Err(config_error(
                "client_ca needs cert and key: client certificates are checked over TLS".into(),
            ));
        }
        (None, None) if !listen.ip().is_loopback() => {
            return Err(config_error(format!(
                "plain HTTP on {} is allowed on loopback only; set cert and key",
                listen
            )));
        }
        (None, None) => None,
        _ => return Err(config_error("cert and key go together".into())),
    };
    let tcp = TcpListener::bind(listen)
        .await
        .map_err(|e| GatewayError::Serve {
            detail: format!("binding the metrics listener {listen}: {e}"),
        })?;
    Ok(match acceptor {
        Some((acceptor, verifier, reload)) => MetricsServer::Tls(tcp, acceptor, verifier, reload),
        None => MetricsServer::Plain(tcp),
    })
}

fn acceptor(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    metrics: TlsReloadMetrics,
    reload_interval: Duration,
) -> Result<(TlsAcceptor, Option<ClientVerifier>, ReloadTask), GatewayError> {
    let mut reloader = TlsReloader::new("metrics", metrics);
    let certificate = reloader
        .certified_key(cert, key)
        .map_err(|e| config_error(format!("cert and key: {e}")))?;
    let builder = ServerConfig::builder_with_provider(reloader.provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| config_error(e.to_string()))?;
    let verifier = match client_ca {
        // Required: no certificate, no connection.
        Some(path) => Some(
            reloader
                .client_verifier(path, ClientAuth::Required)
                .map_err(|e| config_error(format!("client_ca: {e}")))?,
        ),
        None => None,
    };
    let builder = match &verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier.clone()),
        None => builder.with_no_client_auth(),
    };
    let mut server = builder.with_cert_resolver(certificate);
    // Scrapers speak HTTP/1.1; offering only it keeps the listener's
    // behaviour independent of the HTTP/2 support compiled into axum.
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    if client_ca.is_some() {
        witness_core::tls_reload::no_resumption(&mut server);
    }
    Ok((
        TlsAcceptor::from(Arc::new(server)),
        verifier,
        reloader.spawn(reload_interval),
    ))
}

impl MetricsServer {
    /// Serves `app` until `shutdown`, then drains in-flight scrapes.
    pub(super) async fn serve(
        self,
        app: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        match self {
            MetricsServer::Plain(tcp) => {
                axum::serve(tcp, app).with_graceful_shutdown(shutdown).await
            }
            MetricsServer::Tls(tcp, acceptor, verifier, _reload) => {
                let local = tcp.local_addr()?;
                let (accepted, handshaken) = mpsc::channel(MAX_PENDING_HANDSHAKES);
                tokio::spawn(accept_loop(tcp, acceptor, verifier, accepted));
                axum::serve(TlsListener { handshaken, local }, app)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        }
    }
}

/// Accepts TCP connections and completes their handshakes concurrently,
/// handing established TLS streams to the server; stops when the server drops
/// its end.
async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    verifier: Option<ClientVerifier>,
    accepted: mpsc::Sender<(TrustWatched<TcpStream>, SocketAddr)>,
) {
    let slots = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let connection = tokio::select! {
            () = accepted.closed() => return,
            connection = tcp.accept() => connection,
        };
        let (stream, peer) = match connection {
            Ok(connection) => connection,
            Err(error) => {
                // Out of file descriptors and the like: back off, keep going.
                tracing::warn!(%error, "metrics listener accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let acceptor = acceptor.clone();
        let verifier = verifier.clone();
        let accepted = accepted.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let tls = match &verifier {
                        Some(verifier) => TrustWatched::watching("metrics", tls, verifier),
                        None => TrustWatched::new(tls, None),
                    };
                    let _ = accepted.send((tls, peer)).await;
                }
                // A client without an acceptable certificate ends here.
                Ok(Err(error)) => tracing::info!(%error, "metrics TLS handshake refused"),
                Err(_) => tracing::info!("metrics TLS handshake timed out"),
            }
        });
    }
}

/// The established TLS connections, as axum's listener.
struct TlsListener {
    handshaken: mpsc::Receiver<(TrustWatched<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TrustWatched<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(connection) => connection,
            // The accept loop only ends after this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn section(text: &str) -> MetricsConfig {
        toml::from_str(text).unwrap()
    }

    #[tokio::test]
    async fn client_certificates_cannot_be_required_over_plain_http() {
        let config = section("listen = \"127.0.0.1:0\"\nclient_ca = \"/ca.pem\"\n");
        let error = bind(
            config.listen.unwrap(),
            &config,
            TlsReloadMetrics::default(),
            Duration::from_secs(10),
        )
        .await
        .err()
        .unwrap();
        assert!(
            error.to_string().contains("client_ca needs cert and key"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn plain_http_metrics_are_refused_off_loopback() {
        let config = section("listen = \"0.0.0.0:0\"\n");
        let error = bind(
            config.listen.unwrap(),
            &config,
            TlsReloadMetrics::default(),
            Duration::from_secs(10),
        )
        .await
        .err()
        .unwrap();
        assert!(error.to_string().contains("loopback only"), "{error}");
        let config = section("listen = \"127.0.0.1:0\"\n");
        assert!(
            bind(
                config.listen.unwrap(),
                &config,
                TlsReloadMetrics::default(),
                Duration::from_secs(10)
            )
            .await
            .is_ok()
        );
    }

    #[test]
    fn the_section_is_read_strictly() {
        let config = section(
            "otlp_endpoint = \"http://127.0.0.1:4318/v1/metrics\"\notlp_interval = \"15s\"\n",
        );
        assert_eq!(config.otlp_interval, Duration::from_secs(15));
        assert_eq!(config.listen, None);
        assert!(toml::from_str::<MetricsConfig>("listen_addr = \"127.0.0.1:1\"\n").is_err());
    }
}
