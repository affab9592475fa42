//! Command line of the controller: the Go issuer's flags (product.md §15), same names and defaults.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use command_issuer::config::{format_go_duration, parse_go_duration, MIN_HEALTH_INTERVAL};
use command_issuer::telemetry::LogFormat;

/// Log output format.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormatArg {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

impl From<LogFormatArg> for LogFormat {
    fn from(v: LogFormatArg) -> Self {
        match v {
            LogFormatArg::Json => LogFormat::Json,
            LogFormatArg::Text => LogFormat::Text,
        }
    }
}

/// command-issuer: a cert-manager external issuer for Keyfactor Command.
#[derive(Parser, Debug, Clone)]
#[command(name = "command-issuer", version, args_override_self = true)]
pub struct Flags {
    /// Prometheus metrics listener ("0" disables).
    #[arg(long, default_value = ":8080")]
    pub metrics_bind_address: String,
    /// Listener for /healthz and /readyz.
    #[arg(long, default_value = ":8081")]
    pub health_probe_bind_address: String,
    /// Lease-based leader election so extra replicas stand by.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease; default: the cluster resource namespace.
    #[arg(long)]
    pub leader_election_namespace: Option<String>,
    /// Serve metrics over TLS.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub metrics_secure: bool,
    /// HTTP/2 for the metrics and probe servers.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub enable_http2: bool,
    /// Health-check interval of issuers without their own (Go duration, at least 30s).
    #[arg(long, default_value = "10m")]
    pub default_health_check_interval: String,
    /// Namespace of Secrets/ConfigMaps for ClusterIssuers (and Issuers by default); default: the pod's namespace.
    #[arg(long, default_value = "")]
    pub cluster_resource_namespace: String,
    /// Sign requests without waiting for cert-manager's Approved condition.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub disable_approved_check: bool,
    /// Read an Issuer's Secrets and ConfigMaps from its own namespace.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub secret_access_granted_at_cluster_level: bool,
    /// Watch ConfigMaps in every namespace (no effect on which namespace is read, as upstream).
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    pub configmap_access_granted_at_cluster_level: bool,
    /// Kubeconfig for out-of-cluster runs; in-cluster config otherwise.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, default_value = "json")]
    pub log_format: LogFormatArg,
    /// Log level (error, warn, info, debug, trace).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Go issuer compatibility: `json` or `console`; sets --log-format when given.
    #[arg(long)]
    pub zap_encoder: Option<String>,
    /// Go issuer compatibility: `debug`, `info`, `error` or a number; sets --log-level when given.
    #[arg(long)]
    pub zap_log_level: Option<String>,
    /// Go issuer compatibility: accepted, no effect (no development-mode logger here).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub zap_devel: Option<bool>,
    /// Go issuer compatibility: accepted, no effect.
    #[arg(long)]
    pub zap_stacktrace_level: Option<String>,
    /// Go issuer compatibility: accepted, no effect (timestamps are RFC 3339).
    #[arg(long)]
    pub zap_time_encoding: Option<String>,
    /// Enrollments in flight at once, all issuers together; one issuer gets at most
    /// --per-issuer-concurrency of them, so the default leaves a second busy issuer as many.
    #[arg(long, default_value_t = 48)]
    pub concurrency: usize,
    /// How long a request whose error cannot heal by itself (bad CSR, unknown template or
    /// pattern, policy 400) is retried after approval before it is marked Failed (Go duration).
    #[arg(long, default_value = "1h")]
    pub max_retry_duration: String,
    /// How often a request Command holds (approval workflow, external validation) is followed
    /// up (Go duration).
    #[arg(long, default_value = "30s")]
    pub pending_poll_interval: String,
    /// Timeout of one Command HTTP call (Go duration).
    #[arg(long, default_value = "30s")]
    pub command_timeout: String,
    /// Enrollments in flight for one issuer, within --concurrency: a slow Command keeps the
    /// rest of the slots free for other issuers (slots go round-robin to issuers with work).
    #[arg(long, default_value_t = 24)]
    pub per_issuer_concurrency: usize,
    /// Follow-up polls of held requests in flight at once; they never take enrollment slots.
    #[arg(long, default_value_t = 4)]
    pub pending_poll_concurrency: usize,
    /// Test only: this core actor panics on its first message (proves a panic ends the process).
    #[arg(long, hide = true, value_enum)]
    pub debug_panic_in: Option<CoreActor>,
    /// Test only: this core actor blocks its thread on its first message (proves /healthz fails).
    #[arg(long, hide = true, value_enum)]
    pub debug_stall_in: Option<CoreActor>,
}

/// Core actors a test can break on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CoreActor {
    /// The enroller, on its first request.
    Enroller,
}

/// Why the flags cannot start a controller.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    /// --default-health-check-interval does not parse.
    #[error("unable to parse default health check interval: {0}")]
    Interval(String),
    /// --default-health-check-interval is below 30s.
    #[error("interval {0} is invalid, must be greater than or equal to '30s'")]
    IntervalTooShort(String),
    /// --command-timeout does not parse.
    #[error("unable to parse command timeout: {0}")]
    Timeout(String),
    /// No namespace flag and no service-account namespace file.
    #[error("please supply --cluster-resource-namespace")]
    Namespace,
    /// --max-retry-duration does not parse.
    #[error("unable to parse max retry duration: {0}")]
    MaxRetry(String),
    /// --pending-poll-interval does not parse.
    #[error("unable to parse pending poll interval: {0}")]
    PendingPoll(String),
    /// --concurrency 0.
    #[error("--concurrency must be at least 1")]
    Concurrency,
    /// --per-issuer-concurrency 0.
    #[error("--per-issuer-concurrency must be at least 1")]
    PerIssuerConcurrency,
    /// --pending-poll-concurrency 0.
    #[error("--pending-poll-concurrency must be at least 1")]
    PollConcurrency,
}

impl Flags {
    /// Effective log format: --zap-encoder (console → text) wins when given, as for Go users.
    pub fn effective_log_format(&self) -> LogFormat {
        match self.zap_encoder.as_deref() {
            Some("console") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            _ => self.log_format.into(),
        }
    }

    /// Effective log level: --zap-log-level when given (numbers above 0 mean debug).
    pub fn effective_log_level(&self) -> String {
        match self.zap_log_level.as_deref() {
            Some(l) if l.parse::<i32>().is_ok_and(|n| n > 0) => "debug".into(),
            Some(l) if !l.is_empty() => l.to_string(),
            _ => self.log_level.clone(),
        }
    }
}

/// Settings every actor reads, validated once at start-up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Default issuer health-check interval.
    pub default_health_interval: Duration,
    /// Controller namespace for Secrets/ConfigMaps.
    pub cluster_resource_namespace: String,
    /// Approval gate on.
    pub check_approval: bool,
    /// Issuers read Secrets from their own namespace.
    pub secret_access_at_cluster_level: bool,
    /// ConfigMaps watched in every namespace.
    pub configmap_access_at_cluster_level: bool,
    /// Enrollments in flight.
    pub concurrency: usize,
    /// Command call timeout.
    pub command_timeout: Duration,
    /// Permanent errors turn Failed after this long.
    pub max_retry_duration: Duration,
    /// Follow-up period of held requests.
    pub pending_poll_interval: Duration,
    /// Enrollments in flight per issuer (never above `concurrency`).
    pub per_issuer_concurrency: usize,
    /// Held-request polls in flight.
    pub pending_poll_concurrency: usize,
    /// Test only: the core actor that panics on purpose.
    pub debug_panic_in: Option<CoreActor>,
    /// Test only: the core actor that stalls on purpose.
    pub debug_stall_in: Option<CoreActor>,
}

const SA_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

impl Flags {
    /// Validates the flags into settings, with the Go issuer's start-up errors.
    pub fn settings(&self) -> Result<Settings, FlagError> {
        let interval =
            parse_go_duration(&self.default_health_check_interval).map_err(FlagError::Interval)?;
        if interval < MIN_HEALTH_INTERVAL {
            return Err(FlagError::IntervalTooShort(format_go_duration(interval)));
        }
        let command_timeout =
            parse_go_duration(&self.command_timeout).map_err(FlagError::Timeout)?;
        let max_retry_duration =
            parse_go_duration(&self.max_retry_duration).map_err(FlagError::MaxRetry)?;
        let pending_poll_interval = parse_go_duration(&self.pending_poll_interval)
            .map_err(FlagError::PendingPoll)?
            .max(Duration::from_millis(100));
        let ns = if self.cluster_resource_namespace.is_empty() {
            std::fs::read_to_string(SA_NAMESPACE_FILE)
                .map(|s| s.trim().to_string())
                .ok()
                .filter(|s| !s.is_empty())
                .ok_or(FlagError::Namespace)?
        } else {
            self.cluster_resource_namespace.clone()
        };
        if self.concurrency == 0 {
            return Err(FlagError::Concurrency);
        }
        if self.per_issuer_concurrency == 0 {
            return Err(FlagError::PerIssuerConcurrency);
        }
        if self.pending_poll_concurrency == 0 {
            return Err(FlagError::PollConcurrency);
        }
        Ok(Settings {
            default_health_interval: interval,
            cluster_resource_namespace: ns,
            check_approval: !self.disable_approved_check,
            secret_access_at_cluster_level: self.secret_access_granted_at_cluster_level,
            configmap_access_at_cluster_level: self.configmap_access_granted_at_cluster_level,
            concurrency: self.concurrency,
            command_timeout,
            max_retry_duration,
            pending_poll_interval,
            per_issuer_concurrency: self.per_issuer_concurrency.min(self.concurrency),
            pending_poll_concurrency: self.pending_poll_concurrency,
            debug_panic_in: self.debug_panic_in,
            debug_stall_in: self.debug_stall_in,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        let mut v = vec!["command-issuer"];
        v.extend_from_slice(args);
        Flags::parse_from(v)
    }

    #[test]
    fn defaults_match_product_section_15() {
        let f = flags(&["--cluster-resource-namespace", "x"]);
        assert_eq!(f.metrics_bind_address, ":8080");
        assert_eq!(f.health_probe_bind_address, ":8081");
        assert!(!f.leader_elect && !f.disable_approved_check);
        let s = f.settings().unwrap();
        assert_eq!(s.default_health_interval, Duration::from_secs(600));
        assert!(s.check_approval);
        assert_eq!((s.concurrency, s.per_issuer_concurrency), (48, 24));
        assert_eq!(s.pending_poll_concurrency, 4);
        assert_eq!(s.debug_panic_in, None);
        let s = flags(&["--cluster-resource-namespace", "x", "--concurrency", "8"])
            .settings()
            .unwrap();
        assert_eq!(s.per_issuer_concurrency, 8, "never above --concurrency");
        let e = flags(&[
            "--cluster-resource-namespace",
            "x",
            "--per-issuer-concurrency",
            "0",
        ])
        .settings()
        .unwrap_err();
        assert_eq!(e.to_string(), "--per-issuer-concurrency must be at least 1");
    }

    #[test]
    fn startup_errors() {
        let e = flags(&[
            "--cluster-resource-namespace",
            "x",
            "--default-health-check-interval",
            "29s",
        ])
        .settings()
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "interval 29s is invalid, must be greater than or equal to '30s'"
        );
        let e = flags(&[
            "--cluster-resource-namespace",
            "x",
            "--default-health-check-interval",
            "soon",
        ])
        .settings()
        .unwrap_err();
        assert!(e
            .to_string()
            .starts_with("unable to parse default health check interval"));
        assert!(flags(&["--leader-elect", "--cluster-resource-namespace", "x"]).leader_elect);
        assert!(
            !flags(&["--leader-elect=false", "--cluster-resource-namespace", "x"]).leader_elect
        );
    }

    #[test]
    fn zap_flags_of_the_go_issuer_are_accepted() {
        let f = flags(&[
            "--zap-devel",
            "--zap-encoder",
            "console",
            "--zap-log-level",
            "debug",
            "--zap-time-encoding",
            "iso8601",
        ]);
        assert_eq!(f.effective_log_format(), LogFormat::Text);
        assert_eq!(f.effective_log_level(), "debug");
    }
}
