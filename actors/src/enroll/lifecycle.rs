//! The enroller's lifecycle: liveness pings, leadership changes (a deposed leader cancels its
//! attempts and keeps nothing) and the graceful stop on SIGTERM (start nothing new, let what
//! runs finish).

use actix::{AsyncContext, Context, Handler, Message, ResponseFuture};
use tracing::info;

use super::enroller::Enroller;
use super::fair_queue::FairQueue;
use crate::messages::{LeadershipChanged, Ping};

/// Supervisor → enroller on SIGTERM: take no new work; answers once nothing runs any more.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Drain;

impl Handler<Drain> for Enroller {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, _: Drain, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = futures::channel::oneshot::channel();
        self.draining.get_or_insert_with(Vec::new).push(tx);
        let running = self.slots.in_flight() + self.polls_in_flight;
        info!(
            running,
            "draining: no new attempts; waiting for those under way"
        );
        self.pump(ctx);
        if !self.leading() {
            // A standby runs nothing: done at once.
            for tx in self.draining.iter_mut().flat_map(|w| w.drain(..)) {
                let _ = tx.send(());
            }
        }
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<Ping> for Enroller {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}

impl Handler<LeadershipChanged> for Enroller {
    type Result = ();
    fn handle(&mut self, msg: LeadershipChanged, ctx: &mut Context<Self>) {
        if msg.leading {
            info!("leading: enrollments start as the request watcher lists every request");
            return;
        }
        // Nothing a standby keeps can be trusted later: the next leader starts from a list.
        // Attempts under way are cancelled, so a deposed leader sends and writes nothing more.
        let mut cancelled = 0;
        for (_, t) in self.tracked.drain() {
            for h in [t.timer, t.running].into_iter().flatten() {
                ctx.cancel_future(h);
                cancelled += 1;
            }
        }
        let s = &self.ctx.settings;
        self.slots = FairQueue::new(s.concurrency, s.per_issuer_concurrency);
        self.polls.clear();
        self.polls_in_flight = 0;
        info!(
            cancelled,
            "not leading: every queued request dropped, attempts under way cancelled"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use actix::{Actor, Context, Handler};
    use clap::Parser;
    use command_issuer::api::{CertificateRequest, CertificateRequestSpec, IssuerRef};
    use command_issuer::metrics::Metrics;

    use super::*;
    use crate::enroll::EnrollContext;
    use crate::messages::{Enroll, ResolveError, ResolveIssuer, WriteRequestStatus};

    /// Stands in for the registry and the status writer; never reached in these tests.
    struct Nowhere;
    impl Actor for Nowhere {
        type Context = Context<Self>;
    }
    impl Handler<ResolveIssuer> for Nowhere {
        type Result = Result<crate::messages::IssuerSnapshot, ResolveError>;
        fn handle(&mut self, _: ResolveIssuer, _: &mut Context<Self>) -> Self::Result {
            Err(ResolveError::Unchecked)
        }
    }
    impl Handler<WriteRequestStatus> for Nowhere {
        type Result = Result<(), String>;
        fn handle(&mut self, _: WriteRequestStatus, _: &mut Context<Self>) -> Self::Result {
            Err("not in this test".into())
        }
    }

    fn request(name: &str) -> Enroll {
        let mut cr = CertificateRequest::new(
            name,
            CertificateRequestSpec {
                issuer_ref: IssuerRef {
                    name: "i".into(),
                    kind: Some("Issuer".into()),
                    group: Some(command_issuer::GROUP.into()),
                },
                ..Default::default()
            },
        );
        cr.metadata.namespace = Some("ns".into());
        Enroll {
            op_id: name.into(),
            cr: Box::new(cr),
        }
    }

    #[actix_rt::test]
    async fn a_standby_keeps_nothing_and_a_deposed_leader_drops_everything() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = kube::Config::new("https://127.0.0.1:9".parse().expect("url"));
        let client = kube::Client::try_from(config).expect("client");
        let flags = crate::flags::Flags::parse_from(["x", "--cluster-resource-namespace", "ns"]);
        let settings = Arc::new(flags.settings().expect("settings"));
        let nowhere = Nowhere.start();
        let leading = Arc::new(AtomicBool::new(false));
        let mut enroller = Enroller::new(EnrollContext {
            client,
            settings,
            registry: nowhere.clone().recipient(),
            writer: nowhere.recipient(),
            metrics: Arc::new(Metrics::new()),
            leading: leading.clone(),
        });
        let mut ctx = Context::new();
        enroller.handle(request("a"), &mut ctx);
        assert!(enroller.tracked.is_empty(), "a standby tracks nothing");
        leading.store(true, Ordering::SeqCst);
        enroller.handle(request("a"), &mut ctx);
        enroller.handle(request("b"), &mut ctx);
        assert_eq!(enroller.tracked.len(), 2);
        assert_eq!(enroller.slots.in_flight(), 2, "both started");
        leading.store(false, Ordering::SeqCst);
        enroller.handle(LeadershipChanged { leading: false }, &mut ctx);
        assert!(
            enroller.tracked.is_empty(),
            "a deposed leader keeps nothing"
        );
        assert_eq!(enroller.slots.in_flight(), 0, "its slots are free again");
    }
}
