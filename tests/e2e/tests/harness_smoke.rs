//! Smoke test of the harness itself: the control plane serves, RBAC is real, the real
//! cert-manager issues through its full pipeline, and the apiserver survives a restart.

use std::time::{Duration, Instant};

use anyhow::Result;
use command_issuer_e2e::k8s::{cert_manager_resource, condition, is_api_status};
use command_issuer_e2e::verify::leaf_dns_names;
use command_issuer_e2e::wait::log;
use command_issuer_e2e::{
    approve, client_from_kubeconfig, cr_certificate, create_certificate_request, deny, events_for,
    get_certificate_request, make_csr, ready_condition, run_kubectl, verify_chain, wait_for,
    CertManager, ControlPlane, Controller, Sim, CERT_MANAGER_VERSION,
};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};

async fn namespace_names(client: &Client) -> Result<Vec<String>> {
    let api: Api<Namespace> = Api::all(client.clone());
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect())
}

const ISSUER: &str = r#"
apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {name: selfsigned, namespace: cm-smoke}
spec: {selfSigned: {}}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: smoke, namespace: cm-smoke}
spec:
  secretName: smoke-tls
  commonName: smoke.e2e.test
  dnsNames: [smoke.e2e.test]
  duration: 1h
  issuerRef: {name: selfsigned, kind: Issuer}
"#;

async fn cert_manager_self_signed_pipeline(cp: &ControlPlane) -> Result<()> {
    let client = cp.client();
    let t = Instant::now();
    let cm = CertManager::start(cp, "cert-manager").await?;
    cp.create_namespace("cm-smoke").await?;
    cp.apply_yaml(ISSUER).await?;

    let certs: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "cm-smoke",
        &cert_manager_resource("Certificate"),
    );
    let ready = wait_for(
        Duration::from_secs(90),
        "Certificate cm-smoke/smoke Ready",
        || {
            let certs = certs.clone();
            async move {
                let c = certs.get("smoke").await.ok()?;
                condition(&c, "Ready").filter(|c| c.is_true())
            }
        },
    )
    .await;
    if let Err(e) = ready {
        panic!("{e}\ncert-manager log tail:\n{}", tail(&cm.logs(), 40));
    }
    log(format!(
        "cert-manager {CERT_MANAGER_VERSION}: Certificate Ready {:.2?} after start (cert-manager up in {:.2?})",
        t.elapsed(),
        cm.started_in()
    ));

    // The CertificateRequest cert-manager made was approved by its own approver.
    let crs = command_issuer_e2e::k8s::certificate_requests(&client, "cm-smoke")
        .list(&ListParams::default())
        .await?
        .items;
    assert_eq!(crs.len(), 1, "one CertificateRequest expected");
    let approved = condition(&crs[0], "Approved").expect("Approved condition");
    assert!(approved.is_true(), "{approved:?}");
    assert_eq!(approved.reason, "cert-manager.io");
    assert!(condition(&crs[0], "Ready").is_some_and(|c| c.is_true()));

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "cm-smoke");
    let secret = secrets.get("smoke-tls").await?;
    let data = secret.data.unwrap_or_default();
    let crt = data.get("tls.crt").expect("tls.crt in the Secret");
    assert!(data.get("tls.key").is_some_and(|k| !k.0.is_empty()));
    let crt_pem = String::from_utf8(crt.0.clone())?;
    assert!(crt_pem.contains("BEGIN CERTIFICATE"));
    assert_eq!(
        leaf_dns_names(&crt_pem)?,
        vec!["smoke.e2e.test".to_string()]
    );
    Ok(())
}

async fn certificate_request_helpers(cp: &ControlPlane) -> Result<()> {
    let client = cp.client();
    let ns = "cr-smoke";
    cp.create_namespace(ns).await?;
    let (pem, _) = make_csr("cr.e2e.test", &["cr.e2e.test"])?;
    let anns = [("e2e.test/marker", "yes")];
    let cr = create_certificate_request(&client, ns, "a", &pem, "Issuer", "x", &anns).await?;
    let spec = &cr.data["spec"];
    assert_eq!(spec["issuerRef"]["group"], command_issuer_e2e::ISSUER_GROUP);
    assert_eq!(cr.metadata.annotations.unwrap()["e2e.test/marker"], "yes");

    // Another field manager writes Ready first; approving must keep it (list-map by type).
    let ready = serde_json::json!({
        "apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
        "metadata": {"name": "a", "namespace": ns},
        "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Pending",
            "message": "waiting", "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
    });
    command_issuer_e2e::k8s::certificate_requests(&client, ns)
        .patch_status(
            "a",
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(&ready),
        )
        .await?;
    approve(&client, ns, "a").await?;
    let obj = get_certificate_request(&client, ns, "a").await?;
    assert!(condition(&obj, "Approved").is_some_and(|c| c.is_true()));
    let r = ready_condition(&client, ns, "a")
        .await?
        .expect("Ready kept");
    assert_eq!((r.status.as_str(), r.reason.as_str()), ("False", "Pending"));
    assert_eq!(cr_certificate(&client, ns, "a").await?, None);

    create_certificate_request(&client, ns, "b", &pem, "ClusterIssuer", "x", &[]).await?;
    deny(&client, ns, "b").await?;
    let obj = get_certificate_request(&client, ns, "b").await?;
    assert!(condition(&obj, "Denied").is_some_and(|c| c.is_true()));
    assert!(condition(&obj, "Approved").is_none());

    let event: Event = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "a.e2e", "namespace": ns},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "e2e", "reportingInstance": "e2e-1",
        "action": "Test", "reason": "Smoke", "type": "Normal", "note": "hello",
        "regarding": {"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
            "name": "a", "namespace": ns},
    }))?;
    Api::<Event>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &event)
        .await?;
    let events = events_for(&client, ns, "a").await?;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason.as_deref(), Some("Smoke"));
    assert!(events_for(&client, ns, "b").await?.is_empty());
    Ok(())
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The simulator starts, its PKI chains up, and its admin API answers through our client.
#[tokio::test]
async fn sim_admin_api() {
    let sim = Sim::start_default().await.expect("command-sim");
    assert!(sim.url().starts_with("https://127.0.0.1:"), "{}", sim.url());
    assert_eq!(sim.host_port(), format!("127.0.0.1:{}", sim.port()));
    verify_chain(sim.issuing_pem(), sim.root_pem()).expect("issuing CA chains to root");
    sim.reset().await.unwrap();
    assert!(sim.enrollments().await.unwrap().is_empty());
    let (_, der) = make_csr("nobody.e2e.test", &["nobody.e2e.test"]).unwrap();
    assert_eq!(sim.enrollment_count(&der).await.unwrap(), 0);
    sim.requests().await.unwrap();
}

#[tokio::test]
async fn harness_smoke() {
    let t0 = Instant::now();
    let crds = command_issuer_e2e::paths::repo_root().join("crds");
    let mut cp = ControlPlane::start_with_crds(&[&crds])
        .await
        .expect("control plane");
    let admin = cp.client();

    // 1. The apiserver serves and the controller-manager's namespaces exist.
    let names = namespace_names(&admin).await.unwrap();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(names.iter().any(|n| n == ns), "{ns} missing from {names:?}");
    }
    let version = admin.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, command_issuer_e2e::KUBERNETES_VERSION);

    // 2. RBAC is enforced: a ServiceAccount identity cannot list Secrets, admin can.
    let sa_kubeconfig = cp
        .service_account_kubeconfig("rbac-smoke", "tester")
        .await
        .unwrap();
    let sa = client_from_kubeconfig(&sa_kubeconfig).await.unwrap();
    let err = Api::<Secret>::namespaced(sa, "rbac-smoke")
        .list(&ListParams::default())
        .await
        .expect_err("ServiceAccount must not list Secrets");
    assert!(is_api_status(&err, 403), "expected Forbidden, got {err}");
    Api::<Secret>::namespaced(admin.clone(), "rbac-smoke")
        .list(&ListParams::default())
        .await
        .expect("admin lists Secrets");
    let whoami = [
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ];
    let out = run_kubectl(&sa_kubeconfig, &whoami, None).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "system:serviceaccount:rbac-smoke:tester"
    );

    // 3. The real cert-manager pipeline: Certificate → CertificateRequest → approved → Secret.
    cert_manager_self_signed_pipeline(&cp).await.unwrap();

    // 4. CertificateRequest helpers: create, approve/deny by SSA without clobbering, events.
    certificate_request_helpers(&cp).await.unwrap();

    // 5. The controller binary runs under the harness (admin identity here) and stops on SIGTERM.
    cp.create_namespace(command_issuer_e2e::DEFAULT_CLUSTER_RESOURCE_NAMESPACE)
        .await
        .unwrap();
    let mut controller = Controller::start(cp.admin_kubeconfig(), &[]).unwrap();
    wait_for(
        Duration::from_secs(30),
        "a JSON log record from command-issuer",
        || {
            let n = controller.log_records().len();
            async move { (n > 0).then_some(()) }
        },
    )
    .await
    .unwrap();
    assert!(controller.is_running(), "{}", controller.logs());
    let status = controller.stop();
    log(format!(
        "command-issuer stopped on SIGTERM: {}",
        command_issuer_e2e::process::describe(status)
    ));

    // 6. Restart the apiserver on the same port and etcd; the same client works again.
    cp.stop_apiserver().unwrap();
    assert!(namespace_names(&admin).await.is_err(), "apiserver is down");
    cp.start_apiserver().await.unwrap();
    let names = wait_for(
        Duration::from_secs(30),
        "admin client after restart",
        || {
            let admin = admin.clone();
            async move { namespace_names(&admin).await.ok() }
        },
    )
    .await
    .unwrap();
    assert!(
        names.iter().any(|n| n == "cm-smoke"),
        "data survived in etcd"
    );
    log(format!("harness smoke passed in {:.2?}", t0.elapsed()));
}
