//! RS256 JSON Web Tokens: the simulator's signing key, its JWKS, signing and verification.
//!
//! Every token the simulator mints (its own identity provider, the Google metadata server and
//! the Entra token endpoint) is signed with one RSA key. ring cannot generate RSA keys and a
//! pure-Rust generator takes seconds in debug builds, so the key is a fixed **test-only** key
//! compiled into the binary (`src/idp-signing-key.pem`). Tokens of another simulator instance
//! still fail: the validator also requires the token's `jti` to have been minted by this
//! instance (see [`crate::tokens`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, RsaKeyPair, RsaPublicKeyComponents};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivatePkcs8KeyDer;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// The test-only RSA-2048 signing key (PKCS#8 PEM). Never use it for anything real.
const SIGNING_KEY_PEM: &str = include_str!("idp-signing-key.pem");

/// JSON object of claims.
pub type Claims = Map<String, Value>;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts, or header/payload not JSON objects.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg` is not RS256 or `kid` is not ours.
    #[error("unsupported algorithm or unknown key id")]
    UnknownKey,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
}

/// Cannot build the signer (only if the embedded key is broken).
#[derive(Debug, thiserror::Error)]
#[error("signing key: {0}")]
pub struct KeyError(String);

/// The RSA key every simulated identity provider signs with.
pub struct Signer {
    key: RsaKeyPair,
    public: RsaPublicKeyComponents<Vec<u8>>,
    kid: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish()
    }
}

impl Signer {
    /// Loads the embedded test key.
    pub fn new() -> Result<Signer, KeyError> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(SIGNING_KEY_PEM.as_bytes())
            .map_err(|e| KeyError(e.to_string()))?;
        let key =
            RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).map_err(|e| KeyError(e.to_string()))?;
        let public = RsaPublicKeyComponents::<Vec<u8>>::from(key.public());
        // kid: base64url of the first 12 bytes of SHA-256(n || e), stable for the key.
        let mut h = Sha256::new();
        h.update(&public.n);
        h.update(&public.e);
        let kid = URL_SAFE_NO_PAD.encode(&h.finalize()[..12]);
        Ok(Signer {
            key,
            public,
            kid,
            rng: SystemRandom::new(),
        })
    }

    /// Key id carried in every token header and in the JWKS.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `{"keys":[{kty,use,alg,kid,n,e}]}`.
    pub fn jwks(&self) -> Value {
        json!({"keys": [{
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(strip_zeros(&self.public.n)),
            "e": URL_SAFE_NO_PAD.encode(strip_zeros(&self.public.e)),
        }]})
    }

    /// Compact JWS of `claims` with header `{"alg":"RS256","typ":"JWT","kid":…}`.
    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(claims.clone()).to_string())
        );
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &self.rng,
                input.as_bytes(),
                &mut sig,
            )
            .map_err(|e| KeyError(e.to_string()))?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }

    /// Checks structure, `alg`/`kid` and the signature; returns the claims (not yet checked for
    /// issuer, time or revocation).
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        let mut parts = token.trim().split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed("not three parts"));
        };
        let header = decode_object(h).ok_or(JwtError::Malformed("header"))?;
        if header.get("alg").and_then(Value::as_str) != Some("RS256") {
            return Err(JwtError::UnknownKey);
        }
        match header.get("kid") {
            None => {}
            Some(Value::String(k)) if *k == self.kid => {}
            Some(_) => return Err(JwtError::UnknownKey),
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| JwtError::Malformed("signature"))?;
        self.public
            .verify(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                format!("{h}.{p}").as_bytes(),
                &sig,
            )
            .map_err(|_| JwtError::BadSignature)?;
        decode_object(p).ok_or(JwtError::Malformed("payload"))
    }
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

fn decode_object(part: &str) -> Option<Claims> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The claims of a compact JWS without verifying it (for logs and error texts).
pub fn unverified_claims(token: &str) -> Option<Claims> {
    decode_object(token.split('.').nth(1)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_verify_and_tamper() {
        let s = Signer::new().expect("signer");
        let mut c = Claims::new();
        c.insert("sub".into(), json!("me"));
        let t = s.sign(&c).expect("sign");
        assert_eq!(s.verify(&t).expect("verifies")["sub"], "me");
        let mut parts: Vec<&str> = t.split('.').collect();
        let other = URL_SAFE_NO_PAD.encode(r#"{"sub":"admin"}"#);
        parts[1] = &other;
        assert_eq!(s.verify(&parts.join(".")), Err(JwtError::BadSignature));
        assert!(matches!(s.verify("a.b"), Err(JwtError::Malformed(_))));
        let jwks = s.jwks();
        assert_eq!(jwks["keys"][0]["kid"], s.kid());
        assert_eq!(jwks["keys"][0]["e"], "AQAB");
    }
}
