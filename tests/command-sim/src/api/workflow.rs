//! Following up a held request, as Keyfactor's clients do:
//! `GET /Workflow/Certificates/{id}` (request details: path and field names from Keyfactor's Go
//! SDK model `CertificatesCertRequestResponseModel`), `GET /Certificates?pq.queryString=CertRequestId -eq N`
//! and `POST /Certificates/Download` (path, query and body from Keyfactor's own Go client).
//! **[sim]** `State` numbers and `StateString` texts are the simulator's choice (unverified).

use actix_web::http::StatusCode;
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use super::{ok, Answer};
use crate::errors::{codes, ApiError};
use crate::state::{AppState, EnrollmentRecord};

fn state_of(disposition: &str) -> (i64, &'static str) {
    match disposition {
        "ISSUED" => (2, "Issued"),
        "DENIED" => (3, "Denied"),
        "FAILED" => (4, "Failed"),
        "EXTERNAL VALIDATION" => (5, "External Validation"),
        _ => (1, "Pending"),
    }
}

/// The first enrollment Command has finished (see [`EnrollmentRecord::is_complete`]) for which
/// `f` holds: one still under way cannot be found yet.
fn find(state: &AppState, f: impl Fn(&EnrollmentRecord) -> bool) -> Option<EnrollmentRecord> {
    state
        .logs()
        .enrollments
        .iter()
        .find(|r| r.is_complete() && f(r))
        .cloned()
}

fn not_found(what: String) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: codes::INTERNAL,
        message: what,
    }
}

/// `GET /Workflow/Certificates/{id}`.
pub fn request_details(state: &AppState, id: i64) -> Answer {
    let r = find(state, |r| r.request_id == id)
        .ok_or_else(|| not_found(format!("Certificate request with ID {id} was not found.")))?;
    let (st, text) = state_of(&r.disposition);
    let cn = r.subject_cn.clone().unwrap_or_default();
    ok(&json!({
        "Id": r.request_id,
        "CARequestId": r.request_id.to_string(),
        "CommonName": cn,
        "DistinguishedName": format!("CN={cn}"),
        "SubmissionDate": r.time,
        "CertificateAuthority": r.certificate_authority,
        "Template": r.template,
        "Requester": r.requester,
        "State": st,
        "StateString": text,
        "Metadata": r.metadata,
        "DenialComment": if r.disposition == "DENIED" { Some("Denied by a Command approver") } else { None },
        "KeyLength": null,
        "SANs": [],
        "CertStores": [],
        "Curve": null,
    }))
}

/// `GET /Certificates?pq.queryString=CertRequestId -eq N` or `<MetadataField> -eq "v"`.
pub fn query(state: &AppState, query_string: &str) -> Answer {
    let pairs = actix_web::web::Query::<Vec<(String, String)>>::from_query(query_string)
        .map(|q| q.into_inner())
        .unwrap_or_default();
    let q = pairs
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("pq.queryString"))
        .map(|(_, v)| v)
        .unwrap_or_default();
    let q = q.trim();
    let by_request = q
        .strip_prefix("CertRequestId -eq ")
        .and_then(|v| v.trim().parse::<i64>().ok());
    // `<MetadataField> -eq "<value>"` (Keyfactor's query language allows metadata fields).
    let by_metadata = q.split_once(" -eq ").and_then(|(field, v)| {
        let v = v.trim().strip_prefix('"')?.strip_suffix('"')?;
        Some((field.trim().to_string(), v.to_string()))
    });
    if by_request.is_none() && by_metadata.is_none() {
        return Err(ApiError::bad_request(
            codes::QUERY_INVALID,
            format!("Unsupported certificate query '{q}'."),
        ));
    }
    let found: Vec<_> = state
        .logs()
        .enrollments
        .iter()
        // Only what Command has finished: an enrollment still under way is not found yet.
        .filter(|r| r.keyfactor_id > 0 && r.certificate.is_some() && r.is_complete())
        .filter(|r| match (&by_request, &by_metadata) {
            (Some(id), _) => r.request_id == *id,
            (None, Some((field, value))) => r.metadata.get(field) == Some(value),
            (None, None) => false,
        })
        .map(|r| {
            json!({
                "Id": r.keyfactor_id,
                "Thumbprint": r.thumbprint,
                "SerialNumber": r.serial_number,
                "IssuedCN": r.subject_cn,
                "IssuerDN": state.pki.issuer_dn,
                "CertRequestId": r.request_id,
                "ImportDate": r.time,
            })
        })
        .collect();
    ok(&found)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DownloadBody {
    #[serde(rename = "CertID", default)]
    cert_id: i64,
    #[serde(default)]
    include_chain: bool,
}

/// `POST /Certificates/Download` with `x-certificateformat: PEM`: `{"Content": base64(PEM)}`,
/// leaf first.
pub fn download(state: &AppState, body: &[u8]) -> Answer {
    let b: DownloadBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            codes::BODY_INVALID,
            format!("The request body is invalid: {e}"),
        )
    })?;
    let r = find(state, |r| b.cert_id > 0 && r.keyfactor_id == b.cert_id)
        .ok_or_else(|| not_found(format!("Certificate with ID {} was not found.", b.cert_id)))?;
    let mut pem = r.certificate.clone().unwrap_or_default();
    if b.include_chain {
        pem.push_str(&state.pki.issuing_pem);
        pem.push_str(&state.pki.root_pem);
    }
    ok(&json!({"Content": base64::engine::general_purpose::STANDARD.encode(pem)}))
}
