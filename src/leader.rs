//! Lease-based leader election decisions (coordination.k8s.io/v1 Lease), as plain functions.

use std::time::Duration;

use jiff::Timestamp;

/// Lease name the Go issuer used, kept so mixed deployments never run two leaders.
pub const LEASE_NAME: &str = "b68cef20.keyfactor.com";
/// How long a lease stays valid without renewal (controller-runtime default).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// A leader that could not renew for this long steps down.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often candidates and the leader look at the lease.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// Longest validity honoured from a lease, whatever `leaseDurationSeconds` says: a huge value
/// (i32::MAX ≈ 68 years) written by a buggy or hostile client must not block every candidate
/// for good once its holder is gone; any live holder renews far more often than this.
pub const MAX_LEASE_DURATION: Duration = Duration::from_secs(3600);

/// The lease fields an election reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    /// Current holder identity.
    pub holder: Option<String>,
    /// Last renewal.
    pub renewed: Option<Timestamp>,
    /// Validity in seconds as written; below 1 counts as 1, above [`MAX_LEASE_DURATION`] as that.
    pub duration_secs: i32,
}

/// What a candidate does after reading the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Election {
    /// We hold it: renew.
    Renew,
    /// Absent, unheld or expired: take it.
    Acquire,
    /// Someone else holds a valid lease: stand by.
    Follow {
        /// The holder.
        holder: String,
    },
}

/// Decides from the lease as read (None when it does not exist yet).
pub fn elect(lease: Option<&LeaseView>, me: &str, now: Timestamp) -> Election {
    let Some(l) = lease else {
        return Election::Acquire;
    };
    match l.holder.as_deref().filter(|h| !h.is_empty()) {
        None => Election::Acquire,
        Some(h) if h == me => Election::Renew,
        Some(h) => {
            let valid_until = l
                .renewed
                .and_then(|r| r.checked_add(lease_validity(l.duration_secs)).ok());
            match valid_until {
                Some(t) if t > now => Election::Follow {
                    holder: h.to_string(),
                },
                _ => Election::Acquire,
            }
        }
    }
}

/// `leaseDurationSeconds` clamped to `1 s..=MAX_LEASE_DURATION` (negative and zero count as 1 s,
/// as before), so the renewal time plus it is computed from a bounded value.
fn lease_validity(duration_secs: i32) -> jiff::SignedDuration {
    let max = i64::try_from(MAX_LEASE_DURATION.as_secs()).unwrap_or(i64::MAX);
    jiff::SignedDuration::from_secs(i64::from(duration_secs).clamp(1, max))
}

/// `leaseTransitions` after this write: one more on a takeover of an existing lease, saturating
/// at i32::MAX so a hostile or corrupt count in the Lease cannot overflow.
pub fn next_lease_transitions(previous: Option<i32>, took_over: bool) -> i32 {
    previous.unwrap_or(0).saturating_add(i32::from(took_over))
}

/// True while a leader may keep writing: its last successful renewal is within the deadline.
pub fn still_leading(last_renewal: Option<std::time::Instant>, now: std::time::Instant) -> bool {
    last_renewal.is_some_and(|t| now.saturating_duration_since(t) < RENEW_DEADLINE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(holder: &str, renewed_secs_ago: i64) -> LeaseView {
        LeaseView {
            holder: Some(holder.into()),
            renewed: Some(Timestamp::now() - jiff::SignedDuration::from_secs(renewed_secs_ago)),
            duration_secs: 15,
        }
    }

    #[test]
    fn elections() {
        let now = Timestamp::now();
        assert_eq!(elect(None, "a", now), Election::Acquire);
        assert_eq!(elect(Some(&view("a", 1)), "a", now), Election::Renew);
        assert_eq!(
            elect(Some(&view("b", 1)), "a", now),
            Election::Follow { holder: "b".into() }
        );
        assert_eq!(elect(Some(&view("b", 16)), "a", now), Election::Acquire);
        assert_eq!(elect(Some(&view("", 1)), "a", now), Election::Acquire);
    }

    #[test]
    fn leader_steps_down_after_renew_deadline() {
        let now = std::time::Instant::now();
        assert!(still_leading(Some(now), now));
        assert!(!still_leading(None, now));
        assert!(!still_leading(
            now.checked_sub(Duration::from_secs(11)),
            now
        ));
    }

    fn lease(duration_secs: i32, renewed: Option<Timestamp>) -> LeaseView {
        LeaseView {
            holder: Some("b".into()),
            renewed,
            duration_secs,
        }
    }

    #[test]
    fn negative_and_zero_lease_durations_count_as_one_second() {
        let now = Timestamp::now();
        let two_ago = Some(now - jiff::SignedDuration::from_secs(2));
        for d in [i32::MIN, -1, 0] {
            assert_eq!(
                elect(Some(&lease(d, two_ago)), "a", now),
                Election::Acquire,
                "{d}"
            );
            assert_eq!(
                elect(Some(&lease(d, Some(now))), "a", now),
                Election::Follow { holder: "b".into() },
                "{d}"
            );
        }
    }

    #[test]
    fn huge_lease_duration_is_honoured_for_an_hour_only() {
        let now = Timestamp::now();
        let ago = |s| Some(now - jiff::SignedDuration::from_secs(s));
        // A holder gone for 2 h with a 68-year lease: taken over (followed for ever before).
        assert_eq!(
            elect(Some(&lease(i32::MAX, ago(7200))), "a", now),
            Election::Acquire
        );
        // Within the hour it is still respected.
        assert_eq!(
            elect(Some(&lease(i32::MAX, ago(60))), "a", now),
            Election::Follow { holder: "b".into() }
        );
    }

    #[test]
    fn renewal_time_at_the_end_of_time_does_not_panic() {
        let now = Timestamp::now();
        // Timestamp::MAX + duration overflows: treated as no valid lease.
        assert_eq!(
            elect(Some(&lease(i32::MAX, Some(Timestamp::MAX))), "a", now),
            Election::Acquire
        );
        assert_eq!(
            elect(Some(&lease(i32::MIN, Some(Timestamp::MIN))), "a", now),
            Election::Acquire
        );
    }

    #[test]
    fn lease_transitions_saturate() {
        assert_eq!(next_lease_transitions(None, false), 0);
        assert_eq!(next_lease_transitions(None, true), 1);
        assert_eq!(next_lease_transitions(Some(4), true), 5);
        assert_eq!(next_lease_transitions(Some(i32::MAX), true), i32::MAX);
        assert_eq!(next_lease_transitions(Some(i32::MIN), false), i32::MIN);
    }
}
