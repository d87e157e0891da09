//! Protection of the API listener: rate limits, timeouts, concurrency limits
//! and load shedding, as tower layers around the API routes.
//!
//! The layers of the submission routes, outermost first (see
//! [`submission_layers`]):
//!
//! 1. a global rate limit (429 with `Retry-After`), the cheapest refusal, taken
//!    before anything else is spent on the request;
//! 2. load shedding over a concurrency limit (503 with `Retry-After` when every
//!    slot is busy, instead of queueing without bound);
//! 3. a request timeout (503 with a one-line body, never a hang), covering the
//!    body upload and the call to the witness;
//! 4. the body cap (413), sized from the specs;
//! 5. a per-origin rate limit (429 with `Retry-After`), which needs the body to
//!    find the origin, so it sits inside the body cap and the timeout.
//!
//! The monitoring route has its own rate limit, concurrency limit and timeout,
//! so that a flood of submissions cannot starve monitors, nor the reverse.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tower::BoxError;
use tower::limit::GlobalConcurrencyLimitLayer;

use crate::GatewayError;

/// Limits of the API listener. Every field has a default suited to production;
/// `[limits]` in the configuration overrides them one by one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Open connections at most (default 1024); further connections are closed
    /// on accept. The witness serves tens of logs and a handful of monitors
    /// (the monitoring prefix is meant to sit behind a CDN), so 1024 is ample
    /// headroom while staying inside a default file-descriptor limit.
    pub max_connections: usize,
    /// Deadline of a TLS handshake and of an HTTP/1 request head (default
    /// `10s`): a client that opens a connection and stalls holds a connection
    /// slot for at most this long.
    #[serde(deserialize_with = "crate::config::duration")]
    pub handshake_timeout: Duration,
    /// Deadline of one request, from its head to its response, body upload
    /// included (default `15s`): above the witness call's own deadline
    /// (`witness.timeout`, default `10s`) so a slow witness is reported as
    /// such, plus room for a 64 KiB body on a slow link. Past it the answer is
    /// 503 with a one-line body.
    #[serde(deserialize_with = "crate::config::duration")]
    pub request_timeout: Duration,
    /// How long a shutdown waits for in-flight requests (default `30s`, twice
    /// the request timeout) before closing the remaining connections.
    #[serde(deserialize_with = "crate::config::duration")]
    pub drain_timeout: Duration,
    /// Submissions (`add-checkpoint`, `sign-subtree`) handled at once (default
    /// 64); more are shed with 503 and `Retry-After`. Each holds one call to
    /// the witness, which serializes the updates of a log anyway, so 64 covers
    /// tens of logs with a retry or two in flight each.
    pub submission_concurrency: usize,
    /// Monitoring requests handled at once (default 256), separately from the
    /// submissions: reads are cheaper than cosignatures and monitors must not
    /// be starved by a submission flood.
    pub monitoring_concurrency: usize,
    /// Submissions from all origins together (default 120000 a minute, bursts
    /// of 6000): about the 2,000 cosignatures a second this witness sustains on
    /// two cores (see the README's benchmarks), so a flood is refused cheaply
    /// with 429 before it queues, while 40,000 logs each pushing every
    /// 20 seconds still fit.
    pub submission_rate: RateLimit,
    /// Submissions for one origin, per endpoint (default 120 a minute, bursts
    /// of 30): a log that publishes a checkpoint every second, with room for
    /// the 409 retries of the tlog-witness protocol. The origin is the first
    /// line of the checkpoint in the body.
    pub per_origin_rate: RateLimit,
    /// Monitoring requests from everyone (default 12000 a minute, bursts of
    /// 1200): the answer is cacheable for a minute, so a CDN in front asks far
    /// less; the limit only bounds what uncached clients cost the witness.
    pub monitoring_rate: RateLimit,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(15),
            drain_timeout: Duration::from_secs(30),
            submission_concurrency: 64,
            monitoring_concurrency: 256,
            submission_rate: RateLimit {
                per_minute: 120_000,
                burst: 6_000,
            },
            per_origin_rate: RateLimit {
                per_minute: 120,
                burst: 30,
            },
            monitoring_rate: RateLimit {
                per_minute: 12000,
                burst: 1200,
            },
        }
    }
}

/// A token bucket: `burst` requests at once, refilled at `per_minute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests a minute.
    pub per_minute: u32,
    /// Requests allowed at once after a quiet period.
    pub burst: u32,
}

impl Limits {
    pub(crate) fn validate(&self) -> Result<(), GatewayError> {
        let zero = |name: &str| {
            Err(GatewayError::Config {
                detail: format!("limits.{name} must be above zero"),
            })
        };
        for (name, value) in [
            ("max_connections", self.max_connections),
            ("submission_concurrency", self.submission_concurrency),
            ("monitoring_concurrency", self.monitoring_concurrency),
        ] {
            if value == 0 {
                return zero(name);
            }
        }
        for (name, value) in [
            ("handshake_timeout", self.handshake_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if value.is_zero() {
                return zero(name);
            }
        }
        for (name, rate) in [
            ("submission_rate", self.submission_rate),
            ("per_origin_rate", self.per_origin_rate),
            ("monitoring_rate", self.monitoring_rate),
        ] {
            if rate.per_minute == 0 || rate.burst == 0 {
                return zero(&format!("{name}.per_minute and limits.{name}.burst"));
            }
        }
        Ok(())
    }
}

/// Told to clients shed for load or timed out: long enough for the burst to
/// pass, short enough that a log's next checkpoint is not delayed much.
const RETRY_AFTER_OVERLOAD: Duration = Duration::from_secs(1);

/// Origins with a bucket of their own, at most: above the 40,000 logs of the
/// largest witness-network list. Anything beyond is junk the witness will
/// refuse anyway, and shares one bucket instead of growing the map without
/// bound (a full map is about 8 MiB; buckets that refilled are forgotten
/// first).
const MAX_TRACKED_ORIGINS: usize = 65_536;

/// Origins longer than this are not keyed on (they share the overflow bucket):
/// a key name is at most a few hundred bytes in practice.
const MAX_ORIGIN_KEY: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    fn full(rate: RateLimit, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(rate.burst),
            updated: now,
        }
    }

    /// The tokens at `now`, refilled since the last update, capped at the burst.
    fn refilled(&self, rate: RateLimit, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (self.tokens + elapsed * per_second(rate)).min(f64::from(rate.burst))
    }

    /// Takes a token, or says how long until one is available.
    fn take(&mut self, rate: RateLimit, now: Instant) -> Result<(), Duration> {
        self.tokens = self.refilled(rate, now);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            // A zero rate is refused by `Limits::validate`; were it to get
            // here, the wait is infinite and the client told a minute.
            Err(
                Duration::try_from_secs_f64((1.0 - self.tokens) / per_second(rate))
                    .unwrap_or(Duration::from_secs(60)),
            )
        }
    }

    fn is_full(&self, rate: RateLimit, now: Instant) -> bool {
        self.refilled(rate, now) >= f64::from(rate.burst)
    }
}

fn per_second(rate: RateLimit) -> f64 {
    f64::from(rate.per_minute) / 60.0
}

/// One token bucket shared by every request it covers.
pub(crate) struct GlobalRateLimit {
    rate: RateLimit,
    // A std mutex: held for a few arithmetic operations, never across an await.
    bucket: Mutex<TokenBucket>,
    what: &'static str,
}

impl GlobalRateLimit {
    pub(crate) fn new(rate: RateLimit, what: &'static str) -> Arc<GlobalRateLimit> {
        Arc::new(GlobalRateLimit {
            rate,
            bucket: Mutex::new(TokenBucket::full(rate, Instant::now())),
            what,
        })
    }

    fn take(&self) -> Result<(), Duration> {
        let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        bucket.take(self.rate, Instant::now())
    }
}

/// A token bucket per origin, bounded in number.
pub(crate) struct PerOriginRateLimit {
    rate: RateLimit,
    buckets: Mutex<OriginBuckets>,
}

struct OriginBuckets {
    by_origin: HashMap<String, TokenBucket>,
    overflow: TokenBucket,
}

impl PerOriginRateLimit {
    pub(crate) fn new(rate: RateLimit) -> Arc<PerOriginRateLimit> {
        let now = Instant::now();
        Arc::new(PerOriginRateLimit {
            rate,
            buckets: Mutex::new(OriginBuckets {
                by_origin: HashMap::new(),
                overflow: TokenBucket::full(rate, now),
            }),
        })
    }

    fn take(&self, origin: &str, now: Instant) -> Result<(), Duration> {
        let rate = self.rate;
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let OriginBuckets {
            by_origin,
            overflow,
        } = &mut *buckets;
        if let Some(bucket) = by_origin.get_mut(origin) {
            return bucket.take(rate, now);
        }
        if by_origin.len() >= MAX_TRACKED_ORIGINS {
            // A full bucket carries no information: forgetting it is the same
            // as recreating it full later.
            by_origin.retain(|_, bucket| !bucket.is_full(rate, now));
        }
        if origin.len() > MAX_ORIGIN_KEY || by_origin.len() >= MAX_TRACKED_ORIGINS {
            return overflow.take(rate, now);
        }
        by_origin
            .entry(origin.to_owned())
            .or_insert_with(|| TokenBucket::full(rate, now))
            .take(rate, now)
    }
}

/// The origin of the checkpoint in a submission body, found cheaply: the line
/// after the first empty line (both tlog-witness bodies are header lines, an
/// empty line, then the checkpoint, whose first line is the origin). `None`
/// for a body without that shape, which the parser refuses anyway.
pub(crate) fn checkpoint_origin(body: &[u8]) -> Option<&str> {
    let start = body.windows(2).position(|w| w == b"\n\n")? + 2;
    let rest = &body[start..];
    let end = rest.iter().position(|&b| b == b'\n')?;
    let origin = std::str::from_utf8(&rest[..end]).ok()?;
    (!origin.is_empty()).then_some(origin)
}

fn too_many_requests(retry_after: Duration, what: &str) -> Response {
    let seconds = retry_after.as_secs_f64().ceil().max(1.0);
    (
        StatusCode::TOO_MANY_REQUESTS,
        [
            (CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
            (RETRY_AFTER, format!("{seconds}")),
        ],
        format!("rate limit exceeded for {what}; retry after {seconds} s\n"),
    )
        .into_response()
}

/// Middleware: the global rate limit in `limit`.
pub(crate) async fn global_rate_limit(
    State(limit): State<Arc<GlobalRateLimit>>,
    request: Request,
    next: Next,
) -> Response {
    match limit.take() {
        Ok(()) => next.run(request).await,
        Err(retry_after) => too_many_requests(retry_after, limit.what),
    }
}

/// Middleware: the per-origin rate limit in `limit`. Reads the body (the
/// body cap outside this layer bounds it) and hands it on.
pub(crate) async fn per_origin_rate_limit(
    State(limit): State<Arc<PerOriginRateLimit>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    // Buffered with the request's parts, so the body cap of the route applies
    // (413 while it streams in).
    let body = match Bytes::from_request(Request::from_parts(parts.clone(), body), &()).await {
        Ok(body) => body,
        Err(rejection) => return rejection.into_response(),
    };
    if let Some(origin) = checkpoint_origin(&body)
        && let Err(retry_after) = limit.take(origin, Instant::now())
    {
        return too_many_requests(retry_after, "this origin");
    }
    next.run(Request::from_parts(parts, body.into())).await
}

/// Turns the refusals of the load-shed and timeout layers into responses: 503
/// with `Retry-After` and a one-line body, never a 500.
pub(crate) async fn overload_response(error: BoxError) -> Response {
    let reason = if error.is::<tower::timeout::error::Elapsed>() {
        "request timed out"
    } else if error.is::<tower::load_shed::error::Overloaded>() {
        "overloaded"
    } else {
        tracing::warn!(error = %error, "protection layer failed");
        "unavailable"
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
            (RETRY_AFTER, RETRY_AFTER_OVERLOAD.as_secs().to_string()),
        ],
        format!("{reason}; retry later\n"),
    )
        .into_response()
}

/// Wraps `routes` in load-shed, concurrency-limit and timeout layers, with
/// their error handling. The concurrency limit is one semaphore shared by
/// every route of `routes` (a plain `ConcurrencyLimitLayer` would give each
/// route its own).
pub(crate) fn shed_and_time_out<S: Clone + Send + Sync + 'static>(
    routes: Router<S>,
    concurrency: usize,
    timeout: Duration,
) -> Router<S> {
    routes.layer(
        tower::ServiceBuilder::new()
            // Outermost: turns the refusals below into 503 responses.
            .layer(HandleErrorLayer::new(overload_response))
            // Refuses at once when the concurrency limit has no free slot,
            // instead of queueing requests (and their bodies) without bound.
            .load_shed()
            .layer(GlobalConcurrencyLimitLayer::new(concurrency))
            // Inside the concurrency limit, so a slot is held at most this long.
            .timeout(timeout),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const RATE: RateLimit = RateLimit {
        per_minute: 60,
        burst: 3,
    };

    #[test]
    fn bucket_allows_the_burst_then_refills_at_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::full(RATE, start);
        for _ in 0..3 {
            assert!(bucket.take(RATE, start).is_ok());
        }
        let wait = bucket.take(RATE, start).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        assert!(bucket.take(RATE, start + Duration::from_secs(1)).is_ok());
        assert!(bucket.take(RATE, start + Duration::from_secs(1)).is_err());
        // Never more than the burst, however long the pause.
        let later = start + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(bucket.take(RATE, later).is_ok());
        }
        assert!(bucket.take(RATE, later).is_err());
    }

    #[test]
    fn flooding_one_origin_leaves_others_their_own_bucket() {
        let limit = PerOriginRateLimit::new(RATE);
        let now = Instant::now();
        for _ in 0..3 {
            assert!(limit.take("flood.example/log", now).is_ok());
        }
        assert!(limit.take("flood.example/log", now).is_err());
        assert!(limit.take("quiet.example/log", now).is_ok());
    }

    #[test]
    fn random_origins_cannot_grow_the_map_without_bound() {
        let limit = PerOriginRateLimit::new(RATE);
        let now = Instant::now();
        for i in 0..MAX_TRACKED_ORIGINS + 100 {
            let _ = limit.take(&format!("junk{i}"), now);
        }
        let buckets = limit.buckets.lock().unwrap();
        assert!(buckets.by_origin.len() <= MAX_TRACKED_ORIGINS);
    }

    #[test]
    fn overlong_origins_share_the_overflow_bucket() {
        let limit = PerOriginRateLimit::new(RATE);
        let now = Instant::now();
        for i in 0..3 {
            let origin = format!("{i}{}", "a".repeat(MAX_ORIGIN_KEY));
            assert!(limit.take(&origin, now).is_ok());
        }
        assert!(limit.take(&"b".repeat(MAX_ORIGIN_KEY + 1), now).is_err());
        assert!(limit.buckets.lock().unwrap().by_origin.is_empty());
    }

    #[test]
    fn origin_is_the_first_checkpoint_line_after_the_empty_line() {
        let add = b"old 3\nAAAA\n\nexample.com/log\n5\nhash\n\n\xe2\x80\x94 sig\n";
        assert_eq!(checkpoint_origin(add), Some("example.com/log"));
        let subtree = b"subtree 0 4\nHASH\n\nother.example/log\n9\n";
        assert_eq!(checkpoint_origin(subtree), Some("other.example/log"));
        for junk in [
            b"old 0\n".as_slice(),
            b"old 0\n\n",
            b"old 0\n\n\nx\n",
            b"old 0\n\nno newline",
            b"old 0\n\n\xff\xfe\n",
        ] {
            assert_eq!(checkpoint_origin(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn zero_limits_are_refused() {
        assert!(Limits::default().validate().is_ok());
        let limits = Limits {
            submission_concurrency: 0,
            ..Limits::default()
        };
        assert!(limits.validate().is_err());
        let mut limits = Limits::default();
        limits.per_origin_rate.per_minute = 0;
        assert!(limits.validate().is_err());
        let limits = Limits {
            request_timeout: Duration::ZERO,
            ..Limits::default()
        };
        assert!(limits.validate().is_err());
    }
}
