//! "Did Command already get this request?" — the one state machine behind exactly-once
//! enrollment, as plain functions of what the controller knows.
//!
//! A request is in one of three states: **new** (nothing was ever sent for it), **held**
//! (Command answered PENDING and its request id is recorded) or **uncertain** (something may
//! have been sent: the intent annotation is present, or this process's last call got no
//! complete answer). Only a new request is enrolled at once; a held one is followed up; an
//! uncertain one is looked up by its uid (`Controller-Reconcile-Id`) and enrolled again only
//! once no earlier call can still complete.

use std::time::Duration;

use jiff::Timestamp;

use super::recover::{recovery_settle, recovery_wait};

/// What is known about a request before any call to Command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// Command's request id, recorded when it held the request (approved requests only).
    pub held: Option<i64>,
    /// The intent annotation is present: an earlier attempt may have sent it.
    pub intent: bool,
    /// When that attempt recorded its intent (the last moment before it could have sent).
    pub intent_time: Option<Timestamp>,
    /// This process's last enrollment call for it got Command's complete answer; false when
    /// unknown (another process, or a lost answer).
    pub answered: bool,
    /// The issuer's metadata fields exist, so a certificate can be found by the request's uid.
    pub supports_metadata: bool,
    /// `--command-timeout`.
    pub call_timeout: Duration,
}

/// What to do about Command for the request now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// New: record the intent, then enroll.
    Enroll,
    /// Held: follow up this Command request id; never enroll.
    FollowUp(i64),
    /// Uncertain: look up the certificate carrying the request's uid first.
    LookUp,
    /// Uncertain and nothing to look up by (no metadata fields): wait this long, saying so on
    /// the request, before enrolling again.
    WaitUnverifiable(Duration),
    /// Uncertain, looked up, nothing found yet: look again after this long.
    LookAgain(Duration),
}

fn settle_left(f: &Facts, now: Timestamp) -> Option<Duration> {
    if f.answered {
        return None;
    }
    recovery_wait(f.intent_time, now, recovery_settle(f.call_timeout))
}

/// The step before any call.
pub fn first_step(f: &Facts, now: Timestamp) -> Step {
    if let Some(id) = f.held {
        return Step::FollowUp(id);
    }
    if !f.intent {
        return Step::Enroll;
    }
    if f.supports_metadata {
        return Step::LookUp;
    }
    match settle_left(f, now) {
        Some(d) => Step::WaitUnverifiable(d),
        None => Step::Enroll,
    }
}

/// The step after a lookup by uid found no certificate for the request's key.
pub fn after_empty_lookup(f: &Facts, now: Timestamp) -> Step {
    match settle_left(f, now) {
        Some(d) => Step::LookAgain(d),
        None => Step::Enroll,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn facts() -> Facts {
        Facts {
            held: None,
            intent: false,
            intent_time: None,
            answered: false,
            supports_metadata: true,
            call_timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn the_state_machine_table() {
        let now = at("2026-06-03T12:01:00Z");
        let sent = Some(at("2026-06-03T12:00:00Z"));
        let s = Duration::from_secs;
        let cases = [
            // New: nothing was ever sent.
            (facts(), Step::Enroll, Step::Enroll),
            // Held: followed up, whatever else is known.
            (
                Facts {
                    held: Some(7),
                    intent: true,
                    ..facts()
                },
                Step::FollowUp(7),
                // (never asked for a held request; no intent time means nothing to wait for)
                Step::Enroll,
            ),
            // Uncertain with metadata: look up; nothing found → wait out the window.
            (
                Facts {
                    intent: true,
                    intent_time: sent,
                    ..facts()
                },
                Step::LookUp,
                Step::LookAgain(s(60)),
            ),
            // ... and once the window has passed, enroll.
            (
                Facts {
                    intent: true,
                    intent_time: Some(at("2026-06-03T11:58:00Z")),
                    ..facts()
                },
                Step::LookUp,
                Step::Enroll,
            ),
            // Our last call got Command's complete answer (a 400, say): nothing can still land.
            (
                Facts {
                    intent: true,
                    intent_time: sent,
                    answered: true,
                    ..facts()
                },
                Step::LookUp,
                Step::Enroll,
            ),
            // Uncertain without metadata: wait the window out, then enroll (documented).
            (
                Facts {
                    intent: true,
                    intent_time: sent,
                    supports_metadata: false,
                    ..facts()
                },
                Step::WaitUnverifiable(s(60)),
                Step::LookAgain(s(60)),
            ),
            (
                Facts {
                    intent: true,
                    intent_time: Some(at("2026-06-03T11:50:00Z")),
                    supports_metadata: false,
                    ..facts()
                },
                Step::Enroll,
                Step::Enroll,
            ),
        ];
        for (f, first, after) in cases {
            assert_eq!(first_step(&f, now), first, "{f:?}");
            assert_eq!(after_empty_lookup(&f, now), after, "{f:?}");
        }
    }
}
