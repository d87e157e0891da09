//! The separate metrics listener: plain HTTP on loopback, or HTTPS (TLS 1.3,
//! rustls on aws-lc-rs) that can require client certificates.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::MetricsConfig;
use crate::GatewayError;

/// How long a client may take to complete the TLS handshake: a stalled
/// handshake holds a slot, not the accept loop.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once. A scraper opens one connection and keeps it
/// alive; more than this many half-open connections is an attack, and further
/// connections wait in the kernel's backlog.
const MAX_PENDING_HANDSHAKES: usize = 64;

/// A bound metrics listener, plain or TLS.
pub(super) enum MetricsServer {
    Plain(TcpListener),
    Tls(TcpListener, TlsAcceptor),
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
) -> Result<MetricsServer, GatewayError> {
    let acceptor = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => Some(acceptor(cert, key, config.client_ca.as_deref())?),
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
        Some(acceptor) => MetricsServer::Tls(tcp, acceptor),
        None => MetricsServer::Plain(tcp),
    })
}

fn read_pem_file<T>(
    path: &Path,
    what: &str,
    read: impl FnOnce(&Path) -> Result<T, rustls::pki_types::pem::Error>,
) -> Result<T, GatewayError> {
    read(path).map_err(|e| config_error(format!("{what} {}: {e}", path.display())))
}

fn acceptor(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<TlsAcceptor, GatewayError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = read_pem_file(cert, "cert", |p| {
        CertificateDer::pem_file_iter(p)?.collect::<Result<Vec<_>, _>>()
    })?;
    let key = read_pem_file(key, "key", |p| PrivateKeyDer::from_pem_file(p))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| config_error(e.to_string()))?;
    let builder = match client_ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in read_pem_file(path, "client_ca", |p| {
                CertificateDer::pem_file_iter(p)?.collect::<Result<Vec<_>, _>>()
            })? {
                roots
                    .add(ca)
                    .map_err(|e| config_error(format!("client_ca {}: {e}", path.display())))?;
            }
            // Without `allow_unauthenticated`: no certificate, no connection.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| config_error(format!("client_ca {}: {e}", path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut server = builder
        .with_single_cert(chain, key)
        .map_err(|e| config_error(format!("cert and key: {e}")))?;
    // Scrapers speak HTTP/1.1; offering only it keeps the listener's
    // behaviour independent of the HTTP/2 support compiled into axum.
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
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
            MetricsServer::Tls(tcp, acceptor) => {
                let local = tcp.local_addr()?;
                let (accepted, handshaken) = mpsc::channel(MAX_PENDING_HANDSHAKES);
                tokio::spawn(accept_loop(tcp, acceptor, accepted));
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
    accepted: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
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
        let accepted = accepted.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
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
    handshaken: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
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
        let error = bind(config.listen.unwrap(), &config).await.err().unwrap();
        assert!(
            error.to_string().contains("client_ca needs cert and key"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn plain_http_metrics_are_refused_off_loopback() {
        let config = section("listen = \"0.0.0.0:0\"\n");
        let error = bind(config.listen.unwrap(), &config).await.err().unwrap();
        assert!(error.to_string().contains("loopback only"), "{error}");
        let config = section("listen = \"127.0.0.1:0\"\n");
        assert!(bind(config.listen.unwrap(), &config).await.is_ok());
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
