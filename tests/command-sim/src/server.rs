//! HTTPS listener, per-request dispatch (API vs admin), request logging and `ready.json`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::{Deserialize, Serialize};

use crate::config::{Config, ConfigError};
use crate::errors::empty_response;
use crate::jwt::KeyError;
use crate::pki::{Pki, PkiError};
use crate::state::{now_rfc3339, AppState, RequestRecord};
use crate::{admin, api, entra, faults, gce, idp};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Why the simulator could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Configuration problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Certificate problem.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// Token signing key problem.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// File or socket problem.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Underlying error.
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SimError {
    let context = context.into();
    move |source| SimError::Io { context, source }
}

/// Start-up options (the CLI flags).
#[derive(Debug, Clone)]
pub struct Options {
    /// Configuration file.
    pub config: PathBuf,
    /// Listen address, loopback (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// Directory for `ready.json` and the PEM files.
    pub state_dir: PathBuf,
    /// Directory holding (or receiving) a persisted root/issuing CA.
    pub pki_dir: Option<PathBuf>,
    /// Loopback address of the plain-HTTP GKE metadata server; `None` = not served.
    pub gce_metadata_listen: Option<String>,
}

/// Contents of `ready.json`, written once the listener is bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// Bound port.
    pub port: u16,
    /// PEM file of the TLS CA to trust.
    pub tls_ca: String,
    /// PEM file of the issuing PKI's root CA.
    pub pki_root: String,
    /// PEM file of the issuing CA.
    pub pki_issuing: String,
    /// `127.0.0.1:PORT` of the GKE metadata server, when `--gce-metadata-listen` was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gce_metadata: Option<String>,
}

/// A started simulator.
pub struct Running {
    /// What was written to `ready.json`.
    pub ready: Ready,
    /// Handle to stop the server.
    pub handle: ServerHandle,
    /// Completes when the server stops.
    pub join: actix_rt::task::JoinHandle<std::io::Result<()>>,
}

/// Writes a file atomically (temporary file in the same directory, then rename).
pub fn write_atomic(path: &Path, contents: &str) -> Result<(), SimError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, contents).map_err(io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("rename to {}", path.display())))
}

/// Loads config and PKI, binds the HTTPS listener, writes the PEM files and `ready.json`, and
/// spawns the server on the current actix runtime.
pub async fn start(opts: Options) -> Result<Running, SimError> {
    let config = Config::load(&opts.config)?;
    std::fs::create_dir_all(&opts.state_dir)
        .map_err(io(format!("create state dir {}", opts.state_dir.display())))?;
    let state_dir = std::fs::canonicalize(&opts.state_dir)
        .map_err(io(format!("resolve {}", opts.state_dir.display())))?;
    let pki = Pki::load_or_generate(opts.pki_dir.as_deref(), &config.tls_hostnames)?;
    let tls = pki.rustls_server_config()?;

    let tls_ca = state_dir.join("tls-ca.pem");
    let pki_root = state_dir.join("root.pem");
    let pki_issuing = state_dir.join("issuing.pem");
    write_atomic(&tls_ca, &pki.tls_ca_pem)?;
    write_atomic(&pki_root, &pki.root_pem)?;
    write_atomic(&pki_issuing, &pki.issuing_pem)?;

    let listener = std::net::TcpListener::bind(opts.listen.as_str())
        .map_err(io(format!("bind {}", opts.listen)))?;
    let addr: SocketAddr = listener
        .local_addr()
        .map_err(io(format!("bind {}", opts.listen)))?;
    let gce_listener = match &opts.gce_metadata_listen {
        Some(a) => Some(
            std::net::TcpListener::bind(a.as_str())
                .map_err(io(format!("bind GCE metadata listener {a}")))?,
        ),
        None => None,
    };
    let gce_addr = match &gce_listener {
        Some(l) => Some(
            l.local_addr()
                .map_err(io("GCE metadata listener address"))?,
        ),
        None => None,
    };

    let state = web::Data::new(AppState::new(config, pki, format!("https://{addr}"))?);
    let app_state = state.clone();
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .default_service(web::to(dispatch))
    })
    .workers(2)
    .shutdown_timeout(2)
    .listen_rustls_0_23(listener, tls)
    .map_err(io(format!("listen {}", opts.listen)))?;
    if let Some(l) = gce_listener {
        server = server
            .listen(l)
            .map_err(io("listen GCE metadata listener"))?;
    }
    let server = server.run();
    let handle = server.handle();
    let join = actix_rt::spawn(server);

    let ready = Ready {
        url: format!("https://{addr}"),
        port: addr.port(),
        tls_ca: tls_ca.display().to_string(),
        pki_root: pki_root.display().to_string(),
        pki_issuing: pki_issuing.display().to_string(),
        gce_metadata: gce_addr.map(|a| a.to_string()),
    };
    let text = serde_json::to_string_pretty(&ready).unwrap_or_default();
    write_atomic(&state_dir.join("ready.json"), &text)?;
    tracing::info!(
        url = %ready.url,
        base_path = %state.config.base(),
        version = %state.product_version,
        gce_metadata = ready.gce_metadata.as_deref().unwrap_or("-"),
        "command-sim ready"
    );
    Ok(Running {
        ready,
        handle,
        join,
    })
}

/// Starts the simulator and serves until it is stopped (SIGINT/SIGTERM).
pub async fn run(opts: Options) -> Result<(), SimError> {
    let running = start(opts).await?;
    match running.join.await {
        Ok(result) => result.map_err(io("server")),
        Err(e) => Err(SimError::Io {
            context: "server task".into(),
            source: std::io::Error::other(e.to_string()),
        }),
    }
}

fn redacted_headers(req: &HttpRequest) -> BTreeMap<String, String> {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in req.headers() {
        let name = name.as_str().to_ascii_lowercase();
        let value = if name == "authorization" || name == "proxy-authorization" {
            "<redacted>".to_string()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        headers
            .entry(name)
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    headers
}

fn under(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Every request lands here: the GKE metadata server (plain listener), admin API, identity
/// providers, Keyfactor API under the base path, or 404. Fault rules (`/_sim/faults`) are
/// consulted before the Command API and the token endpoints run.
async fn dispatch(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let started = Instant::now();
    let path = req.path();
    let is_gce = !req.app_config().secure();
    let is_admin = !is_gce && (path.starts_with(admin::PREFIX) || path == "/_sim");
    let is_token = !is_gce && !is_admin && (under(path, idp::PREFIX) || under(path, entra::PREFIX));
    let sub_path = if is_gce || is_admin || is_token {
        None
    } else {
        api::strip_base(path, state.config.base())
    };
    let fault_target = match (is_token, sub_path) {
        (true, _) => Some((faults::Target::Token, path)),
        (false, Some(sub)) => Some((faults::Target::Api, sub)),
        (false, None) => None,
    };
    let fault = fault_target.and_then(|(t, p)| state.faults.fire(t, req.method(), p));
    let early = match (&fault, fault_target) {
        (Some(rule), Some((target, _))) => faults::before(&state, rule, target).await,
        _ => None,
    };
    let resp = if let Some(resp) = early {
        resp
    } else if is_gce {
        gce::handle(&state, &req)
    } else if is_admin {
        admin::handle(&state, &req, &body)
    } else if under(path, idp::PREFIX) {
        idp::handle(&state, &req, &body)
    } else if under(path, entra::PREFIX) {
        entra::handle(&state, &req, &body)
    } else {
        match sub_path {
            Some(sub_path) => api::handle(&state, &req, &body, sub_path, fault.as_ref()),
            None => empty_response(StatusCode::NOT_FOUND, &state.product_version),
        }
    };
    let resp = faults::after(fault.as_ref(), started, resp).await;
    if !is_gce && !is_admin && !is_token {
        state.logs().push_request(RequestRecord {
            seq: 0,
            time: now_rfc3339(),
            method: req.method().to_string(),
            path: path.to_string(),
            query: req.query_string().to_string(),
            headers: redacted_headers(&req),
            caller: crate::auth::presented_caller(req.headers()),
            body: String::from_utf8_lossy(&body).into_owned(),
            status: resp.status().as_u16(),
            fault: fault.as_ref().map(|r| r.kind.name().to_string()),
        });
    }
    tracing::info!(
        method = %req.method(),
        path = %path,
        status = resp.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        admin = is_admin,
        gce = is_gce,
        fault = fault.as_ref().map_or("-", |r| r.kind.name()),
        "request"
    );
    resp
}
