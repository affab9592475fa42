//! Metadata-probe actor: one per issuer, owned by the registry and stopped with its issuer.
//! Resolves the issuer's config, checks Command's health and metadata fields on a jittered
//! interval, and reports Ready / SupportsMetadata.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, Recipient, SpawnHandle,
    WrapFuture,
};
use command_issuer::api::{IssuerCondition, IssuerSpec};
use command_issuer::backoff::{backoff, jitter};
use command_issuer::command::CommandClient;
use command_issuer::config::{health_schedule, secret_namespace, ConnectionConfig, HealthSchedule};
use command_issuer::health::{issuer_conditions, CheckResult};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tracing::{debug, info, warn};

use super::check::{check, ProbeAuth, ProbeDeps, Stage};
use super::resolve::{references, References};
use crate::messages::{CheckNow, IssuerHealth, IssuerKey, Stop, WriteIssuerStatus};

/// How many quiet interval checks reuse the resolved connection before one reads it again.
const REREAD_EVERY: u32 = 9;

/// One issuer's probe state.
pub struct Probe {
    key: IssuerKey,
    uid: String,
    spec: IssuerSpec,
    conditions: Vec<IssuerCondition>,
    auth: ProbeAuth,
    registry: Recipient<IssuerHealth>,
    deps: ProbeDeps,
    established: Option<ConnectionConfig>,
    /// The HTTPS client of the last connection, reused while the connection is unchanged.
    client: Option<(ConnectionConfig, CommandClient)>,
    running: bool,
    recheck: bool,
    timer: Option<SpawnHandle>,
    failures: u32,
    write_failures: u32,
    /// Interval checks since the referenced objects were last read.
    quiet_checks: u32,
    force_write: bool,
    /// `Retry-After` of the last failed check (429/503): the next check waits at least this.
    retry_after: Option<Duration>,
}

impl Probe {
    /// A probe for the issuer `key` with this uid; it checks as soon as it starts.
    pub fn new(
        (key, uid): (IssuerKey, String),
        spec: IssuerSpec,
        conditions: Vec<IssuerCondition>,
        auth: ProbeAuth,
        registry: Recipient<IssuerHealth>,
        deps: ProbeDeps,
    ) -> Self {
        Self {
            key,
            uid,
            spec,
            conditions,
            auth,
            registry,
            deps,
            established: None,
            client: None,
            running: false,
            recheck: false,
            timer: None,
            failures: 0,
            write_failures: 0,
            quiet_checks: 0,
            force_write: false,
            retry_after: None,
        }
    }
}

impl Actor for Probe {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        self.run_check(ctx, "issuer registered");
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        // Its series goes with it: the not-Ready alert must not fire for a deleted issuer.
        self.deps.metrics.issuer_ready.remove(&self.key.labels());
    }
}

impl Handler<Stop> for Probe {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        info!(issuer = %self.key, "probe stopped with its issuer");
        ctx.stop();
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
                let result = CheckResult::BadInterval(e);
                self.finish(ctx, result, None, Vec::new(), HealthSchedule::Disabled);
                return;
            }
        };
        self.running = true;
        if why == "interval" {
            // Routine: a thousand issuers must not fill the log at info level.
            debug!(issuer = %self.key, why, "health check");
        } else {
            info!(issuer = %self.key, why, "health check");
        }
        let ns = secret_namespace(
            self.key.kind,
            self.key.namespace.as_deref(),
            &settings.cluster_resource_namespace,
            settings.secret_access_at_cluster_level,
        );
        let refs = references(&self.spec, &ns);
        // A quiet interval check of a healthy issuer reuses what the last one read: changes of
        // its Secrets and ConfigMaps are watched and trigger a full check. Every tenth interval
        // check reads them anyway, in case a watch missed something.
        let reuse = match why {
            "interval" if self.quiet_checks < REREAD_EVERY => self.established.clone(),
            _ => None,
        };
        self.quiet_checks = if reuse.is_some() {
            self.quiet_checks.saturating_add(1)
        } else {
            0
        };
        let fut = check(
            self.deps.clone(),
            self.spec.clone(),
            ns,
            self.auth.clone(),
            self.client.take(),
            reuse,
        );
        ctx.spawn(
            fut.into_actor(self)
                .map(move |(conn, client, stage), act, ctx| {
                    let new_connection = conn.is_some() && act.established != conn;
                    if let (Some(c), Some(client)) = (&conn, client) {
                        act.client = Some((c.clone(), client));
                    }
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
                }),
        );
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
        let leading = self.deps.leading.load(Ordering::SeqCst);
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
            .get_or_create(&self.key.labels())
            .set(i64::from(ready));
        let supports = matches!(
            result,
            CheckResult::Healthy {
                supports_metadata: true
            }
        );
        self.registry.do_send(IssuerHealth {
            key: self.key.clone(),
            uid: self.uid.clone(),
            ready,
            supports_metadata: supports,
            connection: if ready { conn.map(Arc::new) } else { None },
            references: refs,
        });
        let seed = self.key.to_string();
        let next = match (&result, schedule) {
            (CheckResult::BadInterval(_), _) => None,
            // Spread over a tenth of the interval (≤ 30 s), so issuers created together do
            // not all check in the same second for ever after.
            (r, HealthSchedule::Every(d)) if r.is_ready() => {
                Some(jitter(d, (d / 10).min(Duration::from_secs(30)), &seed))
            }
            (r, HealthSchedule::Disabled) if r.is_ready() => None,
            _ => Some(backoff(self.failures, self.retry_after.take())),
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
                    Ok(Ok(())) => true,
                    Ok(Err(e)) => {
                        warn!(issuer = %key, error = %e, "issuer status write failed; retrying with backoff");
                        false
                    }
                    Err(e) => {
                        warn!(issuer = %key, error = %e, "status writer unavailable; retrying with backoff");
                        false
                    }
                }
            }
            .into_actor(self)
            .map(move |written, act, ctx| {
                let next = if written {
                    act.write_failures = 0;
                    next
                } else {
                    // Check again (and write again) on the backoff, not the full interval.
                    act.force_write = true;
                    act.write_failures = act.write_failures.saturating_add(1);
                    let again = backoff(act.write_failures, None);
                    Some(next.map_or(again, |n| n.min(again)))
                };
                act.after_write(ctx, next)
            }),
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
            debug!(issuer = %self.key, next_check_in_secs = d.as_secs(), "next health check scheduled");
            self.timer = Some(ctx.run_later(d, |act, ctx| act.run_check(ctx, "interval")));
        }
    }
}
