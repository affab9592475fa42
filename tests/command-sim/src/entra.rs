//! Entra ID (Azure AD) token endpoint for workload identity under `/_entra/{tenant}`:
//! client credentials with a federated client assertion, authority metadata and keys.

use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Value};

use crate::config::EntraConfig;
use crate::idp::{oauth_json, parse_form};
use crate::jwt::{unverified_claims, Claims};
use crate::state::AppState;
use crate::tokens;

/// Path prefix of the Entra simulator (`AZURE_AUTHORITY_HOST=<sim url>/_entra/`).
pub const PREFIX: &str = "/_entra";

/// `client_assertion_type` of a federated (JWT bearer) client assertion.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The Entra-style error answer: `AADSTS<code>: <text> Trace ID: … Correlation ID: … Timestamp: …`.
#[derive(Debug, Clone)]
struct AadError {
    status: StatusCode,
    error: &'static str,
    code: u32,
    text: String,
}

fn aad(status: StatusCode, error: &'static str, code: u32, text: impl Into<String>) -> AadError {
    AadError {
        status,
        error,
        code,
        text: text.into(),
    }
}

impl AadError {
    fn response(&self) -> HttpResponse {
        let now = jiff::Timestamp::now();
        let stamp = now.strftime("%Y-%m-%d %H:%M:%SZ").to_string();
        let trace = uuid::Uuid::new_v4().to_string();
        let correlation = uuid::Uuid::new_v4().to_string();
        oauth_json(
            self.status,
            &json!({
                "error": self.error,
                "error_description": format!(
                    "AADSTS{}: {} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {stamp}",
                    self.code, self.text
                ),
                "error_codes": [self.code],
                "timestamp": stamp,
                "trace_id": trace,
                "correlation_id": correlation,
                "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
            }),
        )
    }
}

fn missing(param: &str) -> AadError {
    aad(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        900144,
        format!("The request body must contain the following parameter: '{param}'."),
    )
}

fn tenant_not_found(tenant: &str) -> AadError {
    aad(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        90002,
        format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and \
             are signing into the correct cloud."
        ),
    )
}

/// The configured tenant when `tenant` names it (case-insensitively).
fn tenant<'a>(state: &'a AppState, tenant: &str) -> Option<&'a EntraConfig> {
    state
        .config
        .entra
        .as_ref()
        .filter(|e| e.tenant_id.eq_ignore_ascii_case(tenant))
}

/// Handles a request whose path starts with [`PREFIX`].
pub fn handle(state: &AppState, req: &HttpRequest, body: &[u8]) -> HttpResponse {
    let rest = req.path().strip_prefix(PREFIX).unwrap_or_default();
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (req.method(), segments.as_slice()) {
        (&Method::POST, [t, "oauth2", "v2.0", "token"]) => token(state, req, body, t),
        (_, [_, "oauth2", "v2.0", "token"]) => aad(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests.",
        )
        .response(),
        (&Method::GET, [t, "v2.0", ".well-known", "openid-configuration"]) => {
            match tenant(state, t) {
                Some(e) => oauth_json(StatusCode::OK, &metadata(state, e)),
                None => oauth_json(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "invalid_tenant",
                            "error_description": tenant_not_found(t).text}),
                ),
            }
        }
        (&Method::GET, [t, "discovery", "v2.0", "keys"]) if tenant(state, t).is_some() => {
            oauth_json(StatusCode::OK, &state.tokens.signer().jwks())
        }
        _ => oauth_json(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_found", "error_description": "unknown Entra endpoint"}),
        ),
    }
}

/// Authority metadata (`/v2.0/.well-known/openid-configuration`), endpoints pointing at the sim.
fn metadata(state: &AppState, e: &EntraConfig) -> Value {
    let base = format!("{}{PREFIX}/{}", state.url, e.tenant_id);
    json!({
        "issuer": e.issuer(),
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
        "jwks_uri": format!("{base}/discovery/v2.0/keys"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "tenant_region_scope": null,
        "cloud_instance_name": "microsoftonline.com",
    })
}

fn token(state: &AppState, req: &HttpRequest, body: &[u8], tenant_id: &str) -> HttpResponse {
    let mut rec = tokens::record("entra", "", "assertion");
    let resp = match token_inner(state, req, body, tenant_id, &mut rec) {
        Ok(value) => oauth_json(StatusCode::OK, &value),
        Err(e) => {
            rec.error = Some(format!("{} AADSTS{}", e.error, e.code));
            e.response()
        }
    };
    rec.status = resp.status().as_u16();
    state.tokens.record(rec);
    resp
}

fn token_inner(
    state: &AppState,
    req: &HttpRequest,
    body: &[u8],
    tenant_id: &str,
    rec: &mut tokens::TokenRequestRecord,
) -> Result<Value, AadError> {
    let form = parse_form(req, body)
        .map_err(|e| aad(StatusCode::BAD_REQUEST, "invalid_request", 900144, e))?;
    let param = |k: &str| form.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    rec.client_id = param("client_id").unwrap_or_default().to_string();
    rec.scope = param("scope").map(str::to_string);
    let entra = tenant(state, tenant_id).ok_or_else(|| tenant_not_found(tenant_id))?;

    match param("grant_type") {
        None => return Err(missing("grant_type")),
        Some("client_credentials") => {}
        Some(other) => {
            return Err(aad(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                format!("The app requested an unsupported grant type '{other}'."),
            ))
        }
    }
    let client_id = param("client_id").ok_or_else(|| missing("client_id"))?;
    if !client_id.eq_ignore_ascii_case(&entra.client_id) {
        return Err(aad(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'. \
                 This can happen if the application has not been installed by the administrator \
                 of the tenant or consented to by any user in the tenant. You may have sent your \
                 authentication request to the wrong tenant.",
                entra.tenant_id
            ),
        ));
    }
    let Some(scope) = param("scope") else {
        return Err(aad(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'. \
             Required query variable 'resource' is missing.",
        ));
    };

    // Client authentication: a federated token as JWT-bearer client assertion.
    let assertion = param("client_assertion");
    if assertion.is_none() || param("client_assertion_type") != Some(ASSERTION_TYPE) {
        return Err(aad(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or \
             'client_secret'.",
        ));
    }
    let assertion = assertion.unwrap_or_default();
    if !entra.federated_token.is_empty() && assertion != entra.federated_token.trim() {
        let subject = unverified_claims(assertion)
            .and_then(|c| c.get("sub").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| "unknown".to_string());
        return Err(aad(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700213,
            format!(
                "No matching federated identity record found for presented assertion subject \
                 '{subject}'. Check your federated identity credential Subject, Audience and \
                 Issuer against the presented assertion."
            ),
        ));
    }

    // Client credentials need exactly one `<resource>/.default` scope.
    let resources: Vec<&str> = scope
        .split_whitespace()
        .filter(|s| !matches!(*s, "openid" | "profile" | "offline_access" | "email"))
        .collect();
    let resource = match resources.as_slice() {
        [one] => one.strip_suffix("/.default").ok_or_else(|| {
            aad(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                1002012,
                format!(
                    "The provided value for scope {one} is not valid. Client credential flows \
                     must have a scope value with /.default suffixed to the resource identifier \
                     (application ID URI)."
                ),
            )
        })?,
        _ => {
            return Err(aad(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                70011,
                format!(
                    "The provided request must include a 'scope' input parameter. The provided \
                     value for the input parameter 'scope' is not valid. The scope {scope} is \
                     not valid."
                ),
            ))
        }
    };
    if !entra.knows_resource(resource) {
        return Err(aad(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500011,
            format!(
                "The resource principal named {resource} was not found in the tenant named {}. \
                 This can happen if the application has not been installed by the administrator \
                 of the tenant or consented to by any user in the tenant. You might have sent \
                 your authentication request to the wrong tenant.",
                entra.tenant_id
            ),
        ));
    }
    if !entra.role_assigned {
        return Err(aad(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            501051,
            format!(
                "Application '{}'(command-issuer) is not assigned to a role for the application \
                 '{resource}'(Keyfactor Command).",
                entra.client_id
            ),
        ));
    }

    let mut claims = Claims::new();
    claims.insert("aud".into(), json!(resource));
    claims.insert("iss".into(), json!(entra.issuer()));
    claims.insert("azp".into(), json!(entra.client_id));
    claims.insert("azpacr".into(), json!("2"));
    claims.insert("appid".into(), json!(entra.client_id));
    claims.insert("oid".into(), json!(entra.subject));
    claims.insert("sub".into(), json!(entra.subject));
    claims.insert("tid".into(), json!(entra.tenant_id));
    claims.insert("ver".into(), json!("2.0"));
    if !entra.roles.is_empty() {
        claims.insert("roles".into(), json!(entra.roles));
    }
    let lifetime = state
        .tokens
        .lifetime(&entra.client_id, entra.token_lifetime_secs);
    let token = state.tokens.mint(claims, lifetime).map_err(|e| {
        aad(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            50000,
            e.to_string(),
        )
    })?;
    Ok(json!({
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": token,
    }))
}
