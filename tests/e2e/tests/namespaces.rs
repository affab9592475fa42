//! Where Secrets and ConfigMaps are read (product.md §6), under both values of
//! --secret-access-granted-at-cluster-level, with the chart's RBAC for each.

use std::time::Duration;

use anyhow::{ensure, Result};
use command_issuer_e2e::fixtures::{
    install_credentials, issuer_api, repo_file, CONTROLLER_NAMESPACE,
};
use command_issuer_e2e::{wait_for, ControlPlane, Controller, Sim};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::{json, Value};

async fn create(
    client: &Client,
    kind: &str,
    ns: Option<&str>,
    name: &str,
    sim: &Sim,
    secret: &str,
) -> Result<()> {
    let mut meta = json!({"name": name});
    if let Some(ns) = ns {
        meta["namespace"] = json!(ns);
    }
    let obj = json!({"apiVersion": "command-issuer.keyfactor.com/v1alpha1", "kind": kind, "metadata": meta,
        "spec": {"hostname": sim.host_port(), "commandSecretName": secret, "caSecretName": "command-ca-secret",
                 "caBundleKey": "ca.crt", "certificateTemplate": "WebServer1y", "certificateAuthorityLogicalName": "Sub-CA"}});
    issuer_api(client, kind, ns)
        .create(&PostParams::default(), &serde_json::from_value(obj)?)
        .await?;
    Ok(())
}

async fn ready(client: &Client, kind: &str, ns: Option<&str>, name: &str) -> Result<Value> {
    let api = issuer_api(client, kind, ns);
    wait_for(
        Duration::from_secs(20),
        &format!("{kind} {name} checked"),
        || {
            let api = api.clone();
            async move {
                let o = api.get(name).await.ok()?;
                o.data["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == "Ready")
                    .cloned()
            }
        },
    )
    .await
}

async fn copy_secrets(client: &Client, sim: &Sim, ns: &str) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    for s in [
        json!({"metadata": {"name": "team-secret"}, "type": "kubernetes.io/basic-auth", "stringData": {"username": "command-issuer", "password": "sim-password-1"}}),
        json!({"metadata": {"name": "command-ca-secret"}, "stringData": {"ca.crt": sim.tls_ca_pem()}}),
    ] {
        api.create(&PostParams::default(), &serde_json::from_value(s)?)
            .await?;
    }
    Ok(())
}

async fn run(cluster_level: bool) -> Result<()> {
    let cp = ControlPlane::start_with_crds(&[repo_file("crds").as_path()]).await?;
    let client = cp.client();
    let sim = Sim::start_default().await?;
    install_credentials(&cp, &sim, &[]).await?;
    cp.create_namespace("team-c").await?;
    // team-secret exists only in the Issuer's namespace; command-secret only in the controller's.
    copy_secrets(&client, &sim, "team-c").await?;
    // The chart's own RBAC for this mode, under its ServiceAccount.
    let mut args = vec![
        "install",
        "rel",
        "--namespace",
        CONTROLLER_NAMESPACE,
        "--set",
        "crd.create=false",
    ];
    if cluster_level {
        args.extend(["--set", "secretConfig.useClusterRoleForSecretAccess=true"]);
    }
    let chart = repo_file("chart");
    let chart = chart.to_string_lossy().into_owned();
    args.insert(2, &chart);
    let out = tokio::process::Command::new(command_issuer_e2e::tool_path("helm")?)
        .arg("--kubeconfig")
        .arg(cp.admin_kubeconfig())
        .args(&args)
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "helm install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sa = cp
        .service_account_kubeconfig(CONTROLLER_NAMESPACE, "rel-command-cert-manager-issuer")
        .await?;
    let mut ctl_args = vec!["--cluster-resource-namespace=command-issuer-system"];
    if cluster_level {
        ctl_args.push("--secret-access-granted-at-cluster-level");
    }
    let _ctl = Controller::start(&sa, &ctl_args)?;
    create(
        &client,
        "Issuer",
        Some("team-c"),
        "own-ns",
        &sim,
        "team-secret",
    )
    .await?;
    create(
        &client,
        "Issuer",
        Some("team-c"),
        "ctl-ns",
        &sim,
        "command-secret",
    )
    .await?;
    create(
        &client,
        "ClusterIssuer",
        None,
        "cluster",
        &sim,
        "command-secret",
    )
    .await?;
    let own = ready(&client, "Issuer", Some("team-c"), "own-ns").await?;
    let ctl = ready(&client, "Issuer", Some("team-c"), "ctl-ns").await?;
    let cluster = ready(&client, "ClusterIssuer", None, "cluster").await?;
    println!(
        "cluster_level={cluster_level}: own-ns {} / ctl-ns {} / cluster {}",
        own["status"], ctl["status"], cluster["status"]
    );
    ensure!(
        cluster["status"] == "True",
        "ClusterIssuers always read the controller namespace: {cluster}"
    );
    if cluster_level {
        ensure!(
            own["status"] == "True",
            "Issuer reads its own namespace: {own}"
        );
        ensure!(ctl["status"] == "False" && ctl["message"] == "failed to get Secret containing Issuer credentials, secret name: command-secret, reason: secrets \"command-secret\" not found", "{ctl}");
    } else {
        ensure!(
            ctl["status"] == "True",
            "Issuer reads the controller namespace: {ctl}"
        );
        ensure!(own["status"] == "False" && own["message"] == "failed to get Secret containing Issuer credentials, secret name: team-secret, reason: secrets \"team-secret\" not found", "{own}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_read_from_the_controller_namespace_by_default() -> Result<()> {
    run(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_read_from_the_issuer_namespace_with_cluster_level_access() -> Result<()> {
    run(true).await
}
