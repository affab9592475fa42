//! Shared server state: configuration, PKI, id counters and the logs the admin API exposes.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use serde::Serialize;

use crate::config::Config;
use crate::faults::Faults;
use crate::jwt::KeyError;
use crate::pki::Pki;
use crate::tokens::Tokens;

/// Oldest entries are dropped beyond this many request-log entries.
pub const MAX_REQUEST_LOG: usize = 50_000;

/// One recorded enrollment (admin API `GET /_sim/enrollments`).
#[derive(Debug, Clone, Serialize)]
pub struct EnrollmentRecord {
    /// `KeyfactorRequestId` returned to the client.
    pub request_id: i64,
    /// `KeyfactorID` of the issued certificate; 0 while nothing is issued.
    pub keyfactor_id: i64,
    /// Lower-case hex SHA-256 of the CSR DER.
    pub csr_sha256: String,
    /// First subject CN of the CSR.
    pub subject_cn: Option<String>,
    /// Template short name used.
    pub template: String,
    /// Enrollment pattern id used, if any.
    pub enrollment_pattern_id: Option<i64>,
    /// CA used, as `host\logical`.
    pub certificate_authority: String,
    /// `CertificateAuthority` exactly as the client sent it.
    pub requested_certificate_authority: Option<String>,
    /// Owner role name, if the request set one.
    pub owner_role: Option<String>,
    /// Metadata sent with the request.
    pub metadata: BTreeMap<String, String>,
    /// `RequestDisposition` (ISSUED, PENDING, EXTERNAL VALIDATION, DENIED, FAILED).
    pub disposition: String,
    /// Authenticated caller.
    pub requester: String,
    /// When the request was received (RFC 3339).
    pub time: String,
    /// Serial of the issued leaf (upper-case hex).
    pub serial_number: Option<String>,
    /// SHA-1 thumbprint of the issued leaf.
    pub thumbprint: Option<String>,
    /// PEM of the issued leaf.
    pub certificate: Option<String>,
    /// `IncludeChain` of the request (kept to answer a later follow-up the same way).
    pub include_chain: bool,
    /// Kind of the fault rule (`/_sim/faults`) that fired for the enrollment call, if any.
    pub fault: Option<String>,
    /// When what the enrollment produced becomes visible to `GET /Certificates`, the download
    /// and the follow-up (RFC 3339; a `complete_late` fault); `None` = at once.
    pub completes_at: Option<String>,
    /// [`EnrollmentRecord::completes_at`] on the monotonic clock.
    #[serde(skip)]
    pub visible_at: Option<std::time::Instant>,
    /// CSR DER, kept so a held request can be issued later.
    #[serde(skip)]
    pub csr_der: Vec<u8>,
    /// SANs from the request body, kept so a held request can be issued later.
    #[serde(skip)]
    pub extra_sans: Vec<rcgen::SanType>,
}

impl EnrollmentRecord {
    /// True once Command has finished the enrollment (always, unless a `complete_late` fault
    /// delays it): only then can it be found, followed up or downloaded.
    pub fn is_complete(&self) -> bool {
        self.visible_at
            .is_none_or(|t| std::time::Instant::now() >= t)
    }
}

/// One API request as received (admin API `GET /_sim/requests`).
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    /// Increasing sequence number.
    pub seq: u64,
    /// When it was received (RFC 3339).
    pub time: String,
    /// HTTP method.
    pub method: String,
    /// Path without query.
    pub path: String,
    /// Raw query string (still URL-encoded).
    pub query: String,
    /// Headers, names lower-cased, repeated values joined by `, `; `authorization` redacted.
    pub headers: BTreeMap<String, String>,
    /// Identity the `Authorization` header presents (Basic user name, or the bearer token's
    /// `sub`/`client_id`/`azp`), checked or not; `None` without one. Never a secret.
    pub caller: Option<String>,
    /// Body as UTF-8 (lossy).
    pub body: String,
    /// Status the simulator answered.
    pub status: u16,
    /// Kind of the injected fault (`/_sim/faults`) that fired for this request, if any.
    pub fault: Option<String>,
}

/// Mutable part of the state.
#[derive(Debug, Default)]
pub struct Logs {
    /// Every enrollment that reached the CA stage.
    pub enrollments: Vec<EnrollmentRecord>,
    /// Every API request.
    pub requests: Vec<RequestRecord>,
    next_keyfactor_id: i64,
    next_request_id: i64,
    next_seq: u64,
}

impl Logs {
    /// Next `KeyfactorID` (strictly increasing across resets).
    pub fn next_keyfactor_id(&mut self) -> i64 {
        self.next_keyfactor_id += 1;
        self.next_keyfactor_id
    }

    /// Next `KeyfactorRequestId` (strictly increasing across resets).
    pub fn next_request_id(&mut self) -> i64 {
        self.next_request_id += 1;
        self.next_request_id
    }

    /// Appends a request record, assigning its sequence number.
    pub fn push_request(&mut self, mut record: RequestRecord) {
        self.next_seq += 1;
        record.seq = self.next_seq;
        if self.requests.len() >= MAX_REQUEST_LOG {
            self.requests.remove(0);
        }
        self.requests.push(record);
    }
}

/// Everything a handler needs.
pub struct AppState {
    /// Parsed configuration.
    pub config: Config,
    /// Certificate material.
    pub pki: Pki,
    /// `x-keyfactor-product-version` value.
    pub product_version: String,
    /// Base URL of the HTTPS listener (`https://127.0.0.1:PORT`, as in ready.json).
    pub url: String,
    /// Minted tokens, revocations, lifetime overrides and the token request log.
    pub tokens: Tokens,
    /// Active fault-injection rules (`/_sim/faults`).
    pub faults: Faults,
    logs: Mutex<Logs>,
}

impl AppState {
    /// Builds the state; ids start at 1000 (`KeyfactorID`) and 5000 (`KeyfactorRequestId`).
    pub fn new(config: Config, pki: Pki, url: String) -> Result<Self, KeyError> {
        let product_version = config.product_version();
        Ok(AppState {
            config,
            pki,
            product_version,
            url,
            tokens: Tokens::new()?,
            faults: Faults::default(),
            logs: Mutex::new(Logs {
                next_keyfactor_id: 1000,
                next_request_id: 5000,
                ..Logs::default()
            }),
        })
    }

    /// Locks the logs (a poisoned lock is still usable: records are plain data).
    pub fn logs(&self) -> MutexGuard<'_, Logs> {
        self.logs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Current time as RFC 3339.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}
