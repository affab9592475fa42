//! Where and how to reach Command for one issuer (product.md §2, §4, §7).

use secrecy::ExposeSecret;

use super::{ConfigError, Credentials};
use crate::api::IssuerSpec;

/// Everything needed to open an HTTPS connection to Command and authenticate.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionConfig {
    /// `host` or `host:port`, scheme and path removed.
    pub host: String,
    /// API base path without surrounding slashes.
    pub api_path: String,
    /// PEM bundle that replaces the system roots when set.
    pub ca_bundle_pem: Option<String>,
    /// Credential method and values.
    pub credentials: Credentials,
}

impl ConnectionConfig {
    /// `https://host/apiPath`, the prefix of every Command call.
    pub fn base_url(&self) -> String {
        format!("https://{}/{}", self.host, self.api_path)
    }
}

/// Drops a scheme and any path: `https://cmd.example.com/x` → `cmd.example.com`; keeps a port.
pub fn normalize_hostname(raw: &str) -> String {
    let s = raw.trim();
    let s = s.split_once("://").map(|(_, rest)| rest).unwrap_or(s);
    s.split('/').next().unwrap_or("").to_string()
}

/// Strips leading and trailing slashes: `///api//` → `api`.
pub fn normalize_api_path(raw: &str) -> String {
    raw.trim().trim_matches('/').to_string()
}

/// Validates and assembles the connection config in upstream's order of checks.
pub fn resolve_connection(
    spec: &IssuerSpec,
    credentials: Credentials,
    ca_bundle_pem: Option<String>,
) -> Result<ConnectionConfig, ConfigError> {
    let host = normalize_hostname(spec.hostname.as_deref().unwrap_or(""));
    if host.is_empty() {
        return Err(ConfigError::Required("hostname"));
    }
    let api_path = match spec.api_path.as_deref() {
        None => "KeyfactorAPI".to_string(),
        Some(p) => normalize_api_path(p),
    };
    if api_path.is_empty() {
        return Err(ConfigError::Required("apiPath"));
    }
    match &credentials {
        Credentials::Basic { username, password } => {
            if username.is_empty() {
                return Err(ConfigError::Required("username"));
            }
            if password.expose_secret().is_empty() {
                return Err(ConfigError::Required("password"));
            }
        }
        Credentials::OAuth {
            token_url,
            client_id,
            client_secret,
            ..
        } => {
            if token_url.is_empty() {
                return Err(ConfigError::Required("tokenURL"));
            }
            if client_id.is_empty() {
                return Err(ConfigError::Required("clientID"));
            }
            if client_secret.expose_secret().is_empty() {
                return Err(ConfigError::Required("clientSecret"));
            }
        }
        Credentials::Ambient => {}
    }
    Ok(ConnectionConfig {
        host,
        api_path,
        ca_bundle_pem,
        credentials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn basic(u: &str, p: &str) -> Credentials {
        Credentials::Basic {
            username: u.into(),
            password: SecretString::from(p.to_string()),
        }
    }

    #[test]
    fn hostname_forms() {
        assert_eq!(
            normalize_hostname("https://cmd.example.com/x"),
            "cmd.example.com"
        );
        assert_eq!(normalize_hostname("cmd.example.com"), "cmd.example.com");
        assert_eq!(
            normalize_hostname("https://127.0.0.1:8443/KeyfactorAPI"),
            "127.0.0.1:8443"
        );
        assert_eq!(normalize_hostname("127.0.0.1:8443"), "127.0.0.1:8443");
    }

    #[test]
    fn api_path_forms() {
        assert_eq!(normalize_api_path("///api//"), "api");
        assert_eq!(normalize_api_path("/KeyfactorAPI"), "KeyfactorAPI");
    }

    #[test]
    fn validation_order_and_messages() {
        let mut spec = IssuerSpec::default();
        assert_eq!(
            resolve_connection(&spec, basic("u", "p"), None)
                .unwrap_err()
                .to_string(),
            "invalid config: hostname is required"
        );
        spec.hostname = Some("h".into());
        spec.api_path = Some("/".into());
        assert_eq!(
            resolve_connection(&spec, basic("u", "p"), None)
                .unwrap_err()
                .to_string(),
            "invalid config: apiPath is required"
        );
        spec.api_path = None;
        assert_eq!(
            resolve_connection(&spec, basic("", "p"), None)
                .unwrap_err()
                .to_string(),
            "invalid config: username is required"
        );
        assert_eq!(
            resolve_connection(&spec, basic("u", ""), None)
                .unwrap_err()
                .to_string(),
            "invalid config: password is required"
        );
        let c = resolve_connection(&spec, basic("u", "p"), None).unwrap();
        assert_eq!(c.base_url(), "https://h/KeyfactorAPI");
    }
}
