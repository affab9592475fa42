//! The built-in OAuth 2.0 identity provider under `/_idp`: client-credentials token endpoint
//! (RFC 6749 §4.4), OpenID discovery document and JWKS.

use std::collections::HashMap;

use actix_web::http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use serde_json::{json, Value};

use crate::config::AuthStyle;
use crate::jwt::Claims;
use crate::state::AppState;
use crate::tokens;

/// Path prefix of the identity provider.
pub const PREFIX: &str = "/_idp";

/// Default `aud` when neither the request nor the client names one.
pub const DEFAULT_AUDIENCE: &str = "command";

/// The built-in provider's `iss`: `<sim url>/_idp`.
pub fn issuer(state: &AppState) -> String {
    format!("{}{PREFIX}", state.url)
}

/// An RFC 6749 §5.2 error answer.
#[derive(Debug, Clone)]
pub struct OAuthError {
    /// HTTP status.
    pub status: StatusCode,
    /// `error` code.
    pub error: &'static str,
    /// `error_description`.
    pub description: String,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            status,
            error,
            description: description.into(),
        }
    }

    fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    fn response(&self) -> HttpResponse {
        let mut resp = oauth_json(
            self.status,
            &json!({"error": self.error, "error_description": self.description}),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"command-sim\""),
            );
        }
        resp
    }
}

/// JSON answer with the no-cache headers token endpoints send.
pub fn oauth_json(status: StatusCode, value: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((CONTENT_TYPE, "application/json; charset=utf-8"))
        .insert_header(("Cache-Control", "no-store"))
        .insert_header(("Pragma", "no-cache"))
        .body(value.to_string())
}

/// Parses an `application/x-www-form-urlencoded` body; a repeated parameter is an error.
pub fn parse_form(req: &HttpRequest, body: &[u8]) -> Result<HashMap<String, String>, String> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mime = content_type.split(';').next().unwrap_or_default().trim();
    if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(format!(
            "the request must be application/x-www-form-urlencoded, not {content_type:?}"
        ));
    }
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())?;
    let pairs = web::Query::<Vec<(String, String)>>::from_query(text)
        .map_err(|e| format!("the body is not a valid form: {e}"))?
        .into_inner();
    let mut form = HashMap::new();
    for (k, v) in pairs {
        if form.contains_key(&k) {
            return Err(format!("parameter {k} is repeated"));
        }
        form.insert(k, v);
    }
    Ok(form)
}

/// `application/x-www-form-urlencoded` decoding of one component (`+` is a space).
pub fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Handles a request whose path starts with [`PREFIX`].
pub fn handle(state: &AppState, req: &HttpRequest, body: &[u8]) -> HttpResponse {
    let sub = req
        .path()
        .strip_prefix(PREFIX)
        .unwrap_or_default()
        .trim_end_matches('/');
    match (req.method(), sub) {
        (&Method::POST, "/token") => token(state, req, body),
        (_, "/token") => OAuthError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "the token endpoint accepts POST only",
        )
        .response(),
        (&Method::GET, "/.well-known/openid-configuration") => {
            let iss = issuer(state);
            oauth_json(
                StatusCode::OK,
                &json!({
                    "issuer": iss,
                    "token_endpoint": format!("{iss}/token"),
                    "jwks_uri": format!("{iss}/jwks"),
                    "grant_types_supported": ["client_credentials"],
                    "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                    "response_types_supported": ["token"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                }),
            )
        }
        (&Method::GET, "/jwks") => oauth_json(StatusCode::OK, &state.tokens.signer().jwks()),
        _ => oauth_json(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_found", "error_description": "unknown identity provider endpoint"}),
        ),
    }
}

fn token(state: &AppState, req: &HttpRequest, body: &[u8]) -> HttpResponse {
    let mut rec = tokens::record("idp", "", "none");
    let resp = match token_inner(state, req, body, &mut rec) {
        Ok(value) => oauth_json(StatusCode::OK, &value),
        Err(e) => {
            rec.error = Some(e.error.to_string());
            e.response()
        }
    };
    rec.status = resp.status().as_u16();
    state.tokens.record(rec);
    resp
}

/// Client id and secret from `Authorization: Basic base64(urlenc(id):urlenc(secret))`.
fn basic_credentials(req: &HttpRequest) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = req.headers().get(AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || OAuthError::invalid_client("malformed HTTP Basic client credentials");
    let value = value.to_str().map_err(|_| bad())?.trim();
    let Some((scheme, creds)) = value.split_once(' ') else {
        return Err(bad());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client(format!(
            "unsupported client authentication scheme {scheme}"
        )));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(creds.trim())
        .map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    Ok(Some((
        form_decode(id).ok_or_else(bad)?,
        form_decode(secret).ok_or_else(bad)?,
    )))
}

fn token_inner(
    state: &AppState,
    req: &HttpRequest,
    body: &[u8],
    rec: &mut tokens::TokenRequestRecord,
) -> Result<Value, OAuthError> {
    let form = parse_form(req, body).map_err(OAuthError::invalid_request)?;
    let param = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());
    rec.scope = param("scope").map(str::to_string);
    rec.audience = param("audience").map(str::to_string);

    let basic = basic_credentials(req)?;
    let (client_id, secret, style) = match basic {
        Some((id, secret)) => {
            if form.contains_key("client_secret") {
                return Err(OAuthError::invalid_request(
                    "more than one client authentication method (HTTP Basic and client_secret in the body)",
                ));
            }
            if param("client_id").is_some_and(|b| b != id) {
                return Err(OAuthError::invalid_request(
                    "client_id in the body does not match the HTTP Basic credentials",
                ));
            }
            (id, secret, AuthStyle::Basic)
        }
        None => match param("client_id") {
            Some(id) => (
                id.to_string(),
                form.get("client_secret").cloned().unwrap_or_default(),
                AuthStyle::Body,
            ),
            None => {
                return Err(OAuthError::invalid_client(
                    "client authentication required (HTTP Basic or client_id and client_secret in the body)",
                ))
            }
        },
    };
    rec.client_id = client_id.clone();
    rec.auth_style = match style {
        AuthStyle::Basic => "basic",
        _ => "body",
    };
    let Some(client) = state.config.oauth_client(&client_id) else {
        return Err(OAuthError::invalid_client(format!(
            "unknown client {client_id}"
        )));
    };
    match (client.auth_style, style) {
        (AuthStyle::Basic, AuthStyle::Body) => {
            return Err(OAuthError::invalid_client(
                "client authentication must use HTTP Basic",
            ))
        }
        (AuthStyle::Body, AuthStyle::Basic) => {
            return Err(OAuthError::invalid_client(
                "client authentication must use the request body",
            ))
        }
        _ => {}
    }
    if !constant_time_eq(client.client_secret.as_bytes(), secret.as_bytes()) {
        return Err(OAuthError::invalid_client(
            "client authentication failed: bad client secret",
        ));
    }
    match param("grant_type") {
        None => return Err(OAuthError::invalid_request("grant_type is required")),
        Some("client_credentials") => {}
        Some(other) => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("grant_type {other} is not supported; use client_credentials"),
            ))
        }
    }
    let scopes: Vec<&str> = param("scope")
        .map(|s| s.split_whitespace().collect())
        .unwrap_or_default();
    if !client.allowed_scopes.is_empty() {
        if let Some(bad) = scopes
            .iter()
            .find(|s| !client.allowed_scopes.iter().any(|a| a == *s))
        {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                format!("scope {bad} is not allowed for client {client_id}"),
            ));
        }
    }
    let audience = param("audience")
        .map(str::to_string)
        .or_else(|| client.audience.clone().filter(|a| !a.is_empty()))
        .unwrap_or_else(|| DEFAULT_AUDIENCE.to_string());

    let mut claims = Claims::new();
    claims.insert("iss".into(), json!(issuer(state)));
    claims.insert("sub".into(), json!(client_id));
    claims.insert("client_id".into(), json!(client_id));
    claims.insert("azp".into(), json!(client_id));
    claims.insert("aud".into(), json!(audience));
    if !scopes.is_empty() {
        claims.insert("scope".into(), json!(scopes.join(" ")));
    }
    let lifetime = state
        .tokens
        .lifetime(&client_id, client.token_lifetime_secs);
    let token = state.tokens.mint(claims, lifetime).map_err(|e| {
        OAuthError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            e.to_string(),
        )
    })?;
    Ok(json!({"access_token": token, "token_type": "Bearer", "expires_in": lifetime}))
}

#[cfg(test)]
mod tests {
    use super::form_decode;

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode("a+b%3Ac%25").as_deref(), Some("a b:c%"));
        assert_eq!(form_decode("%zz"), None);
        assert_eq!(form_decode("%4"), None);
    }
}
