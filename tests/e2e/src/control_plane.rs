//! A real etcd + kube-apiserver + kube-controller-manager on loopback, one per test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::http::HttpClient;
use crate::k8s::{client_from_kubeconfig, ensure_namespace};
use crate::paths::{cert_manager_crds, fresh_temp_dir, keep_requested, tool_path};
use crate::pki::ControlPlanePki;
use crate::process::{free_ports, ManagedProcess, STOP_GRACE};
use crate::wait::{log, try_wait_for};

/// Bound on etcd becoming healthy.
pub const ETCD_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on kube-apiserver's /readyz (3–4 s measured; generous for loaded CI machines).
pub const APISERVER_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound on the CRDs becoming Established and the controller-manager acting.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound on one kubectl invocation.
pub const KUBECTL_TIMEOUT: Duration = Duration::from_secs(120);

/// How long each start-up phase took, for the timing log line and the README.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartTimings {
    /// PKI generation.
    pub pki: Duration,
    /// etcd spawn → healthy.
    pub etcd: Duration,
    /// kube-apiserver spawn → /readyz ok.
    pub apiserver: Duration,
    /// CRD apply → all Established.
    pub crds: Duration,
    /// controller-manager spawn → `default` ServiceAccount created (after the CRDs).
    pub controller_manager: Duration,
    /// Whole `start()`.
    pub total: Duration,
}

/// Credentials in a generated kubeconfig.
enum Credentials<'a> {
    ClientCert { cert_pem: &'a str, key_pem: &'a str },
    Token(&'a str),
}

/// A running local control plane; dropping it stops everything and removes its work dir.
pub struct ControlPlane {
    dir: PathBuf,
    pki: ControlPlanePki,
    etcd_port: u16,
    api_port: u16,
    admin_kubeconfig: PathBuf,
    client: Client,
    apiserver_args: Vec<String>,
    etcd: Option<ManagedProcess>,
    apiserver: Option<ManagedProcess>,
    kcm: Option<ManagedProcess>,
    timings: StartTimings,
    keep: bool,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("dir", &self.dir)
            .field("api_port", &self.api_port)
            .field("etcd_port", &self.etcd_port)
            .finish()
    }
}

fn write_kubeconfig(path: &Path, server: &str, ca_pem: &str, creds: Credentials<'_>) -> Result<()> {
    let user = match creds {
        Credentials::ClientCert { cert_pem, key_pem } => json!({
            "client-certificate-data": B64.encode(cert_pem),
            "client-key-data": B64.encode(key_pem),
        }),
        Credentials::Token(t) => json!({"token": t}),
    };
    let kc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {
            "server": server,
            "certificate-authority-data": B64.encode(ca_pem),
        }}],
        "users": [{"name": "e2e-user", "user": user}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e-user"}}],
        "current-context": "e2e",
    });
    std::fs::write(path, serde_yaml::to_string(&kc)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Runs kubectl with `kubeconfig`, optional stdin, bounded by [`KUBECTL_TIMEOUT`].
pub async fn run_kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&[u8]>) -> Result<Output> {
    let mut cmd = tokio::process::Command::new(tool_path("kubectl")?);
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().context("spawning kubectl")?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(data).await?;
        drop(pipe);
    }
    tokio::time::timeout(KUBECTL_TIMEOUT, child.wait_with_output())
        .await
        .with_context(|| format!("kubectl {args:?} timed out"))?
        .context("waiting for kubectl")
}

fn check_output(args: &[&str], out: Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "kubectl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager on free loopback ports, writes the
    /// admin kubeconfig and installs the cert-manager CRDs, so a test gets a real cluster API.
    pub async fn start() -> Result<Self> {
        Self::start_with_crds(&[]).await
    }

    /// Like [`ControlPlane::start`], also applying `extra_crds` (files or dirs, e.g. `<repo>/crds`)
    /// before the controller-manager starts, so garbage collection knows those kinds at once.
    pub async fn start_with_crds(extra_crds: &[&Path]) -> Result<Self> {
        let t0 = Instant::now();
        let mut timings = StartTimings::default();
        let dir = fresh_temp_dir("command-issuer-e2e")?;
        log(format!("control plane work dir {}", dir.display()));
        let tp = Instant::now();
        let pki = ControlPlanePki::generate(&dir.join("pki"))?;
        timings.pki = tp.elapsed();
        let ports = free_ports(3)?;
        let (etcd_port, etcd_peer_port, api_port) = (ports[0], ports[1], ports[2]);

        let server = format!("https://127.0.0.1:{api_port}");
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        write_kubeconfig(
            &admin_kubeconfig,
            &server,
            &pki.ca_pem,
            Credentials::ClientCert {
                cert_pem: &pki.admin_crt_pem,
                key_pem: &pki.admin_key_pem,
            },
        )?;
        let client = client_from_kubeconfig(&admin_kubeconfig).await?;

        let apiserver_args = vec![
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", dir.join("apiserver-certs").display()),
            format!("--tls-cert-file={}", pki.apiserver_crt.display()),
            format!("--tls-private-key-file={}", pki.apiserver_key.display()),
            format!("--client-ca-file={}", pki.ca_crt.display()),
            format!("--service-account-issuer={server}"),
            format!("--service-account-key-file={}", pki.sa_pub.display()),
            format!(
                "--service-account-signing-key-file={}",
                pki.sa_key.display()
            ),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--endpoint-reconciler-type=none".into(),
            "--authorization-mode=RBAC".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
            "--allow-privileged=true".into(),
            // Bound a graceful stop: open watches (kcm, cert-manager, the controller) would
            // otherwise hold the shutdown for the 60 s server shutdown timeout.
            "--shutdown-watch-termination-grace-period=2s".into(),
        ];

        let mut cp = Self {
            dir,
            pki,
            etcd_port,
            api_port,
            admin_kubeconfig,
            client,
            apiserver_args,
            etcd: None,
            apiserver: None,
            kcm: None,
            timings,
            // Kept if start() fails part-way, so the component logs survive for diagnosis.
            keep: true,
        };

        // etcd: single member, loopback only, no fsync (throw-away data).
        let te = Instant::now();
        let mut etcd = Command::new(tool_path("etcd")?);
        etcd.args(["--name", "e2e", "--data-dir"])
            .arg(cp.dir.join("etcd"))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"))
            .arg(format!(
                "--advertise-client-urls=http://127.0.0.1:{etcd_port}"
            ))
            .arg(format!(
                "--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}"
            ))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}"
            ))
            .arg(format!(
                "--initial-cluster=e2e=http://127.0.0.1:{etcd_peer_port}"
            ))
            .args(["--unsafe-no-fsync", "--log-level", "warn"]);
        cp.etcd = Some(ManagedProcess::spawn(
            "etcd",
            etcd,
            &cp.dir.join("etcd.log"),
        )?);
        cp.wait_etcd().await?;
        cp.timings.etcd = te.elapsed();

        cp.start_apiserver().await?;

        // CRDs before the controller-manager, so its garbage collector's REST mapper knows the
        // CRD kinds from the start (it rediscovers only every 30 s).
        let tc = Instant::now();
        cp.install_crds(extra_crds).await?;
        cp.timings.crds = tc.elapsed();

        let tk = Instant::now();
        let mut kcm = Command::new(tool_path("kube-controller-manager")?);
        kcm.arg("--kubeconfig").arg(&cp.admin_kubeconfig).args([
            "--controllers=namespace,garbagecollector,serviceaccount",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
        ]);
        cp.kcm = Some(ManagedProcess::spawn(
            "kube-controller-manager",
            kcm,
            &cp.dir.join("kube-controller-manager.log"),
        )?);
        cp.wait_controller_manager().await?;
        cp.timings.controller_manager = tk.elapsed();
        cp.timings.total = t0.elapsed();
        cp.keep = false;
        let t = cp.timings;
        log(format!(
            "control plane ready in {:.2?} (pki {:.2?}, etcd {:.2?}, apiserver {:.2?}, crds {:.2?}, controller-manager {:.2?}) on 127.0.0.1:{api_port}",
            t.total, t.pki, t.etcd, t.apiserver, t.crds, t.controller_manager
        ));
        Ok(cp)
    }

    async fn wait_etcd(&mut self) -> Result<()> {
        let http = HttpClient::plain(&format!("127.0.0.1:{}", self.etcd_port));
        let etcd = self.etcd.as_mut().expect("etcd spawned");
        try_wait_for(ETCD_TIMEOUT, "etcd /health", || {
            let ok = etcd.ensure_running();
            let http = http.clone();
            async move {
                ok?;
                Ok(http
                    .get("/health")
                    .await
                    .ok()
                    .filter(|r| r.status == 200 && r.text().contains("true"))
                    .map(|_| ()))
            }
        })
        .await
    }

    async fn wait_apiserver_ready(&mut self) -> Result<()> {
        let client = self.client.clone();
        let apiserver = self.apiserver.as_mut().expect("apiserver spawned");
        try_wait_for(APISERVER_TIMEOUT, "kube-apiserver /readyz", || {
            let ok = apiserver.ensure_running();
            let client = client.clone();
            async move {
                ok?;
                let req = ::http::Request::get("/readyz").body(Vec::new())?;
                let res =
                    tokio::time::timeout(Duration::from_secs(5), client.request_text(req)).await;
                Ok(matches!(res, Ok(Ok(body)) if body.trim() == "ok").then_some(()))
            }
        })
        .await
    }

    async fn install_crds(&self, extra: &[&Path]) -> Result<()> {
        let crds = cert_manager_crds();
        if !crds.is_file() {
            bail!(
                "cert-manager CRDs not found at {} (set CERT_MANAGER_CRDS)",
                crds.display()
            );
        }
        let mut files = vec![crds.to_string_lossy().into_owned()];
        files.extend(extra.iter().map(|p| p.to_string_lossy().into_owned()));
        let mut apply = vec!["apply"];
        let mut wait = vec!["wait", "--for=condition=Established", "--timeout=90s"];
        for f in &files {
            apply.extend(["-f", f.as_str()]);
            wait.extend(["-f", f.as_str()]);
        }
        self.kubectl_ok(&apply).await?;
        self.kubectl_ok(&wait).await?;
        Ok(())
    }

    async fn wait_controller_manager(&mut self) -> Result<()> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), "default");
        let kcm = self.kcm.as_mut().expect("kcm spawned");
        try_wait_for(
            SETTLE_TIMEOUT,
            "kube-controller-manager to create the `default` ServiceAccount",
            || {
                let ok = kcm.ensure_running();
                let api = api.clone();
                async move {
                    ok?;
                    Ok(api.get_opt("default").await.ok().flatten().map(|_| ()))
                }
            },
        )
        .await
    }

    /// Stops kube-apiserver (SIGTERM, bounded wait) keeping etcd, for API-outage fault tests.
    pub fn stop_apiserver(&mut self) -> Result<()> {
        let Some(mut p) = self.apiserver.take() else {
            bail!("kube-apiserver is not running");
        };
        let t = Instant::now();
        let status = p.stop(STOP_GRACE);
        log(format!(
            "kube-apiserver stopped in {:.2?} ({})",
            t.elapsed(),
            crate::process::describe(status)
        ));
        Ok(())
    }

    /// Starts kube-apiserver on the same port and etcd and waits for /readyz, after a stop.
    pub async fn start_apiserver(&mut self) -> Result<()> {
        if self.apiserver.is_some() {
            bail!("kube-apiserver is already running");
        }
        let t = Instant::now();
        let mut cmd = Command::new(tool_path("kube-apiserver")?);
        cmd.args(&self.apiserver_args);
        self.apiserver = Some(ManagedProcess::spawn(
            "kube-apiserver",
            cmd,
            &self.dir.join("kube-apiserver.log"),
        )?);
        self.wait_apiserver_ready().await?;
        self.timings.apiserver = t.elapsed();
        log(format!(
            "kube-apiserver ready on 127.0.0.1:{} in {:.2?}",
            self.api_port,
            t.elapsed()
        ));
        Ok(())
    }

    /// Keep the work dir and logs after drop even if the test passes (tests returning `Err`
    /// instead of panicking can call this before returning).
    pub fn keep_on_drop(&mut self, keep: bool) {
        self.keep = keep;
    }

    /// Admin client (system:masters), for test setup and assertions.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A fresh admin client (new connection pool), e.g. after an apiserver restart.
    pub async fn new_client(&self) -> Result<Client> {
        client_from_kubeconfig(&self.admin_kubeconfig).await
    }

    /// Path of the admin kubeconfig (certs embedded), for kubectl, helm and cert-manager.
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// Work dir holding PKI, kubeconfigs and component logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Port of the apiserver on 127.0.0.1.
    pub fn api_port(&self) -> u16 {
        self.api_port
    }

    /// `https://127.0.0.1:PORT`, the apiserver URL.
    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }

    /// PEM of the cluster CA, for clients that need to trust the apiserver.
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    /// Start-up timings of this control plane.
    pub fn timings(&self) -> StartTimings {
        self.timings
    }

    /// Log file of a component (`etcd`, `kube-apiserver`, `kube-controller-manager`).
    pub fn log_path(&self, component: &str) -> PathBuf {
        self.dir.join(format!("{component}.log"))
    }

    /// Runs kubectl as admin and returns its output whatever the exit status.
    pub async fn kubectl(&self, args: &[&str]) -> Result<Output> {
        run_kubectl(&self.admin_kubeconfig, args, None).await
    }

    /// Runs kubectl as admin, failing with its stderr on a non-zero exit; returns stdout.
    pub async fn kubectl_ok(&self, args: &[&str]) -> Result<String> {
        check_output(args, self.kubectl(args).await?)
    }

    /// `kubectl apply -f -` of a YAML string (one or more documents), as admin.
    pub async fn apply_yaml(&self, yaml: &str) -> Result<String> {
        let args = ["apply", "-f", "-"];
        check_output(
            &args,
            run_kubectl(&self.admin_kubeconfig, &args, Some(yaml.as_bytes())).await?,
        )
    }

    /// `kubectl apply -f PATH` of a file or directory, as admin.
    pub async fn apply_file(&self, path: &Path) -> Result<String> {
        let p = path.to_string_lossy();
        self.kubectl_ok(&["apply", "-f", &p]).await
    }

    /// Creates a namespace (idempotent).
    pub async fn create_namespace(&self, name: &str) -> Result<()> {
        ensure_namespace(&self.client, name).await
    }

    /// A kubeconfig acting as ServiceAccount `ns/sa` (token from TokenRequest, 2h), creating the
    /// namespace and ServiceAccount if missing, so tests can prove RBAC with a non-admin identity.
    pub async fn service_account_kubeconfig(&self, ns: &str, sa: &str) -> Result<PathBuf> {
        self.create_namespace(ns).await?;
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
        let obj: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": sa}}))?;
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_already_exists() => {}
            Err(e) => return Err(e).with_context(|| format!("creating ServiceAccount {ns}/{sa}")),
        }
        let token = self
            .kubectl_ok(&["-n", ns, "create", "token", sa, "--duration=2h"])
            .await?;
        let token = token.trim();
        if token.is_empty() {
            bail!("kubectl create token returned an empty token for {ns}/{sa}");
        }
        let path = self.dir.join(format!("sa-{ns}-{sa}.kubeconfig"));
        write_kubeconfig(
            &path,
            &self.server_url(),
            &self.pki.ca_pem,
            Credentials::Token(token),
        )?;
        Ok(path)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Evidence for the suite-wide secret-leak sweep, while the apiserver still answers.
        crate::sweep::collect(&self.dir, &self.admin_kubeconfig);
        // Reverse start order, each reaped before the next, so the apiserver never logs a
        // storm of etcd errors and no process outlives the test.
        for p in [self.kcm.take(), self.apiserver.take(), self.etcd.take()]
            .into_iter()
            .flatten()
        {
            let mut p = p;
            p.kill();
        }
        let panicking = std::thread::panicking();
        if keep_requested() || panicking || self.keep {
            eprintln!(
                "[e2e] keeping control-plane work dir {} (logs: etcd.log, kube-apiserver.log, kube-controller-manager.log){}",
                self.dir.display(),
                if panicking {
                    " because the test panicked"
                } else if self.keep {
                    " (start-up failed or keep requested)"
                } else {
                    ""
                }
            );
        } else if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("[e2e] could not remove {}: {e}", self.dir.display());
        }
    }
}
