//! `command-sim` binary: parses the CLI and runs the simulator until SIGINT/SIGTERM.

use clap::Parser;

#[actix_web::main]
async fn main() {
    let cli = command_sim::Cli::parse();
    command_sim::init_logging(cli.log_format);
    if let Err(e) = command_sim::run(cli.options()).await {
        eprintln!("command-sim: {e}");
        std::process::exit(1);
    }
}
