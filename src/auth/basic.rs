//! HTTP Basic for Command (command-api.md §3.1).

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};

use crate::config::ConfigError;

/// `DOMAIN\user` is kept, `user@domain` becomes `domain\user`, a bare user stays; more than one
/// separator is refused.
pub fn normalize_username(username: &str) -> Result<String, ConfigError> {
    let backslashes = username.matches('\\').count();
    let ats = username.matches('@').count();
    if backslashes + ats > 1 {
        return Err(ConfigError::Username(username.to_string()));
    }
    if let Some((user, domain)) = username.split_once('@') {
        return Ok(format!("{domain}\\{user}"));
    }
    Ok(username.to_string())
}

/// `Basic base64(user:password)` with the username normalised.
pub fn basic_authorization(
    username: &str,
    password: &SecretString,
) -> Result<SecretString, ConfigError> {
    let user = normalize_username(username)?;
    let raw = format!("{user}:{}", password.expose_secret());
    Ok(SecretString::from(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_forms() {
        assert_eq!(normalize_username("user").unwrap(), "user");
        assert_eq!(normalize_username("CORP\\user").unwrap(), "CORP\\user");
        assert_eq!(normalize_username("user@corp").unwrap(), "corp\\user");
        assert!(normalize_username("a\\b\\c").is_err());
        assert!(normalize_username("a@b@c").is_err());
        assert!(normalize_username("D\\a@b").is_err());
    }

    #[test]
    fn header_encodes_normalised_user() {
        let h = basic_authorization("user@corp", &SecretString::from("pw".to_string())).unwrap();
        let b64 = h
            .expose_secret()
            .strip_prefix("Basic ")
            .unwrap()
            .to_string();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(raw, b"corp\\user:pw");
    }
}
