//! The `command-issuer` controller binary: flags, telemetry, then the supervised actor system.

mod apiserver;
mod command_calls;
mod enroll;
mod flags;
mod http;
mod issuer;
mod leader;
mod messages;
mod status_writer;
mod supervisor;
mod watch;

use std::process::ExitCode;

use clap::Parser;
use command_issuer::telemetry;

/// Exit code of a process that ended on a panic (EX_SOFTWARE).
const PANIC_EXIT: i32 = 70;

/// A panic anywhere ends the process with a clear log line and a non-zero exit, so Kubernetes
/// restarts the pod: actix would otherwise keep running without the actor that panicked, deaf
/// to its messages, with green probes.
fn exit_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(panic = %info, "a task panicked; exiting so the pod restarts");
        default(info);
        std::process::exit(PANIC_EXIT);
    }));
}

fn main() -> ExitCode {
    let flags = flags::Flags::parse();
    telemetry::init(flags.effective_log_format(), &flags.effective_log_level());
    exit_on_panic();
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
