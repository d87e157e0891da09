//! Re-cosigning: every log's latest checkpoint is cosigned again with a fresh
//! timestamp once its newest cosignature is `checkpoint_interval` old, even if
//! the log did not grow, so consumers can tell a live witness from a stale
//! view. `witness_checkpoint_age_seconds` stays below the interval plus one
//! tick.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::watch;

use crate::Result;
use crate::service::now_seconds;
use crate::service::witness::Witness;

/// How many logs are re-cosigned at once: enough to keep the signer busy,
/// few enough to leave room for pushed checkpoints.
const CONCURRENCY: usize = 8;

/// The tick: a twelfth of the interval, between 1 s and 5 min.
pub fn tick(interval: Duration) -> Duration {
    (interval / 12).clamp(Duration::from_secs(1), Duration::from_secs(300))
}

/// Re-cosigns, once, every log whose newest cosignature is at least
/// `interval` old. Returns how many were re-cosigned.
pub async fn recosign_due(witness: &Arc<Witness>, interval: Duration) -> Result<usize> {
    let now = now_seconds();
    let mut due = Vec::new();
    for log in witness.trusted_logs() {
        if let Some(state) = witness.store().state(&log.origin).await? {
            witness
                .metrics()
                .cosigned_at(&log.origin, state.cosigned_at);
            if now.saturating_sub(state.cosigned_at) >= interval.as_secs() {
                due.push(log.origin.clone());
            }
        }
    }
    let results: Vec<(String, Result<Option<u64>>)> = futures::stream::iter(due)
        .map(|origin| {
            let witness = witness.clone();
            async move {
                let result = witness.recosign(&origin).await;
                (origin, result)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut done = 0;
    for (origin, result) in results {
        match result {
            Ok(Some(_)) => done += 1,
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(origin, error = %error, "re-cosigning failed; retrying next tick");
            }
        }
    }
    Ok(done)
}

/// Runs [`recosign_due`] every tick until `shutdown` turns true.
pub async fn run(witness: Arc<Witness>, interval: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(tick(interval));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = ticker.tick() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        if let Err(error) = recosign_due(&witness, interval).await {
            tracing::warn!(error = %error, "re-cosigning pass failed");
        }
    }
}
