//! The polling loop: one task per pulled log, polling at a jittered interval,
//! backing off exponentially (also jittered) while the log fails, until
//! shutdown.
//!
//! The backfill queue lives in the feeders: each poll lists every checkpoint
//! the witness is behind on (for Rekor v1, one per lagging shard) before
//! submitting them one by one, and `witness_backfill_queue_depth{log}` is set
//! for each origin to the entries between the witness's cosigned size and the
//! newest size the log served; it drops to 0 when that checkpoint is cosigned
//! and stays up while it cannot be.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use tracing::Instrument as _;

use super::{CheckpointSink, Feeder, FeederConfig};
use crate::Result;
use crate::service::metrics::WitnessMetrics;

/// Relative spread of every wait: ±10 %.
const JITTER: f64 = 0.1;

/// When a log is polled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollSchedule {
    /// The wait between polls of a healthy log.
    pub poll_interval: Duration,
    /// The longest wait after failures.
    pub max_backoff: Duration,
}

impl PollSchedule {
    /// The wait after `consecutive_failures` failed polls in a row, before
    /// jitter: the poll interval while healthy, then twice as long per failure,
    /// up to the cap.
    pub fn base_delay(&self, consecutive_failures: u32) -> Duration {
        if consecutive_failures == 0 {
            return self.poll_interval;
        }
        let factor = 1u32 << consecutive_failures.min(31);
        self.poll_interval
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// [`PollSchedule::base_delay`] scaled by a random factor in [0.9, 1.1], so
    /// feeders that failed together do not retry in lockstep. The cap applies
    /// before the jitter, so feeders waiting at the cap spread out too.
    pub fn delay(&self, consecutive_failures: u32) -> Duration {
        let jitter = rand::rng().random_range(1.0 - JITTER..=1.0 + JITTER);
        self.base_delay(consecutive_failures).mul_f64(jitter)
    }
}

/// Polls one log until `shutdown` completes: first at once, then per the
/// configured [`PollSchedule`]. Fails only on an invalid configuration.
pub async fn run_feeder(
    config: FeederConfig,
    sink: Arc<dyn CheckpointSink>,
    metrics: Arc<WitnessMetrics>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let feeder = Feeder::new(&config, sink, metrics)?;
    let span = tracing::info_span!("feeder", log = %config.name);
    poll_until(feeder, config.schedule(), shutdown)
        .instrument(span)
        .await;
    Ok(())
}

async fn poll_until(
    mut feeder: Feeder,
    schedule: PollSchedule,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut failures = 0u32;
    loop {
        // A poll in flight is dropped on shutdown: the witness stores state by
        // compare-and-swap, so an interrupted submission changes nothing or
        // completes, and the next start polls again.
        let healthy = tokio::select! {
            biased;
            () = &mut shutdown => return,
            outcome = feeder.poll_once() => outcome.is_ok_and(|outcome| outcome.is_healthy()),
        };
        // Failures were counted and logged where they happened.
        failures = if healthy {
            0
        } else {
            failures.saturating_add(1)
        };
        let delay = schedule.delay(failures);
        if failures > 0 {
            tracing::info!(failures, ?delay, "backing off");
        }
        tokio::select! {
            biased;
            () = &mut shutdown => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_interval_up_to_the_cap() {
        let schedule = PollSchedule {
            poll_interval: Duration::from_secs(10),
            max_backoff: Duration::from_secs(300),
        };
        let waits: Vec<u64> = (0..7)
            .map(|failures| schedule.base_delay(failures).as_secs())
            .collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(schedule.base_delay(u32::MAX), Duration::from_secs(300));
        for failures in [0, 3, 40] {
            let base = schedule.base_delay(failures).as_secs_f64();
            for _ in 0..50 {
                let wait = schedule.delay(failures).as_secs_f64();
                assert!(
                    (0.9 * base..=1.1 * base).contains(&wait),
                    "{wait} vs {base}"
                );
            }
        }
    }
}
