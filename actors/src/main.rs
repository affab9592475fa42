//! The `command-issuer` controller binary: flags, telemetry, then the supervised actor system.

mod auth;
mod enroller;
mod flags;
mod http;
mod leader;
mod messages;
mod probe;
mod registry;
mod status_writer;
mod supervisor;
mod watchers;

use std::process::ExitCode;

use clap::Parser;
use command_issuer::telemetry;

fn main() -> ExitCode {
    let flags = flags::Flags::parse();
    telemetry::init(flags.effective_log_format(), &flags.effective_log_level());
    let settings = match flags.settings() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "invalid flags");
            eprintln!("command-issuer: {e}");
            return ExitCode::from(2);
        }
    };
    let system = actix_rt::System::new();
    match system.block_on(supervisor::run(flags, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "controller stopped");
            eprintln!("command-issuer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
