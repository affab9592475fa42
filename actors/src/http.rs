//! The probe and metrics listeners: `/healthz` (the core actors answer a ping), `/readyz`
//! (watches synced, leader or standby), `/metrics` (Prometheus text). They run on their own
//! threads, so a stalled actor thread makes `/healthz` fail instead of hang.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context as _;
use command_issuer::metrics::Metrics;
use tracing::{info, warn};

use crate::messages::Ping;

/// How long a core actor may take to answer a liveness ping before `/healthz` fails.
pub const PING_DEADLINE: Duration = Duration::from_secs(2);

/// The core actors `/healthz` pings: if one is dead or its thread is stuck, the process is
/// not alive whatever else still answers.
#[derive(Default, Clone)]
pub struct Liveness {
    /// (name, mailbox) of each core actor.
    pub actors: Vec<(&'static str, Recipient<Ping>)>,
}

impl Liveness {
    /// Names of the core actors that did not answer within [`PING_DEADLINE`].
    pub async fn dead(&self) -> Vec<&'static str> {
        let pings = self.actors.iter().map(|(name, r)| async move {
            match tokio::time::timeout(PING_DEADLINE, r.send(Ping)).await {
                Ok(Ok(())) => None,
                _ => Some(*name),
            }
        });
        futures::future::join_all(pings)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

/// What `/readyz` reports: each watch has delivered its first full list.
#[derive(Default, Debug)]
pub struct Readiness {
    /// Issuers listed.
    pub issuers: AtomicBool,
    /// ClusterIssuers listed.
    pub cluster_issuers: AtomicBool,
    /// CertificateRequests listed.
    pub requests: AtomicBool,
}

impl Readiness {
    /// Names of the watches not synced yet; empty when ready.
    pub fn missing(&self) -> Vec<&'static str> {
        [
            ("Issuer", &self.issuers),
            ("ClusterIssuer", &self.cluster_issuers),
            ("CertificateRequest", &self.requests),
        ]
        .into_iter()
        .filter(|(_, b)| !b.load(Ordering::Relaxed))
        .map(|(n, _)| n)
        .collect()
    }
}

/// Go-style listen address: `:8081` means every interface; `0` disables.
pub fn parse_bind(addr: &str) -> anyhow::Result<Option<SocketAddr>> {
    if addr == "0" || addr.is_empty() {
        return Ok(None);
    }
    let full = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_string()
    };
    full.parse()
        .map(Some)
        .with_context(|| format!("invalid listen address {addr:?}"))
}

async fn healthz(l: web::Data<Arc<Liveness>>) -> HttpResponse {
    let dead = l.dead().await;
    if dead.is_empty() {
        return HttpResponse::Ok().content_type("text/plain").body("ok");
    }
    warn!(actors = ?dead, "liveness check failed: core actors do not answer");
    HttpResponse::ServiceUnavailable()
        .content_type("text/plain")
        .body(format!("not alive: {}", dead.join(", ")))
}

async fn readyz(r: web::Data<Arc<Readiness>>) -> HttpResponse {
    let missing = r.missing();
    if missing.is_empty() {
        HttpResponse::Ok().content_type("text/plain").body("ok")
    } else {
        HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(format!(
                "waiting for the first list of: {}",
                missing.join(", ")
            ))
    }
}

async fn metrics(m: web::Data<Arc<Metrics>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(m.encode())
}

/// Starts the listeners that are configured; logs the bound addresses (port 0 picks one).
pub fn start(
    probe_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    readiness: Arc<Readiness>,
    liveness: Arc<Liveness>,
    metrics_state: Arc<Metrics>,
) -> anyhow::Result<()> {
    if let Some(addr) = probe_addr {
        let r = readiness.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(r.clone()))
                .app_data(web::Data::new(liveness.clone()))
                .route("/healthz", web::get().to(healthz))
                .route("/readyz", web::get().to(readyz))
        })
        .workers(1)
        .disable_signals()
        .bind(addr)
        .with_context(|| format!("binding the probe listener {addr}"))?;
        for a in server.addrs() {
            info!(addr = %a, "serving /healthz and /readyz");
        }
        actix_rt::spawn(server.run());
    }
    if let Some(addr) = metrics_addr {
        let m = metrics_state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(m.clone()))
                .route("/metrics", web::get().to(metrics))
        })
        .workers(1)
        .disable_signals()
        .bind(addr)
        .with_context(|| format!("binding the metrics listener {addr}"))?;
        for a in server.addrs() {
            info!(addr = %a, "serving /metrics");
        }
        actix_rt::spawn(server.run());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_forms() {
        assert_eq!(parse_bind("0").unwrap(), None);
        assert_eq!(
            parse_bind(":8081").unwrap(),
            Some("0.0.0.0:8081".parse().unwrap())
        );
        assert_eq!(
            parse_bind("127.0.0.1:0").unwrap(),
            Some("127.0.0.1:0".parse().unwrap())
        );
        assert!(parse_bind("nope").is_err());
    }

    #[test]
    fn readiness_lists_missing_watches() {
        let r = Readiness::default();
        assert_eq!(r.missing().len(), 3);
        r.issuers.store(true, Ordering::Relaxed);
        r.cluster_issuers.store(true, Ordering::Relaxed);
        r.requests.store(true, Ordering::Relaxed);
        assert!(r.missing().is_empty());
    }

    /// Answers pings; its first `Block` message blocks its thread for a while.
    struct Pingable;
    impl actix::Actor for Pingable {
        type Context = actix::Context<Self>;
    }
    impl actix::Handler<Ping> for Pingable {
        type Result = ();
        fn handle(&mut self, _: Ping, _: &mut actix::Context<Self>) {}
    }
    #[derive(actix::Message)]
    #[rtype(result = "()")]
    struct Block;
    impl actix::Handler<Block> for Pingable {
        type Result = ();
        fn handle(&mut self, _: Block, _: &mut actix::Context<Self>) {
            std::thread::sleep(PING_DEADLINE * 2);
        }
    }

    #[actix_rt::test]
    async fn liveness_names_the_actor_that_does_not_answer() {
        use actix::Actor;
        let alive = Pingable.start();
        let arbiter = actix::Arbiter::new();
        let stuck = Pingable::start_in_arbiter(&arbiter.handle(), |_| Pingable);
        let l = Liveness {
            actors: vec![
                ("alive", alive.clone().recipient()),
                ("stuck", stuck.clone().recipient()),
            ],
        };
        assert!(l.dead().await.is_empty());
        stuck.do_send(Block);
        assert_eq!(l.dead().await, vec!["stuck"]);
        arbiter.stop();
    }
}
