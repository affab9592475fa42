//! Issuers registry: knows every issuer, starts and stops its auth and probe actors, and
//! answers the enroller with a ready issuer's connection.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix::{Actor, Addr, AsyncContext, Context, Handler, Supervisor};
use command_issuer::api::{IssuerKind, IssuerSpec};
use command_issuer::config::ConnectionConfig;
use tracing::{debug, info};

use crate::auth::AuthActor;
use crate::enroller::Enroller;
use crate::messages::LeadershipChanged;
use crate::messages::{
    CheckNow, IssuerDeleted, IssuerHealth, IssuerKey, IssuerReady, IssuerSnapshot, IssuerUpserted,
    IssuersListed, ReferenceChanged, ResolveError, ResolveIssuer,
};
use crate::probe::{Probe, ProbeDeps};

struct Entry {
    spec: IssuerSpec,
    generation: i64,
    auth: Addr<AuthActor>,
    probe: Addr<Probe>,
    checked: bool,
    ready: bool,
    supports_metadata: bool,
    connection: Option<Arc<ConnectionConfig>>,
    references: Vec<(&'static str, String, String)>,
}

/// The registry's own state: issuers by key, and which kinds have been listed.
pub struct Registry {
    issuers: HashMap<IssuerKey, Entry>,
    listed: HashSet<IssuerKind>,
    deps: ProbeDeps,
    enroller: Option<Addr<Enroller>>,
}

impl Registry {
    /// A registry that gives each probe these dependencies.
    pub fn new(deps: ProbeDeps) -> Self {
        Self {
            issuers: HashMap::new(),
            listed: HashSet::new(),
            deps,
            enroller: None,
        }
    }
}

impl Actor for Registry {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
    }
}

/// Registry ← supervisor: where to announce ready issuers.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct SetEnroller(pub Addr<Enroller>);

impl Handler<SetEnroller> for Registry {
    type Result = ();
    fn handle(&mut self, msg: SetEnroller, _: &mut Context<Self>) {
        self.enroller = Some(msg.0);
    }
}

impl Handler<IssuerUpserted> for Registry {
    type Result = ();
    fn handle(&mut self, msg: IssuerUpserted, ctx: &mut Context<Self>) {
        match self.issuers.get_mut(&msg.key) {
            Some(e) => {
                if e.generation != msg.generation || e.spec != msg.spec {
                    e.spec = msg.spec.clone();
                    e.generation = msg.generation;
                    e.probe.do_send(CheckNow {
                        force_write: false,
                        spec: msg.spec,
                        why: "spec changed",
                    });
                }
            }
            None => {
                info!(issuer = %msg.key, "issuer registered");
                let auth = AuthActor::new(msg.key.clone(), self.deps.metrics.clone()).start();
                let probe_key = msg.key.clone();
                let probe_auth = auth.clone();
                let deps = self.deps.clone();
                let registry = ctx.address();
                let spec = msg.spec.clone();
                let previous = msg.conditions.clone();
                let probe = Supervisor::start(move |_| {
                    Probe::new(probe_key, spec, previous, probe_auth, registry, deps)
                });
                self.issuers.insert(
                    msg.key,
                    Entry {
                        spec: msg.spec,
                        generation: msg.generation,
                        auth,
                        probe,
                        checked: false,
                        ready: false,
                        supports_metadata: false,
                        connection: None,
                        references: Vec::new(),
                    },
                );
            }
        }
    }
}

impl Handler<IssuerDeleted> for Registry {
    type Result = ();
    fn handle(&mut self, msg: IssuerDeleted, _: &mut Context<Self>) {
        if self.issuers.remove(&msg.key).is_some() {
            self.deps
                .metrics
                .issuer_ready
                .remove(&crate::probe::issuer_labels(&msg.key));
            info!(issuer = %msg.key, "issuer removed");
        }
    }
}

impl Handler<IssuersListed> for Registry {
    type Result = ();
    fn handle(&mut self, msg: IssuersListed, _: &mut Context<Self>) {
        let keep: HashSet<IssuerKey> = msg.keys.into_iter().collect();
        self.issuers
            .retain(|k, _| k.kind != msg.kind || keep.contains(k));
        if self.listed.insert(msg.kind) {
            info!(kind = %msg.kind, count = keep.len(), "issuers listed");
        }
    }
}

impl Handler<IssuerHealth> for Registry {
    type Result = ();
    fn handle(&mut self, msg: IssuerHealth, _: &mut Context<Self>) {
        let Some(e) = self.issuers.get_mut(&msg.key) else {
            return;
        };
        let became_ready = msg.ready && (!e.ready || !e.checked);
        e.checked = true;
        e.ready = msg.ready;
        e.supports_metadata = msg.supports_metadata;
        e.connection = msg.connection;
        e.references = msg.references;
        if became_ready {
            if let Some(en) = &self.enroller {
                en.do_send(IssuerReady { key: msg.key });
            }
        }
    }
}

impl Handler<ReferenceChanged> for Registry {
    type Result = ();
    fn handle(&mut self, msg: ReferenceChanged, _: &mut Context<Self>) {
        for (key, e) in &self.issuers {
            if e.references
                .iter()
                .any(|(k, ns, n)| *k == msg.kind && *ns == msg.namespace && *n == msg.name)
            {
                debug!(issuer = %key, object = %format!("{} {}/{}", msg.kind, msg.namespace, msg.name), "referenced object changed");
                e.probe.do_send(CheckNow {
                    force_write: false,
                    spec: e.spec.clone(),
                    why: "referenced Secret or ConfigMap changed",
                });
            }
        }
    }
}

impl Handler<LeadershipChanged> for Registry {
    type Result = ();
    fn handle(&mut self, msg: LeadershipChanged, _: &mut Context<Self>) {
        if msg.leading {
            for e in self.issuers.values() {
                e.probe.do_send(CheckNow {
                    force_write: true,
                    spec: e.spec.clone(),
                    why: "became leader",
                });
            }
        }
    }
}

impl Handler<ResolveIssuer> for Registry {
    type Result = Result<IssuerSnapshot, ResolveError>;
    fn handle(&mut self, msg: ResolveIssuer, _: &mut Context<Self>) -> Self::Result {
        let key = msg.key;
        let Some(e) = self.issuers.get(&key) else {
            if !self.listed.contains(&key.kind) {
                return Err(ResolveError::Unchecked);
            }
            return Err(ResolveError::Missing(format!(
                "{}.{} \"{}\" not found",
                key.kind.plural(),
                command_issuer::GROUP,
                key.name
            )));
        };
        if !e.checked {
            return Err(ResolveError::Unchecked);
        }
        match (&e.connection, e.ready) {
            (Some(conn), true) => Ok(IssuerSnapshot {
                key,
                spec: e.spec.clone(),
                supports_metadata: e.supports_metadata,
                connection: conn.clone(),
                auth: e.auth.clone(),
            }),
            _ => Err(ResolveError::Unready),
        }
    }
}
