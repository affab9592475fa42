//! Exactly one enrollment per request when the outcome of a call is uncertain, and the gates in
//! front of an enrollment.
//!
//! `uncertain_enrollments_are_recovered_or_waited_out`: Command completes an enrollment but its
//! client never learns it — a gateway answers 504 after Command did the work, or Command
//! finishes seconds after the client timed out — on issuers with and without SupportsMetadata.
//!
//! `failed_writes_and_request_gates`: the controller reaches the apiserver through a proxy that
//! fails chosen writes (the status write after issuance, the request-id annotation of a held
//! request), rejecting them or applying them and dropping the answer; and requests carrying a
//! `keyfactor-request-id` of another request while unapproved, denied, or approved with another
//! key; and a custom metadata annotation naming a field the controller sets itself.
//!
//! Every scenario asserts that its fault fired and counts the simulator's enrollments per CSR
//! (SHA-256 of its DER). Both tests run their scenarios concurrently against one control plane
//! and one controller each.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use command_issuer_e2e::fixtures::{
    basic_issuer_in, repo_file, wait_cr_reason, wait_issuer_condition, wait_issuer_ready,
    CONTROLLER_NAMESPACE,
};
use command_issuer_e2e::k8s::certificate_requests;
use command_issuer_e2e::wait::log;
use command_issuer_e2e::write_faults::{WriteFailure, WriteFaultProxy, WriteMatch};
use command_issuer_e2e::{
    approve, condition, create_certificate_request, deny, events_for, get_certificate_request,
    make_csr, status_certificate, wait_for, ControlPlane, Controller, Sim,
};
use kube::api::ListParams;
use kube::Client;
use serde_json::{json, Value};

/// `--command-timeout` of both controllers: short, so the windows below are short.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// After a lost answer, a request is enrolled again only once this long has passed since its
/// intent was recorded (4 × `--command-timeout`).
const SETTLE: Duration = Duration::from_secs(8);

const REQUEST_ID: &str = "command-issuer.keyfactor.com/keyfactor-request-id";
const INTENT: &str = "command-issuer.keyfactor.com/enrollment-intent";
const TEMPLATE: &str = "command-issuer.keyfactor.com/certificateTemplate";
/// The simulator template whose requests Command holds for approval.
const HELD_TEMPLATE: &str = "NeedsApproval";
/// Start of the Pending message (and Warning Event) of an uncertain request that cannot be
/// looked up (documented limitation without SupportsMetadata).
const UNVERIFIABLE: &str = "failed to sign: an earlier enrollment of this request may have reached Command and cannot be looked up";
const OTHER_KEY: &str = "was issued for another public key than this request's CSR";
const CUSTOM_METADATA: &str = "metadata.command-issuer.keyfactor.com/Controller-Reconcile-Id";

fn custom_metadata_message() -> String {
    format!("failed to build the signer: failed to create signer: invalid signer config: metadata annotation \"{CUSTOM_METADATA}\" names a field the controller sets itself; remove the annotation")
}

/// One request of a scenario.
#[derive(Debug, Clone)]
struct Req {
    name: String,
    der: Vec<u8>,
}

/// Creates and approves `<prefix>-<i>` for i in 0..n with `annotations`, to Issuer `sim`.
async fn create_requests(
    client: &Client,
    ns: &str,
    prefix: &str,
    n: usize,
    annotations: &[(&str, &str)],
) -> Result<Vec<Req>> {
    let mut out = Vec::new();
    for i in 0..n {
        let name = format!("{prefix}-{i}");
        let cn = format!("{name}.{ns}.exactly-once.test");
        let (pem, der) = make_csr(&cn, &[&cn])?;
        create_certificate_request(client, ns, &name, &pem, "Issuer", "sim", annotations).await?;
        approve(client, ns, &name).await?;
        out.push(Req { name, der });
    }
    Ok(out)
}

/// DER of the first certificate of a PEM bundle.
fn leaf_der(pem: &str) -> Result<Vec<u8>> {
    let (_, p) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| anyhow!("PEM: {e}"))?;
    Ok(p.contents)
}

/// The leaf in the request's `status.certificate`.
async fn issued_leaf(client: &Client, ns: &str, name: &str) -> Result<Vec<u8>> {
    let cr = get_certificate_request(client, ns, name).await?;
    leaf_der(&status_certificate(&cr)?.with_context(|| format!("{ns}/{name}: no certificate"))?)
}

/// Waits until every request of `ns` is Ready=True/Issued; a request that ends Failed or Denied
/// fails at once. Every Ready message seen on the way that starts with [`UNVERIFIABLE`] adds its
/// request to `unverifiable`.
async fn wait_all_issued(
    client: &Client,
    ns: &str,
    n: usize,
    timeout: Duration,
    unverifiable: &mut BTreeSet<String>,
) -> Result<()> {
    let start = Instant::now();
    let mut last = usize::MAX;
    loop {
        let list = certificate_requests(client, ns)
            .list(&ListParams::default())
            .await?;
        let mut issued = 0;
        let mut waiting = Vec::new();
        for cr in &list.items {
            let name = cr.metadata.name.clone().unwrap_or_default();
            match condition(cr, "Ready") {
                Some(c) if c.is_true() && c.reason == "Issued" => issued += 1,
                Some(c) if c.reason == "Failed" || c.reason == "Denied" => {
                    bail!(
                        "{ns}/{name} ended {} without a certificate: {}",
                        c.reason,
                        c.message
                    )
                }
                other => {
                    if other
                        .as_ref()
                        .is_some_and(|c| c.message.starts_with(UNVERIFIABLE))
                    {
                        unverifiable.insert(name.clone());
                    }
                    waiting.push(format!("{name}: {:?}", other.map(|c| c.message)));
                }
            }
        }
        if issued != last {
            log(format!("{ns}: {issued}/{n} issued"));
            last = issued;
        }
        if issued >= n {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            bail!(
                "{ns}: {issued}/{n} issued after {:.1?}; waiting: {:?}",
                start.elapsed(),
                &waiting[..waiting.len().min(4)]
            );
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}

/// Time between two enrollment records (their `time`).
fn gap(a: &Value, b: &Value) -> Result<Duration> {
    let t = |v: &Value| -> Result<jiff::Timestamp> {
        v["time"]
            .as_str()
            .context("record time")?
            .parse()
            .map_err(|e| anyhow!("record time: {e}"))
    };
    Ok(Duration::try_from(t(b)?.duration_since(t(a)?)).unwrap_or_default())
}

/// The number of fault firings of a simulator's rules.
async fn fired(sim: &Sim) -> Result<u64> {
    Ok(sim
        .faults()
        .await?
        .iter()
        .map(|r| r["fired"].as_u64().unwrap_or(0))
        .sum())
}

/// What a scenario measured, for the report.
#[derive(Debug)]
struct Figures {
    name: String,
    n: usize,
    secs: f64,
    fired: u64,
    enrollments: usize,
    notes: String,
}

fn report(rows: &[Figures]) {
    println!("\nscenario        N   secs  fired  enrollments  notes");
    for r in rows {
        println!(
            "{:<14} {:>2} {:>6.1} {:>6} {:>12}  {}",
            r.name, r.n, r.secs, r.fired, r.enrollments, r.notes
        );
    }
}

fn no_panics(what: &str, log: &str) -> Result<()> {
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("panicked")).collect();
    ensure!(lines.is_empty(), "{what} panicked: {lines:?}");
    Ok(())
}

/// A Command-side scenario: its own simulator (with or without the controller's metadata
/// fields) and Issuer `sim` in namespace `name`, a fault rule on `POST /Enrollment/CSR`.
struct Uncertain {
    name: &'static str,
    metadata: bool,
    rule: Value,
    n: usize,
}

async fn run_uncertain(client: Client, s: Uncertain) -> Result<(Figures, Sim)> {
    let ns = s.name;
    let mut config = Sim::default_config_json()?;
    if !s.metadata {
        Sim::remove_controller_metadata_fields(&mut config)?;
    }
    let sim = Sim::start_with_config_json(&config).await?;
    basic_issuer_in(&client, &sim, &sim.host_port(), ns, "sim").await?;
    let long = Duration::from_secs(60);
    wait_issuer_ready(&client, "Issuer", Some(ns), "sim", "True", long).await?;
    let supports = if s.metadata { "True" } else { "False" };
    wait_issuer_condition(
        &client,
        "Issuer",
        Some(ns),
        "sim",
        "SupportsMetadata",
        supports,
        long,
    )
    .await?;
    sim.set_faults(&json!([s.rule])).await?;
    let t0 = Instant::now();
    let reqs = create_requests(&client, ns, "r", s.n, &[]).await?;
    let mut unverifiable = BTreeSet::new();
    wait_all_issued(
        &client,
        ns,
        s.n,
        Duration::from_secs(120),
        &mut unverifiable,
    )
    .await?;
    let secs = t0.elapsed().as_secs_f64();
    let fired = fired(&sim).await?;
    ensure!(fired > 0, "{ns}: the fault never fired");
    sim.clear_faults().await?;

    let all = sim.enrollments().await?;
    let faulted_records = all.iter().filter(|e| !e["fault"].is_null()).count() as u64;
    ensure!(
        faulted_records == fired,
        "{ns}: {fired} firings but {faulted_records} faulted enrollments"
    );
    let mut faulted = BTreeSet::new();
    let mut wrong = Vec::new();
    for r in &reqs {
        let records = sim.enrollments_of(&r.der).await?;
        let first_faulted = records.first().is_some_and(|e| !e["fault"].is_null());
        if first_faulted {
            faulted.insert(r.name.clone());
        }
        let leaf = issued_leaf(&client, ns, &r.name).await?;
        if s.metadata || !first_faulted {
            // With SupportsMetadata the certificate of the answered-too-late enrollment is found
            // by the request's uid and adopted: one enrollment, and its certificate is the one
            // in status. Unfaulted requests: one enrollment either way.
            if records.len() != 1 {
                wrong.push(format!("{}: {} enrollments", r.name, records.len()));
                continue;
            }
        } else {
            // Without SupportsMetadata the earlier enrollment cannot be looked up; the contract
            // (docs/operations.md, "One enrollment per request") is that the request is
            // enrolled again, once, and only after 4 × --command-timeout since its intent was
            // recorded. The first enrollment always reaches the simulator (it completes there),
            // so a faulted request has exactly two: the faulted one, then one unfaulted at least
            // SETTLE after it (less 1 s: the intent is recorded a moment before the call
            // arrives), and the certificate in status is the second one's.
            if records.len() != 2 {
                wrong.push(format!("{}: {} enrollments, want 2", r.name, records.len()));
                continue;
            }
            let g = gap(&records[0], &records[1])?;
            if !records[1]["fault"].is_null() || g + Duration::from_secs(1) < SETTLE {
                wrong.push(format!(
                    "{}: enrolled again {g:.1?} after the first (fault {})",
                    r.name, records[1]["fault"]
                ));
            }
        }
        let last = records.last().context("record")?;
        let recorded = leaf_der(last["certificate"].as_str().context("certificate")?)?;
        if leaf != recorded {
            wrong.push(format!(
                "{}: status holds another certificate than Command's",
                r.name
            ));
        }
    }
    ensure!(wrong.is_empty(), "{ns}: {wrong:?}");
    let expected = if s.metadata { s.n } else { s.n + faulted.len() };
    ensure!(
        all.len() == expected,
        "{ns}: {} enrollments, expected {expected}",
        all.len()
    );
    let mut notes = format!("{} faulted", faulted.len());
    if !s.metadata {
        // The documented Warning Event and Pending message, on every faulted request.
        for name in &faulted {
            let events = events_for(&client, ns, name).await?;
            let warned = events.iter().any(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.note
                        .as_deref()
                        .is_some_and(|n| n.starts_with(UNVERIFIABLE))
            });
            ensure!(
                warned,
                "{ns}/{name}: no Warning Event starting {UNVERIFIABLE:?}"
            );
        }
        ensure!(
            faulted.is_subset(&unverifiable),
            "{ns}: Pending message {UNVERIFIABLE:?} not seen on {:?}",
            faulted.difference(&unverifiable).collect::<Vec<_>>()
        );
        notes.push_str(
            "; each enrolled again after the window, Warning Event + Pending message seen",
        );
    }
    Ok((
        Figures {
            name: ns.to_string(),
            n: s.n,
            secs,
            fired,
            enrollments: all.len(),
            notes,
        },
        sim,
    ))
}

/// Controller log lines containing `text` about a request in `ns`.
fn lines_about(controller_log: &str, ns: &str, text: &str) -> usize {
    controller_log
        .lines()
        .filter(|l| l.contains(text) && l.contains(&format!("\"{ns}/")))
        .count()
}

/// Controller log lines recovering an interrupted enrollment of a request in `ns`.
fn recoveries(controller_log: &str, ns: &str) -> usize {
    lines_about(
        controller_log,
        ns,
        "recovered the certificate of an interrupted enrollment",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncertain_enrollments_are_recovered_or_waited_out() -> Result<()> {
    let t0 = Instant::now();
    let cp = ControlPlane::start_with_crds(&[repo_file("crds").as_path()]).await?;
    let client = cp.client();
    cp.create_namespace(CONTROLLER_NAMESPACE).await?;
    let timeout = format!("--command-timeout={}s", COMMAND_TIMEOUT.as_secs());
    let ctl = Controller::start(cp.admin_kubeconfig(), &[&timeout])?;
    let enroll = "/Enrollment/CSR";
    // Command finishes 5 s after the call arrived (past the 2 s client timeout, within the
    // 8 s window) and would answer at 6 s.
    let late = json!({"target": "api", "path": enroll, "kind": "complete_late",
        "complete_after_ms": 5000, "latency_ms": 6000});
    let gateway =
        json!({"target": "api", "path": enroll, "kind": "complete_then_status", "status": 504});
    let with_count = |rule: &Value, k: u64| {
        let mut r = rule.clone();
        r["count"] = json!(k);
        r
    };
    let scenarios = vec![
        Uncertain {
            name: "meta-504",
            metadata: true,
            rule: with_count(&gateway, 7),
            n: 10,
        },
        Uncertain {
            name: "meta-late",
            metadata: true,
            rule: with_count(&late, 3),
            n: 5,
        },
        Uncertain {
            name: "nometa-504",
            metadata: false,
            rule: with_count(&gateway, 3),
            n: 5,
        },
        Uncertain {
            name: "nometa-late",
            metadata: false,
            rule: with_count(&late, 2),
            n: 4,
        },
    ];
    let tasks: Vec<_> = scenarios
        .into_iter()
        .map(|s| (s.name, tokio::spawn(run_uncertain(client.clone(), s))))
        .collect();
    let (mut rows, mut sims, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for (name, t) in tasks {
        match t.await {
            Ok(Ok((f, sim))) => {
                rows.push(f);
                sims.push(sim);
            }
            Ok(Err(e)) => errors.push(format!("{name}: {e:#}")),
            Err(e) => errors.push(format!("{name}: task failed: {e}")),
        }
    }
    let logs = ctl.logs();
    for row in &mut rows {
        let rec = recoveries(&logs, &row.name);
        row.notes.push_str(&format!("; recovered {rec}"));
        // With SupportsMetadata every faulted request was found by its uid, never re-enrolled;
        // without it nothing can be found.
        let want = if row.name.starts_with("meta") {
            row.fired as usize
        } else {
            0
        };
        if rec != want {
            errors.push(format!("{}: recovered {rec}, expected {want}", row.name));
        }
        if row.name == "meta-late" {
            // The scenario is only meaningful if Command had not finished when the controller
            // first looked: some lookup must have come back empty (and been repeated).
            let early = lines_about(&logs, &row.name, "left no certificate in Command yet");
            row.notes
                .push_str(&format!("; {early} lookups before completion"));
            if early == 0 {
                errors.push("meta-late: no lookup came before Command completed".into());
            }
        }
    }
    for sim in &sims {
        no_panics("command-sim", &sim.logs())?;
    }
    report(&rows);
    println!("test ran {:.1?}", t0.elapsed());
    if let Err(e) = no_panics("command-issuer", &logs) {
        errors.push(e.to_string());
    }
    ensure!(
        errors.is_empty(),
        "scenarios failed:\n{}",
        errors.join("\n")
    );
    Ok(())
}

/// Requests per write-fault scenario, and how many of their status writes fail.
const WRITE_N: usize = 5;
const WRITE_K: u64 = 3;

/// The first `WRITE_K` status writes of requests in `ns` fail (`failure`) after Command issued:
/// every request still ends Issued with Command's certificate and one enrollment. The issuer
/// has no SupportsMetadata, so no lookup could find a lost certificate: only the one kept in
/// memory explains a single enrollment.
async fn status_write_fails(
    client: &Client,
    sim: &Sim,
    proxy: &WriteFaultProxy,
    ns: &str,
    failure: WriteFailure,
) -> Result<Figures> {
    let rule = proxy.fail_next(
        WriteMatch::new("PATCH")
            .path(&format!("/namespaces/{ns}/certificaterequests/"))
            .path("/status"),
        failure,
        WRITE_K,
    );
    let t0 = Instant::now();
    let reqs = create_requests(client, ns, "w", WRITE_N, &[]).await?;
    wait_all_issued(
        client,
        ns,
        WRITE_N,
        Duration::from_secs(60),
        &mut BTreeSet::new(),
    )
    .await?;
    let secs = t0.elapsed().as_secs_f64();
    let counts = proxy.counts(rule);
    ensure!(
        counts.failed == WRITE_K,
        "{ns}: {counts:?}, expected {WRITE_K} failed status writes"
    );
    let mut total = 0;
    for r in &reqs {
        let records = sim.enrollments_of(&r.der).await?;
        ensure!(
            records.len() == 1,
            "{ns}/{}: {} enrollments",
            r.name,
            records.len()
        );
        total += 1;
        let recorded = leaf_der(records[0]["certificate"].as_str().context("certificate")?)?;
        ensure!(
            issued_leaf(client, ns, &r.name).await? == recorded,
            "{ns}/{}: status holds another certificate than Command's",
            r.name
        );
    }
    Ok(Figures {
        name: ns.to_string(),
        n: WRITE_N,
        secs,
        fired: counts.failed,
        enrollments: total,
        notes: format!("{failure:?}: {} status writes matched", counts.matched),
    })
}

/// Waits until a request is held (Pending with Command's message) with its request id
/// recorded; returns the id.
async fn wait_held(client: &Client, ns: &str, name: &str) -> Result<String> {
    wait_for(
        Duration::from_secs(60),
        &format!("{ns}/{name} held with its request id recorded"),
        || async move {
            let cr = get_certificate_request(client, ns, name).await.ok()?;
            let held = condition(&cr, "Ready").is_some_and(|c| {
                c.reason == "Pending" && c.message.contains("Command holds the request")
            });
            let id = cr.metadata.annotations.as_ref()?.get(REQUEST_ID)?.clone();
            held.then_some(id)
        },
    )
    .await
}

/// Releases a held request in the simulator.
async fn release(sim: &Sim, id: &str) -> Result<()> {
    let r = sim
        .admin_post(&format!("/_sim/enrollments/{id}/issue"), None)
        .await?;
    ensure!(r.status == 200, "releasing {id}: {} {}", r.status, r.text());
    Ok(())
}

/// The request-id annotation write of a held request fails: rejected twice for `h-reject`,
/// applied with the answer dropped for `h-drop`. Both end held with their id, are enrolled once,
/// and are issued once released.
async fn request_id_write_fails(
    client: &Client,
    sim: &Sim,
    proxy: &WriteFaultProxy,
    ns: &str,
) -> Result<Figures> {
    let cases = [
        ("h-reject", WriteFailure::Reject, 2),
        ("h-drop", WriteFailure::ApplyThenDrop, 1),
    ];
    let mut rules = Vec::new();
    for (name, failure, k) in cases {
        let m = WriteMatch::new("PATCH")
            .path(&format!("/namespaces/{ns}/certificaterequests/{name}"))
            .body(REQUEST_ID);
        rules.push(proxy.fail_next(m, failure, k));
    }
    let t0 = Instant::now();
    let mut reqs = Vec::new();
    for (name, _, _) in cases {
        let (pem, der) = make_csr(&format!("{name}.{ns}.exactly-once.test"), &[])?;
        create_certificate_request(
            client,
            ns,
            name,
            &pem,
            "Issuer",
            "sim",
            &[(TEMPLATE, HELD_TEMPLATE)],
        )
        .await?;
        approve(client, ns, name).await?;
        reqs.push((name, der));
    }
    let mut ids = Vec::new();
    for ((name, der), ((_, failure, k), rule)) in reqs.iter().zip(cases.iter().zip(&rules)) {
        let id = wait_held(client, ns, name).await?;
        let counts = proxy.counts(*rule);
        ensure!(
            counts.failed == *k,
            "{ns}/{name}: {counts:?}, expected {k} failed request-id writes ({failure:?})"
        );
        ensure!(
            sim.enrollments_of(der).await?.len() == 1,
            "{ns}/{name}: enrolled again while held"
        );
        ids.push(id);
    }
    for id in &ids {
        release(sim, id).await?;
    }
    for (name, der) in &reqs {
        wait_cr_reason(client, ns, name, "Issued", Duration::from_secs(30)).await?;
        let records = sim.enrollments_of(der).await?;
        ensure!(
            records.len() == 1,
            "{ns}/{name}: {} enrollments",
            records.len()
        );
        let recorded = leaf_der(records[0]["certificate"].as_str().context("certificate")?)?;
        ensure!(
            issued_leaf(client, ns, name).await? == recorded,
            "{ns}/{name}: wrong certificate"
        );
    }
    Ok(Figures {
        name: ns.to_string(),
        n: reqs.len(),
        secs: t0.elapsed().as_secs_f64(),
        fired: rules.iter().map(|r| proxy.counts(*r).failed).sum(),
        enrollments: reqs.len(),
        notes: format!("held as {ids:?}, issued after release"),
    })
}

/// `h` is held by Command (request id X, key K1). `unapproved` (same CSR, so it would adopt X's
/// certificate) and `denied` carry X while not approved; `other-key` (key K2) carries X approved.
/// Once X is released: `h` is Issued, `other-key` Failed without a certificate, `denied` Denied,
/// `unapproved` untouched for several poll intervals — until it is approved.
async fn request_id_gates(client: &Client, sim: &Sim, ns: &str) -> Result<Figures> {
    let t0 = Instant::now();
    let (pem1, der1) = make_csr(&format!("h.{ns}.exactly-once.test"), &[])?;
    create_certificate_request(
        client,
        ns,
        "h",
        &pem1,
        "Issuer",
        "sim",
        &[(TEMPLATE, HELD_TEMPLATE)],
    )
    .await?;
    approve(client, ns, "h").await?;
    let id = wait_held(client, ns, "h").await?;
    let carry = [(REQUEST_ID, id.as_str())];
    create_certificate_request(client, ns, "unapproved", &pem1, "Issuer", "sim", &carry).await?;
    create_certificate_request(client, ns, "denied", &pem1, "Issuer", "sim", &carry).await?;
    deny(client, ns, "denied").await?;
    let (pem2, der2) = make_csr(&format!("other-key.{ns}.exactly-once.test"), &[])?;
    create_certificate_request(client, ns, "other-key", &pem2, "Issuer", "sim", &carry).await?;
    approve(client, ns, "other-key").await?;
    wait_cr_reason(client, ns, "denied", "Denied", Duration::from_secs(30)).await?;
    release(sim, &id).await?;
    wait_cr_reason(client, ns, "h", "Issued", Duration::from_secs(30)).await?;
    let failed = wait_cr_reason(client, ns, "other-key", "Failed", Duration::from_secs(30)).await?;
    ensure!(failed.message.contains(OTHER_KEY), "other-key: {failed:?}");
    let other = get_certificate_request(client, ns, "other-key").await?;
    ensure!(
        status_certificate(&other)?.is_none(),
        "other-key got a certificate"
    );
    let denied = get_certificate_request(client, ns, "denied").await?;
    ensure!(
        status_certificate(&denied)?.is_none(),
        "denied got a certificate"
    );
    // Several poll intervals (--pending-poll-interval=1s) after X's certificate exists: the
    // unapproved request is still untouched.
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(6) {
        let cr = get_certificate_request(client, ns, "unapproved").await?;
        ensure!(
            condition(&cr, "Ready").is_none() && status_certificate(&cr)?.is_none(),
            "unapproved request acted on: {:?}",
            condition(&cr, "Ready")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Approved, it is followed up (its key is the certificate's): the wait above was not idle
    // for lack of a controller.
    approve(client, ns, "unapproved").await?;
    wait_cr_reason(client, ns, "unapproved", "Issued", Duration::from_secs(30)).await?;
    ensure!(
        issued_leaf(client, ns, "unapproved").await? == issued_leaf(client, ns, "h").await?,
        "unapproved, once approved, holds another certificate than X's"
    );
    let (k1, k2) = (
        sim.enrollments_of(&der1).await?.len(),
        sim.enrollments_of(&der2).await?.len(),
    );
    ensure!(
        (k1, k2) == (1, 0),
        "enrollments: key 1 {k1} (want 1), key 2 {k2} (want 0)"
    );
    Ok(Figures {
        name: ns.to_string(),
        n: 4,
        secs: t0.elapsed().as_secs_f64(),
        fired: 0,
        enrollments: k1 + k2,
        notes: format!(
            "request id {id}: unapproved untouched 6 s, denied Denied, other key Failed"
        ),
    })
}

/// A custom metadata annotation naming `Controller-Reconcile-Id` is a permanent error: Pending
/// with the message, then Failed after --max-retry-duration (10 s); never enrolled.
async fn custom_metadata_refused(client: &Client, sim: &Sim, ns: &str) -> Result<Figures> {
    let t0 = Instant::now();
    let (pem, der) = make_csr(&format!("custom.{ns}.exactly-once.test"), &[])?;
    create_certificate_request(
        client,
        ns,
        "custom",
        &pem,
        "Issuer",
        "sim",
        &[(CUSTOM_METADATA, "mine")],
    )
    .await?;
    approve(client, ns, "custom").await?;
    let message = custom_metadata_message();
    let pending = wait_cr_reason(client, ns, "custom", "Pending", Duration::from_secs(30)).await?;
    ensure!(
        !pending.is_true() && pending.message == message,
        "custom: {pending:?}"
    );
    let failed = wait_cr_reason(client, ns, "custom", "Failed", Duration::from_secs(60)).await?;
    ensure!(failed.message.starts_with(&message), "custom: {failed:?}");
    let cr = get_certificate_request(client, ns, "custom").await?;
    let intent = cr.metadata.annotations.as_ref().and_then(|a| a.get(INTENT));
    ensure!(
        intent.is_none(),
        "custom: an enrollment was prepared ({intent:?})"
    );
    ensure!(
        sim.enrollments_of(&der).await?.is_empty(),
        "custom: enrolled"
    );
    Ok(Figures {
        name: ns.to_string(),
        n: 1,
        secs: t0.elapsed().as_secs_f64(),
        fired: 0,
        enrollments: 0,
        notes: "Pending with the message, then Failed".into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_writes_and_request_gates() -> Result<()> {
    let t0 = Instant::now();
    let cp = ControlPlane::start_with_crds(&[repo_file("crds").as_path()]).await?;
    let client = cp.client();
    let mut config = Sim::default_config_json()?;
    Sim::remove_controller_metadata_fields(&mut config)?;
    Sim::add_held_template(&mut config, HELD_TEMPLATE)?;
    let sim = Sim::start_with_config_json(&config).await?;
    let proxy = WriteFaultProxy::start(cp.admin_kubeconfig()).await?;
    let kubeconfig = proxy.kubeconfig_via(
        cp.admin_kubeconfig(),
        &cp.dir().join("write-faults.kubeconfig"),
    )?;
    let namespaces = ["ws-reject", "ws-drop", "held-id", "gates", "custom-meta"];
    for ns in namespaces {
        basic_issuer_in(&client, &sim, &sim.host_port(), ns, "sim").await?;
    }
    let timeout = format!("--command-timeout={}s", COMMAND_TIMEOUT.as_secs());
    let ctl = Controller::start(
        &kubeconfig,
        &[
            &timeout,
            "--pending-poll-interval=1s",
            "--max-retry-duration=10s",
        ],
    )?;
    for ns in namespaces {
        let long = Duration::from_secs(60);
        wait_issuer_ready(&client, "Issuer", Some(ns), "sim", "True", long).await?;
        wait_issuer_condition(
            &client,
            "Issuer",
            Some(ns),
            "sim",
            "SupportsMetadata",
            "False",
            long,
        )
        .await?;
    }
    let (reject, drop, held, gates, custom) = tokio::join!(
        status_write_fails(&client, &sim, &proxy, "ws-reject", WriteFailure::Reject),
        status_write_fails(
            &client,
            &sim,
            &proxy,
            "ws-drop",
            WriteFailure::ApplyThenDrop
        ),
        request_id_write_fails(&client, &sim, &proxy, "held-id"),
        request_id_gates(&client, &sim, "gates"),
        custom_metadata_refused(&client, &sim, "custom-meta"),
    );
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for (name, r) in namespaces.iter().zip([reject, drop, held, gates, custom]) {
        match r {
            Ok(f) => rows.push(f),
            Err(e) => errors.push(format!("{name}: {e:#}")),
        }
    }
    report(&rows);
    println!(
        "test ran {:.1?}; proxy: {} connections, {} requests",
        t0.elapsed(),
        proxy.connections(),
        proxy.requests()
    );
    no_panics("command-sim", &sim.logs())?;
    if let Err(e) = no_panics("command-issuer", &ctl.logs()) {
        errors.push(e.to_string());
    }
    ensure!(
        errors.is_empty(),
        "scenarios failed:\n{}",
        errors.join("\n")
    );
    Ok(())
}
