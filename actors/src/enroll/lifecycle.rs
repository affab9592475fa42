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
