//! Issuer lifetimes end to end ("Trustworthy core 1/2"): a deleted issuer stops calling Command
//! and drops its metric series, a re-created issuer (same namespace/name) talks only to its new
//! host, and a token endpoint answering `expires_in` = 2^63 neither kills the controller nor
//! keeps the issuer from becoming Ready.
//!
//! Calls are attributed to an issuer through the simulator's request log: each issuer has its
//! own credentials (Basic user), and `/_sim/requests` records the user every call presents.
//! Waits are bounded polls; the only fixed windows are the claims "nothing happens": a 3 s
//! settle for in-flight checks after a deletion, then one full health interval (30 s) + margin.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use command_issuer_e2e::fixtures::{
    get_plain, install_credentials, issue_and_wait, issuer_api, issuer_spec, repo_file,
    CONTROLLER_NAMESPACE,
};
use command_issuer_e2e::k8s::certificate_requests;
use command_issuer_e2e::process::describe;
use command_issuer_e2e::wait::{log, POLL_INTERVAL};
use command_issuer_e2e::{
    approve, condition, create_certificate_request, is_api_status, make_csr, ControlPlane,
    Controller, Sim,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::Client;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Settle after a deletion for checks that were already in flight.
const SETTLE: Duration = Duration::from_secs(3);
/// One full health interval (the 30 s minimum the issuers use) plus margin.
const QUIET_WINDOW: Duration = Duration::from_secs(35);
/// Bound on an issuer becoming Ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

fn health() -> Value {
    json!({"enabled": true, "interval": "30s"})
}

fn panicked_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("panicked"))
        .map(str::to_string)
        .collect()
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The controller is still the same running process and never panicked.
fn ensure_alive(ctl: &mut Controller) -> Result<()> {
    let panics = panicked_lines(&ctl.logs());
    ensure!(
        ctl.is_running(),
        "controller exited ({}); panics: {panics:?}; log tail:\n{}",
        describe(ctl.exit_status()),
        tail(&ctl.logs(), 20)
    );
    ensure!(panics.is_empty(), "controller log has panics: {panics:?}");
    Ok(())
}

/// Polls `check` until it yields `Some`, failing at once if the controller exits (with its
/// panics) and after `timeout` otherwise.
async fn wait_alive<T, F, Fut>(
    ctl: &mut Controller,
    timeout: Duration,
    what: &str,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if !ctl.is_running() {
            bail!(
                "controller exited ({}) while waiting for {what}; panics: {:?}",
                describe(ctl.exit_status()),
                panicked_lines(&ctl.logs())
            );
        }
        // A panic is a failure even when the process survives it (a dead actor).
        let panics = panicked_lines(&ctl.logs());
        ensure!(
            panics.is_empty(),
            "controller panicked while waiting for {what}: {panics:?}"
        );
        if start.elapsed() >= timeout {
            bail!("timed out after {:.1?} waiting for {what}", start.elapsed());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn create_secret(client: &Client, body: Value) -> Result<()> {
    Api::<Secret>::namespaced(client.clone(), CONTROLLER_NAMESPACE)
        .create(&PostParams::default(), &serde_json::from_value(body)?)
        .await?;
    Ok(())
}

/// A basic-auth credential Secret in the controller namespace.
async fn basic_secret(client: &Client, name: &str, user: &str, password: &str) -> Result<()> {
    create_secret(
        client,
        json!({"metadata": {"name": name}, "type": "kubernetes.io/basic-auth",
               "stringData": {"username": user, "password": password}}),
    )
    .await
}

/// A CA bundle Secret (`ca.crt`) in the controller namespace.
async fn ca_secret(client: &Client, name: &str, pem: &str) -> Result<()> {
    create_secret(
        client,
        json!({"metadata": {"name": name}, "stringData": {"ca.crt": pem}}),
    )
    .await
}

async fn create_issuer(
    client: &Client,
    kind: &str,
    ns: Option<&str>,
    name: &str,
    spec: Value,
) -> Result<()> {
    let mut metadata = json!({ "name": name });
    if let Some(ns) = ns {
        metadata["namespace"] = json!(ns);
    }
    let obj = json!({"apiVersion": "command-issuer.keyfactor.com/v1alpha1", "kind": kind,
                     "metadata": metadata, "spec": spec});
    issuer_api(client, kind, ns)
        .create(&PostParams::default(), &serde_json::from_value(obj)?)
        .await
        .with_context(|| format!("creating {kind} {name}"))?;
    Ok(())
}

/// Deletes an issuer and waits until the apiserver no longer has it.
async fn delete_issuer(
    ctl: &mut Controller,
    client: &Client,
    kind: &str,
    ns: Option<&str>,
    name: &str,
) -> Result<()> {
    let api = issuer_api(client, kind, ns);
    api.delete(name, &DeleteParams::default()).await?;
    wait_alive(
        ctl,
        Duration::from_secs(10),
        &format!("{kind} {name} gone"),
        || {
            let api = api.clone();
            async move {
                match api.get(name).await {
                    Err(e) if is_api_status(&e, 404) => Some(()),
                    _ => None,
                }
            }
        },
    )
    .await
}

/// Waits until the issuer's Ready condition is True; returns it.
async fn wait_ready(
    ctl: &mut Controller,
    client: &Client,
    kind: &str,
    ns: Option<&str>,
    name: &str,
) -> Result<Value> {
    let api = issuer_api(client, kind, ns);
    wait_alive(
        ctl,
        READY_TIMEOUT,
        &format!("{kind} {name} Ready=True"),
        || {
            let api = api.clone();
            async move {
                let o = api.get(name).await.ok()?;
                o.data["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == "Ready" && c["status"] == "True")
                    .cloned()
            }
        },
    )
    .await
}

/// The `addr` of the controller's "serving /metrics" log line.
async fn metrics_addr(ctl: &mut Controller) -> Result<String> {
    let line = ctl
        .wait_for_log("serving /metrics", Duration::from_secs(20))
        .await?;
    let v: Value = serde_json::from_str(&line).context("log line is JSON")?;
    Ok(v["addr"].as_str().context("addr field")?.to_string())
}

async fn metrics(addr: &str) -> Result<String> {
    let (code, body) = get_plain(addr, "/metrics").await.context("GET /metrics")?;
    ensure!(code == 200, "/metrics answered {code}");
    Ok(body)
}

/// The `command_issuer_issuer_ready` sample lines of one issuer.
fn ready_series(body: &str, kind: &str, ns: &str, name: &str) -> Vec<String> {
    let labels = [
        format!("kind=\"{kind}\""),
        format!("namespace=\"{ns}\""),
        format!("name=\"{name}\""),
    ];
    body.lines()
        .filter(|l| l.starts_with("command_issuer_issuer_ready{"))
        .filter(|l| labels.iter().all(|lab| l.contains(lab.as_str())))
        .map(str::to_string)
        .collect()
}

fn summary(r: &Value) -> String {
    format!(
        "#{} {} {} {} by {} → {}",
        r["seq"], r["time"], r["method"], r["path"], r["caller"], r["status"]
    )
}

fn seq(r: &Value) -> u64 {
    r["seq"].as_u64().unwrap_or(0)
}

/// Requests recorded after `mark` whose caller is one of `callers`.
async fn calls_after(sim: &Sim, mark: u64, callers: &[&str]) -> Result<Vec<Value>> {
    Ok(sim
        .requests()
        .await?
        .into_iter()
        .filter(|r| seq(r) > mark && callers.iter().any(|c| r["caller"] == *c))
        .collect())
}

fn sha256_hex(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn control_plane() -> Result<ControlPlane> {
    let cp = ControlPlane::start_with_crds(&[repo_file("crds").as_path()]).await?;
    cp.create_namespace(CONTROLLER_NAMESPACE).await?;
    Ok(cp)
}

/// Passes `r` through, keeping the control plane's work dir and printing the controller log tail when
/// it fails, so a failure can be read after the fact.
fn report<T>(cp: &mut ControlPlane, ctl: &Controller, r: Result<T>) -> Result<T> {
    if r.is_err() {
        cp.keep_on_drop(true);
        eprintln!(
            "---- controller log {} (tail) ----\n{}",
            ctl.log_path().display(),
            tail(&ctl.logs(), 60)
        );
    }
    r
}

// ---------------------------------------------------------------------------------------------
// 1. Deleted issuers stop calling Command and drop their metrics.
// ---------------------------------------------------------------------------------------------

const DOOMED_USER: &str = "lifetimes-issuer";
const DOOMED_CLUSTER_USER: &str = "lifetimes-cluster-issuer";
const KEEPER_USER: &str = "lifetimes-keeper";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_issuers_stop_calling_command_and_drop_their_metrics() -> Result<()> {
    // The default simulator plus one Basic user per issuer, so each call names its issuer.
    let mut config = Sim::default_config_json()?;
    let users = config["users"].as_array_mut().context("users")?;
    for user in [DOOMED_USER, DOOMED_CLUSTER_USER, KEEPER_USER] {
        users.push(
            json!({"username": user, "password": format!("{user}-pw"), "role": "IssuerRole"}),
        );
    }
    let sim = Sim::start_with_config_json(&config).await?;
    let mut cp = control_plane().await?;
    let client = cp.client();
    ca_secret(&client, "sim-ca", sim.tls_ca_pem()).await?;
    for user in [DOOMED_USER, DOOMED_CLUSTER_USER, KEEPER_USER] {
        basic_secret(&client, user, user, &format!("{user}-pw")).await?;
    }
    let mut ctl = Controller::start(
        cp.admin_kubeconfig(),
        &["--metrics-bind-address=127.0.0.1:0"],
    )?;
    let r = deleted_issuers_case(&sim, &client, &mut ctl).await;
    report(&mut cp, &ctl, r)
}

async fn deleted_issuers_case(sim: &Sim, client: &Client, ctl: &mut Controller) -> Result<()> {
    let addr = metrics_addr(ctl).await?;
    let spec = |user: &str| {
        issuer_spec(
            &sim.host_port(),
            json!({"commandSecretName": user, "caSecretName": "sim-ca", "healthcheck": health()}),
        )
    };
    // (kind, namespace, name, metric namespace label, Basic user)
    let doomed = [
        ("Issuer", Some("default"), "doomed", "default", DOOMED_USER),
        (
            "ClusterIssuer",
            None,
            "doomed-cluster",
            "",
            DOOMED_CLUSTER_USER,
        ),
    ];
    for (kind, ns, name, _, user) in doomed {
        create_issuer(client, kind, ns, name, spec(user)).await?;
    }
    // A third issuer stays: proof that health checks keep running during the quiet window.
    create_issuer(
        client,
        "Issuer",
        Some("default"),
        "keeper",
        spec(KEEPER_USER),
    )
    .await?;
    for (kind, ns, name, _, _) in doomed {
        wait_ready(ctl, client, kind, ns, name).await?;
    }
    wait_ready(ctl, client, "Issuer", Some("default"), "keeper").await?;
    for user in [DOOMED_USER, DOOMED_CLUSTER_USER, KEEPER_USER] {
        let calls = sim.requests_from(user).await?;
        ensure!(
            !calls.is_empty(),
            "the simulator attributes no call to {user}: per-issuer attribution is broken"
        );
    }

    // Each issuer has its Ready gauge before deletion.
    let before = wait_alive(
        ctl,
        Duration::from_secs(10),
        "Ready gauges of both issuers",
        || {
            let addr = addr.clone();
            async move {
                let body = metrics(&addr).await.ok()?;
                doomed
                    .iter()
                    .all(|(kind, _, name, ns, _)| {
                        ready_series(&body, kind, ns, name)
                            .iter()
                            .any(|l| l.ends_with(" 1"))
                    })
                    .then_some(body)
            }
        },
    )
    .await?;
    for (kind, _, name, ns, _) in doomed {
        log(format!(
            "before deletion: {:?}",
            ready_series(&before, kind, ns, name)
        ));
    }

    for (kind, ns, name, _, _) in doomed {
        delete_issuer(ctl, client, kind, ns, name).await?;
    }
    let deleted_at = Instant::now();
    log("both issuers deleted");

    // Their series disappear (bounded), ...
    let gone = wait_alive(
        ctl,
        Duration::from_secs(10),
        "no command_issuer_issuer_ready series for the deleted issuers",
        || {
            let addr = addr.clone();
            async move {
                let body = metrics(&addr).await.ok()?;
                doomed
                    .iter()
                    .all(|(kind, _, name, ns, _)| ready_series(&body, kind, ns, name).is_empty())
                    .then_some(())
            }
        },
    )
    .await;
    if let Err(e) = gone {
        let body = metrics(&addr).await.unwrap_or_default();
        let left: Vec<String> = doomed
            .iter()
            .flat_map(|(kind, _, name, ns, _)| ready_series(&body, kind, ns, name))
            .collect();
        bail!("{e}: still exported {left:?}");
    }
    log(format!(
        "Ready series of the deleted issuers gone {:.1?} after deletion",
        deleted_at.elapsed()
    ));

    // ... and after the settle, no call of theirs reaches Command for a full health interval.
    tokio::time::sleep_until((deleted_at + SETTLE).into()).await;
    let mark = sim.last_request_seq().await?;
    let quiet_from = Instant::now();
    let doomed_users = [DOOMED_USER, DOOMED_CLUSTER_USER];
    log(format!(
        "watching for {QUIET_WINDOW:?}: no call by {doomed_users:?} after request #{mark}"
    ));
    while quiet_from.elapsed() < QUIET_WINDOW {
        let calls = calls_after(sim, mark, &doomed_users).await?;
        ensure!(
            calls.is_empty(),
            "{:.1?} after deletion (+{SETTLE:?} settle) the simulator still got {} call(s) from the deleted issuers: {:?}",
            deleted_at.elapsed(),
            calls.len(),
            calls.iter().map(summary).collect::<Vec<_>>()
        );
        ensure_alive(ctl)?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let calls = calls_after(sim, mark, &doomed_users).await?;
    ensure!(
        calls.is_empty(),
        "the deleted issuers called Command during the quiet window: {:?}",
        calls.iter().map(summary).collect::<Vec<_>>()
    );
    let keeper = calls_after(sim, mark, &[KEEPER_USER]).await?;
    ensure!(
        !keeper.is_empty(),
        "the surviving issuer made no health check in {QUIET_WINDOW:?}: the window proves nothing"
    );
    log(format!(
        "quiet window over: 0 calls by the deleted issuers, {} by the surviving one",
        keeper.len()
    ));
    // A probe that outlived its issuer would have re-created the gauge on its next check.
    let body = metrics(&addr).await?;
    for (kind, _, name, ns, _) in doomed {
        let left = ready_series(&body, kind, ns, name);
        ensure!(
            left.is_empty(),
            "{kind} {name}'s Ready series is back after the window: {left:?}"
        );
    }
    ensure!(
        !ready_series(&body, "Issuer", "default", "keeper").is_empty(),
        "the surviving issuer's series is exported"
    );
    ensure_alive(ctl)
}

// ---------------------------------------------------------------------------------------------
// 2. A re-created issuer uses only its new host.
// ---------------------------------------------------------------------------------------------

const RECREATED_REQUESTS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreated_issuer_uses_only_its_new_host() -> Result<()> {
    let sim_a = Sim::start_default().await?;
    let sim_b = Sim::start_default().await?;
    let mut cp = control_plane().await?;
    let client = cp.client();
    ca_secret(&client, "a-ca", sim_a.tls_ca_pem()).await?;
    ca_secret(&client, "b-ca", sim_b.tls_ca_pem()).await?;
    basic_secret(&client, "a-creds", "command-issuer", "sim-password-1").await?;
    basic_secret(&client, "b-creds", "CORP\\issuer", "sim-password-2").await?;
    let mut ctl = Controller::start(cp.admin_kubeconfig(), &[])?;
    let r = recreated_case(&sim_a, &sim_b, &client, &mut ctl).await;
    report(&mut cp, &ctl, r)
}

async fn recreated_case(
    sim_a: &Sim,
    sim_b: &Sim,
    client: &Client,
    ctl: &mut Controller,
) -> Result<()> {
    let ns = "default";
    // Sim A as 127.0.0.1:PORT_A, sim B as localhost:PORT_B: another hostname and port.
    let host_a = sim_a.host_port();
    let host_b = format!("localhost:{}", sim_b.port());
    create_issuer(
        client,
        "Issuer",
        Some(ns),
        "x",
        issuer_spec(
            &host_a,
            json!({"commandSecretName": "a-creds", "caSecretName": "a-ca", "healthcheck": health()}),
        ),
    )
    .await?;
    wait_ready(ctl, client, "Issuer", Some(ns), "x").await?;
    issue_and_wait(client, ns, "before", "Issuer", "x", "sim-a.test").await?;
    let a_before = sim_a.enrollments().await?.len();
    ensure!(
        a_before == 1 && sim_b.enrollments().await?.is_empty(),
        "the first request went to sim A: A {a_before}, B {}",
        sim_b.enrollments().await?.len()
    );

    delete_issuer(ctl, client, "Issuer", Some(ns), "x").await?;
    create_issuer(
        client,
        "Issuer",
        Some(ns),
        "x",
        issuer_spec(
            &host_b,
            json!({"commandSecretName": "b-creds", "caSecretName": "b-ca", "healthcheck": health()}),
        ),
    )
    .await?;
    let recreated_at = Instant::now();
    log(format!("Issuer x re-created, now pointing at {host_b}"));
    wait_ready(ctl, client, "Issuer", Some(ns), "x").await?;
    tokio::time::sleep_until((recreated_at + SETTLE).into()).await;
    // Sim A serves no other issuer: from here on, any call it gets is the old x's.
    let mark_a = sim_a.last_request_seq().await?;

    let mut shas: HashMap<String, String> = HashMap::new();
    for i in 0..RECREATED_REQUESTS {
        let name = format!("after-{i}");
        let cn = format!("{name}.sim-b.test");
        let (pem, der) = make_csr(&cn, &[&cn])?;
        create_certificate_request(client, ns, &name, &pem, "Issuer", "x", &[]).await?;
        approve(client, ns, &name).await?;
        shas.insert(name, sha256_hex(&der));
    }
    let crs = certificate_requests(client, ns);
    wait_alive(
        ctl,
        Duration::from_secs(120),
        &format!("{RECREATED_REQUESTS} requests Issued"),
        || {
            let crs = crs.clone();
            async move {
                let list = crs.list(&ListParams::default()).await.ok()?;
                let issued = list
                    .items
                    .iter()
                    .filter(|cr| {
                        cr.metadata
                            .name
                            .as_deref()
                            .is_some_and(|n| n.starts_with("after-"))
                    })
                    .filter(|cr| {
                        condition(cr, "Ready").is_some_and(|c| c.is_true() && c.reason == "Issued")
                    })
                    .count();
                (issued == RECREATED_REQUESTS).then_some(())
            }
        },
    )
    .await?;

    let b = sim_b.enrollments().await?;
    let mut per_sha: HashMap<&str, usize> = HashMap::new();
    for e in &b {
        *per_sha
            .entry(e["csr_sha256"].as_str().unwrap_or(""))
            .or_default() += 1;
    }
    let wrong: Vec<String> = shas
        .iter()
        .filter_map(|(name, sha)| {
            let n = per_sha.get(sha.as_str()).copied().unwrap_or(0);
            (n != 1).then(|| format!("{name}: {n} enrollments at sim B"))
        })
        .collect();
    ensure!(
        wrong.is_empty(),
        "not one enrollment each at sim B: {wrong:?}"
    );
    ensure!(
        b.len() == RECREATED_REQUESTS,
        "sim B has {} enrollments for {RECREATED_REQUESTS} requests",
        b.len()
    );
    let a_after = sim_a.enrollments().await?.len();
    ensure!(
        a_after == a_before,
        "sim A got {} enrollment(s) after x was re-created for sim B",
        a_after - a_before
    );
    log(format!(
        "{RECREATED_REQUESTS} enrollments at sim B, sim A unchanged at {a_before}"
    ));

    // No health check (or any call) of the old x reaches sim A for a full interval.
    let quiet_until = recreated_at + SETTLE + QUIET_WINDOW;
    log(format!(
        "watching sim A until {:.1?} after re-creation: no call after request #{mark_a}",
        SETTLE + QUIET_WINDOW
    ));
    loop {
        let calls: Vec<Value> = sim_a
            .requests()
            .await?
            .into_iter()
            .filter(|r| seq(r) > mark_a)
            .collect();
        ensure!(
            calls.is_empty(),
            "{:.1?} after re-creation sim A still got {} call(s): {:?}",
            recreated_at.elapsed(),
            calls.len(),
            calls.iter().map(summary).collect::<Vec<_>>()
        );
        ensure_alive(ctl)?;
        if Instant::now() >= quiet_until {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1).min(quiet_until - Instant::now())).await;
    }
    // The new x is alive and checking sim B meanwhile.
    let b_calls = sim_b.requests_from("CORP\\issuer").await?;
    ensure!(
        b_calls.iter().any(|r| r["path"]
            .as_str()
            .is_some_and(|p| !p.contains("Enrollment/CSR"))),
        "the re-created x made no health check at sim B"
    );
    ensure_alive(ctl)
}

// ---------------------------------------------------------------------------------------------
// 3. A huge token lifetime does not kill the controller.
// ---------------------------------------------------------------------------------------------

/// 2^63 seconds: one more than i64::MAX, overflows any Instant.
const HUGE_EXPIRES_IN: u64 = 1 << 63;
const OAUTH_CLIENT: &str = "issuer-client";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_token_expiry_does_not_kill_the_controller() -> Result<()> {
    let sim = Sim::start_default().await?;
    let mut cp = control_plane().await?;
    let client = cp.client();
    install_credentials(&cp, &sim, &[]).await?;
    create_secret(
        &client,
        json!({"metadata": {"name": "huge-oauth"}, "type": "Opaque",
               "stringData": {"tokenUrl": format!("{}/_idp/token", sim.url()),
                              "clientId": OAUTH_CLIENT, "clientSecret": "oauth-secret-1"}}),
    )
    .await?;
    sim.set_token_lifetime(OAUTH_CLIENT, HUGE_EXPIRES_IN)
        .await?;
    let mut ctl = Controller::start(cp.admin_kubeconfig(), &[])?;
    let r = huge_expiry_case(&sim, &client, &mut ctl).await;
    report(&mut cp, &ctl, r)
}

async fn ok_tokens(sim: &Sim) -> Result<Vec<Value>> {
    Ok(sim
        .token_requests()
        .await?
        .into_iter()
        .filter(|r| r["client_id"] == OAUTH_CLIENT && r["status"] == 200)
        .collect())
}

async fn huge_expiry_case(sim: &Sim, client: &Client, ctl: &mut Controller) -> Result<()> {
    create_issuer(
        client,
        "Issuer",
        Some("default"),
        "huge",
        issuer_spec(&sim.host_port(), json!({"commandSecretName": "huge-oauth"})),
    )
    .await?;
    // The controller fetches the token (answered with expires_in 2^63) ...
    let fetched = wait_alive(
        ctl,
        READY_TIMEOUT,
        "a token answered with expires_in 2^63",
        || async { ok_tokens(sim).await.ok().filter(|t| !t.is_empty()) },
    )
    .await?;
    log(format!(
        "token fetched with expires_in {HUGE_EXPIRES_IN}: {:?}",
        fetched.first()
    ));
    // ... and, clamping the lifetime, the issuer becomes Ready and the process lives on.
    let ready = wait_ready(ctl, client, "Issuer", Some("default"), "huge").await;
    ensure_alive(ctl)?;
    let ready = ready?;
    log(format!("issuer Ready with a 2^63 s token: {ready}"));
    issue_and_wait(client, "default", "huge-1", "Issuer", "huge", "huge.test").await?;
    ensure_alive(ctl)?;

    // Back to a normal lifetime: a fresh token is needed (the old one is revoked) and issuance
    // still works with it.
    sim.set_token_lifetime(OAUTH_CLIENT, 3600).await?;
    let before = ok_tokens(sim).await?.len();
    let r = sim.admin_post("/_sim/tokens/revoke", None).await?;
    ensure!(r.status == 200, "revoke: {} {}", r.status, r.text());
    issue_and_wait(client, "default", "normal-1", "Issuer", "huge", "huge.test").await?;
    let after = ok_tokens(sim).await?.len();
    ensure!(
        after > before,
        "no new token after the revocation ({before} → {after} fetches)"
    );
    issue_and_wait(client, "default", "normal-2", "Issuer", "huge", "huge.test").await?;
    ensure_alive(ctl)
}
