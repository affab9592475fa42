//! Every typed message that crosses between actors, and the identities they carry.

use std::fmt;
use std::sync::Arc;

use actix::Message;
use command_issuer::api::{CertificateRequest, IssuerCondition, IssuerKind, IssuerSpec};
use command_issuer::config::{ConnectionConfig, Credentials};
use command_issuer::request::CrOutcome;
use secrecy::SecretString;

/// Identity of one issuer: kind, namespace (None for ClusterIssuer), name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IssuerKey {
    /// Issuer or ClusterIssuer.
    pub kind: IssuerKind,
    /// Namespace of an Issuer.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl IssuerKey {
    /// Its metric labels (kind, namespace, name).
    pub fn labels(&self) -> command_issuer::metrics::IssuerLabels {
        command_issuer::metrics::IssuerLabels {
            kind: self.kind.to_string(),
            namespace: self.namespace.clone().unwrap_or_default(),
            name: self.name.clone(),
        }
    }
}

impl fmt::Display for IssuerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{ns}/{}", self.kind, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

/// Identity of one CertificateRequest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CrKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for CrKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Watcher → registry: an issuer was created or changed.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct IssuerUpserted {
    /// Which issuer.
    pub key: IssuerKey,
    /// metadata.uid: a re-created issuer (same name, new uid) gets fresh actors.
    pub uid: String,
    /// Its spec.
    pub spec: IssuerSpec,
    /// metadata.generation, to spot spec changes.
    pub generation: i64,
    /// Conditions as stored.
    pub conditions: Vec<IssuerCondition>,
}

/// Watcher → registry: an issuer was deleted.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct IssuerDeleted {
    /// Which issuer.
    pub key: IssuerKey,
}

/// Watcher → registry: a full list of one kind finished; keys absent from it are gone.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct IssuersListed {
    /// Kind listed.
    pub kind: IssuerKind,
    /// Every key the list returned.
    pub keys: Vec<IssuerKey>,
}

/// Secret/ConfigMap watcher → registry: a referenced object may have changed.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct ReferenceChanged {
    /// "Secret" or "ConfigMap".
    pub kind: &'static str,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Registry → probe: run a check now (spec, Secret or ConfigMap changed).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct CheckNow {
    /// The issuer spec to check with.
    pub spec: IssuerSpec,
    /// Why, for the log.
    pub why: &'static str,
    /// Write status even when unchanged (a new leader takes over).
    pub force_write: bool,
}

/// Leader elector → enroller, registry: this process may (or may no longer) write.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct LeadershipChanged {
    /// True when this process now holds the lease.
    pub leading: bool,
}

/// Probe → registry: outcome of a check.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct IssuerHealth {
    /// Which issuer.
    pub key: IssuerKey,
    /// The uid the probe was started for: a report of a deleted issuer's probe is ignored.
    pub uid: String,
    /// Ready to sign.
    pub ready: bool,
    /// SupportsMetadata=True.
    pub supports_metadata: bool,
    /// Resolved connection when ready.
    pub connection: Option<Arc<ConnectionConfig>>,
    /// Secret/ConfigMap references the issuer reads: (kind, namespace, name).
    pub references: Vec<(&'static str, String, String)>,
}

/// Probe → auth: the credentials resolved from the issuer's Secret.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetCredentials {
    /// Method and values.
    pub credentials: Credentials,
    /// Trust for the token endpoint (the same bundle as for Command).
    pub ca_bundle_pem: Option<String>,
    /// Ambient scopes from the spec (commas and whitespace split).
    pub scopes: Vec<String>,
    /// Ambient audience from the spec (empty = `command`).
    pub audience: String,
}

/// Anyone → auth: an Authorization header for this issuer.
#[derive(Message)]
#[rtype(result = "Result<SecretString, String>")]
pub struct GetAuthorization {
    /// Operation id for the log.
    pub op_id: Option<String>,
}

/// Auth → forget a cached token (after a 401).
#[derive(Message)]
#[rtype(result = "()")]
pub struct InvalidateToken;

/// Registry → per-issuer actors: the issuer is gone or was re-created; stop now.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Stop;

/// Liveness probe → core actor: answer if your mailbox is being served.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Ping;

/// One issuer's auth actor, as its users see it: they only send to it.
#[derive(Clone)]
pub struct AuthHandle {
    /// Ask for an Authorization header.
    pub get: actix::Recipient<GetAuthorization>,
    /// Drop the cached token after a 401.
    pub invalidate: actix::Recipient<InvalidateToken>,
}

impl AuthHandle {
    /// An Authorization header, or why there is none.
    pub async fn header(&self, op_id: Option<&str>) -> Result<SecretString, String> {
        let msg = GetAuthorization {
            op_id: op_id.map(str::to_string),
        };
        match self.get.send(msg).await {
            Ok(r) => r,
            Err(e) => Err(format!("auth actor unavailable: {e}")),
        }
    }
}

/// What the enroller needs from the registry to sign with one issuer.
#[derive(Clone)]
pub struct IssuerSnapshot {
    /// Which issuer.
    pub key: IssuerKey,
    /// Its spec.
    pub spec: IssuerSpec,
    /// SupportsMetadata=True.
    pub supports_metadata: bool,
    /// Where Command is.
    pub connection: Arc<ConnectionConfig>,
    /// Its auth actor.
    pub auth: AuthHandle,
}

/// Why the registry cannot hand out an issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// Not in the cluster: `error getting issuer: <k8s-style message>`.
    Missing(String),
    /// Known but not Ready: `issuer is not ready`.
    Unready,
    /// Not checked yet (start-up): wait silently.
    Unchecked,
}

/// Enroller → registry: the issuer a request names.
#[derive(Message)]
#[rtype(result = "Result<IssuerSnapshot, ResolveError>")]
pub struct ResolveIssuer {
    /// Which issuer.
    pub key: IssuerKey,
}

/// Registry → enroller: an issuer was deleted or re-created; drop what was built for it.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct IssuerGone {
    /// Which issuer.
    pub key: IssuerKey,
}

/// Registry → enroller: an issuer turned Ready; retry its parked requests now.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct IssuerReady {
    /// Which issuer.
    pub key: IssuerKey,
}

/// Request watcher → enroller: a request that may need signing, with its op id.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Enroll {
    /// Operation id followed through logs, Events and metadata.
    pub op_id: String,
    /// The object from the watch event.
    pub cr: Box<CertificateRequest>,
}

/// Request watcher → enroller: a request was deleted.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Forget {
    /// Which request.
    pub key: CrKey,
}

/// Enroller → status writer: write a request's status and Event.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct WriteRequestStatus {
    /// Operation id.
    pub op_id: String,
    /// The request as last read (for its object reference and previous Ready).
    pub cr: Box<CertificateRequest>,
    /// New state.
    pub outcome: CrOutcome,
}

/// Probe → status writer: write an issuer's conditions, with an Event when Ready changed.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct WriteIssuerStatus {
    /// Which issuer.
    pub key: IssuerKey,
    /// Full conditions list.
    pub conditions: Vec<IssuerCondition>,
    /// Ready status changed: emit an Event.
    pub transition: bool,
    /// Ready now.
    pub ready: bool,
    /// Ready message.
    pub message: String,
}
