//! Issuer and ClusterIssuer: one spec and one status shared by both kinds (product.md §1–§3).

use std::fmt;
use std::ops::Deref;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

fn default_api_path() -> Option<String> {
    Some("KeyfactorAPI".to_string())
}

/// Connection, enrollment and credential settings that users write for either issuer kind.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "command-issuer.keyfactor.com",
    version = "v1alpha1",
    kind = "Issuer",
    plural = "issuers",
    singular = "issuer",
    namespaced,
    status = "IssuerStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    doc = "An Issuer signs CertificateRequests of its own namespace with Keyfactor Command."
)]
#[serde(rename_all = "camelCase")]
pub struct IssuerSpec {
    /// Hostname of the Keyfactor Command instance; a URL form drops its scheme and path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Base path of the Command API; leading and trailing slashes are ignored.
    #[serde(default = "default_api_path", skip_serializing_if = "Option::is_none")]
    pub api_path: Option<String>,
    /// Periodic health check of the Command connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthCheck>,
    /// Enrollment pattern id (Command 25.1+); wins over enrollmentPatternName. 0 means unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_pattern_id: Option<i32>,
    /// Enrollment pattern name, resolved to an id with GET /EnrollmentPatterns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollment_pattern_name: Option<String>,
    /// Deprecated: certificate template short name, still sent alongside a pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_template: Option<String>,
    /// Security role id recorded as certificate owner; wins over ownerRoleName. 0 means unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_role_id: Option<i32>,
    /// Security role name recorded as certificate owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_role_name: Option<String>,
    /// Logical name of the CA; required when no enrollment pattern is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_logical_name: Option<String>,
    /// Host name of the CA, prefixed to the logical name as host\logical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_hostname: Option<String>,
    /// Secret with basic-auth or OAuth client credentials; omit for ambient credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_secret_name: Option<String>,
    /// Secret holding the CA bundle that Command's TLS certificate chains to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_name: Option<String>,
    /// ConfigMap holding the CA bundle; wins over caSecretName.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_config_map_name: Option<String>,
    /// Key of the CA bundle inside the Secret or ConfigMap; unset takes the alphabetically last key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_key: Option<String>,
    /// Scopes for ambient token providers, separated by commas or whitespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<String>,
    /// Audience for ambient token providers (Google ID token; default "command").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// Health-check settings; `enabled` is required inside the block, as upstream.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// false turns the periodic re-check off.
    pub enabled: bool,
    /// Go duration between checks while healthy (minimum 30s); default from the controller flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

/// ClusterIssuer spec: the Issuer spec, cluster-scoped.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "command-issuer.keyfactor.com",
    version = "v1alpha1",
    kind = "ClusterIssuer",
    plural = "clusterissuers",
    singular = "clusterissuer",
    status = "IssuerStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    doc = "A ClusterIssuer signs CertificateRequests of every namespace with Keyfactor Command."
)]
pub struct ClusterIssuerSpec {
    #[serde(flatten)]
    inner: IssuerSpec,
}

impl ClusterIssuerSpec {
    /// Wraps an Issuer spec so both kinds share every field and rule.
    pub fn new(inner: IssuerSpec) -> Self {
        Self { inner }
    }
}

impl Deref for ClusterIssuerSpec {
    type Target = IssuerSpec;
    fn deref(&self) -> &IssuerSpec {
        &self.inner
    }
}

/// Observed state of an issuer, written by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct IssuerStatus {
    /// Ready and SupportsMetadata conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<IssuerCondition>,
}

/// One issuer condition, shaped as upstream (product.md §3).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerCondition {
    /// Ready or SupportsMetadata.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// When status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Machine-readable reason of the last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail, the error text when not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The three condition statuses Kubernetes allows.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet.
    Unknown,
}

impl ConditionStatus {
    /// Maps a boolean outcome onto a condition status.
    pub fn from_bool(b: bool) -> Self {
        if b {
            Self::True
        } else {
            Self::False
        }
    }
}

impl fmt::Display for ConditionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        })
    }
}

/// Which of our two kinds an issuerRef names; the registry keys issuers by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IssuerKind {
    /// Namespaced Issuer.
    Issuer,
    /// Cluster-scoped ClusterIssuer.
    ClusterIssuer,
}

impl IssuerKind {
    /// Reads `issuerRef.kind`; empty means Issuer, as cert-manager does (design.md §3.10).
    pub fn parse(kind: Option<&str>) -> Option<Self> {
        match kind.unwrap_or("") {
            "" | "Issuer" => Some(Self::Issuer),
            "ClusterIssuer" => Some(Self::ClusterIssuer),
            _ => None,
        }
    }

    /// The Kubernetes kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issuer => "Issuer",
            Self::ClusterIssuer => "ClusterIssuer",
        }
    }

    /// Plural resource name, used in apiserver-style not-found messages.
    pub fn plural(self) -> &'static str {
        match self {
            Self::Issuer => "issuers",
            Self::ClusterIssuer => "clusterissuers",
        }
    }
}

impl fmt::Display for IssuerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
