//! Issuer condition bookkeeping, as upstream unit-tests it (product.md §3).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{ConditionStatus, IssuerCondition};

/// Condition type that says whether the issuer can sign.
pub const READY: &str = "Ready";
/// Condition type that says whether Command has the issuer's predefined metadata fields.
pub const SUPPORTS_METADATA: &str = "SupportsMetadata";

/// Sets one condition in place: appends a new type, moves lastTransitionTime only when the
/// status changes, always overwrites reason and message, leaves other types and order alone.
/// Returns true when the status changed (an issuer transition worth an Event).
pub fn set_condition(
    conditions: &mut Vec<IssuerCondition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    now: Time,
) -> bool {
    let reason = (!reason.is_empty()).then(|| reason.to_string());
    let message = (!message.is_empty()).then(|| message.to_string());
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            let changed = c.status != status;
            if changed {
                c.status = status;
                c.last_transition_time = Some(now);
            }
            c.reason = reason;
            c.message = message;
            changed
        }
        None => {
            conditions.push(IssuerCondition {
                type_: type_.to_string(),
                status,
                last_transition_time: Some(now),
                reason,
                message,
            });
            true
        }
    }
}

/// Reads a condition's status; absent is None.
pub fn status_of(conditions: &[IssuerCondition], type_: &str) -> Option<ConditionStatus> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Time {
        Time(jiff::Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn absent_type_is_appended_with_transition_time() {
        let mut c = vec![];
        assert!(set_condition(
            &mut c,
            READY,
            ConditionStatus::True,
            "Success",
            "ok",
            t(1)
        ));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, Some(t(1)));
    }

    #[test]
    fn same_status_keeps_time_but_overwrites_reason_and_message() {
        let mut c = vec![];
        set_condition(&mut c, READY, ConditionStatus::False, "a", "m1", t(1));
        assert!(!set_condition(
            &mut c,
            READY,
            ConditionStatus::False,
            "b",
            "m2",
            t(2)
        ));
        assert_eq!(c[0].last_transition_time, Some(t(1)));
        assert_eq!(c[0].reason.as_deref(), Some("b"));
        assert_eq!(c[0].message.as_deref(), Some("m2"));
    }

    #[test]
    fn changed_status_moves_time_and_leaves_other_types() {
        let mut c = vec![];
        set_condition(&mut c, READY, ConditionStatus::False, "a", "m", t(1));
        set_condition(
            &mut c,
            SUPPORTS_METADATA,
            ConditionStatus::True,
            "x",
            "y",
            t(1),
        );
        assert!(set_condition(
            &mut c,
            READY,
            ConditionStatus::True,
            "Success",
            "ok",
            t(5)
        ));
        assert_eq!(c[0].type_, READY);
        assert_eq!(c[0].last_transition_time, Some(t(5)));
        assert_eq!(c[1].last_transition_time, Some(t(1)));
        assert_eq!(
            status_of(&c, SUPPORTS_METADATA),
            Some(ConditionStatus::True)
        );
    }
}
