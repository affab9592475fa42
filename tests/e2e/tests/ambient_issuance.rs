//! Ambient credentials end to end: the controller process gets Azure workload-identity or Google
//! metadata-server configuration from its environment (as a pod would), an issuer without
//! commandSecretName becomes Ready with the token, and a request is issued with it.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use command_issuer_e2e::fixtures::{
    install_credentials, issue_and_wait, issuer_api, repo_file, wait_issuer_ready,
};
use command_issuer_e2e::{ControlPlane, Controller, Sim};
use kube::api::PostParams;
use kube::Client;
use serde_json::{json, Value};

async fn ambient_issuer(client: &Client, sim: &Sim, name: &str, extra: Value) -> Result<()> {
    let mut spec = json!({"hostname": sim.host_port(), "caSecretName": "command-ca-secret", "caBundleKey": "ca.crt",
                          "certificateTemplate": "WebServer1y", "certificateAuthorityLogicalName": "Sub-CA"});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    let obj = json!({"apiVersion": "command-issuer.keyfactor.com/v1alpha1", "kind": "ClusterIssuer", "metadata": {"name": name}, "spec": spec});
    issuer_api(client, "ClusterIssuer", None)
        .create(&PostParams::default(), &serde_json::from_value(obj)?)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambient_azure_and_google_issue_certificates() -> Result<()> {
    let cp = ControlPlane::start_with_crds(&[repo_file("crds").as_path()]).await?;
    let client = cp.client();
    let config_path = command_issuer_e2e::paths::default_sim_config();
    let config: Value = serde_json::from_str(&std::fs::read_to_string(&config_path)?)?;
    let sim = Sim::start_with_args(&config_path, &["--gce-metadata-listen", "127.0.0.1:0"]).await?;
    let ready_json: Value = serde_json::from_str(&std::fs::read_to_string(
        sim.dir().join("state").join("ready.json"),
    )?)?;
    let gce = ready_json["gce_metadata"]
        .as_str()
        .context("gce_metadata")?
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    install_credentials(&cp, &sim, &[]).await?;
    let entra = &config["entra"];
    let client_id = entra["client_id"].as_str().context("entra.client_id")?;
    let token_file = sim.dir().join("azure-identity-token");
    std::fs::write(
        &token_file,
        entra["federated_token"]
            .as_str()
            .context("federated_token")?,
    )?;
    let scope = format!("api://{client_id}/.default");

    // Azure workload identity, as the AKS webhook injects it; Google unreachable (port 1).
    // The controller inherits this environment; this file holds a single test.
    std::env::set_var("AZURE_AUTHORITY_HOST", format!("{}/_entra/", sim.url()));
    std::env::set_var(
        "AZURE_TENANT_ID",
        entra["tenant_id"].as_str().context("tenant")?,
    );
    std::env::set_var("AZURE_CLIENT_ID", client_id);
    std::env::set_var("AZURE_FEDERATED_TOKEN_FILE", &token_file);
    std::env::set_var("SSL_CERT_FILE", sim.dir().join("state").join("tls-ca.pem"));
    std::env::set_var("GCE_METADATA_HOST", "127.0.0.1:1");
    let mut azure_ctl = Controller::start(
        cp.admin_kubeconfig(),
        &["--cluster-resource-namespace=command-issuer-system"],
    )?;
    ambient_issuer(&client, &sim, "azure", json!({"scopes": scope})).await?;
    ambient_issuer(&client, &sim, "azure-no-scope", json!({})).await?;
    wait_issuer_ready(
        &client,
        "ClusterIssuer",
        None,
        "azure",
        "True",
        Duration::from_secs(30),
    )
    .await?;
    issue_and_wait(
        &client,
        "default",
        "via-azure",
        "ClusterIssuer",
        "azure",
        "ambient.test",
    )
    .await?;
    let c = wait_issuer_ready(
        &client,
        "ClusterIssuer",
        None,
        "azure-no-scope",
        "False",
        Duration::from_secs(30),
    )
    .await?;
    let m = c["message"].as_str().unwrap_or("");
    println!("no scopes: {m}");
    ensure!(
        m.contains("failed to obtain ambient credentials: azure err: ")
            && m.contains("Required query variable 'resource' is missing")
            && m.contains(". gcp err: "),
        "{m}"
    );
    azure_ctl.kill();

    // Google: no Azure environment, the metadata server of the simulator.
    for v in [
        "AZURE_AUTHORITY_HOST",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
    ] {
        std::env::remove_var(v);
    }
    std::env::set_var("GCE_METADATA_HOST", &gce);
    let _google_ctl = Controller::start(
        cp.admin_kubeconfig(),
        &["--cluster-resource-namespace=command-issuer-system"],
    )?;
    ambient_issuer(&client, &sim, "google", json!({})).await?;
    wait_issuer_ready(
        &client,
        "ClusterIssuer",
        None,
        "google",
        "True",
        Duration::from_secs(30),
    )
    .await?;
    issue_and_wait(
        &client,
        "default",
        "via-google",
        "ClusterIssuer",
        "google",
        "ambient.test",
    )
    .await?;
    let reqs: Vec<Value> = sim.http().get("/_sim/token-requests").await?.json()?;
    ensure!(
        reqs.iter()
            .any(|r| r["endpoint"] == "entra" && r["status"] == 200),
        "an Entra token was minted"
    );
    ensure!(
        reqs.iter()
            .any(|r| r["endpoint"] == "gce" && r["status"] == 200 && r["audience"] == "command"),
        "a Google ID token for audience command: {reqs:?}"
    );
    Ok(())
}
