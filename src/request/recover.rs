//! When an interrupted enrollment may be enrolled again (design.md §3.1).
//!
//! An enrollment whose answer was lost (call timeout, reset, crash of the controller) may still
//! be completed by Command after we stopped listening: a load balancer or Command itself keeps
//! working on a request whose client went away. Looking up its `Controller-Reconcile-Id` too
//! soon finds nothing, and enrolling again then makes two certificates for one request. So the
//! time the enrollment was sent is recorded beside the intent, and a lookup that finds nothing
//! only counts once that enrollment can no longer land: [`recovery_settle`] after it was sent.

use std::time::Duration;

use jiff::Timestamp;

use crate::api::CertificateRequest;

/// When the enrollment named by the intent annotation was sent to Command (RFC 3339), recorded
/// with the intent so a later attempt — this process or the next — knows how long an answer
/// could still be under way.
pub const INTENT_TIME_ANNOTATION: &str = "command-issuer.keyfactor.com/enrollment-intent-time";

/// How long after recording the intent an enrollment may still complete in Command, counted
/// from the last moment a call could have been sent: the first call (up to the timeout), a
/// token refresh after a 401 (up to the timeout) and the one retried call (up to the timeout),
/// and as much again as one call for a Command that overran it.
pub fn recovery_settle(call_timeout: Duration) -> Duration {
    call_timeout.saturating_mul(4)
}

/// The recorded send time of the intent's enrollment; `None` when absent or unreadable (an
/// intent written by an older controller or by hand).
pub fn intent_time(cr: &CertificateRequest) -> Option<Timestamp> {
    cr.metadata
        .annotations
        .as_ref()?
        .get(INTENT_TIME_ANNOTATION)?
        .trim()
        .parse()
        .ok()
}

/// How much longer to look for the certificate of an enrollment sent at `sent` before enrolling
/// again; `None` = enroll now (settled, or the send time is unknown or implausibly far ahead of
/// our clock, so a bad annotation cannot hold a request for ever).
pub fn recovery_wait(
    sent: Option<Timestamp>,
    now: Timestamp,
    settle: Duration,
) -> Option<Duration> {
    let sent = sent?;
    let settle_span = jiff::SignedDuration::try_from(settle).ok()?;
    if sent.duration_since(now) > settle_span {
        return None;
    }
    let left = sent.duration_since(now) + settle_span;
    if left.is_zero() || left.is_negative() {
        return None;
    }
    Duration::try_from(left).ok().map(|d| d.min(settle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CertificateRequestSpec;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn waits_until_the_enrollment_can_no_longer_land() {
        let settle = recovery_settle(Duration::from_secs(30));
        assert_eq!(settle, Duration::from_secs(120));
        let sent = Some(at("2026-06-03T12:00:00Z"));
        let wait = |now| recovery_wait(sent, at(now), settle);
        assert_eq!(wait("2026-06-03T12:00:06Z"), Some(Duration::from_secs(114)));
        assert_eq!(
            wait("2026-06-03T12:01:59.5Z"),
            Some(Duration::from_millis(500))
        );
        assert_eq!(wait("2026-06-03T12:02:00Z"), None);
        assert_eq!(wait("2026-06-03T13:00:00Z"), None);
        // A little clock skew still waits, but never longer than the settle time.
        assert_eq!(wait("2026-06-03T11:59:50Z"), Some(settle));
        // A send time far ahead of our clock is not trusted.
        assert_eq!(wait("2026-06-03T11:00:00Z"), None);
        // Unknown send time: the previous behaviour, enroll now.
        assert_eq!(
            recovery_wait(None, at("2026-06-03T12:00:06Z"), settle),
            None
        );
    }

    #[test]
    fn reads_the_send_time_from_the_annotation() {
        let mut cr = CertificateRequest::new("r", CertificateRequestSpec::default());
        assert_eq!(intent_time(&cr), None);
        cr.metadata.annotations = Some(
            [(
                INTENT_TIME_ANNOTATION.to_string(),
                "2026-06-03T12:00:00.25Z".to_string(),
            )]
            .into(),
        );
        assert_eq!(intent_time(&cr), Some(at("2026-06-03T12:00:00.25Z")));
        cr.metadata.annotations =
            Some([(INTENT_TIME_ANNOTATION.to_string(), "yesterday".to_string())].into());
        assert_eq!(intent_time(&cr), None);
    }
}
