//! What happens to a request after one attempt: the enroller's only decision, as one value.

use std::time::Duration;

use super::{CrOutcome, Retry};
use crate::backoff::backoff;

/// How one attempt at a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptEnd {
    /// Nothing to do: not ours, final, awaiting approval, or deleted.
    Nothing,
    /// Write this outcome to the request's status (and publish its Event).
    Write {
        /// The new state.
        outcome: CrOutcome,
        /// Command's `Retry-After`, stretching the next backoff.
        retry_after: Option<Duration>,
    },
    /// The issuer has not had its first check yet (start-up): look again shortly, silently.
    IssuerUnchecked,
    /// Command still holds the request (or following it up failed): poll again later.
    StillHeld,
    /// Look again after this long without writing or counting a failure: an interrupted
    /// enrollment may still land, or the request changed since it was read.
    LookAgain(Duration),
    /// The request could not be read from the apiserver: back off and read again.
    ReadFailed,
    /// The request changed since it was read (409): back off, then read it again.
    Conflict,
}

impl AttemptEnd {
    /// An outcome to write, with no `Retry-After`.
    pub fn write(outcome: CrOutcome) -> Self {
        Self::Write {
            outcome,
            retry_after: None,
        }
    }
}

/// What the enroller does with a request next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Done: the status is final or there is nothing to do; forget the request.
    Forget,
    /// A failure: try again after this delay (the attempt counts toward the backoff).
    Retry(Duration),
    /// Wait for the request's issuer to turn Ready, or this long at most.
    AwaitIssuer(Duration),
    /// Look again after this long; not a failure.
    LookAgain(Duration),
    /// Command holds it: poll again on the poll schedule.
    Poll,
}

/// Decides from how the attempt ended, whether its status write landed and how many failed
/// attempts came before.
pub fn next_step(end: &AttemptEnd, written: bool, attempts: u32) -> Next {
    match end {
        AttemptEnd::Nothing => Next::Forget,
        AttemptEnd::IssuerUnchecked => Next::AwaitIssuer(Duration::from_secs(1)),
        AttemptEnd::StillHeld => Next::Poll,
        AttemptEnd::LookAgain(d) => Next::LookAgain(*d),
        AttemptEnd::ReadFailed | AttemptEnd::Conflict => Next::Retry(backoff(attempts, None)),
        AttemptEnd::Write {
            outcome,
            retry_after,
        } => {
            let again = backoff(attempts, *retry_after);
            if !written {
                // Nothing is lost by writing again later: the outcome is recomputed.
                return Next::Retry(again);
            }
            match outcome {
                CrOutcome::Held { .. } => Next::Poll,
                CrOutcome::Pending {
                    retry: Retry::OnIssuerReady,
                    ..
                } => Next::AwaitIssuer(again),
                CrOutcome::Pending { .. } => Next::Retry(again),
                CrOutcome::Issued { .. } | CrOutcome::Failed { .. } | CrOutcome::Denied => {
                    Next::Forget
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(retry: Retry) -> CrOutcome {
        CrOutcome::Pending {
            message: "m".into(),
            retry,
        }
    }

    #[test]
    fn every_end_has_one_next_step() {
        let s = Duration::from_secs;
        let issued = CrOutcome::Issued {
            certificate_pem: String::new(),
            ca_pem: String::new(),
            request_id: 1,
        };
        let held = CrOutcome::Held {
            message: "m".into(),
            request_id: 7,
        };
        let failed = CrOutcome::Failed {
            message: "m".into(),
        };
        let w = |o: CrOutcome| AttemptEnd::write(o);
        let cases = [
            (AttemptEnd::Nothing, true, 0, Next::Forget),
            (
                AttemptEnd::IssuerUnchecked,
                false,
                3,
                Next::AwaitIssuer(s(1)),
            ),
            (AttemptEnd::StillHeld, false, 0, Next::Poll),
            (AttemptEnd::LookAgain(s(7)), false, 5, Next::LookAgain(s(7))),
            (AttemptEnd::ReadFailed, false, 2, Next::Retry(s(4))),
            (AttemptEnd::Conflict, false, 0, Next::Retry(s(1))),
            (AttemptEnd::Conflict, false, 3, Next::Retry(s(8))),
            (w(issued.clone()), true, 0, Next::Forget),
            (w(issued), false, 1, Next::Retry(s(2))),
            (w(held.clone()), true, 0, Next::Poll),
            (w(held), false, 0, Next::Retry(s(1))),
            (w(failed), true, 9, Next::Forget),
            (w(CrOutcome::Denied), true, 0, Next::Forget),
            (w(pending(Retry::Backoff)), true, 3, Next::Retry(s(8))),
            (w(pending(Retry::Permanent)), true, 0, Next::Retry(s(1))),
            (
                w(pending(Retry::OnIssuerReady)),
                true,
                2,
                Next::AwaitIssuer(s(4)),
            ),
            (
                AttemptEnd::Write {
                    outcome: pending(Retry::Backoff),
                    retry_after: Some(s(30)),
                },
                true,
                0,
                Next::Retry(s(30)),
            ),
        ];
        for (end, written, attempts, want) in cases {
            assert_eq!(
                next_step(&end, written, attempts),
                want,
                "{end:?} written={written}"
            );
        }
    }
}
