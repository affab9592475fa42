//! Where the harness finds the repository, the workspace binaries and the installed tools.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// Root of the repository (the workspace), so paths work from any test's working directory.
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest.to_path_buf())
}

/// Cargo's target directory (`$CARGO_TARGET_DIR` or `<repo>/target`), where workspace binaries land.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                repo_root().join(dir)
            }
        }
        None => repo_root().join("target"),
    }
}

/// Path of a workspace binary (`command-issuer`, `command-sim`), honouring the env overrides,
/// so tests fail with a clear message instead of a spawn error when it was not built.
pub fn bin_path(name: &str) -> Result<PathBuf> {
    let env_var = match name {
        "command-issuer" => Some("COMMAND_ISSUER_BIN"),
        "command-sim" => Some("COMMAND_SIM_BIN"),
        _ => None,
    };
    if let Some(var) = env_var {
        if let Some(p) = std::env::var_os(var) {
            let p = PathBuf::from(p);
            if !p.is_file() {
                bail!("{var}={} does not name a file", p.display());
            }
            return Ok(p);
        }
    }
    let p = target_dir().join("debug").join(name);
    if !p.is_file() {
        bail!(
            "binary `{name}` not found at {}: build it first with `cargo build --workspace --bins`{}",
            p.display(),
            env_var
                .map(|v| format!(" (or point {v} at it)"))
                .unwrap_or_default()
        );
    }
    Ok(p)
}

/// Directory of the tools installed by `tests/harness/install.sh` (`$E2E_TOOLS_BIN` or the cache).
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("E2E_TOOLS_BIN") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/command-issuer-e2e/bin")
}

/// Path of an installed tool (etcd, kubectl, kube-apiserver, ...), failing with the install hint.
pub fn tool_path(name: &str) -> Result<PathBuf> {
    let p = tools_dir().join(name);
    if !p.is_file() {
        bail!(
            "tool `{name}` not found at {}: run `bash tests/harness/install.sh` (or set E2E_TOOLS_BIN)",
            p.display()
        );
    }
    Ok(p)
}

/// The cert-manager CRD file (`$CERT_MANAGER_CRDS` or `<repo>/../shared/reference/cert-manager.crds.yaml`).
pub fn cert_manager_crds() -> PathBuf {
    match std::env::var_os("CERT_MANAGER_CRDS") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join("../shared/reference/cert-manager.crds.yaml"),
    }
}

/// The simulator's default configuration, used when a test has no special needs.
pub fn default_sim_config() -> PathBuf {
    repo_root().join("tests/command-sim/config/default.json")
}

/// True when `E2E_KEEP=1`: keep work dirs and logs after a passing run too.
pub fn keep_requested() -> bool {
    std::env::var("E2E_KEEP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// A fresh, uniquely named temp dir for one harness object (work dir, sim state dir).
pub fn fresh_temp_dir(prefix: &str) -> Result<PathBuf> {
    let base = std::env::var_os("E2E_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let short = uuid::Uuid::new_v4().simple().to_string();
    let dir = base.join(format!("{prefix}-{}-{}", std::process::id(), &short[..8]));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
