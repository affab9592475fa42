//! One issuer's Command as every call site uses it: the HTTPS client built once per
//! connection, the issuer's token source, a metric per call with its endpoint, and the rule
//! "401 on a bearer token → fresh token → one retry". Probe, enrollment, recovery and
//! follow-up all call through here, so none of them repeats it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use command_issuer::command::{build_http_client, CommandClient, CommandError};
use command_issuer::config::{ConnectionConfig, Credentials};
use command_issuer::metrics::Metrics;
use secrecy::SecretString;
use tracing::info;

use crate::messages::{AuthHandle, InvalidateToken};

/// Why a Command call did not get an answer from Command.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No Authorization header could be had; nothing was sent.
    #[error("{0}")]
    Auth(String),
    /// Command (or the network in between) failed the call.
    #[error(transparent)]
    Command(CommandError),
}

/// Distinct trust settings whose HTTPS client is kept for reuse; beyond that (a cluster with
/// very many different CA bundles) clients are built per connection instead of growing this.
const MAX_SHARED_CLIENTS: usize = 64;

/// A trust setting: the CA bundle (none = the built-in roots) and the call timeout.
type TrustKey = (Option<String>, Duration);

thread_local! {
    /// One HTTPS client (TLS configuration and connection pool) per trust setting, shared by
    /// every issuer with that CA bundle: a thousand issuers on one Command keep a few warm
    /// connections instead of a thousand TLS stacks. Credentials travel per request (the
    /// Authorization header), never per connection. Every actor runs on this one thread.
    static SHARED: std::cell::RefCell<std::collections::HashMap<TrustKey, awc::Client>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// The HTTPS client of one issuer connection, shared with the issuers that trust the same CAs.
pub fn client_for(
    conn: &ConnectionConfig,
    timeout: Duration,
) -> Result<CommandClient, CommandError> {
    let key = (conn.ca_bundle_pem.clone(), timeout);
    let http = match SHARED.with(|c| c.borrow().get(&key).cloned()) {
        Some(h) => h,
        None => {
            let h = build_http_client(conn.ca_bundle_pem.as_deref(), timeout)?;
            SHARED.with(|c| {
                let mut c = c.borrow_mut();
                if c.len() < MAX_SHARED_CLIENTS {
                    c.insert(key, h.clone());
                }
            });
            h
        }
    };
    Ok(CommandClient::new(http, conn.base_url()).with_timeout(timeout))
}

/// A client, a token source and the metrics, for the calls of one attempt or one check.
pub struct CommandCalls<'a> {
    /// The HTTPS client of the issuer's connection.
    pub client: &'a CommandClient,
    /// The issuer's auth actor.
    pub auth: &'a AuthHandle,
    /// Whether the credentials are tokens (a 401 may mean a stale token) or Basic.
    pub bearer: bool,
    /// Call counters.
    pub metrics: &'a Arc<Metrics>,
    /// Operation id for the auth actor's log lines.
    pub op_id: Option<&'a str>,
}

/// Whether these credentials send tokens that can go stale (anything but Basic).
pub fn is_bearer(credentials: &Credentials) -> bool {
    !matches!(credentials, Credentials::Basic { .. })
}

impl CommandCalls<'_> {
    /// Base URL of the connection, for log lines.
    pub fn base_url(&self) -> &str {
        self.client.base_url()
    }

    /// One call: fetch the header, call, count it; on a 401 with a bearer token, drop the
    /// token, fetch a fresh one and call once more. `retried` tells the caller a second call
    /// was sent (an enrollment that may now exist twice must be looked up, not assumed new).
    pub async fn call<T, F, Fut>(
        &self,
        endpoint: &'static str,
        f: F,
    ) -> (Result<T, CallError>, bool)
    where
        F: Fn(CommandClient, SecretString) -> Fut,
        Fut: Future<Output = Result<T, CommandError>>,
    {
        let header = match self.auth.header(self.op_id).await {
            Ok(h) => h,
            Err(e) => return (Err(CallError::Auth(e)), false),
        };
        let mut result = f(self.client.clone(), header).await;
        self.metrics.command_call(endpoint, &result);
        let unauthorized = |r: &Result<T, CommandError>| {
            matches!(r, Err(CommandError::Status { status: 401, .. }))
        };
        let mut retried = false;
        if self.bearer && unauthorized(&result) {
            self.auth.invalidate.do_send(InvalidateToken);
            if let Ok(fresh) = self.auth.header(self.op_id).await {
                info!(op_id = ?self.op_id, endpoint, "Command answered 401; retrying once with a fresh token");
                result = f(self.client.clone(), fresh).await;
                self.metrics.command_call(endpoint, &result);
                retried = true;
            }
        }
        if unauthorized(&result) {
            self.auth.invalidate.do_send(InvalidateToken);
        }
        (result.map_err(CallError::Command), retried)
    }
}
