//! Fault suite (issue #6 item 3): the controller against every fault the simulator injects into
//! Command and its token endpoint, a kube-apiserver restart, cut apiserver connections (watches
//! included) and a controller SIGKILLed every 5 s while cert-manager Certificates are issued.
//!
//! Every scenario asserts that each approved request ends Ready=True/Issued, that the simulator
//! recorded exactly one enrollment per request (by the SHA-256 of its CSR), that the injected
//! faults really fired, and that no controller log contains "panicked".
//!
//! Requests per scenario: `FAULT_SUITE_N` (default 24, the fast variant of the normal test run);
//! `tests/faults/run.sh` runs the full variant with 200. Waits are bounded polls of conditions;
//! the only clock-driven steps are the faults themselves (bursts of a few seconds, a cut every
//! second, a kill every 5 s).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use base64::Engine as _;
use command_issuer_e2e::fixtures::{
    install_example_issuer, issuer_api, repo_file, wait_issuer_ready, CONTROLLER_NAMESPACE,
};
use command_issuer_e2e::k8s::{certificate_requests, ensure_namespace};
use command_issuer_e2e::wait::log;
use command_issuer_e2e::{
    approve, condition, create_certificate_request, make_csr, CertManager, ControlPlane,
    Controller, Sim, TcpProxy,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::Client;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Requests per scenario.
fn suite_n() -> usize {
    std::env::var("FAULT_SUITE_N")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(24)
}

/// Bound on one scenario: faults add backoff (up to a minute for an unlucky request), and the
/// machine has two cores shared with the control plane.
fn scenario_timeout(n: usize) -> Duration {
    Duration::from_secs(180 + 2 * n as u64)
}

/// Polls `check` every `every` until it yields `Some`, failing after `timeout` (or at once when
/// the check fails hard) with `what` in the message.
async fn poll<T, F, Fut>(timeout: Duration, every: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            bail!("timed out after {:.1?} waiting for {what}", start.elapsed());
        }
        tokio::time::sleep(every).await;
    }
}

fn sha256_hex(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One request of a scenario: its name and the SHA-256 of its CSR (how the simulator counts).
#[derive(Debug, Clone)]
struct Req {
    name: String,
    sha: String,
}

/// Creates and approves `r-<i>` for every i in `range`, CN `r-<i>.<scenario>.faults.test`.
async fn create_requests(
    client: &Client,
    ns: &str,
    issuer: &str,
    scenario: &str,
    range: std::ops::Range<usize>,
) -> Result<Vec<Req>> {
    let mut out = Vec::new();
    for i in range {
        let name = format!("r-{i}");
        let cn = format!("{name}.{scenario}.faults.test");
        let (pem, der) = make_csr(&cn, &[&cn])?;
        create_certificate_request(client, ns, &name, &pem, "Issuer", issuer, &[]).await?;
        approve(client, ns, &name).await?;
        out.push(Req {
            name,
            sha: sha256_hex(&der),
        });
    }
    Ok(out)
}

/// Where the requests of a namespace stand.
#[derive(Debug, Default)]
struct Tally {
    issued: usize,
    waiting: usize,
    /// The first few waiting requests with their Ready condition, for messages.
    waiting_detail: Vec<String>,
    /// Final but not issued (Failed, Denied): a bug under transient faults.
    failed: Vec<String>,
}

async fn tally(client: &Client, ns: &str) -> Result<Tally> {
    let list = certificate_requests(client, ns)
        .list(&ListParams::default())
        .await?;
    let mut t = Tally::default();
    for cr in &list.items {
        match condition(cr, "Ready") {
            Some(c) if c.is_true() && c.reason == "Issued" => t.issued += 1,
            Some(c) if c.reason == "Failed" || c.reason == "Denied" => t.failed.push(format!(
                "{}: {} {}",
                cr.metadata.name.as_deref().unwrap_or("?"),
                c.reason,
                c.message
            )),
            other => {
                t.waiting += 1;
                if t.waiting_detail.len() < 5 {
                    t.waiting_detail.push(format!(
                        "{}: {:?}",
                        cr.metadata.name.as_deref().unwrap_or("?"),
                        other.map(|c| (c.reason, c.message))
                    ));
                }
            }
        }
    }
    Ok(t)
}

/// Checks that every request has exactly one enrollment in `sim` and that the simulator saw no
/// other; returns the number of enrollments.
async fn exactly_one_enrollment_each(sim: &Sim, reqs: &[Req]) -> Result<usize> {
    let all = sim.enrollments().await?;
    let mut by_sha: HashMap<&str, usize> = HashMap::new();
    for e in &all {
        *by_sha
            .entry(e["csr_sha256"].as_str().unwrap_or(""))
            .or_default() += 1;
    }
    let wrong: Vec<String> = reqs
        .iter()
        .filter_map(|r| {
            let c = by_sha.get(r.sha.as_str()).copied().unwrap_or(0);
            (c != 1).then(|| format!("{}: {c} enrollments", r.name))
        })
        .collect();
    ensure!(
        wrong.is_empty(),
        "not exactly one enrollment per request: {wrong:?}"
    );
    ensure!(
        all.len() == reqs.len(),
        "{} enrollments for {} requests",
        all.len(),
        reqs.len()
    );
    Ok(all.len())
}

fn fired(rules: &[Value]) -> Vec<u64> {
    rules
        .iter()
        .map(|r| r["fired"].as_u64().unwrap_or(0))
        .collect()
}

fn no_panics(what: &str, log: &str) -> Result<()> {
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("panicked")).collect();
    ensure!(lines.is_empty(), "{what} panicked: {lines:?}");
    Ok(())
}

/// How a scenario's issuer authenticates to Command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    Basic,
    OAuth,
}

/// An Issuer `sim` in `ns` pointed at `sim` (reached at `hostname`); its Secrets (named after `ns`) live in the
/// controller namespace, where Issuer credentials are read from by default.
async fn namespaced_issuer(
    client: &Client,
    sim: &Sim,
    hostname: &str,
    ns: &str,
    auth: Auth,
) -> Result<()> {
    ensure_namespace(client, ns).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), CONTROLLER_NAMESPACE);
    let ca = json!({"metadata": {"name": format!("{ns}-ca")}, "stringData": {"ca.crt": sim.tls_ca_pem()}});
    let credentials = match auth {
        Auth::Basic => {
            json!({"metadata": {"name": format!("{ns}-credentials")}, "type": "kubernetes.io/basic-auth",
            "stringData": {"username": "command-issuer", "password": "sim-password-1"}})
        }
        Auth::OAuth => json!({"metadata": {"name": format!("{ns}-credentials")}, "type": "Opaque",
            "stringData": {"tokenUrl": format!("{}/_idp/token", sim.url()), "clientId": "issuer-client", "clientSecret": "oauth-secret-1"}}),
    };
    for s in [ca, credentials] {
        secrets
            .create(&PostParams::default(), &serde_json::from_value(s)?)
            .await?;
    }
    let issuer = json!({"apiVersion": "command-issuer.keyfactor.com/v1alpha1", "kind": "Issuer",
        "metadata": {"name": "sim", "namespace": ns},
        "spec": {"hostname": hostname, "commandSecretName": format!("{ns}-credentials"),
                 "caSecretName": format!("{ns}-ca"), "caBundleKey": "ca.crt",
                 "certificateTemplate": "WebServer1y", "certificateAuthorityLogicalName": "Sub-CA",
                 "healthcheck": {"enabled": true, "interval": "30s"}}});
    issuer_api(client, "Issuer", Some(ns))
        .create(&PostParams::default(), &serde_json::from_value(issuer)?)
        .await?;
    Ok(())
}

/// Faults in bursts: a rule is armed for a short window, then cleared until the requests have
/// made some progress (or a few seconds passed), then the next rule is armed. A window rather
/// than a count, so an outage ends even if only the issuer's health check is still calling.
struct Bursts {
    phases: Vec<Value>,
    window: Duration,
    next: usize,
    /// When the current burst started; `None` between bursts.
    armed: Option<Instant>,
    disarmed: Instant,
    issued_at_disarm: usize,
    step: usize,
    fired_before: u64,
    bursts: u32,
}

impl Bursts {
    fn new(phases: Vec<Value>, window: Duration, n: usize) -> Self {
        Self {
            phases,
            window,
            next: 0,
            armed: None,
            disarmed: Instant::now(),
            issued_at_disarm: 0,
            step: (n / 8).max(2),
            fired_before: 0,
            bursts: 0,
        }
    }

    async fn arm(&mut self, sim: &Sim) -> Result<()> {
        let phase = self.phases[self.next % self.phases.len()].clone();
        self.next += 1;
        sim.set_faults(&json!([phase])).await?;
        self.armed = Some(Instant::now());
        self.bursts += 1;
        Ok(())
    }

    async fn tick(&mut self, sim: &Sim, issued: usize) -> Result<()> {
        match self.armed {
            Some(at) if at.elapsed() >= self.window => {
                self.fired_before += fired(&sim.faults().await?).iter().sum::<u64>();
                sim.clear_faults().await?;
                self.armed = None;
                self.disarmed = Instant::now();
                self.issued_at_disarm = issued;
            }
            Some(_) => {}
            None => {
                let progressed = issued >= self.issued_at_disarm + self.step;
                let rested = self.disarmed.elapsed() >= Duration::from_secs(2);
                if rested && (progressed || self.disarmed.elapsed() >= Duration::from_secs(8)) {
                    self.arm(sim).await?;
                }
            }
        }
        Ok(())
    }

    async fn total(&self, sim: &Sim) -> Result<u64> {
        Ok(self.fired_before + fired(&sim.faults().await?).iter().sum::<u64>())
    }
}

/// Waits until all `n` requests of `ns` are Issued, ticking `bursts` on every poll; a request
/// that turns Failed or Denied fails at once.
async fn wait_all_issued(
    client: &Client,
    ns: &str,
    n: usize,
    sim: &Sim,
    mut bursts: Option<&mut Bursts>,
) -> Result<()> {
    let start = Instant::now();
    let mut last = usize::MAX;
    loop {
        let t = tally(client, ns).await?;
        ensure!(
            t.failed.is_empty(),
            "{ns}: final without a certificate: {:?}",
            t.failed
        );
        if t.issued != last {
            log(format!(
                "{ns}: {}/{n} issued, {} waiting",
                t.issued, t.waiting
            ));
            last = t.issued;
        }
        if t.issued >= n {
            return Ok(());
        }
        if start.elapsed() >= scenario_timeout(n) {
            bail!(
                "{ns}: timed out after {:.1?} with {}/{n} issued; waiting: {:?}",
                start.elapsed(),
                t.issued,
                t.waiting_detail
            );
        }
        if let Some(b) = bursts.as_deref_mut() {
            b.tick(sim, t.issued).await?;
        }
        // Listing hundreds of requests every second would load the apiserver more than the faults.
        let every = if n > 50 { 2 } else { 1 };
        tokio::time::sleep(Duration::from_secs(every)).await;
    }
}

/// One Command-side fault scenario, against its own simulator and Issuer.
struct Scenario {
    name: &'static str,
    auth: Auth,
    /// Rules set before the requests are created (empty with bursts).
    rules: Value,
    /// Rules armed in turn for bursts of this long instead.
    bursts: Option<(Vec<Value>, Duration)>,
    /// Lifetime of the OAuth tokens the simulator mints (seconds).
    token_lifetime: Option<u64>,
    /// Reach the simulator through a proxy that lets requests finish after their client left.
    lingering_proxy: bool,
}

/// What a scenario measured, for the report.
#[derive(Debug)]
struct Figures {
    name: &'static str,
    n: usize,
    secs: f64,
    fired: String,
    enrollments: usize,
    notes: String,
}

/// The controller's recoveries of interrupted enrollments in `ns`.
fn recoveries(controller_log: &str, ns: &str) -> usize {
    controller_log
        .lines()
        .filter(|l| {
            l.contains("recovered the certificate of an interrupted enrollment")
                && l.contains(&format!("\"{ns}/"))
        })
        .count()
}

fn parse_time(v: &Value) -> Option<jiff::Timestamp> {
    v.as_str()?.parse().ok()
}

/// For every `POST /Enrollment/CSR` answered by an injected 429/503 with `Retry-After`, the
/// delay until the next request of the same enrollment (its op id, in the body's metadata or
/// the recovery lookup's query). Returns the shortest delay and how many were measured.
async fn retry_after_gaps(sim: &Sim) -> Result<(Option<Duration>, usize)> {
    let reqs = sim.requests().await?;
    let op_of = |r: &Value| -> Option<String> {
        let body: Value = serde_json::from_str(r["body"].as_str()?).ok()?;
        body["Metadata"]["Controller-Reconcile-Id"]
            .as_str()
            .map(str::to_string)
    };
    let mut shortest: Option<Duration> = None;
    let mut measured = 0;
    for (i, r) in reqs.iter().enumerate() {
        let limited = r["fault"] == "status"
            && r["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("/Enrollment/CSR"))
            && matches!(r["status"].as_u64(), Some(429 | 503));
        if !limited {
            continue;
        }
        let (Some(op), Some(t0)) = (op_of(r), parse_time(&r["time"])) else {
            continue;
        };
        let next = reqs[i + 1..].iter().find(|x| {
            x["query"].as_str().is_some_and(|q| q.contains(&op))
                || x["body"].as_str().is_some_and(|b| b.contains(&op))
        });
        if let Some(t1) = next.and_then(|x| parse_time(&x["time"])) {
            let gap = Duration::try_from(t1.duration_since(t0)).unwrap_or_default();
            shortest = Some(shortest.map_or(gap, |s| s.min(gap)));
            measured += 1;
        }
    }
    Ok((shortest, measured))
}

/// Waits until every `POST /Enrollment/CSR` the simulator received has been answered (the first
/// rule, on that path, counts them as they come in; the request log gets them when done), so
/// an enrollment still under way behind a lingering proxy is counted too.
async fn enrollments_settled(sim: &Sim) -> Result<()> {
    poll(
        Duration::from_secs(90),
        Duration::from_millis(500),
        "every enrollment call answered",
        || async {
            let seen = sim
                .faults()
                .await?
                .first()
                .map_or(0, |r| r["seen"].as_u64().unwrap_or(0));
            let done = sim
                .requests()
                .await?
                .iter()
                .filter(|r| {
                    r["method"] == "POST"
                        && r["path"]
                            .as_str()
                            .is_some_and(|p| p.ends_with("/Enrollment/CSR"))
                })
                .count() as u64;
            Ok((done >= seen).then_some(()))
        },
    )
    .await
}

async fn token_fetches(sim: &Sim) -> Result<(usize, usize)> {
    let all: Vec<Value> = sim.http().get("/_sim/token-requests").await?.json()?;
    let ok = all.iter().filter(|r| r["status"] == 200).count();
    Ok((ok, all.len() - ok))
}

async fn run_scenario(client: Client, s: Scenario, n: usize) -> Result<(Figures, Sim)> {
    let ns = format!("faults-{}", s.name);
    let sim = Sim::start_default().await?;
    let proxy = match s.lingering_proxy {
        true => Some(
            TcpProxy::start_lingering(sim.host_port().parse()?, Duration::from_secs(60)).await?,
        ),
        false => None,
    };
    let hostname = proxy
        .as_ref()
        .map_or_else(|| sim.host_port(), |p| p.addr().to_string());
    namespaced_issuer(&client, &sim, &hostname, &ns, s.auth).await?;
    wait_issuer_ready(
        &client,
        "Issuer",
        Some(&ns),
        "sim",
        "True",
        Duration::from_secs(60),
    )
    .await
    .with_context(|| format!("{ns}: issuer Ready before the faults"))?;
    if let Some(secs) = s.token_lifetime {
        let r = sim
            .admin_post(
                "/_sim/oauth-clients/issuer-client/lifetime",
                Some(&json!({ "secs": secs })),
            )
            .await?;
        ensure!(r.status == 200, "token lifetime: {}", r.text());
        // The token cached before is long-lived: revoke it, so the next call fetches a short one.
        let r = sim.admin_post("/_sim/tokens/revoke", None).await?;
        ensure!(r.status == 200, "revoke: {}", r.text());
    }
    let t0 = Instant::now();
    let mut bursts = s.bursts.map(|(p, window)| Bursts::new(p, window, n));
    match &mut bursts {
        Some(b) => b.arm(&sim).await?,
        None => sim.set_faults(&s.rules).await?,
    }
    let reqs = create_requests(&client, &ns, "sim", s.name, 0..n).await?;
    wait_all_issued(&client, &ns, n, &sim, bursts.as_mut()).await?;
    let secs = t0.elapsed().as_secs_f64();
    let (fired_text, total) = match &bursts {
        Some(b) => {
            let total = b.total(&sim).await?;
            (format!("{total} in {} bursts", b.bursts), total)
        }
        None => {
            let f = fired(&sim.faults().await?);
            ensure!(
                f.iter().all(|x| *x > 0),
                "{ns}: every rule must fire, fired {f:?}"
            );
            (format!("{f:?}"), f.iter().sum())
        }
    };
    ensure!(total > 0, "{ns}: no fault fired");
    if proxy.is_some() {
        enrollments_settled(&sim).await?;
    }
    sim.clear_faults().await?;
    drop(proxy);
    let enrollments = exactly_one_enrollment_each(&sim, &reqs)
        .await
        .with_context(|| ns.clone())?;
    Ok((
        Figures {
            name: s.name,
            n,
            secs,
            fired: fired_text,
            enrollments,
            notes: String::new(),
        },
        sim,
    ))
}

fn report(rows: &[Figures]) {
    println!("\nscenario            N   secs  enrollments  faults fired                notes");
    for r in rows {
        println!(
            "{:<18} {:>4} {:>6.1} {:>11}  {:<26}  {}",
            r.name, r.n, r.secs, r.enrollments, r.fired, r.notes
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_and_token_endpoint_faults() -> Result<()> {
    let n = suite_n();
    let cp = ControlPlane::start_with_crds(&[repo_file("crds").as_path()]).await?;
    let client = cp.client();
    cp.create_namespace(CONTROLLER_NAMESPACE).await?;
    let ctl = Controller::start(cp.admin_kubeconfig(), &["--command-timeout=5s"])?;

    let enroll = "/Enrollment/CSR";
    let scenarios = vec![
        Scenario {
            name: "latency",
            auth: Auth::Basic,
            rules: json!([
                {"target": "api", "kind": "latency", "latency_ms": 1500, "probability": 0.3, "seed": 1},
                {"target": "api", "kind": "latency", "latency_ms": 300, "probability": 0.6, "seed": 2},
            ]),
            bursts: None,
            token_lifetime: None,
            lingering_proxy: false,
        },
        Scenario {
            name: "5xx-bursts",
            auth: Auth::Basic,
            rules: json!([]),
            bursts: Some((
                [500, 502, 503, 504]
                    .iter()
                    .map(|s| json!({"target": "api", "kind": "status", "status": s}))
                    .collect(),
                Duration::from_millis(1500),
            )),
            token_lifetime: None,
            lingering_proxy: false,
        },
        Scenario {
            name: "rate-limited",
            auth: Auth::Basic,
            rules: json!([
                {"target": "api", "path": enroll, "kind": "status", "status": 429, "retry_after_secs": 3, "every": 4},
                {"target": "api", "path": enroll, "kind": "status", "status": 503, "retry_after_secs": 3, "every": 6},
            ]),
            bursts: None,
            token_lifetime: None,
            lingering_proxy: false,
        },
        Scenario {
            name: "timeouts",
            auth: Auth::Basic,
            rules: json!([
                // Answered after --command-timeout (5 s): the controller gave up, Command did not.
                {"target": "api", "path": enroll, "kind": "latency", "latency_ms": 7000, "every": 3},
            ]),
            bursts: None,
            token_lifetime: None,
            lingering_proxy: true,
        },
        Scenario {
            name: "resets",
            auth: Auth::Basic,
            rules: json!([
                {"target": "api", "path": enroll, "kind": "reset", "every": 3},
                {"target": "api", "kind": "reset", "probability": 0.1, "seed": 3},
            ]),
            bursts: None,
            token_lifetime: None,
            lingering_proxy: false,
        },
        Scenario {
            name: "slow-bodies",
            auth: Auth::Basic,
            rules: json!([
                // Slower than --command-timeout: Command enrolled, the answer never completes.
                {"target": "api", "path": enroll, "kind": "slow_body", "latency_ms": 8000, "every": 5},
                {"target": "api", "kind": "slow_body", "latency_ms": 2000, "probability": 0.4, "seed": 4},
            ]),
            bursts: None,
            token_lifetime: None,
            lingering_proxy: false,
        },
        Scenario {
            name: "truncated",
            auth: Auth::Basic,
            rules: json!([
                // Command enrolled, then the answer breaks off: recovered, not enrolled again.
                {"target": "api", "path": enroll, "kind": "truncate", "every": 2},
                {"target": "api", "kind": "truncate", "probability": 0.1, "seed": 5},
            ]),
            bursts: None,
            token_lifetime: None,
            lingering_proxy: false,
        },
        Scenario {
            name: "non-json",
            auth: Auth::Basic,
            rules: json!([{"target": "api", "kind": "non_json", "probability": 0.15, "seed": 6}]),
            bursts: None,
            token_lifetime: None,
            lingering_proxy: false,
        },
        Scenario {
            name: "token-expiry",
            auth: Auth::OAuth,
            rules: json!([{"target": "api", "path": enroll, "kind": "expire_tokens", "every": 4}]),
            bursts: None,
            token_lifetime: None,
            lingering_proxy: false,
        },
        Scenario {
            name: "token-outage",
            auth: Auth::OAuth,
            rules: json!([]),
            bursts: Some((
                vec![
                    json!({"target": "token", "kind": "status", "status": 503}),
                    json!({"target": "token", "kind": "reset"}),
                    json!({"target": "token", "kind": "status", "status": 500}),
                ],
                Duration::from_secs(3),
            )),
            // Valid for 2 s locally (10 s refresh margin): tokens are fetched all through the run.
            token_lifetime: Some(12),
            lingering_proxy: false,
        },
    ];
    // FAULT_SUITE_ONLY=a,b runs only those scenarios (for work on one of them).
    let only: Option<Vec<String>> = std::env::var("FAULT_SUITE_ONLY")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for s in scenarios {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|x| x == s.name))
        {
            continue;
        }
        let (c, name) = (client.clone(), s.name);
        tasks.push((name, tokio::spawn(run_scenario(c, s, n))));
    }
    let mut rows = Vec::new();
    let mut sims = Vec::new();
    let mut errors = Vec::new();
    for (name, t) in tasks {
        match t.await {
            Ok(Ok((figures, sim))) => {
                rows.push(figures);
                sims.push(sim);
            }
            Ok(Err(e)) => errors.push(format!("{name}: {e:#}")),
            Err(e) => errors.push(format!("{name}: task failed: {e}")),
        }
    }
    let logs = ctl.logs();
    for (row, sim) in rows.iter_mut().zip(&sims) {
        let ns = format!("faults-{}", row.name);
        let rec = recoveries(&logs, &ns);
        row.notes = format!("recovered {rec}");
        match row.name {
            "truncated" | "slow-bodies" | "timeouts" if rec == 0 => {
                errors.push(format!(
                    "{}: Command enrolled and the answer was lost, yet nothing was recovered",
                    row.name
                ));
            }
            "rate-limited" => {
                let (shortest, measured) = retry_after_gaps(sim).await?;
                row.notes.push_str(&format!(
                    "; Retry-After 3 s: {measured} retries, shortest wait {shortest:.1?}"
                ));
                if measured == 0 || shortest.is_none_or(|s| s < Duration::from_millis(2900)) {
                    errors.push(format!(
                        "rate-limited: retries must wait Retry-After (3 s): {measured} measured, shortest {shortest:?}"
                    ));
                }
            }
            "token-expiry" | "token-outage" => {
                let (ok, bad) = token_fetches(sim).await?;
                row.notes
                    .push_str(&format!("; token fetches {ok} ok, {bad} failed"));
                if ok < 2 {
                    errors.push(format!(
                        "{}: tokens were never fetched again ({ok})",
                        row.name
                    ));
                }
            }
            _ => {}
        }
        no_panics(&format!("command-sim of {}", row.name), &sim.logs())?;
    }
    report(&rows);
    println!("all scenarios in {:.1?}", t0.elapsed());
    if let Err(e) = no_panics("command-issuer", &logs) {
        errors.push(e.to_string());
    }
    ensure!(
        errors.is_empty(),
        "fault scenarios failed:\n{}",
        errors.join("\n")
    );
    Ok(())
}

/// `FAULT_SUITE_N` requests to `default/issuer-sample` through a proxy to the apiserver: half,
/// then the apiserver restarted while they are worked on, then the other half; then `N` more
/// while every apiserver connection (watches included) is cut every second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_restart_and_cut_connections() -> Result<()> {
    let n = suite_n();
    let mut cp = ControlPlane::start_with_crds(&[repo_file("crds").as_path()]).await?;
    let sim = Sim::start_default().await?;
    install_example_issuer(&cp, &sim).await?;
    let upstream: SocketAddr = format!("127.0.0.1:{}", cp.api_port()).parse()?;
    let proxy = TcpProxy::start(upstream).await?;
    let kubeconfig = cp.dir().join("via-proxy.kubeconfig");
    proxy.kubeconfig_via(cp.admin_kubeconfig(), &kubeconfig)?;
    let ctl = Controller::start(&kubeconfig, &["--command-timeout=5s", "--concurrency=4"])?;
    let client = cp.client();
    wait_issuer_ready(
        &client,
        "Issuer",
        Some("default"),
        "issuer-sample",
        "True",
        Duration::from_secs(60),
    )
    .await?;
    // Each enrollment takes a while, so requests are in flight when the apiserver goes.
    sim.set_faults(&json!([{"target": "api", "path": "/Enrollment/CSR", "kind": "latency", "latency_ms": 700}]))
        .await?;

    // Restart.
    let t0 = Instant::now();
    let half = n / 2;
    let mut reqs = create_requests(&client, "default", "issuer-sample", "restart", 0..half).await?;
    let issued_at_stop = poll(
        Duration::from_secs(60),
        Duration::from_millis(200),
        "a first request Issued",
        || async {
            let t = tally(&client, "default").await?;
            Ok((t.issued > 0).then_some(t.issued))
        },
    )
    .await?;
    cp.stop_apiserver()?;
    let down = Instant::now();
    cp.start_apiserver().await?;
    let downtime = down.elapsed();
    let client = cp.new_client().await?;
    reqs.extend(create_requests(&client, "default", "issuer-sample", "restart", half..n).await?);
    wait_all_issued(&client, "default", n, &sim, None).await?;
    let restart_secs = t0.elapsed().as_secs_f64();
    let restart_fired = fired(&sim.faults().await?);
    let restart_enrollments = exactly_one_enrollment_each(&sim, &reqs).await?;
    ensure!(issued_at_stop < n, "the restart came after the run");

    // Cut connections.
    sim.reset().await?;
    let ns = "faults-cuts";
    ensure_namespace(&client, ns).await?;
    // The Issuer of `default` serves only `default`: a second one for this namespace.
    let issuer = json!({"apiVersion": "command-issuer.keyfactor.com/v1alpha1", "kind": "Issuer",
        "metadata": {"name": "issuer-sample", "namespace": ns},
        "spec": {"hostname": sim.host_port(), "commandSecretName": "command-secret", "caSecretName": "command-ca-secret",
                 "caBundleKey": "ca.crt", "certificateTemplate": "WebServer1y", "certificateAuthorityLogicalName": "Sub-CA"}});
    issuer_api(&client, "Issuer", Some(ns))
        .create(&PostParams::default(), &serde_json::from_value(issuer)?)
        .await?;
    wait_issuer_ready(
        &client,
        "Issuer",
        Some(ns),
        "issuer-sample",
        "True",
        Duration::from_secs(60),
    )
    .await?;
    let t1 = Instant::now();
    let cut_before = proxy.cut_total();
    let mut cuts = 0u32;
    let mut cut_while_busy = 0u32;
    let mut last_cut = Instant::now();
    let mut cut_reqs = Vec::new();
    let mut created = 0;
    loop {
        if created < n {
            let to = (created + 4).min(n);
            cut_reqs
                .extend(create_requests(&client, ns, "issuer-sample", "cuts", created..to).await?);
            created = to;
        }
        let t = tally(&client, ns).await?;
        ensure!(t.failed.is_empty(), "{ns}: {:?}", t.failed);
        if t.issued >= n {
            break;
        }
        ensure!(
            t1.elapsed() < scenario_timeout(n),
            "{ns}: timed out with {}/{n} issued after {cuts} cuts",
            t.issued
        );
        if last_cut.elapsed() >= Duration::from_secs(1) && cuts < 40 {
            let k = proxy.cut_all();
            cuts += 1;
            if k > 0 {
                cut_while_busy += 1;
            }
            log(format!(
                "cut {k} apiserver connections ({}/{n} issued)",
                t.issued
            ));
            last_cut = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let cut_secs = t1.elapsed().as_secs_f64();
    let cut_connections = proxy.cut_total() - cut_before;
    let cut_fired = fired(&sim.faults().await?);
    let cut_enrollments = exactly_one_enrollment_each(&sim, &cut_reqs).await?;
    ensure!(
        cut_while_busy >= 1 && cut_connections > 0,
        "no connection was cut before the requests were done ({cuts} cuts)"
    );
    ensure!(restart_fired.iter().sum::<u64>() > 0 && cut_fired.iter().sum::<u64>() > 0);
    report(&[
        Figures {
            name: "apiserver-restart",
            n,
            secs: restart_secs,
            fired: format!("latency {restart_fired:?}"),
            enrollments: restart_enrollments,
            notes: format!(
                "{issued_at_stop}/{n} issued at the stop; apiserver down {downtime:.1?}; recovered {}",
                recoveries(&ctl.logs(), "default")
            ),
        },
        Figures {
            name: "connection-cuts",
            n,
            secs: cut_secs,
            fired: format!("latency {cut_fired:?}"),
            enrollments: cut_enrollments,
            notes: format!(
                "{cuts} cuts, {cut_connections} connections dropped, proxy accepted {}",
                proxy.accepted()
            ),
        },
    ]);
    no_panics("command-issuer", &ctl.logs())?;
    Ok(())
}

fn certificate_api(client: &Client, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "cert-manager.io",
        "v1",
        "Certificate",
    ));
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// The DER of a CertificateRequest's CSR (spec.request is base64 of PEM).
fn request_der(cr: &DynamicObject) -> Result<Vec<u8>> {
    let b64 = cr.data["spec"]["request"]
        .as_str()
        .context("spec.request")?;
    let pem = base64::engine::general_purpose::STANDARD.decode(b64)?;
    let (_, p) = x509_parser::pem::parse_x509_pem(&pem).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(p.contents)
}

/// `FAULT_SUITE_N` cert-manager Certificates while the controller is SIGKILLed and restarted
/// every 5 s; enrollments take 1 s each (4 at a time), so kills land mid-enrollment, and Command
/// (behind a proxy that does not pass the disconnect on) completes what the dead one sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_sigkilled_every_5s() -> Result<()> {
    let n = suite_n();
    let cp = ControlPlane::start_with_crds(&[repo_file("crds").as_path()]).await?;
    let client = cp.client();
    let sim = Sim::start_default().await?;
    install_example_issuer(&cp, &sim).await?;
    // Command keeps working on requests whose controller was killed (as behind a load balancer).
    let proxy =
        TcpProxy::start_lingering(sim.host_port().parse()?, Duration::from_secs(60)).await?;
    issuer_api(&client, "Issuer", Some("default"))
        .patch(
            "issuer-sample",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hostname": proxy.addr().to_string()}})),
        )
        .await?;
    let _cm = CertManager::start(&cp, "cert-manager").await?;
    let args = ["--command-timeout=5s", "--concurrency=4"];
    let mut ctls = vec![Controller::start(cp.admin_kubeconfig(), &args)?];
    wait_issuer_ready(
        &client,
        "Issuer",
        Some("default"),
        "issuer-sample",
        "True",
        Duration::from_secs(60),
    )
    .await?;
    // Every enrollment takes a second: before Command enrolls (latency) or after, while the
    // answer trickles in (slow body), so kills land before and after Command's work.
    sim.set_faults(&json!([
        {"target": "api", "path": "/Enrollment/CSR", "kind": "slow_body", "latency_ms": 1000, "every": 2},
        {"target": "api", "path": "/Enrollment/CSR", "kind": "latency", "latency_ms": 1000},
    ]))
    .await?;

    let certs = certificate_api(&client, "default");
    let t0 = Instant::now();
    let mut started = Instant::now();
    let mut kills = 0u32;
    let mut created = 0;
    let mut last = usize::MAX;
    loop {
        if created < n {
            for i in created..(created + 10).min(n) {
                let cn = format!("c-{i}.sigkill.faults.test");
                let c = json!({"apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                    "metadata": {"name": format!("c-{i}"), "namespace": "default"},
                    "spec": {"secretName": format!("c-{i}-tls"), "commonName": cn, "dnsNames": [cn],
                             "privateKey": {"algorithm": "ECDSA", "size": 256},
                             "issuerRef": {"group": "command-issuer.keyfactor.com", "kind": "Issuer", "name": "issuer-sample"}}});
                certs
                    .create(&PostParams::default(), &serde_json::from_value(c)?)
                    .await?;
            }
            created = (created + 10).min(n);
        }
        let list = certs.list(&ListParams::default()).await?;
        let ready = list
            .items
            .iter()
            .filter(|c| condition(c, "Ready").is_some_and(|r| r.is_true()))
            .count();
        if ready != last {
            log(format!("{ready}/{n} Certificates Ready, {kills} kills"));
            last = ready;
        }
        if ready >= n {
            break;
        }
        ensure!(
            t0.elapsed() < scenario_timeout(n),
            "timed out: {ready}/{n} Certificates Ready after {kills} kills"
        );
        if started.elapsed() >= Duration::from_secs(5) {
            if let Some(c) = ctls.last_mut() {
                c.kill();
            }
            kills += 1;
            ctls.push(Controller::start(cp.admin_kubeconfig(), &args)?);
            started = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    ensure!(kills >= 1, "no kill happened before the run finished");

    let crs = certificate_requests(&client, "default")
        .list(&ListParams::default())
        .await?;
    let mut reqs = Vec::new();
    let mut not_issued = Vec::new();
    for cr in &crs.items {
        let name = cr.metadata.name.clone().unwrap_or_default();
        match condition(cr, "Ready") {
            Some(c) if c.is_true() && c.reason == "Issued" => {}
            other => not_issued.push(format!("{name}: {other:?}")),
        }
        reqs.push(Req {
            name,
            sha: sha256_hex(&request_der(cr)?),
        });
    }
    ensure!(not_issued.is_empty(), "requests not Issued: {not_issued:?}");
    ensure!(
        reqs.len() == n,
        "{} CertificateRequests for {n} Certificates",
        reqs.len()
    );
    enrollments_settled(&sim).await?;
    let enrollments = exactly_one_enrollment_each(&sim, &reqs).await?;
    let f = fired(&sim.faults().await?);
    ensure!(f.iter().all(|x| *x > 0), "faults must fire: {f:?}");
    drop(proxy);
    let logs: Vec<String> = ctls.iter().map(Controller::logs).collect();
    let recovered: usize = logs.iter().map(|l| recoveries(l, "default")).sum();
    report(&[Figures {
        name: "sigkill-every-5s",
        n,
        secs,
        fired: format!("slow body, latency {f:?}"),
        enrollments,
        notes: format!(
            "{kills} kills, {} controller processes, recovered {recovered}",
            ctls.len()
        ),
    }]);
    for (i, l) in logs.iter().enumerate() {
        no_panics(&format!("command-issuer #{i}"), l)?;
    }
    Ok(())
}
