//! OAuth 2.0 client credentials (RFC 6749 §4.4) as Go's `oauth2/clientcredentials` does it:
//! Basic client authentication first, the request body as fallback, the working style
//! remembered; the token cached until 10 s before it expires (command-api.md §3.2).

use std::time::{Duration, Instant};

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{AuthError, AuthHeader};

/// Tokens are refreshed this long before they expire.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// How the client authenticates to the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStyle {
    /// `Authorization: Basic base64(urlenc(id):urlenc(secret))`.
    Header,
    /// `client_id` and `client_secret` form parameters.
    Body,
}

/// What the token request needs.
pub struct TokenRequest<'a> {
    /// Token endpoint.
    pub token_url: &'a str,
    /// Client id.
    pub client_id: &'a str,
    /// Client secret.
    pub client_secret: &'a SecretString,
    /// Scopes, sent space-joined.
    pub scopes: &'a [String],
    /// Extra `audience` form parameter.
    pub audience: Option<&'a str>,
}

/// The form body and optional Authorization header of one attempt.
pub fn token_form(req: &TokenRequest<'_>, style: AuthStyle) -> (String, Option<SecretString>) {
    let mut form = vec![("grant_type".to_string(), "client_credentials".to_string())];
    if !req.scopes.is_empty() {
        form.push(("scope".into(), req.scopes.join(" ")));
    }
    if let Some(a) = req.audience.filter(|a| !a.is_empty()) {
        form.push(("audience".into(), a.to_string()));
    }
    let header = match style {
        AuthStyle::Header => {
            let raw = format!(
                "{}:{}",
                urlencode(req.client_id),
                urlencode(req.client_secret.expose_secret())
            );
            Some(SecretString::from(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )))
        }
        AuthStyle::Body => {
            form.push(("client_id".into(), req.client_id.to_string()));
            form.push((
                "client_secret".into(),
                req.client_secret.expose_secret().to_string(),
            ));
            None
        }
    };
    let body = form
        .iter()
        .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
        .collect::<Vec<_>>()
        .join("&");
    (body, header)
}

/// Form encoding: unreserved bytes kept, space as `+`, the rest `%XX`.
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

/// Longest a token is cached, whatever lifetime the server claims: a hostile or buggy
/// `expires_in` (2^63, 1e300) cannot pin a token for centuries or overflow an `Instant`.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A token lifetime as the server stated it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Lifetime {
    /// No `expires_in` (or null): valid until Command refuses it, as Go's oauth2 treats it.
    Absent,
    /// Zero, negative, non-finite or unparsable: the server gave no usable lifetime.
    Unusable,
    /// A positive lifetime, already capped at [`MAX_TOKEN_LIFETIME`].
    Valid(Duration),
}

/// Seconds as text or a JSON number (integer or not) → a capped lifetime; never panics.
fn lifetime_from_secs(secs: Option<f64>) -> Lifetime {
    match secs {
        Some(s) if s.is_finite() && s > 0.0 => {
            // Compared in f64 first, so no Duration is ever built from an out-of-range value.
            if s >= MAX_TOKEN_LIFETIME.as_secs_f64() {
                Lifetime::Valid(MAX_TOKEN_LIFETIME)
            } else {
                Lifetime::Valid(Duration::from_secs_f64(s))
            }
        }
        _ => Lifetime::Unusable,
    }
}

fn lifetime_of_text(text: &str) -> Lifetime {
    lifetime_from_secs(text.trim().parse::<f64>().ok())
}

fn lifetime_of_json(v: serde_json::Value) -> Lifetime {
    match v {
        serde_json::Value::Null => Lifetime::Absent,
        serde_json::Value::Number(n) => lifetime_from_secs(n.as_f64()),
        serde_json::Value::String(s) => lifetime_of_text(&s),
        _ => Lifetime::Unusable,
    }
}

/// The refresh moment for a lifetime: capped lifetimes minus the margin; an unusable one is
/// "already expiring" (`now`), so the token serves the call that fetched it and the next call
/// fetches a new one — safer than caching a token the server said is expired or did not date.
fn expiry_for(lifetime: Lifetime, now: Instant) -> Option<Instant> {
    match lifetime {
        Lifetime::Absent => None,
        Lifetime::Unusable => Some(now),
        Lifetime::Valid(d) => Some(
            now.checked_add(d.saturating_sub(EXPIRY_MARGIN))
                .unwrap_or(now),
        ),
    }
}

/// Reads a 2xx token response (JSON, or form-encoded as some servers send) into a header that
/// is valid until `now + min(expires_in, 24 h) - margin`; `token_type` is normalised to Bearer.
/// An `expires_in` that is zero, negative or unparsable makes the header already expiring
/// (used once, never cached); an absent one leaves it cached until Command answers 401.
pub fn parse_token(body: &[u8], now: Instant) -> Result<AuthHeader, AuthError> {
    let (token, lifetime) = match serde_json::from_slice::<TokenResponse>(body) {
        Ok(t) => (
            t.access_token,
            t.expires_in.map_or(Lifetime::Absent, lifetime_of_json),
        ),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let mut token = None;
            let mut lifetime = Lifetime::Absent;
            for pair in text.split('&') {
                match pair.split_once('=') {
                    Some(("access_token", v)) => token = Some(v.to_string()),
                    Some(("expires_in", v)) => lifetime = lifetime_of_text(v),
                    _ => {}
                }
            }
            (
                token.ok_or_else(|| {
                    AuthError::Token("oauth2: server response missing access_token".into())
                })?,
                lifetime,
            )
        }
    };
    if token.is_empty() {
        return Err(AuthError::Token(
            "oauth2: server response missing access_token".into(),
        ));
    }
    Ok(AuthHeader {
        value: SecretString::from(format!("Bearer {token}")),
        expires: expiry_for(lifetime, now),
    })
}

/// Bound on reading a token response body once its head arrived.
pub const TOKEN_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The error users see when the token endpoint refuses: Go's
/// `oauth2: cannot fetch token: <status> Response: <body>` under the issuer's prefix.
pub fn token_error(status: u16, reason: &str, body: &str) -> AuthError {
    AuthError::Token(format!(
        "failed to retrieve OAuth token: oauth2: cannot fetch token: {status} {reason} Response: {body}"
    ))
}

/// Fetches a token over `http`, trying the remembered style, else Basic then body (Go's
/// auto-detection); returns the header and the style that worked.
pub async fn fetch_client_credentials(
    http: &awc::Client,
    req: &TokenRequest<'_>,
    remembered: Option<AuthStyle>,
) -> Result<(AuthHeader, AuthStyle), AuthError> {
    let styles: &[AuthStyle] = match remembered {
        Some(AuthStyle::Header) => &[AuthStyle::Header],
        Some(AuthStyle::Body) => &[AuthStyle::Body],
        None => &[AuthStyle::Header, AuthStyle::Body],
    };
    let mut last = AuthError::Token("failed to retrieve OAuth token: no attempt made".into());
    for style in styles {
        let (body, header) = token_form(req, *style);
        let mut r = http
            .post(req.token_url)
            .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
            .insert_header(("Accept", "application/json"));
        if let Some(h) = &header {
            r = r.insert_header(("Authorization", h.expose_secret()));
        }
        let resp = match r.send_body(body).await {
            Ok(resp) => resp,
            Err(e) => {
                return Err(AuthError::Token(format!(
                    "failed to retrieve OAuth token: Post \"{}\": {e}",
                    req.token_url
                )))
            }
        };
        let status = resp.status();
        // awc's client timeout ends at the response head; a stalled body must not hold up
        // every enrollment of the issuer behind this token (issue #6 fault suite).
        let mut resp = resp.timeout(TOKEN_BODY_TIMEOUT);
        let bytes = resp.body().limit(1024 * 1024).await.map_err(|e| {
            AuthError::Token(format!(
                "failed to retrieve OAuth token: reading the token response: {e}"
            ))
        })?;
        if status.is_success() {
            return parse_token(&bytes, Instant::now()).map(|h| (h, *style));
        }
        last = token_error(
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            &String::from_utf8_lossy(&bytes),
        );
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(secret: &'a SecretString, scopes: &'a [String]) -> TokenRequest<'a> {
        TokenRequest {
            token_url: "https://idp/token",
            client_id: "my client",
            client_secret: secret,
            scopes,
            audience: Some("cmd"),
        }
    }

    #[test]
    fn header_style_encodes_credentials_and_form() {
        let s = SecretString::from("p@ss word".to_string());
        let scopes = vec!["a".to_string(), "b".to_string()];
        let (body, header) = token_form(&req(&s, &scopes), AuthStyle::Header);
        assert_eq!(body, "grant_type=client_credentials&scope=a+b&audience=cmd");
        let h = header.unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(h.expose_secret().strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(raw, b"my+client:p%40ss+word");
    }

    #[test]
    fn body_style_puts_credentials_in_the_form() {
        let s = SecretString::from("x".to_string());
        let (body, header) = token_form(&req(&s, &[]), AuthStyle::Body);
        assert!(header.is_none());
        assert_eq!(
            body,
            "grant_type=client_credentials&audience=cmd&client_id=my+client&client_secret=x"
        );
    }

    #[test]
    fn token_parsing_and_expiry_margin() {
        let now = Instant::now();
        let h = parse_token(
            br#"{"access_token":"t","token_type":"bearer","expires_in":3600}"#,
            now,
        )
        .unwrap();
        assert_eq!(h.value.expose_secret(), "Bearer t");
        assert_eq!(h.expires, Some(now + Duration::from_secs(3590)));
        let h = parse_token(b"access_token=u&token_type=bearer&expires_in=60", now).unwrap();
        assert_eq!(h.value.expose_secret(), "Bearer u");
        assert!(parse_token(br#"{"token_type":"bearer"}"#, now).is_err());
    }

    fn expires_after(body: &str) -> Option<Duration> {
        let now = Instant::now();
        parse_token(body.as_bytes(), now)
            .unwrap()
            .expires
            .map(|e| e.duration_since(now))
    }

    const CAPPED: Option<Duration> = Some(Duration::from_secs(24 * 3600 - 10));

    #[test]
    fn expires_in_two_to_the_63_is_capped_not_a_panic() {
        // Before the cap, `now + 2^63 s` overflowed Instant and panicked.
        let body = r#"{"access_token":"t","expires_in":9223372036854775808}"#;
        assert_eq!(expires_after(body), CAPPED);
        let form = "access_token=t&expires_in=9223372036854775808";
        assert_eq!(expires_after(form), CAPPED);
    }

    #[test]
    fn expires_in_u64_max_is_capped() {
        let body = format!(r#"{{"access_token":"t","expires_in":{}}}"#, u64::MAX);
        assert_eq!(expires_after(&body), CAPPED);
        let body = format!(r#"{{"access_token":"t","expires_in":{}}}"#, i64::MAX);
        assert_eq!(expires_after(&body), CAPPED);
    }

    #[test]
    fn expires_in_1e300_is_capped() {
        assert_eq!(
            expires_after(r#"{"access_token":"t","expires_in":1e300}"#),
            CAPPED
        );
        assert_eq!(
            expires_after(r#"{"access_token":"t","expires_in":"1e300"}"#),
            CAPPED
        );
    }

    #[test]
    fn expires_in_huge_string_is_capped() {
        // As a bare JSON number it overflows u64 and serde_json reads it as f64.
        assert_eq!(
            expires_after(r#"{"access_token":"t","expires_in":99999999999999999999}"#),
            CAPPED
        );
        assert_eq!(
            expires_after(r#"{"access_token":"t","expires_in":"99999999999999999999"}"#),
            CAPPED
        );
        assert_eq!(
            expires_after(r#"{"access_token":"t","expires_in":" 3600 "}"#),
            Some(Duration::from_secs(3590))
        );
    }

    #[test]
    fn expires_in_negative_zero_or_garbage_is_already_expiring() {
        for v in [
            "-1",
            "-9223372036854775809",
            "-1e300",
            "0",
            r#""abc""#,
            r#""""#,
            r#""NaN""#,
            r#""inf""#,
            "true",
            "[]",
        ] {
            let body = format!(r#"{{"access_token":"t","expires_in":{v}}}"#);
            assert_eq!(expires_after(&body), Some(Duration::ZERO), "{v}");
        }
        for form in [
            "access_token=t&expires_in=-5",
            "access_token=t&expires_in=0",
            "access_token=t&expires_in=soon",
        ] {
            assert_eq!(expires_after(form), Some(Duration::ZERO), "{form}");
        }
    }

    #[test]
    fn expires_in_absent_or_null_is_cached_until_refused() {
        assert_eq!(expires_after(r#"{"access_token":"t"}"#), None);
        assert_eq!(
            expires_after(r#"{"access_token":"t","expires_in":null}"#),
            None
        );
        assert_eq!(expires_after("access_token=t"), None);
    }

    #[test]
    fn expires_in_shorter_than_the_margin_is_already_expiring() {
        assert_eq!(
            expires_after(r#"{"access_token":"t","expires_in":5}"#),
            Some(Duration::ZERO)
        );
        assert_eq!(
            expires_after(r#"{"access_token":"t","expires_in":90.5}"#),
            Some(Duration::from_secs_f64(80.5))
        );
    }
}
