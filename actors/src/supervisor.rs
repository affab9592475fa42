//! Supervisor: builds the bounded kube client, wires every actor (each holds only the
//! recipients it sends to), starts the watchers under actix `Supervisor` so an ended stream
//! restarts, serves the probes, and runs until SIGTERM/SIGINT. A panic anywhere ends the
//! process (see `main.rs`), so no actor can be silently gone.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use actix::{Actor, AsyncContext, Context, Supervisor};
use anyhow::Context as _;
use command_issuer::api::{ClusterIssuer, Issuer};
use command_issuer::metrics::Metrics;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use crate::apiserver::bounded_config;
use crate::enroll::enroller::Enroller;
use crate::enroll::lifecycle::Drain;
use crate::enroll::EnrollContext;
use crate::flags::{Flags, Settings};
use crate::http::{self, Liveness, Readiness};
use crate::issuer::registry::{IssuerNews, Registry};
use crate::issuer::{ProbeDeps, CONCURRENT_CHECKS};
use crate::leader::LeaderElector;
use crate::status_writer::StatusWriter;
use crate::watch::issuers::{IssuerEvents, IssuerWatcher};
use crate::watch::references::ReferenceWatcher;
use crate::watch::requests::{RequestEvents, RequestWatcher};

/// How long SIGTERM waits for attempts under way; the chart's grace period (30 s) is longer.
const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(25);

async fn kube_client(flags: &Flags) -> anyhow::Result<Client> {
    let config = match &flags.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .context("loading kubeconfig")?
        }
        None => {
            Config::incluster().context("in-cluster config (use --kubeconfig out of cluster)")?
        }
    };
    Client::try_from(bounded_config(config)).context("building the Kubernetes client")
}

/// Starts the actor system and blocks until a termination signal.
pub async fn run(flags: Flags, settings: Settings) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube_client(&flags).await?;
    let version = client
        .apiserver_version()
        .await
        .context("contacting the apiserver")?;
    let settings = Arc::new(settings);
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());
    let leading = Arc::new(AtomicBool::new(!flags.leader_elect));
    metrics.leader.set(i64::from(!flags.leader_elect));
    info!(
        apiserver = %version.git_version, cluster_resource_namespace = %settings.cluster_resource_namespace,
        concurrency = settings.concurrency, per_issuer_concurrency = settings.per_issuer_concurrency,
        approval_check = settings.check_approval,
        secret_access_at_cluster_level = settings.secret_access_at_cluster_level, "starting command-issuer"
    );
    let instance = std::env::var("POD_NAME")
        .unwrap_or_else(|_| format!("command-issuer-{}", std::process::id()));
    let writer = StatusWriter::new(
        client.clone(),
        instance.clone(),
        metrics.clone(),
        leading.clone(),
    )
    .start();

    // The enroller and the registry tell each other things: build the enroller's context
    // first so the registry can be given its address.
    let enroller_ctx = Context::<Enroller>::new();
    let enroller_addr = enroller_ctx.address();
    let registry = Registry::new(
        ProbeDeps {
            client: client.clone(),
            settings: settings.clone(),
            writer: writer.clone().recipient(),
            metrics: metrics.clone(),
            leading: leading.clone(),
            checks: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_CHECKS)),
        },
        IssuerNews {
            ready: enroller_addr.clone().recipient(),
            gone: enroller_addr.clone().recipient(),
        },
    )
    .start();
    let enroller = enroller_ctx.run(Enroller::new(EnrollContext {
        client: client.clone(),
        settings: settings.clone(),
        registry: registry.clone().recipient(),
        writer: writer.clone().recipient(),
        metrics: metrics.clone(),
        leading: leading.clone(),
    }));

    let events = IssuerEvents {
        upserted: registry.clone().recipient(),
        deleted: registry.clone().recipient(),
        listed: registry.clone().recipient(),
    };
    let (c, e, rd) = (client.clone(), events.clone(), readiness.clone());
    Supervisor::start(move |_| IssuerWatcher::<Issuer>::new(c, e, rd));
    let (c, e, rd) = (client.clone(), events, readiness.clone());
    Supervisor::start(move |_| IssuerWatcher::<ClusterIssuer>::new(c, e, rd));
    let secret_ns = (!settings.secret_access_at_cluster_level)
        .then(|| settings.cluster_resource_namespace.clone());
    let (c, r) = (client.clone(), registry.clone().recipient());
    Supervisor::start(move |_| ReferenceWatcher::<Secret>::new(c, secret_ns, r));
    let cm_ns = (!settings.configmap_access_at_cluster_level
        && !settings.secret_access_at_cluster_level)
        .then(|| settings.cluster_resource_namespace.clone());
    let (c, r) = (client.clone(), registry.clone().recipient());
    Supervisor::start(move |_| ReferenceWatcher::<ConfigMap>::new(c, cm_ns, r));
    let sink = RequestEvents {
        enroll: enroller.clone().recipient(),
        forget: enroller.clone().recipient(),
    };
    let (c, check, rd) = (client.clone(), settings.check_approval, readiness.clone());
    let requests = Supervisor::start(move |_| RequestWatcher::new(c, sink, check, rd));

    let mut liveness = Liveness {
        actors: vec![
            ("enroller", enroller.clone().recipient()),
            ("registry", registry.clone().recipient()),
            ("status writer", writer.recipient()),
            ("request watcher", requests.clone().recipient()),
        ],
    };
    if flags.leader_elect {
        let ns = flags
            .leader_election_namespace
            .clone()
            .unwrap_or_else(|| settings.cluster_resource_namespace.clone());
        let identity = format!("{instance}_{}", uuid::Uuid::new_v4());
        let listeners = vec![
            enroller.clone().recipient(),
            registry.clone().recipient(),
            requests.recipient(),
        ];
        let (c, l, m) = (client.clone(), leading.clone(), metrics.clone());
        let elector = LeaderElector::new(c, &ns, identity, l, m, listeners).start();
        liveness
            .actors
            .push(("leader elector", elector.recipient()));
    }
    http::start(
        http::parse_bind(&flags.health_probe_bind_address)?,
        http::parse_bind(&flags.metrics_bind_address)?,
        readiness,
        Arc::new(liveness),
        metrics,
    )?;

    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received; stopping"),
        _ = int.recv() => info!("SIGINT received; stopping"),
    }
    // Calls to Command already sent are let finish (and their answers written) so nothing is
    // left uncertain, within the pod's grace period; then the process ends.
    match tokio::time::timeout(DRAIN_DEADLINE, enroller.send(Drain)).await {
        Ok(_) => info!("every attempt under way finished; exiting"),
        Err(_) => warn!(deadline_secs = DRAIN_DEADLINE.as_secs(), "attempts still under way at the drain deadline; exiting (the next leader looks them up)"),
    }
    actix::System::current().stop();
    Ok(())
}
