//! Fencing: what a controller that stops leading, or is told to stop, may still do.
//!
//! 1. `a_stalled_leader_is_fenced`: leader A reaches the apiserver through a proxy that stalls
//!    (for longer than the lease) right after A sent a request's enrollment to Command. A must
//!    stop leading within its renew deadline, standby B must take over and finish the request by
//!    looking up A's enrollment (one enrollment in Command), and whatever A sent before the stall
//!    and the proxy delivers late (its status write among it) must not change the request B
//!    issued.
//! 2. `sigterm_lets_enrollments_in_flight_finish`: SIGTERM while ~50 enrollments are in
//!    Command: the process lets them finish (answers written), exits 0, and a fresh process
//!    finishes the rest with exactly one enrollment per request.
//! 3. `a_frozen_leaders_late_write_is_refused`: as 1, but A is also frozen (SIGSTOP) once its
//!    status write is held by the proxy, so the write reaches the apiserver after B's, unabandoned:
//!    the resourceVersion precondition must refuse it (409) and R stays as B wrote it.
//!
//! Waits are bounded polls; the only clock-driven steps are the stall itself and the explicit
//! observation windows after it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use command_issuer_e2e::fixtures::{
    get_plain, install_example_issuer, issuer_api, repo_file, wait_cr_reason, wait_issuer_ready,
};
use command_issuer_e2e::k8s::certificate_requests;
use command_issuer_e2e::process::{describe, ManagedProcess};
use command_issuer_e2e::wait::log;
use command_issuer_e2e::{
    approve, bin_path, condition, create_certificate_request, get_certificate_request, make_csr,
    status_certificate, try_wait_for, wait_for, ControlPlane, Controller, Sim, TcpProxy,
    DEFAULT_CLUSTER_RESOURCE_NAMESPACE,
};
use kube::api::ListParams;
use kube::Client;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// `command_issuer::leader` timings (docs/operations.md, "Leader election").
const LEASE_DURATION: Duration = Duration::from_secs(15);
const RENEW_DEADLINE: Duration = Duration::from_secs(10);
const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// Log line of the controller right before `POST /Enrollment/CSR` (actors/src/enroll/sign.rs).
const CALLING_ENROLL: &str = "calling Command POST /Enrollment/CSR";
const NS: &str = "default";
const ISSUER: &str = "issuer-sample";

fn sha256_hex(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn count(logs: &str, needle: &str) -> usize {
    logs.lines().filter(|l| l.contains(needle)).count()
}

/// Log lines about request `default/<name>` that contain `needle`.
fn lines_for(logs: &str, name: &str, needle: &str) -> Vec<String> {
    let req = format!("\"request\":\"{NS}/{name}\"");
    logs.lines()
        .filter(|l| l.contains(needle) && l.contains(&req))
        .map(str::to_string)
        .collect()
}

fn panics(logs: &str) -> Vec<String> {
    logs.lines()
        .filter(|l| l.contains("panicked"))
        .map(str::to_string)
        .collect()
}

/// The `addr` of a controller listener's log line (`serving /metrics`).
async fn listener_addr(ctl: &mut Controller, line: &str) -> Result<String> {
    let l = ctl.wait_for_log(line, Duration::from_secs(30)).await?;
    Ok(serde_json::from_str::<Value>(&l)?["addr"]
        .as_str()
        .with_context(|| format!("addr in {l}"))?
        .to_string())
}

/// The value of an unlabelled gauge/counter on a controller's /metrics (None when unreachable).
async fn metric(addr: &str, name: &str) -> Option<f64> {
    let (code, text) = get_plain(addr, "/metrics").await?;
    if code != 200 {
        return None;
    }
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let value = match rest.chars().next()? {
            ' ' => rest,
            '{' => &rest[rest.find('}')? + 1..],
            _ => return None,
        };
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Creates and approves `default/<name>` for the example issuer; returns the CSR's SHA-256.
async fn request(client: &Client, name: &str) -> Result<String> {
    let cn = format!("{name}.fencing.test");
    let (pem, der) = make_csr(&cn, &[&cn])?;
    create_certificate_request(client, NS, name, &pem, "Issuer", ISSUER, &[]).await?;
    approve(client, NS, name).await?;
    Ok(sha256_hex(&der))
}

/// Enrollments the simulator recorded, per CSR SHA-256.
async fn enrollments_by_csr(sim: &Sim) -> Result<HashMap<String, usize>> {
    let mut m = HashMap::new();
    for e in sim.enrollments().await? {
        let sha = e["csr_sha256"].as_str().context("csr_sha256")?.to_string();
        *m.entry(sha).or_default() += 1;
    }
    Ok(m)
}

/// How often the (single) latency rule fired, i.e. `POST /Enrollment/CSR` calls that reached
/// the simulator (counted on arrival, before the delay).
async fn enroll_calls_arrived(sim: &Sim) -> Result<u64> {
    let rules = sim.faults().await?;
    rules
        .first()
        .and_then(|r| r["fired"].as_u64())
        .context("the latency rule and its fired counter")
}

fn latency_rule(ms: u64) -> Value {
    json!([{"target": "api", "path": "/Enrollment/CSR", "kind": "latency", "latency_ms": ms}])
}

/// Waits until the example issuer is Ready=True and SupportsMetadata=True (the lookup by
/// `Controller-Reconcile-Id` that recovers an interrupted attempt needs the latter).
async fn example_issuer_ready_with_metadata(client: &Client) -> Result<()> {
    wait_issuer_ready(
        client,
        "Issuer",
        Some(NS),
        ISSUER,
        "True",
        Duration::from_secs(60),
    )
    .await?;
    let api = issuer_api(client, "Issuer", Some(NS));
    wait_for(
        Duration::from_secs(60),
        "issuer-sample SupportsMetadata=True",
        || {
            let api = api.clone();
            async move {
                let o = api.get(ISSUER).await.ok()?;
                o.data["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .any(|c| c["type"] == "SupportsMetadata" && c["status"] == "True")
                    .then_some(())
            }
        },
    )
    .await
}

/// What users see of a request once issued: the certificate and the Ready condition as stored
/// (status, reason, message, lastTransitionTime), plus the resourceVersion (for the record).
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    certificate: Option<String>,
    ready: Option<Value>,
    resource_version: String,
}

async fn seen(client: &Client, name: &str) -> Result<Seen> {
    let cr = get_certificate_request(client, NS, name).await?;
    let ready = cr.data["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready").cloned());
    Ok(Seen {
        certificate: status_certificate(&cr)?,
        ready,
        resource_version: cr.metadata.resource_version.clone().unwrap_or_default(),
    })
}

fn is_issued(s: &Seen) -> bool {
    s.ready
        .as_ref()
        .is_some_and(|r| r["status"] == "True" && r["reason"] == "Issued")
}

/// The apiserver's answers to status writes of CertificateRequests so far, by HTTP code
/// (`apiserver_request_total`, verb APPLY, subresource status): a late write the fence refuses
/// shows as a 409; one its abandoning client cancelled (the TLS close_notify reaches the
/// apiserver right behind the held request) as a 504. Printed as evidence, not asserted.
async fn apiserver_status_writes(
    client: &Client,
) -> Option<std::collections::BTreeMap<String, u64>> {
    let req = http::Request::get("/metrics").body(Vec::new()).ok()?;
    let text = client.request_text(req).await.ok()?;
    let mut by_code = std::collections::BTreeMap::new();
    for l in text.lines().filter(|l| {
        l.starts_with("apiserver_request_total{")
            && l.contains("resource=\"certificaterequests\"")
            && l.contains("subresource=\"status\"")
            && l.contains("verb=\"APPLY\"")
    }) {
        let code = l.split("code=\"").nth(1)?.split('"').next()?.to_string();
        let n = l.split_whitespace().last()?.parse::<f64>().ok()? as u64;
        *by_code.entry(code).or_default() += n;
    }
    Some(by_code)
}

/// Leader A (through a lingering proxy) sends R's enrollment to Command (which takes 6 s to
/// answer), then its apiserver connections stall for 25 s; A gets Command's answer during the
/// stall and sends R's status write into the stalled proxy. Asserted: A stops leading within the
/// renew deadline (+ one retry period + margin), cancels R's attempt and afterwards neither writes
/// nor calls Command; B leads within lease duration + retry period + margin; R is Issued by B
/// before the stall ends, from a lookup of A's enrollment (exactly one enrollment of R's CSR, no
/// enrollment call by B); from the moment R is Issued until 5 s after the stall ended (what A sent
/// during the stall, held by the proxy, delivered), R's certificate and Ready condition never
/// change; a request created after the stall is issued by B with one enrollment.
///
/// What it catches: a leader that keeps leading without renewing (B never leads, or A's metric
/// stays 1); a deposed leader that keeps its attempt and later writes or enrolls again (A's log,
/// 2 enrollments); a late status write of A that the apiserver applies over B's (R's Ready
/// condition — A's lastTransitionTime and message — replaces B's after the stall ends); a new
/// leader that enrolls again instead of looking up, or never finishes the interrupted request.
/// Measured (see the report printed): A's held write does reach the apiserver when the stall ends,
/// but right behind it comes the TLS close_notify of A abandoning the call, so the apiserver
/// cancels it (504) before the resourceVersion precondition is consulted; the 409 path itself is
/// therefore not reached here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_leader_is_fenced() -> Result<()> {
    const ENROLL_LATENCY: Duration = Duration::from_secs(6);
    const STALL: Duration = Duration::from_secs(25);
    const AFTER_STALL: Duration = Duration::from_secs(5);
    const POLL: Duration = Duration::from_millis(200);
    const WARM_UP: usize = 8;
    // The deadline runs from A's last renewal (at most the stall's start) and is checked once
    // per retry period; 2 s more for a loaded two-core machine.
    let a_stop_bound = RENEW_DEADLINE + RETRY_PERIOD + Duration::from_secs(2);
    // The lease expires at most LEASE_DURATION after A's last renewal; B looks every retry
    // period; 3 s more for load.
    let b_lead_bound = LEASE_DURATION + RETRY_PERIOD + Duration::from_secs(3);
    let t_test = Instant::now();

    let cp = ControlPlane::start_with_crds(&[repo_file("crds").as_path()]).await?;
    let client = cp.client();
    let sim = Sim::start_default().await?;
    install_example_issuer(&cp, &sim).await?;
    let upstream: SocketAddr = format!("127.0.0.1:{}", cp.api_port()).parse()?;
    // Lingering: a request A abandons (its status write, when A gives up on it during the
    // stall) still reaches the apiserver when the stall ends, as through a load balancer that
    // keeps the upstream connection; without it the apiserver would see A hang up and might
    // drop the write unprocessed, and the fence would not be exercised.
    let proxy = TcpProxy::start_lingering(upstream, Duration::from_secs(20)).await?;
    let via = cp.dir().join("a-via-proxy.kubeconfig");
    proxy.kubeconfig_via(cp.admin_kubeconfig(), &via)?;
    let args = ["--leader-elect", "--metrics-bind-address=127.0.0.1:0"];

    // A first, and leading, before B exists.
    let mut a = Controller::start(&via, &args)?;
    let a_metrics = listener_addr(&mut a, "serving /metrics").await?;
    a.wait_for_log("became leader", Duration::from_secs(30))
        .await?;
    wait_for(
        Duration::from_secs(10),
        "A: command_issuer_leader 1",
        || async { (metric(&a_metrics, "command_issuer_leader").await == Some(1.0)).then_some(()) },
    )
    .await?;
    let mut b = Controller::start(cp.admin_kubeconfig(), &args)?;
    let b_metrics = listener_addr(&mut b, "serving /metrics").await?;
    b.wait_for_log("leader election started", Duration::from_secs(30))
        .await?;
    example_issuer_ready_with_metadata(&client).await?;
    let m = metric(&b_metrics, "command_issuer_leader").await;
    ensure!(m == Some(0.0), "B leads while A holds the lease: {m:?}");
    ensure!(
        !b.logs().contains("became leader"),
        "B became leader while A held the lease"
    );

    // Warm-up: A issues a few requests at once, so its apiserver client keeps several idle
    // (pooled) connections. During the stall a new connection cannot even complete its TLS
    // handshake, so A's status write for R is sent only if an idle connection is at hand; then
    // the proxy holds it and delivers it late, after B's write, which is the write the
    // resourceVersion precondition must refuse.
    let warm: Vec<String> = (0..WARM_UP).map(|i| format!("warm-{i}")).collect();
    let mut set = tokio::task::JoinSet::new();
    for name in &warm {
        let (client, name) = (client.clone(), name.clone());
        set.spawn(async move { request(&client, &name).await });
    }
    let mut warm_shas = Vec::new();
    while let Some(r) = set.join_next().await {
        warm_shas.push(r??);
    }
    for name in &warm {
        wait_cr_reason(&client, NS, name, "Issued", Duration::from_secs(30)).await?;
    }
    sim.set_faults(&latency_rule(ENROLL_LATENCY.as_millis() as u64))
        .await?;
    let r = "fenced-1";
    let r_sha = request(&client, r).await?;
    let created = Instant::now();
    // As soon as A has sent R to Command.
    {
        let a_ref = &mut a;
        try_wait_for(Duration::from_secs(30), "A calling Command for R", || {
            let found = !lines_for(&a_ref.logs(), r, CALLING_ENROLL).is_empty();
            let ok = a_ref.is_running();
            async move {
                ensure!(ok, "A exited");
                Ok(found.then_some(()))
            }
        })
        .await?;
    }
    let stall_start = Instant::now();
    let stall_end = proxy.stall_for(STALL);
    log(format!(
        "A sent R to Command {:.2}s after it was approved; A's apiserver stalled for {STALL:?}",
        secs(stall_start - created)
    ));
    let a_logs_at_stall = a.logs();
    let a_stopped0 = count(&a_logs_at_stall, "stopped leading");

    // Observe until 5 s after the stall ended and 5 s after R was first seen Issued.
    let (mut a_stop_log, mut a_stop_metric) = (None, None);
    let (mut b_lead_log, mut b_lead_metric) = (None, None);
    let mut first: Option<(Duration, Seen)> = None;
    let mut versions: Vec<(f64, String)> = Vec::new();
    let mut writes_before_end = None;
    let mut polls_after_issued = 0u32;
    loop {
        let at = stall_start.elapsed();
        if a_stop_log.is_none() && count(&a.logs(), "stopped leading") > a_stopped0 {
            a_stop_log = Some(at);
        }
        if a_stop_metric.is_none() && metric(&a_metrics, "command_issuer_leader").await == Some(0.0)
        {
            a_stop_metric = Some(at);
        }
        if b_lead_log.is_none() && count(&b.logs(), "became leader") > 0 {
            b_lead_log = Some(at);
        }
        if b_lead_metric.is_none() && metric(&b_metrics, "command_issuer_leader").await == Some(1.0)
        {
            b_lead_metric = Some(at);
        }
        let s = seen(&client, r).await?;
        if versions.last().map(|(_, v)| v) != Some(&s.resource_version) {
            versions.push((secs(at), s.resource_version.clone()));
        }
        match &first {
            None if is_issued(&s) => {
                ensure!(
                    s.certificate.as_deref().is_some_and(|c| !c.is_empty()),
                    "R Issued without a certificate: {s:?}"
                );
                log(format!("R Issued {:.2}s after the stall began", secs(at)));
                first = Some((at, s));
            }
            None => {}
            Some((t, f)) => {
                polls_after_issued += 1;
                ensure!(
                    s.certificate.is_some(),
                    "R's status.certificate was cleared {:.2}s after the stall began \
                     ({:.2}s after it was Issued at {:.2}s): {s:?}",
                    secs(at),
                    secs(at - *t),
                    secs(*t)
                );
                ensure!(
                    s.certificate == f.certificate,
                    "R's status.certificate changed {:.2}s after the stall began (Issued at {:.2}s)",
                    secs(at),
                    secs(*t)
                );
                ensure!(
                    s.ready == f.ready,
                    "R's Ready condition changed {:.2}s after the stall began (Issued at {:.2}s; \
                     a late write got through?):\n  first: {}\n  now:   {}",
                    secs(at),
                    secs(*t),
                    f.ready.clone().unwrap_or_default(),
                    s.ready.clone().unwrap_or_default()
                );
            }
        }
        if writes_before_end.is_none() && Instant::now() + POLL >= stall_end {
            writes_before_end = apiserver_status_writes(&client).await;
        }

        let now = Instant::now();
        ensure!(
            a_stop_log.is_some() || at < a_stop_bound,
            "A did not log \"stopped leading\" within {a_stop_bound:?} of its apiserver stall \
             (metric 0 at {a_stop_metric:?})"
        );
        ensure!(
            a_stop_metric.is_some() || at < a_stop_bound,
            "A's command_issuer_leader did not drop to 0 within {a_stop_bound:?} of the stall"
        );
        ensure!(
            b_lead_log.is_some() || at < b_lead_bound,
            "B did not become leader within {b_lead_bound:?} of A's stall (A stopped at {a_stop_log:?})"
        );
        ensure!(
            first.is_some() || now < stall_end,
            "R was not Issued before the stall ended ({STALL:?}); B leads since {b_lead_log:?}; \
             R now {:?}",
            condition(&get_certificate_request(&client, NS, r).await?, "Ready")
        );
        let issued_at = first.as_ref().map(|(t, _)| stall_start + *t);
        if let Some(i) = issued_at {
            if now >= stall_end + AFTER_STALL
                && now >= i + AFTER_STALL
                && b_lead_metric.is_some()
                && a_stop_metric.is_some()
            {
                break;
            }
        }
        tokio::time::sleep(POLL).await;
    }
    let (issued_at, issued) = first.context("R issued")?;
    let (a_stop_log, a_stop_metric) = (a_stop_log.unwrap(), a_stop_metric.unwrap());
    let (b_lead_log, b_lead_metric) = (b_lead_log.unwrap(), b_lead_metric.unwrap());
    let writes_after = apiserver_status_writes(&client).await;

    // Who did what.
    let (a_logs, b_logs) = (a.logs(), b.logs());
    let a_wrote_r: Vec<String> = lines_for(&a_logs, r, "status patched")
        .into_iter()
        .filter(|l| l.contains("Issued"))
        .collect();
    ensure!(
        a_wrote_r.is_empty(),
        "the stalled leader A logged an Issued status write of R: {a_wrote_r:?}"
    );
    ensure!(
        lines_for(&b_logs, r, "status patched")
            .iter()
            .any(|l| l.contains("Issued")),
        "B did not log R's Issued status write"
    );
    // How A's own status write for R ended, as A saw it (a timeout: sent, and held by the
    // proxy; a connect error: never sent).
    let a_write_errors: Vec<String> = lines_for(&a_logs, r, "status write failed")
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| v["error"].as_str().unwrap_or_default().to_string())
        .collect();
    let a_calls_r = lines_for(&a_logs, r, CALLING_ENROLL).len();
    // A cancelled what it had under way (R's attempt, waiting on its status write) and wrote or
    // sent nothing once it stopped leading.
    let after_stop: Vec<&str> = a_logs
        .lines()
        .skip(a_logs_at_stall.lines().count())
        .skip_while(|l| !l.contains("stopped leading"))
        .collect();
    let cancelled = after_stop
        .iter()
        .find(|l| l.contains("attempts under way cancelled"))
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .and_then(|v| v["cancelled"].as_u64());
    ensure!(
        cancelled.is_some_and(|n| n >= 1),
        "A did not log cancelling R's attempt when it stopped leading (cancelled: {cancelled:?})"
    );
    let late: Vec<&&str> = after_stop
        .iter()
        .filter(|l| {
            l.contains("status patched")
                || l.contains(CALLING_ENROLL)
                || l.contains("issuer Ready changed")
        })
        .collect();
    ensure!(
        late.is_empty(),
        "A wrote to the apiserver or called Command after it stopped leading: {late:?}"
    );
    let b_calls_r = lines_for(&b_logs, r, CALLING_ENROLL).len();
    let r_enrollments = enrollments_by_csr(&sim)
        .await?
        .get(&r_sha)
        .copied()
        .unwrap_or(0);
    ensure!(
        r_enrollments == 1,
        "{r_enrollments} enrollments of R's CSR in Command, expected exactly one \
         (A logged {a_calls_r} enrollment calls for R, B {b_calls_r})"
    );
    ensure!(
        b_calls_r == 0,
        "B enrolled R again ({b_calls_r} calls) instead of looking up A's enrollment"
    );
    ensure!(a.is_running() && b.is_running(), "a controller exited");

    // A request after the stall: issued once, by B.
    let r2 = "fenced-2";
    let r2_sha = request(&client, r2).await?;
    let t2 = Instant::now();
    wait_cr_reason(&client, NS, r2, "Issued", Duration::from_secs(30))
        .await
        .context("a request created after the stall, Issued by the new leader")?;
    let r2_took = t2.elapsed();
    let by_csr = enrollments_by_csr(&sim).await?;
    let r2_enrollments = by_csr.get(&r2_sha).copied().unwrap_or(0);
    ensure!(
        r2_enrollments == 1,
        "{r2_enrollments} enrollments of the second request's CSR, expected one"
    );
    let r_enrollments = by_csr.get(&r_sha).copied().unwrap_or(0);
    ensure!(
        r_enrollments == 1,
        "R has {r_enrollments} enrollments by the end"
    );
    let (a_logs, b_logs) = (a.logs(), b.logs());
    ensure!(
        lines_for(&a_logs, r2, CALLING_ENROLL).is_empty(),
        "the deposed leader A enrolled the second request"
    );
    for (who, l) in [("A", &a_logs), ("B", &b_logs)] {
        let p = panics(l);
        ensure!(p.is_empty(), "{who} panicked: {p:?}");
    }
    let last = seen(&client, r).await?;
    ensure!(
        last.certificate == issued.certificate && last.ready == issued.ready,
        "R changed after the observation window: {last:?}"
    );

    println!(
        "stall began {:.2}s after R was approved (A's call in Command, latency {}s); stall {}s",
        secs(stall_start - created),
        ENROLL_LATENCY.as_secs(),
        STALL.as_secs()
    );
    println!(
        "A stopped leading: log {:.2}s, metric 0 {:.2}s (bound {:.0}s); B leading: log {:.2}s, \
         metric 1 {:.2}s (bound {:.0}s)",
        secs(a_stop_log),
        secs(a_stop_metric),
        secs(a_stop_bound),
        secs(b_lead_log),
        secs(b_lead_metric),
        secs(b_lead_bound)
    );
    println!(
        "R Issued {:.2}s after the stall began (stall ended at {:.0}s); observed unchanged for \
         {:.2}s ({polls_after_issued} polls, until {:.0}s after the stall ended); enrollments of \
         R: {r_enrollments} (A calls {a_calls_r}, B calls {b_calls_r})",
        secs(issued_at),
        secs(STALL),
        secs(stall_start.elapsed() - issued_at),
        secs(AFTER_STALL)
    );
    println!(
        "R resourceVersions (s after stall start → rv): {versions:?}; apiserver answers to \
         request status writes by code: {writes_before_end:?} just before the stall ended, \
         {writes_after:?} after the window"
    );
    println!("A's own status write of R: {a_write_errors:?}");
    println!(
        "second request Issued {:.2}s after approval, {r2_enrollments} enrollment; total {:.1}s",
        secs(r2_took),
        secs(t_test.elapsed())
    );
    Ok(())
}

/// The fence itself: a status write that leader A sent while it still led reaches the apiserver
/// only after B has taken over and issued R. A's apiserver connections stall right after it sent
/// R to Command; Command answers, A sends R's status write into the stalled proxy, and A is then
/// frozen (SIGSTOP: a GC pause, a frozen VM), so it can neither abandon the write (its client
/// would send a TLS close_notify right behind it and the apiserver would cancel it unprocessed)
/// nor renew. B takes over and issues R by lookup; then the proxy resumes and delivers A's write,
/// which carries the resourceVersion A decided on. Asserted: R Issued by B within lease duration
/// + retry period + margin of the stall; the apiserver answers a status write with 409 within
/// the 5 s observed after the resume; R's certificate and Ready condition stay as B wrote them
/// through that window and 5 s after A is thawed; A then stops leading and logs no successful
/// write of R; exactly one enrollment of R's CSR.
///
/// What it catches: a status write without the resourceVersion precondition (A's stale Issued
/// status, with its own lastTransitionTime and message, replaces B's and no 409 is counted), and
/// a thawed former leader that writes or re-enrolls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leaders_late_write_is_refused() -> Result<()> {
    const ENROLL_LATENCY_MS: u64 = 3000;
    const WINDOW: Duration = Duration::from_secs(5);
    const WARM_UP: usize = 8;
    let b_issue_bound = LEASE_DURATION + RETRY_PERIOD + Duration::from_secs(8);
    let t_test = Instant::now();

    let cp = ControlPlane::start_with_crds(&[repo_file("crds").as_path()]).await?;
    let client = cp.client();
    let sim = Sim::start_default().await?;
    install_example_issuer(&cp, &sim).await?;
    let upstream: SocketAddr = format!("127.0.0.1:{}", cp.api_port()).parse()?;
    let proxy = TcpProxy::start(upstream).await?;
    let via = cp.dir().join("frozen-a-via-proxy.kubeconfig");
    proxy.kubeconfig_via(cp.admin_kubeconfig(), &via)?;
    let args = ["--leader-elect", "--metrics-bind-address=127.0.0.1:0"];
    let a_log = cp.dir().join("command-issuer-frozen-a.log");
    let mut a = spawn_controller(&via, &a_log, &args)?;
    wait_process_log(&mut a, "became leader").await?;
    let mut b = Controller::start(cp.admin_kubeconfig(), &args)?;
    b.wait_for_log("leader election started", Duration::from_secs(30))
        .await?;
    example_issuer_ready_with_metadata(&client).await?;
    // Idle pooled connections for A's status write (see a_stalled_leader_is_fenced).
    for i in 0..WARM_UP {
        request(&client, &format!("warm-{i}")).await?;
    }
    for i in 0..WARM_UP {
        wait_cr_reason(
            &client,
            NS,
            &format!("warm-{i}"),
            "Issued",
            Duration::from_secs(30),
        )
        .await?;
    }
    sim.set_faults(&latency_rule(ENROLL_LATENCY_MS)).await?;

    let r = "frozen-1";
    let r_sha = request(&client, r).await?;
    {
        let a = &mut a;
        try_wait_for(Duration::from_secs(30), "A calling Command for R", || {
            let found = !lines_for(&a.logs(), r, CALLING_ENROLL).is_empty();
            let ok = a.ensure_running();
            async move {
                ok?;
                Ok(found.then_some(()))
            }
        })
        .await?;
    }
    proxy.stall();
    let stall_start = Instant::now();
    // Command answered and A handed R's status write to its client (into the stalled proxy).
    wait_process_log(
        &mut a,
        &format!("CertificateRequest {NS}/{r} successfully signed"),
    )
    .await?;
    a.signal(libc::SIGSTOP);
    let frozen_at = stall_start.elapsed();
    log(format!(
        "A frozen (SIGSTOP) {:.2}s into the stall, its status write of R held by the proxy",
        secs(frozen_at)
    ));
    let (issued_at, first) = wait_for(b_issue_bound, "R Issued by B", || {
        let client = &client;
        async move {
            let s = seen(client, r).await.ok()?;
            is_issued(&s).then(|| (stall_start.elapsed(), s))
        }
    })
    .await?;
    ensure!(
        first.certificate.as_deref().is_some_and(|c| !c.is_empty()),
        "R Issued without a certificate"
    );
    ensure!(
        lines_for(&b.logs(), r, "status patched")
            .iter()
            .any(|l| l.contains("Issued")),
        "R Issued, but not by B"
    );
    let before = apiserver_status_writes(&client).await.unwrap_or_default();
    let conflicts =
        |m: &std::collections::BTreeMap<String, u64>| m.get("409").copied().unwrap_or(0);
    proxy.resume();
    let resumed = Instant::now();

    // Window 1: A frozen, its held write delivered.
    let mut refused_after = None;
    let mut polls = 0u32;
    while resumed.elapsed() < WINDOW {
        let s = seen(&client, r).await?;
        polls += 1;
        ensure!(
            s.certificate == first.certificate && s.ready == first.ready,
            "R changed {:.2}s after A's held write was delivered (the stale write got \
             through):\n  B's: {:?}\n  now: {:?}",
            secs(resumed.elapsed()),
            first.ready,
            s.ready
        );
        if refused_after.is_none() {
            let now = apiserver_status_writes(&client).await.unwrap_or_default();
            if conflicts(&now) > conflicts(&before) {
                refused_after = Some(resumed.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = apiserver_status_writes(&client).await.unwrap_or_default();
    let lines_before_thaw = a.logs().lines().count();
    a.signal(libc::SIGCONT);
    let thawed = Instant::now();

    // Window 2: A thawed.
    let mut a_stopped = None;
    while thawed.elapsed() < WINDOW {
        let s = seen(&client, r).await?;
        polls += 1;
        ensure!(
            s.certificate == first.certificate && s.ready == first.ready,
            "R changed {:.2}s after A was thawed:\n  B's: {:?}\n  now: {:?}",
            secs(thawed.elapsed()),
            first.ready,
            s.ready
        );
        if a_stopped.is_none() && count(&a.logs(), "stopped leading") > 0 {
            a_stopped = Some(thawed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let a_logs = a.logs();
    let a_after: Vec<&str> = a_logs.lines().skip(lines_before_thaw).collect();
    let a_wrote: Vec<&&str> = a_after
        .iter()
        .filter(|l| l.contains("status patched") && l.contains(&format!("{NS}/{r}")))
        .collect();
    ensure!(
        a_wrote.is_empty(),
        "the former leader A logged a successful status write of R: {a_wrote:?}"
    );
    let a_notes: Vec<String> = a_after
        .iter()
        .filter(|l| l.contains(&format!("{NS}/{r}")) || l.contains("stopped leading"))
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_default();
            format!("{} {}", v["message"], v["error"])
        })
        .collect();
    let a_stopped = a_stopped.context("A did not log \"stopped leading\" after its thaw")?;
    a.ensure_running()?;
    let n = enrollments_by_csr(&sim)
        .await?
        .get(&r_sha)
        .copied()
        .unwrap_or(0);
    ensure!(n == 1, "{n} enrollments of R's CSR, expected exactly one");
    for (who, l) in [("A", &a_logs), ("B", &b.logs())] {
        let p = panics(l);
        ensure!(p.is_empty(), "{who} panicked: {p:?}");
    }
    println!(
        "A frozen {:.2}s into the stall; R Issued by B {:.2}s into it (bound {:.0}s); apiserver \
         status-write answers {before:?} before the resume, {after:?} after; A's held write \
         refused (409) {refused_after:?} after the resume",
        secs(frozen_at),
        secs(issued_at),
        secs(b_issue_bound)
    );
    println!(
        "A thawed: stopped leading {:.2}s later; A's log after the thaw: {a_notes:?}; R unchanged \
         ({polls} polls over 2 × {:.0}s); enrollments of R: {n}; total {:.1}s",
        secs(a_stopped),
        secs(WINDOW),
        secs(t_test.elapsed())
    );
    ensure!(
        refused_after.is_some(),
        "no 409 from the apiserver within {WINDOW:?} of delivering A's held status write (R \
         unchanged): the write did not reach the apiserver, so the fence was not exercised"
    );
    Ok(())
}

/// Waits (bounded) until a [`ManagedProcess`]'s log has a line containing `needle`.
async fn wait_process_log(p: &mut ManagedProcess, needle: &str) -> Result<()> {
    try_wait_for(
        Duration::from_secs(30),
        &format!("log line containing {needle:?}"),
        || {
            let found = p.logs().contains(needle);
            let ok = p.ensure_running();
            async move {
                ok?;
                Ok(found.then_some(()))
            }
        },
    )
    .await
}

/// Starts the controller binary as [`Controller::start`] does, but as a [`ManagedProcess`]
/// this test can signal: [`Controller::stop`] sends SIGTERM but SIGKILLs after 10 s, shorter
/// than the controller's 25 s drain deadline, and `Controller` does not expose its pid.
fn spawn_controller(kubeconfig: &Path, log_path: &Path, extra: &[&str]) -> Result<ManagedProcess> {
    let mut cmd = std::process::Command::new(bin_path("command-issuer")?);
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg(format!(
            "--cluster-resource-namespace={DEFAULT_CLUSTER_RESOURCE_NAMESPACE}"
        ))
        .args([
            "--log-format=json",
            "--health-probe-bind-address=127.0.0.1:0",
        ])
        .args(extra);
    let p = ManagedProcess::spawn("command-issuer", cmd, log_path)?;
    log(format!(
        "command-issuer started (pid {:?}, log {})",
        p.pid(),
        log_path.display()
    ));
    Ok(p)
}

/// 50 requests, Command answering each enrollment after 2 s, `--concurrency=64
/// --per-issuer-concurrency=64` (the defaults, 32 and 24 per issuer, would hold only 24 of
/// this one issuer's requests in flight; 64/64 lets all 50 be in Command at once). SIGTERM once
/// ≥ 40 `POST /Enrollment/CSR` calls reached the simulator. Asserted: exit code 0 within 30 s,
/// the log's "every attempt under way finished" (or the deadline warning, if the exit took the
/// full 25 s); at exit, no call is still running in Command (calls arrived = enrollments
/// recorded) and every enrollment's answer was written (Issued requests = enrollments
/// recorded); no attempt started after SIGTERM (Command calls ≤ attempts running at the drain +
/// attempts ended before it); a fresh process then brings all 50 to Ready=True with exactly one enrollment per
/// CSR.
///
/// What it catches: a process that exits at SIGTERM without waiting (calls still in Command,
/// answers not written: Issued < enrolled, or recorded < arrived), one that hangs or is killed
/// (no exit 0 in 30 s), one that starts new enrollments after SIGTERM, and a
/// restart that loses (never issues) or doubles (re-enrolls) a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_enrollments_in_flight_finish() -> Result<()> {
    const N: usize = 50;
    const IN_FLIGHT_AT_TERM: u64 = 40;
    const LATENCY_MS: u64 = 2000;
    const EXIT_BOUND: Duration = Duration::from_secs(30);
    const DRAIN_DEADLINE: Duration = Duration::from_secs(25);
    let t_test = Instant::now();

    let cp = ControlPlane::start_with_crds(&[repo_file("crds").as_path()]).await?;
    let client = cp.client();
    let sim = Sim::start_default().await?;
    install_example_issuer(&cp, &sim).await?;
    sim.set_faults(&latency_rule(LATENCY_MS)).await?;
    // A short --command-timeout bounds the wait a restart needs for an attempt that was cut
    // short (4 × timeout), should there be one; 2 s of latency is far below it.
    let flags = [
        "--concurrency=64",
        "--per-issuer-concurrency=64",
        "--command-timeout=10s",
        "--metrics-bind-address=127.0.0.1:0",
    ];
    let log_path = cp.dir().join("command-issuer-sigterm.log");
    let mut first = spawn_controller(cp.admin_kubeconfig(), &log_path, &flags)?;
    let metrics_line = {
        let first = &mut first;
        try_wait_for(Duration::from_secs(30), "serving /metrics", || {
            let line = first
                .logs()
                .lines()
                .find(|l| l.contains("serving /metrics"))
                .map(str::to_string);
            let ok = first.ensure_running();
            async move {
                ok?;
                Ok(line)
            }
        })
        .await?
    };
    let metrics_addr = serde_json::from_str::<Value>(&metrics_line)?["addr"]
        .as_str()
        .context("metrics addr")?
        .to_string();
    example_issuer_ready_with_metadata(&client).await?;

    // All at once.
    let mut csrs = Vec::new();
    for i in 0..N {
        let name = format!("term-{i}");
        let cn = format!("{name}.fencing.test");
        let (pem, der) = make_csr(&cn, &[&cn])?;
        csrs.push((name, pem, sha256_hex(&der)));
    }
    let created = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (name, pem, _) in &csrs {
        let (client, name, pem) = (client.clone(), name.clone(), pem.clone());
        set.spawn(async move {
            create_certificate_request(&client, NS, &name, &pem, "Issuer", ISSUER, &[]).await?;
            approve(&client, NS, &name).await
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let created_in = created.elapsed();

    let arrived = {
        let sim = &sim;
        wait_for(
            Duration::from_secs(60),
            "≥ 40 enrollment calls in the simulator",
            || async move {
                enroll_calls_arrived(sim)
                    .await
                    .ok()
                    .filter(|n| *n >= IN_FLIGHT_AT_TERM)
            },
        )
        .await?
    };
    let in_flight = metric(&metrics_addr, "command_issuer_enrollments_in_flight").await;
    let recorded_at_term = sim.enrollments().await?.len();
    let term_at = Instant::now();
    first.signal(libc::SIGTERM);
    log(format!(
        "SIGTERM with {arrived} enrollment calls arrived, {recorded_at_term} answered, \
         in-flight metric {in_flight:?}"
    ));
    while first.is_running() {
        if term_at.elapsed() >= EXIT_BOUND {
            let status = first.kill();
            bail!(
                "the controller did not exit within {EXIT_BOUND:?} of SIGTERM (killed: {}); log \
                 tail:\n{}",
                describe(status),
                first.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let exit_took = term_at.elapsed();
    let status = first.exit_status();
    ensure!(
        status.and_then(|s| s.code()) == Some(0),
        "exit after SIGTERM: {} (expected exit code 0); log tail:\n{}",
        describe(status),
        first.log_tail(30)
    );
    let logs = first.logs();
    let finished = logs.contains("every attempt under way finished");
    let deadline_warning = logs.contains("attempts still under way at the drain deadline");
    ensure!(
        finished || (deadline_warning && exit_took >= DRAIN_DEADLINE),
        "after SIGTERM the log has neither \"every attempt under way finished\" nor (at the \
         {DRAIN_DEADLINE:?} deadline) the warning; exit took {:.2}s, warning present: \
         {deadline_warning}",
        secs(exit_took)
    );
    let p = panics(&logs);
    ensure!(p.is_empty(), "the first controller panicked: {p:?}");

    // What the first process left behind.
    let arrived_at_exit = enroll_calls_arrived(&sim).await?;
    let by_csr = enrollments_by_csr(&sim).await?;
    let recorded_at_exit: usize = by_csr.values().sum();
    let list = certificate_requests(&client, NS)
        .list(&ListParams::default())
        .await?;
    let issued_names: Vec<String> = list
        .items
        .iter()
        .filter(|cr| condition(cr, "Ready").is_some_and(|c| c.is_true() && c.reason == "Issued"))
        .filter_map(|cr| cr.metadata.name.clone())
        .collect();
    let enrolled_not_issued: Vec<&str> = csrs
        .iter()
        .filter(|(name, _, sha)| by_csr.contains_key(sha) && !issued_names.contains(name))
        .map(|(name, _, _)| name.as_str())
        .collect();
    let calls_after_term = logs
        .lines()
        .skip_while(|l| !l.contains("SIGTERM received"))
        .filter(|l| l.contains(CALLING_ENROLL))
        .count();
    // Nothing new after SIGTERM: every Command call of this process belongs to an attempt that
    // had ended (written its status) before SIGTERM or was under way at it ("running" of the
    // drain line, slots and polls in flight). A new attempt started while draining would add a
    // call beyond that.
    let running_at_drain = logs
        .lines()
        .find(|l| l.contains("draining: no new attempts"))
        .and_then(|l| serde_json::from_str::<Value>(l).ok())
        .and_then(|v| v["running"].as_u64())
        .context("the drain log line with \"running\"")? as usize;
    let ended_before_term = logs
        .lines()
        .take_while(|l| !l.contains("SIGTERM received"))
        .filter(|l| l.contains("status patched"))
        .count();
    let calls_total = count(&logs, CALLING_ENROLL);
    ensure!(
        calls_total <= running_at_drain + ended_before_term,
        "{calls_total} Command calls by the first process, but only {running_at_drain} attempts \
         were under way at SIGTERM and {ended_before_term} had ended: it started new ones while \
         draining"
    );
    ensure!(
        recorded_at_exit as u64 == arrived_at_exit,
        "{arrived_at_exit} enrollment calls reached Command but only {recorded_at_exit} were \
         complete when the controller exited: it did not wait for calls under way"
    );
    ensure!(
        enrolled_not_issued.is_empty(),
        "{} requests enrolled in Command but not written Issued when the controller exited \
         ({} issued of {recorded_at_exit} enrolled): {enrolled_not_issued:?}",
        enrolled_not_issued.len(),
        issued_names.len()
    );

    // A fresh process finishes the rest.
    let restart = Instant::now();
    let mut fresh = Controller::start(cp.admin_kubeconfig(), &flags)?;
    {
        let client = &client;
        wait_for(
            Duration::from_secs(90),
            "all 50 requests Ready=True after the restart",
            || async move {
                let list = certificate_requests(client, NS)
                    .list(&ListParams::default())
                    .await
                    .ok()?;
                let n = list
                    .items
                    .iter()
                    .filter(|cr| {
                        condition(cr, "Ready").is_some_and(|c| c.is_true() && c.reason == "Issued")
                    })
                    .count();
                (n == N).then_some(())
            },
        )
        .await?;
    }
    let restart_took = restart.elapsed();
    let by_csr = enrollments_by_csr(&sim).await?;
    let wrong: Vec<String> = csrs
        .iter()
        .filter_map(|(name, _, sha)| {
            let n = by_csr.get(sha).copied().unwrap_or(0);
            (n != 1).then(|| format!("{name}: {n}"))
        })
        .collect();
    ensure!(
        wrong.is_empty(),
        "requests without exactly one enrollment: {wrong:?}"
    );
    ensure!(fresh.is_running(), "the fresh controller exited");
    let fresh_logs = fresh.logs();
    let p = panics(&fresh_logs);
    ensure!(p.is_empty(), "the fresh controller panicked: {p:?}");
    let fresh_calls = count(&fresh_logs, CALLING_ENROLL);

    println!(
        "{N} requests created+approved in {:.2}s; SIGTERM {:.2}s after creation with {arrived} \
         calls arrived in Command ({recorded_at_term} answered), in-flight metric {in_flight:?}",
        secs(created_in),
        secs(term_at - created)
    );
    println!(
        "exit code 0 {:.2}s after SIGTERM (\"finished\" {finished}, deadline warning \
         {deadline_warning}); {running_at_drain} attempts under way at SIGTERM, {calls_after_term} of \
         {calls_total} enrollment calls logged after it; at exit: {arrived_at_exit} calls arrived, \
         {recorded_at_exit} enrolled, {} Issued",
        secs(exit_took),
        issued_names.len()
    );
    println!(
        "fresh process: {fresh_calls} enrollment calls, all {N} Issued {:.2}s after its start, \
         one enrollment per CSR; total {:.1}s",
        secs(restart_took),
        secs(t_test.elapsed())
    );
    Ok(())
}
