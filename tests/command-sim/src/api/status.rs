//! `GET /Status/Endpoints` (command-api.md §5.1): the authentication test and health check.

use super::{ok, Answer, Endpoint};
use crate::state::AppState;

/// Lists `"METHOD /Path"` for every endpoint of the emulated version.
pub fn endpoints(state: &AppState) -> Answer {
    let list: Vec<String> = Endpoint::available(state)
        .map(|e| format!("{} {}", e.method(), e.path()))
        .collect();
    ok(&list)
}
