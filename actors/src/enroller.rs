//! Enroller: takes approved requests, asks the registry and auth actor for the issuer, calls
//! `POST /Enrollment/CSR`, hands the outcome to the status writer, and schedules retries.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, SpawnHandle, WrapFuture};
use command_issuer::api::{CertificateRequest, IssuerKind};
use command_issuer::command::{build_http_client, CommandClient, CommandError};
use command_issuer::config::{sign_config, ConnectionConfig, SignConfig};
use command_issuer::pki::parse_csr;
use command_issuer::request::{
    enrollment_body, enrollment_failure, follow_up_outcome, gate, give_up, held_issued,
    intent_time, outcome_from_response, pick_pattern, predefined_metadata, recovery_settle,
    recovery_wait, CrOutcome, Gate, MetadataContext, Retry, INTENT_ANNOTATION,
    INTENT_TIME_ANNOTATION,
};
use kube::{Api, Client, ResourceExt};
use secrecy::SecretString;
use tracing::{debug, info, warn};

use crate::flags::Settings;
use crate::messages::{
    CrKey, Enroll, Forget, GetAuthorization, InvalidateToken, IssuerKey, IssuerReady,
    IssuerSnapshot, ResolveError, ResolveIssuer, WriteRequestStatus,
};
use crate::registry::Registry;
use crate::status_writer::StatusWriter;
use command_issuer::metrics::Metrics;

const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What the enroller talks to.
#[derive(Clone)]
pub struct EnrollerDeps {
    /// Apiserver client, to re-read a request before a retry.
    pub client: Client,
    /// Validated flags.
    pub settings: Arc<Settings>,
    /// Issuer lookups.
    pub registry: Addr<Registry>,
    /// Status and Events.
    pub writer: Addr<StatusWriter>,
    /// Counters and gauges.
    pub metrics: Arc<Metrics>,
    /// True while this process may enroll and write.
    pub leading: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Queued,
    Running,
    Waiting,
    Held,
}

struct Track {
    op_id: String,
    state: State,
    attempts: u32,
    issuer: Option<IssuerKey>,
    timer: Option<SpawnHandle>,
    cr: Option<Box<CertificateRequest>>,
    /// The last enrollment call of this op id got Command's complete answer (an error status or
    /// an undecodable body included), so Command is done with it and a lookup that finds
    /// nothing is final; after a lost answer it is not, until the enrollment has settled.
    answered: bool,
}

type ClientCache = HashMap<IssuerKey, (Arc<ConnectionConfig>, CommandClient)>;

/// Requests being worked on (never those already final), a queue and a bound on in-flight calls.
pub struct Enroller {
    deps: EnrollerDeps,
    tracked: HashMap<CrKey, Track>,
    queue: VecDeque<CrKey>,
    in_flight: usize,
    clients: ClientCache,
}

impl Enroller {
    /// An idle enroller.
    pub fn new(deps: EnrollerDeps) -> Self {
        Self {
            deps,
            tracked: HashMap::new(),
            queue: VecDeque::new(),
            in_flight: 0,
            clients: HashMap::new(),
        }
    }
}

impl Actor for Enroller {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(65_536);
    }
}

/// How one attempt ended, for the actor to act on.
struct Attempt {
    outcome: Option<CrOutcome>,
    /// A held request stays held: poll it again later.
    hold_again: bool,
    park: bool,
    issuer: Option<IssuerKey>,
    client: Option<(IssuerKey, Arc<ConnectionConfig>, CommandClient)>,
    written: bool,
    /// Command's `Retry-After` (429/503): the next attempt waits at least this long.
    retry_after: Option<Duration>,
    /// Try again after this long without writing anything or counting a failure: an
    /// interrupted enrollment may still land, or the request changed under us (re-read it).
    again_after: Option<Duration>,
    /// Whether the enrollment call got Command's complete answer (see `Track::answered`).
    answered: Option<bool>,
}

impl Attempt {
    fn drop_it() -> Self {
        Self {
            outcome: None,
            hold_again: false,
            park: false,
            issuer: None,
            client: None,
            written: false,
            retry_after: None,
            again_after: None,
            answered: None,
        }
    }
    fn with(outcome: CrOutcome, issuer: Option<IssuerKey>) -> Self {
        Self {
            outcome: Some(outcome),
            issuer,
            ..Self::drop_it()
        }
    }
}

fn pending(message: String, retry: Retry) -> CrOutcome {
    CrOutcome::Pending { message, retry }
}

/// `failed to build the signer: failed to create signer: <e>`, retried with backoff.
fn signer_error(e: impl std::fmt::Display, retry: Retry, issuer: Option<IssuerKey>) -> Attempt {
    Attempt::with(
        pending(
            format!("failed to build the signer: failed to create signer: {e}"),
            retry,
        ),
        issuer,
    )
}

/// When retries of a request started counting: its approval, else its creation.
fn retry_origin(cr: &CertificateRequest) -> jiff::Timestamp {
    cr.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Approved"))
        .and_then(|c| c.last_transition_time.as_ref())
        .or(cr.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
        .unwrap_or_else(jiff::Timestamp::now)
}

fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(9)).min(MAX_BACKOFF)
}

/// Delay before the next attempt: the exponential backoff, or Command's `Retry-After` when it
/// asks for longer (capped at [`MAX_BACKOFF`] so one header cannot park a request for long).
fn retry_delay(attempts: u32, retry_after: Option<Duration>) -> Duration {
    backoff(attempts).max(retry_after.unwrap_or_default().min(MAX_BACKOFF))
}

impl Handler<Enroll> for Enroller {
    type Result = ();
    fn handle(&mut self, msg: Enroll, ctx: &mut Context<Self>) {
        let key = CrKey {
            namespace: msg.cr.namespace().unwrap_or_default(),
            name: msg.cr.name_any(),
        };
        if self.tracked.contains_key(&key) {
            return;
        }
        debug!(op_id = %msg.op_id, request = %key, "queued");
        self.tracked.insert(
            key.clone(),
            Track {
                op_id: msg.op_id,
                state: State::Queued,
                attempts: 0,
                issuer: None,
                timer: None,
                cr: Some(msg.cr),
                answered: false,
            },
        );
        self.queue.push_back(key);
        self.pump(ctx);
    }
}

impl Handler<Forget> for Enroller {
    type Result = ();
    fn handle(&mut self, msg: Forget, ctx: &mut Context<Self>) {
        if let Some(t) = self.tracked.get(&msg.key) {
            if t.state != State::Running {
                if let Some(h) = self.tracked.remove(&msg.key).and_then(|t| t.timer) {
                    ctx.cancel_future(h);
                }
            }
        }
    }
}

impl Handler<crate::messages::LeadershipChanged> for Enroller {
    type Result = ();
    fn handle(&mut self, msg: crate::messages::LeadershipChanged, ctx: &mut Context<Self>) {
        if msg.leading {
            // Copies taken while standing by may be stale (the old leader may have finished
            // them): re-read every queued request before acting.
            for t in self.tracked.values_mut() {
                t.cr = None;
            }
            info!(queued = self.queue.len(), "leading: starting enrollments");
            self.pump(ctx);
        }
    }
}

impl Handler<IssuerReady> for Enroller {
    type Result = ();
    fn handle(&mut self, msg: IssuerReady, ctx: &mut Context<Self>) {
        let mut wake = Vec::new();
        for (k, t) in self.tracked.iter_mut() {
            if t.state == State::Waiting && t.issuer.as_ref() == Some(&msg.key) {
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
        self.queue.extend(wake);
        self.pump(ctx);
    }
}

impl Enroller {
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if !self.deps.leading.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        while self.in_flight < self.deps.settings.concurrency {
            let Some(key) = self.queue.pop_front() else {
                break;
            };
            let Some(t) = self.tracked.get_mut(&key) else {
                continue;
            };
            if t.state != State::Queued {
                continue;
            }
            t.state = State::Running;
            self.in_flight += 1;
            let op_id = t.op_id.clone();
            let cr = t.cr.take();
            let fut = attempt(
                self.deps.clone(),
                op_id.clone(),
                key.clone(),
                cr,
                self.clients.clone(),
                t.answered,
            );
            ctx.spawn(
                fut.into_actor(self)
                    .map(move |res, act, ctx| act.settle(ctx, key, res)),
            );
        }
        self.deps.metrics.in_flight.set(self.in_flight as i64);
        let waiting = self
            .tracked
            .values()
            .filter(|t| t.state == State::Waiting)
            .count();
        self.deps.metrics.retry_queue.set(waiting as i64);
    }

    fn settle(&mut self, ctx: &mut Context<Self>, key: CrKey, res: Attempt) {
        self.in_flight -= 1;
        if let Some((ik, conn, client)) = res.client {
            self.clients.insert(ik, (conn, client));
        }
        let Some(t) = self.tracked.get_mut(&key) else {
            self.pump(ctx);
            return;
        };
        if let Some(answered) = res.answered {
            t.answered = answered;
        }
        if let Some(after) = res.again_after {
            // Not a failure: look again (re-reading the request) once `after` has passed.
            t.state = State::Waiting;
            t.issuer = None;
            t.cr = None;
            t.timer = Some(requeue_later(ctx, key, after, State::Waiting));
            self.pump(ctx);
            return;
        }
        let held =
            res.hold_again || (res.written && matches!(res.outcome, Some(CrOutcome::Held { .. })));
        if held {
            // Poll Command for it later; re-read the request then (its annotation is new).
            t.state = State::Held;
            t.cr = None;
            let poll = self.deps.settings.pending_poll_interval;
            t.timer = Some(requeue_later(ctx, key, poll, State::Held));
            self.pump(ctx);
            return;
        }
        let retry = match (&res.outcome, res.park, res.written) {
            (None, true, _) => Some(Retry::OnIssuerReady),
            (None, false, _) => None,
            (Some(_), _, false) => Some(Retry::Backoff),
            (
                Some(CrOutcome::Pending {
                    retry: Retry::Permanent,
                    ..
                }),
                _,
                true,
            ) => Some(Retry::Backoff),
            (Some(CrOutcome::Pending { retry, .. }), _, true) => Some(*retry),
            (Some(_), _, true) => None,
        };
        match retry {
            None => {
                self.tracked.remove(&key);
            }

            Some(r) => {
                t.state = State::Waiting;
                t.issuer = if r == Retry::OnIssuerReady {
                    res.issuer
                } else {
                    None
                };
                let delay = if res.park {
                    Duration::from_secs(1)
                } else {
                    retry_delay(t.attempts, res.retry_after)
                };
                if let Some(after) = res.retry_after {
                    debug!(request = %key, retry_after_secs = after.as_secs_f64(), delay_secs = delay.as_secs_f64(), "Command asked to retry later");
                }
                t.attempts = t.attempts.saturating_add(1);
                t.timer = Some(requeue_later(ctx, key.clone(), delay, State::Waiting));
            }
        }
        self.pump(ctx);
    }
}

/// Puts `key` back in the queue after `delay` if it is still in state `from` by then (a
/// Forget or an IssuerReady wake-up may have moved it meanwhile).
fn requeue_later(
    ctx: &mut Context<Enroller>,
    key: CrKey,
    delay: Duration,
    from: State,
) -> SpawnHandle {
    ctx.run_later(delay, move |act, ctx| {
        if let Some(t) = act.tracked.get_mut(&key) {
            if t.state == from {
                t.state = State::Queued;
                t.timer = None;
                act.queue.push_back(key);
                act.pump(ctx);
            }
        }
    })
}

/// One attempt at one request: read, decide, resolve, call Command, write status.
async fn attempt(
    deps: EnrollerDeps,
    op_id: String,
    key: CrKey,
    cr: Option<Box<CertificateRequest>>,
    clients: ClientCache,
    answered: bool,
) -> Attempt {
    // A copy that carries an intent comes from a watch event about our own earlier attempt and
    // is often stale by now (already Issued): act on the current object instead.
    let cr = cr.filter(|c| !c.annotations().contains_key(INTENT_ANNOTATION));
    let cr = match cr {
        Some(c) => c,
        None => {
            let api: Api<CertificateRequest> = Api::namespaced(deps.client.clone(), &key.namespace);
            match api.get_opt(&key.name).await {
                Ok(Some(c)) => Box::new(c),
                Ok(None) => return Attempt::drop_it(),
                Err(e) => {
                    warn!(op_id = %op_id, request = %key, error = %e, "re-reading request failed");
                    return Attempt {
                        park: true,
                        ..Attempt::drop_it()
                    };
                }
            }
        }
    };
    let mut res = decide(&deps, &op_id, &key, &cr, clients, answered).await;
    res.outcome = res.outcome.map(|o| {
        give_up(
            o,
            retry_origin(&cr),
            jiff::Timestamp::now(),
            deps.settings.max_retry_duration,
        )
    });
    if let Some(outcome) = res.outcome.clone() {
        match deps
            .writer
            .send(WriteRequestStatus {
                op_id: op_id.clone(),
                cr,
                outcome,
            })
            .await
        {
            Ok(Ok(())) => res.written = true,
            Ok(Err(e)) => {
                warn!(op_id = %op_id, request = %key, error = %e, "status write failed; will retry")
            }
            Err(e) => {
                warn!(op_id = %op_id, request = %key, error = %e, "status writer unavailable; will retry")
            }
        }
    }
    res
}

async fn decide(
    deps: &EnrollerDeps,
    op_id: &str,
    key: &CrKey,
    cr: &CertificateRequest,
    clients: ClientCache,
    answered: bool,
) -> Attempt {
    let mut recover = None;
    let (kind, name, held) = match gate(cr, deps.settings.check_approval) {
        Gate::NotOurs | Gate::Final | Gate::AwaitingApproval => return Attempt::drop_it(),
        Gate::Denied => return Attempt::with(CrOutcome::Denied, None),
        Gate::InvalidKind(m) => return Attempt::with(CrOutcome::Failed { message: m }, None),
        Gate::Held {
            kind,
            name,
            request_id,
        } => (kind, name, Some(request_id)),
        Gate::Sign { kind, name } => (kind, name, None),
        Gate::Recover { kind, name, op_id } => {
            recover = Some(op_id);
            (kind, name, None)
        }
    };
    let issuer_key = IssuerKey {
        kind,
        namespace: (kind == IssuerKind::Issuer).then(|| key.namespace.clone()),
        name,
    };
    let snap = match deps
        .registry
        .send(ResolveIssuer {
            key: issuer_key.clone(),
        })
        .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(_)) | Err(_) if held.is_some() => {
            // A held request keeps its status while its issuer is away; look again later.
            return Attempt {
                hold_again: true,
                ..Attempt::drop_it()
            };
        }
        Ok(Err(ResolveError::Missing(m))) => {
            return Attempt::with(
                pending(format!("error getting issuer: {m}"), Retry::OnIssuerReady),
                Some(issuer_key),
            )
        }
        Ok(Err(ResolveError::Unready)) => {
            return Attempt::with(
                pending("issuer is not ready".into(), Retry::OnIssuerReady),
                Some(issuer_key),
            )
        }
        Ok(Err(ResolveError::Unchecked)) | Err(_) => {
            debug!(op_id, request = %key, issuer = %issuer_key, "issuer not checked yet; waiting");
            return Attempt {
                park: true,
                issuer: Some(issuer_key),
                ..Attempt::drop_it()
            };
        }
    };
    let ik = Some(issuer_key.clone());
    let sign_csr = match held {
        Some(_) => None,
        None => {
            let sign = match sign_config(&snap.spec, cr.annotations()) {
                Ok(s) => s,
                Err(e) => return signer_error(e, Retry::Permanent, ik),
            };
            let csr_pem = String::from_utf8_lossy(&cr.spec.request.0).into_owned();
            let csr = match parse_csr(csr_pem.as_bytes()) {
                Ok(c) => c,
                Err(e) => {
                    return Attempt::with(
                        pending(format!("failed to sign: {e}"), Retry::Permanent),
                        ik,
                    )
                }
            };
            info!(
                op_id, request = %key, issuer = %issuer_key, common_name = %csr.common_name, san_count = csr.sans.len(),
                sans = ?csr.sans, template = ?sign.template, certificate_authority = %sign.certificate_authority(),
                enrollment_pattern_id = ?sign.pattern_id, enrollment_pattern_name = ?sign.pattern_name, "signing"
            );
            Some((sign, csr_pem))
        }
    };
    let header = match snap
        .auth
        .send(GetAuthorization {
            op_id: Some(op_id.to_string()),
        })
        .await
    {
        Ok(Ok(h)) => h,
        Ok(Err(_)) | Err(_) if held.is_some() => {
            return Attempt {
                hold_again: true,
                ..Attempt::drop_it()
            }
        }
        Ok(Err(e)) => return signer_error(e, Retry::Backoff, ik),
        Err(e) => return signer_error(format!("auth actor unavailable: {e}"), Retry::Backoff, ik),
    };
    let (command, new_client) = match clients.get(&issuer_key) {
        Some((conn, c)) if Arc::ptr_eq(conn, &snap.connection) || **conn == *snap.connection => {
            (c.clone(), None)
        }
        _ => match build_http_client(
            snap.connection.ca_bundle_pem.as_deref(),
            deps.settings.command_timeout,
        ) {
            Ok(http) => {
                let c = CommandClient::new(http, snap.connection.base_url())
                    .with_timeout(deps.settings.command_timeout);
                (
                    c.clone(),
                    Some((issuer_key.clone(), snap.connection.clone(), c)),
                )
            }
            Err(e) => return signer_error(e, Retry::Permanent, ik),
        },
    };
    if let (Some(previous), true) = (&recover, snap.supports_metadata) {
        // An earlier attempt may have reached Command: its certificate carries that op id as
        // Controller-Reconcile-Id. Found → use it; not found → enroll (design.md §3.1).
        let found = command
            .certificates_with_metadata("Controller-Reconcile-Id", previous, &header)
            .await;
        deps.metrics.command_call("GET /Certificates", &found);
        match found.as_deref() {
            Ok([first, ..]) => {
                let pems = command.download_pem(first.id, &header).await;
                deps.metrics
                    .command_call("POST /Certificates/Download", &pems);
                let mut res = match pems {
                    Ok(p) => {
                        info!(op_id, request = %key, previous_op_id = %previous, certificate_id = first.id, "recovered the certificate of an interrupted enrollment; not enrolling again");
                        Attempt::with(held_issued(&p, 0), None)
                    }
                    Err(e) => {
                        let mut res = Attempt::with(pending(format!("failed to sign: recovering the certificate of an interrupted enrollment: {e}"), Retry::Backoff), None);
                        res.retry_after = e.retry_after();
                        res
                    }
                };
                res.client = new_client;
                res.issuer = ik;
                return res;
            }
            Ok([]) => {
                let settle = recovery_settle(deps.settings.command_timeout);
                let wait = (!answered)
                    .then(|| recovery_wait(intent_time(cr), jiff::Timestamp::now(), settle))
                    .flatten();
                if let Some(wait) = wait {
                    // Its answer was lost, and Command may still be completing it: enrolling
                    // now could make a second certificate (design.md §3.1).
                    info!(op_id, request = %key, previous_op_id = %previous, look_again_in_secs = wait.as_secs_f64(), "an interrupted enrollment left no certificate in Command yet; looking again before enrolling");
                    return Attempt {
                        again_after: Some(wait),
                        issuer: ik,
                        client: new_client,
                        ..Attempt::drop_it()
                    };
                }
                info!(op_id, request = %key, previous_op_id = %previous, "an interrupted enrollment left no certificate in Command; enrolling")
            }
            Err(e) => {
                let mut res = Attempt::with(
                    pending(
                        format!(
                            "failed to sign: looking up an interrupted enrollment in Command: {e}"
                        ),
                        Retry::Backoff,
                    ),
                    None,
                );
                res.retry_after = e.retry_after();
                res.client = new_client;
                res.issuer = ik;
                return res;
            }
        }
    } else if let Some(previous) = &recover {
        warn!(op_id, request = %key, previous_op_id = %previous, "an earlier attempt may have reached Command, but without SupportsMetadata it cannot be looked up; enrolling again");
    }
    let mut res = match (held, sign_csr) {
        (Some(request_id), _) => follow_up(deps, op_id, key, request_id, &command, &header).await,
        (None, Some((sign, csr_pem))) => {
            let version = cr.resource_version();
            let call = EnrollCall {
                snap: &snap,
                sign: &sign,
                csr_pem: &csr_pem,
                command: &command,
                header: &header,
                resource_version: version.as_deref(),
            };
            enroll(deps, op_id, key, call).await
        }
        (None, None) => Attempt::drop_it(),
    };
    res.client = new_client;
    res.issuer = ik;
    res
}

/// Follows up a request Command holds: its state, then the certificate it produced. Errors and
/// "not yet" keep it held for the next poll; it is never enrolled again (design.md §3.2).
async fn follow_up(
    deps: &EnrollerDeps,
    op_id: &str,
    key: &CrKey,
    request_id: i64,
    command: &CommandClient,
    header: &SecretString,
) -> Attempt {
    let hold = || Attempt {
        hold_again: true,
        ..Attempt::drop_it()
    };
    let w = command.workflow_request(request_id, header).await;
    deps.metrics
        .command_call("GET /Workflow/Certificates/{id}", &w);
    let w = match w {
        Ok(w) => w,
        Err(e) => {
            warn!(op_id, request = %key, request_id, error = %e, "following up the held request failed; will retry");
            return hold();
        }
    };
    info!(op_id, request = %key, request_id, state = ?w.state_string, "followed up the held request");
    if let Some(failed) = follow_up_outcome(&w) {
        return Attempt::with(failed, None);
    }
    let certs = command.certificates_for_request(request_id, header).await;
    deps.metrics.command_call("GET /Certificates", &certs);
    let cert_id = match certs.as_deref() {
        Ok([first, ..]) => first.id,
        Ok([]) => return hold(),
        Err(e) => {
            warn!(op_id, request = %key, request_id, error = %e, "looking up the held request's certificate failed; will retry");
            return hold();
        }
    };
    let pems = command.download_pem(cert_id, header).await;
    deps.metrics
        .command_call("POST /Certificates/Download", &pems);
    match pems {
        Ok(pems) => {
            info!(op_id, request = %key, request_id, certificate_id = cert_id, "held request issued by Command; certificate downloaded");
            Attempt::with(held_issued(&pems, request_id), None)
        }
        Err(e) => {
            warn!(op_id, request = %key, request_id, error = %e, "downloading the certificate failed; will retry");
            hold()
        }
    }
}

/// What one enrollment call needs besides the request's identity.
struct EnrollCall<'a> {
    snap: &'a IssuerSnapshot,
    sign: &'a SignConfig,
    csr_pem: &'a str,
    command: &'a CommandClient,
    header: &'a SecretString,
    /// Version of the request the decision to enroll was made on: the intent is recorded only
    /// if it is still current, so a stale copy (a late watch event) cannot enroll again.
    resource_version: Option<&'a str>,
}

async fn enroll(deps: &EnrollerDeps, op_id: &str, key: &CrKey, call: EnrollCall<'_>) -> Attempt {
    let EnrollCall {
        snap,
        sign,
        csr_pem,
        command,
        header,
        resource_version,
    } = call;
    let pattern_id = match (sign.pattern_id, &sign.pattern_name) {
        (Some(id), _) => Some(id),
        (None, Some(name)) => {
            let r = command.enrollment_patterns_named(name, header).await;
            deps.metrics.command_call("GET /EnrollmentPatterns", &r);
            match pick_pattern(name, r) {
                Ok(id) => Some(id),
                Err((m, permanent)) => {
                    let retry = if permanent {
                        Retry::Permanent
                    } else {
                        Retry::Backoff
                    };
                    return Attempt::with(pending(m, retry), None);
                }
            }
        }
        (None, None) => None,
    };
    let predefined = snap.supports_metadata.then(|| {
        predefined_metadata(&MetadataContext {
            controller_namespace: &deps.settings.cluster_resource_namespace,
            kind: snap.key.kind,
            issuer_name: &snap.key.name,
            request_namespace: &key.namespace,
            op_id,
        })
    });
    // Record the intent first: a crash after Command answered must not lead to a second enrollment.
    let api: Api<CertificateRequest> = Api::namespaced(deps.client.clone(), &key.namespace);
    let sent_at = jiff::Timestamp::now().to_string();
    let mut intent = serde_json::json!({"metadata": {"annotations": {
        INTENT_ANNOTATION: op_id, INTENT_TIME_ANNOTATION: sent_at,
    }}});
    if let Some(v) = resource_version {
        // Optimistic concurrency: the apiserver refuses the patch (409) if the request changed.
        intent["metadata"]["resourceVersion"] = serde_json::json!(v);
    }
    if let Err(e) = api
        .patch(
            &key.name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&intent),
        )
        .await
    {
        if matches!(&e, kube::Error::Api(s) if s.code == 409) {
            info!(op_id, request = %key, "the request changed since it was read; reading it again before enrolling");
            return Attempt {
                again_after: Some(Duration::ZERO),
                ..Attempt::drop_it()
            };
        }
        return Attempt::with(
            pending(
                format!("failed to sign: recording the enrollment intent: {e}"),
                Retry::Backoff,
            ),
            None,
        );
    }
    let now = jiff::Timestamp::now().to_string();
    let body = enrollment_body(csr_pem.to_string(), sign, pattern_id, predefined, now);
    info!(op_id, request = %key, url = %format!("{}/Enrollment/CSR", command.base_url()), metadata_fields = body.metadata.len(), "calling Command POST /Enrollment/CSR");
    let mut result = command.enroll_csr(&body, header).await;
    deps.metrics.command_call("POST /Enrollment/CSR", &result);
    if crate::probe::is_stale_token(&result, &snap.connection.credentials) {
        // A 401 on a bearer token: one retry with a fresh one, then report (design.md §3.5).
        snap.auth.do_send(InvalidateToken);
        let fresh = snap
            .auth
            .send(GetAuthorization {
                op_id: Some(op_id.to_string()),
            })
            .await;
        if let Ok(Ok(h)) = fresh {
            info!(op_id, request = %key, "Command answered 401; retrying once with a fresh token");
            result = command.enroll_csr(&body, &h).await;
            deps.metrics.command_call("POST /Enrollment/CSR", &result);
        }
    }
    // A status or an undecodable body is Command's complete answer; a transport error may have
    // lost an answer to an enrollment Command still completes.
    let answered = !matches!(result, Err(CommandError::Transport { .. }));
    let mut res = match result {
        Ok(resp) => {
            let info = &resp.certificate_information;
            info!(
                op_id, request = %key, disposition = ?info.request_disposition, keyfactor_request_id = info.keyfactor_request_id,
                keyfactor_id = info.keyfactor_id, serial = ?info.serial_number, "Command answered"
            );
            let outcome = outcome_from_response(info);
            if matches!(outcome, CrOutcome::Issued { .. }) {
                info!(op_id, "CertificateRequest {} successfully signed", key);
            }
            Attempt::with(outcome, None)
        }
        Err(e) => {
            if matches!(e, CommandError::Status { status: 401, .. }) {
                snap.auth.do_send(InvalidateToken);
            }
            let message = format!(
                "failed to sign: {}",
                enrollment_failure(sign, pattern_id, &e)
            );
            warn!(op_id, request = %key, error = %e, transient = e.is_transient(), retry_after_secs = ?e.retry_after().map(|d| d.as_secs()), "Command enrollment failed");
            let retry = if e.is_transient() || matches!(e, CommandError::Status { status: 401, .. })
            {
                Retry::Backoff
            } else {
                Retry::Permanent
            };
            let mut res = Attempt::with(pending(message, retry), None);
            res.retry_after = e.retry_after();
            res
        }
    };
    res.answered = Some(answered);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_stretches_the_backoff_but_never_shortens_it() {
        let s = Duration::from_secs;
        assert_eq!(retry_delay(0, None), s(1));
        assert_eq!(retry_delay(0, Some(s(3))), s(3));
        assert_eq!(retry_delay(3, Some(s(3))), s(8));
        assert_eq!(retry_delay(2, Some(Duration::ZERO)), s(4));
        assert_eq!(retry_delay(0, Some(s(86_400))), MAX_BACKOFF);
        assert_eq!(retry_delay(40, None), MAX_BACKOFF);
    }
}
