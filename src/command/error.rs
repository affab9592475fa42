//! Errors of Command calls, classified so callers can tell transient from permanent.

use std::time::Duration;

/// One failed Command call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// TLS, DNS, refused or reset connection, timeout: Go's `Post "<url>": <cause>` shape.
    #[error("{method} \"{url}\": {cause}")]
    Transport {
        /// HTTP method.
        method: &'static str,
        /// Full URL.
        url: String,
        /// What failed.
        cause: String,
    },
    /// Command answered with a non-success status; `body` is kept raw for messages.
    #[error("{status} {reason}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// Canonical reason phrase (`Bad Request`).
        reason: String,
        /// Raw response body.
        body: String,
        /// `Retry-After` of the answer (seconds or HTTP date, as a delay from when it arrived).
        retry_after: Option<Duration>,
    },
    /// The body did not decode as the documented JSON.
    #[error("failed to decode response from Command: {0}")]
    Decode(String),
    /// The TLS client could not be set up from the CA bundle.
    #[error("{0}")]
    Tls(String),
    /// A value to search for cannot be put in a Command query safely; nothing was sent.
    #[error(
        "refusing to query Command for {0:?}: only letters, digits and . _ : - are searched for"
    )]
    Query(String),
}

impl CommandError {
    /// True for errors worth retrying soon: network, 5xx, 429, 408.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            Self::Decode(_) => true,
            Self::Tls(_) | Self::Query(_) => false,
        }
    }

    /// How long Command asked us to wait before trying again: the `Retry-After` of a `429 Too
    /// Many Requests` or `503 Service Unavailable` (RFC 9110 §10.2.3), so retries respect it.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status {
                status: 429 | 503,
                retry_after,
                ..
            } => *retry_after,
            _ => None,
        }
    }

    /// True when Command may have done the work although the answer says otherwise or was
    /// lost: a broken connection after sending, an undecodable body, or a 502/503/504 from anything in front of
    /// Command (a gateway that gave up waiting while Command completed the call). Such a call
    /// is looked up before it is ever repeated.
    pub fn is_uncertain(&self) -> bool {
        match self {
            // An answer that did not decode may be Command's success behind a broken proxy.
            Self::Transport { .. } | Self::Decode(_) => true,
            Self::Status { status, .. } => matches!(status, 502..=504),
            Self::Tls(_) | Self::Query(_) => false,
        }
    }

    /// Short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Transport { .. } => "transport",
            Self::Status { .. } => "status",
            Self::Decode(_) => "decode",
            Self::Tls(_) => "tls",
            Self::Query(_) => "query",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> CommandError {
        CommandError::Status {
            status: code,
            reason: String::new(),
            body: String::new(),
            retry_after: None,
        }
    }

    #[test]
    fn gateway_errors_and_lost_answers_are_uncertain() {
        for code in [502, 503, 504] {
            assert!(status(code).is_uncertain(), "{code}");
        }
        for code in [400, 401, 404, 429, 500] {
            assert!(!status(code).is_uncertain(), "{code}");
        }
        let lost = CommandError::Transport {
            method: "Post",
            url: "u".into(),
            cause: "reset".into(),
        };
        assert!(lost.is_uncertain());
        assert!(CommandError::Decode("x".into()).is_uncertain());
        assert!(!CommandError::Tls("x".into()).is_uncertain());
    }
}
