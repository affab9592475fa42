//! `POST /Enrollment/CSR` (command-api.md §5.4): validates the request the way Command does for
//! the emulated version, records it, and answers according to the template's/pattern's mode.

use std::collections::BTreeMap;
use std::net::IpAddr;

use rcgen::SanType;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{ok, Answer};
use crate::auth::Identity;
use crate::config::{Ca, Config, EmulatedVersion, EnrollmentPattern, Mode, Role, Template};
use crate::errors::{codes, ApiError};
use crate::faults::Rule;
use crate::pki::{self, hex_lower, CsrError, ParsedCsr};
use crate::state::{now_rfc3339, AppState, EnrollmentRecord};

/// `RequestDisposition` of an issued certificate.
pub const DISPOSITION_ISSUED: &str = "ISSUED";
/// `RequestDisposition` of a request held for approval.
pub const DISPOSITION_PENDING: &str = "PENDING";
/// `RequestDisposition` of a request the CA completes later.
pub const DISPOSITION_EXTERNAL: &str = "EXTERNAL VALIDATION";
/// `RequestDisposition` of a denied request.
pub const DISPOSITION_DENIED: &str = "DENIED";
/// Disposition recorded (not returned) for `fail-400` requests.
pub const DISPOSITION_FAILED: &str = "FAILED";

/// The request body; keys are matched case-insensitively like ASP.NET model binding, unknown
/// keys are ignored.
#[derive(Debug, Default, Deserialize)]
struct CsrRequest {
    #[serde(rename = "csr")]
    csr: Option<String>,
    #[serde(rename = "certificateauthority")]
    certificate_authority: Option<String>,
    #[serde(rename = "template")]
    template: Option<String>,
    #[serde(rename = "enrollmentpatternid")]
    enrollment_pattern_id: Option<i64>,
    #[serde(rename = "ownerroleid")]
    owner_role_id: Option<i64>,
    #[serde(rename = "ownerrolename")]
    owner_role_name: Option<String>,
    #[serde(rename = "includechain")]
    include_chain: Option<bool>,
    #[serde(rename = "metadata")]
    metadata: Option<Map<String, Value>>,
    #[serde(rename = "sans")]
    sans: Option<BTreeMap<String, Vec<String>>>,
    #[serde(rename = "timestamp")]
    timestamp: Option<String>,
}

/// Where a request goes after template/pattern/CA resolution.
struct Target<'a> {
    template: &'a Template,
    pattern: Option<&'a EnrollmentPattern>,
    ca: &'a Ca,
    mode: Mode,
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn parse_body(body: &[u8]) -> Result<CsrRequest, ApiError> {
    let invalid = |m: String| ApiError::bad_request(codes::BODY_INVALID, m);
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("The request body is not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(invalid("The request body must be a JSON object.".into()));
    };
    let lowered: Map<String, Value> = map
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let req: CsrRequest = serde_json::from_value(Value::Object(lowered))
        .map_err(|e| invalid(format!("The request body is not valid: {e}")))?;
    if let Some(ts) = non_empty(&req.timestamp) {
        if ts.parse::<jiff::Timestamp>().is_err() && ts.parse::<jiff::civil::DateTime>().is_err() {
            return Err(invalid(format!(
                "The Timestamp '{ts}' is not a valid date-time."
            )));
        }
    }
    Ok(req)
}

fn parse_csr(req: &CsrRequest) -> Result<ParsedCsr, ApiError> {
    let text = non_empty(&req.csr).ok_or_else(|| {
        ApiError::bad_request(
            codes::CSR_REQUIRED,
            "A certificate signing request (CSR) is required.",
        )
    })?;
    pki::decode_csr_text(text)
        .and_then(pki::parse_csr)
        .map_err(|e| match e {
            CsrError::Decode(m) => ApiError::bad_request(
                codes::CSR_INVALID,
                format!("The certificate signing request could not be parsed: {m}"),
            ),
            CsrError::Signature => ApiError::bad_request(
                codes::CSR_SIGNATURE_INVALID,
                "The certificate signing request signature is not valid.",
            ),
            CsrError::KeyType(m) => ApiError::bad_request(
                codes::KEY_TYPE_REJECTED,
                format!("The key type of the certificate signing request is not allowed: {m}"),
            ),
        })
}

fn find_template<'a>(config: &'a Config, name: &str) -> Result<&'a Template, ApiError> {
    config.template_by_name(name).ok_or_else(|| {
        ApiError::bad_request(
            codes::TEMPLATE_NOT_FOUND,
            format!("The certificate template '{name}' was not found."),
        )
    })
}

fn find_ca(config: &Config, reference: &str) -> Result<usize, ApiError> {
    config.resolve_ca(reference).ok_or_else(|| {
        ApiError::bad_request(
            codes::CA_NOT_FOUND,
            format!("The certificate authority '{reference}' was not found."),
        )
    })
}

fn require_template_on_ca(config: &Config, t: &Template, ca: usize) -> Result<(), ApiError> {
    if config.template_cas(t).contains(&ca) {
        Ok(())
    } else {
        let name = config.cas.get(ca).map(Ca::full_name).unwrap_or_default();
        Err(ApiError::bad_request(
            codes::TEMPLATE_NOT_ON_CA,
            format!(
                "The certificate template '{}' is not available on certificate authority '{name}'.",
                t.short_name
            ),
        ))
    }
}

fn ca_at(config: &Config, index: usize) -> Result<&Ca, ApiError> {
    config
        .cas
        .get(index)
        .ok_or_else(|| ApiError::internal("CA index out of range"))
}

/// Template-only enrollment (every version): template and CA required.
fn resolve_template<'a>(
    config: &'a Config,
    req: &CsrRequest,
    identity: &Identity,
    missing_code: &'static str,
) -> Result<Target<'a>, ApiError> {
    let name = non_empty(&req.template).ok_or_else(|| {
        let message = if missing_code == codes::TEMPLATE_REQUIRED {
            "A certificate template is required."
        } else {
            "Either a certificate template or an enrollment pattern is required."
        };
        ApiError::bad_request(missing_code, message)
    })?;
    let ca_ref = non_empty(&req.certificate_authority).ok_or_else(|| {
        ApiError::bad_request(codes::CA_REQUIRED, "A certificate authority is required.")
    })?;
    let template = find_template(config, name)?;
    let ca = find_ca(config, ca_ref)?;
    require_template_on_ca(config, template, ca)?;
    if !identity.role_allowed(&template.allowed_roles) {
        return Err(ApiError::bad_request(
            codes::REQUESTER_NOT_ALLOWED,
            format!(
                "User {} is not an allowed requester for certificate template '{}'.",
                identity.name, template.short_name
            ),
        ));
    }
    Ok(Target {
        template,
        pattern: None,
        ca: ca_at(config, ca)?,
        mode: template.mode,
    })
}

/// Pattern enrollment (25.1): CA optional unless the pattern's CA is standalone.
fn resolve_pattern<'a>(
    config: &'a Config,
    req: &CsrRequest,
    identity: &Identity,
    id: i64,
) -> Result<Target<'a>, ApiError> {
    let pattern = config.pattern_by_id(id).ok_or_else(|| {
        ApiError::bad_request(
            codes::PATTERN_NOT_FOUND,
            format!("The enrollment pattern with ID {id} was not found."),
        )
    })?;
    if !pattern.csr_enabled {
        return Err(ApiError::bad_request(
            codes::PATTERN_CSR_DISABLED,
            format!("The enrollment pattern with ID {id} does not allow CSR enrollment."),
        ));
    }
    if !identity.role_allowed(&pattern.allowed_roles) {
        return Err(ApiError::bad_request(
            codes::REQUESTER_NOT_ALLOWED,
            format!(
                "User {} is not an allowed requester for enrollment pattern ID {id}.",
                identity.name
            ),
        ));
    }
    let template = find_template(config, &pattern.template)?;
    if let Some(name) = non_empty(&req.template) {
        let requested = find_template(config, name)?;
        if requested.id != template.id {
            return Err(ApiError::bad_request(
                codes::TEMPLATE_NOT_IN_PATTERN,
                format!(
                    "The certificate template '{name}' does not belong to enrollment pattern ID {id}."
                ),
            ));
        }
    }
    let allowed = config.pattern_cas(pattern);
    let ca = match non_empty(&req.certificate_authority) {
        Some(reference) => {
            let ca = find_ca(config, reference)?;
            if !allowed.contains(&ca) {
                return Err(ApiError::bad_request(
                    codes::CA_NOT_ALLOWED,
                    format!(
                        "The certificate authority '{reference}' is not configured for enrollment pattern ID {id}."
                    ),
                ));
            }
            require_template_on_ca(config, template, ca)?;
            ca
        }
        None => {
            let ca = *allowed.first().ok_or_else(|| {
                ApiError::bad_request(
                    codes::CA_REQUIRED,
                    format!(
                        "No certificate authority is available for enrollment pattern ID {id}."
                    ),
                )
            })?;
            let chosen = ca_at(config, ca)?;
            if chosen.standalone {
                return Err(ApiError::bad_request(
                    codes::CA_REQUIRED_STANDALONE,
                    format!(
                        "Enrollment pattern ID {id} uses the standalone certificate authority '{}'; a certificate authority is required.",
                        chosen.full_name()
                    ),
                ));
            }
            ca
        }
    };
    Ok(Target {
        template,
        pattern: Some(pattern),
        ca: ca_at(config, ca)?,
        mode: pattern.mode.unwrap_or(template.mode),
    })
}

fn resolve<'a>(
    config: &'a Config,
    req: &CsrRequest,
    identity: &Identity,
) -> Result<Target<'a>, ApiError> {
    match config.version {
        // 24.4 has no patterns: model binding drops EnrollmentPatternId.
        EmulatedVersion::V24_4 => resolve_template(config, req, identity, codes::TEMPLATE_REQUIRED),
        EmulatedVersion::V25_1 => match req.enrollment_pattern_id.filter(|id| *id != 0) {
            Some(id) => resolve_pattern(config, req, identity, id),
            None => resolve_template(config, req, identity, codes::TEMPLATE_OR_PATTERN_REQUIRED),
        },
    }
}

fn check_owner_role<'a>(
    config: &'a Config,
    req: &CsrRequest,
    identity: &Identity,
) -> Result<Option<&'a Role>, ApiError> {
    let invalid = |m: String| ApiError::bad_request(codes::OWNER_ROLE_INVALID, m);
    let role = match (
        req.owner_role_id.filter(|id| *id != 0),
        non_empty(&req.owner_role_name),
    ) {
        (Some(id), _) => config
            .roles
            .iter()
            .find(|r| r.id == id)
            .ok_or_else(|| invalid(format!("The owner role with ID {id} was not found.")))?,
        (None, Some(name)) => config
            .role_by_name(name)
            .ok_or_else(|| invalid(format!("The owner role '{name}' was not found.")))?,
        (None, None) => return Ok(None),
    };
    match &identity.role {
        Some(mine) if mine.id == role.id => Ok(Some(role)),
        _ => Err(invalid(format!(
            "User {} is not a member of the owner role '{}'.",
            identity.name, role.name
        ))),
    }
}

fn check_metadata(config: &Config, req: &CsrRequest) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    let Some(metadata) = &req.metadata else {
        return Ok(out);
    };
    for (key, value) in metadata {
        let field = config
            .metadata_fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(key))
            .ok_or_else(|| {
                ApiError::bad_request(
                    codes::METADATA_UNKNOWN,
                    format!("The metadata field '{key}' does not exist."),
                )
            })?;
        let invalid = || {
            ApiError::bad_request(
                codes::METADATA_INVALID,
                format!(
                    "The value for metadata field '{}' is not valid.",
                    field.name
                ),
            )
        };
        let text = match value {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Array(_) | Value::Object(_) => return Err(invalid()),
        };
        if !text.is_empty() {
            let ok = match field.data_type {
                2 => text.trim().parse::<i64>().is_ok(),
                3 => {
                    text.parse::<jiff::Timestamp>().is_ok()
                        || text.parse::<jiff::civil::DateTime>().is_ok()
                        || text.parse::<jiff::civil::Date>().is_ok()
                }
                4 => text.eq_ignore_ascii_case("true") || text.eq_ignore_ascii_case("false"),
                _ => true,
            };
            if !ok {
                return Err(invalid());
            }
        }
        out.insert(field.name.clone(), text);
    }
    Ok(out)
}

fn check_sans(req: &CsrRequest) -> Result<Vec<SanType>, ApiError> {
    let mut out = Vec::new();
    let Some(sans) = &req.sans else {
        return Ok(out);
    };
    for (kind, values) in sans {
        for value in values {
            let bad = || {
                ApiError::bad_request(
                    codes::SANS_INVALID,
                    format!("The SAN '{value}' of type '{kind}' is not valid."),
                )
            };
            let san = match kind.to_ascii_lowercase().as_str() {
                "dns" => SanType::DnsName(value.as_str().try_into().map_err(|_| bad())?),
                "rfc822" => SanType::Rfc822Name(value.as_str().try_into().map_err(|_| bad())?),
                "uri" => SanType::URI(value.as_str().try_into().map_err(|_| bad())?),
                "ip" | "ip4" | "ip6" => {
                    let ip: IpAddr = value.trim().parse().map_err(|_| bad())?;
                    let family_ok = match kind.to_ascii_lowercase().as_str() {
                        "ip4" => ip.is_ipv4(),
                        "ip6" => ip.is_ipv6(),
                        _ => true,
                    };
                    if !family_ok {
                        return Err(bad());
                    }
                    SanType::IpAddress(ip)
                }
                other => {
                    return Err(ApiError::bad_request(
                        codes::SANS_INVALID,
                        format!("The SAN type '{other}' is not supported by the simulator."),
                    ))
                }
            };
            out.push(san);
        }
    }
    Ok(out)
}

fn chain(state: &AppState, leaf: &str, include_chain: bool) -> Vec<String> {
    let mut certs = vec![leaf.to_string()];
    if include_chain {
        certs.push(state.pki.issuing_pem.clone());
        certs.push(state.pki.root_pem.clone());
    }
    certs
}

fn disposition_message(disposition: &str) -> &'static str {
    match disposition {
        DISPOSITION_ISSUED => "The certificate was successfully issued.",
        DISPOSITION_PENDING => "The certificate request is pending approval.",
        DISPOSITION_EXTERNAL => {
            "The certificate request is being processed by the CA, and will be available at a later time."
        }
        DISPOSITION_DENIED => "The certificate request was denied.",
        _ => "The certificate request failed.",
    }
}

/// The §5.4 success body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EnrollmentResponse {
    certificate_information: CertificateInformation,
    metadata: BTreeMap<String, String>,
}

/// `CertificateInformation` of the §5.4 success body.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CertificateInformation {
    serial_number: Option<String>,
    #[serde(rename = "IssuerDN")]
    issuer_dn: Option<String>,
    thumbprint: Option<String>,
    #[serde(rename = "KeyfactorID")]
    keyfactor_id: i64,
    certificates: Vec<String>,
    workflow_instance_id: String,
    workflow_reference_id: i64,
    keyfactor_request_id: i64,
    request_disposition: String,
    disposition_message: String,
    enrollment_context: Option<BTreeMap<String, String>>,
}

/// Builds the §5.4 success body for a record.
pub fn response_for(state: &AppState, record: &EnrollmentRecord) -> EnrollmentResponse {
    let issued = record.disposition == DISPOSITION_ISSUED;
    let certificates = match &record.certificate {
        Some(leaf) if issued => chain(state, leaf, record.include_chain),
        _ => Vec::new(),
    };
    EnrollmentResponse {
        certificate_information: CertificateInformation {
            serial_number: record.serial_number.clone(),
            issuer_dn: issued.then(|| state.pki.issuer_dn.clone()),
            thumbprint: record.thumbprint.clone(),
            keyfactor_id: record.keyfactor_id,
            certificates,
            workflow_instance_id: uuid::Uuid::new_v4().to_string(),
            workflow_reference_id: 0,
            keyfactor_request_id: record.request_id,
            request_disposition: record.disposition.clone(),
            disposition_message: disposition_message(&record.disposition).to_string(),
            enrollment_context: None,
        },
        metadata: record.metadata.clone(),
    }
}

/// Handles `POST /Enrollment/CSR`; `fault` is the fault rule that fired for the call, if any
/// (noted on the record; a `complete_late` rule delays when the result becomes visible).
pub fn enroll(state: &AppState, body: &[u8], identity: &Identity, fault: Option<&Rule>) -> Answer {
    let config = &state.config;
    let req = parse_body(body)?;
    let csr = parse_csr(&req)?;
    let target = resolve(config, &req, identity)?;
    let owner = check_owner_role(config, &req, identity)?;
    let metadata = check_metadata(config, &req)?;
    let extra_sans = check_sans(&req)?;

    let disposition = match target.mode {
        m if m.issues() => DISPOSITION_ISSUED,
        Mode::Pending => DISPOSITION_PENDING,
        Mode::ExternalValidation => DISPOSITION_EXTERNAL,
        Mode::Deny => DISPOSITION_DENIED,
        _ => DISPOSITION_FAILED,
    };
    let issued = if target.mode.issues() {
        Some(
            state
                .pki
                .sign(&csr, &extra_sans)
                .map_err(|e| ApiError::internal(format!("Signing failed: {e}")))?,
        )
    } else {
        None
    };

    let mut record = EnrollmentRecord {
        request_id: 0,
        keyfactor_id: 0,
        csr_sha256: hex_lower(&Sha256::digest(&csr.der)),
        subject_cn: csr.subject_cn.clone(),
        template: target.template.short_name.clone(),
        enrollment_pattern_id: target.pattern.map(|p| p.id),
        certificate_authority: target.ca.full_name(),
        requested_certificate_authority: req.certificate_authority.clone(),
        owner_role: owner.map(|r| r.name.clone()),
        metadata,
        disposition: disposition.to_string(),
        requester: identity.name.clone(),
        time: now_rfc3339(),
        serial_number: issued.as_ref().map(|i| i.serial_hex.clone()),
        thumbprint: issued.as_ref().map(|i| i.thumbprint.clone()),
        certificate: issued.as_ref().map(|i| i.pem.clone()),
        include_chain: req.include_chain.unwrap_or(false),
        csr_der: csr.der.clone(),
        extra_sans,
        fault: fault.map(|r| r.kind.name().to_string()),
        completes_at: None,
        visible_at: None,
    };
    if let Some(after) = fault.and_then(Rule::completes_after) {
        record.visible_at = Some(std::time::Instant::now() + after);
        let span = jiff::SignedDuration::try_from(after).unwrap_or_default();
        record.completes_at = jiff::Timestamp::now()
            .checked_add(span)
            .ok()
            .map(|t| t.to_string());
    }
    {
        let mut logs = state.logs();
        record.request_id = logs.next_request_id();
        if issued.is_some() {
            record.keyfactor_id = logs.next_keyfactor_id();
        }
        logs.enrollments.push(record.clone());
    }

    if target.mode == Mode::Fail400 {
        return Err(ApiError::bad_request(
            codes::CA_REJECTED,
            format!(
                "The certificate authority '{}' rejected the request (simulated failure, request ID {}).",
                target.ca.full_name(),
                record.request_id
            ),
        ));
    }
    malformed(state, target.mode, response_for(state, &record))
}

/// The answer of the malformed modes (`missing-fields`, `empty-certificates`, `broken-chain`,
/// `reordered-chain`); other modes unchanged.
fn malformed(state: &AppState, mode: Mode, mut resp: EnrollmentResponse) -> Answer {
    let info = &mut resp.certificate_information;
    let leaf = info.certificates.first().cloned().unwrap_or_default();
    match mode {
        Mode::EmptyCertificates => info.certificates.clear(),
        Mode::BrokenChain => info.certificates = vec![leaf, state.pki.root_pem.clone()],
        Mode::ReorderedChain => {
            info.certificates = vec![
                state.pki.root_pem.clone(),
                leaf,
                state.pki.issuing_pem.clone(),
            ]
        }
        Mode::MissingFields => {
            let mut v = serde_json::to_value(&resp)
                .map_err(|e| ApiError::internal(format!("encoding the answer: {e}")))?;
            if let Some(info) = v
                .get_mut("CertificateInformation")
                .and_then(Value::as_object_mut)
            {
                for k in [
                    "Certificates",
                    "KeyfactorRequestId",
                    "RequestDisposition",
                    "DispositionMessage",
                ] {
                    info.remove(k);
                }
            }
            return ok(&v);
        }
        _ => {}
    }
    ok(&resp)
}

/// Outcome of an admin release of a held request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Issue the certificate.
    Issue,
    /// Deny the request.
    Deny,
}

/// Completes a `PENDING` / `EXTERNAL VALIDATION` request (admin API), returning the new record.
pub fn release(
    state: &AppState,
    request_id: i64,
    action: Release,
) -> Result<EnrollmentRecord, String> {
    let held = {
        let logs = state.logs();
        logs.enrollments
            .iter()
            .find(|r| r.request_id == request_id)
            .cloned()
            .ok_or_else(|| format!("no enrollment with request id {request_id}"))?
    };
    if held.disposition != DISPOSITION_PENDING && held.disposition != DISPOSITION_EXTERNAL {
        return Err(format!(
            "request {request_id} is {}, not held",
            held.disposition
        ));
    }
    let issued = match action {
        Release::Issue => {
            let csr = pki::parse_csr(held.csr_der.clone()).map_err(|e| e.to_string())?;
            Some(
                state
                    .pki
                    .sign(&csr, &held.extra_sans)
                    .map_err(|e| e.to_string())?,
            )
        }
        Release::Deny => None,
    };
    let mut logs = state.logs();
    let keyfactor_id = if issued.is_some() {
        logs.next_keyfactor_id()
    } else {
        0
    };
    let record = logs
        .enrollments
        .iter_mut()
        .find(|r| r.request_id == request_id)
        .ok_or_else(|| format!("request {request_id} disappeared (reset?)"))?;
    match issued {
        Some(cert) => {
            record.disposition = DISPOSITION_ISSUED.to_string();
            record.keyfactor_id = keyfactor_id;
            record.serial_number = Some(cert.serial_hex);
            record.thumbprint = Some(cert.thumbprint);
            record.certificate = Some(cert.pem);
        }
        None => record.disposition = DISPOSITION_DENIED.to_string(),
    }
    Ok(record.clone())
}
