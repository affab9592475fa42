//! A request Command holds (approval workflow) keeps Pending with Command's message, its request
//! id is recorded on it, and neither this controller nor a restarted one enrolls it again.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use command_issuer_e2e::fixtures::{install_example_issuer, wait_cr_reason};
use command_issuer_e2e::{
    approve, create_certificate_request, get_certificate_request, make_csr, ready_condition,
    wait_for, ControlPlane, Controller, Sim,
};
use serde_json::{json, Value};

const ANNOTATION: &str = "command-issuer.keyfactor.com/keyfactor-request-id";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_request_is_never_enrolled_twice_even_across_a_restart() -> Result<()> {
    // The default simulator configuration plus a template whose requests wait for approval.
    let default = command_issuer_e2e::paths::default_sim_config();
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&default)?)?;
    let templates = config["templates"].as_array_mut().context("templates")?;
    let mut held = templates[0].clone();
    held["id"] = json!(99);
    held["short_name"] = json!("NeedsApproval");
    held["mode"] = json!("pending");
    templates.push(held);
    let dir = tempfile_dir()?;
    let path = dir.join("sim-held.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;

    let crds = command_issuer_e2e::fixtures::repo_file("crds");
    let cp = ControlPlane::start_with_crds(&[crds.as_path()]).await?;
    let client = cp.client();
    let sim = Sim::start(&path).await?;
    install_example_issuer(&cp, &sim).await?;
    let mut ctl = Controller::start(
        cp.admin_kubeconfig(),
        &["--cluster-resource-namespace=command-issuer-system"],
    )?;

    let (pem, der) = make_csr("held.example.com", &[])?;
    create_certificate_request(
        &client,
        "default",
        "held",
        &pem,
        "Issuer",
        "issuer-sample",
        &[(
            "command-issuer.keyfactor.com/certificateTemplate",
            "NeedsApproval",
        )],
    )
    .await?;
    approve(&client, "default", "held").await?;
    let c = wait_for(
        Duration::from_secs(10),
        "held request Pending with Command's message",
        || async {
            ready_condition(&client, "default", "held")
                .await
                .ok()
                .flatten()
                .filter(|c| {
                    c.reason == "Pending"
                        && c.message
                            .contains("Command holds the request (disposition PENDING")
                })
        },
    )
    .await?;
    let held_at = std::time::Instant::now();
    let cr = get_certificate_request(&client, "default", "held").await?;
    let id = cr
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION))
        .cloned()
        .context("request id annotation")?;
    ensure!(
        c.message.contains(&format!("request id {id}")),
        "message names the recorded id: {c:?}"
    );
    ensure!(sim.enrollment_count(&der).await? == 1);

    // Kill the controller and start a new one: it lists the held request at start-up. A fresh
    // request issued afterwards proves the new process has seen everything before it.
    ctl.kill();
    let _ctl2 = Controller::start(
        cp.admin_kubeconfig(),
        &[
            "--cluster-resource-namespace=command-issuer-system",
            "--pending-poll-interval=1s",
        ],
    )?;
    let (pem2, _) = make_csr("after-restart.example.com", &[])?;
    create_certificate_request(
        &client,
        "default",
        "after-restart",
        &pem2,
        "Issuer",
        "issuer-sample",
        &[],
    )
    .await?;
    approve(&client, "default", "after-restart").await?;
    wait_cr_reason(
        &client,
        "default",
        "after-restart",
        "Issued",
        Duration::from_secs(15),
    )
    .await?;
    ensure!(
        sim.enrollment_count(&der).await? == 1,
        "the held request was enrolled again after the restart"
    );
    let still = ready_condition(&client, "default", "held")
        .await?
        .context("Ready")?;
    ensure!(
        still.reason == "Pending" && still.message == c.message,
        "held request unchanged: {still:?}"
    );

    // An approver releases it in Command 30 s after it was held: the restarted controller's
    // follow-up (GET /Workflow/Certificates/{id}, the certificate by request id, download) issues
    // it, still with exactly one enrollment.
    wait_for(
        Duration::from_secs(40),
        "30 s to pass since the request was held",
        || async { (held_at.elapsed() >= Duration::from_secs(30)).then_some(()) },
    )
    .await?;
    let r = sim
        .admin_post(&format!("/_sim/enrollments/{id}/issue"), None)
        .await?;
    ensure!(r.status == 200, "release: {} {}", r.status, r.text());
    let released = std::time::Instant::now();
    wait_cr_reason(
        &client,
        "default",
        "held",
        "Issued",
        Duration::from_secs(15),
    )
    .await?;
    println!(
        "released 30 s later → Issued {:.1}s after release",
        released.elapsed().as_secs_f64()
    );
    ensure!(
        sim.enrollment_count(&der).await? == 1,
        "exactly one enrollment for the held request"
    );
    let cr = get_certificate_request(&client, "default", "held").await?;
    let cert = command_issuer_e2e::status_certificate(&cr)?.context("status.certificate")?;
    let ca = command_issuer_e2e::status_ca(&cr)?.context("status.ca")?;
    command_issuer_e2e::verify_chain(&cert, &ca)?;

    // A held request an approver denies in Command ends Failed, with the approver's comment.
    let (pem3, der3) = make_csr("denied-in-command.example.com", &[])?;
    create_certificate_request(
        &client,
        "default",
        "denied-in-command",
        &pem3,
        "Issuer",
        "issuer-sample",
        &[(
            "command-issuer.keyfactor.com/certificateTemplate",
            "NeedsApproval",
        )],
    )
    .await?;
    approve(&client, "default", "denied-in-command").await?;
    wait_cr_reason(
        &client,
        "default",
        "denied-in-command",
        "Pending",
        Duration::from_secs(10),
    )
    .await?;
    let cr3 = get_certificate_request(&client, "default", "denied-in-command").await?;
    let id3 = cr3
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION))
        .cloned()
        .context("request id annotation")?;
    sim.admin_post(&format!("/_sim/enrollments/{id3}/deny"), None)
        .await?;
    let f = wait_cr_reason(
        &client,
        "default",
        "denied-in-command",
        "Failed",
        Duration::from_secs(15),
    )
    .await?;
    ensure!(
        f.message
            == format!(
                "Command denied the request (request id {id3}): Denied by a Command approver"
            ),
        "{f:?}"
    );
    ensure!(sim.enrollment_count(&der3).await? == 1);
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("held-test-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
