//! Mutual TLS for the gRPC listener: TLS 1.3 only, a client certificate
//! requested in every handshake, and the verdict on that certificate carried
//! with each request ([`PeerIdentity`]) so that the edge layer can refuse
//! unauthenticated callers and the service can check identities against the
//! allowlist and name them in the audit log.
//!
//! # Deferred chain verification
//!
//! The handshake requires TLS 1.3 and, when the client presents a certificate,
//! checks its proof of possession of the certificate's key (the TLS 1.3
//! `CertificateVerify` signature, verified by the same `WebPkiClientVerifier`
//! as before). It does not decide whether the certificate chain is acceptable:
//! [`DeferredClientCertVerifier`] lets a client without a certificate, or with
//! one that does not verify, complete the handshake. As soon as the handshake
//! is done, [`TlsConnection`] runs the inner verifier's chain check (same
//! roots, same key usage and validity rules) on the presented chain at the
//! current time and keeps the verdict, identities or reason, in the
//! connection's [`PeerIdentity`].
//!
//! Why: a refused handshake reaches the client as a transport error (an alert,
//! a reset connection), which tells the operator of a misconfigured caller
//! nothing. With the verdict carried to the gRPC layer, the caller gets
//! `UNAUTHENTICATED` with the reason (no certificate, unknown issuer, expired
//! on a given date) and the audit log one line per refused call.
//!
//! Why it is safe:
//! - The refusal is enforced by one tower layer in front of the whole tonic
//!   router (`edge::Authenticate`), so every service behind this listener
//!   (`Signer`, `grpc.health.v1`, any added later) is covered, and no service
//!   code runs for a caller without a verified certificate.
//! - Proof of possession is still checked in the handshake: nobody can present
//!   a certificate whose private key they do not hold, so identities taken from
//!   a verified chain belong to the peer.
//! - The chain check is the one the handshake used to do, with the same
//!   verifier; only its timing moved (to right after the handshake). A
//!   connection whose chain verified is watched after that
//!   ([`ClientTrustWatch`]): when the client CA bundle is reloaded, or the
//!   certificate expires, the chain is verified again, and the connection is
//!   closed if it no longer verifies.
//! - An unauthenticated peer learns only that this is a gRPC server and why its
//!   certificate was refused; the handshake timeout and HTTP/2 limits bound what
//!   it can hold open, as they bound handshakes before.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, UNIX_EPOCH};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use witness_core::tls_reload::{
    ClientAuth, ClientTrustWatch, ReloadTask, ReloadingClientVerifier, TlsReloadMetrics,
    TlsReloader, TrustWatched,
};

use crate::audit::AuditLog;
use crate::config::TlsConfig;
use crate::error::{Error, Result};

/// How long a client may take to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks every client for a certificate and checks its proof of possession in
/// the handshake, delegating the signature checks to the wrapped verifier, but
/// accepts any chain there: the chain is verified right after the handshake
/// (see the module documentation).
#[derive(Debug)]
struct DeferredClientCertVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for DeferredClientCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    /// A client without a certificate completes the handshake, so that it gets
    /// a gRPC answer saying what is missing.
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    /// Records nothing and accepts: [`TlsConnection::new`] verifies the chain.
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    /// The client's proof of possession of its certificate's key.
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The listener's TLS: the rustls configuration, the client certificate
/// verifier whose chain check runs after each handshake, and the task that
/// reloads the certificate and the client CA when their files change.
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    client_verifier: Arc<ReloadingClientVerifier>,
    _reload: ReloadTask,
}

/// Builds the server's TLS from its configuration: the certificate, its key
/// and the client CA are read now (a failure is a configuration error) and
/// again every `reload_interval`, see [`witness_core::tls_reload`].
pub fn server_config(tls: &TlsConfig, metrics: TlsReloadMetrics) -> Result<ServerTls> {
    crate::keys::file::check_private_file_mode(&tls.key)?;
    let config_error = |e: witness_core::Error| Error::Config(e.to_string());
    let mut reloader = TlsReloader::new("grpc_server", metrics);
    let certificate = reloader
        .certified_key(&tls.cert, &tls.key)
        .map_err(config_error)?;
    let client_verifier = reloader
        .client_verifier(&tls.client_ca, ClientAuth::Required)
        .map_err(config_error)?;
    let deferred = Arc::new(DeferredClientCertVerifier {
        inner: client_verifier.clone(),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(reloader.provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Config(e.to_string()))?
        .with_client_cert_verifier(deferred)
        .with_cert_resolver(certificate);
    // gRPC runs over HTTP/2 only.
    config.alpn_protocols = vec![b"h2".to_vec()];
    witness_core::tls_reload::no_resumption(&mut config);
    Ok(ServerTls {
        config: Arc::new(config),
        client_verifier,
        _reload: reloader.spawn(tls.reload_interval),
    })
}

/// The identities a certificate carries in its subject alternative names, as
/// `uri:<URI>` and `dns:<name>`.
pub fn identities(cert: &[u8]) -> Vec<String> {
    witness_core::peer_identity::certificate_identities(cert)
}

/// Why a client certificate was refused after the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertificateRefusal {
    /// The client presented no certificate.
    NoCertificate,
    /// The chain does not lead to the configured client CA.
    UnknownIssuer,
    /// The certificate's validity ended (`not_after` in Unix seconds, when known).
    Expired { not_after: Option<u64> },
    /// The certificate's validity has not begun (`not_before`, when known).
    NotYetValid { not_before: Option<u64> },
    /// The certificate is not valid for TLS client authentication (its
    /// extended key usage).
    WrongPurpose,
    /// Any other reason, as the verifier describes it.
    Invalid(String),
}

impl CertificateRefusal {
    fn from_verifier(error: rustls::Error) -> CertificateRefusal {
        use rustls::CertificateError as Certificate;
        match error {
            rustls::Error::InvalidCertificate(reason) => match reason {
                Certificate::UnknownIssuer => CertificateRefusal::UnknownIssuer,
                Certificate::Expired => CertificateRefusal::Expired { not_after: None },
                Certificate::ExpiredContext { not_after, .. } => CertificateRefusal::Expired {
                    not_after: Some(not_after.as_secs()),
                },
                Certificate::NotValidYet => CertificateRefusal::NotYetValid { not_before: None },
                Certificate::NotValidYetContext { not_before, .. } => {
                    CertificateRefusal::NotYetValid {
                        not_before: Some(not_before.as_secs()),
                    }
                }
                Certificate::InvalidPurpose | Certificate::InvalidPurposeContext { .. } => {
                    CertificateRefusal::WrongPurpose
                }
                other => CertificateRefusal::Invalid(format!("invalid certificate: {other}")),
            },
            other => CertificateRefusal::Invalid(other.to_string()),
        }
    }
}

fn rfc3339(unix_seconds: u64) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix_seconds))
}

impl std::fmt::Display for CertificateRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertificateRefusal::NoCertificate => f.write_str("no client certificate was presented"),
            CertificateRefusal::UnknownIssuer => f.write_str(
                "unknown issuer: the certificate does not chain to the configured client CA",
            ),
            CertificateRefusal::Expired {
                not_after: Some(not_after),
            } => write!(
                f,
                "expired: the certificate is not valid after {}",
                rfc3339(*not_after)
            ),
            CertificateRefusal::Expired { not_after: None } => {
                f.write_str("expired: the certificate is no longer valid")
            }
            CertificateRefusal::NotYetValid {
                not_before: Some(not_before),
            } => write!(
                f,
                "not yet valid: the certificate is not valid before {}",
                rfc3339(*not_before)
            ),
            CertificateRefusal::NotYetValid { not_before: None } => {
                f.write_str("not yet valid: the certificate's validity has not begun")
            }
            CertificateRefusal::WrongPurpose => f.write_str(
                "wrong purpose: the certificate is not valid for TLS client authentication",
            ),
            CertificateRefusal::Invalid(reason) => f.write_str(reason),
        }
    }
}

/// What the edge layer and the service learn about the caller of a connection.
#[derive(Clone, Debug)]
pub struct PeerIdentity {
    /// The verdict on the client certificate, reached right after the
    /// handshake: its identities if its chain verified, or why it did not.
    pub certificate: std::result::Result<Vec<String>, CertificateRefusal>,
    /// The identities the certificate claims, verified or not: for the audit
    /// log of refused callers only.
    pub presented: Vec<String>,
}

impl PeerIdentity {
    /// The peer of a connection whose certificate verified with `identities`.
    pub fn verified(identities: Vec<String>) -> PeerIdentity {
        PeerIdentity {
            presented: identities.clone(),
            certificate: Ok(identities),
        }
    }
}

/// A server-side TLS connection that tells tonic who the peer is, and fails
/// once a certificate that verified no longer does.
pub struct TlsConnection {
    stream: TrustWatched<TcpStream>,
    peer: PeerIdentity,
}

impl TlsConnection {
    /// Verifies the chain the client presented in the handshake, now, with the
    /// verifier the handshake deferred to (see the module documentation).
    fn new(stream: TlsStream<TcpStream>, verifier: &Arc<ReloadingClientVerifier>) -> TlsConnection {
        let (_, session) = stream.get_ref();
        let chain = session.peer_certificates().unwrap_or_default();
        let peer = match chain {
            [end_entity, intermediates @ ..] => {
                let presented = identities(end_entity);
                let certificate = verifier
                    .verify_client_cert(end_entity, intermediates, UnixTime::now())
                    .map(|_| presented.clone())
                    .map_err(CertificateRefusal::from_verifier);
                PeerIdentity {
                    certificate,
                    presented,
                }
            }
            _ => PeerIdentity {
                certificate: Err(CertificateRefusal::NoCertificate),
                presented: Vec::new(),
            },
        };
        // A refused certificate stays refused for the connection's life:
        // only a verified one is watched.
        let trust = match peer.certificate {
            Ok(_) => ClientTrustWatch::new("grpc_server", verifier.clone(), chain),
            Err(_) => None,
        };
        TlsConnection {
            stream: TrustWatched::new(stream, trust),
            peer,
        }
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = PeerIdentity;

    fn connect_info(&self) -> PeerIdentity {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Accepts TCP connections, runs each TLS handshake and the client certificate
/// check after it in its own task (so a slow client cannot stall the others),
/// audits failed handshakes, and yields the established connections.
pub fn incoming(
    listener: TcpListener,
    tls: ServerTls,
    audit: Arc<AuditLog>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConnection>> {
    let ServerTls {
        config,
        client_verifier: verifier,
        _reload: reload,
    } = tls;
    let acceptor = TlsAcceptor::from(config);
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        // The files are watched for as long as connections are accepted.
        let _reload = reload;
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
            // Responses go out in several writes (headers, message, trailers)
            // and large requests in several segments; with Nagle's algorithm
            // the last piece waits for the peer's delayed ACK (~40 ms).
            if let Err(error) = stream.set_nodelay(true) {
                tracing::warn!(%error, "cannot set TCP_NODELAY");
            }
            let acceptor = acceptor.clone();
            let verifier = verifier.clone();
            let connections = sender.clone();
            let audit = audit.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let connection = TlsConnection::new(tls, &verifier);
                        let _ = connections.send(Ok(connection)).await;
                    }
                    Ok(Err(error)) => audit.handshake_refused(&error.to_string()),
                    Err(_) => audit.handshake_refused("handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}
