//! Issuer health decisions: a check's result → Ready / SupportsMetadata conditions (product.md §3–§5).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{ConditionStatus, IssuerCondition};
use crate::command::{CommandError, MetadataField, PREDEFINED_METADATA_FIELDS};
use crate::conditions::{set_condition, status_of, READY, SUPPORTS_METADATA};
use crate::config::ConfigError;

/// Reason written on every failed check, as upstream.
pub const ERROR_REASON: &str = "command-issuer.IssuerController.Reconcile";

/// How one issuer check ended.
#[derive(Debug, Clone)]
pub enum CheckResult {
    /// healthcheck.interval was invalid: Ready=False, SupportsMetadata=Unknown, no retry.
    BadInterval(ConfigError),
    /// Secret, CA bundle or config resolution failed.
    Config(ConfigError),
    /// No Authorization header could be produced (token endpoint, ambient provider).
    Auth(String),
    /// The first authenticated call of a new connection failed (upstream: client build).
    FirstContact(CommandError),
    /// GET /Status/Endpoints failed on an established connection.
    Health(CommandError),
    /// GET /MetadataFields failed.
    Metadata(CommandError),
    /// Healthy, with whether all seven predefined fields exist.
    Healthy {
        /// All seven predefined metadata fields exist in Command.
        supports_metadata: bool,
    },
}

/// `failed to authenticate, received status code N from Keyfactor Command: <body>` for a
/// status, the transport text otherwise (command-api.md §4.3).
pub fn health_cause(e: &CommandError) -> String {
    match e {
        CommandError::Status { status, body, .. } => {
            format!("failed to authenticate, received status code {status} from Keyfactor Command: {body}")
        }
        other => other.to_string(),
    }
}

/// True when every predefined field is present (exact, case-sensitive names).
pub fn supports_metadata(fields: &[MetadataField]) -> bool {
    PREDEFINED_METADATA_FIELDS
        .iter()
        .all(|want| fields.iter().any(|f| f.name == *want))
}

impl CheckResult {
    /// The Ready message users see and search for (product.md §14).
    pub fn ready_message(&self) -> String {
        match self {
            Self::BadInterval(e) | Self::Config(e) => e.to_string(),
            Self::Auth(e) => format!(
                "failed to build the healthchecker: failed to create health checker: failed to create new Command API client: {e}"
            ),
            Self::FirstContact(e) => format!(
                "failed to build the healthchecker: failed to create health checker: failed to create new Command API client: {}",
                health_cause(e)
            ),
            Self::Health(e) => format!(
                "healthcheck failed: failed to check status of connected Command instance: {}",
                health_cause(e)
            ),
            Self::Metadata(e) => format!(
                "healthcheck failed: failed to fetch metadata fields from connected Command instance: {e}"
            ),
            Self::Healthy { .. } => "Health check succeeded".into(),
        }
    }

    /// True when the issuer may sign.
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Healthy { .. })
    }
}

/// New conditions from the previous ones; returns (conditions, Ready status changed).
pub fn issuer_conditions(
    previous: &[IssuerCondition],
    result: &CheckResult,
    now: Time,
) -> (Vec<IssuerCondition>, bool) {
    let mut c = previous.to_vec();
    let message = result.ready_message();
    let changed = match result {
        CheckResult::Healthy { supports_metadata } => {
            let changed = set_condition(
                &mut c,
                READY,
                ConditionStatus::True,
                "Success",
                &message,
                now.clone(),
            );
            let (status, reason, msg) = if *supports_metadata {
                (
                    ConditionStatus::True,
                    "Metadata fields are defined",
                    "Connected Command platform has the Command Issuer metadata fields defined.",
                )
            } else {
                (ConditionStatus::False, "Metadata fields are not defined", "Connected Command platform doesn't have the Command Issuer metadata fields defined.")
            };
            set_condition(&mut c, SUPPORTS_METADATA, status, reason, msg, now);
            changed
        }
        CheckResult::BadInterval(_) => {
            let changed = set_condition(
                &mut c,
                READY,
                ConditionStatus::False,
                ERROR_REASON,
                &message,
                now.clone(),
            );
            set_condition(
                &mut c,
                SUPPORTS_METADATA,
                ConditionStatus::Unknown,
                "",
                "",
                now,
            );
            changed
        }
        _ => set_condition(
            &mut c,
            READY,
            ConditionStatus::False,
            ERROR_REASON,
            &message,
            now,
        ),
    };
    (c, changed || status_of(previous, READY).is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Time {
        Time(jiff::Timestamp::from_second(10).unwrap())
    }

    #[test]
    fn first_contact_401_message_matches_readme() {
        let r = CheckResult::FirstContact(CommandError::Status {
            status: 401,
            reason: "Unauthorized".into(),
            body: String::new(),
            retry_after: None,
        });
        assert_eq!(r.ready_message(), "failed to build the healthchecker: failed to create health checker: failed to create new Command API client: failed to authenticate, received status code 401 from Keyfactor Command: ");
    }

    #[test]
    fn metadata_403_message() {
        let r = CheckResult::Metadata(CommandError::Status {
            status: 403,
            reason: "Forbidden".into(),
            body: "{}".into(),
            retry_after: None,
        });
        assert_eq!(r.ready_message(), "healthcheck failed: failed to fetch metadata fields from connected Command instance: 403 Forbidden");
    }

    #[test]
    fn conditions_for_healthy_and_bad_interval() {
        let (c, changed) = issuer_conditions(
            &[],
            &CheckResult::Healthy {
                supports_metadata: true,
            },
            now(),
        );
        assert!(changed);
        assert_eq!(c[0].reason.as_deref(), Some("Success"));
        assert_eq!(c[1].reason.as_deref(), Some("Metadata fields are defined"));
        let (c2, changed) = issuer_conditions(
            &c,
            &CheckResult::BadInterval(ConfigError::IntervalTooShort("29s".into())),
            now(),
        );
        assert!(changed);
        assert_eq!(
            status_of(&c2, SUPPORTS_METADATA),
            Some(ConditionStatus::Unknown)
        );
        assert_eq!(c2[0].reason.as_deref(), Some(ERROR_REASON));
    }

    #[test]
    fn seven_names_case_sensitive() {
        let mut f: Vec<MetadataField> = PREDEFINED_METADATA_FIELDS
            .iter()
            .map(|n| MetadataField {
                name: n.to_string(),
            })
            .collect();
        assert!(supports_metadata(&f));
        f[0].name = f[0].name.to_lowercase();
        assert!(!supports_metadata(&f));
    }
}
