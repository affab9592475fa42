//! The Keyfactor API under the base path: routing, the checks every endpoint shares (auth,
//! headers, permission) and the per-endpoint handlers.
//!
//! Order of checks for an API request: unknown path → 404, wrong method → 405, credentials →
//! 401, common headers → 400, permission → 403, then the endpoint. Fault injection (latency,
//! 5xx, resets) belongs in [`handle`] before the endpoint runs.

pub mod enrollment;
pub mod metadata;
pub mod patterns;
pub mod query;
pub mod status;
pub mod workflow;

use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;

use crate::auth::{self, Identity};
use crate::config::{PERM_ENROLL_CSR, PERM_METADATA_READ, PERM_PATTERN_READ};
use crate::errors::{codes, command_json, empty_response, ApiError};
use crate::faults::Rule;
use crate::state::AppState;

/// What an endpoint handler returns on success: status and serialized JSON body.
pub type Answer = Result<(StatusCode, String), ApiError>;

/// A `200` answer with `value` serialized the way Command does (field order kept).
pub fn ok(value: &impl Serialize) -> Answer {
    Ok((StatusCode::OK, command_json(value)))
}

/// The endpoints the simulator implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /Status/Endpoints`.
    StatusEndpoints,
    /// `GET /MetadataFields`.
    MetadataFields,
    /// `GET /EnrollmentPatterns` (25.1 only).
    EnrollmentPatterns,
    /// `POST /Enrollment/CSR`.
    EnrollmentCsr,
    /// `GET /Workflow/Certificates/{id}`: follow-up of a held request.
    WorkflowCertificate,
    /// `GET /Certificates` (only `pq.queryString=CertRequestId -eq N`).
    CertificatesQuery,
    /// `POST /Certificates/Download`.
    CertificatesDownload,
}

impl Endpoint {
    /// Every endpoint, in the order `Status/Endpoints` lists them.
    pub const ALL: [Endpoint; 7] = [
        Endpoint::StatusEndpoints,
        Endpoint::MetadataFields,
        Endpoint::EnrollmentCsr,
        Endpoint::EnrollmentPatterns,
        Endpoint::WorkflowCertificate,
        Endpoint::CertificatesQuery,
        Endpoint::CertificatesDownload,
    ];

    /// HTTP method of the endpoint.
    pub fn method(self) -> Method {
        match self {
            Endpoint::EnrollmentCsr | Endpoint::CertificatesDownload => Method::POST,
            _ => Method::GET,
        }
    }

    /// Path below the base path.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::StatusEndpoints => "/Status/Endpoints",
            Endpoint::MetadataFields => "/MetadataFields",
            Endpoint::EnrollmentPatterns => "/EnrollmentPatterns",
            Endpoint::EnrollmentCsr => "/Enrollment/CSR",
            Endpoint::WorkflowCertificate => "/Workflow/Certificates/{id}",
            Endpoint::CertificatesQuery => "/Certificates",
            Endpoint::CertificatesDownload => "/Certificates/Download",
        }
    }

    /// Permission needed; `None` = any role.
    pub fn permission(self) -> Option<&'static str> {
        match self {
            Endpoint::StatusEndpoints => None,
            Endpoint::MetadataFields => Some(PERM_METADATA_READ),
            Endpoint::EnrollmentPatterns => Some(PERM_PATTERN_READ),
            // [sim] follow-up calls need the enrollment permission (Command's own is unverified).
            Endpoint::EnrollmentCsr
            | Endpoint::WorkflowCertificate
            | Endpoint::CertificatesQuery
            | Endpoint::CertificatesDownload => Some(PERM_ENROLL_CSR),
        }
    }

    /// Endpoints present in the emulated version.
    pub fn available(state: &AppState) -> impl Iterator<Item = Endpoint> + '_ {
        Endpoint::ALL
            .into_iter()
            .filter(|e| *e != Endpoint::EnrollmentPatterns || state.config.version.has_patterns())
    }
}

/// Strips the base path (case-insensitively); `None` when the path is outside it.
pub fn strip_base<'a>(path: &'a str, base: &str) -> Option<&'a str> {
    let rest = path.strip_prefix('/')?;
    let head = rest.get(..base.len())?;
    if !head.eq_ignore_ascii_case(base) {
        return None;
    }
    let tail = &rest[base.len()..];
    if tail.is_empty() || tail.starts_with('/') {
        Some(tail)
    } else {
        None
    }
}

enum RouteMatch {
    Found(Endpoint),
    WrongMethod,
    NotFound,
}

fn route(state: &AppState, method: &Method, sub_path: &str) -> RouteMatch {
    let trimmed = sub_path.trim_end_matches('/');
    let mut path_known = false;
    for endpoint in Endpoint::available(state) {
        let matches = match endpoint {
            Endpoint::WorkflowCertificate => workflow_id(trimmed).is_some(),
            _ => endpoint.path().eq_ignore_ascii_case(trimmed),
        };
        if matches {
            if endpoint.method() == *method {
                return RouteMatch::Found(endpoint);
            }
            path_known = true;
        }
    }
    if path_known {
        RouteMatch::WrongMethod
    } else {
        RouteMatch::NotFound
    }
}

/// The `{id}` of `/Workflow/Certificates/{id}`.
fn workflow_id(path: &str) -> Option<i64> {
    let prefix = "/workflow/certificates/";
    let head = path.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    path[prefix.len()..].parse().ok()
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn check_headers(req: &HttpRequest, endpoint: Endpoint) -> Result<(), ApiError> {
    match header(req, "x-keyfactor-requested-with").map(str::trim) {
        Some(v) if v.eq_ignore_ascii_case("APIClient") || v.eq_ignore_ascii_case("XMLHttpRequest") => {}
        Some(v) => {
            return Err(ApiError::bad_request(
                codes::REQUESTED_WITH_MISSING,
                format!("The x-keyfactor-requested-with header value '{v}' is not valid; use APIClient or XMLHttpRequest."),
            ))
        }
        None => {
            return Err(ApiError::bad_request(
                codes::REQUESTED_WITH_MISSING,
                "The x-keyfactor-requested-with header is required.",
            ))
        }
    }
    match header(req, "x-keyfactor-api-version").map(str::trim) {
        None | Some("1") | Some("1.0") => {}
        Some(v) => {
            return Err(ApiError::bad_request(
                codes::API_VERSION_UNSUPPORTED,
                format!("The API version '{v}' is not supported for this endpoint."),
            ))
        }
    }
    if endpoint.method() == Method::POST {
        let content_type = header(req, "content-type").unwrap_or_default();
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let json = mime == "application/json"
            || mime == "text/json"
            || (mime.starts_with("application/") && mime.ends_with("+json"));
        if !json {
            return Err(ApiError {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code: codes::CONTENT_TYPE_UNSUPPORTED,
                message: format!(
                    "The content type '{content_type}' is not supported; send application/json."
                ),
            });
        }
    }
    if endpoint == Endpoint::EnrollmentCsr || endpoint == Endpoint::CertificatesDownload {
        match header(req, "x-certificateformat").map(str::trim) {
            Some(v) if v.eq_ignore_ascii_case("PEM") => {}
            Some(v) => {
                return Err(ApiError::bad_request(
                    codes::CERT_FORMAT_UNSUPPORTED,
                    format!(
                        "The certificate format '{v}' is not supported by this simulator; use PEM."
                    ),
                ))
            }
            None => {
                return Err(ApiError::bad_request(
                    codes::CERT_FORMAT_UNSUPPORTED,
                    "The x-certificateformat header is required.",
                ))
            }
        }
    }
    Ok(())
}

/// Handles one request whose path is `sub_path` below the base path; `fault` is the fault rule
/// that fired for it, if any (the enrollment endpoint records it).
pub fn handle(
    state: &AppState,
    req: &HttpRequest,
    body: &[u8],
    sub_path: &str,
    fault: Option<&Rule>,
) -> HttpResponse {
    let version = state.product_version.as_str();
    let endpoint = match route(state, req.method(), sub_path) {
        RouteMatch::Found(e) => e,
        RouteMatch::WrongMethod => return empty_response(StatusCode::METHOD_NOT_ALLOWED, version),
        RouteMatch::NotFound => return empty_response(StatusCode::NOT_FOUND, version),
    };
    let builtin_issuer = crate::idp::issuer(state);
    let bearer_ctx = auth::BearerContext {
        tokens: &state.tokens,
        builtin_issuer: &builtin_issuer,
    };
    let identity = match auth::authenticate(req.headers(), &state.config, bearer_ctx) {
        Ok(identity) => identity,
        Err(e) => {
            tracing::info!(reason = %e, "authentication failed");
            let challenge = if e.is_bearer() {
                "Bearer error=\"invalid_token\""
            } else {
                "Basic"
            };
            let mut resp = empty_response(StatusCode::UNAUTHORIZED, version);
            resp.headers_mut().insert(
                actix_web::http::header::WWW_AUTHENTICATE,
                actix_web::http::header::HeaderValue::from_static(challenge),
            );
            return resp;
        }
    };
    let answer = check_headers(req, endpoint)
        .and_then(|()| check_permission(&identity, endpoint))
        .and_then(|()| run_endpoint(state, req, body, endpoint, &identity, fault));
    match answer {
        Ok((status, body)) => HttpResponse::build(status)
            .insert_header(("Content-Type", "application/json; charset=utf-8"))
            .insert_header(("x-keyfactor-product-version", version))
            .body(body),
        Err(e) => e.to_response(version),
    }
}

fn check_permission(identity: &Identity, endpoint: Endpoint) -> Result<(), ApiError> {
    if identity.has_permission(endpoint.permission()) {
        Ok(())
    } else {
        Err(ApiError::permission_denied(&identity.name))
    }
}

fn run_endpoint(
    state: &AppState,
    req: &HttpRequest,
    body: &[u8],
    endpoint: Endpoint,
    identity: &Identity,
    fault: Option<&Rule>,
) -> Answer {
    match endpoint {
        Endpoint::StatusEndpoints => status::endpoints(state),
        Endpoint::MetadataFields => metadata::list(state, req.query_string()),
        Endpoint::EnrollmentPatterns => patterns::list(state, req.query_string()),
        Endpoint::EnrollmentCsr => enrollment::enroll(state, body, identity, fault),
        Endpoint::WorkflowCertificate => {
            let id = req.path().trim_end_matches('/').rsplit('/').next();
            workflow::request_details(state, id.and_then(|s| s.parse().ok()).unwrap_or(0))
        }
        Endpoint::CertificatesQuery => workflow::query(state, req.query_string()),
        Endpoint::CertificatesDownload => workflow::download(state, body),
    }
}

#[cfg(test)]
mod tests {
    use super::strip_base;

    #[test]
    fn base_path_is_case_insensitive() {
        assert_eq!(
            strip_base("/keyfactorapi/Status/Endpoints", "KeyfactorAPI"),
            Some("/Status/Endpoints")
        );
        assert_eq!(strip_base("/KeyfactorAPIx/Status", "KeyfactorAPI"), None);
        assert_eq!(strip_base("/Other/Status", "KeyfactorAPI"), None);
        assert_eq!(strip_base("/KeyfactorAPI", "KeyfactorAPI"), Some(""));
    }
}
