//! The one retry delay of the controller: capped exponential backoff, stretched by a server's
//! `Retry-After` but never shortened by it.

use std::time::Duration;

/// No delay ever exceeds this: a request or an issuer is looked at again at least every 5 min,
/// and one hostile `Retry-After` header cannot park anything for longer.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Delay before try number `attempts + 1`: 1 s, 2 s, 4 s … capped at [`MAX_BACKOFF`]; Command's
/// `Retry-After` (429/503) wins when it asks for longer, within the same cap.
pub fn backoff(attempts: u32, retry_after: Option<Duration>) -> Duration {
    Duration::from_secs(1u64 << attempts.min(9))
        .max(retry_after.unwrap_or_default())
        .min(MAX_BACKOFF)
}

/// Delay before the next follow-up poll of a request Command holds: the configured interval,
/// doubled per poll that found it still held, at most four times the interval, so a workflow
/// that takes days costs a few calls an hour instead of one per interval.
pub fn poll_delay(interval: Duration, polls: u32) -> Duration {
    interval.saturating_mul(1u32 << polls.min(2))
}

/// Adds up to `spread` of jitter, derived from `seed` (an issuer's name, say), so that a
/// thousand issuers created at once do not all check in the same second.
pub fn jitter(base: Duration, spread: Duration, seed: &str) -> Duration {
    // FNV-1a: stable across runs and processes, no randomness to seed.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let millis = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX);
    base.saturating_add(Duration::from_millis(h.checked_rem(millis).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_stretches_the_backoff_but_never_shortens_it() {
        let s = Duration::from_secs;
        assert_eq!(backoff(0, None), s(1));
        assert_eq!(backoff(1, None), s(2));
        assert_eq!(backoff(0, Some(s(3))), s(3));
        assert_eq!(backoff(3, Some(s(3))), s(8));
        assert_eq!(backoff(2, Some(Duration::ZERO)), s(4));
        assert_eq!(backoff(0, Some(s(86_400))), MAX_BACKOFF);
        assert_eq!(backoff(40, None), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX, Some(Duration::MAX)), MAX_BACKOFF);
    }

    #[test]
    fn polls_back_off_to_four_intervals() {
        let s = Duration::from_secs;
        assert_eq!(poll_delay(s(30), 0), s(30));
        assert_eq!(poll_delay(s(30), 1), s(60));
        assert_eq!(poll_delay(s(30), 2), s(120));
        assert_eq!(poll_delay(s(30), u32::MAX), s(120));
        assert_eq!(poll_delay(Duration::MAX, 5), Duration::MAX);
    }

    #[test]
    fn jitter_stays_within_its_spread_and_differs_by_seed() {
        let s = Duration::from_secs;
        let a = jitter(s(30), s(10), "ns-1/issuer");
        let b = jitter(s(30), s(10), "ns-2/issuer");
        assert!(a >= s(30) && a < s(40), "{a:?}");
        assert!(b >= s(30) && b < s(40), "{b:?}");
        assert_ne!(a, b);
        assert_eq!(a, jitter(s(30), s(10), "ns-1/issuer"));
        assert_eq!(jitter(s(30), Duration::ZERO, "x"), s(30));
    }
}
