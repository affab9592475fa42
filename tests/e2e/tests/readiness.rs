//! `/readyz` flips as documented: 503 naming the watches without a first list while the
//! controller's identity may not list them, 200 once RBAC is granted — without a restart.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use command_issuer_e2e::fixtures::get_plain;
use command_issuer_e2e::{wait_for, ControlPlane, Controller};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_every_watch_then_flips() -> Result<()> {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let crds = repo.join("crds");
    let cp = ControlPlane::start_with_crds(&[crds.as_path()]).await?;
    // An identity with no RBAC at all yet.
    let kubeconfig = cp
        .service_account_kubeconfig("command-issuer-system", "late")
        .await?;
    let mut ctl = Controller::start(
        &kubeconfig,
        &["--cluster-resource-namespace=command-issuer-system"],
    )?;
    let line = ctl
        .wait_for_log("serving /healthz and /readyz", Duration::from_secs(20))
        .await?;
    let addr = serde_json::from_str::<Value>(&line)?["addr"]
        .as_str()
        .context("addr")?
        .to_string();

    let (code, body) = get_plain(&addr, "/healthz").await.context("/healthz")?;
    ensure!(code == 200 && body == "ok", "/healthz: {code} {body}");
    // Forbidden lists keep the watches from their first list: not ready, and it says which.
    let (code, body) = wait_for(Duration::from_secs(20), "/readyz 503", || {
        let addr = addr.clone();
        async move { get_plain(&addr, "/readyz").await.filter(|(c, _)| *c == 503) }
    })
    .await?;
    println!("/readyz before RBAC: {code} {body}");
    ensure!(
        body.contains("CertificateRequest") && body.contains("Issuer"),
        "{body}"
    );

    // Grant the chart's manager rules (rendered by helm) and watch it flip.
    let rendered = tokio::process::Command::new(command_issuer_e2e::tool_path("helm")?)
        .args([
            "template",
            "late",
            &repo.join("chart").to_string_lossy(),
            "--namespace",
            "command-issuer-system",
            "--set",
            "crd.create=false",
        ])
        .output()
        .await?;
    ensure!(rendered.status.success(), "helm template");
    let text = String::from_utf8(rendered.stdout)?;
    let role = text
        .split("\n---")
        .find(|d| d.contains("kind: ClusterRole\n") && d.contains("-manager-role"))
        .context("manager ClusterRole in the chart")?;
    cp.apply_yaml(role).await?;
    let role_name = role
        .lines()
        .find_map(|l| l.trim().strip_prefix("name: "))
        .context("role name")?
        .trim_matches('"')
        .to_string();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "late-manager"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
        "subjects": [{"kind": "ServiceAccount", "name": "late", "namespace": "command-issuer-system"}],
    }))?;
    Api::<ClusterRoleBinding>::all(cp.client())
        .create(&PostParams::default(), &binding)
        .await?;
    let t0 = std::time::Instant::now();
    wait_for(
        Duration::from_secs(45),
        "/readyz 200 after RBAC is granted",
        || {
            let addr = addr.clone();
            async move {
                get_plain(&addr, "/readyz")
                    .await
                    .filter(|(c, b)| *c == 200 && b == "ok")
            }
        },
    )
    .await?;
    println!(
        "/readyz flipped to 200 {:.1}s after the binding (watch backoff), same process",
        t0.elapsed().as_secs_f64()
    );
    ensure!(ctl.is_running());
    Ok(())
}
