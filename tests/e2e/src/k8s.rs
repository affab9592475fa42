//! Kubernetes-side helpers: clients from kubeconfigs, CertificateRequests, approval, events.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client};
use serde_json::{json, Value};

/// API group of our issuers, the `issuerRef.group` of every CertificateRequest the suite makes.
pub const ISSUER_GROUP: &str = "command-issuer.keyfactor.com";

/// Field manager used when the harness approves or denies, so it owns only its own condition.
pub const APPROVER_FIELD_MANAGER: &str = "e2e-approver";

/// Builds a client from a kubeconfig file, to act as exactly that identity.
pub async fn client_from_kubeconfig(path: &Path) -> Result<Client> {
    let kc = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading kubeconfig {}", path.display()))?;
    Client::try_from(cfg).context("building kube client")
}

/// Creates a namespace, treating AlreadyExists as success so tests can call it freely.
pub async fn ensure_namespace(client: &Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating namespace {name}")),
    }
}

/// True if `err` is an API error with HTTP status `code` (403 Forbidden, 404, 409 ...).
pub fn is_api_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == code)
}

/// ApiResource of a cert-manager.io/v1 kind, for dynamic access without generated types.
pub fn cert_manager_resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("cert-manager.io", "v1", kind))
}

/// Namespaced API for cert-manager.io/v1 CertificateRequests.
pub fn certificate_requests(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &cert_manager_resource("CertificateRequest"),
    )
}

/// Creates a CertificateRequest for our issuer group: base64 PEM CSR, usages, duration 1h.
pub async fn create_certificate_request(
    client: &Client,
    ns: &str,
    name: &str,
    csr_pem: &str,
    issuer_kind: &str,
    issuer_name: &str,
    annotations: &[(&str, &str)],
) -> Result<DynamicObject> {
    let annotations: BTreeMap<&str, &str> = annotations.iter().copied().collect();
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "CertificateRequest",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations},
        "spec": {
            "request": B64.encode(csr_pem.as_bytes()),
            "duration": "1h",
            "usages": ["digital signature", "key encipherment", "server auth"],
            "issuerRef": {"group": ISSUER_GROUP, "kind": issuer_kind, "name": issuer_name},
        },
    }))?;
    certificate_requests(client, ns)
        .create(&PostParams::default(), &obj)
        .await
        .with_context(|| format!("creating CertificateRequest {ns}/{name}"))
}

async fn set_decision(client: &Client, ns: &str, name: &str, kind: &str) -> Result<()> {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let (reason, message) = ("cert-manager.io", format!("{kind} by the e2e harness"));
    let patch = json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "CertificateRequest",
        "metadata": {"name": name, "namespace": ns},
        "status": {"conditions": [{
            "type": kind, "status": "True", "reason": reason,
            "message": message, "lastTransitionTime": now,
        }]},
    });
    // Server-side apply on the status subresource: conditions are a list-map keyed by type,
    // so this owns only its own condition and leaves the issuer's Ready alone.
    certificate_requests(client, ns)
        .patch_status(
            name,
            &PatchParams::apply(APPROVER_FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .with_context(|| format!("setting {kind} on CertificateRequest {ns}/{name}"))?;
    Ok(())
}

/// Approves a CertificateRequest as cert-manager's approver would (Approved=True).
pub async fn approve(client: &Client, ns: &str, name: &str) -> Result<()> {
    set_decision(client, ns, name, "Approved").await
}

/// Denies a CertificateRequest (Denied=True), for the issuer's denied path.
pub async fn deny(client: &Client, ns: &str, name: &str) -> Result<()> {
    set_decision(client, ns, name, "Denied").await
}

/// One status condition, as read back from an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// Condition type ("Ready", "Approved", ...).
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    /// Machine-readable reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

impl Condition {
    /// True when status is "True".
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// The condition of type `type_` in `obj.status.conditions`, if any.
pub fn condition(obj: &DynamicObject, type_: &str) -> Option<Condition> {
    let conds = obj.data.get("status")?.get("conditions")?.as_array()?;
    let c = conds
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))?;
    let s = |k: &str| {
        c.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Some(Condition {
        type_: s("type"),
        status: s("status"),
        reason: s("reason"),
        message: s("message"),
    })
}

/// Fetches a CertificateRequest.
pub async fn get_certificate_request(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<DynamicObject> {
    certificate_requests(client, ns)
        .get(name)
        .await
        .with_context(|| format!("getting CertificateRequest {ns}/{name}"))
}

/// The CertificateRequest's Ready condition (None while the issuer has not written one).
pub async fn ready_condition(client: &Client, ns: &str, name: &str) -> Result<Option<Condition>> {
    Ok(condition(
        &get_certificate_request(client, ns, name).await?,
        "Ready",
    ))
}

fn decode_status_field(obj: &DynamicObject, field: &str) -> Result<Option<String>> {
    let Some(v) = obj.data.get("status").and_then(|s| s.get(field)) else {
        return Ok(None);
    };
    let Some(b64) = v.as_str() else {
        bail!("status.{field} is not a string: {v}");
    };
    if b64.is_empty() {
        return Ok(None);
    }
    let bytes = B64
        .decode(b64)
        .map_err(|e| anyhow!("status.{field} is not base64: {e}"))?;
    Ok(Some(String::from_utf8(bytes).map_err(|e| {
        anyhow!("status.{field} is not UTF-8 PEM: {e}")
    })?))
}

/// `status.certificate` decoded to PEM (leaf plus any intermediates), None until issued.
pub fn status_certificate(obj: &DynamicObject) -> Result<Option<String>> {
    decode_status_field(obj, "certificate")
}

/// `status.ca` decoded to PEM, None when the issuer did not set it.
pub fn status_ca(obj: &DynamicObject) -> Result<Option<String>> {
    decode_status_field(obj, "ca")
}

/// Reads a CertificateRequest's `status.certificate` as PEM.
pub async fn cr_certificate(client: &Client, ns: &str, name: &str) -> Result<Option<String>> {
    status_certificate(&get_certificate_request(client, ns, name).await?)
}

/// Reads a CertificateRequest's `status.ca` as PEM.
pub async fn cr_ca(client: &Client, ns: &str, name: &str) -> Result<Option<String>> {
    status_ca(&get_certificate_request(client, ns, name).await?)
}

/// events.k8s.io/v1 Events in `ns` whose regarding object is named `name`, oldest first.
pub async fn events_for(client: &Client, ns: &str, name: &str) -> Result<Vec<Event>> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let mut events: Vec<Event> = api
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing events in {ns}"))?
        .items
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .and_then(|r| r.name.as_deref())
                .is_some_and(|n| n == name)
        })
        .collect();
    events.sort_by(|a, b| {
        let key = |e: &Event| {
            e.event_time.as_ref().map(|t| t.0).or(e
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0))
        };
        key(a).cmp(&key(b))
    });
    Ok(events)
}
