//! CertificateRequest watcher: each request that needs work gets an op id and goes to the
//! enroller; when this process starts leading it lists every request again (standbys keep no
//! per-request state).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::{
    Actor, AsyncContext, Context, Handler, Recipient, SpawnHandle, StreamHandler, Supervised,
};
use command_issuer::api::CertificateRequest;
use command_issuer::request::{gate, Gate};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{watcher as watch, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

use crate::http::Readiness;
use crate::messages::{CrKey, Enroll, Forget, LeadershipChanged};

/// Where request events go (the enroller).
#[derive(Clone)]
pub struct RequestEvents {
    /// A request that may need signing.
    pub enroll: Recipient<Enroll>,
    /// A deleted request.
    pub forget: Recipient<Forget>,
}

/// Watches CertificateRequests; each one that needs work gets an op id and goes to the enroller.
pub struct RequestWatcher {
    client: Client,
    enroller: RequestEvents,
    check_approval: bool,
    readiness: Arc<Readiness>,
    stream: Option<SpawnHandle>,
}

impl RequestWatcher {
    /// A watcher feeding this enroller.
    pub fn new(
        client: Client,
        enroller: RequestEvents,
        check_approval: bool,
        readiness: Arc<Readiness>,
    ) -> Self {
        Self {
            client,
            enroller,
            check_approval,
            readiness,
            stream: None,
        }
    }
}

impl Actor for RequestWatcher {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        info!(kind = "CertificateRequest", "watching");
        self.watch(ctx);
    }
}

impl RequestWatcher {
    fn watch(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.stream.take() {
            ctx.cancel_future(h);
        }
        let api: Api<CertificateRequest> = Api::all(self.client.clone());
        let stream = watch(api, watcher::Config::default()).default_backoff();
        self.stream = Some(ctx.add_stream(stream));
    }
}

impl Handler<LeadershipChanged> for RequestWatcher {
    type Result = ();
    fn handle(&mut self, msg: LeadershipChanged, ctx: &mut Context<Self>) {
        if msg.leading {
            // The enroller kept nothing while standing by: list every request again for it.
            info!(
                kind = "CertificateRequest",
                "leading: listing every request again"
            );
            self.watch(ctx);
        }
    }
}

impl Handler<crate::messages::Ping> for RequestWatcher {
    type Result = ();
    fn handle(&mut self, _: crate::messages::Ping, _: &mut Context<Self>) {}
}

impl Supervised for RequestWatcher {}

impl StreamHandler<Result<Event<CertificateRequest>, watcher::Error>> for RequestWatcher {
    fn handle(
        &mut self,
        item: Result<Event<CertificateRequest>, watcher::Error>,
        _: &mut Context<Self>,
    ) {
        match item {
            Ok(Event::Apply(mut cr)) | Ok(Event::InitApply(mut cr)) => {
                // Nothing downstream reads managedFields, and as JSON trees they are the bulk
                // of a queued request's memory (issue #6: 5000 approved at once).
                cr.metadata.managed_fields = None;
                let g = gate(&cr, self.check_approval);
                if matches!(g, Gate::NotOurs | Gate::Final | Gate::AwaitingApproval) {
                    return;
                }
                // The op id is the request's uid: a user cannot write it, every attempt and every
                // process agree on it, and an operator can compute it from the object.
                let op_id = cr
                    .metadata
                    .uid
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                info!(
                    op_id = %op_id, request = %format!("{}/{}", cr.namespace().unwrap_or_default(), cr.name_any()),
                    resource_version = ?cr.resource_version(), issuer = %cr.spec.issuer_ref.name, gate = ?g, "watch event"
                );
                self.enroller.enroll.do_send(Enroll {
                    op_id,
                    cr: Box::new(cr),
                });
            }
            Ok(Event::Delete(cr)) => self.enroller.forget.do_send(Forget {
                key: CrKey {
                    namespace: cr.namespace().unwrap_or_default(),
                    name: cr.name_any(),
                },
            }),
            Ok(Event::InitDone) => self.readiness.requests.store(true, Ordering::Relaxed),
            Ok(Event::Init) => {}
            Err(e) => {
                warn!(kind = "CertificateRequest", error = %e, "watch error; retrying with backoff")
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        warn!(
            kind = "CertificateRequest",
            "watch stream ended; restarting watcher"
        );
        actix::ActorContext::stop(ctx);
    }
}
