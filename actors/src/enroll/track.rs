//! What the enroller keeps per request, and which slot group a request belongs to.

use command_issuer::api::{CertificateRequest, IssuerKind};
use command_issuer::request::issuer_of;

use actix::SpawnHandle;

use crate::messages::IssuerKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// In a queue, waiting for a slot.
    Queued,
    /// An attempt is under way.
    Running,
    /// Waiting for a timer (backoff, poll, look again) or its issuer.
    Waiting,
}

/// A slot group: the request's issuer, or none when issuerRef names no kind of ours.
pub type Group = Option<IssuerKey>;

/// What the enroller keeps per request while it leads.
pub struct Track {
    pub op_id: String,
    pub state: State,
    pub group: Group,
    /// Follow-up of a held request: polled in the poll budget, not an enrollment slot.
    pub held: bool,
    pub attempts: u32,
    pub polls: u32,
    pub awaiting_issuer: bool,
    pub timer: Option<SpawnHandle>,
    pub cr: Option<Box<CertificateRequest>>,
    /// The last enrollment call of this op id got Command's complete answer (an error status or
    /// an undecodable body included), so Command is done with it and a lookup that finds
    /// nothing is final; after a lost answer it is not, until the enrollment has settled.
    pub answered: bool,
    /// An outcome Command produced whose write failed: written again, never enrolled again.
    pub unwritten: Option<command_issuer::request::CrOutcome>,
    /// The attempt under way, cancelled if this process stops leading.
    pub running: Option<SpawnHandle>,
}

/// The slot group of a request: the issuer its issuerRef names.
pub fn group_of(cr: &CertificateRequest, namespace: &str) -> Group {
    issuer_of(cr).map(|(kind, name)| IssuerKey {
        kind,
        namespace: (kind == IssuerKind::Issuer).then(|| namespace.to_string()),
        name,
    })
}
