//! Keyfactor Command REST client on awc (command-api.md): wire types, calls, typed errors.

mod client;
mod error;
mod types;

pub use client::{
    build_http_client, parse_retry_after, CommandClient, DEFAULT_CALL_TIMEOUT, MAX_RETRY_AFTER,
};
pub use error::CommandError;
pub use types::{
    CertificateInformation, CertificateSummary, EnrollCsrRequest, EnrollCsrResponse,
    EnrollmentPattern, MetadataField, WorkflowRequest, PREDEFINED_METADATA_FIELDS,
};
