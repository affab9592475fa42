//! The foundation, end to end on a real kube-apiserver with the Command simulator: the controller
//! runs under the Helm chart's own ServiceAccount (no admin identity) and each acceptance case of
//! the foundation issue is checked against what the apiserver and the simulator recorded.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use command_issuer_e2e::fixtures::{
    get_plain, install_credentials, issuer_api, point_at_sim, wait_cr_reason, wait_event,
    wait_issuer_ready as wait_issuer,
};
use command_issuer_e2e::{
    approve, create_certificate_request, deny, get_certificate_request, make_csr, status_ca,
    status_certificate, tool_path, verify_chain, wait_for, ControlPlane, Controller, Sim,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::core::DynamicObject;
use kube::Client;
use serde_json::{json, Value};

const NS_SYS: &str = "command-issuer-system";
const RELEASE: &str = "command-cert-manager-issuer";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cond(obj: &DynamicObject, type_: &str) -> Option<Value> {
    obj.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

struct Env {
    cp: ControlPlane,
    sim: Sim,
    ctl: Controller,
    client: Client,
    sa_kubeconfig: PathBuf,
}

async fn helm(cp: &ControlPlane, args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new(tool_path("helm")?)
        .arg("--kubeconfig")
        .arg(cp.admin_kubeconfig())
        .args(args)
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn start_env() -> Result<Env> {
    let crds = repo().join("crds");
    let cp = ControlPlane::start_with_crds(&[crds.as_path()]).await?;
    let client = cp.client();
    cp.create_namespace(NS_SYS).await?;
    let chart = repo().join("chart");
    helm(
        &cp,
        &[
            "install",
            RELEASE,
            &chart.to_string_lossy(),
            "--namespace",
            NS_SYS,
            "--set",
            "crd.create=false",
        ],
    )
    .await?;
    let sa_kubeconfig = cp.service_account_kubeconfig(NS_SYS, RELEASE).await?;
    let sim = Sim::start_default().await?;
    install_credentials(&cp, &sim, &[("zzz.crt", "not a certificate")]).await?;
    let ctl = Controller::start(
        &sa_kubeconfig,
        &[
            "--cluster-resource-namespace=command-issuer-system",
            "--metrics-bind-address=127.0.0.1:0",
        ],
    )?;
    Ok(Env {
        cp,
        sim,
        ctl,
        client,
        sa_kubeconfig,
    })
}

fn op_id_of(events: &[k8s_openapi::api::events::v1::Event]) -> Option<String> {
    events.iter().find_map(|e| {
        let note = e.note.as_deref()?;
        let start = note.find("[op ")? + 4;
        let end = note[start..].find(']')? + start;
        Some(note[start..end].to_string())
    })
}

async fn listener(ctl: &mut Controller, what: &str) -> Result<String> {
    let line = ctl.wait_for_log(what, Duration::from_secs(20)).await?;
    let v: Value = serde_json::from_str(&line).context("log line is JSON")?;
    Ok(v["addr"].as_str().context("addr field")?.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foundation_acceptance() -> Result<()> {
    let mut env = start_env().await?;
    let r = run_cases(&mut env).await;
    if r.is_err() {
        env.cp.keep_on_drop(true);
        eprintln!(
            "---- controller log tail ----\n{}",
            tail(&env.ctl.logs(), 60)
        );
    }
    r
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

async fn run_cases(env: &mut Env) -> Result<()> {
    probes_flip_ready(env)
        .await
        .context("case: /healthz and /readyz")?;
    issued_after_approval(env)
        .await
        .context("case: approved request issued")?;
    denied_request(env).await.context("case: denied request")?;
    cluster_issuer(env).await.context("case: ClusterIssuer")?;
    missing_secret_heals(env)
        .await
        .context("case: missing Secret heals")?;
    missing_issuer_pending(env)
        .await
        .context("case: missing issuer")?;
    rbac_is_least_privilege(env).await.context("case: RBAC")?;
    metrics_move(env).await.context("case: /metrics")?;
    no_secret_in_logs_events_or_status(env)
        .await
        .context("case: secrets stay secret")?;
    Ok(())
}

async fn probes_flip_ready(env: &mut Env) -> Result<()> {
    let addr = listener(&mut env.ctl, "serving /healthz and /readyz").await?;
    let (code, _) = get_plain(&addr, "/healthz").await.context("/healthz")?;
    ensure!(code == 200, "/healthz answered {code}");
    let (code, body) = wait_for(Duration::from_secs(20), "/readyz 200", || {
        let addr = addr.clone();
        async move { get_plain(&addr, "/readyz").await.filter(|(c, _)| *c == 200) }
    })
    .await?;
    ensure!(code == 200 && body == "ok", "/readyz: {code} {body}");
    Ok(())
}

async fn issued_after_approval(env: &mut Env) -> Result<()> {
    env.cp
        .apply_file(&repo().join("docs/examples/issuer.yaml"))
        .await?;
    point_at_sim(
        &env.client,
        &env.sim,
        "Issuer",
        Some("default"),
        "issuer-sample",
    )
    .await?;
    let ready = wait_issuer(
        &env.client,
        "Issuer",
        Some("default"),
        "issuer-sample",
        "True",
        Duration::from_secs(30),
    )
    .await?;
    ensure!(
        ready["reason"] == "Success" && ready["message"] == "Health check succeeded",
        "issuer Ready: {ready}"
    );
    let issuer = issuer_api(&env.client, "Issuer", Some("default"))
        .get("issuer-sample")
        .await?;
    let sm = cond(&issuer, "SupportsMetadata").context("SupportsMetadata condition")?;
    ensure!(
        sm["status"] == "True",
        "SupportsMetadata (the seven fields are split over two pages in the simulator): {sm}"
    );

    let (pem_idle, der_idle) = make_csr("idle.example.com", &["idle.example.com"])?;
    let (pem, der) = make_csr("app.example.com", &["app.example.com"])?;
    create_certificate_request(
        &env.client,
        "default",
        "never-approved",
        &pem_idle,
        "Issuer",
        "issuer-sample",
        &[],
    )
    .await?;
    create_certificate_request(
        &env.client,
        "default",
        "approved-later",
        &pem,
        "Issuer",
        "issuer-sample",
        &[],
    )
    .await?;
    let t0 = Instant::now();
    approve(&env.client, "default", "approved-later").await?;
    let c = wait_cr_reason(
        &env.client,
        "default",
        "approved-later",
        "Issued",
        Duration::from_secs(10),
    )
    .await?;
    let took = t0.elapsed();
    println!("approval → Ready=True in {:.3}s", took.as_secs_f64());
    ensure!(c.status == "True" && c.message == "Signed", "{c:?}");
    let cr = get_certificate_request(&env.client, "default", "approved-later").await?;
    let cert = status_certificate(&cr)?.context("status.certificate")?;
    let ca = status_ca(&cr)?.context("status.ca")?;
    ensure!(
        ca.trim() == env.sim.root_pem().trim(),
        "status.ca is the simulator's root"
    );
    let path = verify_chain(&cert, &ca)?;
    println!("chain verified: {path}");
    ensure!(
        cert.matches("BEGIN CERTIFICATE").count() == 2,
        "leaf + intermediate, root left out"
    );
    ensure!(
        env.sim.enrollment_count(&der).await? == 1,
        "exactly one enrollment for the request"
    );

    // The never-approved request was created first; the approved one is done, so the
    // controller has seen both: the unapproved one must be untouched.
    let idle = get_certificate_request(&env.client, "default", "never-approved").await?;
    ensure!(
        idle.data["status"].get("conditions").is_none()
            || idle.data["status"]["conditions"]
                .as_array()
                .is_some_and(|a| a.is_empty()),
        "unapproved request was touched: {}",
        idle.data["status"]
    );
    ensure!(
        env.sim.enrollment_count(&der_idle).await? == 0,
        "unapproved request was enrolled"
    );

    // One op id from watch event to status patch: Event, logs, Command metadata.
    let events = wait_event(&env.client, "default", "approved-later", "Issued").await?;
    ensure!(
        events.iter().any(|e| e.reason.as_deref() == Some("Issued")),
        "Issued Event: {events:?}"
    );
    let op = op_id_of(&events).context("op id in the Event message")?;
    let lines: Vec<Value> = env
        .ctl
        .log_records()
        .into_iter()
        .filter(|r| r["op_id"] == op.as_str())
        .collect();
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    println!("log lines for op {op}: {messages:?}");
    for want in [
        "watch event",
        "signing",
        "calling Command POST /Enrollment/CSR",
        "Command answered",
        "status patched",
    ] {
        ensure!(
            messages.contains(&want),
            "no {want:?} line with op_id {op}: {messages:?}"
        );
    }
    let rec = env
        .sim
        .enrollments()
        .await?
        .into_iter()
        .find(|e| e["subject_cn"] == "app.example.com")
        .context("simulator record")?;
    ensure!(
        rec["metadata"]["Controller-Reconcile-Id"] == op.as_str(),
        "Controller-Reconcile-Id carries the op id: {}",
        rec["metadata"]
    );
    ensure!(
        rec["metadata"]["Controller-Kind"] == "Issuer"
            && rec["metadata"]["Issuer-Namespace"] == "default",
        "metadata: {}",
        rec["metadata"]
    );
    ensure!(
        rec["metadata"]["ResponsibleTeam"].is_null(),
        "no custom metadata on this request"
    );
    Ok(())
}

async fn denied_request(env: &mut Env) -> Result<()> {
    let (pem, der) = make_csr("denied.example.com", &["denied.example.com"])?;
    create_certificate_request(
        &env.client,
        "default",
        "denied",
        &pem,
        "Issuer",
        "issuer-sample",
        &[],
    )
    .await?;
    deny(&env.client, "default", "denied").await?;
    let c = wait_cr_reason(
        &env.client,
        "default",
        "denied",
        "Denied",
        Duration::from_secs(10),
    )
    .await?;
    ensure!(
        c.status == "False"
            && c.message == "The CertificateRequest was denied by an approval controller",
        "{c:?}"
    );
    let cr = get_certificate_request(&env.client, "default", "denied").await?;
    ensure!(
        cr.data["status"]["failureTime"].is_string(),
        "failureTime set"
    );
    ensure!(
        env.sim.enrollment_count(&der).await? == 0,
        "denied request enrolled"
    );
    let events = wait_event(&env.client, "default", "denied", "Denied").await?;
    ensure!(
        events.iter().any(|e| e.reason.as_deref() == Some("Denied")),
        "Denied Event"
    );
    Ok(())
}

async fn cluster_issuer(env: &mut Env) -> Result<()> {
    env.cp
        .apply_file(&repo().join("docs/examples/clusterissuer.yaml"))
        .await?;
    point_at_sim(
        &env.client,
        &env.sim,
        "ClusterIssuer",
        None,
        "clusterissuer-sample",
    )
    .await?;
    wait_issuer(
        &env.client,
        "ClusterIssuer",
        None,
        "clusterissuer-sample",
        "True",
        Duration::from_secs(30),
    )
    .await?;
    env.cp.create_namespace("team-b").await?;
    let (pem, der) = make_csr("b.example.com", &["b.example.com"])?;
    create_certificate_request(
        &env.client,
        "team-b",
        "via-cluster-issuer",
        &pem,
        "ClusterIssuer",
        "clusterissuer-sample",
        &[],
    )
    .await?;
    approve(&env.client, "team-b", "via-cluster-issuer").await?;
    wait_cr_reason(
        &env.client,
        "team-b",
        "via-cluster-issuer",
        "Issued",
        Duration::from_secs(10),
    )
    .await?;
    ensure!(env.sim.enrollment_count(&der).await? == 1);
    let rec = env
        .sim
        .enrollments()
        .await?
        .into_iter()
        .find(|e| e["subject_cn"] == "b.example.com")
        .context("record")?;
    ensure!(
        rec["metadata"]["Controller-Kind"] == "ClusterIssuer"
            && rec["metadata"]["Issuer-Namespace"] == "",
        "ClusterIssuer metadata: {}",
        rec["metadata"]
    );
    Ok(())
}

async fn missing_secret_heals(env: &mut Env) -> Result<()> {
    let issuer = json!({
        "apiVersion": "command-issuer.keyfactor.com/v1alpha1", "kind": "Issuer",
        "metadata": {"name": "heal", "namespace": "default"},
        "spec": {"hostname": env.sim.host_port(), "commandSecretName": "heal-secret", "caSecretName": "command-ca-secret",
                 "caBundleKey": "ca.crt", "certificateTemplate": "WebServer1y", "certificateAuthorityLogicalName": "Sub-CA"},
    });
    let api = issuer_api(&env.client, "Issuer", Some("default"));
    api.create(&PostParams::default(), &serde_json::from_value(issuer)?)
        .await?;
    let c = wait_issuer(
        &env.client,
        "Issuer",
        Some("default"),
        "heal",
        "False",
        Duration::from_secs(20),
    )
    .await?;
    let want = "failed to get Secret containing Issuer credentials, secret name: heal-secret, reason: secrets \"heal-secret\" not found";
    ensure!(
        c["message"] == want && c["reason"] == "command-issuer.IssuerController.Reconcile",
        "issuer condition: {c}"
    );
    let (pem, der) = make_csr("heal.example.com", &["heal.example.com"])?;
    create_certificate_request(
        &env.client,
        "default",
        "waits-for-issuer",
        &pem,
        "Issuer",
        "heal",
        &[],
    )
    .await?;
    approve(&env.client, "default", "waits-for-issuer").await?;
    let p = wait_cr_reason(
        &env.client,
        "default",
        "waits-for-issuer",
        "Pending",
        Duration::from_secs(10),
    )
    .await?;
    ensure!(p.message == "issuer is not ready", "{p:?}");
    ensure!(env.sim.enrollment_count(&der).await? == 0);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "heal-secret"}, "type": "kubernetes.io/basic-auth",
        "stringData": {"username": "CORP\\issuer", "password": "sim-password-2"},
    }))?;
    let t0 = Instant::now();
    Api::<Secret>::namespaced(env.client.clone(), NS_SYS)
        .create(&PostParams::default(), &secret)
        .await?;
    wait_issuer(
        &env.client,
        "Issuer",
        Some("default"),
        "heal",
        "True",
        Duration::from_secs(10),
    )
    .await?;
    wait_cr_reason(
        &env.client,
        "default",
        "waits-for-issuer",
        "Issued",
        Duration::from_secs(10),
    )
    .await?;
    println!(
        "Secret created → issuer Ready and request Issued in {:.3}s, no restart",
        t0.elapsed().as_secs_f64()
    );
    ensure!(env.ctl.is_running(), "controller still the same process");
    ensure!(env.sim.enrollment_count(&der).await? == 1);
    let events = wait_event(&env.client, "default", "waits-for-issuer", "Issued").await?;
    let reasons: Vec<_> = events.iter().filter_map(|e| e.reason.clone()).collect();
    ensure!(
        reasons.contains(&"Pending".to_string()) && reasons.contains(&"Issued".to_string()),
        "Events on every transition: {reasons:?}"
    );
    Ok(())
}

async fn missing_issuer_pending(env: &mut Env) -> Result<()> {
    let (pem, _) = make_csr("orphan.example.com", &["orphan.example.com"])?;
    create_certificate_request(
        &env.client,
        "default",
        "orphan",
        &pem,
        "Issuer",
        "does-not-exist",
        &[],
    )
    .await?;
    approve(&env.client, "default", "orphan").await?;
    let p = wait_cr_reason(
        &env.client,
        "default",
        "orphan",
        "Pending",
        Duration::from_secs(10),
    )
    .await?;
    ensure!(
        p.message == "error getting issuer: issuers.command-issuer.keyfactor.com \"does-not-exist\" not found",
        "{p:?}"
    );
    Ok(())
}

async fn rbac_is_least_privilege(env: &mut Env) -> Result<()> {
    let sa = command_issuer_e2e::client_from_kubeconfig(&env.sa_kubeconfig).await?;
    // What the controller needs works (it has been issuing under this identity all along) …
    let crs = command_issuer_e2e::k8s::certificate_requests(&sa, "default");
    crs.list(&ListParams::default().limit(1))
        .await
        .context("SA lists CertificateRequests")?;
    // … and what it must not do is refused.
    let forbidden = |r: std::result::Result<(), kube::Error>, what: &str| -> Result<()> {
        match r {
            Err(e) if command_issuer_e2e::is_api_status(&e, 403) => Ok(()),
            Err(e) => bail!("{what}: expected 403, got {e}"),
            Ok(()) => bail!("{what}: allowed, but the chart must not grant it"),
        }
    };
    let secrets_default: Api<Secret> = Api::namespaced(sa.clone(), "default");
    forbidden(
        secrets_default
            .list(&ListParams::default())
            .await
            .map(|_| ()),
        "list Secrets outside the release namespace",
    )?;
    forbidden(
        crs.delete("orphan", &DeleteParams::default())
            .await
            .map(|_| ()),
        "delete a CertificateRequest",
    )?;
    let obj = crs.get("orphan").await?;
    forbidden(
        crs.replace("orphan", &PostParams::default(), &obj)
            .await
            .map(|_| ()),
        "update a CertificateRequest",
    )?;
    let issuers = issuer_api(&sa, "Issuer", Some("default"));
    forbidden(
        issuers
            .delete("heal", &DeleteParams::default())
            .await
            .map(|_| ()),
        "delete an Issuer",
    )?;
    Ok(())
}

async fn no_secret_in_logs_events_or_status(env: &mut Env) -> Result<()> {
    // Passwords of every credential Secret this run used.
    let secrets = ["sim-password-1", "sim-password-2"];
    let logs = env.ctl.logs();
    let events = kube::Api::<k8s_openapi::api::events::v1::Event>::all(env.client.clone())
        .list(&ListParams::default())
        .await?;
    let events = serde_json::to_string(&events.items)?;
    let crs = command_issuer_e2e::k8s::certificate_requests(&env.client, "default")
        .list(&ListParams::default())
        .await?;
    let statuses = serde_json::to_string(
        &crs.items
            .iter()
            .map(|c| &c.data["status"])
            .collect::<Vec<_>>(),
    )?;
    let issuers = issuer_api(&env.client, "Issuer", Some("default"))
        .list(&ListParams::default())
        .await?;
    let issuer_statuses = serde_json::to_string(
        &issuers
            .items
            .iter()
            .map(|c| &c.data["status"])
            .collect::<Vec<_>>(),
    )?;
    for s in secrets {
        for (what, text) in [
            ("log", &logs),
            ("Events", &events),
            ("request status", &statuses),
            ("issuer status", &issuer_statuses),
        ] {
            ensure!(
                !text.contains(s),
                "a password appeared in the controller's {what}"
            );
        }
    }
    ensure!(
        !logs.contains("Basic "),
        "an Authorization header value reached the log"
    );
    Ok(())
}

async fn metrics_move(env: &mut Env) -> Result<()> {
    let addr = listener(&mut env.ctl, "serving /metrics").await?;
    let (code, body) = get_plain(&addr, "/metrics").await.context("/metrics")?;
    ensure!(code == 200, "/metrics answered {code}");
    let value = |name: &str| -> f64 {
        body.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    ensure!(
        value("command_issuer_enrollments_total{outcome=\"issued\"}") >= 3.0,
        "issued counter:\n{body}"
    );
    ensure!(value("command_issuer_command_requests_total{endpoint=\"POST /Enrollment/CSR\",status=\"200\"}") >= 3.0, "Command call counter:\n{body}");
    ensure!(
        value("command_issuer_enrollment_duration_seconds_count") >= 3.0,
        "duration histogram:\n{body}"
    );
    ensure!(body.contains("command_issuer_issuer_ready{kind=\"Issuer\",namespace=\"default\",name=\"issuer-sample\"} 1"), "issuer gauge:\n{body}");
    Ok(())
}
