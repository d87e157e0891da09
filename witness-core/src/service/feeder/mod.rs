//! Pull feeders: for logs that do not push checkpoints to the witness, fetch the
//! log's latest checkpoint and a consistency proof from the witness's latest
//! cosigned size, and hand both to the witness exactly as a push would.
//!
//! Two kinds of logs are pulled:
//! - Rekor v1 ([`LogKind::RekorV1`]): `GET /api/v1/log` lists the active shard
//!   and the frozen ones; each shard signs its own checkpoints and is witnessed
//!   as its own origin (`<host> - <treeID>`). Proofs come from
//!   `GET /api/v1/log/proof`, entries from `GET /api/v1/log/entries`.
//! - tlog-tiles logs such as Rekor v2 ([`LogKind::Tiles`]): the checkpoint is
//!   `<prefix>/checkpoint`, and the feeder computes proofs itself from the log's
//!   tiles, keeping the immutable ones in a small cache between polls.
//!
//! What a feeder does not do: verify the log's signature or the consistency
//! proof on the witness's behalf. The [`CheckpointSink`] (the witness) does both,
//! exactly as for a pushed `add-checkpoint`, and it alone decides which origins
//! are trusted; it also counts its own refusals, as for pushed checkpoints, so
//! the feeder only logs them. What a feeder checks on its own comes on top: a
//! log never shrinks below what was cosigned, a Rekor shard's signed tree head
//! agrees with the size and root listed next to it, tiles hash to the
//! checkpoint's root, and a random sample of each advance's new entries is
//! included in the new tree (the inclusion duty). A failure of any of these, or
//! unparsable data, is counted (`witness_verify_failures_total`), logged, and
//! never submitted. A checkpoint at the cosigned size with another root is
//! submitted all the same: the witness verifies its signature, refuses it, and
//! keeps it as evidence of a split view.
//!
//! [`run_feeder`] polls one log until shutdown, with jitter and exponential
//! backoff; [`Feeder::poll_once`] is one poll, for tests and tools.

pub(crate) mod http;
mod poll;
mod proofs;
mod rekor_v1;
pub(crate) mod tiles;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng as _;

use crate::merkle::Hash;
use crate::service::metrics::WitnessMetrics;
use crate::service::store::StoredTree;
use crate::{Error, Result};

pub use poll::{PollSchedule, run_feeder};
pub use proofs::LogProofSource;

/// Where a feeder hands what it fetched: the witness itself (the same checks as
/// a pushed `add-checkpoint`).
#[async_trait]
pub trait CheckpointSink: Send + Sync + 'static {
    /// The tree this witness last cosigned for `origin`, if any.
    async fn cosigned_tree(&self, origin: &str) -> Result<Option<StoredTree>>;

    /// Submits a checkpoint note with a consistency proof from `old_size`, as
    /// `add-checkpoint` does; returns the cosignature lines. An
    /// `Error::OldSizeMismatch` carries the size to fetch a proof from instead.
    async fn add_checkpoint(
        &self,
        old_size: u64,
        consistency_proof: Vec<Hash>,
        note: Vec<u8>,
    ) -> Result<Vec<String>>;
}

/// How a log publishes its checkpoints and proofs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogKind {
    /// Rekor v1's REST API, every shard witnessed as its own origin.
    RekorV1,
    /// c2sp.org/tlog-tiles (Rekor v2, rekor-tiles).
    Tiles,
}

/// A log's base URL: http or https, no credentials, no query or fragment.
/// Resource paths are joined below it, so it always ends with `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogUrl(reqwest::Url);

impl LogUrl {
    /// Parses and checks a log's base URL (a tlog-tiles prefix, or a Rekor v1
    /// server without `/api/v1`).
    pub fn parse(text: &str) -> Result<LogUrl> {
        let invalid = |detail: &str| Error::Config {
            detail: format!("log URL {text:?}: {detail}"),
        };
        let mut url = reqwest::Url::parse(text).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("only http and https are fetched"));
        }
        // Credentials in a URL end up in log lines and error messages.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("credentials in the URL are not accepted"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("a query or fragment cannot prefix resource paths"));
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(LogUrl(url))
    }

    /// The URL as text, with its final `/`.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// A resource below the base: `path` is relative, without a leading `/`.
    pub(crate) fn join(&self, path: &str) -> Result<reqwest::Url> {
        self.0.join(path).map_err(|e| Error::Config {
            detail: format!("cannot join {path:?} to {}: {e}", self.0),
        })
    }
}

/// Default time between polls of a log that is healthy.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);
/// Default cap on the time between polls of a failing log.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);
/// Default limit on one HTTP request, from connecting to the end of the body.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of a checkpoint's new entries whose inclusion is checked.
pub const DEFAULT_INCLUSION_SAMPLES: usize = 4;
/// The most entries sampled per advance: each costs one or two requests to the
/// log, and a few already catch a log that serves entries outside its tree with
/// high probability over repeated polls.
pub const MAX_INCLUSION_SAMPLES: usize = 64;

/// The `User-Agent` of every request, so log operators can tell who polls them.
pub fn default_user_agent() -> String {
    format!(
        "rekor-witness/{} (transparency-log witness feeder)",
        env!("CARGO_PKG_VERSION")
    )
}

/// One pulled log, validated by [`Feeder::new`].
#[derive(Clone, Debug)]
pub struct FeederConfig {
    /// For a tlog-tiles log, its checkpoint origin: a checkpoint with another
    /// origin is refused. For Rekor v1, a short name for the whole server (by
    /// convention its host, e.g. `rekor.sigstage.dev`); shard origins are read
    /// from each shard's checkpoint. Used as the `log` label of metrics that
    /// precede knowing a trusted origin, so it must be operator-chosen.
    pub name: String,
    /// The log's base URL.
    pub url: LogUrl,
    /// The log's API.
    pub kind: LogKind,
    /// Time between polls while the log is healthy (±10 % jitter).
    pub poll_interval: Duration,
    /// Cap on the exponential backoff after failures (±10 % jitter).
    pub max_backoff: Duration,
    /// Limit on one HTTP request, from connecting to the end of the body.
    pub request_timeout: Duration,
    /// New entries whose inclusion is checked on each advance (0 disables the
    /// inclusion duty), at most [`MAX_INCLUSION_SAMPLES`].
    pub inclusion_samples: usize,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl FeederConfig {
    /// A configuration with the default interval, backoff, timeout, samples and
    /// user agent.
    pub fn new(name: &str, url: &str, kind: LogKind) -> Result<FeederConfig> {
        Ok(FeederConfig {
            name: name.to_owned(),
            url: LogUrl::parse(url)?,
            kind,
            poll_interval: DEFAULT_POLL_INTERVAL,
            max_backoff: DEFAULT_MAX_BACKOFF,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            inclusion_samples: DEFAULT_INCLUSION_SAMPLES,
            user_agent: default_user_agent(),
        })
    }

    fn validate(&self) -> Result<()> {
        let invalid = |detail: String| {
            Err(Error::Config {
                detail: format!("feeder {:?}: {detail}", self.name),
            })
        };
        if self.name.is_empty() || self.name.chars().any(char::is_control) {
            return invalid("name is empty or has control characters".into());
        }
        if self.poll_interval.is_zero() || self.request_timeout.is_zero() {
            return invalid("poll interval and request timeout must be positive".into());
        }
        if self.max_backoff < self.poll_interval {
            return invalid("max backoff is below the poll interval".into());
        }
        if self.inclusion_samples > MAX_INCLUSION_SAMPLES {
            return invalid(format!(
                "{} inclusion samples, over the limit of {MAX_INCLUSION_SAMPLES}",
                self.inclusion_samples
            ));
        }
        Ok(())
    }

    /// The polling schedule of this log.
    pub fn schedule(&self) -> PollSchedule {
        PollSchedule {
            poll_interval: self.poll_interval,
            max_backoff: self.max_backoff,
        }
    }
}

/// What one poll did, per origin.
#[derive(Debug)]
pub struct PollOutcome {
    /// One line per origin the log served (one for a tiles log, one per shard
    /// for Rekor v1), oldest shard first.
    pub logs: Vec<LogOutcome>,
}

impl PollOutcome {
    /// Whether nothing failed.
    pub fn is_healthy(&self) -> bool {
        !self
            .logs
            .iter()
            .any(|log| matches!(log.result, LogResult::Failed(_) | LogResult::Refused(_)))
    }

    /// The outcome for one origin.
    pub fn log(&self, origin: &str) -> Option<&LogOutcome> {
        self.logs.iter().find(|log| log.origin == origin)
    }
}

/// What one poll did for one origin.
#[derive(Debug)]
pub struct LogOutcome {
    /// The checkpoint's origin; the feeder's name when the checkpoint could not
    /// be read.
    pub origin: String,
    /// The checkpoint's tree size.
    pub size: u64,
    /// What happened to it.
    pub result: LogResult,
}

/// The fate of one checkpoint.
#[derive(Debug)]
pub enum LogResult {
    /// The witness cosigned it, with a proof from `old_size`.
    Cosigned {
        old_size: u64,
        cosignatures: Vec<String>,
    },
    /// The witness already cosigned this tree.
    UpToDate,
    /// The witness does not trust this origin; nothing was submitted.
    NotTrusted,
    /// The witness refused it (and counted the refusal itself); logged.
    Refused(Error),
    /// Not submitted: the log failed a check of the feeder's, or could not be
    /// fetched; counted and logged.
    Failed(Error),
}

/// A pulled log, ready to poll.
pub struct Feeder {
    kind: FeederKind,
}

enum FeederKind {
    RekorV1(rekor_v1::RekorV1Feeder),
    Tiles(tiles::TilesFeeder),
}

impl Feeder {
    /// Checks the configuration and builds the HTTP client.
    pub fn new(
        config: &FeederConfig,
        sink: Arc<dyn CheckpointSink>,
        metrics: Arc<WitnessMetrics>,
    ) -> Result<Feeder> {
        config.validate()?;
        let context = FeederContext {
            name: config.name.clone(),
            url: config.url.clone(),
            http: http::HttpFetcher::new(
                config.request_timeout,
                &config.user_agent,
                metrics.clone(),
            )?,
            sink,
            metrics,
            inclusion_samples: config.inclusion_samples,
        };
        let kind = match config.kind {
            LogKind::RekorV1 => FeederKind::RekorV1(rekor_v1::RekorV1Feeder::new(context)),
            LogKind::Tiles => FeederKind::Tiles(tiles::TilesFeeder::new(context)),
        };
        Ok(Feeder { kind })
    }

    /// Polls the log once: fetches its checkpoints and submits every one that
    /// advances past what the witness cosigned. An `Err` means the log's
    /// checkpoints could not be fetched or parsed at all; per-origin failures are
    /// in the outcome. Either way the failure was already counted and logged.
    pub async fn poll_once(&mut self) -> Result<PollOutcome> {
        match &mut self.kind {
            FeederKind::RekorV1(feeder) => feeder.poll_once().await,
            FeederKind::Tiles(feeder) => feeder.poll_once().await,
        }
    }

    /// Checks that entry `index` (for Rekor v1 the virtual index over all
    /// shards, for tlog-tiles the leaf index) is included in the tree the
    /// witness cosigned for its log, with the entry and proof the log serves
    /// now. A failure of the log is counted and logged.
    pub async fn check_inclusion(&mut self, index: u64) -> Result<()> {
        match &mut self.kind {
            FeederKind::RekorV1(feeder) => feeder.check_inclusion(index).await,
            FeederKind::Tiles(feeder) => feeder.check_inclusion(index).await,
        }
    }
}

/// What both kinds of feeders share.
struct FeederContext {
    name: String,
    url: LogUrl,
    http: http::HttpFetcher,
    sink: Arc<dyn CheckpointSink>,
    metrics: Arc<WitnessMetrics>,
    inclusion_samples: usize,
}

impl FeederContext {
    /// Counts and logs a failure under `log` (a trusted origin, or the
    /// configured name). Bad data from the log is a verification failure;
    /// failed fetches were counted by the fetcher, and the witness's own
    /// failures (signer, store) are only logged.
    fn report(&self, log: &str, error: &Error) {
        if is_log_fault(error) {
            self.metrics.verify_failure(log, error);
            tracing::warn!(log, reason = error.kind(), %error, "log failed verification");
        } else {
            tracing::warn!(log, reason = error.kind(), %error, "poll failed");
        }
    }

    /// The entries waiting for `origin`, for `witness_backfill_queue_depth`.
    fn set_backlog(&self, origin: &str, entries: u64) {
        self.metrics.backfill_queue_depth(origin, entries);
    }

    /// Shared tail of every poll step: counts a failure and turns it into the
    /// origin's outcome, or an untrusted origin into `NotTrusted`.
    fn outcome(&self, origin: &str, size: u64, result: Result<LogResult>) -> LogOutcome {
        let result = match result {
            Ok(LogResult::Refused(error)) => {
                tracing::warn!(
                    log = origin,
                    reason = error.kind(),
                    %error,
                    "the witness refused the log's checkpoint"
                );
                LogResult::Refused(error)
            }
            Ok(result) => result,
            Err(Error::UnknownOrigin { .. }) => LogResult::NotTrusted,
            Err(error) => {
                self.report(origin, &error);
                LogResult::Failed(error)
            }
        };
        LogOutcome {
            origin: origin.to_owned(),
            size,
            result,
        }
    }
}

/// Whether an error the feeder ran into means the log served something wrong
/// (as opposed to the network, the witness's own store or signer, or a race
/// between replicas).
fn is_log_fault(error: &Error) -> bool {
    !matches!(
        error,
        Error::Fetch { .. }
            | Error::Signer { .. }
            | Error::Storage { .. }
            | Error::Archive { .. }
            | Error::Config { .. }
            | Error::UnknownOrigin { .. }
            | Error::NothingCosigned { .. }
            | Error::OldSizeMismatch { .. }
    )
}

/// What to do with a log's checkpoint given the tree the witness cosigned.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Submit with a proof from `old_size` (0: first checkpoint, empty proof).
    Advance { old_size: u64 },
    /// The witness already cosigned this tree.
    UpToDate,
}

/// Compares a log's checkpoint with the cosigned tree. A smaller tree is the
/// log's fault and is not submitted: no proof can show it consistent, and an
/// old checkpoint served again proves nothing. Another root at the cosigned
/// size is submitted (with an empty proof), so the witness checks its
/// signature and keeps it as evidence.
fn plan(cosigned: Option<StoredTree>, size: u64, root: &Hash) -> Result<Plan> {
    let Some(cosigned) = cosigned else {
        return Ok(Plan::Advance { old_size: 0 });
    };
    if cosigned.size > size {
        return Err(Error::OldSizeAboveSize {
            old_size: cosigned.size,
            size,
        });
    }
    if cosigned.size == size && cosigned.root == *root {
        return Ok(Plan::UpToDate);
    }
    Ok(Plan::Advance {
        old_size: cosigned.size,
    })
}

/// The outcome of a submission to the witness.
fn submitted(old_size: u64, result: Result<Vec<String>>) -> LogResult {
    match result {
        Ok(cosignatures) => LogResult::Cosigned {
            old_size,
            cosignatures,
        },
        Err(Error::UnknownOrigin { .. }) => LogResult::NotTrusted,
        Err(error) => LogResult::Refused(error),
    }
}

/// The size the sink asks to prove from instead, when a racing replica or an
/// earlier poll moved the witness's state after it was read.
fn stored_size_on_mismatch(result: &Result<Vec<String>>) -> Option<u64> {
    match result {
        Err(Error::OldSizeMismatch { stored_size, .. }) => Some(*stored_size),
        _ => None,
    }
}

/// Up to `count` distinct leaf indexes drawn uniformly from `[old_size,
/// new_size)`, sorted; every index when there are no more than `count`.
fn sample_indexes(old_size: u64, new_size: u64, count: usize) -> Vec<u64> {
    let available = new_size.saturating_sub(old_size);
    if available <= count as u64 {
        return (old_size..new_size).collect();
    }
    let mut rng = rand::rng();
    let mut picked = std::collections::BTreeSet::new();
    // Terminates quickly: more than `count` indexes are available, and `count`
    // is at most MAX_INCLUSION_SAMPLES.
    while picked.len() < count {
        picked.insert(rng.random_range(old_size..new_size));
    }
    picked.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(size: u64, byte: u8) -> StoredTree {
        StoredTree {
            size,
            root: Hash([byte; 32]),
        }
    }

    #[test]
    fn shrinking_log_is_never_planned_for_submission_but_a_fork_is() {
        let root = Hash([1; 32]);
        assert_eq!(
            plan(Some(tree(10, 1)), 9, &root).unwrap_err().kind(),
            "old_size_above_size"
        );
        assert_eq!(
            plan(Some(tree(10, 2)), 10, &root).unwrap(),
            Plan::Advance { old_size: 10 }
        );
        assert_eq!(plan(Some(tree(10, 1)), 10, &root).unwrap(), Plan::UpToDate);
        assert_eq!(
            plan(Some(tree(10, 2)), 11, &root).unwrap(),
            Plan::Advance { old_size: 10 }
        );
        assert_eq!(
            plan(None, 11, &root).unwrap(),
            Plan::Advance { old_size: 0 }
        );
    }

    #[test]
    fn samples_are_distinct_new_entries() {
        assert_eq!(sample_indexes(5, 8, 4), vec![5, 6, 7]);
        assert!(sample_indexes(5, 5, 4).is_empty());
        assert!(sample_indexes(5, 100, 0).is_empty());
        for _ in 0..100 {
            let sample = sample_indexes(1_000, 1_010, 4);
            assert_eq!(sample.len(), 4);
            assert!(sample.windows(2).all(|w| w[0] < w[1]));
            assert!(sample.iter().all(|i| (1_000..1_010).contains(i)));
        }
    }

    #[test]
    fn log_urls_are_http_prefixes_without_credentials() {
        assert_eq!(
            LogUrl::parse("https://rekor.sigstage.dev")
                .unwrap()
                .as_str(),
            "https://rekor.sigstage.dev/"
        );
        let prefix = LogUrl::parse("https://example.com/tevere").unwrap();
        assert_eq!(
            prefix.join("tile/0/000").unwrap().as_str(),
            "https://example.com/tevere/tile/0/000"
        );
        for bad in [
            "file:///etc/passwd",
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "https://example.com/?a=b",
            "https://example.com/#x",
            "not a url",
        ] {
            assert_eq!(LogUrl::parse(bad).unwrap_err().kind(), "config", "{bad}");
        }
    }

    #[test]
    fn config_limits_are_enforced() {
        let good = FeederConfig::new("log", "https://example.com/", LogKind::Tiles).unwrap();
        assert!(good.validate().is_ok());
        let mut bad = good.clone();
        bad.inclusion_samples = MAX_INCLUSION_SAMPLES + 1;
        assert!(bad.validate().is_err());
        let mut bad = good.clone();
        bad.max_backoff = bad.poll_interval / 2;
        assert!(bad.validate().is_err());
        let mut bad = good.clone();
        bad.poll_interval = Duration::ZERO;
        assert!(bad.validate().is_err());
        let mut bad = good;
        bad.name = "a\nb".into();
        assert!(bad.validate().is_err());
    }
}
