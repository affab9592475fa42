//! With the real cert-manager controller (v1.11.5): a Certificate from docs/examples becomes a
//! CertificateRequest, cert-manager's approver approves it, command-issuer signs it through the
//! simulator, and the Secret holds the leaf first in tls.crt and the root in ca.crt.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use command_issuer_e2e::fixtures::install_example_issuer;
use command_issuer_e2e::{verify_chain, wait_for, CertManager, ControlPlane, Controller, Sim};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use x509_parser::pem::Pem;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn subjects(pem: &str) -> Result<Vec<String>> {
    Pem::iter_from_buffer(pem.as_bytes())
        .map(|p| {
            let p = p?;
            let c = p.parse_x509()?;
            Ok(c.subject().to_string())
        })
        .collect()
}

/// Waits (bounded) until cert-manager reports the Certificate Ready.
async fn certificate_ready(certs: &Api<DynamicObject>, name: &str) -> Result<()> {
    wait_for(
        Duration::from_secs(90),
        &format!("Certificate default/{name} Ready=True"),
        || {
            let certs = certs.clone();
            async move {
                let c = certs.get(name).await.ok()?;
                c.data["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .any(|x| x["type"] == "Ready" && x["status"] == "True")
                    .then_some(())
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_becomes_secret_through_real_cert_manager() -> Result<()> {
    let crds = repo().join("crds");
    let cp = ControlPlane::start_with_crds(&[crds.as_path()]).await?;
    let client = cp.client();
    let sim = Sim::start_default().await?;
    install_example_issuer(&cp, &sim).await?;
    let _cm = CertManager::start(&cp, "cert-manager").await?;
    let _ctl = Controller::start(
        cp.admin_kubeconfig(),
        &["--cluster-resource-namespace=command-issuer-system"],
    )?;
    cp.apply_file(&repo().join("docs/examples/certificate.yaml"))
        .await?;

    let cert_ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "cert-manager.io",
        "v1",
        "Certificate",
    ));
    let certs: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &cert_ar);
    certificate_ready(&certs, "command-certificate").await?;

    // The request cert-manager created was approved by cert-manager itself, not by the test.
    let crs = command_issuer_e2e::k8s::certificate_requests(&client, "default");
    let list = crs.list(&Default::default()).await?;
    let cr = list
        .items
        .first()
        .context("cert-manager created a CertificateRequest")?;
    let approved = command_issuer_e2e::condition(cr, "Approved").context("Approved condition")?;
    ensure!(
        approved.is_true() && approved.reason == "cert-manager.io",
        "approved by cert-manager: {approved:?}"
    );

    let secret = Api::<Secret>::namespaced(client.clone(), "default")
        .get("command-certificate")
        .await?;
    let data = secret.data.context("Secret data")?;
    let tls = String::from_utf8(data.get("tls.crt").context("tls.crt")?.0.clone())?;
    let ca = String::from_utf8(data.get("ca.crt").context("ca.crt")?.0.clone())?;
    let chain = subjects(&tls)?;
    println!("tls.crt: {chain:?}; ca.crt: {:?}", subjects(&ca)?);
    ensure!(
        chain.first().map(String::as_str) == Some("CN=app.example.com"),
        "leaf first: {chain:?}"
    );
    ensure!(
        chain.len() == 2 && chain[1] == "CN=Sim Issuing CA",
        "then the intermediate: {chain:?}"
    );
    ensure!(subjects(&ca)? == ["CN=Sim Root CA"], "ca.crt is the root");
    verify_chain(&tls, &ca)?;
    let rec = sim
        .enrollments()
        .await?
        .into_iter()
        .find(|e| e["subject_cn"] == "app.example.com")
        .context("simulator record")?;
    ensure!(
        rec["metadata"]["ResponsibleTeam"] == "team@example.com",
        "the Certificate's metadata annotation reached Command through the CertificateRequest: {}",
        rec["metadata"]
    );

    // docs/examples/certificate-overrides.yaml: annotations on a Certificate reach Command.
    cp.apply_file(&repo().join("docs/examples/certificate-overrides.yaml"))
        .await?;
    certificate_ready(&certs, "pattern-certificate").await?;
    let rec = sim
        .enrollments()
        .await?
        .into_iter()
        .find(|e| e["subject_cn"] == "pattern.example.com")
        .context("simulator record")?;
    ensure!(
        rec["enrollment_pattern_id"] == 1,
        "pattern name resolved to id 1: {rec}"
    );
    ensure!(
        rec["metadata"]["ResponsibleTeam"] == "platform@example.com",
        "custom metadata: {}",
        rec["metadata"]
    );
    ensure!(
        rec["owner_role"].to_string().contains("IssuerRole"),
        "owner role: {}",
        rec["owner_role"]
    );
    Ok(())
}
