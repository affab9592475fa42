//! Token bookkeeping shared by the simulated identity providers (built-in IdP, Google metadata
//! server, Entra): minting, the "minted here and not revoked" check, per-client lifetime
//! overrides and the token request log (`GET /_sim/token-requests`).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{json, Value};

use crate::jwt::{Claims, JwtError, KeyError, Signer};
use crate::state::now_rfc3339;

/// Oldest entries are dropped beyond this many token-request log entries.
pub const MAX_TOKEN_LOG: usize = 10_000;

/// One token request (admin API `GET /_sim/token-requests`). Never holds secrets or tokens.
#[derive(Debug, Clone, Serialize)]
pub struct TokenRequestRecord {
    /// Increasing sequence number.
    pub seq: u64,
    /// When it was received (RFC 3339).
    pub time: String,
    /// `idp` (`/_idp/token`), `gce` (metadata server) or `entra`.
    pub endpoint: &'static str,
    /// Client id as presented (`gce` for the metadata server; empty when none was sent).
    pub client_id: String,
    /// `basic`, `body` or `none` (IdP); `metadata` (GCE); `assertion` (Entra).
    pub auth_style: &'static str,
    /// Status answered.
    pub status: u16,
    /// OAuth `error` code of a refusal (or a short reason for the metadata server).
    pub error: Option<String>,
    /// `scope` as requested.
    pub scope: Option<String>,
    /// `audience` as requested (IdP, GCE).
    pub audience: Option<String>,
}

#[derive(Debug, Default)]
struct TokenState {
    issued: HashSet<String>,
    revoked: HashSet<String>,
    lifetimes: HashMap<String, u64>,
    requests: Vec<TokenRequestRecord>,
    next_seq: u64,
}

/// Why a bearer token was refused (all answered 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Structure, key or signature problem.
    #[error(transparent)]
    Jwt(#[from] JwtError),
    /// `iss` missing or not a configured provider.
    #[error("unknown issuer {0:?}")]
    UnknownIssuer(String),
    /// `exp` missing or passed.
    #[error("token expired")]
    Expired,
    /// `nbf` in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// Revoked through `POST /_sim/tokens/revoke`.
    #[error("token revoked")]
    Revoked,
    /// Signed with the simulator key but not minted by this instance.
    #[error("token not issued by this simulator instance")]
    Foreign,
}

/// The simulator's token authority.
#[derive(Debug)]
pub struct Tokens {
    signer: Signer,
    inner: Mutex<TokenState>,
}

/// Seconds since the Unix epoch, with fractions.
pub fn now_unix_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

impl Tokens {
    /// Loads the signing key.
    pub fn new() -> Result<Tokens, KeyError> {
        Ok(Tokens {
            signer: Signer::new()?,
            inner: Mutex::new(TokenState::default()),
        })
    }

    fn state(&self) -> MutexGuard<'_, TokenState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The signing key (JWKS).
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// Lifetime for tokens of `client_id`: the admin override, else `configured`.
    pub fn lifetime(&self, client_id: &str, configured: u64) -> u64 {
        self.state()
            .lifetimes
            .get(client_id)
            .copied()
            .unwrap_or(configured)
    }

    /// Sets the lifetime of tokens minted for `client_id` from now on.
    pub fn set_lifetime(&self, client_id: &str, secs: u64) {
        self.state().lifetimes.insert(client_id.to_string(), secs);
    }

    /// Signs `claims` plus `iat`, `nbf`, `exp` (= iat + `lifetime`) and a fresh `jti`, and
    /// remembers the `jti` as minted here. Returns the token.
    pub fn mint(&self, mut claims: Claims, lifetime: u64) -> Result<String, KeyError> {
        let now = now_unix_f64().floor() as i64;
        let jti = uuid::Uuid::new_v4().to_string();
        let exp = now.saturating_add(i64::try_from(lifetime).unwrap_or(i64::MAX / 2));
        claims.insert("iat".into(), json!(now));
        claims.insert("nbf".into(), json!(now));
        claims.insert("exp".into(), json!(exp));
        claims.insert("jti".into(), json!(jti));
        let token = self.signer.sign(&claims)?;
        self.state().issued.insert(jti);
        Ok(token)
    }

    /// Verifies signature, `iss` (∈ `trusted`), `exp` (strictly in the future), `nbf` and that
    /// the token was minted by this instance and not revoked. Returns the claims.
    pub fn validate(&self, token: &str, trusted: &[String]) -> Result<Claims, TokenError> {
        let claims = self.signer.verify(token)?;
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !trusted.iter().any(|t| t == iss) {
            return Err(TokenError::UnknownIssuer(iss.to_string()));
        }
        let now = now_unix_f64();
        let exp = claims.get("exp").and_then(Value::as_f64);
        if !exp.is_some_and(|exp| now < exp) {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = claims.get("nbf").and_then(Value::as_f64) {
            if nbf > now {
                return Err(TokenError::NotYetValid);
            }
        }
        let jti = claims
            .get("jti")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let state = self.state();
        if state.revoked.contains(jti) {
            return Err(TokenError::Revoked);
        }
        if !state.issued.contains(jti) {
            return Err(TokenError::Foreign);
        }
        Ok(claims)
    }

    /// Revokes every token minted so far; returns how many.
    pub fn revoke_all(&self) -> usize {
        let mut state = self.state();
        let issued: Vec<String> = state.issued.drain().collect();
        let n = issued.len();
        state.revoked.extend(issued);
        n
    }

    /// Appends a token request record, assigning its sequence number and time.
    pub fn record(&self, mut record: TokenRequestRecord) {
        let mut state = self.state();
        state.next_seq += 1;
        record.seq = state.next_seq;
        record.time = now_rfc3339();
        if state.requests.len() >= MAX_TOKEN_LOG {
            state.requests.remove(0);
        }
        state.requests.push(record);
    }

    /// The token request log.
    pub fn requests(&self) -> Vec<TokenRequestRecord> {
        self.state().requests.clone()
    }

    /// Clears the token request log (issued/revoked tokens and lifetimes stay).
    pub fn clear_requests(&self) {
        self.state().requests.clear();
    }
}

/// A record with the common fields empty; `seq`/`time` are filled by [`Tokens::record`].
pub fn record(
    endpoint: &'static str,
    client_id: &str,
    auth_style: &'static str,
) -> TokenRequestRecord {
    TokenRequestRecord {
        seq: 0,
        time: String::new(),
        endpoint,
        client_id: client_id.to_string(),
        auth_style,
        status: 0,
        error: None,
        scope: None,
        audience: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(iss: &str) -> Claims {
        let mut c = Claims::new();
        c.insert("iss".into(), json!(iss));
        c
    }

    #[test]
    fn validate_checks_issuer_expiry_and_revocation() {
        let t = Tokens::new().expect("tokens");
        let trusted = vec!["https://idp".to_string()];
        let tok = t.mint(claims("https://idp"), 60).expect("mint");
        assert!(t.validate(&tok, &trusted).is_ok());
        assert!(matches!(
            t.validate(&tok, &["x".to_string()]),
            Err(TokenError::UnknownIssuer(_))
        ));
        let expired = t.mint(claims("https://idp"), 0).expect("mint");
        assert_eq!(t.validate(&expired, &trusted), Err(TokenError::Expired));
        assert_eq!(t.revoke_all(), 2);
        assert_eq!(t.validate(&tok, &trusted), Err(TokenError::Revoked));
        let fresh = t.mint(claims("https://idp"), 60).expect("mint");
        assert!(t.validate(&fresh, &trusted).is_ok());
        // Same key, other instance: not minted there.
        let other = Tokens::new().expect("tokens");
        assert_eq!(other.validate(&fresh, &trusted), Err(TokenError::Foreign));
    }
}
