//! Bounded retries (design.md §3.3): a request whose error cannot heal by itself turns Failed
//! once --max-retry-duration has passed since approval; a transient one keeps waiting.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use command_issuer_e2e::fixtures::{
    install_example_issuer, issuer_api, wait_cr_reason, wait_event,
};
use command_issuer_e2e::{
    approve, create_certificate_request, get_certificate_request, make_csr, ready_condition,
    ControlPlane, Controller, Sim,
};
use kube::api::PostParams;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_fail_after_max_retry_duration_transient_ones_wait() -> Result<()> {
    let crds = command_issuer_e2e::fixtures::repo_file("crds");
    let cp = ControlPlane::start_with_crds(&[crds.as_path()]).await?;
    let client = cp.client();
    let sim = Sim::start_default().await?;
    install_example_issuer(&cp, &sim).await?;
    // An issuer that never becomes Ready (its Secret does not exist): requests wait for it.
    let down = json!({"apiVersion": "command-issuer.keyfactor.com/v1alpha1", "kind": "Issuer",
        "metadata": {"name": "down", "namespace": "default"},
        "spec": {"hostname": sim.host_port(), "commandSecretName": "absent", "certificateTemplate": "WebServer1y", "certificateAuthorityLogicalName": "Sub-CA"}});
    issuer_api(&client, "Issuer", Some("default"))
        .create(&PostParams::default(), &serde_json::from_value(down)?)
        .await?;
    let _ctl = Controller::start(
        cp.admin_kubeconfig(),
        &[
            "--cluster-resource-namespace=command-issuer-system",
            "--max-retry-duration=3s",
        ],
    )?;

    let (pem, _) = make_csr("bad-template.example.com", &[])?;
    create_certificate_request(
        &client,
        "default",
        "bad-template",
        &pem,
        "Issuer",
        "issuer-sample",
        &[("command-issuer.keyfactor.com/certificateTemplate", "Nope")],
    )
    .await?;
    let (pem2, _) = make_csr("waiting.example.com", &[])?;
    create_certificate_request(&client, "default", "waiting", &pem2, "Issuer", "down", &[]).await?;
    let t0 = Instant::now();
    approve(&client, "default", "bad-template").await?;
    approve(&client, "default", "waiting").await?;

    let first = wait_cr_reason(
        &client,
        "default",
        "bad-template",
        "Pending",
        Duration::from_secs(10),
    )
    .await?;
    ensure!(
        first
            .message
            .contains("Verify that certificate template 'Nope' exists"),
        "{first:?}"
    );
    let failed = wait_cr_reason(
        &client,
        "default",
        "bad-template",
        "Failed",
        Duration::from_secs(20),
    )
    .await?;
    println!(
        "permanent error → Failed after {:.1}s (max retry duration 3s)",
        t0.elapsed().as_secs_f64()
    );
    // Approval times are stored with second precision, so the controller's clock may start up to
    // one second before t0.
    ensure!(
        t0.elapsed() >= Duration::from_secs(2),
        "gave up before the max retry duration"
    );
    ensure!(
        failed.message.ends_with("(gave up after retrying for 3s)")
            && failed.message.contains("certificate template 'Nope'"),
        "{failed:?}"
    );
    let cr = get_certificate_request(&client, "default", "bad-template").await?;
    ensure!(
        cr.data["status"]["failureTime"].is_string(),
        "failureTime set"
    );
    let events = wait_event(&client, "default", "bad-template", "Failed").await?;
    ensure!(
        events.iter().any(|e| e.reason.as_deref() == Some("Failed")),
        "Failed Event"
    );

    let waiting = ready_condition(&client, "default", "waiting")
        .await?
        .ok_or_else(|| anyhow::anyhow!("no Ready"))?;
    ensure!(
        waiting.reason == "Pending" && waiting.message == "issuer is not ready",
        "transient error must keep waiting: {waiting:?}"
    );
    Ok(())
}
