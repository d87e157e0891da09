//! The admin API behind OIDC bearer tokens. Skeleton until the admin work
//! lands.

use serde::Deserialize;

/// The admin API's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The OIDC issuer URL.
    pub issuer: String,
    /// The audience tokens must be issued for.
    pub audience: String,
}
