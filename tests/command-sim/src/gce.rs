//! The GKE/GCE metadata server (plain HTTP, its own listener from `--gce-metadata-listen`):
//! Google-style OIDC ID tokens for the pod's Google service account.

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::jwt::Claims;
use crate::state::AppState;
use crate::tokens;

/// `iss` of Google ID tokens.
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";

/// Client id under which metadata-server calls are logged and lifetimes are overridden.
pub const GCE_CLIENT: &str = "gce";

const V1: &str = "/computeMetadata/v1/";

fn text(status: StatusCode, body: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header(("Content-Type", "text/plain; charset=utf-8"))
        .insert_header(("Metadata-Flavor", "Google"))
        .body(body.into())
}

/// Handles every request of the metadata listener.
pub fn handle(state: &AppState, req: &HttpRequest) -> HttpResponse {
    let path = req.path();
    let Some(key) = path.strip_prefix(V1) else {
        return if path == "/" {
            text(StatusCode::OK, "computeMetadata/\n")
        } else {
            text(StatusCode::NOT_FOUND, "Not Found\n")
        };
    };
    let key = key.trim_end_matches('/');
    let identity = identity_account(key);
    let flavor_ok = req
        .headers()
        .get("Metadata-Flavor")
        .and_then(|v| v.to_str().ok())
        == Some("Google");
    let resp = if req.method() != Method::GET {
        text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n")
    } else if !flavor_ok {
        text(
            StatusCode::FORBIDDEN,
            format!(
                "Your client does not have permission to get URL {path} from this server. \
                 Missing Metadata-Flavor:Google header.\n"
            ),
        )
    } else {
        match (key, identity) {
            (_, Some(account)) => id_token(state, req, key, account),
            ("project/project-id", _) => text(StatusCode::OK, state.config.gce.project_id.clone()),
            (k, _) if account_of(k, "email").is_some() && state.config.gce.bound => {
                text(StatusCode::OK, state.config.gce.email.clone())
            }
            _ => text(
                StatusCode::NOT_FOUND,
                format!("GCE metadata '{key}' not defined\n"),
            ),
        }
    };
    if identity.is_some() {
        let mut rec = tokens::record("gce", GCE_CLIENT, "metadata");
        rec.audience = query(req, "audience");
        rec.status = resp.status().as_u16();
        if !resp.status().is_success() {
            rec.error = Some(
                match resp.status().as_u16() {
                    403 => "missing Metadata-Flavor header",
                    404 => "not defined",
                    400 => "bad request",
                    _ => "error",
                }
                .to_string(),
            );
        }
        state.tokens.record(rec);
    }
    resp
}

/// `instance/service-accounts/<account>/<leaf>` → `<account>`.
fn account_of<'a>(key: &'a str, leaf: &str) -> Option<&'a str> {
    key.strip_prefix("instance/service-accounts/")?
        .strip_suffix(leaf)?
        .strip_suffix('/')
        .filter(|a| !a.is_empty() && !a.contains('/'))
}

fn identity_account(key: &str) -> Option<&str> {
    account_of(key, "identity")
}

fn query(req: &HttpRequest, name: &str) -> Option<String> {
    web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .ok()?
        .into_inner()
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn id_token(state: &AppState, req: &HttpRequest, key: &str, account: &str) -> HttpResponse {
    let gce = &state.config.gce;
    if !gce.bound || (account != "default" && account != gce.email) {
        return text(
            StatusCode::NOT_FOUND,
            format!("GCE metadata '{key}' not defined\n"),
        );
    }
    let Some(audience) = query(req, "audience").filter(|a| !a.is_empty()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "non-empty audience parameter required\n",
        );
    };
    // `full` would add instance details on GCE; GKE's metadata server sends the same claims.
    match query(req, "format").as_deref() {
        None | Some("") | Some("standard") | Some("full") => {}
        Some(other) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("invalid format parameter {other:?}: use standard or full\n"),
            )
        }
    }
    let mut claims = Claims::new();
    claims.insert("iss".into(), json!(GOOGLE_ISSUER));
    claims.insert("aud".into(), json!(audience));
    claims.insert("azp".into(), json!(gce.subject));
    claims.insert("sub".into(), json!(gce.subject));
    claims.insert("email".into(), json!(gce.email));
    claims.insert("email_verified".into(), json!(true));
    let lifetime = state.tokens.lifetime(GCE_CLIENT, gce.token_lifetime_secs);
    match state.tokens.mint(claims, lifetime) {
        Ok(token) => text(StatusCode::OK, token),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::account_of;

    #[test]
    fn accounts() {
        assert_eq!(
            account_of("instance/service-accounts/default/identity", "identity"),
            Some("default")
        );
        assert_eq!(
            account_of("instance/service-accounts//identity", "identity"),
            None
        );
        assert_eq!(
            account_of("instance/service-accounts/a/b/identity", "identity"),
            None
        );
    }
}
