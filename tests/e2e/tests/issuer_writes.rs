//! A failed issuer status write is retried with backoff, not left until the next health check:
//! the first three status patches of an Issuer are refused by a write-fault proxy in front of
//! the apiserver, and the Issuer still shows Ready=True within seconds, although its next
//! regular check is 10 minutes away. Without the retry the condition would stay unwritten for
//! the whole interval and the test would time out.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use command_issuer_e2e::fixtures::{basic_issuer_in, repo_file, wait_issuer_ready};
use command_issuer_e2e::write_faults::{WriteFailure, WriteFaultProxy, WriteMatch};
use command_issuer_e2e::{ControlPlane, Controller, Sim};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_issuer_status_write_is_retried_with_backoff() -> Result<()> {
    let cp = ControlPlane::start_with_crds(&[repo_file("crds").as_path()]).await?;
    let client = cp.client();
    let sim = Sim::start_default().await?;
    let proxy = WriteFaultProxy::start(cp.admin_kubeconfig()).await?;
    let rule = proxy.fail_next(
        WriteMatch::new("PATCH")
            .path("/namespaces/writes/issuers/sim")
            .path("/status"),
        WriteFailure::Reject,
        3,
    );
    let kubeconfig = proxy.kubeconfig_via(
        cp.admin_kubeconfig(),
        &cp.dir().join("write-faults.kubeconfig"),
    )?;
    basic_issuer_in(&client, &sim, &sim.host_port(), "writes", "sim").await?;
    let t0 = Instant::now();
    let ctl = Controller::start(&kubeconfig, &["--default-health-check-interval=10m"])?;
    // Backoff 2 s + 4 s + 8 s after the refused writes: well inside 40 s, far from 10 min.
    wait_issuer_ready(
        &client,
        "Issuer",
        Some("writes"),
        "sim",
        "True",
        Duration::from_secs(40),
    )
    .await?;
    let counts = proxy.counts(rule);
    println!(
        "Issuer Ready=True written after {:.1?} ({counts:?})",
        t0.elapsed()
    );
    ensure!(
        counts.failed == 3,
        "expected 3 refused status writes: {counts:?}"
    );
    let logs = ctl.logs();
    ensure!(
        logs.matches("issuer status write failed; retrying with backoff")
            .count()
            >= 3,
        "each refused write is logged"
    );
    ensure!(!logs.contains("panicked"), "no panic");
    Ok(())
}
