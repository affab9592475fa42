//! Recovery of an interrupted enrollment: an earlier attempt (op id `previous`) may have
//! reached Command without its answer being recorded. Its certificate carries that op id as
//! `Controller-Reconcile-Id`: found → download it; not found → enroll, but only once the
//! earlier call can no longer complete.

use std::time::Duration;

use command_issuer::api::CertificateRequest;
use command_issuer::request::{
    held_issued, intent_time, recovery_settle, recovery_wait, AttemptEnd, RequestError,
};
use tracing::{info, warn};

use super::attempt::Attempted;
use crate::command_calls::{CallError, CommandCalls};
use crate::messages::{CrKey, IssuerSnapshot};

/// What the lookup needs to know about the request and the earlier attempt.
pub struct Lookup<'a> {
    /// This attempt's op id.
    pub op_id: &'a str,
    /// The request.
    pub key: &'a CrKey,
    /// Op id of the earlier attempt.
    pub previous: &'a str,
    /// Whether the earlier call got Command's complete answer (then "not found" is final).
    pub answered: bool,
    /// The Command call timeout the settle window is derived from.
    pub settle: Duration,
}

fn failed(e: CallError, wrap: fn(String) -> RequestError) -> Attempted {
    let (message, retry_after) = match e {
        CallError::Auth(m) => (RequestError::NoAuthorization(m), None),
        CallError::Command(e) => (wrap(e.to_string()), e.retry_after()),
    };
    Attempted::end(AttemptEnd::Write {
        outcome: message.outcome(false),
        retry_after,
    })
}

/// `Some(end)` when the attempt ends here (recovered, wait, or the lookup failed); `None`
/// when the request is to be enrolled now.
pub async fn lookup(
    snap: &IssuerSnapshot,
    cr: &CertificateRequest,
    look: Lookup<'_>,
    calls: &CommandCalls<'_>,
) -> Option<Attempted> {
    let Lookup {
        op_id,
        key,
        previous,
        answered,
        settle,
    } = look;
    if !snap.supports_metadata {
        warn!(op_id, request = %key, previous_op_id = %previous, "an earlier attempt may have reached Command, but without SupportsMetadata it cannot be looked up; enrolling again");
        return None;
    }
    let (found, _) = calls
        .call("GET /Certificates", |c, h| async move {
            c.certificates_with_metadata("Controller-Reconcile-Id", previous, &h)
                .await
        })
        .await;
    let found = match found {
        Ok(found) => found,
        Err(e) => return Some(failed(e, RequestError::Lookup)),
    };
    if let Some(first) = found.first() {
        let id = first.id;
        let (pems, _) = calls
            .call("POST /Certificates/Download", |c, h| async move {
                c.download_pem(id, &h).await
            })
            .await;
        return Some(match pems {
            Ok(p) => {
                info!(op_id, request = %key, previous_op_id = %previous, certificate_id = id, "recovered the certificate of an interrupted enrollment; not enrolling again");
                Attempted::end(AttemptEnd::write(held_issued(&p, 0)))
            }
            Err(e) => failed(e, RequestError::Recovering),
        });
    }
    let wait = (!answered)
        .then(|| {
            recovery_wait(
                intent_time(cr),
                jiff::Timestamp::now(),
                recovery_settle(settle),
            )
        })
        .flatten();
    if let Some(wait) = wait {
        // Its answer was lost, and Command may still be completing it: enrolling now could
        // make a second certificate.
        info!(op_id, request = %key, previous_op_id = %previous, look_again_in_secs = wait.as_secs_f64(), "an interrupted enrollment left no certificate in Command yet; looking again before enrolling");
        return Some(Attempted::end(AttemptEnd::LookAgain(wait)));
    }
    info!(op_id, request = %key, previous_op_id = %previous, "an interrupted enrollment left no certificate in Command; enrolling");
    None
}
