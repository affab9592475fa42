//! Supervisor: builds the kube client, starts every actor (watchers under actix `Supervisor`
//! so a failed stream restarts), and runs until SIGTERM/SIGINT.

use std::sync::Arc;

use actix::{Actor, Supervisor};
use anyhow::Context as _;
use command_issuer::api::{ClusterIssuer, Issuer};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;

use crate::enroller::{Enroller, EnrollerDeps};
use crate::flags::{Flags, Settings};
use crate::http::{self, Readiness};
use crate::leader::LeaderElector;
use crate::probe::ProbeDeps;
use crate::registry::{Registry, SetEnroller};
use crate::status_writer::StatusWriter;
use crate::watchers::{IssuerWatcher, ReferenceWatcher, RequestWatcher};
use command_issuer::metrics::Metrics;
use std::sync::atomic::AtomicBool;

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
    Client::try_from(config).context("building the Kubernetes client")
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
    http::start(
        http::parse_bind(&flags.health_probe_bind_address)?,
        http::parse_bind(&flags.metrics_bind_address)?,
        readiness.clone(),
        metrics.clone(),
    )?;
    let leading = Arc::new(AtomicBool::new(!flags.leader_elect));
    metrics.leader.set(i64::from(!flags.leader_elect));
    info!(
        apiserver = %version.git_version, cluster_resource_namespace = %settings.cluster_resource_namespace,
        concurrency = settings.concurrency, approval_check = settings.check_approval,
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
    let registry = Registry::new(ProbeDeps {
        client: client.clone(),
        settings: settings.clone(),
        writer: writer.clone(),
        metrics: metrics.clone(),
        leading: leading.clone(),
    })
    .start();
    let enroller = Enroller::new(EnrollerDeps {
        client: client.clone(),
        settings: settings.clone(),
        registry: registry.clone(),
        writer,
        metrics: metrics.clone(),
        leading: leading.clone(),
    })
    .start();
    registry.do_send(SetEnroller(enroller.clone()));
    if flags.leader_elect {
        let ns = flags
            .leader_election_namespace
            .clone()
            .unwrap_or_else(|| settings.cluster_resource_namespace.clone());
        let identity = format!("{instance}_{}", uuid::Uuid::new_v4());
        let listeners = vec![enroller.clone().recipient(), registry.clone().recipient()];
        let (c, l, m) = (client.clone(), leading.clone(), metrics.clone());
        LeaderElector::new(c, &ns, identity, l, m, listeners).start();
    }

    let (c, r, rd) = (client.clone(), registry.clone(), readiness.clone());
    Supervisor::start(move |_| IssuerWatcher::<Issuer>::new(c, r, rd));
    let (c, r, rd) = (client.clone(), registry.clone(), readiness.clone());
    Supervisor::start(move |_| IssuerWatcher::<ClusterIssuer>::new(c, r, rd));
    let secret_ns = (!settings.secret_access_at_cluster_level)
        .then(|| settings.cluster_resource_namespace.clone());
    let (c, r, ns) = (client.clone(), registry.clone(), secret_ns.clone());
    Supervisor::start(move |_| ReferenceWatcher::<Secret>::new(c, ns, r));
    let cm_ns = (!settings.configmap_access_at_cluster_level
        && !settings.secret_access_at_cluster_level)
        .then(|| settings.cluster_resource_namespace.clone());
    let (c, r) = (client.clone(), registry.clone());
    Supervisor::start(move |_| ReferenceWatcher::<ConfigMap>::new(c, cm_ns, r));
    let (c, check) = (client.clone(), settings.check_approval);
    Supervisor::start(move |_| RequestWatcher::new(c, enroller, check, readiness));

    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received; stopping"),
        _ = int.recv() => info!("SIGINT received; stopping"),
    }
    actix::System::current().stop();
    Ok(())
}
