//! Errors of Command calls, classified so callers can tell transient from permanent.

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
    },
    /// The body did not decode as the documented JSON.
    #[error("failed to decode response from Command: {0}")]
    Decode(String),
    /// The TLS client could not be set up from the CA bundle.
    #[error("{0}")]
    Tls(String),
}

impl CommandError {
    /// True for errors worth retrying soon: network, 5xx, 429, 408.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            Self::Decode(_) => true,
            Self::Tls(_) => false,
        }
    }

    /// Short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Transport { .. } => "transport",
            Self::Status { .. } => "status",
            Self::Decode(_) => "decode",
            Self::Tls(_) => "tls",
        }
    }
}
