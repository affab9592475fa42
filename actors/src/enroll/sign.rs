//! Signing a request that Command has not seen: the sign configuration and CSR are checked,
//! the intent is recorded on the request, then `POST /Enrollment/CSR` is called once.

use command_issuer::api::CertificateRequest;
use command_issuer::command::CommandError;
use command_issuer::config::{sign_config, SignConfig};
use command_issuer::pki::parse_csr;
use command_issuer::request::{
    enrollment_body, enrollment_failure, outcome_from_response, pick_pattern, predefined_metadata,
    AttemptEnd, CrOutcome, MetadataContext, RequestError, INTENT_ANNOTATION,
    INTENT_TIME_ANNOTATION,
};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use tracing::info;

use super::attempt::{Attempted, EnrollContext};
use crate::apiserver::{bounded, CALL_DEADLINE};
use crate::command_calls::{CallError, CommandCalls};
use crate::messages::{CrKey, IssuerSnapshot};

/// A request checked and ready to send.
pub struct Prepared {
    sign: SignConfig,
    csr_pem: String,
}

/// Resolves the sign configuration (spec + annotation overrides) and parses the CSR.
pub fn prepare(
    op_id: &str,
    key: &CrKey,
    cr: &CertificateRequest,
    snap: &IssuerSnapshot,
) -> Result<Prepared, RequestError> {
    let sign = sign_config(&snap.spec, cr.annotations())
        .map_err(|e| RequestError::BadSignConfig(e.to_string()))?;
    let csr_pem = String::from_utf8_lossy(&cr.spec.request.0).into_owned();
    let csr = parse_csr(csr_pem.as_bytes()).map_err(|e| RequestError::BadCsr(e.to_string()))?;
    info!(
        op_id, request = %key, issuer = %snap.key, common_name = %csr.common_name, san_count = csr.sans.len(),
        sans = ?csr.sans, template = ?sign.template, certificate_authority = %sign.certificate_authority(),
        enrollment_pattern_id = ?sign.pattern_id, enrollment_pattern_name = ?sign.pattern_name, "signing"
    );
    Ok(Prepared { sign, csr_pem })
}

/// Records the intent, then enrolls. The intent patch carries the version the decision was
/// made on, so a stale copy (a late watch event) is refused (409) instead of enrolled again.
pub async fn enroll(
    ctx: &EnrollContext,
    op_id: &str,
    key: &CrKey,
    cr: &CertificateRequest,
    snap: &IssuerSnapshot,
    prepared: Prepared,
    calls: &CommandCalls<'_>,
) -> Attempted {
    let Prepared { sign, csr_pem } = prepared;
    let pattern_id = match (sign.pattern_id, &sign.pattern_name) {
        (Some(id), _) => Some(id),
        (None, Some(name)) => {
            let (r, _) = calls
                .call("GET /EnrollmentPatterns", |c, h| async move {
                    c.enrollment_patterns_named(name, &h).await
                })
                .await;
            let r = match r {
                Ok(p) => Ok(p),
                Err(CallError::Auth(m)) => {
                    return Attempted::failed(RequestError::NoAuthorization(m), false, None)
                }
                Err(CallError::Command(e)) => Err(e),
            };
            match pick_pattern(name, r) {
                Ok(id) => Some(id),
                Err((m, permanent)) => {
                    return Attempted::failed(RequestError::Pattern(m), permanent, None)
                }
            }
        }
        (None, None) => None,
    };
    let predefined = snap.supports_metadata.then(|| {
        predefined_metadata(&MetadataContext {
            controller_namespace: &ctx.settings.cluster_resource_namespace,
            kind: snap.key.kind,
            issuer_name: &snap.key.name,
            request_namespace: &key.namespace,
            op_id,
        })
    });
    // Record the intent first: a crash after Command answered must not lead to a second enrollment.
    let api: Api<CertificateRequest> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let mut intent = serde_json::json!({"metadata": {"annotations": {
        INTENT_ANNOTATION: op_id, INTENT_TIME_ANNOTATION: jiff::Timestamp::now().to_string(),
    }}});
    if let Some(v) = cr.resource_version() {
        intent["metadata"]["resourceVersion"] = serde_json::json!(v);
    }
    let (pp, patch) = (PatchParams::default(), Patch::Merge(&intent));
    let call = api.patch(&key.name, &pp, &patch);
    let patched = match bounded("the enrollment-intent patch", CALL_DEADLINE, call).await {
        Ok(p) => p,
        Err(e) if e.is_conflict() => {
            info!(op_id, request = %key, "the request changed since it was read; reading it again before enrolling");
            return Attempted::end(AttemptEnd::Conflict);
        }
        Err(e) => return Attempted::failed(RequestError::RecordIntent(e.to_string()), false, None),
    };
    if !ctx.leading.load(std::sync::atomic::Ordering::SeqCst) {
        // Deposed while recording the intent: the next leader looks this request up.
        return Attempted::end(AttemptEnd::Nothing);
    }
    let now = jiff::Timestamp::now().to_string();
    let body = enrollment_body(csr_pem, &sign, pattern_id, predefined, now);
    info!(op_id, request = %key, url = %format!("{}/Enrollment/CSR", calls.base_url()), metadata_fields = body.metadata.len(), "calling Command POST /Enrollment/CSR");
    let body = &body;
    let (result, _) = calls
        .call("POST /Enrollment/CSR", |c, h| async move {
            c.enroll_csr(body, &h).await
        })
        .await;
    let answered = match &result {
        Err(CallError::Command(e)) => !e.is_uncertain(),
        _ => true,
    };
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
            Attempted::end(AttemptEnd::write(outcome))
        }
        Err(CallError::Auth(m)) => Attempted::failed(RequestError::NoAuthorization(m), false, None),
        Err(CallError::Command(e)) => {
            let transient =
                e.is_transient() || matches!(e, CommandError::Status { status: 401, .. });
            tracing::warn!(op_id, request = %key, error = %e, transient, retry_after_secs = ?e.retry_after().map(|d| d.as_secs()), "Command enrollment failed");
            let message = enrollment_failure(&sign, pattern_id, &e);
            Attempted::failed(
                RequestError::Enrollment(message),
                !transient,
                e.retry_after(),
            )
        }
    };
    res.answered = Some(answered);
    res.fresh = Some(Box::new(patched));
    res
}
