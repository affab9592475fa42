//! Evidence for the secret-leak sweep (issue #6 item 5): when a control plane goes away, every
//! controller log written under its work dir and every object the controller writes to (Issuers,
//! ClusterIssuers, CertificateRequests, Certificates, Events) is copied to
//! `<target>/e2e-artifacts/<control plane>/`, with the secret values the cluster held that run in
//! `secret-values.txt`. `tests/harness/leak_sweep.py` then checks, once the whole suite has run,
//! that no secret value, token or Authorization header appears in any of that evidence.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use serde_json::Value;

use crate::paths::{target_dir, tool_path};

/// Secret keys whose values are credentials (product.md §4 plus the usual names).
pub const SENSITIVE_KEYS: &[&str] = &[
    "password",
    "clientSecret",
    "client_secret",
    "token",
    "access_token",
];

/// Kinds dumped for the sweep: everything the controller writes status, Events or annotations to.
const DUMPED: &[&str] = &[
    "events",
    "issuers.command-issuer.keyfactor.com",
    "clusterissuers.command-issuer.keyfactor.com",
    "certificaterequests.cert-manager.io",
    "certificates.cert-manager.io",
];

/// Where the sweep evidence lives (`$E2E_ARTIFACTS_DIR` or `<target>/e2e-artifacts`).
pub fn artifacts_root() -> PathBuf {
    std::env::var_os("E2E_ARTIFACTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("e2e-artifacts"))
}

/// Copies the evidence of one control plane (work dir `dir`, reachable through `kubeconfig`)
/// into a fresh directory under [`artifacts_root`]. Best effort: a failure is printed, never
/// fails the test that owned the control plane.
pub fn collect(dir: &Path, kubeconfig: &Path) {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "control-plane".into());
    let out = artifacts_root().join(name);
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("[e2e] sweep: cannot create {}: {e}", out.display());
        return;
    }
    let Ok(kubectl) = tool_path("kubectl") else {
        return;
    };
    for kind in DUMPED {
        if let Some(json) = kubectl_json(&kubectl, kubeconfig, kind) {
            let file = out.join(format!("{}.json", kind.split('.').next().unwrap_or(kind)));
            if let Err(e) = std::fs::write(&file, json.to_string()) {
                eprintln!("[e2e] sweep: cannot write {}: {e}", file.display());
            }
        }
    }
    if let Some(secrets) = kubectl_json(&kubectl, kubeconfig, "secrets") {
        let values = secret_values(&secrets);
        if let Err(e) = std::fs::write(out.join("secret-values.txt"), values.join("\n")) {
            eprintln!("[e2e] sweep: cannot write secret values: {e}");
        }
    }
    for log in controller_logs(dir) {
        let target = out.join(log.file_name().unwrap_or_default());
        if let Err(e) = std::fs::copy(&log, &target) {
            eprintln!("[e2e] sweep: cannot copy {}: {e}", log.display());
        }
    }
}

fn kubectl_json(kubectl: &Path, kubeconfig: &Path, kind: &str) -> Option<Value> {
    let out = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["get", kind, "-A", "-o", "json", "--request-timeout=5s"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The credential values in a `kubectl get secrets -o json` list, plus the Basic header payload
/// (`base64(username:password)`) of each basic-auth Secret, one per line.
pub fn secret_values(list: &Value) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut values = Vec::new();
    for item in list["items"].as_array().into_iter().flatten() {
        let Some(data) = item["data"].as_object() else {
            continue;
        };
        let decode = |key: &str| {
            data.get(key)
                .and_then(Value::as_str)
                .and_then(|v| b64.decode(v).ok())
                .and_then(|v| String::from_utf8(v).ok())
        };
        for key in SENSITIVE_KEYS {
            if let Some(v) = decode(key).filter(|v| v.trim().len() >= 6) {
                values.push(v.trim().to_string());
            }
        }
        if let (Some(u), Some(p)) = (decode("username"), decode("password")) {
            if !p.is_empty() {
                values.push(b64.encode(format!("{u}:{p}")));
            }
        }
    }
    values.sort();
    values.dedup();
    values
}

/// Every `command-issuer-*.log` below `dir` (the harness writes them next to the kubeconfig).
fn controller_logs(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("command-issuer-") && n.ends_with(".log"))
            {
                found.push(p);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_credentials_and_the_basic_header_but_not_names() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let list = serde_json::json!({"items": [
            {"data": {"username": b64.encode("command-issuer"), "password": b64.encode("sim-password-1")}},
            {"data": {"clientId": b64.encode("issuer-client"), "clientSecret": b64.encode("oauth-secret-1")}},
            {"data": {"tls.crt": b64.encode("-----BEGIN CERTIFICATE-----")}},
            {"metadata": {"name": "no-data"}},
        ]});
        let v = secret_values(&list);
        assert!(v.contains(&"sim-password-1".to_string()));
        assert!(v.contains(&"oauth-secret-1".to_string()));
        assert!(v.contains(&b64.encode("command-issuer:sim-password-1")));
        assert!(!v
            .iter()
            .any(|s| s == "command-issuer" || s == "issuer-client"));
        assert_eq!(v.len(), 3);
    }
}
