//! `GET /logs` (JSON), the HTML status page, `POST /verify-inclusion`,
//! `/healthz` and `/readyz`. Skeleton until the status work lands.

use axum::Router;

use crate::Gateway;

/// The routes of this module.
pub(crate) fn routes() -> Router<Gateway> {
    Router::new()
}
