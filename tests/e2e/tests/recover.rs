//! Exactly one enrollment across a crash: the intent is recorded on the request before Command
//! is called; a controller that finds such an intent without a result looks for the certificate
//! carrying the request's uid as Controller-Reconcile-Id before enrolling again.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use command_issuer_e2e::fixtures::{
    install_example_issuer, repo_file, wait_cr_reason, wait_issuer_ready,
};
use command_issuer_e2e::{
    approve, create_certificate_request, get_certificate_request, make_csr, status_ca,
    status_certificate, verify_chain, ControlPlane, Controller, Sim,
};
use serde_json::json;

const INTENT: &str = "command-issuer.keyfactor.com/enrollment-intent";

/// What a controller that crashed right after Command answered leaves behind: an enrollment in
/// Command carrying its op id, and nothing on the request but the intent.
async fn enroll_directly(sim: &Sim, csr_pem: &str, op_id: &str) -> Result<()> {
    let metadata = json!({
        "Controller-Namespace": "command-issuer-system", "Controller-Kind": "Issuer",
        "Controller-Resource-Group-Name": "command-issuer.keyfactor.com", "Issuer-Name": "issuer-sample",
        "Issuer-Namespace": "default", "Controller-Reconcile-Id": op_id,
        "Certificate-Signing-Request-Namespace": "default",
    });
    let body = json!({"CSR": csr_pem, "CertificateAuthority": "Sub-CA", "Template": "WebServer1y", "EnrollmentPatternId": null,
        "IncludeChain": true, "Metadata": metadata, "OwnerRoleId": null, "OwnerRoleName": null, "SANs": {}, "Timestamp": "2026-01-01T00:00:00Z"});
    let ca = sim.dir().join("state").join("tls-ca.pem");
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-f", "--cacert"])
        .arg(&ca)
        .args([
            "-u",
            "command-issuer:sim-password-1",
            "-H",
            "x-keyfactor-requested-with: APIClient",
            "-H",
            "x-certificateformat: PEM",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body.to_string(),
            &format!("{}/KeyfactorAPI/Enrollment/CSR", sim.url()),
        ])
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "direct enrollment: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_enrollment_is_recovered_not_repeated() -> Result<()> {
    let cp = ControlPlane::start_with_crds(&[repo_file("crds").as_path()]).await?;
    let client = cp.client();
    let sim = Sim::start_default().await?;
    install_example_issuer(&cp, &sim).await?;

    let (pem, der) = make_csr("crashed.example.com", &[])?;
    create_certificate_request(
        &client,
        "default",
        "crashed",
        &pem,
        "Issuer",
        "issuer-sample",
        &[(INTENT, "op-before-crash")],
    )
    .await?;
    // The earlier attempt's certificate carries the request's uid, the key the controller looks
    // up by (the intent's value is only a marker a user could have written).
    let uid = get_certificate_request(&client, "default", "crashed")
        .await?
        .metadata
        .uid
        .context("uid")?;
    enroll_directly(&sim, &pem, &uid).await?;
    ensure!(sim.enrollment_count(&der).await? == 1);
    approve(&client, "default", "crashed").await?;
    let (pem2, der2) = make_csr("never-reached.example.com", &[])?;
    create_certificate_request(
        &client,
        "default",
        "never-reached",
        &pem2,
        "Issuer",
        "issuer-sample",
        &[(INTENT, "op-lost")],
    )
    .await?;
    approve(&client, "default", "never-reached").await?;

    let ctl = Controller::start(
        cp.admin_kubeconfig(),
        &["--cluster-resource-namespace=command-issuer-system"],
    )?;
    wait_issuer_ready(
        &client,
        "Issuer",
        Some("default"),
        "issuer-sample",
        "True",
        Duration::from_secs(20),
    )
    .await?;
    wait_cr_reason(
        &client,
        "default",
        "crashed",
        "Issued",
        Duration::from_secs(15),
    )
    .await?;
    ensure!(
        sim.enrollment_count(&der).await? == 1,
        "the interrupted enrollment was repeated"
    );
    let cr = get_certificate_request(&client, "default", "crashed").await?;
    verify_chain(
        &status_certificate(&cr)?.context("certificate")?,
        &status_ca(&cr)?.context("ca")?,
    )?;
    ensure!(ctl
        .logs()
        .contains("recovered the certificate of an interrupted enrollment"));

    // An intent whose op id never reached Command: enrolled once now, under a new intent.
    wait_cr_reason(
        &client,
        "default",
        "never-reached",
        "Issued",
        Duration::from_secs(15),
    )
    .await?;
    ensure!(sim.enrollment_count(&der2).await? == 1);
    let cr2 = get_certificate_request(&client, "default", "never-reached").await?;
    let intent = cr2
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INTENT))
        .context("intent")?;
    ensure!(
        intent != "op-lost",
        "the new attempt recorded its own op id before calling Command"
    );
    Ok(())
}
