//! Protection of the API listener: rate limits, timeouts, concurrency limit,
//! load shedding. Skeleton: defaults only until the protection work lands.

use serde::Deserialize;

/// Limits of the API listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Limits {}
