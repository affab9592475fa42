//! Logging set up once per process: JSON for machines, text for people, never secrets.

use tracing_subscriber::{fmt, EnvFilter};

/// Output format chosen with `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, fields flattened, for log pipelines and `jq`.
    Json,
    /// Human-readable lines.
    Text,
}

/// Installs the global subscriber; `level` is an EnvFilter directive (`info`, `debug`, ...),
/// overridden by `RUST_LOG` when set.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!("{level},kube_runtime=warn,kube_client=warn,rustls=warn,h2=warn,hyper=warn,actix_http=warn"))
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
