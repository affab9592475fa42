//! What a CertificateRequest's status becomes, as a server-side-apply body.

use base64::Engine;
use serde_json::{json, Value};

use crate::api::CertificateRequestCondition;
use crate::command::CertificateInformation;
use crate::pki::split_chain;

/// When a Pending request is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Capped exponential backoff (transient: network, 5xx, 429, auth).
    Backoff,
    /// Capped exponential backoff, then `Failed` once the max retry duration has passed since
    /// approval (bad CSR, unknown template/pattern, policy 400: design.md §3.3).
    Permanent,
    /// When the issuer turns Ready (and on backoff as a safety net).
    OnIssuerReady,
}

/// The result of one attempt, mapped to cert-manager's Ready reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrOutcome {
    /// Signed: `Ready=True/Issued`.
    Issued {
        /// Leaf + intermediates, PEM.
        certificate_pem: String,
        /// Root or topmost CA, PEM.
        ca_pem: String,
        /// Command request id.
        request_id: i64,
    },
    /// Not yet: `Ready=False/Pending`.
    Pending {
        /// Condition message.
        message: String,
        /// How to come back.
        retry: Retry,
    },
    /// Command holds the request (approval workflow, external validation): `Ready=False/Pending`
    /// with Command's message; its request id is recorded on the request so neither this
    /// process nor a restarted one enrolls it again (design.md §3.1–§3.2).
    Held {
        /// Condition message.
        message: String,
        /// Command's KeyfactorRequestId.
        request_id: i64,
    },
    /// Final failure: `Ready=False/Failed` + failureTime.
    Failed {
        /// Condition message.
        message: String,
    },
    /// Denied by an approval controller: `Ready=False/Denied` + failureTime.
    Denied,
}

/// Message written for a denied request, as upstream.
pub const DENIED_MESSAGE: &str = "The CertificateRequest was denied by an approval controller";

impl CrOutcome {
    /// Ready condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Issued { .. } => "Issued",
            Self::Pending { .. } | Self::Held { .. } => "Pending",
            Self::Failed { .. } => "Failed",
            Self::Denied => "Denied",
        }
    }

    /// The Event note published with this outcome, tagged with the op id to grep for.
    pub fn event_note(&self, op_id: &str) -> String {
        match self {
            Self::Issued { request_id, .. } => {
                format!("Certificate issued by Command (request id {request_id}) [op {op_id}]")
            }
            other => format!("{} [op {op_id}]", other.message()),
        }
    }

    /// Ready condition message.
    pub fn message(&self) -> String {
        match self {
            Self::Issued { .. } => "Signed".into(),
            Self::Pending { message, .. }
            | Self::Held { message, .. }
            | Self::Failed { message } => message.clone(),
            Self::Denied => DENIED_MESSAGE.into(),
        }
    }

    /// True for outcomes no later event changes.
    pub fn is_final(&self) -> bool {
        !matches!(self, Self::Pending { .. } | Self::Held { .. })
    }
}

/// Maps Command's disposition: ISSUED (or certificates present) → Issued; PENDING / external
/// validation → Pending held in Command; FAILED / DENIED → Failed.
///
/// An answer Command gave but that holds no usable chain (empty `Certificates`, a string that is
/// no PEM certificate, a broken chain) is held under its `KeyfactorRequestId` and followed up
/// (the certificate is downloaded again), never enrolled a second time (design.md §3.1). Without
/// a request id it is a Pending that cannot heal by itself, naming the missing fields: the next
/// attempt recovers the certificate by the enrollment's `Controller-Reconcile-Id` like an
/// interrupted enrollment, and it turns Failed after the max retry duration.
pub fn outcome_from_response(info: &CertificateInformation) -> CrOutcome {
    let disposition = info
        .request_disposition
        .as_deref()
        .unwrap_or("")
        .trim()
        .to_ascii_uppercase();
    let msg = info.disposition_message.as_deref().unwrap_or("").trim();
    let id = info.keyfactor_request_id;
    match disposition.as_str() {
        "FAILED" | "DENIED" => {
            return CrOutcome::Failed {
                message: format!(
                    "Command {} the request (request id {id}): {msg}",
                    disposition.to_lowercase()
                ),
            }
        }
        "PENDING" | "EXTERNAL VALIDATION" | "EXTERNAL_VALIDATION" => {
            return CrOutcome::Held {
                message: format!(
                    "Command holds the request (disposition {disposition}, request id {id}): {msg}"
                ),
                request_id: id,
            }
        }
        _ => {}
    }
    let certs = info.certificates.as_deref().unwrap_or_default();
    if certs.is_empty() {
        if id <= 0 {
            return CrOutcome::Pending {
                message: unusable_answer(info),
                retry: Retry::Permanent,
            };
        }
        let said = match (disposition.as_str(), msg) {
            ("", "") => "no disposition".to_string(),
            (d, "") => format!("disposition {d}"),
            ("", m) => format!("no disposition: {m}"),
            (d, m) => format!("disposition {d}: {m}"),
        };
        return CrOutcome::Held {
            message: format!(
                "Command returned no certificate for request id {id} ({said}); fetching it from Command every --pending-poll-interval"
            ),
            request_id: id,
        };
    }
    match split_chain(certs) {
        Ok(chain) => CrOutcome::Issued {
            certificate_pem: chain.certificate_pem,
            ca_pem: chain.ca_pem,
            request_id: id,
        },
        Err(e) if id > 0 => CrOutcome::Held {
            message: format!(
                "failed to sign: {e}; fetching the certificate of request id {id} from Command again every --pending-poll-interval"
            ),
            request_id: id,
        },
        Err(e) => CrOutcome::Pending {
            message: format!("failed to sign: {e}; Command's answer has no KeyfactorRequestId: {RECOVERY}"),
            retry: Retry::Permanent,
        },
    }
}

/// What happens next to an answer without a request id (the enroller's recovery of an enrollment
/// whose result was lost, design.md §3.1).
const RECOVERY: &str = "the next attempt looks for the certificate by this enrollment's Controller-Reconcile-Id (with SupportsMetadata) before enrolling again";

/// Message for an enrollment answer with neither certificates nor a request id.
fn unusable_answer(info: &CertificateInformation) -> String {
    let mut missing = vec!["Certificates"];
    if info.keyfactor_request_id <= 0 {
        missing.push("KeyfactorRequestId");
    }
    if info
        .request_disposition
        .as_deref()
        .unwrap_or("")
        .trim()
        .is_empty()
    {
        missing.push("RequestDisposition");
    }
    let mut known = Vec::new();
    if info.keyfactor_id > 0 {
        known.push(format!("certificate id {}", info.keyfactor_id));
    }
    if let Some(serial) = info.serial_number.as_deref().filter(|s| !s.is_empty()) {
        let serial: String = serial.chars().take(80).collect();
        known.push(format!("serial {serial}"));
    }
    let known = if known.is_empty() {
        String::new()
    } else {
        format!(" ({})", known.join(", "))
    };
    format!(
        "failed to sign: Command's enrollment answer lacks {}{known}; check the Command version and any proxy in between; {RECOVERY}",
        missing.join(", ")
    )
}

/// A held request's state in Command: `Some(Failed)` when an approver denied it or it failed,
/// `None` when the certificate should be looked for (the `StateString` values beyond the
/// denial words are unverified, so anything else means "look").
pub fn follow_up_outcome(w: &crate::command::WorkflowRequest) -> Option<CrOutcome> {
    let state = w.state_string.as_deref().unwrap_or("").to_ascii_lowercase();
    if ["denied", "failed", "rejected"]
        .iter()
        .any(|d| state.contains(d))
    {
        let comment = w.denial_comment.as_deref().unwrap_or("").trim();
        return Some(CrOutcome::Failed {
            message: format!(
                "Command {state} the request (request id {}): {comment}",
                w.id
            ),
        });
    }
    None
}

/// The certificate a held request finally produced (downloaded chain) as an outcome.
pub fn held_issued(pems: &[String], request_id: i64) -> CrOutcome {
    match split_chain(pems) {
        Ok(chain) => CrOutcome::Issued {
            certificate_pem: chain.certificate_pem,
            ca_pem: chain.ca_pem,
            request_id,
        },
        Err(e) => CrOutcome::Pending {
            message: format!("failed to sign: {e}"),
            retry: Retry::Permanent,
        },
    }
}

/// A certificate Command holds for a request that did not come from its enrollment answer
/// (a held request's follow-up, an interrupted enrollment's lookup): the outcome when its leaf
/// carries the CSR's public key, `Err(why)` when it belongs to another key and must not be
/// adopted.
pub fn adopt(pems: &[String], request_id: i64, csr_pem: &[u8]) -> Result<CrOutcome, String> {
    let outcome = held_issued(pems, request_id);
    let CrOutcome::Issued {
        certificate_pem, ..
    } = &outcome
    else {
        return Ok(outcome);
    };
    match crate::pki::key_matches(csr_pem, certificate_pem) {
        Ok(true) => Ok(outcome),
        Ok(false) => Err(format!(
            "the certificate Command holds for request id {request_id} was issued for another public key than this request's CSR; it is not adopted"
        )),
        Err(e) => Err(format!(
            "the certificate Command holds for request id {request_id} cannot be matched to this request's CSR: {e}"
        )),
    }
}

/// When retries of a request started counting: its approval, else its creation, else now.
pub fn retry_origin(cr: &crate::api::CertificateRequest, now: jiff::Timestamp) -> jiff::Timestamp {
    cr.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Approved"))
        .and_then(|c| c.last_transition_time.as_ref())
        .or(cr.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
        .unwrap_or(now)
}

/// Turns a permanent Pending into a final Failed once `max_retry` has passed since `started`
/// (approval time), so a request that cannot succeed stops retrying and says why.
pub fn give_up(
    outcome: CrOutcome,
    started: jiff::Timestamp,
    now: jiff::Timestamp,
    max_retry: std::time::Duration,
) -> CrOutcome {
    match outcome {
        CrOutcome::Pending {
            message,
            retry: Retry::Permanent,
        } => {
            let elapsed = now.duration_since(started);
            if elapsed.is_positive() && elapsed.unsigned_abs() >= max_retry {
                CrOutcome::Failed {
                    message: format!(
                        "{message} (gave up after retrying for {})",
                        crate::config::format_go_duration(max_retry)
                    ),
                }
            } else {
                CrOutcome::Pending {
                    message,
                    retry: Retry::Permanent,
                }
            }
        }
        other => other,
    }
}

/// Server-side-apply body for the status subresource: our Ready condition (transition time
/// kept while the status holds), certificate/ca when issued, failureTime once when final.
pub fn status_apply(
    name: &str,
    namespace: &str,
    outcome: &CrOutcome,
    previous_ready: Option<&CertificateRequestCondition>,
    failure_time_set: bool,
    now: &str,
) -> Value {
    let status_str = if matches!(outcome, CrOutcome::Issued { .. }) {
        "True"
    } else {
        "False"
    };
    let transition = previous_ready
        .filter(|c| c.status == status_str)
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0.to_string())
        .unwrap_or_else(|| now.to_string());
    let mut status = json!({
        "conditions": [{
            "type": "Ready",
            "status": status_str,
            "reason": outcome.reason(),
            "message": outcome.message(),
            "lastTransitionTime": transition,
        }]
    });
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    match outcome {
        CrOutcome::Issued {
            certificate_pem,
            ca_pem,
            ..
        } => {
            status["certificate"] = json!(b64(certificate_pem));
            if !ca_pem.is_empty() {
                status["ca"] = json!(b64(ca_pem));
            }
        }
        CrOutcome::Failed { .. } | CrOutcome::Denied if !failure_time_set => {
            status["failureTime"] = json!(now);
        }
        _ => {}
    }
    json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "CertificateRequest",
        "metadata": {"name": name, "namespace": namespace},
        "status": status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions() {
        let mut info = CertificateInformation {
            request_disposition: Some("PENDING".into()),
            keyfactor_request_id: 9,
            ..Default::default()
        };
        assert!(matches!(
            outcome_from_response(&info),
            CrOutcome::Held { request_id: 9, .. }
        ));
        info.request_disposition = Some("DENIED".into());
        assert!(matches!(
            outcome_from_response(&info),
            CrOutcome::Failed { .. }
        ));
        info.request_disposition = Some("ISSUED".into());
        info.disposition_message = Some("Issued.".into());
        info.certificates = Some(vec![]);
        assert_eq!(
            outcome_from_response(&info),
            CrOutcome::Held {
                message: "Command returned no certificate for request id 9 (disposition ISSUED: Issued.); fetching it from Command every --pending-poll-interval".into(),
                request_id: 9
            },
            "empty Certificates must not panic, issue or enroll again"
        );
        info.certificates = Some(vec!["junk".into()]);
        assert_eq!(
            outcome_from_response(&info),
            CrOutcome::Held {
                message: "failed to sign: failed to parse certificate PEM; fetching the certificate of request id 9 from Command again every --pending-poll-interval".into(),
                request_id: 9
            }
        );
        info.keyfactor_request_id = 0;
        assert_eq!(
            outcome_from_response(&info),
            CrOutcome::Pending {
                message: format!("failed to sign: failed to parse certificate PEM; Command's answer has no KeyfactorRequestId: {RECOVERY}"),
                retry: Retry::Permanent
            }
        );
    }

    #[test]
    fn answer_without_certificates_or_request_id_names_the_gap() {
        let info = CertificateInformation {
            keyfactor_id: 12,
            serial_number: Some("0A1B".into()),
            ..Default::default()
        };
        assert_eq!(
            outcome_from_response(&info),
            CrOutcome::Pending {
                message: "failed to sign: Command's enrollment answer lacks Certificates, KeyfactorRequestId, RequestDisposition (certificate id 12, serial 0A1B); check the Command version and any proxy in between; the next attempt looks for the certificate by this enrollment's Controller-Reconcile-Id (with SupportsMetadata) before enrolling again".into(),
                retry: Retry::Permanent
            }
        );
        let bare = CertificateInformation::default();
        assert!(matches!(
            outcome_from_response(&bare),
            CrOutcome::Pending { message, retry: Retry::Permanent }
                if message.contains("lacks Certificates, KeyfactorRequestId, RequestDisposition; check")
        ));
    }

    #[test]
    fn permanent_errors_fail_after_the_max_retry_duration() {
        let t0 = jiff::Timestamp::from_second(1_000).unwrap();
        let p = CrOutcome::Pending {
            message: "bad".into(),
            retry: Retry::Permanent,
        };
        let max = std::time::Duration::from_secs(3600);
        assert_eq!(
            give_up(p.clone(), t0, t0 + jiff::SignedDuration::from_secs(10), max),
            p
        );
        assert_eq!(
            give_up(p, t0, t0 + jiff::SignedDuration::from_secs(3600), max),
            CrOutcome::Failed {
                message: "bad (gave up after retrying for 1h0m0s)".into()
            }
        );
        let transient = CrOutcome::Pending {
            message: "down".into(),
            retry: Retry::Backoff,
        };
        assert_eq!(
            give_up(
                transient.clone(),
                t0,
                t0 + jiff::SignedDuration::from_secs(99_999),
                max
            ),
            transient
        );
    }

    #[test]
    fn follow_up_states() {
        let w = |s: &str| crate::command::WorkflowRequest {
            id: 7,
            state_string: Some(s.into()),
            denial_comment: Some("no".into()),
        };
        assert_eq!(follow_up_outcome(&w("Pending")), None);
        assert_eq!(follow_up_outcome(&w("Issued")), None);
        assert_eq!(
            follow_up_outcome(&w("Denied")),
            Some(CrOutcome::Failed {
                message: "Command denied the request (request id 7): no".into()
            })
        );
    }

    #[test]
    fn apply_body_for_issued_and_denied() {
        let issued = CrOutcome::Issued {
            certificate_pem: "LEAF".into(),
            ca_pem: "ROOT".into(),
            request_id: 1,
        };
        let v = status_apply("r", "ns", &issued, None, false, "2026-01-01T00:00:00Z");
        assert_eq!(v["status"]["conditions"][0]["reason"], "Issued");
        assert_eq!(v["status"]["conditions"][0]["message"], "Signed");
        assert_eq!(v["status"]["certificate"], "TEVBRg==");
        assert!(v["status"].get("failureTime").is_none());
        let v = status_apply(
            "r",
            "ns",
            &CrOutcome::Denied,
            None,
            false,
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(v["status"]["failureTime"], "2026-01-01T00:00:00Z");
        assert_eq!(v["status"]["conditions"][0]["message"], DENIED_MESSAGE);
        let v = status_apply(
            "r",
            "ns",
            &CrOutcome::Denied,
            None,
            true,
            "2026-01-01T00:00:00Z",
        );
        assert!(v["status"].get("failureTime").is_none());
    }

    #[test]
    fn event_notes_carry_the_op_id() {
        let issued = CrOutcome::Issued {
            certificate_pem: String::new(),
            ca_pem: String::new(),
            request_id: 42,
        };
        assert_eq!(
            issued.event_note("op-1"),
            "Certificate issued by Command (request id 42) [op op-1]"
        );
        assert_eq!(
            CrOutcome::Denied.event_note("op-2"),
            format!("{DENIED_MESSAGE} [op op-2]")
        );
    }

    #[test]
    fn a_certificate_is_adopted_only_for_the_csrs_key() {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(vec![]).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_for = |key: &KeyPair| {
            let p = CertificateParams::new(vec!["a.example.com".into()]).unwrap();
            let csr = p.serialize_request(key).unwrap().pem().unwrap();
            let cert = p.signed_by(key, &issuer).unwrap().pem();
            (csr, cert)
        };
        let (mine, my_cert) = leaf_for(&KeyPair::generate().unwrap());
        let (_, their_cert) = leaf_for(&KeyPair::generate().unwrap());
        let adopted = adopt(&[my_cert, ca.pem()], 7, mine.as_bytes()).unwrap();
        assert!(matches!(adopted, CrOutcome::Issued { request_id: 7, .. }));
        let refused = adopt(&[their_cert, ca.pem()], 8, mine.as_bytes()).unwrap_err();
        assert_eq!(
            refused,
            "the certificate Command holds for request id 8 was issued for another public key than this request's CSR; it is not adopted"
        );
    }
}
