//! Why an attempt at a CertificateRequest did not finish: every condition message the
//! controller writes on a request for a failure of its own side, with how it is retried.

use super::{CrOutcome, Retry};

/// A failed attempt, as the user reads it in the Ready condition and the Event (the prefixes
/// are the Go issuer's, kept so searches keep working).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The issuer named by issuerRef does not exist.
    #[error("error getting issuer: {0}")]
    IssuerMissing(String),
    /// The issuer exists but its last health check failed.
    #[error("issuer is not ready")]
    IssuerNotReady,
    /// The sign configuration (spec + annotation overrides) is invalid: fix the issuer or the
    /// annotations.
    #[error("failed to build the signer: failed to create signer: {0}")]
    BadSignConfig(String),
    /// No Authorization header could be had for the issuer (token endpoint, ambient source).
    #[error("failed to build the signer: failed to create signer: {0}")]
    NoAuthorization(String),
    /// The HTTPS client for Command could not be built (unusable CA bundle).
    #[error("failed to build the signer: failed to create signer: {0}")]
    NoClient(String),
    /// The CSR does not parse or is refused before anything is sent.
    #[error("failed to sign: {0}")]
    BadCsr(String),
    /// The enrollment pattern named by the issuer could not be resolved.
    #[error("{0}")]
    Pattern(String),
    /// Command refused or failed the enrollment.
    #[error("failed to sign: {0}")]
    Enrollment(String),
    /// The intent annotation could not be written, so nothing was sent.
    #[error("failed to sign: recording the enrollment intent: {0}")]
    RecordIntent(String),
    /// The certificate of an interrupted enrollment was found but not downloaded.
    #[error("failed to sign: recovering the certificate of an interrupted enrollment: {0}")]
    Recovering(String),
    /// An earlier enrollment may have reached Command, and the issuer has no metadata fields to
    /// look it up by: the request is enrolled again only once that call can no longer complete.
    #[error("failed to sign: an earlier enrollment of this request may have reached Command and cannot be looked up, because the issuer does not have SupportsMetadata=True; it is enrolled again once that call can no longer complete, which may leave a second certificate in Command. Create the command-issuer metadata fields in Command so such enrollments are found instead")]
    Unverifiable,
    /// Command could not be asked whether an interrupted enrollment completed.
    #[error("failed to sign: looking up an interrupted enrollment in Command: {0}")]
    Lookup(String),
}

impl RequestError {
    /// `Pending` with its retry class: permanent errors end in `Failed` after the max retry
    /// duration, an absent or unready issuer waits for its issuer, the rest back off.
    pub fn outcome(&self, permanent: bool) -> CrOutcome {
        let retry = match self {
            Self::IssuerMissing(_) | Self::IssuerNotReady => Retry::OnIssuerReady,
            Self::BadSignConfig(_) | Self::BadCsr(_) | Self::NoClient(_) => Retry::Permanent,
            _ if permanent => Retry::Permanent,
            _ => Retry::Backoff,
        };
        CrOutcome::Pending {
            message: self.to_string(),
            retry,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_the_searched_for_prefixes() {
        let cases = [
            (
                RequestError::IssuerMissing("issuers.command-issuer.keyfactor.com \"x\" not found".into()),
                "error getting issuer: issuers.command-issuer.keyfactor.com \"x\" not found",
                Retry::OnIssuerReady,
            ),
            (RequestError::IssuerNotReady, "issuer is not ready", Retry::OnIssuerReady),
            (
                RequestError::BadSignConfig("template or pattern required".into()),
                "failed to build the signer: failed to create signer: template or pattern required",
                Retry::Permanent,
            ),
            (
                RequestError::NoAuthorization("failed to retrieve OAuth token: 500".into()),
                "failed to build the signer: failed to create signer: failed to retrieve OAuth token: 500",
                Retry::Backoff,
            ),
            (RequestError::BadCsr("bad pem".into()), "failed to sign: bad pem", Retry::Permanent),
            (
                RequestError::RecordIntent("timed out".into()),
                "failed to sign: recording the enrollment intent: timed out",
                Retry::Backoff,
            ),
            (
                RequestError::Lookup("503".into()),
                "failed to sign: looking up an interrupted enrollment in Command: 503",
                Retry::Backoff,
            ),
            (
                RequestError::Unverifiable,
                "failed to sign: an earlier enrollment of this request may have reached Command and cannot be looked up, because the issuer does not have SupportsMetadata=True; it is enrolled again once that call can no longer complete, which may leave a second certificate in Command. Create the command-issuer metadata fields in Command so such enrollments are found instead",
                Retry::Backoff,
            ),
            (
                RequestError::Recovering("reset".into()),
                "failed to sign: recovering the certificate of an interrupted enrollment: reset",
                Retry::Backoff,
            ),
        ];
        for (e, message, retry) in cases {
            assert_eq!(
                e.outcome(false),
                CrOutcome::Pending {
                    message: message.into(),
                    retry
                },
                "{e:?}"
            );
        }
        assert_eq!(
            RequestError::Enrollment("400 bad template".into()).outcome(true),
            CrOutcome::Pending {
                message: "failed to sign: 400 bad template".into(),
                retry: Retry::Permanent
            }
        );
    }
}
