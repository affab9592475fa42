//! Errors that need a live connection first: a bearer token Command never accepts is retried
//! once with a fresh token and then reported; an established connection that goes away reports
//! the Go issuer's `healthcheck failed: failed to check status …` text.

use std::time::Duration;

use anyhow::{ensure, Result};
use command_issuer_e2e::fixtures::{
    install_credentials, issuer_api, repo_file, wait_issuer_ready, CONTROLLER_NAMESPACE,
};
use command_issuer_e2e::{ControlPlane, Controller, Sim};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_token_is_retried_once_then_reported_and_lost_connection_is_reported() -> Result<()> {
    let cp = ControlPlane::start_with_crds(&[repo_file("crds").as_path()]).await?;
    let client = cp.client();
    let sim = Sim::start_default().await?;
    // A second simulator whose identity provider the first one's Command does not trust.
    let mut foreign = Sim::start_default().await?;
    install_credentials(
        &cp,
        &sim,
        &[(
            "both.pem",
            &format!("{}{}", sim.tls_ca_pem(), foreign.tls_ca_pem()),
        )],
    )
    .await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), CONTROLLER_NAMESPACE);
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "foreign-idp"}, "type": "Opaque",
        "stringData": {"tokenUrl": format!("{}/_idp/token", foreign.url()), "clientId": "issuer-client", "clientSecret": "oauth-secret-1"}}),
    )?;
    secrets.create(&PostParams::default(), &s).await?;
    let _ctl = Controller::start(
        cp.admin_kubeconfig(),
        &["--cluster-resource-namespace=command-issuer-system"],
    )?;
    let api = issuer_api(&client, "Issuer", Some("default"));
    for (name, secret, key) in [
        ("untrusted-token", "foreign-idp", "both.pem"),
        ("goes-away", "command-secret", "ca.crt"),
    ] {
        let obj = json!({"apiVersion": "command-issuer.keyfactor.com/v1alpha1", "kind": "Issuer", "metadata": {"name": name, "namespace": "default"},
            "spec": {"hostname": sim.host_port(), "commandSecretName": secret, "caSecretName": "command-ca-secret", "caBundleKey": key,
                     "certificateTemplate": "WebServer1y", "certificateAuthorityLogicalName": "Sub-CA"}});
        api.create(&PostParams::default(), &serde_json::from_value(obj)?)
            .await?;
    }

    let c = wait_issuer_ready(
        &client,
        "Issuer",
        Some("default"),
        "untrusted-token",
        "False",
        Duration::from_secs(20),
    )
    .await?;
    ensure!(
        c["message"] == "failed to build the healthchecker: failed to create health checker: failed to create new Command API client: failed to authenticate, received status code 401 from Keyfactor Command: ",
        "{c}"
    );
    let fetched: Vec<Value> = foreign.http().get("/_sim/token-requests").await?.json()?;
    let ok = fetched.iter().filter(|r| r["status"] == 200).count();
    ensure!(
        ok == 2,
        "one token, then exactly one fresh token after the 401: {ok} fetches"
    );

    // Established, then Command goes away: the next check reports the Go issuer's text.
    wait_issuer_ready(
        &client,
        "Issuer",
        Some("default"),
        "goes-away",
        "True",
        Duration::from_secs(20),
    )
    .await?;
    let mut sim = sim;
    sim.kill();
    // A change to the referenced Secret triggers the re-check at once.
    secrets
        .patch(
            "command-secret",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await?;
    let c = wait_issuer_ready(
        &client,
        "Issuer",
        Some("default"),
        "goes-away",
        "False",
        Duration::from_secs(20),
    )
    .await?;
    let m = c["message"].as_str().unwrap_or("");
    ensure!(
        m.starts_with("healthcheck failed: failed to check status of connected Command instance: Get \"https://127.0.0.1:"),
        "{m}"
    );
    foreign.kill();
    Ok(())
}
