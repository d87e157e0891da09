//! The tower layers in front of every gRPC service of the listener, outermost
//! first:
//!
//! 1. [`Authenticate`] answers `UNAUTHENTICATED`, with the reason, to a caller
//!    whose client certificate is missing or did not verify after the
//!    handshake (see [`crate::tls`]), and audits it. It is the outermost layer
//!    and wraps the whole router, so no service code runs for such a caller,
//!    not even tonic's decoding of its request, whatever the service
//!    (`Signer`, `grpc.health.v1`, any added later).
//! 2. [`AuditTooLarge`] audits the requests tonic refuses because their message
//!    is over the decoding limit ([`crate::limits::MAX_REQUEST_MESSAGE_SIZE`]).
//!    tonic refuses them inside the generated handler, before any code of the
//!    service, so the service cannot audit them itself; this layer sits outside
//!    the router to see the refusals of every service, and inside
//!    [`Authenticate`] so that it only ever sees authenticated callers.
//!
//! Allowlist checks (`PERMISSION_DENIED`) stay in the service: a verified
//! certificate with an identity that is not allowed is the service's decision,
//! audited with the operation's details.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::Either;
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::{Code, Status};

use crate::audit::{AuditEntry, AuditLog};
use crate::error::Error;
use crate::limits::MAX_REQUEST_MESSAGE_SIZE;
use crate::metrics::Metrics;
use crate::tls::PeerIdentity;

/// The audit and metrics name of each gRPC method this listener serves.
const OPERATIONS: &[(&str, &str)] = &[
    (
        "/rekorwitness.signer.v1.Signer/CosignCheckpoint",
        "cosign_checkpoint",
    ),
    (
        "/rekorwitness.signer.v1.Signer/CosignCheckpoints",
        "cosign_checkpoints",
    ),
    ("/rekorwitness.signer.v1.Signer/SignSubtree", "sign_subtree"),
    (
        "/rekorwitness.signer.v1.Signer/SignManifest",
        "sign_manifest",
    ),
    ("/rekorwitness.signer.v1.Signer/PublicKeys", "public_keys"),
    ("/rekorwitness.signer.v1.Signer/Metrics", "metrics"),
    ("/grpc.health.v1.Health/Check", "health_check"),
    ("/grpc.health.v1.Health/Watch", "health_watch"),
];

/// The operation a request path names, as a bounded label: the caller chooses
/// the path, so an unknown one is `unknown`, not echoed.
pub fn operation(path: &str) -> &'static str {
    OPERATIONS
        .iter()
        .find(|(known, _)| *known == path)
        .map_or("unknown", |(_, name)| name)
}

/// Builds [`Authenticate`] around the router.
#[derive(Clone)]
pub struct AuthenticateLayer {
    pub audit: Arc<AuditLog>,
    pub metrics: Arc<Metrics>,
}

impl<S> tower::Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate {
            inner,
            audit: self.audit.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// Refuses callers without a verified client certificate (see the module
/// documentation).
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    audit: Arc<AuditLog>,
    metrics: Arc<Metrics>,
}

impl<S, B> Service<http::Request<B>> for Authenticate<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<http::Response<Body>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let refusal = match request.extensions().get::<PeerIdentity>() {
            Some(peer) => match &peer.certificate {
                Ok(_) => return Either::Left(self.inner.call(request)),
                Err(refusal) => (refusal.clone(), peer.presented.join(",")),
            },
            // Every connection of the listener carries a verdict; a request
            // without one did not come through it and is refused the same way.
            None => (crate::tls::CertificateRefusal::NoCertificate, String::new()),
        };
        let (refusal, claimed) = refusal;
        let operation = operation(request.uri().path());
        let error = Error::Unauthenticated(refusal);
        self.audit.record(
            &AuditEntry {
                operation,
                claimed_caller: Some(claimed.as_str()).filter(|c| !c.is_empty()),
                ..AuditEntry::default()
            },
            Err(&error),
        );
        self.metrics.operation(operation, "none", Err(&error));
        Either::Right(ready(Ok(Status::from(error).into_http())))
    }
}

/// Builds [`AuditTooLarge`] around the router.
#[derive(Clone)]
pub struct AuditTooLargeLayer {
    pub audit: Arc<AuditLog>,
    pub metrics: Arc<Metrics>,
}

impl<S> tower::Layer<S> for AuditTooLargeLayer {
    type Service = AuditTooLarge<S>;

    fn layer(&self, inner: S) -> AuditTooLarge<S> {
        AuditTooLarge {
            inner,
            audit: self.audit.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// Audits requests tonic refused as too large (see the module documentation).
#[derive(Clone)]
pub struct AuditTooLarge<S> {
    inner: S,
    audit: Arc<AuditLog>,
    metrics: Arc<Metrics>,
}

/// Whether a response is tonic's refusal of an oversized request message:
/// `OUT_OF_RANGE` as a trailers-only response (or `RESOURCE_EXHAUSTED`, for a
/// compressed message that inflates past the limit). The service never
/// answers either code itself.
fn refused_as_too_large(response: &http::Response<Body>) -> bool {
    let Some(code) = response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
    else {
        return false;
    };
    matches!(
        Code::from_i32(code),
        Code::OutOfRange | Code::ResourceExhausted
    )
}

impl<S, B> Service<http::Request<B>> for AuditTooLarge<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let operation = operation(request.uri().path());
        // Inside `Authenticate`: the identities are verified.
        let caller = request
            .extensions()
            .get::<PeerIdentity>()
            .map(|peer| peer.presented.join(","))
            .filter(|identities| !identities.is_empty());
        let response = self.inner.call(request);
        let audit = self.audit.clone();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let response = response.await?;
            if refused_as_too_large(&response) {
                let error = Error::TooLarge {
                    limit: MAX_REQUEST_MESSAGE_SIZE,
                };
                audit.record(
                    &AuditEntry {
                        operation,
                        caller: caller.as_deref(),
                        ..AuditEntry::default()
                    },
                    Err(&error),
                );
                metrics.operation(operation, "none", Err(&error));
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_bounded_labels() {
        assert_eq!(
            operation("/rekorwitness.signer.v1.Signer/CosignCheckpoints"),
            "cosign_checkpoints"
        );
        assert_eq!(operation("/grpc.health.v1.Health/Check"), "health_check");
        assert_eq!(
            operation("/rekorwitness.signer.v1.Signer/SignBytes"),
            "unknown"
        );
        assert_eq!(operation(&"/x".repeat(1000)), "unknown");
    }

    #[test]
    fn only_trailers_only_size_refusals_count_as_too_large() {
        let response = |status: Status| status.into_http::<Body>();
        assert!(refused_as_too_large(&response(Status::out_of_range(
            "Error, decoded message length too large"
        ))));
        assert!(refused_as_too_large(&response(Status::resource_exhausted(
            "size limit exceeded while decompressing"
        ))));
        for error in [
            Error::BadField { reason: "x" },
            Error::PermissionDenied,
            Error::Rollback { size: 1, stored: 2 },
            Error::State("down".into()),
        ] {
            assert!(!refused_as_too_large(&response(Status::from(error))));
        }
        assert!(!refused_as_too_large(&http::Response::new(Body::empty())));
    }
}
