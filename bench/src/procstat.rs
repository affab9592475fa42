//! Process and machine counters from /proc: CPU seconds, peak RSS, whole-machine busy time.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context, Result};

fn clk_tck() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Fields of /proc/<pid>/stat after the `(comm)` field: index 0 is field 3 (state).
fn stat_fields(pid: u32) -> Result<(String, Vec<String>)> {
    let raw = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let open = raw.find('(').ok_or_else(|| anyhow!("bad stat"))?;
    let close = raw.rfind(')').ok_or_else(|| anyhow!("bad stat"))?;
    let comm = raw[open + 1..close].to_string();
    let rest = raw[close + 1..]
        .split_whitespace()
        .map(str::to_string)
        .collect();
    Ok((comm, rest))
}

/// utime + stime of a process (all its threads), in seconds: the CPU it has used so far.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let (_, f) = stat_fields(pid)?;
    let ticks = |i: usize| -> Result<f64> {
        Ok(f.get(i)
            .ok_or_else(|| anyhow!("short stat"))?
            .parse::<f64>()?)
    };
    // utime is field 14, stime field 15 (1-based); f[0] is field 3.
    Ok((ticks(11)? + ticks(12)?) / clk_tck())
}

fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid).ok()?.1.get(1)?.parse().ok()
}

/// A `Vm*:` line of /proc/<pid>/status in KiB (VmHWM = peak RSS, VmRSS = current).
pub fn status_kib(pid: u32, key: &str) -> Result<u64> {
    let raw = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    raw.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow!("{key} not in /proc/{pid}/status"))
}

/// Seconds the whole machine spent busy (all CPUs, everything but idle and iowait).
pub fn machine_busy_seconds() -> Result<f64> {
    let raw = std::fs::read_to_string("/proc/stat")?;
    let line = raw
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| anyhow!("no cpu line in /proc/stat"))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is already in user).
    let busy: f64 =
        v.iter().take(8).sum::<f64>() - v.get(3).unwrap_or(&0.0) - v.get(4).unwrap_or(&0.0);
    Ok(busy / clk_tck())
}

/// CPU seconds of `root` and every live descendant, by command name, so the machine's busy
/// time can be split into "this benchmark" and "everything else on the machine".
pub fn tree_cpu_by_comm(root: u32) -> BTreeMap<String, f64> {
    let mut parents = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                if let Some(pp) = parent_of(pid) {
                    parents.insert(pid, pp);
                }
            }
        }
    }
    let in_tree = |mut pid: u32| {
        for _ in 0..64 {
            if pid == root {
                return true;
            }
            match parents.get(&pid) {
                Some(&p) if p != 0 => pid = p,
                _ => return false,
            }
        }
        false
    };
    let mut out = BTreeMap::new();
    for &pid in parents.keys() {
        if in_tree(pid) {
            if let (Ok((comm, _)), Ok(cpu)) = (stat_fields(pid), cpu_seconds(pid)) {
                *out.entry(comm).or_insert(0.0) += cpu;
            }
        }
    }
    out
}

/// One reading of every counter a run needs, taken at a point in time.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Controller CPU seconds (0 when there is no controller).
    pub controller_cpu: f64,
    /// Machine busy seconds.
    pub machine_busy: f64,
    /// This benchmark's process tree, CPU seconds by command name.
    pub tree: BTreeMap<String, f64>,
}

impl Snapshot {
    /// Reads the counters now.
    pub fn take(controller: Option<u32>) -> Self {
        Self {
            controller_cpu: controller.and_then(|p| cpu_seconds(p).ok()).unwrap_or(0.0),
            machine_busy: machine_busy_seconds().unwrap_or(0.0),
            tree: tree_cpu_by_comm(std::process::id()),
        }
    }

    /// CPU seconds used between `self` and `later`: (controller, by command name, foreign =
    /// machine busy time not spent by this benchmark's processes).
    pub fn delta(&self, later: &Snapshot) -> (f64, BTreeMap<String, f64>, f64) {
        let mut by = BTreeMap::new();
        for (k, v) in &later.tree {
            let d = v - self.tree.get(k).unwrap_or(&0.0);
            if d > 0.0 {
                by.insert(k.clone(), d);
            }
        }
        let ours: f64 = by.values().sum();
        let foreign = (later.machine_busy - self.machine_busy - ours).max(0.0);
        (later.controller_cpu - self.controller_cpu, by, foreign)
    }
}
