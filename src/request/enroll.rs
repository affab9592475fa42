//! The enrollment request body and the failure hints of product.md §10.

use std::collections::BTreeMap;

use crate::api::IssuerKind;
use crate::command::{CommandError, EnrollCsrRequest, EnrollmentPattern};
use crate::config::SignConfig;
use crate::GROUP;

/// Who is enrolling, for the predefined metadata fields.
#[derive(Debug, Clone)]
pub struct MetadataContext<'a> {
    /// The controller's cluster resource namespace.
    pub controller_namespace: &'a str,
    /// Issuer kind.
    pub kind: IssuerKind,
    /// issuerRef.name.
    pub issuer_name: &'a str,
    /// The CertificateRequest's namespace.
    pub request_namespace: &'a str,
    /// Operation id of this enrollment.
    pub op_id: &'a str,
}

/// The seven predefined fields as decided in design.md §3.7: Controller-Kind `Issuer` /
/// `ClusterIssuer`, Issuer-Namespace empty for a ClusterIssuer, our op id as reconcile id.
pub fn predefined_metadata(ctx: &MetadataContext<'_>) -> BTreeMap<String, String> {
    let issuer_ns = match ctx.kind {
        IssuerKind::Issuer => ctx.request_namespace,
        IssuerKind::ClusterIssuer => "",
    };
    [
        ("Controller-Namespace", ctx.controller_namespace),
        ("Controller-Kind", ctx.kind.as_str()),
        ("Controller-Resource-Group-Name", GROUP),
        ("Issuer-Name", ctx.issuer_name),
        ("Issuer-Namespace", issuer_ns),
        ("Controller-Reconcile-Id", ctx.op_id),
        (
            "Certificate-Signing-Request-Namespace",
            ctx.request_namespace,
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Assembles `POST /Enrollment/CSR`; custom metadata overwrites predefined on a name clash.
pub fn enrollment_body(
    csr_pem: String,
    sign: &SignConfig,
    pattern_id: Option<i32>,
    predefined: Option<BTreeMap<String, String>>,
    timestamp: String,
) -> EnrollCsrRequest {
    let mut metadata = predefined.unwrap_or_default();
    metadata.extend(sign.custom_metadata.clone());
    EnrollCsrRequest {
        csr: csr_pem,
        certificate_authority: sign.certificate_authority(),
        enrollment_pattern_id: pattern_id,
        include_chain: true,
        metadata,
        owner_role_id: sign.owner_role_id,
        owner_role_name: if sign.owner_role_id.is_some() {
            None
        } else {
            sign.owner_role_name.clone()
        },
        sans: BTreeMap::new(),
        template: sign.template.clone(),
        timestamp,
    }
}

/// `command enrollment failure: <hints>: <status>` (product.md §10.6). An answer that is not
/// Command's JSON gets no configuration hints (they would point at the wrong thing): it says
/// what answered instead.
pub fn enrollment_failure(
    sign: &SignConfig,
    pattern_id: Option<i32>,
    err: &CommandError,
) -> String {
    if let CommandError::Decode(_) = err {
        return format!("command enrollment failure: the answer is not Command's JSON enrollment response (is a proxy, gateway or login page answering for Command?): {err}");
    }
    let ca = sign.ca_logical_name.as_deref();
    let t = sign.template.as_deref().unwrap_or("");
    let mut hints: Vec<String> = Vec::new();
    match (pattern_id, ca, sign.template.is_some()) {
        (Some(id), None, _) => hints.push(format!("Ensure that enrollment pattern ID {id} has CSR Enrollment enabled and the security role is configured to use this enrollment pattern.")),
        (Some(id), Some(ca), false) => hints.push(format!("Ensure that enrollment pattern ID {id} has CSR Enrollment enabled, is configured to use certificate authority '{ca}', and the security role is configured to use this enrollment pattern.")),
        (Some(id), Some(ca), true) => hints.push(format!("Verify that certificate template '{t}' exists in Command and belongs to certificate authority '{ca}'. Verify the configuration for Enrollment Pattern ID {id} in Keyfactor Command, and ensure CSR Enrollment is enabled.")),
        (None, ca, _) => hints.push(format!("Verify that certificate template '{t}' exists in Command and belongs to certificate authority '{}'. If applicable, verify the Enrollment Pattern configuration in Keyfactor Command, and ensure CSR Enrollment is enabled.", ca.unwrap_or(""))),
    }
    if sign.owner_role_id.is_some() || sign.owner_role_name.is_some() {
        hints.push(
            "Verify the issuer's security role is assigned to the configured owner role.".into(),
        );
    }
    if !sign.custom_metadata.is_empty() {
        hints.push("Verify that the metadata fields provided exist in Command.".into());
    }
    if let CommandError::Status { body, .. } = err {
        if !body.is_empty() {
            hints.push(format!("Error response from Command: {body}"));
        }
    }
    format!("command enrollment failure: {}: {err}", hints.join(" "))
}

/// Exactly one pattern of that name is required (product.md §10.1 step 4); the error is the
/// request's Pending message and whether retrying can help (false for a missing pattern).
pub fn pick_pattern(
    name: &str,
    found: Result<Vec<EnrollmentPattern>, CommandError>,
) -> Result<i32, (String, bool)> {
    let prefix = "failed to sign: enrollment pattern failure";
    match found {
        Ok(p) if p.len() == 1 => Ok(p[0].id),
        Ok(p) if p.is_empty() => Err((
            format!("{prefix}: enrollment pattern not found: {name}"),
            true,
        )),
        Ok(_) => Err((
            format!("{prefix}: multiple enrollment patterns found: {name}"),
            true,
        )),
        Err(e) => {
            let details = match &e {
                CommandError::Status { body, .. } => body.clone(),
                other => other.to_string(),
            };
            let permanent = !e.is_transient();
            Err((format!("{prefix}: error fetching enrollment patterns from Command: {e}. Details: {details}: {e}"), permanent))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pattern_lookup_outcomes() {
        let p = |id| EnrollmentPattern {
            id,
            name: "P".into(),
        };
        assert_eq!(pick_pattern("P", Ok(vec![p(3)])), Ok(3));
        assert_eq!(
            pick_pattern("P", Ok(vec![])).unwrap_err().0,
            "failed to sign: enrollment pattern failure: enrollment pattern not found: P"
        );
        assert_eq!(
            pick_pattern("P", Ok(vec![p(1), p(2)])).unwrap_err().0,
            "failed to sign: enrollment pattern failure: multiple enrollment patterns found: P"
        );
        let e = CommandError::Status {
            status: 403,
            reason: "Forbidden".into(),
            body: "{}".into(),
            retry_after: None,
        };
        assert_eq!(pick_pattern("P", Err(e)).unwrap_err().0, "failed to sign: enrollment pattern failure: error fetching enrollment patterns from Command: 403 Forbidden. Details: {}: 403 Forbidden");
    }

    use super::*;

    fn sign() -> SignConfig {
        SignConfig {
            template: Some("Web".into()),
            ca_logical_name: Some("Sub-CA".into()),
            ..Default::default()
        }
    }

    #[test]
    fn template_hint_matches_product_example() {
        let err = CommandError::Status {
            status: 400,
            reason: "Bad Request".into(),
            body: r#"{"ErrorCode":"0x1","Message":"m"}"#.into(),
            retry_after: None,
        };
        assert_eq!(
            enrollment_failure(&sign(), None, &err),
            r#"command enrollment failure: Verify that certificate template 'Web' exists in Command and belongs to certificate authority 'Sub-CA'. If applicable, verify the Enrollment Pattern configuration in Keyfactor Command, and ensure CSR Enrollment is enabled. Error response from Command: {"ErrorCode":"0x1","Message":"m"}: 400 Bad Request"#
        );
    }

    #[test]
    fn non_json_answer_names_the_answer_not_the_template() {
        let err = CommandError::Decode("expected value at line 1 column 1".into());
        assert_eq!(
            enrollment_failure(&sign(), None, &err),
            "command enrollment failure: the answer is not Command's JSON enrollment response (is a proxy, gateway or login page answering for Command?): failed to decode response from Command: expected value at line 1 column 1"
        );
    }

    #[test]
    fn pattern_hints_and_extras() {
        let mut s = sign();
        s.template = None;
        s.ca_logical_name = None;
        s.owner_role_name = Some("R".into());
        s.custom_metadata.insert("Team".into(), "t".into());
        let err = CommandError::Status {
            status: 400,
            reason: "Bad Request".into(),
            body: String::new(),
            retry_after: None,
        };
        assert_eq!(
            enrollment_failure(&s, Some(7), &err),
            "command enrollment failure: Ensure that enrollment pattern ID 7 has CSR Enrollment enabled and the security role is configured to use this enrollment pattern. Verify the issuer's security role is assigned to the configured owner role. Verify that the metadata fields provided exist in Command.: 400 Bad Request"
        );
    }

    #[test]
    fn metadata_decisions_and_custom_override() {
        let ctx = MetadataContext {
            controller_namespace: "sys",
            kind: IssuerKind::ClusterIssuer,
            issuer_name: "ci",
            request_namespace: "team",
            op_id: "op-1",
        };
        let m = predefined_metadata(&ctx);
        assert_eq!(m["Controller-Kind"], "ClusterIssuer");
        assert_eq!(m["Issuer-Namespace"], "");
        assert_eq!(m["Controller-Reconcile-Id"], "op-1");
        let mut s = sign();
        s.custom_metadata
            .insert("Issuer-Name".into(), "custom".into());
        let body = enrollment_body("csr".into(), &s, None, Some(m), "t".into());
        assert_eq!(body.metadata["Issuer-Name"], "custom");
        assert_eq!(body.certificate_authority, "Sub-CA");
        assert_eq!(body.template.as_deref(), Some("Web"));
    }
}
