//! Writes the CRD YAML from the Rust types so `crds/` and the chart never drift from the code.
//!
//! `crdgen` writes `crds/` and `chart/templates/crds.yaml` under the current directory;
//! `crdgen --check` fails when either differs from what the types generate.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let files = match command_issuer::api::crd_files() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("crdgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut drift = false;
    for (path, content) in files {
        let p = Path::new(&path);
        if check {
            let current = std::fs::read_to_string(p).unwrap_or_default();
            if current != content {
                eprintln!("crdgen: {path} is out of date; run `cargo run --bin crdgen`");
                drift = true;
            }
        } else {
            if let Some(dir) = p.parent() {
                if let Err(e) = std::fs::create_dir_all(dir) {
                    eprintln!("crdgen: {}: {e}", dir.display());
                    return ExitCode::FAILURE;
                }
            }
            if let Err(e) = std::fs::write(p, content) {
                eprintln!("crdgen: {path}: {e}");
                return ExitCode::FAILURE;
            }
            println!("wrote {path}");
        }
    }
    if drift {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
