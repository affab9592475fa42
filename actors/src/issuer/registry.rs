//! Issuers registry: the one owner of every issuer's actors. It starts an auth and a probe
//! actor per issuer (identified by its uid), stops both when the issuer is deleted or
//! re-created, ignores reports from stopped probes, and answers the enroller with a ready
//! issuer's connection.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix::{Actor, AsyncContext, Context, Handler, Recipient};
use command_issuer::api::{IssuerKind, IssuerSpec};
use command_issuer::config::ConnectionConfig;
use tracing::{debug, info};

use super::check::ProbeDeps;
use super::resolve::References;
use super::spawn::{spawn_issuer, IssuerActors, IssuerStart};
use crate::messages::{
    CheckNow, IssuerDeleted, IssuerGone, IssuerHealth, IssuerKey, IssuerReady, IssuerSnapshot,
    IssuerUpserted, IssuersListed, LeadershipChanged, Ping, ReferenceChanged, ResolveError,
    ResolveIssuer, Stop,
};

struct Entry {
    uid: String,
    spec: IssuerSpec,
    generation: i64,
    actors: IssuerActors,
    checked: bool,
    ready: bool,
    supports_metadata: bool,
    connection: Option<Arc<ConnectionConfig>>,
    references: References,
}

/// Where the registry tells the enroller about issuers.
#[derive(Clone)]
pub struct IssuerNews {
    /// An issuer turned Ready.
    pub ready: Recipient<IssuerReady>,
    /// An issuer was deleted or re-created.
    pub gone: Recipient<IssuerGone>,
}

/// The registry's own state: issuers by key, and which kinds have been listed.
pub struct Registry {
    issuers: HashMap<IssuerKey, Entry>,
    listed: HashSet<IssuerKind>,
    deps: ProbeDeps,
    enroller: IssuerNews,
}

impl Registry {
    /// A registry that gives each probe these dependencies and tells the enroller.
    pub fn new(deps: ProbeDeps, enroller: IssuerNews) -> Self {
        Self {
            issuers: HashMap::new(),
            listed: HashSet::new(),
            deps,
            enroller,
        }
    }

    /// Stops an issuer's actors and drops everything kept for it (metric series included).
    fn remove(&mut self, key: &IssuerKey, why: &'static str) {
        if let Some(e) = self.issuers.remove(key) {
            for stop in &e.actors.stop {
                stop.do_send(Stop);
            }
            self.deps.metrics.issuer_ready.remove(&key.labels());
            self.enroller.gone.do_send(IssuerGone { key: key.clone() });
            info!(issuer = %key, uid = %e.uid, why, "issuer removed; its actors stopped");
        }
    }

    fn start(&mut self, msg: IssuerUpserted, ctx: &mut Context<Self>) {
        info!(issuer = %msg.key, uid = %msg.uid, "issuer registered");
        let start = IssuerStart {
            key: msg.key.clone(),
            uid: msg.uid.clone(),
            spec: msg.spec.clone(),
            conditions: msg.conditions,
            registry: ctx.address().recipient(),
        };
        let actors = spawn_issuer(&self.deps, start);
        self.issuers.insert(
            msg.key,
            Entry {
                uid: msg.uid,
                spec: msg.spec,
                generation: msg.generation,
                actors,
                checked: false,
                ready: false,
                supports_metadata: false,
                connection: None,
                references: Vec::new(),
            },
        );
    }
}

impl Actor for Registry {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
    }
}

impl Handler<Ping> for Registry {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}

impl Handler<IssuerUpserted> for Registry {
    type Result = ();
    fn handle(&mut self, msg: IssuerUpserted, ctx: &mut Context<Self>) {
        match self.issuers.get_mut(&msg.key) {
            Some(e) if e.uid != msg.uid => {
                // Deleted and created again under the same name: nothing of the old one may
                // keep writing this issuer's connection.
                self.remove(&msg.key, "re-created with a new uid");
                self.start(msg, ctx);
            }
            Some(e) => {
                if e.generation != msg.generation || e.spec != msg.spec {
                    e.spec = msg.spec.clone();
                    e.generation = msg.generation;
                    e.actors.check.do_send(CheckNow {
                        force_write: false,
                        spec: msg.spec,
                        why: "spec changed",
                    });
                }
            }
            None => self.start(msg, ctx),
        }
    }
}

impl Handler<IssuerDeleted> for Registry {
    type Result = ();
    fn handle(&mut self, msg: IssuerDeleted, _: &mut Context<Self>) {
        self.remove(&msg.key, "deleted");
    }
}

impl Handler<IssuersListed> for Registry {
    type Result = ();
    fn handle(&mut self, msg: IssuersListed, _: &mut Context<Self>) {
        let keep: HashSet<IssuerKey> = msg.keys.into_iter().collect();
        let gone: Vec<IssuerKey> = self
            .issuers
            .keys()
            .filter(|k| k.kind == msg.kind && !keep.contains(k))
            .cloned()
            .collect();
        for k in gone {
            self.remove(&k, "absent from a fresh list");
        }
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
        if e.uid != msg.uid {
            debug!(issuer = %msg.key, "report of a replaced issuer's probe ignored");
            return;
        }
        let became_ready = msg.ready && (!e.ready || !e.checked);
        e.checked = true;
        e.ready = msg.ready;
        e.supports_metadata = msg.supports_metadata;
        e.connection = msg.connection;
        e.references = msg.references;
        if became_ready {
            self.enroller.ready.do_send(IssuerReady { key: msg.key });
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
                e.actors.check.do_send(CheckNow {
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
                e.actors.check.do_send(CheckNow {
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
                auth: e.actors.auth.clone(),
            }),
            _ => Err(ResolveError::Unready),
        }
    }
}
