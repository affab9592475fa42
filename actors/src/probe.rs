//! Metadata-probe actor: one per issuer. Resolves the issuer's config, checks Command's health
//! and metadata fields on an interval, and reports Ready / SupportsMetadata.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, SpawnHandle, Supervised,
    WrapFuture,
};
use command_issuer::api::{IssuerCondition, IssuerSpec};
use command_issuer::command::{build_http_client, CommandClient, CommandError};
use command_issuer::config::{
    credentials_from_secret, health_schedule, resolve_connection, secret_namespace,
    select_ca_bundle, ConfigError, ConnectionConfig, Credentials, HealthSchedule,
};
use command_issuer::health::{issuer_conditions, supports_metadata, CheckResult};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Api, Client};
use tracing::{info, warn};

use crate::auth::AuthActor;
use crate::flags::Settings;
use crate::messages::{
    CheckNow, GetAuthorization, InvalidateToken, IssuerHealth, IssuerKey, SetCredentials,
    WriteIssuerStatus,
};
use crate::registry::Registry;
use crate::status_writer::StatusWriter;
use command_issuer::auth::split_scopes;
use command_issuer::metrics::{IssuerLabels, Metrics};

const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(300);

/// What every probe needs from the process.
#[derive(Clone)]
pub struct ProbeDeps {
    /// Apiserver client.
    pub client: Client,
    /// Validated flags.
    pub settings: Arc<Settings>,
    /// Where status goes.
    pub writer: Addr<StatusWriter>,
    /// Counters and gauges.
    pub metrics: Arc<Metrics>,
    /// True while this process may write status.
    pub leading: Arc<std::sync::atomic::AtomicBool>,
}

/// One issuer's probe state.
pub struct Probe {
    key: IssuerKey,
    spec: IssuerSpec,
    conditions: Vec<IssuerCondition>,
    auth: Addr<AuthActor>,
    registry: Addr<Registry>,
    deps: ProbeDeps,
    established: Option<ConnectionConfig>,
    running: bool,
    recheck: bool,
    timer: Option<SpawnHandle>,
    failures: u32,
    force_write: bool,
    /// `Retry-After` of the last failed check (429/503): the next check waits at least this.
    retry_after: Option<Duration>,
}

impl Probe {
    /// A probe that checks as soon as it starts.
    pub fn new(
        key: IssuerKey,
        spec: IssuerSpec,
        conditions: Vec<IssuerCondition>,
        auth: Addr<AuthActor>,
        registry: Addr<Registry>,
        deps: ProbeDeps,
    ) -> Self {
        Self {
            key,
            spec,
            conditions,
            auth,
            registry,
            deps,
            established: None,
            running: false,
            recheck: false,
            timer: None,
            failures: 0,
            force_write: false,
            retry_after: None,
        }
    }
}

impl Actor for Probe {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        self.running = false;
        self.run_check(ctx, "issuer registered");
    }
}

impl Supervised for Probe {
    fn restarting(&mut self, _: &mut Context<Self>) {
        warn!(issuer = %self.key, "probe restarting");
        self.established = None;
    }
}

impl Handler<CheckNow> for Probe {
    type Result = ();
    fn handle(&mut self, msg: CheckNow, ctx: &mut Context<Self>) {
        self.spec = msg.spec;
        self.force_write |= msg.force_write;
        if self.running {
            self.recheck = true;
        } else {
            self.run_check(ctx, msg.why);
        }
    }
}

/// Where the check stopped, before the actor turns it into a [`CheckResult`].
enum Stage {
    Config(ConfigError),
    Auth(String),
    Status(CommandError),
    Metadata(CommandError),
    Done(bool),
}

type References = Vec<(&'static str, String, String)>;

fn api_reason(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message,
        other => other.to_string(),
    }
}

/// Reads one named object; a failure becomes the issuer's error with the apiserver's reason.
async fn get_named<K>(
    api: &Api<K>,
    name: &str,
    error: impl FnOnce(String, String) -> ConfigError,
) -> Result<K, ConfigError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get(name)
        .await
        .map_err(|e| error(name.to_string(), api_reason(e)))
}

/// Reads the credential Secret and CA bundle the spec names, then resolves the connection.
async fn resolve(
    client: Client,
    spec: &IssuerSpec,
    ns: &str,
) -> Result<ConnectionConfig, ConfigError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let credentials = match spec
        .command_secret_name
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        Some(name) => {
            let s = get_named(&secrets, name, |name, reason| {
                ConfigError::CredentialSecretMissing { name, reason }
            })
            .await?;
            credentials_from_secret(&s)?
        }
        None => Credentials::Ambient,
    };
    let key = spec.ca_bundle_key.as_deref();
    let ca = if let Some(name) = spec
        .ca_bundle_config_map_name
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        let cms: Api<ConfigMap> = Api::namespaced(client, ns);
        let cm = get_named(&cms, name, |name, reason| ConfigError::CaConfigMapMissing {
            name,
            reason,
        })
        .await?;
        Some(select_ca_bundle(&cm.data.unwrap_or_default(), key)?)
    } else if let Some(name) = spec.ca_secret_name.as_deref().filter(|s| !s.is_empty()) {
        let s = get_named(&secrets, name, |name, reason| {
            ConfigError::CaSecretMissing { name, reason }
        })
        .await?;
        let data: BTreeMap<String, String> = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect();
        Some(select_ca_bundle(&data, key)?)
    } else {
        None
    };
    resolve_connection(spec, credentials, ca)
}

/// A 401 on a bearer token may only mean the token went stale: worth one retry with a new one.
pub fn is_stale_token<T>(result: &Result<T, CommandError>, credentials: &Credentials) -> bool {
    matches!(result, Err(CommandError::Status { status: 401, .. }))
        && !matches!(credentials, Credentials::Basic { .. })
}

/// Delay before re-checking a failing issuer: exponential in the failures so far, or Command's
/// `Retry-After` when it asks for longer, both capped at [`MAX_ERROR_BACKOFF`].
fn error_delay(failures: u32, retry_after: Option<Duration>) -> Duration {
    Duration::from_secs(2u64.saturating_pow(failures.min(9)))
        .max(retry_after.unwrap_or_default())
        .min(MAX_ERROR_BACKOFF)
}

/// Metric labels of an issuer.
pub fn issuer_labels(key: &IssuerKey) -> IssuerLabels {
    IssuerLabels {
        kind: key.kind.to_string(),
        namespace: key.namespace.clone().unwrap_or_default(),
        name: key.name.clone(),
    }
}

fn references(spec: &IssuerSpec, ns: &str) -> References {
    let mut r = Vec::new();
    for (kind, name) in [
        ("Secret", &spec.command_secret_name),
        ("Secret", &spec.ca_secret_name),
        ("ConfigMap", &spec.ca_bundle_config_map_name),
    ] {
        if let Some(n) = name.as_deref().filter(|n| !n.is_empty()) {
            r.push((kind, ns.to_string(), n.to_string()));
        }
    }
    r
}

impl Probe {
    fn run_check(&mut self, ctx: &mut Context<Self>, why: &'static str) {
        if let Some(t) = self.timer.take() {
            ctx.cancel_future(t);
        }
        let settings = self.deps.settings.clone();
        let schedule = match health_schedule(
            self.spec.healthcheck.as_ref(),
            settings.default_health_interval,
        ) {
            Ok(s) => s,
            Err(e) => {
                self.finish(
                    ctx,
                    CheckResult::BadInterval(e),
                    None,
                    Vec::new(),
                    HealthSchedule::Disabled,
                );
                return;
            }
        };
        self.running = true;
        info!(issuer = %self.key, why, "health check");
        let ns = secret_namespace(
            self.key.kind,
            self.key.namespace.as_deref(),
            &settings.cluster_resource_namespace,
            settings.secret_access_at_cluster_level,
        );
        let refs = references(&self.spec, &ns);
        let spec = self.spec.clone();
        let client = self.deps.client.clone();
        let auth = self.auth.clone();
        let timeout = settings.command_timeout;
        let metrics = self.deps.metrics.clone();
        let fut = async move {
            let conn = match resolve(client, &spec, &ns).await {
                Ok(c) => c,
                Err(e) => return (None, Stage::Config(e)),
            };
            auth.do_send(SetCredentials {
                credentials: conn.credentials.clone(),
                ca_bundle_pem: conn.ca_bundle_pem.clone(),
                scopes: split_scopes(spec.scopes.as_deref().unwrap_or("")),
                audience: spec.audience.clone().unwrap_or_default(),
            });
            let header = match auth.send(GetAuthorization { op_id: None }).await {
                Ok(Ok(h)) => h,
                Ok(Err(e)) => return (Some(conn), Stage::Auth(e)),
                Err(e) => {
                    return (
                        Some(conn),
                        Stage::Auth(format!("auth actor unavailable: {e}")),
                    )
                }
            };
            let http = match build_http_client(conn.ca_bundle_pem.as_deref(), timeout) {
                Ok(h) => h,
                Err(e) => return (Some(conn), Stage::Status(e)),
            };
            let command = CommandClient::new(http, conn.base_url()).with_timeout(timeout);
            let mut header = header;
            let mut status = command.status_endpoints(&header).await;
            metrics.command_call("GET /Status/Endpoints", &status);
            if is_stale_token(&status, &conn.credentials) {
                // One retry with a fresh token (design.md §3.5).
                auth.do_send(InvalidateToken);
                if let Ok(Ok(h)) = auth.send(GetAuthorization { op_id: None }).await {
                    header = h;
                    status = command.status_endpoints(&header).await;
                    metrics.command_call("GET /Status/Endpoints", &status);
                }
            }
            if let Err(e) = status {
                return (Some(conn), Stage::Status(e));
            }
            let fields = command.metadata_fields(&header).await;
            metrics.command_call("GET /MetadataFields", &fields);
            match fields {
                Ok(fields) => (Some(conn), Stage::Done(supports_metadata(&fields))),
                Err(e) => (Some(conn), Stage::Metadata(e)),
            }
        };
        ctx.spawn(fut.into_actor(self).map(move |(conn, stage), act, ctx| {
            let new_connection = conn.is_some() && act.established != conn;
            act.retry_after = match &stage {
                Stage::Status(e) | Stage::Metadata(e) => e.retry_after(),
                _ => None,
            };
            let result = match stage {
                Stage::Config(e) => CheckResult::Config(e),
                Stage::Auth(e) => CheckResult::Auth(e),
                Stage::Status(e) if new_connection => CheckResult::FirstContact(e),
                Stage::Status(e) => CheckResult::Health(e),
                Stage::Metadata(e) => CheckResult::Metadata(e),
                Stage::Done(m) => CheckResult::Healthy {
                    supports_metadata: m,
                },
            };
            act.finish(ctx, result, conn, refs, schedule);
        }));
    }

    fn finish(
        &mut self,
        ctx: &mut Context<Self>,
        result: CheckResult,
        conn: Option<ConnectionConfig>,
        refs: References,
        schedule: HealthSchedule,
    ) {
        if self.recheck {
            // The spec or a referenced object changed during this check: its result is stale,
            // so neither write nor announce it; check again with what is current.
            self.running = false;
            self.recheck = false;
            self.run_check(ctx, "change during check");
            return;
        }
        let ready = result.is_ready();
        let (conditions, transition) =
            issuer_conditions(&self.conditions, &result, Time(jiff::Timestamp::now()));
        if ready {
            self.established = conn.clone();
            self.failures = 0;
        } else {
            if matches!(
                result,
                CheckResult::FirstContact(_) | CheckResult::Config(_) | CheckResult::Auth(_)
            ) {
                self.established = None;
            }
            self.failures = self.failures.saturating_add(1);
            warn!(issuer = %self.key, detail = %result.ready_message(), "issuer not ready");
        }
        let message = result.ready_message();
        let leading = self.deps.leading.load(std::sync::atomic::Ordering::SeqCst);
        let write = (leading && (conditions != self.conditions || transition || self.force_write))
            .then(|| {
                self.deps.writer.send(WriteIssuerStatus {
                    key: self.key.clone(),
                    conditions: conditions.clone(),
                    transition,
                    ready,
                    message,
                })
            });
        self.force_write &= write.is_none();
        self.conditions = conditions;
        self.deps
            .metrics
            .issuer_ready
            .get_or_create(&issuer_labels(&self.key))
            .set(i64::from(ready));
        let supports = matches!(
            result,
            CheckResult::Healthy {
                supports_metadata: true
            }
        );
        self.registry.do_send(IssuerHealth {
            key: self.key.clone(),
            ready,
            supports_metadata: supports,
            connection: if ready { conn.map(Arc::new) } else { None },
            references: refs,
        });
        let next = match (&result, schedule) {
            (CheckResult::BadInterval(_), _) => None,
            (r, HealthSchedule::Every(d)) if r.is_ready() => Some(d),
            (r, HealthSchedule::Disabled) if r.is_ready() => None,
            _ => Some(error_delay(self.failures, self.retry_after.take())),
        };
        let Some(write) = write else {
            self.after_write(ctx, next);
            return;
        };
        // Writes of one issuer stay in order: the next check starts after this write lands.
        let key = self.key.clone();
        ctx.spawn(
            async move {
                match write.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!(issuer = %key, error = %e, "issuer status write failed"),
                    Err(e) => warn!(issuer = %key, error = %e, "status writer unavailable"),
                }
            }
            .into_actor(self)
            .map(move |(), act, ctx| act.after_write(ctx, next)),
        );
    }

    fn after_write(&mut self, ctx: &mut Context<Self>, next: Option<Duration>) {
        self.running = false;
        if self.recheck {
            self.recheck = false;
            self.run_check(ctx, "change during check");
            return;
        }
        if let Some(d) = next {
            self.timer = Some(ctx.run_later(d, |act, ctx| act.run_check(ctx, "interval")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_delay_honours_retry_after_within_the_cap() {
        let s = Duration::from_secs;
        assert_eq!(error_delay(1, None), s(2));
        assert_eq!(error_delay(1, Some(s(20))), s(20));
        assert_eq!(error_delay(4, Some(s(3))), s(16));
        assert_eq!(error_delay(1, Some(s(100_000))), MAX_ERROR_BACKOFF);
        assert_eq!(error_delay(30, None), MAX_ERROR_BACKOFF);
    }
}
