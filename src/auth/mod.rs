//! Credentials → `Authorization` header, with the moment it stops being valid.

mod ambient;
mod basic;
mod oauth;

pub use ambient::{
    ambient_token, azure_token, combined_error, effective_audience, gce_identity_url, gcp_id_token,
    jwt_claims_summary, split_scopes, AMBIENT_TIMEOUT, AZURE_LOG_CLAIMS, DEFAULT_AUDIENCE,
    GCP_LOG_CLAIMS,
};
pub use basic::{basic_authorization, normalize_username};
pub use oauth::{
    fetch_client_credentials, parse_token, token_error, token_form, urlencode, AuthStyle,
    TokenRequest, EXPIRY_MARGIN, MAX_TOKEN_LIFETIME,
};

use std::time::Instant;

use secrecy::SecretString;

/// Why no Authorization header could be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The credentials are malformed.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// This credential method is not available in this build yet.
    #[error("{0}")]
    Unsupported(String),
    /// The token endpoint or identity provider refused or failed.
    #[error("{0}")]
    Token(String),
}

/// A ready-to-send header value; `expires` is None for Basic.
#[derive(Clone, Debug)]
pub struct AuthHeader {
    /// `Basic …` or `Bearer …`, never logged.
    pub value: SecretString,
    /// When a cached token must be refreshed.
    pub expires: Option<Instant>,
}
