//! Command-shaped error responses (command-api.md §4) and the stable error codes the simulator
//! uses for each cause.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde::Serialize;

/// Stable `ErrorCode` values. `0xA0140002` and `0xA0110004` are real Command codes; the
/// `0xA0B0xxxx` block is the simulator's own choice (Command's exact codes are unknown).
pub mod codes {
    /// Identity lacks the permission for the endpoint (real Command code, 403).
    pub const PERMISSION_DENIED: &str = "0xA0140002";
    /// CSR key type or size not allowed (real Command code for key policy violations).
    pub const KEY_TYPE_REJECTED: &str = "0xA0110004";
    /// `x-keyfactor-requested-with` missing or not `APIClient`/`XMLHttpRequest`.
    pub const REQUESTED_WITH_MISSING: &str = "0xA0B00001";
    /// `x-keyfactor-api-version` other than `1`/`1.0`.
    pub const API_VERSION_UNSUPPORTED: &str = "0xA0B00002";
    /// `x-certificateformat` missing or not `PEM`.
    pub const CERT_FORMAT_UNSUPPORTED: &str = "0xA0B00003";
    /// Request body is not a JSON object of the expected shape.
    pub const BODY_INVALID: &str = "0xA0B00004";
    /// `QueryString`, paging or sort parameters are invalid.
    pub const QUERY_INVALID: &str = "0xA0B00005";
    /// `Content-Type` of a POST is not JSON.
    pub const CONTENT_TYPE_UNSUPPORTED: &str = "0xA0B00006";
    /// `CSR` missing or empty.
    pub const CSR_REQUIRED: &str = "0xA0B00010";
    /// `CSR` is not base64/PEM PKCS#10.
    pub const CSR_INVALID: &str = "0xA0B00011";
    /// `CSR` signature does not verify.
    pub const CSR_SIGNATURE_INVALID: &str = "0xA0B00012";
    /// `Template` required (24.4, or 25.1 without a pattern).
    pub const TEMPLATE_REQUIRED: &str = "0xA0B00020";
    /// `Template` names no known template.
    pub const TEMPLATE_NOT_FOUND: &str = "0xA0B00021";
    /// The template is not published on the requested CA.
    pub const TEMPLATE_NOT_ON_CA: &str = "0xA0B00022";
    /// The template differs from the enrollment pattern's template.
    pub const TEMPLATE_NOT_IN_PATTERN: &str = "0xA0B00023";
    /// `CertificateAuthority` required but missing.
    pub const CA_REQUIRED: &str = "0xA0B00030";
    /// `CertificateAuthority` names no known CA.
    pub const CA_NOT_FOUND: &str = "0xA0B00031";
    /// The CA is not one the enrollment pattern may use.
    pub const CA_NOT_ALLOWED: &str = "0xA0B00032";
    /// The pattern's CA is standalone, so `CertificateAuthority` must be given.
    pub const CA_REQUIRED_STANDALONE: &str = "0xA0B00033";
    /// `EnrollmentPatternId` names no known pattern.
    pub const PATTERN_NOT_FOUND: &str = "0xA0B00040";
    /// The pattern does not allow CSR enrollment.
    pub const PATTERN_CSR_DISABLED: &str = "0xA0B00041";
    /// Neither `Template` nor `EnrollmentPatternId` given (25.1).
    pub const TEMPLATE_OR_PATTERN_REQUIRED: &str = "0xA0B00042";
    /// The caller's role is not an allowed requester on the template/pattern.
    pub const REQUESTER_NOT_ALLOWED: &str = "0xA0B00050";
    /// A `Metadata` key names no metadata field.
    pub const METADATA_UNKNOWN: &str = "0xA0B00060";
    /// A `Metadata` value does not fit the field's data type.
    pub const METADATA_INVALID: &str = "0xA0B00061";
    /// `SANs` holds an unsupported type or malformed value.
    pub const SANS_INVALID: &str = "0xA0B00062";
    /// `OwnerRoleId`/`OwnerRoleName` is not a role of the caller.
    pub const OWNER_ROLE_INVALID: &str = "0xA0B00070";
    /// The CA rejected the request (`fail-400` mode).
    pub const CA_REJECTED: &str = "0xA0B00080";
    /// Internal simulator fault (500).
    pub const INTERNAL: &str = "0xA0B000F0";
}

/// An error answer in Command's `{"ErrorCode","Message"}` shape.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// `ErrorCode` value.
    pub code: &'static str,
    /// `Message` value.
    pub message: String,
}

impl ApiError {
    /// A `400` with the given code and message.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    /// The `403` Command returns when an identity lacks a permission.
    pub fn permission_denied(user: &str) -> Self {
        ApiError {
            status: StatusCode::FORBIDDEN,
            code: codes::PERMISSION_DENIED,
            message: format!("User {user} doesn't have the required permission"),
        }
    }

    /// A `500` for faults inside the simulator.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: codes::INTERNAL,
            message: message.into(),
        }
    }

    /// Renders the error as a Command response.
    pub fn to_response(&self, product_version: &str) -> HttpResponse {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Body<'a> {
            error_code: &'a str,
            message: &'a str,
        }
        json_response(
            self.status,
            &Body {
                error_code: self.code,
                message: &self.message,
            },
            product_version,
        )
    }
}

/// Serialises like Command's JSON serializer: `'` is written as `\u0027`.
pub fn command_json(value: &impl Serialize) -> String {
    match serde_json::to_string(value) {
        // A `'` can only occur inside a JSON string, where `\u0027` is an equivalent escape.
        Ok(text) => text.replace('\'', "\\u0027"),
        Err(_) => String::from("null"),
    }
}

/// A Command JSON response with the product-version header.
pub fn json_response(
    status: StatusCode,
    value: &impl Serialize,
    product_version: &str,
) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header(("Content-Type", "application/json; charset=utf-8"))
        .insert_header(("x-keyfactor-product-version", product_version))
        .body(command_json(value))
}

/// A response without body (401, 404, 405) that still carries the product-version header.
pub fn empty_response(status: StatusCode, product_version: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header(("x-keyfactor-product-version", product_version))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apostrophe_is_escaped_like_command() {
        let e = ApiError::permission_denied("norole");
        let body = command_json(&serde_json::json!({"ErrorCode": e.code, "Message": e.message}));
        assert_eq!(
            body,
            r#"{"ErrorCode":"0xA0140002","Message":"User norole doesn\u0027t have the required permission"}"#
        );
    }
}
