//! Child processes with a log file, graceful stop and a bounded wait, shared by every component.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How long a process gets after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// A spawned process whose stdout+stderr go to a log file; killed (and reaped) on drop.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl ManagedProcess {
    /// Spawns `cmd` with stdout and stderr appended to `log`, so restarts keep earlier output.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        // SAFETY: prctl is async-signal-safe; the closure touches nothing else. It makes the
        // kernel kill the child if the spawning thread dies (e.g. the test binary is killed),
        // so no etcd/apiserver is left behind on loopback.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {name} ({:?})", cmd.get_program()))?;
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
            status: None,
        })
    }

    /// Name used in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// OS process id while running, for messages and signals.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Path of the log file, to show where output went.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Whole log so far (lossy UTF-8), for assertions on what a component printed.
    pub fn logs(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Last `n` lines of the log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        log_tail(&self.log, n)
    }

    /// True while the process has not exited (reaps it if it has), to detect early crashes.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(status))) => {
                self.status = Some(status);
                self.child = None;
                false
            }
            Some(Err(_)) | None => false,
        }
    }

    /// Exit status once the process has exited, for crash diagnostics.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.is_running();
        self.status
    }

    /// Fails with the log tail if the process has already exited, so waits stop early.
    pub fn ensure_running(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        anyhow::bail!(
            "{} exited early ({}); log {}:\n{}",
            self.name,
            describe(self.status),
            self.log.display(),
            self.log_tail(30)
        )
    }

    /// Sends `signal` to the process (no-op if it has exited).
    pub fn signal(&mut self, signal: i32) {
        if let Some(pid) = self.pid().filter(|_| self.is_running()) {
            // SAFETY: kill(2) on a pid we spawned and have not reaped yet.
            unsafe {
                libc::kill(pid as libc::pid_t, signal);
            }
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; returns the exit status (graceful shutdown).
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while self.is_running() {
            if Instant::now() >= deadline {
                return self.kill();
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        self.status
    }

    /// SIGKILL and reap; returns the exit status (crash simulation and teardown).
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            if let Ok(status) = child.wait() {
                self.status = Some(status);
            }
        }
        self.status
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Human-readable exit status ("exit code 1", "signal 9").
pub fn describe(status: Option<ExitStatus>) -> String {
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(sig)) => format!("signal {sig}"),
            _ => s.to_string(),
        },
        None => "status unknown".into(),
    }
}

/// Last `n` lines of a file, for failure messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    // Only the last 256 KiB matter for a tail.
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(256 * 1024)));
    let lines: Vec<String> = BufReader::new(f)
        .split(b'\n')
        .map_while(|l| l.ok())
        .map(|l| String::from_utf8_lossy(&l).into_owned())
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Picks a free loopback port (bind 127.0.0.1:0, read it back, release it).
pub fn free_port() -> Result<u16> {
    Ok(free_ports(1)?[0])
}

/// Picks `n` distinct free loopback ports, holding all of them until every one is chosen.
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0"))
        .collect::<Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}
