//! Command's JSON, field names exactly as command-api.md §5 writes them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The seven metadata fields whose presence turns SupportsMetadata on (product.md §11).
pub const PREDEFINED_METADATA_FIELDS: [&str; 7] = [
    "Controller-Namespace",
    "Controller-Kind",
    "Controller-Resource-Group-Name",
    "Issuer-Name",
    "Issuer-Namespace",
    "Controller-Reconcile-Id",
    "Certificate-Signing-Request-Namespace",
];

/// One metadata field definition from `GET /MetadataFields`; we only need the name.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct MetadataField {
    /// Field name, compared case-sensitively as upstream.
    #[serde(rename = "Name", default)]
    pub name: String,
}

/// One enrollment pattern from `GET /EnrollmentPatterns`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct EnrollmentPattern {
    /// Pattern id sent as EnrollmentPatternId.
    #[serde(rename = "Id")]
    pub id: i32,
    /// Pattern name, for logs.
    #[serde(rename = "Name", default)]
    pub name: String,
}

/// `GET /Workflow/Certificates/{id}` (Keyfactor's `CertificatesCertRequestResponseModel`; the
/// `StateString` values are unverified, so only denial words are acted on).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct WorkflowRequest {
    /// Request id.
    #[serde(rename = "Id")]
    pub id: i64,
    /// Human-readable state (`Pending`, `Issued`, `Denied` …).
    #[serde(rename = "StateString")]
    pub state_string: Option<String>,
    /// Approver's comment on a denial.
    #[serde(rename = "DenialComment")]
    pub denial_comment: Option<String>,
}

/// One certificate of `GET /Certificates` (only its id is used).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct CertificateSummary {
    /// Command certificate id, for `POST /Certificates/Download`.
    #[serde(rename = "Id")]
    pub id: i64,
}

/// Body of `POST /Enrollment/CSR`; every key is always sent, absent values as null.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EnrollCsrRequest {
    /// PEM text of the CSR exactly as stored.
    #[serde(rename = "CSR")]
    pub csr: String,
    /// `host\logical`, `logical` or empty.
    #[serde(rename = "CertificateAuthority")]
    pub certificate_authority: String,
    /// Enrollment pattern id.
    #[serde(rename = "EnrollmentPatternId")]
    pub enrollment_pattern_id: Option<i32>,
    /// Always true: we want the chain.
    #[serde(rename = "IncludeChain")]
    pub include_chain: bool,
    /// Predefined and custom metadata, string values.
    #[serde(rename = "Metadata")]
    pub metadata: BTreeMap<String, String>,
    /// Owner role id.
    #[serde(rename = "OwnerRoleId")]
    pub owner_role_id: Option<i32>,
    /// Owner role name (null when an id is sent).
    #[serde(rename = "OwnerRoleName")]
    pub owner_role_name: Option<String>,
    /// Extra SANs: always empty, SANs come from the CSR.
    #[serde(rename = "SANs")]
    pub sans: BTreeMap<String, Vec<String>>,
    /// Template short name.
    #[serde(rename = "Template")]
    pub template: Option<String>,
    /// RFC 3339 time of the request.
    #[serde(rename = "Timestamp")]
    pub timestamp: String,
}

/// Response of `POST /Enrollment/CSR`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct EnrollCsrResponse {
    /// Present on every 200 from Command; absent or null decodes as empty, so the decision
    /// (`request::outcome_from_response`) names the missing fields instead of a decode error
    /// that would be retried as a new enrollment.
    #[serde(
        rename = "CertificateInformation",
        default,
        deserialize_with = "null_as_default"
    )]
    pub certificate_information: CertificateInformation,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The part of CertificateInformation the issuer acts on.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct CertificateInformation {
    /// Hex serial.
    #[serde(rename = "SerialNumber")]
    pub serial_number: Option<String>,
    /// Command certificate id (0 when absent or null).
    #[serde(rename = "KeyfactorID", deserialize_with = "null_as_default")]
    pub keyfactor_id: i64,
    /// Command request id, to follow a pending request (0 when absent or null).
    #[serde(rename = "KeyfactorRequestId", deserialize_with = "null_as_default")]
    pub keyfactor_request_id: i64,
    /// PEM strings, leaf first.
    #[serde(rename = "Certificates")]
    pub certificates: Option<Vec<String>>,
    /// ISSUED, PENDING, EXTERNAL VALIDATION, FAILED, DENIED …
    #[serde(rename = "RequestDisposition")]
    pub request_disposition: Option<String>,
    /// Human-readable outcome.
    #[serde(rename = "DispositionMessage")]
    pub disposition_message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_sends_every_key_with_nulls() {
        let r = EnrollCsrRequest {
            csr: "x".into(),
            certificate_authority: String::new(),
            enrollment_pattern_id: Some(1),
            include_chain: true,
            metadata: BTreeMap::new(),
            owner_role_id: None,
            owner_role_name: None,
            sans: BTreeMap::new(),
            template: None,
            timestamp: "t".into(),
        };
        let v = serde_json::to_value(&r).unwrap();
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "CSR",
                "CertificateAuthority",
                "EnrollmentPatternId",
                "IncludeChain",
                "Metadata",
                "OwnerRoleId",
                "OwnerRoleName",
                "SANs",
                "Template",
                "Timestamp"
            ]
        );
        assert!(v["Template"].is_null() && v["OwnerRoleId"].is_null());
    }

    #[test]
    fn response_tolerates_nulls_and_unknown_fields() {
        let r: EnrollCsrResponse = serde_json::from_str(r#"{"CertificateInformation":{"Certificates":null,"KeyfactorRequestId":5,"RequestDisposition":"PENDING","Extra":1},"Metadata":{}}"#).unwrap();
        assert_eq!(r.certificate_information.keyfactor_request_id, 5);
        assert_eq!(r.certificate_information.certificates, None);
    }

    #[test]
    fn response_without_certificate_information_decodes_as_empty() {
        for body in [
            r#"{}"#,
            r#"{"CertificateInformation":null}"#,
            r#"{"Metadata":{}}"#,
            r#"{"CertificateInformation":{"KeyfactorID":null,"KeyfactorRequestId":null}}"#,
        ] {
            let r: EnrollCsrResponse = serde_json::from_str(body).unwrap();
            assert_eq!(r.certificate_information, CertificateInformation::default());
        }
        assert!(serde_json::from_str::<EnrollCsrResponse>("<html>").is_err());
    }
}
