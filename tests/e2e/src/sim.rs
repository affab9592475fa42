//! The Keyfactor Command simulator (`command-sim`) as a child process plus its admin API.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::http::{HttpClient, Response};
use crate::paths::{bin_path, fresh_temp_dir, keep_requested};
use crate::process::{ManagedProcess, STOP_GRACE};
use crate::wait::{log, try_wait_for};

/// Bound on the simulator writing ready.json.
pub const SIM_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Contents of `STATE_DIR/ready.json`, written atomically by the simulator once it listens.
#[derive(Debug, Clone, Deserialize)]
pub struct SimReady {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// Listening port.
    pub port: u16,
    /// PEM file of the CA that signed the simulator's TLS certificate.
    pub tls_ca: PathBuf,
    /// PEM file of the simulated PKI's root.
    pub pki_root: PathBuf,
    /// PEM file of the simulated PKI's issuing CA.
    pub pki_issuing: PathBuf,
}

/// A running simulator; killed on drop, its state dir removed unless kept.
#[derive(Debug)]
pub struct Sim {
    process: ManagedProcess,
    dir: PathBuf,
    ready: SimReady,
    tls_ca_pem: String,
    root_pem: String,
    issuing_pem: String,
    http: HttpClient,
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

impl Sim {
    /// Starts `command-sim --config CONFIG --listen 127.0.0.1:0` in a fresh state dir and waits
    /// (bounded) for its ready.json, so tests get its URL, trust anchors and admin API.
    pub async fn start(config_path: &Path) -> Result<Self> {
        Self::start_with_args(config_path, &[]).await
    }

    /// Starts with the default config (`tests/command-sim/config/default.json`).
    pub async fn start_default() -> Result<Self> {
        Self::start(&crate::paths::default_sim_config()).await
    }

    /// Like [`Sim::start`] with extra CLI flags (e.g. `--pki-dir DIR`).
    pub async fn start_with_args(config_path: &Path, extra: &[&str]) -> Result<Self> {
        let t = Instant::now();
        if !config_path.is_file() {
            bail!("simulator config {} not found", config_path.display());
        }
        let dir = fresh_temp_dir("command-sim")?;
        let state = dir.join("state");
        std::fs::create_dir_all(&state)?;
        let mut cmd = Command::new(bin_path("command-sim")?);
        cmd.arg("--config")
            .arg(config_path)
            .args(["--listen", "127.0.0.1:0", "--state-dir"])
            .arg(&state)
            .args(extra);
        let mut process = ManagedProcess::spawn("command-sim", cmd, &dir.join("sim.log"))?;
        let ready_path = state.join("ready.json");
        let ready: SimReady = try_wait_for(SIM_START_TIMEOUT, "command-sim ready.json", || {
            let ok = process.ensure_running();
            let ready_path = ready_path.clone();
            async move {
                ok?;
                // Written atomically (rename), so a present file is complete.
                Ok(std::fs::read(&ready_path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<SimReady>(&b).ok()))
            }
        })
        .await
        .inspect_err(|_| keep_dir_note(&dir))?;
        let tls_ca_pem = read(&ready.tls_ca)?;
        let root_pem = read(&ready.pki_root)?;
        let issuing_pem = read(&ready.pki_issuing)?;
        let host_port = format!("127.0.0.1:{}", ready.port);
        let http = HttpClient::tls(&host_port, &tls_ca_pem, "127.0.0.1")?;
        log(format!(
            "command-sim ready at {} in {:.2?} (log {})",
            ready.url,
            t.elapsed(),
            process.log_path().display()
        ));
        Ok(Self {
            process,
            dir,
            ready,
            tls_ca_pem,
            root_pem,
            issuing_pem,
            http,
        })
    }

    /// `https://127.0.0.1:PORT`, the Command hostname/URL to configure issuers with.
    pub fn url(&self) -> &str {
        &self.ready.url
    }

    /// `127.0.0.1:PORT`.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.ready.port)
    }

    /// Listening port.
    pub fn port(&self) -> u16 {
        self.ready.port
    }

    /// PEM of the CA behind the simulator's TLS certificate (goes into the issuer's caSecret).
    pub fn tls_ca_pem(&self) -> &str {
        &self.tls_ca_pem
    }

    /// PEM of the simulated PKI root, the anchor for verifying issued chains.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// PEM of the simulated issuing CA.
    pub fn issuing_pem(&self) -> &str {
        &self.issuing_pem
    }

    /// The parsed ready.json.
    pub fn ready(&self) -> &SimReady {
        &self.ready
    }

    /// Dir holding the state dir and `sim.log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// HTTPS client trusting the simulator, for calls the helpers below do not cover.
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// Number of enrollments the simulator recorded for this CSR (SHA-256 of its DER), to
    /// prove a request was (or was not) sent to Command, and how often.
    pub async fn enrollment_count(&self, csr_der: &[u8]) -> Result<u64> {
        let hash: String = Sha256::digest(csr_der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        #[derive(Deserialize)]
        struct Count {
            count: u64,
        }
        let c: Count = self
            .http
            .get(&format!("/_sim/enrollments/count?csr_sha256={hash}"))
            .await?
            .json()?;
        Ok(c.count)
    }

    /// Every enrollment recorded (`GET /_sim/enrollments`).
    pub async fn enrollments(&self) -> Result<Vec<Value>> {
        self.http.get("/_sim/enrollments").await?.json()
    }

    /// Every API request recorded (`GET /_sim/requests`).
    pub async fn requests(&self) -> Result<Vec<Value>> {
        self.http.get("/_sim/requests").await?.json()
    }

    /// Clears the recorded enrollments and requests (`POST /_sim/reset`).
    pub async fn reset(&self) -> Result<()> {
        let _: Value = self.http.post("/_sim/reset", None).await?.json()?;
        Ok(())
    }

    /// Replaces the fault rules (`POST /_sim/faults`, a JSON list of rules); their counters
    /// start at zero.
    pub async fn set_faults(&self, rules: &Value) -> Result<()> {
        let r = self.http.post("/_sim/faults", Some(rules)).await?;
        if r.status != 200 {
            bail!("setting faults: {} {}", r.status, r.text());
        }
        Ok(())
    }

    /// The active fault rules with their `seen` and `fired` counters (`GET /_sim/faults`).
    pub async fn faults(&self) -> Result<Vec<Value>> {
        let v: Value = self.http.get("/_sim/faults").await?.json()?;
        Ok(v["rules"].as_array().cloned().unwrap_or_default())
    }

    /// Removes every fault rule (`DELETE /_sim/faults`).
    pub async fn clear_faults(&self) -> Result<()> {
        let r = self.http.request("DELETE", "/_sim/faults", None).await?;
        if r.status != 200 {
            bail!("clearing faults: {} {}", r.status, r.text());
        }
        Ok(())
    }

    /// POST to an admin path (e.g. `/_sim/enrollments/ID/issue`) and return the raw response.
    pub async fn admin_post(&self, path: &str, body: Option<&Value>) -> Result<Response> {
        self.http.post(path, body).await
    }

    /// Its log so far.
    pub fn logs(&self) -> String {
        self.process.logs()
    }

    /// SIGTERM and bounded wait, for outage tests.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.process.stop(STOP_GRACE)
    }

    /// SIGKILL, for crash tests.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        self.process.kill()
    }
}

fn keep_dir_note(dir: &Path) {
    eprintln!("[e2e] command-sim dir kept: {}", dir.display());
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.process.kill();
        if keep_requested() || std::thread::panicking() {
            eprintln!(
                "[e2e] keeping command-sim dir {} (sim.log); last lines:\n{}",
                self.dir.display(),
                self.process.log_tail(20)
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Sim {
    /// Starts with a configuration given as JSON (e.g. the default one with extra users),
    /// written to a temporary file that is removed once the simulator has read it.
    pub async fn start_with_config_json(config: &Value) -> Result<Self> {
        let dir = crate::paths::fresh_temp_dir("command-sim-config")?;
        let path = dir.join("config.json");
        std::fs::write(&path, serde_json::to_vec_pretty(config)?)
            .with_context(|| format!("writing {}", path.display()))?;
        let sim = Self::start(&path).await;
        let _ = std::fs::remove_dir_all(&dir);
        sim
    }

    /// The default configuration (`tests/command-sim/config/default.json`) as JSON, to derive
    /// a variant for [`Sim::start_with_config_json`].
    pub fn default_config_json() -> Result<Value> {
        let path = crate::paths::default_sim_config();
        Ok(serde_json::from_str(&read(&path)?)?)
    }

    /// Every token request recorded (`GET /_sim/token-requests`).
    pub async fn token_requests(&self) -> Result<Vec<Value>> {
        self.http.get("/_sim/token-requests").await?.json()
    }

    /// API requests whose `Authorization` header presented `caller` (Basic user name or bearer
    /// token subject), oldest first, to attribute calls to an issuer with its own credentials.
    pub async fn requests_from(&self, caller: &str) -> Result<Vec<Value>> {
        Ok(self
            .requests()
            .await?
            .into_iter()
            .filter(|r| r["caller"] == caller)
            .collect())
    }

    /// Sequence number of the newest recorded API request (0 when none), a mark to find the
    /// requests that arrive after it.
    pub async fn last_request_seq(&self) -> Result<u64> {
        Ok(self
            .requests()
            .await?
            .iter()
            .filter_map(|r| r["seq"].as_u64())
            .max()
            .unwrap_or(0))
    }

    /// Sets `expires_in` (and the JWT lifetime) of tokens minted from now on for an OAuth
    /// client (`POST /_sim/oauth-clients/{id}/lifetime`); any u64, e.g. 2^63.
    pub async fn set_token_lifetime(&self, client_id: &str, secs: u64) -> Result<()> {
        let r = self
            .http
            .post(
                &format!("/_sim/oauth-clients/{client_id}/lifetime"),
                Some(&serde_json::json!({ "secs": secs })),
            )
            .await?;
        if r.status != 200 {
            bail!("setting the token lifetime: {} {}", r.status, r.text());
        }
        Ok(())
    }
}

/// The metadata fields the controller fills itself; an issuer whose Command has all of them
/// gets `SupportsMetadata=True` (product.md §11).
pub const CONTROLLER_METADATA_FIELDS: [&str; 7] = [
    "Controller-Namespace",
    "Controller-Kind",
    "Controller-Resource-Group-Name",
    "Issuer-Name",
    "Issuer-Namespace",
    "Controller-Reconcile-Id",
    "Certificate-Signing-Request-Namespace",
];

/// Lower-case hex SHA-256 of a CSR's DER, the key the simulator counts enrollments by.
pub fn csr_sha256(csr_der: &[u8]) -> String {
    Sha256::digest(csr_der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Sim {
    /// Removes [`CONTROLLER_METADATA_FIELDS`] from a configuration (see
    /// [`Sim::default_config_json`]), so issuers pointed at it get `SupportsMetadata=False`
    /// and enrollments carry no `Controller-Reconcile-Id` to be found by.
    pub fn remove_controller_metadata_fields(config: &mut Value) -> Result<()> {
        let fields = config["metadata_fields"]
            .as_array_mut()
            .context("configuration without metadata_fields")?;
        fields.retain(|f| {
            !f["name"]
                .as_str()
                .is_some_and(|n| CONTROLLER_METADATA_FIELDS.contains(&n))
        });
        Ok(())
    }

    /// Adds a template `short_name` (a copy of the first template, id 99) whose requests Command
    /// holds for approval (`mode: pending`) until `POST /_sim/enrollments/{id}/issue`.
    pub fn add_held_template(config: &mut Value, short_name: &str) -> Result<()> {
        let templates = config["templates"]
            .as_array_mut()
            .context("configuration without templates")?;
        let mut held = templates
            .first()
            .cloned()
            .context("configuration without a template")?;
        held["id"] = serde_json::json!(99);
        held["short_name"] = serde_json::json!(short_name);
        held["mode"] = serde_json::json!("pending");
        templates.push(held);
        Ok(())
    }

    /// The enrollment records of one CSR (by the SHA-256 of its DER), oldest first.
    pub async fn enrollments_of(&self, csr_der: &[u8]) -> Result<Vec<Value>> {
        let sha = csr_sha256(csr_der);
        Ok(self
            .enrollments()
            .await?
            .into_iter()
            .filter(|e| e["csr_sha256"] == sha.as_str())
            .collect())
    }
}
