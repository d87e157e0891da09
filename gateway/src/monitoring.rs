//! `GET <monitoring prefix>/<origin hash>/checkpoint`: the latest cosigned
//! checkpoint of a log, with the log's signatures and the witness's
//! cosignatures, found by the lowercase hex SHA-256 of the log's origin.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use witness_proto::witness as pb;

use crate::{Gateway, GatewayError};

/// The spec lets a witness serve a checkpoint up to an hour old so that the
/// prefix can sit behind a CDN; a minute keeps monitors close to the witness
/// while a burst of monitors still costs the witness one request a minute.
const CACHE_CONTROL_VALUE: &str = "public, max-age=60";

/// The index is rebuilt from `ListLogs` on a miss, at most this often: a flood
/// of requests for random hashes costs the witness one call per interval.
const REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// Origin hash (lowercase hex) to origin, learnt from the witness's log list.
#[derive(Default)]
pub(crate) struct OriginIndex {
    // A std mutex: it is never held across an await.
    state: Mutex<IndexState>,
}

#[derive(Default)]
struct IndexState {
    by_hash: HashMap<String, String>,
    refreshed_at: Option<Instant>,
}

impl OriginIndex {
    fn lookup(&self, origin_hash: &str) -> Lookup {
        let Ok(state) = self.state.lock() else {
            return Lookup::Refresh;
        };
        match state.by_hash.get(origin_hash) {
            Some(origin) => Lookup::Known(origin.clone()),
            None if state
                .refreshed_at
                .is_some_and(|at| at.elapsed() < REFRESH_INTERVAL) =>
            {
                Lookup::Unknown
            }
            None => Lookup::Refresh,
        }
    }

    fn replace(&self, logs: &[pb::Log]) {
        if let Ok(mut state) = self.state.lock() {
            state.by_hash = logs
                .iter()
                .map(|log| (origin_hash(&log.origin), log.origin.clone()))
                .collect();
            state.refreshed_at = Some(Instant::now());
        }
    }

    fn get(&self, origin_hash: &str) -> Option<String> {
        self.state
            .lock()
            .ok()
            .and_then(|state| state.by_hash.get(origin_hash).cloned())
    }
}

enum Lookup {
    Known(String),
    Unknown,
    Refresh,
}

/// The lowercase hex SHA-256 of an origin, as in the monitoring path.
pub(crate) fn origin_hash(origin: &str) -> String {
    hex::encode(Sha256::digest(origin.as_bytes()))
}

fn is_origin_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub(crate) async fn checkpoint(
    State(gateway): State<Gateway>,
    Path(origin_hash): Path<String>,
) -> Result<Response, GatewayError> {
    // Anything but a lowercase hash names no log; it is refused before it can
    // trigger a refresh of the index.
    if !is_origin_hash(&origin_hash) {
        return Err(GatewayError::NotFound);
    }
    let origin = match gateway.origins.lookup(&origin_hash) {
        Lookup::Known(origin) => origin,
        Lookup::Unknown => return Err(GatewayError::NotFound),
        Lookup::Refresh => {
            let logs = gateway
                .trusted_logs()
                .await
                .map_err(|status| GatewayError::from_witness(&status))?;
            gateway.origins.replace(&logs);
            gateway
                .origins
                .get(&origin_hash)
                .ok_or(GatewayError::NotFound)?
        }
    };
    let served = gateway
        .witness
        .clone()
        .get_checkpoint(pb::GetCheckpointRequest { origin })
        .await
        .map_err(|status| GatewayError::from_witness(&status))?
        .into_inner();
    Ok((
        [
            (CONTENT_TYPE, "text/plain; charset=utf-8"),
            (CACHE_CONTROL, CACHE_CONTROL_VALUE),
        ],
        served.checkpoint,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_hash_is_lowercase_hex_sha256() {
        let hash = origin_hash("example.com/behind-the-sofa");
        assert!(is_origin_hash(&hash));
        assert!(!is_origin_hash(&hash.to_uppercase()));
        assert!(!is_origin_hash(&hash[1..]));
    }
}
