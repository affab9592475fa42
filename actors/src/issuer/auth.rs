//! Auth actor: one per issuer; owns its credentials and the cached Authorization header, so
//! tokens are per issuer and refreshed before expiry; it stops with its issuer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, ActorFutureExt, AtomicResponse, Context, Handler, WrapFuture};
use command_issuer::auth::{
    ambient_token, basic_authorization, fetch_client_credentials, AuthHeader, AuthStyle,
    TokenRequest,
};
use command_issuer::command::build_http_client;
use command_issuer::config::Credentials;
use command_issuer::metrics::{Metrics, OutcomeLabels};
use secrecy::SecretString;
use tracing::{debug, info, warn};

use crate::messages::{GetAuthorization, InvalidateToken, IssuerKey, SetCredentials, Stop};

/// Holds one issuer's credentials and token.
pub struct AuthActor {
    key: IssuerKey,
    credentials: Option<Credentials>,
    ca_bundle_pem: Option<String>,
    scopes: Vec<String>,
    audience: String,
    http: Option<awc::Client>,
    style: Option<AuthStyle>,
    cached: Option<AuthHeader>,
    metrics: Arc<Metrics>,
}

impl AuthActor {
    /// A new auth actor with no credentials until the probe resolves them.
    pub fn new(key: IssuerKey, metrics: Arc<Metrics>) -> Self {
        Self {
            key,
            credentials: None,
            ca_bundle_pem: None,
            scopes: Vec::new(),
            audience: String::new(),
            http: None,
            style: None,
            cached: None,
            metrics,
        }
    }
}

impl Actor for AuthActor {
    type Context = Context<Self>;
}

impl Handler<Stop> for AuthActor {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        debug!(issuer = %self.key, "auth actor stopped with its issuer");
        ctx.stop();
    }
}

impl Handler<SetCredentials> for AuthActor {
    type Result = ();
    fn handle(&mut self, msg: SetCredentials, _: &mut Context<Self>) {
        if self.credentials.as_ref() != Some(&msg.credentials)
            || self.ca_bundle_pem != msg.ca_bundle_pem
            || self.scopes != msg.scopes
            || self.audience != msg.audience
        {
            self.scopes = msg.scopes;
            self.audience = msg.audience;
            debug!(issuer = %self.key, credentials = ?msg.credentials, "credentials changed; cached token dropped");
            self.credentials = Some(msg.credentials);
            self.ca_bundle_pem = msg.ca_bundle_pem;
            self.http = None;
            self.style = None;
            self.cached = None;
        }
    }
}

impl Handler<InvalidateToken> for AuthActor {
    type Result = ();
    fn handle(&mut self, _: InvalidateToken, _: &mut Context<Self>) {
        debug!(issuer = %self.key, "cached token dropped after a 401");
        self.cached = None;
    }
}

type AuthResult = Result<SecretString, String>;

impl Handler<GetAuthorization> for AuthActor {
    // Atomic: concurrent callers wait for one token fetch instead of each fetching.
    type Result = AtomicResponse<Self, AuthResult>;

    fn handle(&mut self, msg: GetAuthorization, _: &mut Context<Self>) -> Self::Result {
        let ready = |r: AuthResult| AtomicResponse::new(Box::pin(actix::fut::ready(r)));
        if let Some(h) = &self.cached {
            if h.expires.is_none_or(|e| e > Instant::now()) {
                return ready(Ok(h.value.clone()));
            }
        }
        let creds = match &self.credentials {
            None => return ready(Err("credentials not resolved yet".into())),
            Some(c) => c.clone(),
        };
        match creds {
            Credentials::Basic { username, password } => {
                let r = basic_authorization(&username, &password).map_err(|e| e.to_string());
                if let Ok(v) = &r {
                    self.cached = Some(AuthHeader {
                        value: v.clone(),
                        expires: None,
                    });
                }
                ready(r)
            }
            Credentials::OAuth {
                token_url,
                client_id,
                client_secret,
                scopes,
                audience,
            } => {
                let http = match &self.http {
                    Some(h) => h.clone(),
                    None => match build_http_client(
                        self.ca_bundle_pem.as_deref(),
                        Duration::from_secs(30),
                    ) {
                        Ok(h) => {
                            self.http = Some(h.clone());
                            h
                        }
                        Err(e) => {
                            return ready(Err(format!("failed to retrieve OAuth token: {e}")))
                        }
                    },
                };
                let style = self.style;
                let op_id = msg.op_id;
                let fut = async move {
                    let req = TokenRequest {
                        token_url: &token_url,
                        client_id: &client_id,
                        client_secret: &client_secret,
                        scopes: &scopes,
                        audience: audience.as_deref(),
                    };
                    fetch_client_credentials(&http, &req, style).await
                };
                AtomicResponse::new(Box::pin(fut.into_actor(self).map(move |res, act, _| match res {
                    Ok((header, style)) => {
                        act.metrics.token_fetches.get_or_create(&OutcomeLabels { outcome: "ok".into() }).inc();
                        info!(issuer = %act.key, op_id = ?op_id, client_auth = ?style, valid_for_secs = ?header.expires.map(|e| e.saturating_duration_since(Instant::now()).as_secs()), "OAuth token fetched");
                        act.style = Some(style);
                        let v = header.value.clone();
                        act.cached = Some(header);
                        Ok(v)
                    }
                    Err(e) => {
                        act.metrics.token_fetches.get_or_create(&OutcomeLabels { outcome: "error".into() }).inc();
                        warn!(issuer = %act.key, op_id = ?op_id, error = %e, "OAuth token fetch failed");
                        Err(e.to_string())
                    }
                })))
            }
            Credentials::Ambient => {
                let (scopes, audience, op_id) =
                    (self.scopes.clone(), self.audience.clone(), msg.op_id);
                let fut = async move { ambient_token(&scopes, &audience).await };
                AtomicResponse::new(Box::pin(fut.into_actor(self).map(move |res, act, _| match res {
                    Ok((header, provider)) => {
                        act.metrics.token_fetches.get_or_create(&OutcomeLabels { outcome: "ok".into() }).inc();
                        info!(issuer = %act.key, op_id = ?op_id, provider, "ambient token fetched");
                        let v = header.value.clone();
                        act.cached = Some(header);
                        Ok(v)
                    }
                    Err(e) => {
                        act.metrics.token_fetches.get_or_create(&OutcomeLabels { outcome: "error".into() }).inc();
                        warn!(issuer = %act.key, op_id = ?op_id, error = %e, "ambient token fetch failed");
                        Err(e.to_string())
                    }
                })))
            }
        }
    }
}
