//! Credential Secret → credentials (product.md §7.1); the Secret type selects the method.

use std::fmt;

use k8s_openapi::api::core::v1::Secret;
use secrecy::{ExposeSecret, SecretString};

use super::ConfigError;

/// How the controller authenticates to Command for one issuer. Secret values are wrapped so
/// that Debug output and logs never show them.
#[derive(Clone)]
pub enum Credentials {
    /// HTTP Basic on every call.
    Basic {
        /// As written in the Secret (`user`, `DOMAIN\user` or `user@domain`).
        username: String,
        /// Password.
        password: SecretString,
    },
    /// OAuth 2.0 client credentials, bearer token.
    OAuth {
        /// Token endpoint.
        token_url: String,
        /// Client id.
        client_id: String,
        /// Client secret.
        client_secret: SecretString,
        /// Scopes from the Secret, split on commas.
        scopes: Vec<String>,
        /// Optional audience form parameter.
        audience: Option<String>,
    },
    /// No commandSecretName: Azure or Google ambient credentials.
    Ambient,
}

impl Credentials {
    /// Every value whose appearance in text must be redacted: the password or client secret,
    /// and the Basic header payload built from it (a Command that echoes its request).
    pub fn secret_values(&self) -> Vec<String> {
        use base64::Engine;
        use secrecy::ExposeSecret;
        match self {
            Self::Basic { username, password } => {
                let pair = format!("{username}:{}", password.expose_secret());
                vec![
                    password.expose_secret().to_string(),
                    base64::engine::general_purpose::STANDARD.encode(pair),
                ]
            }
            Self::OAuth { client_secret, .. } => vec![client_secret.expose_secret().to_string()],
            Self::Ambient => Vec::new(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Basic { username, .. } => write!(f, "Basic({username})"),
            Self::OAuth {
                token_url,
                client_id,
                ..
            } => write!(f, "OAuth({client_id}@{token_url})"),
            Self::Ambient => f.write_str("Ambient"),
        }
    }
}

impl PartialEq for Credentials {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (
                Self::Basic {
                    username: a,
                    password: p,
                },
                Self::Basic {
                    username: b,
                    password: q,
                },
            ) => a == b && p.expose_secret() == q.expose_secret(),
            (
                Self::OAuth {
                    token_url: a,
                    client_id: b,
                    client_secret: c,
                    scopes: d,
                    audience: e,
                },
                Self::OAuth {
                    token_url: v,
                    client_id: w,
                    client_secret: x,
                    scopes: y,
                    audience: z,
                },
            ) => a == v && b == w && c.expose_secret() == x.expose_secret() && d == y && e == z,
            (Self::Ambient, Self::Ambient) => true,
            _ => false,
        }
    }
}

fn value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .cloned()
        })
}

/// Reads credentials from the Secret by its type; key presence is checked here, emptiness by
/// [`super::resolve_connection`], in upstream's order.
pub fn credentials_from_secret(secret: &Secret) -> Result<Credentials, ConfigError> {
    let invalid = |what: &str| ConfigError::CredentialSecretInvalid(what.to_string());
    match secret.type_.as_deref().unwrap_or("Opaque") {
        "kubernetes.io/basic-auth" => {
            let username = value(secret, "username")
                .ok_or_else(|| invalid("basic auth secret with no username"))?;
            let password = value(secret, "password")
                .ok_or_else(|| invalid("basic auth secret with no password"))?;
            Ok(Credentials::Basic {
                username,
                password: SecretString::from(password),
            })
        }
        "Opaque" | "" => {
            let token_url =
                value(secret, "tokenUrl").ok_or_else(|| invalid("secret with no tokenUrl"))?;
            let client_id =
                value(secret, "clientId").ok_or_else(|| invalid("secret with no clientId"))?;
            let client_secret = value(secret, "clientSecret")
                .ok_or_else(|| invalid("secret with no clientSecret"))?;
            let scopes = value(secret, "scopes")
                .map(|s| {
                    s.split(',')
                        .filter(|x| !x.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            Ok(Credentials::OAuth {
                token_url,
                client_id,
                client_secret: SecretString::from(client_secret),
                scopes,
                audience: value(secret, "audience").filter(|a| !a.is_empty()),
            })
        }
        _ => Err(invalid("secret with unsupported type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(type_: &str, kv: &[(&str, &str)]) -> Secret {
        Secret {
            type_: Some(type_.into()),
            data: Some(
                kv.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn basic_auth_keys() {
        let c = credentials_from_secret(&secret(
            "kubernetes.io/basic-auth",
            &[("username", "u"), ("password", "p")],
        ))
        .unwrap();
        assert!(matches!(c, Credentials::Basic { ref username, .. } if username == "u"));
        assert_eq!(
            credentials_from_secret(&secret("kubernetes.io/basic-auth", &[("password", "p")])).unwrap_err().to_string(),
            "failed to get Secret containing Issuer credentials: found basic auth secret with no username"
        );
        assert_eq!(
            credentials_from_secret(&secret("kubernetes.io/basic-auth", &[("username", "u")])).unwrap_err().to_string(),
            "failed to get Secret containing Issuer credentials: found basic auth secret with no password"
        );
    }

    #[test]
    fn oauth_keys_and_unsupported_type() {
        assert_eq!(
            credentials_from_secret(&secret("Opaque", &[("clientId", "c")]))
                .unwrap_err()
                .to_string(),
            "failed to get Secret containing Issuer credentials: found secret with no tokenUrl"
        );
        assert_eq!(
            credentials_from_secret(&secret("kubernetes.io/tls", &[])).unwrap_err().to_string(),
            "failed to get Secret containing Issuer credentials: found secret with unsupported type"
        );
        let c = credentials_from_secret(&secret(
            "Opaque",
            &[
                ("tokenUrl", "https://t"),
                ("clientId", "c"),
                ("clientSecret", "s"),
                ("scopes", "a,b"),
            ],
        ))
        .unwrap();
        assert!(matches!(c, Credentials::OAuth { ref scopes, .. } if scopes == &["a", "b"]));
    }

    #[test]
    fn debug_never_shows_secret_values() {
        let c = credentials_from_secret(&secret(
            "kubernetes.io/basic-auth",
            &[("username", "u"), ("password", "hunter2-unique")],
        ))
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2-unique"));
    }
}
