//! The `command-issuer` controller binary as a child process with a log file.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Result;

use crate::paths::bin_path;
use crate::process::{ManagedProcess, STOP_GRACE};
use crate::wait::{log, try_wait_for};

/// `--cluster-resource-namespace` used when the caller's args do not set one.
pub const DEFAULT_CLUSTER_RESOURCE_NAMESPACE: &str = "command-issuer-system";

static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// A running controller; SIGKILLed on drop, log tail printed if the test panicked.
#[derive(Debug)]
pub struct Controller {
    process: ManagedProcess,
    args: Vec<String>,
}

impl Controller {
    /// Starts `command-issuer --kubeconfig K --cluster-resource-namespace NS --log-format json
    /// --metrics-bind-address 0 --health-probe-bind-address 127.0.0.1:0 ARGS...`, logging to a
    /// file next to the kubeconfig, so each test runs the real binary under a chosen identity.
    /// `ARGS` may override `--cluster-resource-namespace` (default
    /// [`DEFAULT_CLUSTER_RESOURCE_NAMESPACE`]).
    pub fn start(kubeconfig: &Path, args: &[&str]) -> Result<Self> {
        let log_dir = kubeconfig
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let log_path = log_dir.join(format!("command-issuer-{}-{id}.log", std::process::id()));
        let mut full: Vec<String> = vec![
            "--kubeconfig".into(),
            kubeconfig.to_string_lossy().into_owned(),
        ];
        let sets_namespace = args
            .iter()
            .any(|a| a.starts_with("--cluster-resource-namespace"));
        if !sets_namespace {
            full.push(format!(
                "--cluster-resource-namespace={DEFAULT_CLUSTER_RESOURCE_NAMESPACE}"
            ));
        }
        full.extend(
            [
                "--log-format=json",
                "--metrics-bind-address=0",
                "--health-probe-bind-address=127.0.0.1:0",
            ]
            .map(String::from),
        );
        full.extend(args.iter().map(|a| (*a).to_string()));
        let mut cmd = Command::new(bin_path("command-issuer")?);
        cmd.args(&full);
        let process = ManagedProcess::spawn("command-issuer", cmd, &log_path)?;
        log(format!(
            "command-issuer started (pid {:?}, log {})",
            process.pid(),
            log_path.display()
        ));
        Ok(Self {
            process,
            args: full,
        })
    }

    /// The full argument list it was started with, for messages.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Its combined stdout+stderr so far (JSON lines).
    pub fn logs(&self) -> String {
        self.process.logs()
    }

    /// Path of its log file.
    pub fn log_path(&self) -> PathBuf {
        self.process.log_path().to_path_buf()
    }

    /// Its log parsed as JSON lines (non-JSON lines skipped), for structured assertions.
    pub fn log_records(&self) -> Vec<serde_json::Value> {
        self.logs()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (bounded) until a log line contains `needle`; fails early if the process exits.
    pub async fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let what = format!("command-issuer log line containing {needle:?}");
        let process = &mut self.process;
        try_wait_for(timeout, &what, || {
            let found = process
                .logs()
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_string);
            let ok = if found.is_some() {
                Ok(())
            } else {
                process.ensure_running()
            };
            async move {
                ok?;
                Ok(found)
            }
        })
        .await
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Exit status once it has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.process.exit_status()
    }

    /// SIGKILL and reap, to simulate a crash.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        self.process.kill()
    }

    /// SIGTERM and wait (up to 10 s, then SIGKILL), to test graceful shutdown.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.process.stop(STOP_GRACE)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.process.kill();
        if std::thread::panicking() {
            eprintln!(
                "[e2e] command-issuer log {} (last lines):\n{}",
                self.process.log_path().display(),
                self.process.log_tail(40)
            );
        }
    }
}
