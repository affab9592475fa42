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

/// The lease fields an election reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    /// Current holder identity.
    pub holder: Option<String>,
    /// Last renewal.
    pub renewed: Option<Timestamp>,
    /// Validity in seconds.
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
            let valid_until = l.renewed.and_then(|r| {
                r.checked_add(jiff::SignedDuration::from_secs(i64::from(
                    l.duration_secs.max(1),
                )))
                .ok()
            });
            match valid_until {
                Some(t) if t > now => Election::Follow {
                    holder: h.to_string(),
                },
                _ => Election::Acquire,
            }
        }
    }
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
}
