//! The gateway's status surface: `GET /logs` (JSON) and the HTML status page
//! (`GET /` and `GET /status`) with the same facts, `POST /verify-inclusion`
//! (the witness's split-view check of a Sigstore bundle), and the probes
//! `GET /healthz` (the process is up) and `GET /readyz` (the witness answers,
//! its state store commits a write and its signer answers).
//!
//! The witness's answers are turned into [`LogStatus`] values once, here; the
//! JSON and the page are two renderings of the same values. Both the log list
//! and the readiness verdict are cached for a moment, single-flight, so that
//! no request rate on these endpoints turns into more than one witness call
//! (a database write, for readiness) per interval.

mod page;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Serialize;
use witness_core::note::VerifierKey;
use witness_proto::witness as pb;

use crate::monitoring::origin_hash;
use crate::{Gateway, GatewayConfig, GatewayError};

/// The largest `POST /verify-inclusion` body. Real bundles are small: those in
/// the shared test data (Rekor v1 prod and staging, Rekor v2 prod and staging)
/// are 4.5 to 11.3 KB, of which the transparency-log entries are 1.7 to 6.6 KB;
/// the rest is the certificate and the signature or DSSE envelope. The
/// envelope is what can grow: the public Rekor instance caps attestations at
/// 100 KB, which a bundle carries base64-encoded (about 134 KB), plus the ~10
/// KB around it. 256 KiB accepts that with room, and bounds what one request
/// makes the gateway and the witness parse at 1/16 of the core's 4 MiB
/// [`witness_core::bundle::MAX_BUNDLE_SIZE`].
pub(crate) const MAX_VERIFY_INCLUSION_BODY: usize = 256 << 10;

/// How long the log list is reused: `ListLogs` reads every log's state from
/// the witness's store, so a page reload storm costs one call per interval.
/// Short enough that the page shows a new cosignature within seconds.
const LOGS_TTL: Duration = Duration::from_secs(2);

/// `Cache-Control` of `/logs` and the page: the same short freshness.
const LOGS_CACHE_CONTROL: &str = "public, max-age=2";

/// How long a readiness verdict is reused. Each fresh one costs a durable
/// write in the witness's store and a call to the signer; orchestrators probe
/// every few seconds, and a flood of probes (they are exempt from rate
/// limits) must not become a flood of fsyncs.
const READINESS_TTL: Duration = Duration::from_secs(1);

/// How long a "not ready" verdict is reused: short, so that a restarted
/// witness is reported ready within this of being ready, while a flood of
/// probes against a witness that is not ready still costs at most one call
/// per interval.
const NOT_READY_TTL: Duration = Duration::from_millis(100);

/// How long `/readyz` waits for the witness's answer. The witness bounds its
/// own checks at [`witness_core`]'s readiness timeout (3 s); this leaves room
/// for the round trip, and stays below the usual 10 s probe timeout.
const READINESS_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Probes and verdicts are never cached by intermediaries.
const NO_STORE: &str = "no-store";

/// The routes of this module. `/healthz` and `/readyz` are cheap (a constant;
/// a verdict cached for [`READINESS_TTL`]) and meant to stay outside the rate
/// limits.
/// The routes of this module: the status reads (`/logs`, `/`, `/status`,
/// `/verify-inclusion`), which the caller puts behind rate and concurrency
/// limits, and the probes (`/healthz`, `/readyz`), which stay outside them: an
/// orchestrator's probe must not be refused because a flood is being shed, and
/// the probes are cheap (readiness is cached).
pub(crate) fn routes(config: &GatewayConfig) -> (Router<Gateway>, Router<Gateway>) {
    let context = Arc::new(StatusContext {
        monitoring_prefix: config.monitoring_prefix.clone(),
        logs: Cached::default(),
        readiness: Cached::default(),
    });
    let reads = Router::new()
        .route("/logs", get(logs_json))
        .route("/", get(status_page))
        .route("/status", get(status_page))
        .route(
            "/verify-inclusion",
            // Refused with 413 while it streams in, before it is buffered.
            post(verify_inclusion).layer(DefaultBodyLimit::max(MAX_VERIFY_INCLUSION_BODY)),
        )
        .layer(Extension(Arc::clone(&context)));
    let probes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(Extension(context));
    (reads, probes)
}

/// What the handlers of this module share besides the [`Gateway`].
struct StatusContext {
    monitoring_prefix: String,
    logs: Cached<Arc<[LogStatus]>>,
    readiness: Cached<Readiness>,
}

/// A value reused for a while. The async mutex is held while the value is
/// refreshed, so concurrent requests wait for one refresh instead of each
/// making its own (single flight).
struct Cached<T> {
    slot: tokio::sync::Mutex<Option<(Instant, T)>>,
}

impl<T> Default for Cached<T> {
    fn default() -> Self {
        Cached {
            slot: tokio::sync::Mutex::new(None),
        }
    }
}

impl<T: Clone> Cached<T> {
    /// The cached value if younger than `ttl`, else a fresh one from
    /// `refresh` (kept only when it succeeded).
    async fn get<E>(
        &self,
        ttl: Duration,
        refresh: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        self.get_for(|_| ttl, refresh).await
    }

    /// [`Cached::get`] with a time to live that depends on the value.
    async fn get_for<E>(
        &self,
        ttl: impl Fn(&T) -> Duration,
        refresh: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let mut slot = self.slot.lock().await;
        if let Some((at, value)) = slot.as_ref()
            && at.elapsed() < ttl(value)
        {
            return Ok(value.clone());
        }
        let value = refresh.await?;
        *slot = Some((Instant::now(), value.clone()));
        Ok(value)
    }
}

/// How a log reaches the witness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// The log pushes checkpoints to `add-checkpoint`.
    Push,
    /// The witness pulls checkpoints from the log.
    Pull,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Push => "push",
            Mode::Pull => "pull",
        }
    }
}

/// Where a log stands with this witness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub(crate) enum LogState {
    /// The witness cosigned a checkpoint of the log.
    #[serde(rename = "cosigned")]
    Cosigned,
    /// The log is trusted, but no checkpoint of it was cosigned yet.
    #[serde(rename = "awaiting first checkpoint")]
    AwaitingFirstCheckpoint,
}

impl LogState {
    fn label(self) -> &'static str {
        match self {
            LogState::Cosigned => "cosigned",
            LogState::AwaitingFirstCheckpoint => "awaiting first checkpoint",
        }
    }
}

/// One verifier key of a log.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct LogKey {
    /// The key name.
    name: String,
    /// The key ID, 8 lowercase hex digits.
    key_id: String,
    /// The whole key in vkey form.
    vkey: String,
}

/// A cosignature time, in both forms.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct CosignTime {
    /// RFC 3339, UTC, whole seconds.
    rfc3339: String,
    /// Seconds since the Unix epoch.
    unix: u64,
}

/// One log as `/logs` and the page show it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct LogStatus {
    origin: String,
    /// Lowercase hex SHA-256 of the origin: the monitoring path's segment.
    origin_hash: String,
    /// The path of the log's monitoring endpoint on this gateway.
    monitoring_path: String,
    keys: Vec<LogKey>,
    mode: Mode,
    /// How the witness is fed: `push`, `pull-rekor-v1` or `pull-tiles`.
    feed: String,
    /// The latest cosigned tree size (0 before the first cosignature).
    size: u64,
    /// When this witness last cosigned the log (a re-cosignature included).
    last_cosigned: Option<CosignTime>,
    state: LogState,
}

/// The largest Unix time RFC 3339 can write (9999-12-31T23:59:59Z).
const MAX_RFC3339_SECONDS: u64 = 253_402_300_799;

fn out_of_protocol(detail: String) -> GatewayError {
    GatewayError::BadUpstream { detail }
}

impl LogStatus {
    /// Turns the witness's description of a log into the gateway's, refusing
    /// one that breaks the witness protocol.
    fn from_wire(log: pb::Log, monitoring_prefix: &str) -> Result<LogStatus, GatewayError> {
        let mode = match log.feed.as_str() {
            "push" => Mode::Push,
            "pull-rekor-v1" | "pull-tiles" => Mode::Pull,
            other => return Err(out_of_protocol(format!("unknown feed {other:?}"))),
        };
        let keys = log
            .verifier_keys
            .iter()
            .map(|vkey| {
                let key = VerifierKey::parse_vkey(vkey).map_err(|e| {
                    out_of_protocol(format!("verifier key of {:?}: {e}", log.origin))
                })?;
                Ok(LogKey {
                    name: key.name().to_owned(),
                    key_id: format!("{:08x}", key.key_id()),
                    vkey: vkey.clone(),
                })
            })
            .collect::<Result<Vec<_>, GatewayError>>()?;
        let (state, last_cosigned) = if log.cosigned {
            (LogState::Cosigned, Some(cosign_time(log.cosigned_at)?))
        } else {
            (LogState::AwaitingFirstCheckpoint, None)
        };
        let origin_hash = origin_hash(&log.origin);
        Ok(LogStatus {
            monitoring_path: format!("{monitoring_prefix}/{origin_hash}/checkpoint"),
            origin_hash,
            origin: log.origin,
            keys,
            mode,
            feed: log.feed,
            size: log.size,
            last_cosigned,
            state,
        })
    }
}

fn cosign_time(unix: u64) -> Result<CosignTime, GatewayError> {
    Ok(CosignTime {
        rfc3339: rfc3339(unix)
            .ok_or_else(|| out_of_protocol(format!("cosignature time {unix} out of range")))?,
        unix,
    })
}

/// `unix` as RFC 3339 UTC, or `None` past year 9999.
fn rfc3339(unix: u64) -> Option<String> {
    if unix > MAX_RFC3339_SECONDS {
        return None;
    }
    let time = UNIX_EPOCH.checked_add(Duration::from_secs(unix))?;
    Some(humantime::format_rfc3339_seconds(time).to_string())
}

/// The witness's logs, from the cache or a fresh `ListLogs`.
async fn current_logs(
    gateway: &Gateway,
    context: &StatusContext,
) -> Result<Arc<[LogStatus]>, GatewayError> {
    context
        .logs
        .get(LOGS_TTL, async {
            let logs = gateway
                .trusted_logs()
                .await
                .map_err(|status| GatewayError::from_witness(&status))?;
            logs.into_iter()
                .map(|log| LogStatus::from_wire(log, &context.monitoring_prefix))
                .collect::<Result<Arc<[LogStatus]>, GatewayError>>()
        })
        .await
}

/// `GET /logs`.
async fn logs_json(
    State(gateway): State<Gateway>,
    Extension(context): Extension<Arc<StatusContext>>,
) -> Result<Response, GatewayError> {
    let logs = current_logs(&gateway, &context).await?;
    Ok(([(CACHE_CONTROL, LOGS_CACHE_CONTROL)], Json(&*logs)).into_response())
}

/// `GET /` and `GET /status`.
async fn status_page(
    State(gateway): State<Gateway>,
    Extension(context): Extension<Arc<StatusContext>>,
) -> Result<Response, GatewayError> {
    let logs = current_logs(&gateway, &context).await?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let html = page::render(&logs, rfc3339(now).as_deref().unwrap_or(""));
    Ok((
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (CACHE_CONTROL, HeaderValue::from_static(LOGS_CACHE_CONTROL)),
            // No script runs on this page, whatever an origin contains: every
            // value is escaped, and the policy forbids scripts besides.
            (
                HeaderName::from_static("content-security-policy"),
                HeaderValue::from_static(page::CONTENT_SECURITY_POLICY),
            ),
            (
                HeaderName::from_static("x-content-type-options"),
                HeaderValue::from_static("nosniff"),
            ),
        ],
        html,
    )
        .into_response())
}

/// The answer of `POST /verify-inclusion`.
#[derive(Debug, Serialize)]
struct InclusionAnswer {
    /// The entry's inclusion proof verifies against its checkpoint, which is
    /// validly signed by a log this witness trusts.
    inclusion_verified: bool,
    /// That checkpoint is consistent with the latest one this witness
    /// cosigned for the log: no split view.
    consistent_with_witness: bool,
    origin: String,
    log_index: u64,
    checkpoint_size: u64,
    /// The witness's latest cosigned size (0 when nothing is cosigned).
    witness_size: u64,
    /// Why a check failed; empty when both passed.
    detail: String,
}

/// `POST /verify-inclusion`: a Sigstore bundle (JSON, v0.1 to v0.3) or a bare
/// transparency-log entry, checked by the witness.
async fn verify_inclusion(
    State(gateway): State<Gateway>,
    body: Bytes,
) -> Result<Response, GatewayError> {
    // Parsed at the edge: a malformed bundle is a 400 with the parser's
    // one-line reason and never reaches the witness (which parses it again).
    let entries = witness_core::bundle::parse_entries(&body)?;
    if entries.is_empty() {
        return Err(GatewayError::Request(witness_core::Error::InvalidRequest {
            reason: "the bundle has no transparency log entry",
        }));
    }
    let verdict = gateway
        .witness
        .clone()
        .verify_inclusion(pb::VerifyInclusionRequest {
            bundle: body.to_vec(),
        })
        .await
        .map_err(|status| GatewayError::from_witness(&status))?
        .into_inner();
    let answer = InclusionAnswer {
        inclusion_verified: verdict.inclusion_verified,
        consistent_with_witness: verdict.consistent_with_witness,
        origin: verdict.origin,
        log_index: verdict.log_index,
        checkpoint_size: verdict.checkpoint_size,
        witness_size: verdict.witness_size,
        detail: verdict.detail,
    };
    Ok(([(CACHE_CONTROL, NO_STORE)], Json(answer)).into_response())
}

/// `GET /healthz`: the process is up and serving.
async fn healthz() -> Response {
    (
        [
            (CONTENT_TYPE, "text/plain; charset=utf-8"),
            (CACHE_CONTROL, NO_STORE),
        ],
        "ok\n",
    )
        .into_response()
}

/// The readiness verdict `/readyz` serves.
#[derive(Clone, Debug, Serialize)]
struct Readiness {
    ready: bool,
    /// The witness answered its `Readiness` call.
    witness_reachable: bool,
    /// The witness's state store committed a write (`null` when the witness
    /// did not answer).
    store_writable: Option<bool>,
    /// The witness reached its signer (`null` when the witness did not answer).
    signer_reachable: Option<bool>,
    /// The failing parts: `witness`, `store`, `signer`.
    failing: Vec<&'static str>,
    /// One line naming what fails, empty when ready. What exactly went wrong
    /// is for the operator's logs.
    reason: String,
}

impl Readiness {
    fn new(answer: Option<pb::ReadinessResponse>) -> Readiness {
        let mut failing = Vec::new();
        let mut reasons = Vec::new();
        let (store, signer) = match &answer {
            None => {
                failing.push("witness");
                reasons.push("witness unreachable");
                (None, None)
            }
            Some(answer) => {
                if !answer.store_writable {
                    failing.push("store");
                    reasons.push("witness state store not writable");
                }
                if !answer.signer_reachable {
                    failing.push("signer");
                    reasons.push("signer unreachable from the witness");
                }
                (Some(answer.store_writable), Some(answer.signer_reachable))
            }
        };
        Readiness {
            ready: failing.is_empty(),
            witness_reachable: answer.is_some(),
            store_writable: store,
            signer_reachable: signer,
            failing,
            reason: reasons.join("; "),
        }
    }
}

/// Asks the witness; any failure to get an answer is the witness failing.
async fn ask_witness(gateway: &Gateway) -> Readiness {
    let mut request = tonic::Request::new(pb::ReadinessRequest {});
    request.set_timeout(READINESS_CALL_TIMEOUT);
    let mut witness = gateway.witness.clone();
    let call = witness.readiness(request);
    let answer = match tokio::time::timeout(READINESS_CALL_TIMEOUT, call).await {
        Ok(Ok(response)) => {
            let answer = response.into_inner();
            if !answer.detail.is_empty() {
                tracing::warn!(detail = %answer.detail, "witness not ready");
            }
            Some(answer)
        }
        Ok(Err(status)) => {
            tracing::warn!(code = ?status.code(), message = status.message(), "witness readiness call failed");
            None
        }
        Err(_) => {
            tracing::warn!(timeout = ?READINESS_CALL_TIMEOUT, "witness readiness call timed out");
            None
        }
    };
    Readiness::new(answer)
}

/// `GET /readyz`: 200 when the witness answers that its store is writable
/// and its signer reachable; else 503 naming the failing part.
async fn readyz(
    State(gateway): State<Gateway>,
    Extension(context): Extension<Arc<StatusContext>>,
) -> Response {
    let Ok(verdict) = context
        .readiness
        .get_for(
            |verdict: &Readiness| {
                if verdict.ready {
                    READINESS_TTL
                } else {
                    NOT_READY_TTL
                }
            },
            async { Ok::<_, std::convert::Infallible>(ask_witness(&gateway).await) },
        )
        .await;
    let status = if verdict.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, [(CACHE_CONTROL, NO_STORE)], Json(verdict)).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn wire(feed: &str, cosigned: bool, cosigned_at: u64) -> pb::Log {
        pb::Log {
            origin: "log2025-1.rekor.sigstore.dev".into(),
            verifier_keys: vec![
                "log2025-1.rekor.sigstore.dev+cf119915+AbfK5adZJxsI323FwGD2AJJ9F4i89cfDuLdGJBIYntuO"
                    .into(),
            ],
            feed: feed.into(),
            size: if cosigned { 7 } else { 0 },
            cosigned,
            cosigned_at,
        }
    }

    #[tokio::test]
    async fn not_ready_verdict_expires_soon_and_ready_one_is_reused() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let cache: Cached<bool> = Cached::default();
        let asked = AtomicUsize::new(0);
        let ttl = |ready: &bool| {
            if *ready {
                Duration::from_secs(60)
            } else {
                Duration::from_millis(50)
            }
        };
        let ask = |answer: bool| {
            let asked = &asked;
            async move {
                asked.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::convert::Infallible>(answer)
            }
        };
        assert_eq!(cache.get_for(ttl, ask(false)).await, Ok(false));
        assert_eq!(cache.get_for(ttl, ask(true)).await, Ok(false));
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(cache.get_for(ttl, ask(true)).await, Ok(true));
        assert_eq!(cache.get_for(ttl, ask(false)).await, Ok(true));
        assert_eq!(asked.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn rfc3339_is_utc_seconds_and_bounded() {
        assert_eq!(rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000).unwrap(), "2023-11-14T22:13:20Z");
        assert_eq!(
            rfc3339(MAX_RFC3339_SECONDS).unwrap(),
            "9999-12-31T23:59:59Z"
        );
        assert!(rfc3339(MAX_RFC3339_SECONDS + 1).is_none());
        assert!(rfc3339(u64::MAX).is_none());
    }

    #[test]
    fn a_log_is_described_from_the_wire_once() {
        let log = LogStatus::from_wire(wire("pull-tiles", true, 1_700_000_000), "/m").unwrap();
        assert_eq!(log.mode, Mode::Pull);
        assert_eq!(log.state, LogState::Cosigned);
        assert_eq!(
            log.monitoring_path,
            format!("/m/{}/checkpoint", log.origin_hash)
        );
        assert_eq!(log.keys[0].name, "log2025-1.rekor.sigstore.dev");
        assert_eq!(log.keys[0].key_id, "cf119915");
        let waiting = LogStatus::from_wire(wire("push", false, 0), "").unwrap();
        assert_eq!(waiting.state, LogState::AwaitingFirstCheckpoint);
        assert!(waiting.last_cosigned.is_none());
    }

    #[test]
    fn out_of_protocol_log_descriptions_are_refused_not_shown() {
        for bad in [
            wire("carrier-pigeon", false, 0),
            wire("push", true, u64::MAX),
            pb::Log {
                verifier_keys: vec!["not a vkey".into()],
                ..wire("push", false, 0)
            },
        ] {
            let error = LogStatus::from_wire(bad, "").unwrap_err();
            assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
        }
    }

    #[test]
    fn readiness_names_the_failing_part() {
        let unreachable = Readiness::new(None);
        assert!(!unreachable.ready);
        assert_eq!(unreachable.failing, vec!["witness"]);
        let answer = |store_writable, signer_reachable| {
            Readiness::new(Some(pb::ReadinessResponse {
                store_writable,
                signer_reachable,
                detail: String::new(),
            }))
        };
        assert!(answer(true, true).ready);
        assert_eq!(answer(false, true).failing, vec!["store"]);
        assert_eq!(answer(true, false).failing, vec!["signer"]);
        assert_eq!(answer(false, false).failing, vec!["store", "signer"]);
    }
}
