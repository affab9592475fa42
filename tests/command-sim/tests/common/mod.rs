//! The simulator process shared by the integration test files: spawned from the real binary on
//! 127.0.0.1:0, awaited through ready.json, and an HTTPS client that trusts only its test CA.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde_json::Value;

/// The shipped default configuration.
pub fn default_config() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("read default config"))
        .expect("parse default config")
}

/// A running simulator, killed and cleaned up on drop.
pub struct SimProcess {
    child: Child,
    dir: PathBuf,
    /// ready.json as written by the simulator.
    pub ready: Value,
    /// HTTPS client trusting the simulator's TLS CA.
    pub client: awc::Client,
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl SimProcess {
    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        self.ready["url"].as_str().expect("url")
    }
}

/// Starts the simulator with `config` and extra CLI `args`; the client times out after `timeout`.
pub async fn spawn(config: &Value, args: &[&str], timeout: Duration) -> SimProcess {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("command-sim-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("create test dir");
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, config.to_string()).expect("write config");
    let state_dir = dir.join("state");
    let child = Command::new(env!("CARGO_BIN_EXE_command-sim"))
        .arg("--config")
        .arg(&config_path)
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--state-dir")
        .arg(&state_dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn command-sim");
    let ready_path = state_dir.join("ready.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready: Value = loop {
        if let Ok(text) = std::fs::read_to_string(&ready_path) {
            break serde_json::from_str(&text).expect("ready.json is complete JSON");
        }
        assert!(
            Instant::now() < deadline,
            "command-sim did not become ready"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ready["tls_ca"].as_str().expect("tls_ca"))
        .expect("tls-ca.pem")
    {
        roots.add(cert.expect("tls ca cert")).expect("add root");
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("tls versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let client = awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(Arc::new(tls)))
        .timeout(timeout)
        .finish();
    SimProcess {
        child,
        dir,
        ready,
        client,
    }
}
