//! Load benchmark of command-issuer (issue #6 item 1) on the real local control plane with the
//! Command simulator: N CertificateRequests created, then approved at once, with Command
//! latency L; our controller against two references, (a) the same controller at
//! `--concurrency 1` (the Go issuer's one-reconcile-at-a-time model) and (b) a plain kube client
//! making only the status writes (the apiserver ceiling). Run it with `bash bench/run.sh`.
//! `--issuers` runs the many-issuers scenario instead (issuers.rs).

mod issuers;
mod plain;
mod procstat;
mod report;
mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use serde::Serialize;

use crate::plain::Writes;
use crate::procstat::{status_kib, Snapshot};
use crate::workload::{approve_all, create_requests, Env, ReadyTracker};

/// Command line of the benchmark.
#[derive(Parser, Debug, Clone)]
#[command(name = "command-issuer-bench")]
pub struct Args {
    /// Small matrix for a shared machine: N=100, L=0,500, short reference window.
    #[arg(long)]
    pub quick: bool,
    /// Request counts (default 100,1000,5000; quick: 100).
    #[arg(long, value_delimiter = ',')]
    pub sizes: Option<Vec<usize>>,
    /// Injected Command latencies in ms (default 0,500).
    #[arg(long, value_delimiter = ',')]
    pub latencies: Option<Vec<u64>>,
    /// --concurrency of our controller, and of the plain client of reference (b).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Extra runs of ours at these --concurrency values, at every L > 0 (how far concurrency
    /// alone takes the L=500 ms target); empty to skip.
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    pub also_concurrency: Vec<usize>,
    /// Creations and approvals the driver keeps in flight.
    #[arg(long, default_value_t = 32)]
    pub client_parallelism: usize,
    /// Time window (s) of reference (a) at --concurrency 1 (default 20; quick: 10).
    #[arg(long)]
    pub window_secs: Option<u64>,
    /// Idle period (s) over which the controller's CPU is measured after a run.
    #[arg(long, default_value_t = 10)]
    pub idle_secs: u64,
    /// Which runs: any of ours, a, b, b2 (b2 = (b')).
    #[arg(long, value_delimiter = ',', default_value = "ours,a,b,b2")]
    pub runs: Vec<String>,
    /// Markdown report (default docs/benchmarks.md; quick: target/bench/benchmarks-quick.md).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the plan and its estimated duration, run nothing.
    #[arg(long)]
    pub plan: bool,
    /// Run only the many-issuers scenario (one Issuer per namespace, 30 s health checks) and
    /// replace its section of the report (default docs/benchmarks.md; other sections kept).
    #[arg(long)]
    pub issuers: bool,
    /// Issuers (and namespaces) of --issuers.
    #[arg(long, default_value_t = 1000)]
    pub issuer_count: usize,
    /// Steady-state window of --issuers (s): at least two 30 s health intervals.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u64).range(60..))]
    pub issuers_window_secs: u64,
}

/// What is measured in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Kind {
    /// Our controller at --concurrency C.
    Ours,
    /// Reference (a): our controller at --concurrency 1, time-window bounded.
    OneAtATime,
    /// Reference (b): plain client, status writes only.
    PlainStatus,
    /// Reference (b'): plain client, every apiserver write our controller makes.
    PlainAll,
}

impl Kind {
    /// Label in the report.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::OneAtATime => "(a) --concurrency 1",
            Kind::PlainStatus => "(b) plain client, status only",
            Kind::PlainAll => "(b') plain client, all our writes",
        }
    }
}

/// One planned run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spec {
    /// What runs.
    pub kind: Kind,
    /// Requests.
    pub n: usize,
    /// Injected Command latency (ms); None for the plain client (no Command call).
    pub latency_ms: Option<u64>,
    /// Concurrency of the controller or plain client.
    pub concurrency: usize,
}

/// Everything measured in one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// The plan.
    pub spec: Spec,
    /// Requests seen Ready (within the window, for reference (a)).
    pub completed: usize,
    /// True when a time window, not completion, ended the run.
    pub window_bounded: bool,
    /// Creating the N requests (s).
    pub create_s: f64,
    /// Sending all approvals (s).
    pub approve_s: f64,
    /// First approval sent → last request seen Ready, or the window (s).
    pub wall_s: f64,
    /// completed / wall_s.
    pub throughput: f64,
    /// Approval sent → Ready seen by a watch, percentiles (ms).
    pub p50_ms: Option<f64>,
    /// 95th percentile (ms).
    pub p95_ms: Option<f64>,
    /// 99th percentile (ms).
    pub p99_ms: Option<f64>,
    /// Controller VmHWM at the end (MiB).
    pub controller_peak_rss_mib: Option<f64>,
    /// Controller utime+stime over the run (s).
    pub controller_cpu_s: Option<f64>,
    /// Command API calls per completed request.
    pub command_calls_per_request: Option<f64>,
    /// Controller CPU over the idle period after the run (s).
    pub idle_cpu_s: Option<f64>,
    /// Machine busy time not spent by this benchmark's processes, per second of the run
    /// (cores): other work on the machine, i.e. noise.
    pub foreign_cores: f64,
    /// CPU seconds over the run by process name (this benchmark's process tree).
    pub cpu_by_process: BTreeMap<String, f64>,
    /// Why the run failed or is incomplete.
    pub error: Option<String>,
}

/// The matrix and settings of one invocation.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Runs in order.
    pub specs: Vec<Spec>,
    /// Reference (a) window.
    pub window: Duration,
    /// Idle period.
    pub idle: Duration,
    /// Driver parallelism.
    pub parallel: usize,
    /// Quick matrix.
    pub quick: bool,
}

fn plan(args: &Args) -> Plan {
    let sizes = args.sizes.clone().unwrap_or_else(|| {
        if args.quick {
            vec![100]
        } else {
            vec![100, 1000, 5000]
        }
    });
    let latencies = args.latencies.clone().unwrap_or_else(|| vec![0, 500]);
    let c = args.concurrency;
    let wanted = |r: &str| args.runs.iter().any(|x| x == r);
    let mut specs = Vec::new();
    for &n in &sizes {
        for &l in &latencies {
            if wanted("ours") {
                specs.push(Spec {
                    kind: Kind::Ours,
                    n,
                    latency_ms: Some(l),
                    concurrency: c,
                });
                for &extra in args.also_concurrency.iter().filter(|&&x| x != c && l > 0) {
                    specs.push(Spec {
                        kind: Kind::Ours,
                        n,
                        latency_ms: Some(l),
                        concurrency: extra,
                    });
                }
            }
            if wanted("a") {
                specs.push(Spec {
                    kind: Kind::OneAtATime,
                    n,
                    latency_ms: Some(l),
                    concurrency: 1,
                });
            }
        }
        for (kind, name) in [(Kind::PlainStatus, "b"), (Kind::PlainAll, "b2")] {
            if wanted(name) {
                specs.push(Spec {
                    kind,
                    n,
                    latency_ms: None,
                    concurrency: c,
                });
            }
        }
    }
    let window = Duration::from_secs(args.window_secs.unwrap_or(if args.quick { 10 } else { 20 }));
    Plan {
        specs,
        window,
        idle: Duration::from_secs(args.idle_secs),
        parallel: args.client_parallelism,
        quick: args.quick,
    }
}

/// Rough duration of one run (s), from runs on the 2-core machine: set-up (control plane,
/// simulator, controller), creation, the measurement, the idle period and tear-down (the
/// harness dumps every object for the e2e leak sweep).
fn estimate(spec: &Spec, plan: &Plan) -> f64 {
    let n = spec.n as f64;
    let l = spec.latency_ms.unwrap_or(0) as f64 / 1000.0;
    let (setup, measure, idle) = match spec.kind {
        Kind::Ours => (
            7.0,
            (n * l / spec.concurrency as f64).max(n / 110.0),
            plan.idle.as_secs_f64() + 2.0,
        ),
        Kind::OneAtATime => (7.0, (n * (l + 0.015)).min(plan.window.as_secs_f64()), 0.0),
        Kind::PlainStatus => (6.0, n / 150.0, 0.0),
        Kind::PlainAll => (6.0, n / 100.0, 0.0),
    };
    setup + n / 800.0 + 1.0 + measure + idle + 2.0 + n / 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

async fn run(spec: Spec, plan: &Plan) -> Result<RunResult> {
    let with_controller = matches!(spec.kind, Kind::Ours | Kind::OneAtATime);
    let mut env = Env::start(with_controller.then_some(spec.concurrency)).await?;
    let pid = env.controller_pid();
    env.set_command_latency(spec.latency_ms.unwrap_or(0))
        .await?;
    let plain = match spec.kind {
        Kind::PlainStatus | Kind::PlainAll => {
            let writes = if spec.kind == Kind::PlainAll {
                Writes::All
            } else {
                Writes::StatusOnly
            };
            Some(plain::spawn(
                env.cp.new_client().await?,
                spec.concurrency,
                writes,
            )?)
        }
        _ => None,
    };

    let tc = Instant::now();
    create_requests(&env.client, spec.n, plan.parallel).await?;
    let create_s = tc.elapsed().as_secs_f64();
    let (tracker, watch_task) = ReadyTracker::start(env.cp.new_client().await?).await?;
    // Let the controller's own watch catch up with the creations before the clock starts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.reset_command_calls().await?;

    let before = Snapshot::take(pid);
    let t0 = Instant::now();
    let approvals = {
        let (client, n, parallel) = (env.client.clone(), spec.n, plan.parallel);
        tokio::spawn(async move {
            let r = approve_all(&client, n, parallel).await;
            (r, t0.elapsed())
        })
    };
    let window_bounded = spec.kind == Kind::OneAtATime;
    let l = spec.latency_ms.unwrap_or(0) as f64 / 1000.0;
    let budget = if window_bounded {
        plan.window
    } else {
        Duration::from_secs_f64(
            120.0 + 3.0 * spec.n as f64 * l / spec.concurrency as f64 + 0.05 * spec.n as f64,
        )
    };
    let deadline = t0 + budget;
    // A healthy run makes progress every few seconds even at L=500 ms; a minute without any
    // means something broke (a component died): stop and report instead of waiting it out.
    let done_at_deadline = tracker
        .wait(spec.n, deadline, Duration::from_secs(60))
        .await;
    let waited = t0.elapsed();
    let after = Snapshot::take(pid);
    let ready_now = tracker.count();
    let calls = env.command_calls().await?;
    let (approved, approve_elapsed) = tokio::time::timeout(Duration::from_secs(300), approvals)
        .await
        .context("approvals still running 5 min after the run")?
        .context("approval task")?;
    let approved = approved?;
    let approve_s = approve_elapsed.as_secs_f64();

    let stamps = tracker.stamps();
    let in_time: Vec<_> = stamps.iter().filter(|(_, &t)| t <= deadline).collect();
    let completed = in_time.len();
    let complete = done_at_deadline >= spec.n;
    let wall = if complete {
        in_time
            .iter()
            .map(|(_, &t)| t.duration_since(t0))
            .max()
            .unwrap_or_default()
    } else if window_bounded {
        budget
    } else {
        waited
    };
    let mut lat: Vec<f64> = in_time
        .iter()
        .filter_map(|(name, &t)| {
            approved
                .get(*name)
                .map(|&sent| t.saturating_duration_since(sent).as_secs_f64() * 1000.0)
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    let (controller_cpu, cpu_by_process, foreign) = before.delta(&after);
    let run_secs = waited.as_secs_f64();

    let idle_cpu_s = if spec.kind == Kind::Ours && complete {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let a = Snapshot::take(pid);
        tokio::time::sleep(plan.idle).await;
        let b = Snapshot::take(pid);
        Some(a.delta(&b).0)
    } else {
        None
    };
    let rss = pid
        .and_then(|p| status_kib(p, "VmHWM").ok())
        .map(|k| k as f64 / 1024.0);
    watch_task.abort();
    if let Some(p) = plain {
        p.abort();
    }
    let error = (!complete && !window_bounded).then(|| {
        format!(
            "only {done_at_deadline}/{} Ready after {:.0} s (logs in {})",
            spec.n,
            waited.as_secs_f64(),
            env.dir().display()
        )
    });
    if error.is_some() {
        // Keep the logs (controller, apiserver) of a run that did not finish.
        env.cp.keep_on_drop(true);
    }
    drop(env);
    Ok(RunResult {
        spec,
        completed,
        window_bounded,
        create_s,
        approve_s,
        wall_s: wall.as_secs_f64(),
        throughput: completed as f64 / wall.as_secs_f64().max(1e-9),
        p50_ms: percentile(&lat, 50.0),
        p95_ms: percentile(&lat, 95.0),
        p99_ms: percentile(&lat, 99.0),
        controller_peak_rss_mib: rss,
        controller_cpu_s: pid.map(|_| controller_cpu),
        command_calls_per_request: with_controller.then(|| calls as f64 / ready_now.max(1) as f64),
        idle_cpu_s,
        foreign_cores: foreign / run_secs.max(1e-9),
        cpu_by_process,
        error,
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Where the raw figures of a report go: next to the build, not in docs/.
fn raw_path(out: &std::path::Path, default: &str) -> PathBuf {
    command_issuer_e2e::paths::target_dir().join("bench").join(
        out.with_extension("json")
            .file_name()
            .unwrap_or_else(|| default.as_ref()),
    )
}

/// `bash bench/run.sh --issuers`: the many-issuers scenario alone, its section spliced into
/// the report.
fn main_issuers(args: &Args) -> Result<()> {
    let settings = issuers::Settings {
        count: args.issuer_count,
        window: Duration::from_secs(args.issuers_window_secs),
        parallel: args.client_parallelism,
    };
    eprintln!(
        "[bench] many issuers: {} Issuers, one per namespace, health check every {}; window {} s; estimated {:.0} s",
        settings.count,
        issuers::INTERVAL,
        settings.window.as_secs(),
        issuers::estimate(&settings)
    );
    if args.plan {
        return Ok(());
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| command_issuer_e2e::fixtures::repo_file("docs/benchmarks.md"));
    let machine = report::Machine::describe();
    let started = jiff::Timestamp::now();
    let t = Instant::now();
    let result = runtime()?.block_on(issuers::run(settings))?;
    let elapsed = t.elapsed();
    let section = issuers::markdown(&result, &settings, &machine, started, elapsed);
    let doc = std::fs::read_to_string(&out).unwrap_or_else(|_| "# Benchmarks\n".into());
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, issuers::splice(&doc, &section))
        .with_context(|| format!("writing {}", out.display()))?;
    let json = command_issuer_e2e::paths::target_dir().join("bench/issuers.json");
    std::fs::create_dir_all(json.parent().unwrap_or(&out))?;
    std::fs::write(&json, serde_json::to_string_pretty(&result)?)?;
    println!("{section}");
    eprintln!(
        "[bench] done in {:.0} s; section in {} (raw {})",
        elapsed.as_secs_f64(),
        out.display(),
        json.display()
    );
    if let Some(e) = &result.error {
        anyhow::bail!("many-issuers run incomplete: {e}");
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.issuers {
        return main_issuers(&args);
    }
    let plan = plan(&args);
    let total: f64 = plan.specs.iter().map(|s| estimate(s, &plan)).sum();
    eprintln!(
        "[bench] {} runs, estimated {:.0} min {:.0} s",
        plan.specs.len(),
        (total / 60.0).floor(),
        total % 60.0
    );
    for s in &plan.specs {
        eprintln!(
            "[bench]   {:<36} C={:<3} N={:<5} L={:<4} ~{:.0} s",
            s.kind.label(),
            s.concurrency,
            s.n,
            s.latency_ms.map(|l| l.to_string()).unwrap_or("-".into()),
            estimate(s, &plan)
        );
    }
    if args.plan {
        return Ok(());
    }
    let out = args.out.clone().unwrap_or_else(|| {
        if plan.quick {
            command_issuer_e2e::paths::target_dir().join("bench/benchmarks-quick.md")
        } else {
            command_issuer_e2e::fixtures::repo_file("docs/benchmarks.md")
        }
    });
    let rt = runtime()?;
    let machine = report::Machine::describe();
    let started = jiff::Timestamp::now();
    let t = Instant::now();
    let results = rt.block_on(async {
        let mut results = Vec::new();
        for (i, spec) in plan.specs.iter().enumerate() {
            eprintln!(
                "[bench] run {}/{}: {} N={} L={:?} concurrency {}",
                i + 1,
                plan.specs.len(),
                spec.kind.label(),
                spec.n,
                spec.latency_ms,
                spec.concurrency
            );
            let r = match run(*spec, &plan).await {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("[bench] run failed: {e:#}");
                    report::failed(*spec, format!("{e:#}"))
                }
            };
            eprintln!("[bench] {}", report::one_line(&r));
            results.push(r);
        }
        results
    });
    let elapsed = t.elapsed();
    let mut md = report::markdown(&args, &plan, &machine, started, elapsed, &results);
    // The many-issuers section (`--issuers`) is not part of the matrix: keep its figures.
    if let Some(section) = std::fs::read_to_string(&out)
        .ok()
        .as_deref()
        .and_then(issuers::extract)
    {
        md = issuers::splice(&md, section);
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, &md).with_context(|| format!("writing {}", out.display()))?;
    let json = raw_path(&out, "benchmarks.json");
    std::fs::create_dir_all(json.parent().unwrap_or(&out))?;
    std::fs::write(&json, serde_json::to_string_pretty(&results)?)?;
    println!("{}", report::tables(&results));
    eprintln!(
        "[bench] done in {:.0} s; report {} (raw {})",
        elapsed.as_secs_f64(),
        out.display(),
        json.display()
    );
    Ok(())
}
