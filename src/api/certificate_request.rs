//! The fields of cert-manager's CertificateRequest (cert-manager.io/v1) that we read.
//!
//! Only what routing and signing need is deserialised; status is written as JSON by
//! server-side apply, so the partial type never round-trips a whole object.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The parts of a CertificateRequest spec an external issuer uses.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "cert-manager.io",
    version = "v1",
    kind = "CertificateRequest",
    plural = "certificaterequests",
    namespaced,
    status = "CertificateRequestStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequestSpec {
    /// Base64 (in JSON) PEM-encoded PKCS#10 CSR.
    #[serde(default)]
    #[schemars(with = "String")]
    pub request: k8s_openapi::ByteString,
    /// Which issuer should sign.
    pub issuer_ref: IssuerRef,
    /// Requested lifetime, informational for Command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

/// cert-manager's ObjectReference to an issuer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct IssuerRef {
    /// Issuer name.
    pub name: String,
    /// Issuer kind; empty means Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Issuer API group; ours is command-issuer.keyfactor.com.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// The status fields we read (conditions) and write (certificate, ca, failureTime).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequestStatus {
    /// Approved, Denied, Ready and others.
    #[serde(default)]
    pub conditions: Vec<CertificateRequestCondition>,
    /// Issued certificate: leaf then intermediates, PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub certificate: Option<k8s_openapi::ByteString>,
    /// Root or topmost CA, PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub ca: Option<k8s_openapi::ByteString>,
    /// When the request failed for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_time: Option<Time>,
}

/// A CertificateRequest condition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequestCondition {
    /// Condition type: Ready, Approved, Denied, InvalidRequest.
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    /// Machine-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

impl CertificateRequest {
    /// The condition of this type, if any: one accessor instead of a search at every call site.
    pub fn condition(&self, type_: &str) -> Option<&CertificateRequestCondition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
    }
}
