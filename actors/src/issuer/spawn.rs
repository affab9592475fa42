//! Starting one issuer's actors: the single place that knows their concrete types, so the
//! registry that owns them holds only the recipients it sends to.

use actix::{Actor, Recipient};
use command_issuer::api::{IssuerCondition, IssuerSpec};

use super::auth::AuthActor;
use super::check::{ProbeAuth, ProbeDeps};
use super::probe::Probe;
use crate::messages::{AuthHandle, CheckNow, IssuerHealth, IssuerKey, Stop};

/// What an issuer's actors are started with.
pub struct IssuerStart {
    /// Which issuer.
    pub key: IssuerKey,
    /// Its uid: the identity its actors serve.
    pub uid: String,
    /// Its spec.
    pub spec: IssuerSpec,
    /// Its conditions as stored.
    pub conditions: Vec<IssuerCondition>,
    /// Where the probe reports.
    pub registry: Recipient<IssuerHealth>,
}

/// One issuer's running actors, as their owner sees them.
pub struct IssuerActors {
    /// Its token source, handed to the enroller with the issuer.
    pub auth: AuthHandle,
    /// Ask the probe to check now.
    pub check: Recipient<CheckNow>,
    /// Stop every actor of the issuer.
    pub stop: Vec<Recipient<Stop>>,
}

/// Starts the auth and probe actors of one issuer.
pub fn spawn_issuer(deps: &ProbeDeps, start: IssuerStart) -> IssuerActors {
    let auth = AuthActor::new(start.key.clone(), deps.metrics.clone()).start();
    let handle = AuthHandle {
        get: auth.clone().recipient(),
        invalidate: auth.clone().recipient(),
    };
    let probe_auth = ProbeAuth {
        handle: handle.clone(),
        credentials: auth.clone().recipient(),
    };
    let probe = Probe::new(
        (start.key, start.uid),
        start.spec,
        start.conditions,
        probe_auth,
        start.registry,
        deps.clone(),
    )
    .start();
    IssuerActors {
        auth: handle,
        check: probe.clone().recipient(),
        stop: vec![probe.recipient(), auth.recipient()],
    }
}
