//! Which CertificateRequests we act on (product.md §8 steps 2–8).

use crate::api::{CertificateRequest, IssuerKind};
use crate::GROUP;

/// What to do with a CertificateRequest seen in a watch event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// issuerRef.group is not ours: no status write.
    NotOurs,
    /// Already Ready, Failed or Denied: nothing to do.
    Final,
    /// Command holds it under a recorded request id: follow it up, never enroll it again.
    Held {
        /// Issuer or ClusterIssuer.
        kind: IssuerKind,
        /// issuerRef.name.
        name: String,
        /// Command's request id.
        request_id: i64,
    },
    /// Denied by an approval controller: write Denied once.
    Denied,
    /// Approval gate on and not approved yet: leave it untouched.
    AwaitingApproval,
    /// issuerRef.kind is neither Issuer nor ClusterIssuer: final Failed with this message.
    InvalidKind(String),
    /// An earlier attempt (this op id) may have reached Command without its result being
    /// recorded: look for its certificate before enrolling again.
    Recover {
        /// Issuer or ClusterIssuer.
        kind: IssuerKind,
        /// issuerRef.name.
        name: String,
        /// Op id of the earlier attempt (its `Controller-Reconcile-Id` in Command).
        op_id: String,
    },
    /// Sign it with this issuer.
    Sign {
        /// Issuer or ClusterIssuer.
        kind: IssuerKind,
        /// issuerRef.name.
        name: String,
    },
}

fn condition<'a>(
    cr: &'a CertificateRequest,
    type_: &str,
) -> Option<&'a crate::api::CertificateRequestCondition> {
    cr.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// Command's request id, recorded once Command holds a request (approval workflow, external
/// validation), so no process enrolls it a second time.
pub const REQUEST_ID_ANNOTATION: &str = "command-issuer.keyfactor.com/keyfactor-request-id";

/// The op id of an enrollment about to be sent to Command, recorded before the call so a
/// restarted controller knows an earlier attempt may have reached Command.
pub const INTENT_ANNOTATION: &str = "command-issuer.keyfactor.com/enrollment-intent";

/// True when an `Approved=True` condition is present.
pub fn is_approved(cr: &CertificateRequest) -> bool {
    condition(cr, "Approved").is_some_and(|c| c.status == "True")
}

/// The issuer a request of ours names (kind, name), to queue it behind that issuer's slots;
/// `None` when issuerRef is not ours or its kind is neither of our kinds.
pub fn issuer_of(cr: &CertificateRequest) -> Option<(IssuerKind, String)> {
    let r = &cr.spec.issuer_ref;
    if r.group.as_deref() != Some(GROUP) {
        return None;
    }
    IssuerKind::parse(r.kind.as_deref()).map(|k| (k, r.name.clone()))
}

/// Decides from the object alone; `check_approval` is false with `--disable-approved-check`.
pub fn gate(cr: &CertificateRequest, check_approval: bool) -> Gate {
    let r = &cr.spec.issuer_ref;
    if r.group.as_deref() != Some(GROUP) {
        return Gate::NotOurs;
    }
    if let Some(ready) = condition(cr, "Ready") {
        let reason = ready.reason.as_deref().unwrap_or("");
        if ready.status == "True" || reason == "Failed" || reason == "Denied" {
            return Gate::Final;
        }
    }
    if condition(cr, "Denied").is_some_and(|c| c.status == "True") {
        return Gate::Denied;
    }
    if check_approval && !is_approved(cr) {
        return Gate::AwaitingApproval;
    }
    // Only now: the request-id annotation is writable by anyone who can edit the request, so it
    // is honoured for approved requests only (and what it leads to is adopted only when the
    // certificate's public key is the CSR's).
    if let Some(id) = cr
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REQUEST_ID_ANNOTATION))
    {
        if let (Some(kind), Ok(request_id)) =
            (IssuerKind::parse(r.kind.as_deref()), id.trim().parse())
        {
            return Gate::Held {
                kind,
                name: r.name.clone(),
                request_id,
            };
        }
    }

    let intent = cr
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INTENT_ANNOTATION));
    match IssuerKind::parse(r.kind.as_deref()) {
        Some(kind) => match intent {
            Some(op_id) => Gate::Recover {
                kind,
                name: r.name.clone(),
                op_id: op_id.clone(),
            },
            None => Gate::Sign {
                kind,
                name: r.name.clone(),
            },
        },
        None => Gate::InvalidKind(format!(
            "error interpreting issuerRef: kind {:?} is neither Issuer nor ClusterIssuer",
            r.kind.as_deref().unwrap_or("")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        CertificateRequestCondition, CertificateRequestSpec, CertificateRequestStatus, IssuerRef,
    };

    fn cr(group: &str, kind: Option<&str>, conds: &[(&str, &str, &str)]) -> CertificateRequest {
        let mut c = CertificateRequest::new(
            "r",
            CertificateRequestSpec {
                issuer_ref: IssuerRef {
                    name: "i".into(),
                    kind: kind.map(str::to_string),
                    group: Some(group.into()),
                },
                ..Default::default()
            },
        );
        c.status = Some(CertificateRequestStatus {
            conditions: conds
                .iter()
                .map(|(t, s, r)| CertificateRequestCondition {
                    type_: t.to_string(),
                    status: s.to_string(),
                    reason: Some(r.to_string()),
                    message: None,
                    last_transition_time: None,
                })
                .collect(),
            ..Default::default()
        });
        c
    }

    #[test]
    fn table_of_product_section_8() {
        assert_eq!(
            gate(
                &cr(
                    "cert-manager.io",
                    Some("Issuer"),
                    &[("Approved", "True", "")]
                ),
                true
            ),
            Gate::NotOurs
        );
        assert_eq!(
            gate(
                &cr(GROUP, Some("Issuer"), &[("Ready", "True", "Issued")]),
                true
            ),
            Gate::Final
        );
        assert_eq!(
            gate(
                &cr(GROUP, Some("Issuer"), &[("Ready", "False", "Failed")]),
                true
            ),
            Gate::Final
        );
        assert_eq!(
            gate(&cr(GROUP, Some("Issuer"), &[("Denied", "True", "x")]), true),
            Gate::Denied
        );
        assert_eq!(
            gate(&cr(GROUP, Some("Issuer"), &[]), true),
            Gate::AwaitingApproval
        );
        assert_eq!(
            gate(&cr(GROUP, Some("Issuer"), &[]), false),
            Gate::Sign {
                kind: IssuerKind::Issuer,
                name: "i".into()
            }
        );
        assert_eq!(
            gate(
                &cr(
                    GROUP,
                    None,
                    &[("Approved", "True", ""), ("Ready", "False", "Pending")]
                ),
                true
            ),
            Gate::Sign {
                kind: IssuerKind::Issuer,
                name: "i".into()
            }
        );
        assert_eq!(
            gate(
                &cr(GROUP, Some("ClusterIssuer"), &[("Approved", "True", "")]),
                true
            ),
            Gate::Sign {
                kind: IssuerKind::ClusterIssuer,
                name: "i".into()
            }
        );
        assert!(matches!(
            gate(&cr(GROUP, Some("Foo"), &[("Approved", "True", "")]), true),
            Gate::InvalidKind(_)
        ));
        let mut held = cr(
            GROUP,
            Some("Issuer"),
            &[("Approved", "True", ""), ("Ready", "False", "Pending")],
        );
        held.metadata.annotations =
            Some([(REQUEST_ID_ANNOTATION.to_string(), "5".to_string())].into());
        let mut interrupted = cr(GROUP, Some("Issuer"), &[("Approved", "True", "")]);
        interrupted.metadata.annotations =
            Some([(INTENT_ANNOTATION.to_string(), "op-1".to_string())].into());
        assert_eq!(
            gate(&interrupted, true),
            Gate::Recover {
                kind: IssuerKind::Issuer,
                name: "i".into(),
                op_id: "op-1".into()
            }
        );
        assert_eq!(
            gate(&held, true),
            Gate::Held {
                kind: IssuerKind::Issuer,
                name: "i".into(),
                request_id: 5
            }
        );
    }

    #[test]
    fn the_approval_gate_runs_before_any_annotation_is_honoured() {
        let ids = Some([(REQUEST_ID_ANNOTATION.to_string(), "5".to_string())].into());
        let mut unapproved = cr(GROUP, Some("Issuer"), &[("Ready", "False", "Pending")]);
        unapproved.metadata.annotations = ids.clone();
        assert_eq!(gate(&unapproved, true), Gate::AwaitingApproval);
        let mut denied = cr(GROUP, Some("Issuer"), &[("Denied", "True", "x")]);
        denied.metadata.annotations = ids;
        assert_eq!(gate(&denied, true), Gate::Denied);
    }
}
