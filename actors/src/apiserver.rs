//! Every apiserver call is bounded in time: the client has connect and read timeouts, and each
//! call that matters (lease renew, status writes, reads before a retry) has its own deadline,
//! so a stalled connection can neither hold an enrollment slot nor stop leader election.

use std::future::Future;
use std::time::Duration;

use kube::Config;

/// Deadline of one apiserver call on the hot path (reads, patches, Events).
pub const CALL_DEADLINE: Duration = Duration::from_secs(10);
/// Deadline of one lease read-and-renew: well inside the renew deadline, so a hung renew is
/// abandoned and retried before leadership is at stake.
pub const LEASE_CALL_DEADLINE: Duration = Duration::from_secs(4);

/// Connect and read timeouts for every request the client makes. The read timeout stays above
/// the watch timeout (290 s) so idle watches are not cut; per-call deadlines do the rest.
pub fn bounded_config(mut config: Config) -> Config {
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(295));
    config.reset_reader_on_write = true;
    config.write_timeout = Some(CALL_DEADLINE);
    config
}

/// An apiserver call that failed or ran out of time.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No answer within the deadline; the call was abandoned.
    #[error("the apiserver did not answer {what} within {after:?}")]
    Timeout {
        /// What was asked.
        what: &'static str,
        /// The deadline.
        after: Duration,
    },
    /// The apiserver (or the connection to it) answered with an error.
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

impl ApiError {
    /// 409: the object changed since it was read.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Kube(kube::Error::Api(s)) if s.code == 409)
    }

    /// The apiserver's own message when it gave one (what users see in a condition).
    pub fn reason(&self) -> String {
        match self {
            Self::Kube(kube::Error::Api(s)) => s.message.clone(),
            other => other.to_string(),
        }
    }
}

/// Runs one apiserver call with a deadline.
pub async fn bounded<T>(
    what: &'static str,
    deadline: Duration,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(deadline, call).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(_) => Err(ApiError::Timeout {
            what,
            after: deadline,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn a_call_past_its_deadline_is_abandoned_with_a_clear_error() {
        let hung = std::future::pending::<Result<(), kube::Error>>();
        let e = bounded("the lease", Duration::from_millis(20), hung)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the apiserver did not answer the lease within 20ms"
        );
        assert!(!e.is_conflict());
        let ok = bounded("x", Duration::from_secs(1), async {
            Ok::<_, kube::Error>(7)
        })
        .await;
        assert_eq!(ok.unwrap(), 7);
    }
}
