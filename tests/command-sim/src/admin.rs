//! Test-only admin API under `/_sim/` (no auth): inspect enrollments and requests, reset the
//! logs, and release held requests.

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::json;

use crate::api::enrollment::{self, Release};
use crate::state::AppState;

/// Path prefix of the admin API.
pub const PREFIX: &str = "/_sim/";

fn reply(status: StatusCode, value: &impl Serialize) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header(("Content-Type", "application/json"))
        .body(serde_json::to_string(value).unwrap_or_else(|_| "null".to_string()))
}

fn error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    reply(status, &json!({"error": message.into()}))
}

/// Handles a request whose path starts with [`PREFIX`].
pub fn handle(state: &AppState, req: &HttpRequest) -> HttpResponse {
    let path = req.path().trim_end_matches('/');
    let segments: Vec<&str> = path
        .strip_prefix("/_sim")
        .unwrap_or_default()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let method = req.method();
    match (method, segments.as_slice()) {
        (&Method::GET, ["enrollments"]) => reply(StatusCode::OK, &state.logs().enrollments),
        (&Method::GET, ["enrollments", "count"]) => count(state, req.query_string()),
        (&Method::POST, ["enrollments", id, action]) => {
            let action = match *action {
                "issue" => Release::Issue,
                "deny" => Release::Deny,
                _ => return error(StatusCode::NOT_FOUND, "unknown admin action"),
            };
            let Ok(id) = id.parse::<i64>() else {
                return error(StatusCode::BAD_REQUEST, "request id must be an integer");
            };
            match enrollment::release(state, id, action) {
                Ok(record) => reply(StatusCode::OK, &record),
                Err(e) => error(StatusCode::CONFLICT, e),
            }
        }
        (&Method::GET, ["requests"]) => reply(StatusCode::OK, &state.logs().requests),
        (&Method::POST, ["reset"]) => {
            let mut logs = state.logs();
            logs.enrollments.clear();
            logs.requests.clear();
            reply(StatusCode::OK, &json!({"reset": true}))
        }
        _ => error(StatusCode::NOT_FOUND, "unknown admin endpoint"),
    }
}

fn count(state: &AppState, raw_query: &str) -> HttpResponse {
    let pairs = match web::Query::<Vec<(String, String)>>::from_query(raw_query) {
        Ok(q) => q.into_inner(),
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let wanted = pairs
        .iter()
        .find(|(k, _)| k == "csr_sha256")
        .map(|(_, v)| v.trim().to_ascii_lowercase());
    let logs = state.logs();
    let count = match wanted {
        Some(hash) => logs
            .enrollments
            .iter()
            .filter(|r| r.csr_sha256 == hash)
            .count(),
        None => logs.enrollments.len(),
    };
    reply(StatusCode::OK, &json!({ "count": count }))
}
