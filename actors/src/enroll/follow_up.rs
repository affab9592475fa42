//! Follow-up of a request Command holds: its state, then the certificate it produced. Errors
//! and "not yet" keep it held for the next poll; it is never enrolled again.

use command_issuer::request::{adopt, follow_up_outcome, AttemptEnd, CrOutcome};
use tracing::{info, warn};

use super::attempt::Attempted;
use crate::command_calls::CommandCalls;
use crate::messages::CrKey;

fn hold() -> Attempted {
    Attempted::end(AttemptEnd::StillHeld)
}

/// One poll of the held request `request_id`; its certificate is adopted only if it is for
/// the key of `csr_pem` (the request id comes from an annotation a user could have written).
pub async fn follow_up(
    op_id: &str,
    key: &CrKey,
    request_id: i64,
    csr_pem: &[u8],
    calls: &CommandCalls<'_>,
) -> Attempted {
    let (w, _) = calls
        .call("GET /Workflow/Certificates/{id}", |c, h| async move {
            c.workflow_request(request_id, &h).await
        })
        .await;
    let w = match w {
        Ok(w) => w,
        Err(e) => {
            warn!(op_id, request = %key, request_id, error = %e, "following up the held request failed; will retry");
            return hold();
        }
    };
    info!(op_id, request = %key, request_id, state = ?w.state_string, "followed up the held request");
    if let Some(failed) = follow_up_outcome(&w) {
        return Attempted::end(AttemptEnd::write(failed));
    }
    let (certs, _) = calls
        .call("GET /Certificates", |c, h| async move {
            c.certificates_for_request(request_id, &h).await
        })
        .await;
    let cert_id = match certs.as_deref() {
        Ok([first, ..]) => first.id,
        Ok([]) => return hold(),
        Err(e) => {
            warn!(op_id, request = %key, request_id, error = %e, "looking up the held request's certificate failed; will retry");
            return hold();
        }
    };
    let (pems, _) = calls
        .call("POST /Certificates/Download", |c, h| async move {
            c.download_pem(cert_id, &h).await
        })
        .await;
    match pems {
        Ok(pems) => {
            info!(op_id, request = %key, request_id, certificate_id = cert_id, "held request issued by Command; certificate downloaded");
            let outcome = adopt(&pems, request_id, csr_pem)
                .unwrap_or_else(|message| CrOutcome::Failed { message });
            Attempted::end(AttemptEnd::write(outcome))
        }
        Err(e) => {
            warn!(op_id, request = %key, request_id, error = %e, "downloading the certificate failed; will retry");
            hold()
        }
    }
}
