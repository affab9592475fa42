//! CertificateRequest decisions: whether to act, what to send Command, what to write back.

mod enroll;
mod gate;
mod recover;
mod status;

pub use enroll::{
    enrollment_body, enrollment_failure, pick_pattern, predefined_metadata, MetadataContext,
};
pub use gate::{gate, is_approved, Gate, INTENT_ANNOTATION, REQUEST_ID_ANNOTATION};
pub use recover::{intent_time, recovery_settle, recovery_wait, INTENT_TIME_ANNOTATION};
pub use status::{
    follow_up_outcome, give_up, held_issued, outcome_from_response, status_apply, CrOutcome, Retry,
};
