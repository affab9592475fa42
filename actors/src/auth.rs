//! Auth actor: one per issuer; owns its credentials and the cached Authorization header.

use actix::{Actor, Context, Handler};
use command_issuer::auth::{basic_authorization, AuthHeader};
use command_issuer::config::Credentials;
use secrecy::SecretString;
use tracing::debug;

use crate::messages::{GetAuthorization, InvalidateToken, IssuerKey, SetCredentials};

/// Holds one issuer's credentials; tokens live here so each issuer has its own (design.md §3.5).
pub struct AuthActor {
    key: IssuerKey,
    credentials: Option<Credentials>,
    cached: Option<AuthHeader>,
}

impl AuthActor {
    /// A new auth actor with no credentials until the probe resolves them.
    pub fn new(key: IssuerKey) -> Self {
        Self {
            key,
            credentials: None,
            cached: None,
        }
    }
}

impl Actor for AuthActor {
    type Context = Context<Self>;
}

impl Handler<SetCredentials> for AuthActor {
    type Result = ();
    fn handle(&mut self, msg: SetCredentials, _: &mut Context<Self>) {
        if self.credentials.as_ref() != Some(&msg.0) {
            debug!(issuer = %self.key, credentials = ?msg.0, "credentials changed; cached header dropped");
            self.credentials = Some(msg.0);
            self.cached = None;
        }
    }
}

impl Handler<InvalidateToken> for AuthActor {
    type Result = ();
    fn handle(&mut self, _: InvalidateToken, _: &mut Context<Self>) {
        self.cached = None;
    }
}

impl Handler<GetAuthorization> for AuthActor {
    type Result = Result<SecretString, String>;
    fn handle(&mut self, msg: GetAuthorization, _: &mut Context<Self>) -> Self::Result {
        debug!(issuer = %self.key, op_id = ?msg.op_id, "authorization requested");
        if let Some(h) = &self.cached {
            if h.expires.is_none_or(|e| e > std::time::Instant::now()) {
                return Ok(h.value.clone());
            }
        }
        let header = match &self.credentials {
            None => return Err("credentials not resolved yet".into()),
            Some(Credentials::Basic { username, password }) => {
                basic_authorization(username, password).map_err(|e| e.to_string())?
            }
            Some(Credentials::OAuth { .. }) => {
                return Err("failed to retrieve OAuth token: OAuth client credentials are not supported by this build yet".into())
            }
            Some(Credentials::Ambient) => {
                return Err("failed to obtain ambient credentials: ambient credentials are not supported by this build yet".into())
            }
        };
        self.cached = Some(AuthHeader {
            value: header.clone(),
            expires: None,
        });
        Ok(header)
    }
}
