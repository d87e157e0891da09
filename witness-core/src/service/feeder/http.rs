//! The feeders' HTTP client: one GET with a timeout and a size cap per kind of
//! resource, so a hostile or broken log can neither stall a feeder nor make it
//! buffer more than the largest legitimate response.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{StatusCode, Url};

use crate::merkle::HASH_SIZE;
use crate::note::MAX_NOTE_SIZE;
use crate::rekor::MAX_REKOR_JSON_SIZE;
use crate::service::metrics::WitnessMetrics;
use crate::tiles::TILE_WIDTH;
use crate::{Error, Result};

/// Redirects followed per request, all within the configured URL's origin
/// (a path moved on the same server, a trailing slash): more is a loop.
const MAX_REDIRECTS: usize = 5;

/// The feeders' redirect policy. The operator configured the log's URL, and
/// that origin (scheme, host, port) is the only one the witness talks to for
/// it: a redirect elsewhere is refused, never followed, with an error naming
/// where it pointed. Checkpoints and tiles are authenticated whatever serves
/// them, so this is not about their integrity; it keeps a log (or whoever
/// controls its responses) from steering the witness at other hosts and ports,
/// internal ones included, and makes a moved log an operator's decision, not
/// a silent one. Redirects within the origin are followed up to
/// [`MAX_REDIRECTS`], which also ends loops.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same_origin = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if !same_origin {
            let error = format!(
                "HTTP status {}: redirect to another origin ({}) refused",
                attempt.status(),
                attempt.url().origin().ascii_serialization()
            );
            attempt.error(error)
        } else if attempt.previous().len() > MAX_REDIRECTS {
            let error = format!(
                "HTTP status {}: more than {MAX_REDIRECTS} redirects (a loop?)",
                attempt.status()
            );
            attempt.error(error)
        } else {
            attempt.follow()
        }
    })
}

/// What is being fetched; sets the size cap and the metrics label.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Resource {
    /// A tlog-tiles checkpoint note.
    Checkpoint,
    /// Rekor v1 `GET /api/v1/log` (every shard's signed tree head).
    LogInfo,
    /// Rekor v1 `GET /api/v1/log/proof`.
    ConsistencyProof,
    /// Rekor v1 `GET /api/v1/log/entries`.
    Entry,
    /// A tlog-tiles Merkle tree tile.
    Tile,
    /// A tlog-tiles entry bundle of this many entries.
    EntryBundle { entries: u16 },
}

impl Resource {
    /// The largest body accepted. Each is the largest its parser accepts, so
    /// nothing a parser would refuse is ever buffered whole.
    fn max_size(self) -> usize {
        match self {
            Resource::Checkpoint => MAX_NOTE_SIZE,
            Resource::LogInfo | Resource::ConsistencyProof | Resource::Entry => MAX_REKOR_JSON_SIZE,
            // A full tile is exactly 256 hashes.
            Resource::Tile => TILE_WIDTH as usize * HASH_SIZE,
            // Entries are uint16 length-prefixed, so a bundle of n entries is at
            // most n * (2 + 65535) bytes (16 MiB for a full bundle).
            Resource::EntryBundle { entries } => usize::from(entries) * (2 + usize::from(u16::MAX)),
        }
    }

    /// The `kind` label of `witness_log_fetches_total`.
    fn metric_kind(self) -> &'static str {
        match self {
            Resource::Checkpoint | Resource::LogInfo => "checkpoint",
            Resource::ConsistencyProof => "proof",
            Resource::Tile => "tile",
            Resource::Entry | Resource::EntryBundle { .. } => "entry",
        }
    }
}

/// A shared HTTP client that counts every request in the metrics.
pub(crate) struct HttpFetcher {
    client: reqwest::Client,
    metrics: Arc<WitnessMetrics>,
}

impl HttpFetcher {
    /// A client whose requests each end within `timeout`, body included.
    pub(crate) fn new(
        timeout: Duration,
        user_agent: &str,
        metrics: Arc<WitnessMetrics>,
    ) -> Result<HttpFetcher> {
        let client = reqwest::Client::builder()
            .user_agent(user_agent)
            .timeout(timeout)
            // A log that does not accept a connection within the timeout is down;
            // the same bound keeps a slow handshake from eating the whole budget
            // unnoticed.
            .connect_timeout(timeout)
            .redirect(redirect_policy())
            .build()
            .map_err(|e| Error::Config {
                detail: format!("HTTP client: {}", error_chain(&e)),
            })?;
        Ok(HttpFetcher { client, metrics })
    }

    /// GETs `url`; any status other than 2xx is an error.
    pub(crate) async fn get(&self, log: &str, url: Url, resource: Resource) -> Result<Vec<u8>> {
        let display = url.to_string();
        self.get_if_found(log, url, resource)
            .await?
            .ok_or(Error::Fetch {
                url: display,
                detail: format!("HTTP status {}", StatusCode::NOT_FOUND),
            })
    }

    /// GETs `url`; `Ok(None)` on 404 Not Found, for resources a log may delete
    /// (partial tiles once the full tile exists).
    pub(crate) async fn get_if_found(
        &self,
        log: &str,
        url: Url,
        resource: Resource,
    ) -> Result<Option<Vec<u8>>> {
        let result = self.fetch(url, resource).await;
        self.metrics
            .fetch(log, resource.metric_kind(), result.as_ref().map(|_| ()));
        result
    }

    async fn fetch(&self, url: Url, resource: Resource) -> Result<Option<Vec<u8>>> {
        let failed = |detail: String| Error::Fetch {
            url: url.to_string(),
            detail,
        };
        let mut response = self
            .client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| failed(error_chain(&e.without_url())))?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(failed(format!("HTTP status {status}")));
        }
        let max = resource.max_size();
        let too_large = || failed(format!("response body is over the limit of {max} bytes"));
        // A declared length over the cap is refused before reading anything; an
        // undeclared or lying one is caught while reading.
        let declared = response.content_length();
        if declared.is_some_and(|length| length > max as u64) {
            return Err(too_large());
        }
        let mut body = Vec::with_capacity(declared.map_or(0, |length| length as usize));
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| failed(error_chain(&e.without_url())))?
        {
            if body.len() + chunk.len() > max {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(body))
    }
}

/// An error and its sources, for a useful message ("error sending request" alone
/// does not say that the connection was refused).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_match_what_the_parsers_accept() {
        assert_eq!(Resource::Checkpoint.max_size(), 64 * 1024);
        assert_eq!(Resource::Tile.max_size(), 8192);
        assert_eq!(Resource::LogInfo.max_size(), 1 << 20);
        assert_eq!(
            Resource::EntryBundle { entries: 256 }.max_size(),
            256 * 65537
        );
        assert_eq!(Resource::EntryBundle { entries: 1 }.max_size(), 65537);
    }
}
