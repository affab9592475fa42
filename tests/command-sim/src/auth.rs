//! Resolves the `Authorization` header to an identity (command-api.md §3).
//!
//! `Basic` checks the configured users; `Bearer` verifies a JWT minted by one of the simulated
//! identity providers (signature, trusted `iss`, `exp`/`nbf`, not revoked) and maps its identity
//! to a role: built-in IdP tokens through `oauth_clients[].role`, other issuers through
//! `identity_providers[].subjects`.

use actix_web::http::header::{HeaderMap, AUTHORIZATION};
use base64::Engine;

use serde_json::Value;

use crate::config::{Config, Role};
use crate::tokens::{TokenError, Tokens};

/// Who is calling, after authentication.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Name shown in error messages and records (`DOMAIN\user` as configured).
    pub name: String,
    /// How the caller authenticated.
    pub method: AuthMethod,
    /// The caller's security role; `None` = authenticated but in no role (→ 403).
    pub role: Option<Role>,
}

/// Authentication scheme that produced an [`Identity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// HTTP Basic against configured users.
    Basic,
    /// A bearer JWT of a trusted identity provider.
    Bearer,
}

impl Identity {
    /// Whether the caller's role holds `permission`; `None` permission means "any role".
    pub fn has_permission(&self, permission: Option<&str>) -> bool {
        match (&self.role, permission) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(role), Some(p)) => role.grants(p),
        }
    }

    /// Whether the caller's role is in `allowed` (role names; empty = every role).
    pub fn role_allowed(&self, allowed: &[String]) -> bool {
        match &self.role {
            None => false,
            Some(role) => {
                allowed.is_empty() || allowed.iter().any(|a| a.eq_ignore_ascii_case(&role.name))
            }
        }
    }
}

/// Why authentication failed; always answered `401` with an empty body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("missing credentials")]
    Missing,
    /// Unknown scheme, malformed header, unknown user or wrong password.
    #[error("invalid credentials")]
    Invalid,
    /// The bearer token was refused.
    #[error("bearer token refused: {0}")]
    Token(#[from] TokenError),
    /// A valid bearer token without `sub`, `client_id` or `azp`.
    #[error("bearer token names no identity")]
    NoIdentity,
}

impl AuthError {
    /// Whether the failure concerns a bearer token (answered with `WWW-Authenticate: Bearer`).
    pub fn is_bearer(&self) -> bool {
        matches!(self, AuthError::Token(_) | AuthError::NoIdentity)
    }
}

/// What the bearer validator needs besides the configuration.
#[derive(Debug, Clone, Copy)]
pub struct BearerContext<'a> {
    /// Minted-token bookkeeping and the signing key.
    pub tokens: &'a Tokens,
    /// `iss` of the built-in identity provider (`<sim url>/_idp`).
    pub builtin_issuer: &'a str,
}

/// Resolves the caller from the request headers.
pub fn authenticate(
    headers: &HeaderMap,
    config: &Config,
    bearer_ctx: BearerContext<'_>,
) -> Result<Identity, AuthError> {
    let value = headers.get(AUTHORIZATION).ok_or(AuthError::Missing)?;
    let value = value.to_str().map_err(|_| AuthError::Invalid)?.trim();
    let (scheme, credentials) = value.split_once(' ').ok_or(AuthError::Invalid)?;
    if scheme.eq_ignore_ascii_case("basic") {
        basic(credentials.trim(), config)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        bearer(credentials.trim(), config, bearer_ctx)
    } else {
        Err(AuthError::Invalid)
    }
}

fn basic(credentials: &str, config: &Config) -> Result<Identity, AuthError> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials)
        .map_err(|_| AuthError::Invalid)?;
    let decoded = String::from_utf8(decoded).map_err(|_| AuthError::Invalid)?;
    let (username, password) = decoded.split_once(':').ok_or(AuthError::Invalid)?;
    let user = config
        .users
        .iter()
        .find(|u| u.username.eq_ignore_ascii_case(username))
        .ok_or(AuthError::Invalid)?;
    if !constant_time_eq(user.password.as_bytes(), password.as_bytes()) {
        return Err(AuthError::Invalid);
    }
    Ok(Identity {
        name: user.username.clone(),
        method: AuthMethod::Basic,
        role: user
            .role
            .as_deref()
            .and_then(|r| config.role_by_name(r))
            .cloned(),
    })
}

/// Claims that may name the identity in `identity_providers[].subjects`, in lookup order.
pub const SUBJECT_CLAIMS: [&str; 6] = ["sub", "oid", "client_id", "azp", "appid", "email"];

fn bearer(token: &str, config: &Config, ctx: BearerContext<'_>) -> Result<Identity, AuthError> {
    let mut trusted = vec![ctx.builtin_issuer.to_string()];
    trusted.extend(config.identity_providers.iter().map(|p| p.issuer.clone()));
    let claims = ctx.tokens.validate(token, &trusted)?;
    let claim = |k: &str| {
        claims
            .get(k)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    let name = claim("sub")
        .or_else(|| claim("client_id"))
        .or_else(|| claim("azp"))
        .ok_or(AuthError::NoIdentity)?;
    let iss = claim("iss").unwrap_or_default();
    let mut role_name: Option<String> = None;
    if iss == ctx.builtin_issuer {
        if let Some(client) = config.oauth_client(name) {
            role_name.clone_from(&client.role);
        }
    }
    if role_name.is_none() {
        role_name = config
            .identity_providers
            .iter()
            .filter(|p| p.issuer == iss)
            .flat_map(|p| {
                SUBJECT_CLAIMS
                    .iter()
                    .filter_map(|k| claim(k))
                    .filter_map(|v| p.subjects.get(v).cloned().flatten())
            })
            .next();
    }
    Ok(Identity {
        name: name.to_string(),
        method: AuthMethod::Bearer,
        role: role_name
            .as_deref()
            .and_then(|r| config.role_by_name(r))
            .cloned(),
    })
}

/// The identity a request *presents*, without checking it, so every call (refused ones too) can
/// be attributed to a caller in the request log: the Basic user name as sent (never the
/// password), or the first of `sub`, `client_id`, `azp` of a bearer JWT's unverified payload.
/// `None` without an `Authorization` header or when it names nobody.
pub fn presented_caller(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, credentials) = value.split_once(' ')?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let user = decoded.split_once(':').map_or(decoded.as_str(), |(u, _)| u);
        Some(user.to_string()).filter(|u| !u.is_empty())
    } else if scheme.eq_ignore_ascii_case("bearer") {
        let claims = crate::jwt::unverified_claims(credentials)?;
        ["sub", "client_id", "azp"].iter().find_map(|k| {
            claims
                .get(*k)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        })
    } else {
        None
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    use crate::jwt::Claims;
    use serde_json::json;

    const IDP: &str = "https://127.0.0.1:1/_idp";

    fn config() -> Config {
        serde_json::from_str(
            r#"{"roles":[{"id":2,"name":"R","permissions":["/metadata/types/read/"]}],
                "users":[{"username":"CORP\\u","password":"p","role":"R"},
                         {"username":"plain","password":"q"}],
                "oauth_clients":[{"client_id":"c1","client_secret":"s","role":"R"},
                                 {"client_id":"c2","client_secret":"s"}],
                "identity_providers":[{"issuer":"https://accounts.google.com",
                                       "subjects":{"user@x.iam":"R"}}]}"#,
        )
        .expect("config")
    }

    /// One token authority per test thread, shared by minting and validation.
    fn tokens() -> &'static Tokens {
        thread_local! {
            static TOKENS: &'static Tokens = Box::leak(Box::new(Tokens::new().expect("tokens")));
        }
        TOKENS.with(|t| *t)
    }

    fn authenticate(headers: &HeaderMap, config: &Config) -> Result<Identity, AuthError> {
        super::authenticate(
            headers,
            config,
            BearerContext {
                tokens: tokens(),
                builtin_issuer: IDP,
            },
        )
    }

    fn bearer_header(claims: serde_json::Value, lifetime: u64) -> HeaderMap {
        let serde_json::Value::Object(map) = claims else {
            panic!("claims must be an object")
        };
        let map: Claims = map;
        headers(&format!(
            "Bearer {}",
            tokens().mint(map, lifetime).expect("mint")
        ))
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).expect("header"));
        h
    }

    fn basic_header(userpass: &str) -> HeaderMap {
        headers(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(userpass)
        ))
    }

    #[test]
    fn domain_and_plain_users_authenticate() {
        let c = config();
        let id = authenticate(&basic_header("corp\\U:p"), &c).expect("domain user");
        assert_eq!(id.name, "CORP\\u");
        assert!(id.has_permission(Some("/metadata/types/read/")));
        let id = authenticate(&basic_header("plain:q"), &c).expect("plain user");
        assert!(id.role.is_none());
        assert!(!id.has_permission(None));
    }

    #[test]
    fn presented_caller_names_user_or_token_subject_never_the_password() {
        assert_eq!(
            presented_caller(&basic_header("CORP\\u:secret")).as_deref(),
            Some("CORP\\u")
        );
        // Wrong passwords and unknown users are still attributed.
        assert_eq!(
            presented_caller(&basic_header("nobody:x")).as_deref(),
            Some("nobody")
        );
        assert_eq!(
            presented_caller(&bearer_header(json!({"iss": IDP, "client_id": "c2"}), 60)).as_deref(),
            Some("c2")
        );
        // Expired or not, the token still names its client.
        assert_eq!(
            presented_caller(&bearer_header(json!({"iss": IDP, "sub": "c1"}), 0)).as_deref(),
            Some("c1")
        );
        assert_eq!(presented_caller(&HeaderMap::new()), None);
        assert_eq!(presented_caller(&headers("Bearer abc")), None);
        assert_eq!(presented_caller(&headers("Negotiate abc")), None);
    }

    #[test]
    fn bad_credentials_fail() {
        let c = config();
        assert_eq!(
            authenticate(&HeaderMap::new(), &c).err(),
            Some(AuthError::Missing)
        );
        assert_eq!(
            authenticate(&basic_header("plain:wrong"), &c).err(),
            Some(AuthError::Invalid)
        );
        assert_eq!(
            authenticate(&headers("Basic !!!"), &c).err(),
            Some(AuthError::Invalid)
        );
        assert!(matches!(
            authenticate(&headers("Bearer abc"), &c).err(),
            Some(AuthError::Token(_))
        ));
    }

    #[test]
    fn bearer_tokens_map_to_roles() {
        let c = config();
        let id = authenticate(&bearer_header(json!({"iss": IDP, "sub": "c1"}), 60), &c)
            .expect("builtin client");
        assert_eq!(id.method, AuthMethod::Bearer);
        assert_eq!(id.role.as_ref().map(|r| r.name.as_str()), Some("R"));
        let id = authenticate(&bearer_header(json!({"iss": IDP, "azp": "c2"}), 60), &c)
            .expect("client without role");
        assert_eq!(id.name, "c2");
        assert!(id.role.is_none());
        let google =
            json!({"iss": "https://accounts.google.com", "sub": "1", "email": "user@x.iam"});
        let id = authenticate(&bearer_header(google, 60), &c).expect("google");
        assert_eq!(id.name, "1");
        assert!(id.role.is_some(), "mapped through the email claim");
        let err = authenticate(
            &bearer_header(json!({"iss": "https://other", "sub": "c1"}), 60),
            &c,
        )
        .expect_err("unknown issuer");
        assert!(err.is_bearer());
        assert_eq!(
            authenticate(&bearer_header(json!({"iss": IDP, "sub": "c1"}), 0), &c).err(),
            Some(AuthError::Token(TokenError::Expired))
        );
        assert_eq!(
            authenticate(&bearer_header(json!({"iss": IDP}), 60), &c).err(),
            Some(AuthError::NoIdentity)
        );
    }
}
