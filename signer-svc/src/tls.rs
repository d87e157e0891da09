//! Mutual TLS for the gRPC listener: TLS 1.3 only, a client certificate that
//! chains to the configured CA is required by the handshake, and the caller's
//! identities (subject alternative names) travel with each request so the
//! service can check them against the allowlist and name them in the audit log.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use crate::audit::AuditLog;
use crate::config::TlsConfig;
use crate::error::{Error, Result};

/// How long a client may take to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds the server's rustls configuration.
pub fn server_config(tls: &TlsConfig) -> Result<rustls::ServerConfig> {
    let certs = read_certs(&tls.cert)?;
    crate::keys::file::check_private_file_mode(&tls.key)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| Error::Config(format!("{}: {e}", tls.key.display())))?;
    let mut roots = RootCertStore::empty();
    for ca in read_certs(&tls.client_ca)? {
        roots
            .add(ca)
            .map_err(|e| Error::Config(format!("{}: {e}", tls.client_ca.display())))?;
    }
    let provider = crypto_provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::Config(format!("client CA: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| Error::Config(format!("server certificate: {e}")))?;
    // gRPC runs over HTTP/2 only.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Config(format!("{}: no certificate", path.display())));
    }
    Ok(certs)
}

/// The identities a certificate carries in its subject alternative names, as
/// `uri:<URI>` and `dns:<name>`.
pub fn identities(cert: &[u8]) -> Vec<String> {
    use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(cert) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(format!("uri:{uri}")),
            GeneralName::DNSName(dns) => Some(format!("dns:{dns}")),
            _ => None,
        })
        .collect()
}

/// What the service learns about the caller of a connection.
#[derive(Clone, Debug, Default)]
pub struct PeerIdentity {
    /// The client certificate's identities (verified to chain to the CA).
    pub identities: Vec<String>,
}

/// A server-side TLS connection that tells tonic who the peer is.
pub struct TlsConnection(TlsStream<TcpStream>);

impl Connected for TlsConnection {
    type ConnectInfo = PeerIdentity;

    fn connect_info(&self) -> PeerIdentity {
        let (_, session) = self.0.get_ref();
        let identities = session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|cert| identities(cert))
            .unwrap_or_default();
        PeerIdentity { identities }
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// Accepts TCP connections, runs each TLS handshake in its own task (so a slow
/// client cannot stall the others), audits failed handshakes, and yields the
/// established connections.
pub fn incoming(
    listener: TcpListener,
    config: rustls::ServerConfig,
    audit: Arc<AuditLog>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConnection>> {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                // The server has stopped taking connections: let go of the
                // listener now rather than at the next connection attempt.
                () = sender.closed() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, _) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let connections = sender.clone();
            let audit = audit.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = connections.send(Ok(TlsConnection(tls))).await;
                    }
                    Ok(Err(error)) => audit.handshake_refused(&error.to_string()),
                    Err(_) => audit.handshake_refused("handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}
