//! The setup most end-to-end tests share: the docs/examples issuer pointed at the simulator.

use std::path::PathBuf;

use anyhow::Result;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::Client;
use serde_json::json;

use crate::{ControlPlane, Sim};

/// Namespace the examples put the controller's Secrets in.
pub const CONTROLLER_NAMESPACE: &str = "command-issuer-system";

/// A file of the repository, e.g. `docs/examples/issuer.yaml`.
pub fn repo_file(rel: &str) -> PathBuf {
    crate::paths::repo_root().join(rel)
}

/// Our Issuer or ClusterIssuer API, untyped, so tests read conditions as users see them.
pub fn issuer_api(client: &Client, kind: &str, ns: Option<&str>) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("command-issuer.keyfactor.com", "v1alpha1", kind);
    let ar = ApiResource::from_gvk(&gvk);
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// Points an example issuer at the simulator (the examples name command.example.com).
pub async fn point_at_sim(
    client: &Client,
    sim: &Sim,
    kind: &str,
    ns: Option<&str>,
    name: &str,
) -> Result<()> {
    let patch = Patch::Merge(json!({"spec": {"hostname": sim.host_port()}}));
    issuer_api(client, kind, ns)
        .patch(name, &PatchParams::default(), &patch)
        .await?;
    Ok(())
}

/// The controller namespace with the CA bundle Secret (`ca.crt` = the simulator's TLS CA, plus
/// `extra` keys) and docs/examples/command-secret.yaml applied.
pub async fn install_credentials(
    cp: &ControlPlane,
    sim: &Sim,
    extra: &[(&str, &str)],
) -> Result<()> {
    cp.create_namespace(CONTROLLER_NAMESPACE).await?;
    let mut data = serde_json::Map::new();
    data.insert("ca.crt".into(), json!(sim.tls_ca_pem()));
    for (k, v) in extra {
        data.insert((*k).into(), json!(v));
    }
    let ca: Secret = serde_json::from_value(
        json!({"metadata": {"name": "command-ca-secret"}, "stringData": data}),
    )?;
    Api::<Secret>::namespaced(cp.client(), CONTROLLER_NAMESPACE)
        .create(&PostParams::default(), &ca)
        .await?;
    cp.apply_file(&repo_file("docs/examples/command-secret.yaml"))
        .await?;
    Ok(())
}

/// [`install_credentials`] plus docs/examples/issuer.yaml pointed at the simulator.
pub async fn install_example_issuer(cp: &ControlPlane, sim: &Sim) -> Result<()> {
    install_credentials(cp, sim, &[]).await?;
    cp.apply_file(&repo_file("docs/examples/issuer.yaml"))
        .await?;
    point_at_sim(
        &cp.client(),
        sim,
        "Issuer",
        Some("default"),
        "issuer-sample",
    )
    .await
}

/// GET `http://addr/path` → (status, body text), for the controller's probe and metrics listeners.
pub async fn get_plain(addr: &str, path: &str) -> Option<(u16, String)> {
    let r = crate::http::HttpClient::plain(addr).get(path).await.ok()?;
    Some((r.status, r.text()))
}

/// Waits until the request's Ready condition has `reason`, so tests assert on what users see.
pub async fn wait_cr_reason(
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
    timeout: std::time::Duration,
) -> Result<crate::Condition> {
    crate::wait_for(
        timeout,
        &format!("CertificateRequest {ns}/{name} Ready reason {reason}"),
        || async move {
            crate::ready_condition(client, ns, name)
                .await
                .ok()
                .flatten()
                .filter(|c| c.reason == reason)
        },
    )
    .await
}

/// Creates a request for `<name>.<suffix>` to `kind/issuer`, approves it and waits for Issued.
pub async fn issue_and_wait(
    client: &Client,
    ns: &str,
    name: &str,
    kind: &str,
    issuer: &str,
    suffix: &str,
) -> Result<()> {
    let cn = format!("{name}.{suffix}");
    let (pem, _) = crate::make_csr(&cn, &[])?;
    crate::create_certificate_request(client, ns, name, &pem, kind, issuer, &[]).await?;
    crate::approve(client, ns, name).await?;
    wait_cr_reason(
        client,
        ns,
        name,
        "Issued",
        std::time::Duration::from_secs(15),
    )
    .await?;
    Ok(())
}

/// Waits until an issuer's Ready condition has `status`; returns that condition.
pub async fn wait_issuer_ready(
    client: &Client,
    kind: &str,
    ns: Option<&str>,
    name: &str,
    status: &str,
    timeout: std::time::Duration,
) -> Result<serde_json::Value> {
    let api = issuer_api(client, kind, ns);
    crate::wait_for(timeout, &format!("{kind} {name} Ready={status}"), || {
        let api = api.clone();
        async move {
            let o = api.get(name).await.ok()?;
            o.data["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready" && c["status"] == status)
                .cloned()
        }
    })
    .await
}

/// Waits until the object has an Event with `reason` (Events follow the status write) and
/// returns all of its Events.
pub async fn wait_event(
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
) -> Result<Vec<k8s_openapi::api::events::v1::Event>> {
    crate::wait_for(
        std::time::Duration::from_secs(10),
        &format!("{reason} Event on {ns}/{name}"),
        || async move {
            let events = crate::events_for(client, ns, name).await.ok()?;
            events
                .iter()
                .any(|e| e.reason.as_deref() == Some(reason))
                .then_some(events)
        },
    )
    .await
}

/// The core fields of `docs/examples/issuer.yaml` pointed at `hostname`, with `overrides` applied
/// (a null removes the field), so table tests state only what each case changes.
pub fn issuer_spec(hostname: &str, overrides: serde_json::Value) -> serde_json::Value {
    let mut base = json!({
        "hostname": hostname,
        "commandSecretName": "command-secret",
        "caSecretName": "command-ca-secret",
        "caBundleKey": "ca.crt",
        "certificateTemplate": "WebServer1y",
        "certificateAuthorityLogicalName": "Sub-CA",
    });
    if let (Some(b), Some(o)) = (base.as_object_mut(), overrides.as_object()) {
        for (k, v) in o {
            if v.is_null() {
                b.remove(k);
            } else {
                b.insert(k.clone(), v.clone());
            }
        }
    }
    base
}

/// An Issuer `name` in `ns` (namespace created if missing) pointed at `hostname` (the
/// simulator, or a proxy in front of it), with Basic credentials of the default simulator
/// configuration; its Secrets `<ns>-<name>-ca` and `<ns>-<name>-credentials` go to the controller
/// namespace, where Issuer credentials are read from by default.
pub async fn basic_issuer_in(
    client: &Client,
    sim: &Sim,
    hostname: &str,
    ns: &str,
    name: &str,
) -> Result<()> {
    crate::k8s::ensure_namespace(client, CONTROLLER_NAMESPACE).await?;
    crate::k8s::ensure_namespace(client, ns).await?;
    let (ca_name, credentials_name) = (
        format!("{ns}-{name}-ca"),
        format!("{ns}-{name}-credentials"),
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), CONTROLLER_NAMESPACE);
    let ca = json!({"metadata": {"name": ca_name}, "stringData": {"ca.crt": sim.tls_ca_pem()}});
    let credentials = json!({"metadata": {"name": credentials_name}, "type": "kubernetes.io/basic-auth",
        "stringData": {"username": "command-issuer", "password": "sim-password-1"}});
    for s in [ca, credentials] {
        secrets
            .create(&PostParams::default(), &serde_json::from_value(s)?)
            .await?;
    }
    let mut spec = issuer_spec(hostname, json!({}));
    spec["commandSecretName"] = json!(credentials_name);
    spec["caSecretName"] = json!(ca_name);
    let issuer = json!({"apiVersion": "command-issuer.keyfactor.com/v1alpha1", "kind": "Issuer",
        "metadata": {"name": name, "namespace": ns}, "spec": spec});
    issuer_api(client, "Issuer", Some(ns))
        .create(&PostParams::default(), &serde_json::from_value(issuer)?)
        .await?;
    Ok(())
}

/// Waits until an issuer has a condition `type_` with `status` (e.g. `SupportsMetadata`
/// `False`); returns that condition.
pub async fn wait_issuer_condition(
    client: &Client,
    kind: &str,
    ns: Option<&str>,
    name: &str,
    type_: &str,
    status: &str,
    timeout: std::time::Duration,
) -> Result<serde_json::Value> {
    let api = issuer_api(client, kind, ns);
    crate::wait_for(timeout, &format!("{kind} {name} {type_}={status}"), || {
        let api = api.clone();
        async move {
            let o = api.get(name).await.ok()?;
            o.data["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == type_ && c["status"] == status)
                .cloned()
        }
    })
    .await
}
