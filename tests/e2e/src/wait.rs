//! Bounded polling: every wait in the suite is a condition with a deadline, never a fixed sleep.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// Interval between polls of [`wait_for`].
pub const POLL_INTERVAL: Duration = Duration::from_millis(150);

/// Polls `check` every [`POLL_INTERVAL`] until it yields `Some`, failing after `timeout` with an
/// error naming `what`, so a hung test says what it was waiting for.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    let deadline = start + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        let now = Instant::now();
        if now >= deadline {
            bail!("timed out after {:.1?} waiting for {what}", now - start);
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }
}

/// Like [`wait_for`] but the check may fail hard (`Err` stops the wait at once), so a crashed
/// process or a permanent error does not burn the whole timeout.
pub async fn try_wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    let deadline = start + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        let now = Instant::now();
        if now >= deadline {
            bail!("timed out after {:.1?} waiting for {what}", now - start);
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }
}

/// Prints a harness log line (stderr, captured by the test runner unless `--nocapture`).
pub fn log(msg: impl std::fmt::Display) {
    let now = jiff::Timestamp::now().strftime("%H:%M:%S%.3f");
    eprintln!("[e2e {now}] {msg}");
    tracing::info!(target: "e2e", "{msg}");
}
