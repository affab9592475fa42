//! The real cert-manager controller (v1.11.5) run out of cluster against a [`ControlPlane`], so
//! Certificates really turn into approved CertificateRequests and Secrets.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::control_plane::ControlPlane;
use crate::http::HttpClient;
use crate::paths::tool_path;
use crate::process::{free_port, ManagedProcess};
use crate::wait::{log, try_wait_for};

/// Bound on cert-manager's metrics listener coming up after spawn.
pub const CERT_MANAGER_START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `cert-manager-controller` (all default controllers, its approver included).
#[derive(Debug)]
pub struct CertManager {
    process: ManagedProcess,
    metrics_addr: String,
    started_in: Duration,
}

impl CertManager {
    /// Starts cert-manager with the admin kubeconfig, leader election off, its ClusterIssuer
    /// resource namespace set, metrics on a free loopback port; returns once metrics serve.
    pub async fn start(cp: &ControlPlane, cluster_resource_namespace: &str) -> Result<Self> {
        Self::start_with_args(cp, cluster_resource_namespace, &[]).await
    }

    /// Like [`CertManager::start`] with extra flags (e.g. `--controllers=...`, `--v=4`).
    pub async fn start_with_args(
        cp: &ControlPlane,
        cluster_resource_namespace: &str,
        extra: &[&str],
    ) -> Result<Self> {
        let t = Instant::now();
        cp.create_namespace(cluster_resource_namespace).await?;
        let metrics_addr = format!("127.0.0.1:{}", free_port()?);
        let mut cmd = Command::new(tool_path("cert-manager-controller")?);
        cmd.arg("--kubeconfig")
            .arg(cp.admin_kubeconfig())
            .arg("--leader-elect=false")
            .arg(format!(
                "--cluster-resource-namespace={cluster_resource_namespace}"
            ))
            .arg(format!("--metrics-listen-address={metrics_addr}"))
            .args(extra);
        let mut process =
            ManagedProcess::spawn("cert-manager", cmd, &cp.dir().join("cert-manager.log"))?;
        let http = HttpClient::plain(&metrics_addr);
        try_wait_for(
            CERT_MANAGER_START_TIMEOUT,
            "cert-manager metrics listener",
            || {
                let ok = process.ensure_running();
                let http = http.clone();
                async move {
                    ok?;
                    Ok(http
                        .get("/metrics")
                        .await
                        .ok()
                        .filter(|r| r.status == 200)
                        .map(|_| ()))
                }
            },
        )
        .await?;
        let started_in = t.elapsed();
        log(format!(
            "cert-manager {} serving metrics on {metrics_addr} after {started_in:.2?} (log {})",
            crate::CERT_MANAGER_VERSION,
            process.log_path().display()
        ));
        Ok(Self {
            process,
            metrics_addr,
            started_in,
        })
    }

    /// `127.0.0.1:PORT` of its metrics listener.
    pub fn metrics_addr(&self) -> &str {
        &self.metrics_addr
    }

    /// Spawn → metrics serving, for timing reports.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// Its log so far, for assertions and failure messages.
    pub fn logs(&self) -> String {
        self.process.logs()
    }

    /// Path of its log file.
    pub fn log_path(&self) -> PathBuf {
        self.process.log_path().to_path_buf()
    }

    /// True while it runs (fails loudly in tests when it crashed).
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }
}

impl Drop for CertManager {
    fn drop(&mut self) {
        self.process.kill();
        if std::thread::panicking() {
            eprintln!(
                "[e2e] cert-manager log {} (last lines):\n{}",
                self.process.log_path().display(),
                self.process.log_tail(25)
            );
        }
    }
}
