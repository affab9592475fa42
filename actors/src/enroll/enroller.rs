//! Enroller: the queue, the slots and the timers of enrollment. It takes approved requests
//! while this process leads, runs one attempt per request at a time in fair per-issuer slots
//! (held-request polls in their own smaller budget), and turns each attempt's end into the
//! next step with `command_issuer::request::next_step`.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, SpawnHandle, WrapFuture};
use command_issuer::backoff::poll_delay;
use command_issuer::request::{gate, next_step, AttemptEnd, CrOutcome, Gate, Next};
use kube::ResourceExt;
use tracing::{debug, info};

use super::attempt::{attempt, write_again, Attempted, CachedClient, EnrollContext};
use super::fair_queue::FairQueue;
use super::track::{group_of, Group, State, Track};
use crate::flags::CoreActor;
use crate::messages::{CrKey, Enroll, Forget, IssuerGone, IssuerKey, IssuerReady};

/// Requests being worked on while leading (never those already final), and the slots.
pub struct Enroller {
    pub(super) ctx: EnrollContext,
    pub(super) tracked: HashMap<CrKey, Track>,
    pub(super) slots: FairQueue<Group, CrKey>,
    pub(super) polls: VecDeque<CrKey>,
    pub(super) polls_in_flight: usize,
    pub(super) clients: HashMap<IssuerKey, CachedClient>,
    /// SIGTERM: start nothing new; tell these when nothing runs any more.
    pub(super) draining: Option<Vec<futures::channel::oneshot::Sender<()>>>,
}

impl Enroller {
    /// An idle enroller.
    pub fn new(ctx: EnrollContext) -> Self {
        let s = &ctx.settings;
        let slots = FairQueue::new(s.concurrency, s.per_issuer_concurrency);
        Self {
            ctx,
            tracked: HashMap::new(),
            slots,
            polls: VecDeque::new(),
            polls_in_flight: 0,
            clients: HashMap::new(),
            draining: None,
        }
    }

    pub(super) fn leading(&self) -> bool {
        self.ctx.leading.load(Ordering::SeqCst)
    }
}

impl Actor for Enroller {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(65_536);
    }
}

impl Handler<Enroll> for Enroller {
    type Result = ();
    fn handle(&mut self, msg: Enroll, ctx: &mut Context<Self>) {
        if self.ctx.settings.debug_stall_in == Some(CoreActor::Enroller) {
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        if self.ctx.settings.debug_panic_in == Some(CoreActor::Enroller) {
            panic!("deliberate panic in the enroller (--debug-panic-in enroller)");
        }
        // A standby keeps nothing: when it leads, the request watcher lists everything again.
        if !self.leading() {
            return;
        }
        let key = CrKey {
            namespace: msg.cr.namespace().unwrap_or_default(),
            name: msg.cr.name_any(),
        };
        if self.tracked.contains_key(&key) {
            return;
        }
        debug!(op_id = %msg.op_id, request = %key, "queued");
        let group = group_of(&msg.cr, &key.namespace);
        let held = matches!(gate(&msg.cr, false), Gate::Held { .. });
        self.tracked.insert(
            key.clone(),
            Track {
                op_id: msg.op_id,
                state: State::Queued,
                group: group.clone(),
                held,
                attempts: 0,
                polls: 0,
                awaiting_issuer: false,
                timer: None,
                cr: Some(msg.cr),
                answered: false,
                unwritten: None,
                running: None,
            },
        );
        self.enqueue(key);
        self.pump(ctx);
    }
}

impl Handler<Forget> for Enroller {
    type Result = ();
    fn handle(&mut self, msg: Forget, ctx: &mut Context<Self>) {
        if self
            .tracked
            .get(&msg.key)
            .is_some_and(|t| t.state != State::Running)
        {
            if let Some(h) = self.tracked.remove(&msg.key).and_then(|t| t.timer) {
                ctx.cancel_future(h);
            }
        }
    }
}

impl Handler<IssuerReady> for Enroller {
    type Result = ();
    fn handle(&mut self, msg: IssuerReady, ctx: &mut Context<Self>) {
        let mut wake = Vec::new();
        for (k, t) in self.tracked.iter_mut() {
            if t.state == State::Waiting && t.awaiting_issuer && t.group.as_ref() == Some(&msg.key)
            {
                if let Some(h) = t.timer.take() {
                    ctx.cancel_future(h);
                }
                t.state = State::Queued;
                wake.push(k.clone());
            }
        }
        if !wake.is_empty() {
            info!(issuer = %msg.key, requests = wake.len(), "issuer ready; retrying waiting requests");
        }
        for k in wake {
            self.enqueue(k);
        }
        self.pump(ctx);
    }
}

impl Handler<IssuerGone> for Enroller {
    type Result = ();
    fn handle(&mut self, msg: IssuerGone, _: &mut Context<Self>) {
        self.clients.remove(&msg.key);
    }
}

impl Enroller {
    fn enqueue(&mut self, key: CrKey) {
        if let Some(t) = self.tracked.get(&key) {
            if t.held {
                self.polls.push_back(key);
            } else {
                self.slots.push(t.group.clone(), key);
            }
        }
    }

    pub(super) fn pump(&mut self, ctx: &mut Context<Self>) {
        if !self.leading() {
            return;
        }
        if let Some(waiting) = &mut self.draining {
            if self.slots.in_flight() + self.polls_in_flight == 0 {
                for tx in waiting.drain(..) {
                    let _ = tx.send(());
                }
            }
            return;
        }
        while self.polls_in_flight < self.ctx.settings.pending_poll_concurrency {
            let Some(key) = self.polls.pop_front() else {
                break;
            };
            if self.start(ctx, key.clone(), None) {
                self.polls_in_flight += 1;
            }
        }
        while let Some((group, key)) = self.slots.pop() {
            if !self.start(ctx, key, Some(group.clone())) {
                self.slots.done(&group);
            }
        }
        let m = &self.ctx.metrics;
        m.in_flight.set(self.slots.in_flight() as i64);
        let waiting = self.tracked.values().filter(|t| t.state == State::Waiting);
        m.retry_queue.set(waiting.count() as i64);
    }

    /// Starts an attempt at `key` if it is still queued; `slot` is the enrollment slot it
    /// holds (`None` for a poll).
    fn start(&mut self, ctx: &mut Context<Self>, key: CrKey, slot: Option<Group>) -> bool {
        let Some(t) = self.tracked.get_mut(&key) else {
            return false;
        };
        if t.state != State::Queued {
            return false;
        }
        t.state = State::Running;
        let (op_id, k) = (t.op_id.clone(), key.clone());
        let fut: Pin<Box<dyn Future<Output = Attempted>>> = match t.unwritten.clone() {
            Some(outcome) => Box::pin(write_again(self.ctx.clone(), op_id, k, outcome)),
            None => {
                let cached = t.group.as_ref().and_then(|g| self.clients.get(g)).cloned();
                let (cr, answered) = (t.cr.take(), t.answered);
                Box::pin(attempt(self.ctx.clone(), op_id, k, cr, cached, answered))
            }
        };
        let settle_key = key.clone();
        let handle = ctx.spawn(
            fut.into_actor(self)
                .map(move |res, act, ctx| act.settle(ctx, settle_key, slot, res)),
        );
        if let Some(t) = self.tracked.get_mut(&key) {
            t.running = Some(handle);
        }
        true
    }

    fn settle(&mut self, ctx: &mut Context<Self>, key: CrKey, slot: Option<Group>, res: Attempted) {
        match &slot {
            Some(group) => self.slots.done(group),
            None => self.polls_in_flight = self.polls_in_flight.saturating_sub(1),
        }
        if let Some((issuer, client)) = res.client {
            self.clients.insert(issuer, client);
        }
        let poll_interval = self.ctx.settings.pending_poll_interval;
        if let Some(t) = self.tracked.get_mut(&key) {
            if let Some(answered) = res.answered {
                t.answered = answered;
            }
            t.cr = None;
            t.running = None;
            t.awaiting_issuer = false;
            t.unwritten = match &res.end {
                // What Command produced is kept until it is written, never enrolled again.
                AttemptEnd::Write {
                    outcome: o @ (CrOutcome::Issued { .. } | CrOutcome::Held { .. }),
                    ..
                } if !res.written => Some(o.clone()),
                _ => None,
            };
            let delay = match next_step(&res.end, res.written, t.attempts) {
                Next::Forget => None,
                Next::Retry(d) => {
                    t.attempts = t.attempts.saturating_add(1);
                    Some(d)
                }
                Next::AwaitIssuer(d) => {
                    t.awaiting_issuer = true;
                    t.attempts = t.attempts.saturating_add(1);
                    Some(d)
                }
                Next::LookAgain(d) => Some(d),
                Next::Poll => {
                    t.held = true;
                    let d = poll_delay(poll_interval, t.polls);
                    t.polls = t.polls.saturating_add(1);
                    Some(d)
                }
            };
            match delay {
                None => {
                    self.tracked.remove(&key);
                }
                Some(d) => {
                    t.state = State::Waiting;
                    t.timer = Some(requeue_later(ctx, key, d));
                }
            }
        }
        self.pump(ctx);
    }
}

/// Puts `key` back in its queue after `delay` if it is still waiting by then (a Forget or an
/// IssuerReady wake-up may have moved it meanwhile).
fn requeue_later(ctx: &mut Context<Enroller>, key: CrKey, delay: Duration) -> SpawnHandle {
    ctx.run_later(delay, move |act, ctx| {
        if let Some(t) = act.tracked.get_mut(&key) {
            if t.state == State::Waiting {
                t.state = State::Queued;
                t.timer = None;
                act.enqueue(key);
                act.pump(ctx);
            }
        }
    })
}
