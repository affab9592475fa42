//! Issuer spec + Secret/ConfigMap data + annotations → resolved configuration, as pure functions.
//!
//! The actors read the Kubernetes objects; everything here only decides, so every precedence
//! and namespace rule of product.md §4–§9 has a unit test.

mod ca_bundle;
mod connection;
mod credentials;
mod duration;
mod health;
mod namespace;
mod sign;

pub use ca_bundle::select_ca_bundle;
pub use connection::{
    normalize_api_path, normalize_hostname, resolve_connection, ConnectionConfig,
};
pub use credentials::{credentials_from_secret, Credentials};
pub use duration::{format_go_duration, parse_go_duration, MAX_GO_DURATION};
pub use health::{health_schedule, HealthSchedule, MIN_HEALTH_INTERVAL};
pub use namespace::secret_namespace;
pub use sign::{sign_config, SignConfig, ANNOTATION_PREFIX, METADATA_ANNOTATION_PREFIX};

/// Why an issuer's connection or signing configuration is unusable; texts are the ones users
/// search for (product.md §7, §9, §14).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required connection or credential value is empty.
    #[error("invalid config: {0} is required")]
    Required(&'static str),
    /// The credential Secret could not be read.
    #[error(
        "failed to get Secret containing Issuer credentials, secret name: {name}, reason: {reason}"
    )]
    CredentialSecretMissing {
        /// Secret name from commandSecretName.
        name: String,
        /// The apiserver's error text.
        reason: String,
    },
    /// The credential Secret lacks a required key.
    #[error("failed to get Secret containing Issuer credentials: found {0}")]
    CredentialSecretInvalid(String),
    /// caSecretName names a Secret that could not be read.
    #[error("caSecretName specified a name, but failed to get Secret containing CA certificate, secret name: {name}, reason: {reason}")]
    CaSecretMissing {
        /// Secret name.
        name: String,
        /// The apiserver's error text.
        reason: String,
    },
    /// caBundleConfigMapName names a ConfigMap that could not be read.
    #[error("caBundleConfigMapName specified a name, but failed to get ConfigMap containing CA certificate, configmap name: {name}, reason: {reason}")]
    CaConfigMapMissing {
        /// ConfigMap name.
        name: String,
        /// The apiserver's error text.
        reason: String,
    },
    /// The CA bundle object lacks the wanted key or holds nothing.
    #[error("failed to get CA bundle key from CA certificate data: {0}")]
    CaBundleKey(String),
    /// The basic-auth username has more than one domain separator.
    #[error("invalid config: username {0:?} must be user, DOMAIN\\user or user@domain")]
    Username(String),
    /// healthcheck.interval does not parse.
    #[error("interval {0:?} is invalid: {1}")]
    IntervalSyntax(String, String),
    /// healthcheck.interval is below the 30 s minimum.
    #[error("interval {0} is invalid, must be greater than or equal to '30s'")]
    IntervalTooShort(String),
    /// An override annotation holds a non-integer.
    #[error("invalid signer config: failed to parse {field} from annotations: strconv.ParseInt: parsing {value:?}: {reason}")]
    AnnotationInteger {
        /// Annotation field name (enrollmentPatternId, ownerRoleId).
        field: &'static str,
        /// The annotation value as written.
        value: String,
        /// `invalid syntax` or `value out of range`, as Go says it.
        reason: &'static str,
    },
    /// Sign configuration is incomplete after overrides.
    #[error("invalid signer config: {0}")]
    Signer(&'static str),
    /// A custom metadata annotation names a predefined field.
    #[error("invalid signer config: metadata annotation \"{0}\" names a field the controller sets itself; remove the annotation")]
    ReservedMetadata(String),
}
