//! Recovery of an interrupted enrollment: the certificate an earlier attempt may have
//! produced carries the request's uid as `Controller-Reconcile-Id`. It is adopted only if its
//! public key is the CSR's; what to do when none is found is `after_empty_lookup`'s decision.

use command_issuer::api::CertificateRequest;
use command_issuer::request::{adopt, AttemptEnd, RequestError};
use tracing::{info, warn};

use super::attempt::Attempted;
use crate::command_calls::{CallError, CommandCalls};
use crate::messages::CrKey;

/// How many certificates found under one key are downloaded to look for the CSR's.
const MAX_CANDIDATES: usize = 5;

fn failed(e: CallError, wrap: fn(String) -> RequestError) -> Attempted {
    let (message, retry_after) = match e {
        CallError::Auth(m) => (RequestError::NoAuthorization(m), None),
        CallError::Command(e) => (wrap(e.to_string()), e.retry_after()),
    };
    Attempted::failed(message, false, retry_after)
}

/// `Some(end)` when the attempt ends here (recovered, or the lookup failed); `None` when no
/// certificate for the request's key carries `uid`.
pub async fn lookup(
    op_id: &str,
    key: &CrKey,
    uid: &str,
    cr: &CertificateRequest,
    calls: &CommandCalls<'_>,
) -> Option<Attempted> {
    let (found, _) = calls
        .call("GET /Certificates", |c, h| async move {
            c.certificates_with_metadata("Controller-Reconcile-Id", uid, &h)
                .await
        })
        .await;
    let found = match found {
        Ok(found) => found,
        Err(e) => return Some(failed(e, RequestError::Lookup)),
    };
    // Adopt only a certificate for this request's key; at most a few candidates are fetched.
    for candidate in found.iter().take(MAX_CANDIDATES) {
        let id = candidate.id;
        let (pems, _) = calls
            .call("POST /Certificates/Download", |c, h| async move {
                c.download_pem(id, &h).await
            })
            .await;
        let pems = match pems {
            Ok(p) => p,
            Err(e) => return Some(failed(e, RequestError::Recovering)),
        };
        match adopt(&pems, 0, &cr.spec.request.0) {
            Ok(outcome) => {
                info!(op_id, request = %key, certificate_id = id, "recovered the certificate of an interrupted enrollment; not enrolling again");
                return Some(Attempted::end(AttemptEnd::write(outcome)));
            }
            Err(why) => {
                warn!(op_id, request = %key, certificate_id = id, why, "a certificate found for this request's key id is not for its CSR; skipped")
            }
        }
    }
    None
}
