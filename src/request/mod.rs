//! CertificateRequest decisions: whether to act, what to send Command, what to write back, and
//! what happens after each attempt.

mod certainty;
mod enroll;
mod error;
mod gate;
mod next;
mod recover;
mod sanitize;
mod status;

pub use certainty::{after_empty_lookup, first_step, Facts, Step};
pub use enroll::{
    enrollment_body, enrollment_failure, pick_pattern, predefined_metadata, MetadataContext,
};
pub use error::RequestError;
pub use gate::{gate, is_approved, issuer_of, Gate, INTENT_ANNOTATION, REQUEST_ID_ANNOTATION};
pub use next::{next_step, AttemptEnd, Next};
pub use recover::{intent_time, recovery_settle, recovery_wait, INTENT_TIME_ANNOTATION};
pub use sanitize::{safe_message, sanitize, MAX_MESSAGE};
pub use status::{
    adopt, follow_up_outcome, give_up, held_issued, outcome_from_response, retry_origin,
    status_apply, CrOutcome, Retry,
};
