//! Resolves the `Authorization` header to an identity (command-api.md §3).
//!
//! Each scheme has its own resolver; `Bearer` currently always answers 401 and is where the JWT
//! validator (token endpoint + JWKS, a later issue) plugs in.

use actix_web::http::header::{HeaderMap, AUTHORIZATION};
use base64::Engine;

use crate::config::{Config, Role};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("missing credentials")]
    Missing,
    /// Unknown scheme, malformed header, unknown user or wrong password.
    #[error("invalid credentials")]
    Invalid,
    /// A bearer token was sent but no bearer validator is configured.
    #[error("bearer tokens are not accepted")]
    BearerUnsupported,
}

/// Resolves the caller from the request headers.
pub fn authenticate(headers: &HeaderMap, config: &Config) -> Result<Identity, AuthError> {
    let value = headers.get(AUTHORIZATION).ok_or(AuthError::Missing)?;
    let value = value.to_str().map_err(|_| AuthError::Invalid)?.trim();
    let (scheme, credentials) = value.split_once(' ').ok_or(AuthError::Invalid)?;
    if scheme.eq_ignore_ascii_case("basic") {
        basic(credentials.trim(), config)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        bearer(credentials.trim(), config)
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

/// Bearer JWT validation goes here (issuer, signature against the JWKS, `exp`, claim → role).
fn bearer(_token: &str, _config: &Config) -> Result<Identity, AuthError> {
    Err(AuthError::BearerUnsupported)
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

    fn config() -> Config {
        serde_json::from_str(
            r#"{"roles":[{"id":2,"name":"R","permissions":["/metadata/types/read/"]}],
                "users":[{"username":"CORP\\u","password":"p","role":"R"},
                         {"username":"plain","password":"q"}]}"#,
        )
        .expect("config")
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
        assert_eq!(
            authenticate(&headers("Bearer abc"), &c).err(),
            Some(AuthError::BearerUnsupported)
        );
    }
}
