//! What Command said, made safe to write: a condition or Event message never carries a
//! credential the request sent (a Command or proxy that echoes its request) and stays small
//! whatever size the error body had.

use super::CrOutcome;

/// Longest message written to a condition or an Event, in bytes.
pub const MAX_MESSAGE: usize = 1024;

/// Replaces every secret of at least four characters with `<redacted>`, then cuts the text to
/// [`MAX_MESSAGE`] bytes on a character boundary, marking the cut.
pub fn safe_message(message: &str, secrets: &[String]) -> String {
    let mut out = message.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(s.as_str(), "<redacted>");
    }
    if out.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE - "… (truncated)".len();
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("… (truncated)");
    }
    out
}

/// The outcome with its message made safe by [`safe_message`].
pub fn sanitize(outcome: CrOutcome, secrets: &[String]) -> CrOutcome {
    match outcome {
        CrOutcome::Pending { message, retry } => CrOutcome::Pending {
            message: safe_message(&message, secrets),
            retry,
        },
        CrOutcome::Held {
            message,
            request_id,
        } => CrOutcome::Held {
            message: safe_message(&message, secrets),
            request_id,
        },
        CrOutcome::Failed { message } => CrOutcome::Failed {
            message: safe_message(&message, secrets),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Retry;

    #[test]
    fn credentials_are_redacted_and_long_bodies_cut() {
        let secrets = vec![
            "hunter22".to_string(),
            "dXNlcjpodW50ZXIyMg==".to_string(),
            "ab".into(),
        ];
        let m = safe_message(
            "400: bad request; you sent Authorization: Basic dXNlcjpodW50ZXIyMg== and hunter22 (ab)",
            &secrets,
        );
        assert_eq!(
            m,
            "400: bad request; you sent Authorization: Basic <redacted> and <redacted> (ab)"
        );
        let long = format!("failed to sign: {}", "é".repeat(2000));
        let cut = safe_message(&long, &[]);
        assert!(cut.len() <= MAX_MESSAGE, "{}", cut.len());
        assert!(cut.ends_with("… (truncated)"));
        let pending = CrOutcome::Pending {
            message: "echo hunter22".into(),
            retry: Retry::Backoff,
        };
        assert_eq!(
            sanitize(pending, &secrets),
            CrOutcome::Pending {
                message: "echo <redacted>".into(),
                retry: Retry::Backoff
            }
        );
    }
}
