//! The workload: a fresh control plane (plus simulator and controller when needed), N
//! CertificateRequests created, then approved at once, and a client-side watch that stamps the
//! moment each one is seen Ready=True.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use command_issuer::api::CertificateRequest;
use command_issuer_e2e::fixtures::{install_example_issuer, issuer_api, wait_issuer_ready};
use command_issuer_e2e::process::ManagedProcess;
use command_issuer_e2e::{
    approve, bin_path, create_certificate_request, make_csr, ControlPlane, Sim,
    DEFAULT_CLUSTER_RESOURCE_NAMESPACE,
};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::oneshot;

/// Namespace of the requests: the docs/examples Issuer lives there.
pub const NAMESPACE: &str = "default";
/// The docs/examples Issuer every request names.
pub const ISSUER: &str = "issuer-sample";

/// A fresh cluster for one measurement, so no run sees the objects of another.
pub struct Env {
    /// Control plane; dropped last.
    pub cp: ControlPlane,
    /// Simulator, when a controller runs.
    pub sim: Option<Sim>,
    /// Controller process, when one runs.
    pub controller: Option<ManagedProcess>,
    /// Admin client of the benchmark driver.
    pub client: Client,
}

impl Env {
    /// Control plane with our CRDs; with `controller_concurrency` also the simulator, the
    /// example Issuer pointed at it (health check every hour, so none lands in the run) and the
    /// release controller, waited on until the Issuer is Ready.
    pub async fn start(controller_concurrency: Option<usize>) -> Result<Self> {
        let crds = command_issuer_e2e::fixtures::repo_file("crds");
        let cp = ControlPlane::start_with_crds(&[crds.as_path()]).await?;
        let client = cp.client();
        let Some(concurrency) = controller_concurrency else {
            return Ok(Self {
                cp,
                sim: None,
                controller: None,
                client,
            });
        };
        let sim = Sim::start_default().await?;
        install_example_issuer(&cp, &sim).await?;
        let patch =
            Patch::Merge(json!({"spec": {"healthcheck": {"enabled": true, "interval": "1h"}}}));
        issuer_api(&client, "Issuer", Some(NAMESPACE))
            .patch(ISSUER, &PatchParams::default(), &patch)
            .await?;
        let mut cmd = Command::new(bin_path("command-issuer")?);
        cmd.arg("--kubeconfig")
            .arg(cp.admin_kubeconfig())
            .arg(format!(
                "--cluster-resource-namespace={DEFAULT_CLUSTER_RESOURCE_NAMESPACE}"
            ))
            .args([
                "--log-format=json",
                "--metrics-bind-address=0",
                "--health-probe-bind-address=127.0.0.1:0",
            ])
            .arg(format!("--concurrency={concurrency}"))
            // The matrix has one issuer: C in flight means C for it, as before the per-issuer
            // limit existed.
            .arg(format!("--per-issuer-concurrency={concurrency}"));
        let log = cp.dir().join("command-issuer.log");
        let controller = ManagedProcess::spawn("command-issuer", cmd, &log)?;
        let env = Self {
            cp,
            sim: Some(sim),
            controller: Some(controller),
            client,
        };
        wait_issuer_ready(
            &env.client,
            "Issuer",
            Some(NAMESPACE),
            ISSUER,
            "True",
            Duration::from_secs(60),
        )
        .await
        .context("example Issuer never became Ready")?;
        Ok(env)
    }

    /// Controller pid, for /proc counters.
    pub fn controller_pid(&self) -> Option<u32> {
        self.controller.as_ref().and_then(ManagedProcess::pid)
    }

    /// Makes every Command API call of the simulator answer `latency_ms` late (none for 0).
    pub async fn set_command_latency(&self, latency_ms: u64) -> Result<()> {
        let Some(sim) = &self.sim else { return Ok(()) };
        if latency_ms == 0 {
            return Ok(());
        }
        let body = json!([{"target": "api", "kind": "latency", "latency_ms": latency_ms}]);
        let r = sim.admin_post("/_sim/faults", Some(&body)).await?;
        anyhow::ensure!(r.status == 200, "setting latency: {}", r.text());
        Ok(())
    }

    /// Number of Command API calls the simulator has recorded since the last reset.
    pub async fn command_calls(&self) -> Result<u64> {
        match &self.sim {
            Some(sim) => Ok(sim.requests().await?.len() as u64),
            None => Ok(0),
        }
    }

    /// Clears the simulator's request log, so calls are counted from here.
    pub async fn reset_command_calls(&self) -> Result<()> {
        match &self.sim {
            Some(sim) => sim.reset().await,
            None => Ok(()),
        }
    }

    /// Where the control plane keeps its logs (controller log included).
    pub fn dir(&self) -> PathBuf {
        self.cp.dir().to_path_buf()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Controller first, so it does not log a storm of apiserver errors on the way out.
        if let Some(mut c) = self.controller.take() {
            c.stop(Duration::from_secs(5));
        }
    }
}

/// Name of request `i`.
pub fn request_name(i: usize) -> String {
    format!("bench-{i:05}")
}

/// Creates N requests for the example Issuer (distinct CSRs), `parallel` at a time.
pub async fn create_requests(client: &Client, n: usize, parallel: usize) -> Result<()> {
    let csrs: Vec<String> = (0..n)
        .map(|i| {
            let cn = format!("{}.bench.example.com", request_name(i));
            make_csr(&cn, &[cn.as_str()]).map(|(pem, _)| pem)
        })
        .collect::<Result<_>>()?;
    futures::stream::iter(csrs.into_iter().enumerate())
        .map(|(i, pem)| async move {
            create_certificate_request(
                client,
                NAMESPACE,
                &request_name(i),
                &pem,
                "Issuer",
                ISSUER,
                &[],
            )
            .await
            .map(|_| ())
        })
        .buffer_unordered(parallel)
        .try_collect::<()>()
        .await
}

/// Approves requests 0..n, `parallel` at a time, as cert-manager's approver would; returns
/// the instant each approval patch was sent.
pub async fn approve_all(
    client: &Client,
    n: usize,
    parallel: usize,
) -> Result<HashMap<String, Instant>> {
    futures::stream::iter(0..n)
        .map(|i| async move {
            let name = request_name(i);
            let sent = Instant::now();
            approve(client, NAMESPACE, &name).await?;
            Ok::<_, anyhow::Error>((name, sent))
        })
        .buffer_unordered(parallel)
        .try_collect()
        .await
}

/// Client-side stamps of Ready=True, from a watch of the namespace.
#[derive(Clone, Default)]
pub struct ReadyTracker {
    seen: Arc<Mutex<HashMap<String, Instant>>>,
}

impl ReadyTracker {
    /// Starts the watch on its own client and returns once its initial list is done.
    pub async fn start(client: Client) -> Result<(Self, tokio::task::JoinHandle<()>)> {
        let tracker = Self::default();
        let seen = tracker.seen.clone();
        let (tx, rx) = oneshot::channel();
        let api: Api<CertificateRequest> = Api::namespaced(client, NAMESPACE);
        let task = tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(ev) = stream.next().await {
                let now = Instant::now();
                match ev {
                    Ok(Event::Apply(cr)) | Ok(Event::InitApply(cr)) if is_ready(&cr) => {
                        if let Ok(mut seen) = seen.lock() {
                            seen.entry(cr.name_any()).or_insert(now);
                        }
                    }
                    Ok(Event::InitDone) => {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Err(e) => eprintln!("[bench] watch error: {e}"),
                    _ => {}
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .context("watch initial list took over 60 s")?
            .context("watch task ended")?;
        Ok((tracker, task))
    }

    /// How many requests have been seen Ready so far.
    pub fn count(&self) -> usize {
        self.seen.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Every stamp so far.
    pub fn stamps(&self) -> HashMap<String, Instant> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until `n` are Ready, `deadline` passes or nothing became Ready for `stall`;
    /// returns the count then.
    pub async fn wait(&self, n: usize, deadline: Instant, stall: Duration) -> usize {
        let (mut last, mut since) = (self.count(), Instant::now());
        loop {
            let c = self.count();
            let now = Instant::now();
            if c != last {
                (last, since) = (c, now);
            }
            if c >= n || now >= deadline || now.duration_since(since) >= stall {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn watcher(
    api: Api<CertificateRequest>,
    cfg: watcher::Config,
) -> impl futures::Stream<Item = Result<Event<CertificateRequest>, watcher::Error>> {
    kube::runtime::watcher(api, cfg)
}

fn is_ready(cr: &CertificateRequest) -> bool {
    cr.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}
