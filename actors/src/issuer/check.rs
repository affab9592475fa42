//! One health check of one issuer, as a plain async procedure the probe runs: read the
//! referenced objects, hand the credentials to the auth actor, then `GET /Status/Endpoints`
//! and `GET /MetadataFields` through the Command call layer.

use command_issuer::api::IssuerSpec;
use command_issuer::auth::split_scopes;
use command_issuer::command::{CommandClient, CommandError};
use command_issuer::config::{ConfigError, ConnectionConfig};
use command_issuer::health::supports_metadata;

use super::resolve::resolve;
use crate::command_calls::{client_for, is_bearer, CallError, CommandCalls};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use actix::Recipient;
use command_issuer::metrics::Metrics;
use kube::Client;

use crate::flags::Settings;
use crate::messages::{AuthHandle, SetCredentials, WriteIssuerStatus};

/// What every probe needs from the process.
#[derive(Clone)]
pub struct ProbeDeps {
    /// Apiserver client.
    pub client: Client,
    /// Validated flags.
    pub settings: Arc<Settings>,
    /// Where issuer status goes.
    pub writer: Recipient<WriteIssuerStatus>,
    /// Counters and gauges.
    pub metrics: Arc<Metrics>,
    /// True while this process may write status.
    pub leading: Arc<AtomicBool>,
    /// Health checks running at once, all issuers together: a thousand issuers checked at
    /// start-up must not open a thousand connections to the apiserver and to Command.
    pub checks: Arc<tokio::sync::Semaphore>,
}

/// Health checks in flight at once, all issuers together.
pub const CONCURRENT_CHECKS: usize = 16;

/// The issuer's auth actor as the probe uses it.
#[derive(Clone)]
pub struct ProbeAuth {
    /// Headers and invalidation.
    pub handle: AuthHandle,
    /// Where resolved credentials go.
    pub credentials: Recipient<SetCredentials>,
}

/// Where the check stopped, before the actor turns it into a [`CheckResult`].
pub enum Stage {
    /// The spec, Secret or ConfigMap is unusable.
    Config(ConfigError),
    /// No Authorization header.
    Auth(String),
    /// `GET /Status/Endpoints` failed.
    Status(CommandError),
    /// `GET /MetadataFields` failed.
    Metadata(CommandError),
    /// Healthy; whether our metadata fields exist.
    Done(bool),
}

/// The health check itself: read, authenticate, `GET /Status/Endpoints`, `GET /MetadataFields`.
/// `reuse`: the connection resolved by an earlier check, used as it is instead of reading the
/// Secrets again (the probe passes it only on quiet interval checks: a change of a referenced
/// object triggers a check that reads them).
pub async fn check(
    deps: ProbeDeps,
    spec: IssuerSpec,
    ns: String,
    auth: ProbeAuth,
    cached: Option<(ConnectionConfig, CommandClient)>,
    reuse: Option<ConnectionConfig>,
) -> (Option<ConnectionConfig>, Option<CommandClient>, Stage) {
    // Closed only if the semaphore is, which never happens; a check then simply runs.
    let _permit = deps.checks.clone().acquire_owned().await.ok();
    let conn = match reuse {
        Some(c) => c,
        None => {
            let conn = match resolve(deps.client.clone(), &spec, &ns).await {
                Ok(c) => c,
                Err(e) => return (None, None, Stage::Config(e)),
            };
            auth.credentials.do_send(SetCredentials {
                credentials: conn.credentials.clone(),
                ca_bundle_pem: conn.ca_bundle_pem.clone(),
                scopes: split_scopes(spec.scopes.as_deref().unwrap_or("")),
                audience: spec.audience.clone().unwrap_or_default(),
            });
            conn
        }
    };
    let client = match cached {
        Some((c, client)) if c == conn => client,
        _ => match client_for(&conn, deps.settings.command_timeout) {
            Ok(c) => c,
            Err(e) => return (Some(conn), None, Stage::Status(e)),
        },
    };
    let calls = CommandCalls {
        client: &client,
        auth: &auth.handle,
        bearer: is_bearer(&conn.credentials),
        metrics: &deps.metrics,
        op_id: None,
    };
    let (status, _) = calls
        .call("GET /Status/Endpoints", |c, h| async move {
            c.status_endpoints(&h).await
        })
        .await;
    let stage = match status {
        Err(CallError::Auth(e)) => Stage::Auth(e),
        Err(CallError::Command(e)) => Stage::Status(e),
        Ok(_) => match calls
            .call("GET /MetadataFields", |c, h| async move {
                c.metadata_fields(&h).await
            })
            .await
            .0
        {
            Ok(fields) => Stage::Done(supports_metadata(&fields)),
            Err(CallError::Auth(e)) => Stage::Auth(e),
            Err(CallError::Command(e)) => Stage::Metadata(e),
        },
    };
    (Some(conn), Some(client), stage)
}
