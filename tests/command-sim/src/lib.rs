//! Keyfactor Command simulator for the command-issuer test suite: serves the part of the
//! Keyfactor API described in `shared/reference/command-api.md` over HTTPS on loopback, signs
//! CSRs with a real two-level test PKI and exposes a test-only admin API under `/_sim/`.

#![warn(missing_docs)]

pub mod admin;
pub mod api;
pub mod auth;
pub mod config;
pub mod entra;
pub mod errors;
pub mod faults;
pub mod gce;
pub mod idp;
pub mod jwt;
pub mod pki;
pub mod server;
pub mod state;
pub mod tokens;

use std::path::PathBuf;

pub use server::{run, start, Options, Ready, Running, SimError};

/// Format of the stdout log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// Command line of the `command-sim` binary.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "command-sim",
    about = "Keyfactor Command simulator (HTTPS, loopback)"
)]
pub struct Cli {
    /// Configuration file (JSON).
    #[arg(long)]
    pub config: PathBuf,
    /// Listen address; port 0 picks a free port (see ready.json).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Directory for ready.json and the PEM files.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Reuse (or create) a persisted root/issuing CA in this directory.
    #[arg(long)]
    pub pki_dir: Option<PathBuf>,
    /// Also serve the GKE metadata server (plain HTTP) on this loopback address, e.g.
    /// `127.0.0.1:0`; ready.json then has `gce_metadata`.
    #[arg(long)]
    pub gce_metadata_listen: Option<String>,
    /// Stdout log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Cli {
    /// Server options from the command line.
    pub fn options(&self) -> Options {
        Options {
            config: self.config.clone(),
            listen: self.listen.clone(),
            state_dir: self.state_dir.clone(),
            pki_dir: self.pki_dir.clone(),
            gce_metadata_listen: self.gce_metadata_listen.clone(),
        }
    }
}

/// Installs the stdout logger (`RUST_LOG` filters, default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_writer(std::io::stdout);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
