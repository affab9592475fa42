//! One attempt at one request, read to write: re-read the request, gate it, resolve its
//! issuer, then follow up, recover or sign, and write the outcome. Every decision is a call
//! into `command_issuer::request`; this file only sequences the I/O.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use command_issuer::api::{CertificateRequest, IssuerKind};
use command_issuer::command::CommandClient;
use command_issuer::config::ConnectionConfig;
use command_issuer::metrics::Metrics;
use command_issuer::request::{
    after_empty_lookup, first_step, gate, give_up, intent_time, retry_origin, sanitize, AttemptEnd,
    CrOutcome, Facts, Gate, RequestError, Step, INTENT_ANNOTATION,
};
use kube::{Api, Client, ResourceExt};
use tracing::{debug, info, warn};

use super::{follow_up, recover, sign};
use crate::apiserver::{bounded, CALL_DEADLINE};
use crate::command_calls::{client_for, is_bearer, CommandCalls};
use crate::flags::Settings;
use crate::messages::{
    CrKey, IssuerKey, IssuerSnapshot, ResolveError, ResolveIssuer, WriteRequestStatus,
};

/// What an enrollment worker talks to.
#[derive(Clone)]
pub struct EnrollContext {
    /// Apiserver client, to re-read a request and record intents.
    pub client: Client,
    /// Validated flags.
    pub settings: Arc<Settings>,
    /// Issuer lookups.
    pub registry: Recipient<ResolveIssuer>,
    /// Status and Events.
    pub writer: Recipient<WriteRequestStatus>,
    /// Counters and gauges.
    pub metrics: Arc<Metrics>,
    /// True while this process may enroll and write.
    pub leading: Arc<AtomicBool>,
}

/// The HTTPS client the enroller keeps per issuer connection.
pub type CachedClient = (Arc<ConnectionConfig>, CommandClient);

/// How an attempt ended, with what the enroller keeps from it.
pub struct Attempted {
    /// The end, for [`command_issuer::request::next_step`].
    pub end: AttemptEnd,
    /// Whether the outcome to write landed.
    pub written: bool,
    /// A client built for the issuer's connection, to reuse next time.
    pub client: Option<(IssuerKey, CachedClient)>,
    /// Whether the enrollment call got Command's complete answer; `None` when none was sent.
    pub answered: Option<bool>,
    /// The request as this attempt last wrote it (after the intent patch): the status write
    /// carries its version.
    pub fresh: Option<Box<CertificateRequest>>,
    /// Credential values to redact from what is written.
    pub secrets: Vec<String>,
}

impl Attempted {
    /// An attempt that ends in a `Pending` condition saying `e`, stretched by `retry_after`.
    pub(super) fn failed(e: RequestError, permanent: bool, retry_after: Option<Duration>) -> Self {
        Self::end(AttemptEnd::Write {
            outcome: e.outcome(permanent),
            retry_after,
        })
    }

    pub(super) fn end(end: AttemptEnd) -> Self {
        Self {
            end,
            written: false,
            client: None,
            answered: None,
            fresh: None,
            secrets: Vec::new(),
        }
    }
}

/// The request as it is now; `Err` ends the attempt (deleted, or the read failed).
async fn read(
    ctx: &EnrollContext,
    op_id: &str,
    key: &CrKey,
) -> Result<Box<CertificateRequest>, AttemptEnd> {
    let api: Api<CertificateRequest> = Api::namespaced(ctx.client.clone(), &key.namespace);
    match bounded(
        "a read of the request",
        CALL_DEADLINE,
        api.get_opt(&key.name),
    )
    .await
    {
        Ok(Some(c)) => Ok(Box::new(c)),
        Ok(None) => Err(AttemptEnd::Nothing),
        Err(e) => {
            warn!(op_id, request = %key, error = %e, "re-reading request failed");
            Err(AttemptEnd::ReadFailed)
        }
    }
}

/// One attempt at the request `key`, starting from the watch copy `cr` when it is usable.
pub async fn attempt(
    ctx: EnrollContext,
    op_id: String,
    key: CrKey,
    cr: Option<Box<CertificateRequest>>,
    cached: Option<CachedClient>,
    answered: bool,
) -> Attempted {
    // A copy that carries an intent comes from a watch event about our own earlier attempt and
    // is often stale by now (already Issued): act on the current object instead.
    let cr = match cr.filter(|c| !c.annotations().contains_key(INTENT_ANNOTATION)) {
        Some(c) => c,
        None => match read(&ctx, &op_id, &key).await {
            Ok(c) => c,
            Err(end) => return Attempted::end(end),
        },
    };
    let mut res = decide(&ctx, &op_id, &key, &cr, cached, answered).await;
    let AttemptEnd::Write {
        outcome,
        retry_after,
    } = res.end
    else {
        return res;
    };
    let cr = res.fresh.take().unwrap_or(cr);
    let outcome = sanitize(outcome, &std::mem::take(&mut res.secrets));
    let now = jiff::Timestamp::now();
    let outcome = give_up(
        outcome,
        retry_origin(&cr, now),
        now,
        ctx.settings.max_retry_duration,
    );
    let write = WriteRequestStatus {
        op_id: op_id.clone(),
        cr,
        outcome: outcome.clone(),
    };
    match ctx.writer.send(write).await {
        Ok(Ok(())) => res.written = true,
        Ok(Err(e)) => warn!(op_id, request = %key, error = %e, "status write failed; will retry"),
        Err(e) => {
            warn!(op_id, request = %key, error = %e, "status writer unavailable; will retry")
        }
    }
    res.end = AttemptEnd::Write {
        outcome,
        retry_after,
    };
    res
}

async fn decide(
    ctx: &EnrollContext,
    op_id: &str,
    key: &CrKey,
    cr: &CertificateRequest,
    cached: Option<CachedClient>,
    answered: bool,
) -> Attempted {
    let (kind, name, held, intent) = match gate(cr, ctx.settings.check_approval) {
        Gate::NotOurs | Gate::Final | Gate::AwaitingApproval => {
            return Attempted::end(AttemptEnd::Nothing)
        }
        Gate::Denied => return Attempted::end(AttemptEnd::write(CrOutcome::Denied)),
        Gate::InvalidKind(message) => {
            return Attempted::end(AttemptEnd::write(CrOutcome::Failed { message }))
        }
        Gate::Held {
            kind,
            name,
            request_id,
        } => (kind, name, Some(request_id), false),
        Gate::Sign { kind, name } => (kind, name, None, false),
        Gate::Recover { kind, name, .. } => (kind, name, None, true),
    };
    let issuer = IssuerKey {
        kind,
        namespace: (kind == IssuerKind::Issuer).then(|| key.namespace.clone()),
        name,
    };
    let resolved = ctx
        .registry
        .send(ResolveIssuer {
            key: issuer.clone(),
        })
        .await;
    let snap = match (resolved, held) {
        (Ok(Ok(s)), _) => s,
        // A held request keeps its status while its issuer is away; look again later.
        (_, Some(_)) => return Attempted::end(AttemptEnd::StillHeld),
        (Ok(Err(ResolveError::Missing(m))), None) => {
            return Attempted::failed(RequestError::IssuerMissing(m), false, None)
        }
        (Ok(Err(ResolveError::Unready)), None) => {
            return Attempted::failed(RequestError::IssuerNotReady, false, None)
        }
        (Ok(Err(ResolveError::Unchecked)) | Err(_), None) => {
            debug!(op_id, request = %key, issuer = %issuer, "issuer not checked yet; waiting");
            return Attempted::end(AttemptEnd::IssuerUnchecked);
        }
    };
    let (client, fresh) = match cached {
        Some((conn, c)) if *conn == *snap.connection => (c, None),
        _ => match client_for(&snap.connection, ctx.settings.command_timeout) {
            Ok(c) => (
                c.clone(),
                Some((issuer.clone(), (snap.connection.clone(), c))),
            ),
            Err(e) => return Attempted::failed(RequestError::NoClient(e.to_string()), false, None),
        },
    };
    let calls = CommandCalls {
        client: &client,
        auth: &snap.auth,
        bearer: is_bearer(&snap.connection.credentials),
        metrics: &ctx.metrics,
        op_id: Some(op_id),
    };
    let facts = Facts {
        held,
        intent,
        intent_time: intent_time(cr),
        answered,
        supports_metadata: snap.supports_metadata,
        call_timeout: ctx.settings.command_timeout,
    };
    let uid = cr.metadata.uid.clone().unwrap_or_default();
    let mut res = match first_step(&facts, jiff::Timestamp::now()) {
        Step::FollowUp(request_id) => {
            let csr = &cr.spec.request.0;
            follow_up::follow_up(op_id, key, request_id, csr, &calls).await
        }
        Step::Enroll => sign_it(ctx, op_id, key, cr, &snap, &calls).await,
        Step::WaitUnverifiable(left) => {
            warn!(op_id, request = %key, look_again_in_secs = left.as_secs_f64(), "an earlier attempt may have reached Command, and without SupportsMetadata it cannot be looked up; enrolling again once it can no longer complete");
            // Said once on the request, then looked at again when the window ends.
            Attempted::failed(RequestError::Unverifiable, false, Some(left))
        }
        // Looked up by our own key, the request's uid, whatever the intent annotation says.
        Step::LookUp | Step::LookAgain(_) => {
            match recover::lookup(op_id, key, &uid, cr, &calls).await {
                Some(done) => done,
                None => match after_empty_lookup(&facts, jiff::Timestamp::now()) {
                    Step::LookAgain(wait) => {
                        // Its answer was lost, and Command may still be completing it: enrolling
                        // now could make a second certificate.
                        info!(op_id, request = %key, look_again_in_secs = wait.as_secs_f64(), "an interrupted enrollment left no certificate in Command yet; looking again before enrolling");
                        Attempted::end(AttemptEnd::LookAgain(wait))
                    }
                    _ => {
                        info!(op_id, request = %key, "an interrupted enrollment left no certificate in Command; enrolling");
                        sign_it(ctx, op_id, key, cr, &snap, &calls).await
                    }
                },
            }
        }
    };
    res.client = fresh;
    res.secrets = snap.connection.credentials.secret_values();
    res
}

async fn sign_it(
    ctx: &EnrollContext,
    op_id: &str,
    key: &CrKey,
    cr: &CertificateRequest,
    snap: &IssuerSnapshot,
    calls: &CommandCalls<'_>,
) -> Attempted {
    match sign::prepare(op_id, key, cr, snap) {
        Ok(prepared) => sign::enroll(ctx, op_id, key, cr, snap, prepared, calls).await,
        Err(e) => Attempted::failed(e, false, None),
    }
}

/// Writes an outcome again whose earlier write failed (Command's certificate, or the id of a
/// request Command holds): nothing is sent to Command. Skipped when the request is gone or
/// already final (another writer finished it).
pub async fn write_again(
    ctx: EnrollContext,
    op_id: String,
    key: CrKey,
    outcome: CrOutcome,
) -> Attempted {
    let cr = match read(&ctx, &op_id, &key).await {
        Ok(c) => c,
        Err(end) => return Attempted::end(end),
    };
    if gate(&cr, false) == Gate::Final {
        return Attempted::end(AttemptEnd::Nothing);
    }
    let write = WriteRequestStatus {
        op_id: op_id.clone(),
        cr,
        outcome: outcome.clone(),
    };
    let written = matches!(ctx.writer.send(write).await, Ok(Ok(())));
    if !written {
        warn!(op_id, request = %key, "writing Command's answer failed again; will retry the write");
    }
    let mut res = Attempted::end(AttemptEnd::write(outcome));
    res.written = written;
    res
}
