//! Test-only admin API under `/_sim/` (no auth): inspect enrollments, requests and token
//! requests, reset the logs, release held requests, revoke tokens, change token lifetimes and
//! switch fault injection.

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::enrollment::{self, Release};
use crate::gce;
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
pub fn handle(state: &AppState, req: &HttpRequest, body: &[u8]) -> HttpResponse {
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
            state.tokens.clear_requests();
            reply(StatusCode::OK, &json!({"reset": true}))
        }
        (&Method::GET, ["token-requests"]) => reply(StatusCode::OK, &state.tokens.requests()),
        (&Method::POST, ["tokens", "revoke"]) => {
            let revoked = state.tokens.revoke_all();
            reply(StatusCode::OK, &json!({ "revoked": revoked }))
        }
        (&Method::POST, ["oauth-clients", id, "lifetime"]) => lifetime(state, id, body),
        (&Method::GET, ["faults"]) => reply(StatusCode::OK, &json!({"rules": state.faults.list()})),
        (&Method::POST, ["faults"]) => match state.faults.replace(body) {
            Ok(rules) => {
                tracing::info!(rules = rules.len(), "fault set replaced");
                reply(StatusCode::OK, &json!({ "rules": rules }))
            }
            Err(e) => error(StatusCode::BAD_REQUEST, e),
        },
        (&Method::DELETE, ["faults"]) => {
            state.faults.clear();
            reply(StatusCode::OK, &json!({"rules": []}))
        }
        _ => error(StatusCode::NOT_FOUND, "unknown admin endpoint"),
    }
}

/// Client ids whose token lifetime can be changed: the OAuth clients, `gce` and the Entra client.
fn lifetime(state: &AppState, id: &str, body: &[u8]) -> HttpResponse {
    let known = state.config.oauth_client(id).is_some()
        || id == gce::GCE_CLIENT
        || state
            .config
            .entra
            .as_ref()
            .is_some_and(|e| e.client_id == id);
    if !known {
        return error(StatusCode::NOT_FOUND, format!("unknown client {id}"));
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        secs: u64,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(b) => {
            state.tokens.set_lifetime(id, b.secs);
            reply(
                StatusCode::OK,
                &json!({"client_id": id, "token_lifetime_secs": b.secs}),
            )
        }
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            format!("body must be {{\"secs\": N}}: {e}"),
        ),
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
