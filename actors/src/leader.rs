//! Leader-election actor: holds or watches the Lease; only the holder writes. Standbys watch
//! but never write; a leader that cannot renew within the renew deadline stops writing, and
//! every read-and-renew is abandoned after a deadline so a hung call cannot stop the loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Recipient, WrapFuture};
use command_issuer::leader::{
    elect, next_lease_transitions, still_leading, Election, LeaseView, LEASE_DURATION, LEASE_NAME,
    RETRY_PERIOD,
};
use command_issuer::metrics::Metrics;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use tracing::{info, warn};

use crate::apiserver::LEASE_CALL_DEADLINE;
use crate::messages::{LeadershipChanged, Ping};

/// One candidate for the lease.
pub struct LeaderElector {
    api: Api<Lease>,
    identity: String,
    leading: Arc<AtomicBool>,
    last_renewal: Option<Instant>,
    busy: bool,
    metrics: Arc<Metrics>,
    listeners: Vec<Recipient<LeadershipChanged>>,
}

impl LeaderElector {
    /// A candidate in `namespace` that flips `leading` and tells `listeners` on each change.
    pub fn new(
        client: Client,
        namespace: &str,
        identity: String,
        leading: Arc<AtomicBool>,
        metrics: Arc<Metrics>,
        listeners: Vec<Recipient<LeadershipChanged>>,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            identity,
            leading,
            last_renewal: None,
            busy: false,
            metrics,
            listeners,
        }
    }

    fn set_leading(&mut self, now_leading: bool, why: &str) {
        let was = self.leading.swap(now_leading, Ordering::SeqCst);
        self.metrics.leader.set(i64::from(now_leading));
        if was != now_leading {
            if now_leading {
                info!(identity = %self.identity, lease = LEASE_NAME, why, "became leader");
            } else {
                warn!(identity = %self.identity, lease = LEASE_NAME, why, "stopped leading; writes stopped");
            }
            for l in &self.listeners {
                l.do_send(LeadershipChanged {
                    leading: now_leading,
                });
            }
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.leading.load(Ordering::SeqCst) && !still_leading(self.last_renewal, Instant::now())
        {
            self.set_leading(false, "lease not renewed within the renew deadline");
        }
        if self.busy {
            return;
        }
        self.busy = true;
        let api = self.api.clone();
        let me = self.identity.clone();
        let fut = async move {
            match tokio::time::timeout(LEASE_CALL_DEADLINE, try_lead(&api, &me)).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!(
                    "the apiserver did not answer the lease read or renew within {LEASE_CALL_DEADLINE:?}"
                )),
            }
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, _| {
            act.busy = false;
            match res {
                Ok(None) => {
                    act.last_renewal = Some(Instant::now());
                    act.set_leading(true, "lease acquired or renewed");
                }
                Ok(Some(holder)) => {
                    act.last_renewal = None;
                    act.set_leading(false, &format!("lease held by {holder}"));
                }
                Err(e) => warn!(error = %e, lease = LEASE_NAME, "lease update failed"),
            }
        }));
    }
}

/// Reads the lease and takes or renews it; Ok(None) = we lead, Ok(Some(holder)) = standby.
async fn try_lead(api: &Api<Lease>, me: &str) -> Result<Option<String>, kube::Error> {
    let current = api.get_opt(LEASE_NAME).await?;
    let view = current
        .as_ref()
        .and_then(|l| l.spec.as_ref())
        .map(|s| LeaseView {
            holder: s.holder_identity.clone(),
            renewed: s.renew_time.as_ref().map(|t| t.0),
            duration_secs: s
                .lease_duration_seconds
                .unwrap_or(LEASE_DURATION.as_secs() as i32),
        });
    let now = jiff::Timestamp::now();
    let decision = elect(view.as_ref(), me, now);
    if let Election::Follow { holder } = decision {
        return Ok(Some(holder));
    }
    let prev = current
        .as_ref()
        .and_then(|l| l.spec.clone())
        .unwrap_or_default();
    let transitions = next_lease_transitions(
        prev.lease_transitions,
        decision == Election::Acquire && current.is_some(),
    );
    let spec = LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
        acquire_time: if decision == Election::Acquire {
            Some(MicroTime(now))
        } else {
            prev.acquire_time
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    };
    match current {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.into()),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            api.create(&PostParams::default(), &lease).await?;
        }
        Some(mut lease) => {
            // resourceVersion stays set: a concurrent writer makes this a 409, never two leaders.
            lease.spec = Some(spec);
            api.replace(LEASE_NAME, &PostParams::default(), &lease)
                .await?;
        }
    }
    Ok(None)
}

impl actix::Handler<Ping> for LeaderElector {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}

impl Actor for LeaderElector {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        info!(identity = %self.identity, lease = LEASE_NAME, "leader election started");
        self.metrics.leader.set(0);
        self.tick(ctx);
        ctx.run_interval(RETRY_PERIOD, |act, ctx| act.tick(ctx));
    }
}
