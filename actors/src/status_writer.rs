//! Status writer: the one place that patches status (server-side apply) and publishes Events.

use actix::{Actor, Context, Handler, ResponseFuture};

use crate::apiserver::{bounded, CALL_DEADLINE};
use command_issuer::api::{CertificateRequest, ClusterIssuer, Issuer, IssuerKind};
use command_issuer::request::{status_apply, CrOutcome, REQUEST_ID_ANNOTATION};
use command_issuer::FIELD_MANAGER;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::messages::{Ping, WriteIssuerStatus, WriteRequestStatus};
use command_issuer::metrics::{Metrics, OutcomeLabels};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Owns the apiserver writes of status and Events.
pub struct StatusWriter {
    client: Client,
    reporter: Reporter,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    leading: Arc<AtomicBool>,
}

impl StatusWriter {
    /// A writer reporting as controller `command-issuer` from this instance.
    pub fn new(
        client: Client,
        instance: String,
        metrics: Arc<Metrics>,
        leading: Arc<AtomicBool>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(instance),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter.clone()),
            reporter,
            client,
            metrics,
            leading,
        }
    }
}

impl Actor for StatusWriter {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
    }
}

impl Handler<Ping> for StatusWriter {
    type Result = ();
    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}

/// Runs `write` while this process leads; gives up with an error once it does not.
async fn while_leading(
    leading: Arc<AtomicBool>,
    write: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), String> {
    let deposed = async {
        while leading.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        r = write => r,
        () = deposed => Err("not the leader any more: status write abandoned".to_string()),
    }
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}

async fn publish(
    recorder: &Recorder,
    reference: &ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
    action: &str,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(truncate(note, 1000)),
        action: action.into(),
        secondary: None,
    };
    let published = bounded("an Event", CALL_DEADLINE, recorder.publish(&ev, reference)).await;
    if let Err(e) = published {
        warn!(error = %e, reason, "failed to publish Event");
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

impl Handler<WriteRequestStatus> for StatusWriter {
    type Result = ResponseFuture<Result<(), String>>;
    fn handle(&mut self, msg: WriteRequestStatus, _: &mut Context<Self>) -> Self::Result {
        if !self.leading.load(Ordering::SeqCst) {
            return Box::pin(async { Err("not the leader: status not written".to_string()) });
        }
        let client = self.client.clone();
        // A recorder per write: kube's Recorder keeps every Event it publishes for 6 minutes to
        // turn a repeat into a series, keyed by the regarding object including its
        // resourceVersion. A request's Events follow its status changes, each on a newer
        // resourceVersion, so a shared cache (practically) never hit and only held thousands of
        // Events in memory under load (issue #6).
        let recorder = Recorder::new(client.clone(), self.reporter.clone());
        let metrics = self.metrics.clone();
        let leading = self.leading.clone();
        let write = async move {
            let cr: &CertificateRequest = &msg.cr;
            let ns = cr.metadata.namespace.clone().unwrap_or_default();
            let name = cr.metadata.name.clone().unwrap_or_default();
            let previous = cr.condition("Ready").cloned();
            let failure_time_set = cr.status.as_ref().is_some_and(|s| s.failure_time.is_some());
            let mut body = status_apply(
                &name,
                &ns,
                &msg.outcome,
                previous.as_ref(),
                failure_time_set,
                &now_rfc3339(),
            );
            let api: Api<CertificateRequest> = Api::namespaced(client, &ns);
            // Every write carries the version the outcome was decided on: if anyone else wrote
            // the request meanwhile (a newer leader that issued it), the write is refused (409)
            // instead of erasing their status, and the request is read again.
            let mut version = cr.resource_version();
            if let CrOutcome::Held { request_id, .. } = &msg.outcome {
                // Recorded before the status, so a crash in between still never re-enrolls.
                let patch = serde_json::json!({"metadata": {
                    "annotations": {REQUEST_ID_ANNOTATION: request_id.to_string()},
                    "resourceVersion": version,
                }});
                let (pp, patch) = (PatchParams::default(), Patch::Merge(&patch));
                let call = api.patch(&name, &pp, &patch);
                let patched = bounded("the request-id patch", CALL_DEADLINE, call)
                    .await
                    .map_err(|e| {
                        format!(
                            "recording Command request id on CertificateRequest {ns}/{name}: {e}"
                        )
                    })?;
                version = patched.resource_version();
            }
            if let Some(v) = version {
                body["metadata"]["resourceVersion"] = json!(v);
            }
            let pp = PatchParams::apply(FIELD_MANAGER).force();
            let apply = Patch::Apply(&body);
            let call = api.patch_status(&name, &pp, &apply);
            bounded("the request status patch", CALL_DEADLINE, call)
                .await
                .map_err(|e| format!("patching status of CertificateRequest {ns}/{name}: {e}"))?;
            let reason = msg.outcome.reason();
            let message = msg.outcome.message();
            info!(op_id = %msg.op_id, request = %format!("{ns}/{name}"), reason, detail = %message, "status patched");
            let changed = previous.as_ref().is_none_or(|p| {
                p.reason.as_deref() != Some(reason)
                    || p.message.as_deref() != Some(message.as_str())
            });
            if changed {
                metrics
                    .enrollments
                    .get_or_create(&OutcomeLabels {
                        outcome: reason.to_ascii_lowercase(),
                    })
                    .inc();
                if matches!(msg.outcome, CrOutcome::Issued { .. }) {
                    let approved = cr
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Approved"));
                    if let Some(t) = approved.and_then(|c| c.last_transition_time.as_ref()) {
                        let secs = jiff::Timestamp::now().duration_since(t.0).as_secs_f64();
                        metrics.enrollment_duration.observe(secs.max(0.0));
                    }
                }
                let type_ = match msg.outcome {
                    CrOutcome::Issued { .. } => EventType::Normal,
                    _ => EventType::Warning,
                };
                let note = msg.outcome.event_note(&msg.op_id);
                publish(&recorder, &cr.object_ref(&()), type_, reason, note, "Sign").await;
            }
            Ok(())
        };
        // A write under way is abandoned the moment this process stops leading: the attempt
        // that asked for it was cancelled, and the next leader decides again.
        Box::pin(while_leading(leading, write))
    }
}

impl Handler<WriteIssuerStatus> for StatusWriter {
    type Result = ResponseFuture<Result<(), String>>;
    fn handle(&mut self, msg: WriteIssuerStatus, _: &mut Context<Self>) -> Self::Result {
        if !self.leading.load(Ordering::SeqCst) {
            return Box::pin(async { Err("not the leader: status not written".to_string()) });
        }
        let client = self.client.clone();
        let recorder = self.recorder.clone();
        Box::pin(async move {
            let key = &msg.key;
            let body = json!({
                "apiVersion": "command-issuer.keyfactor.com/v1alpha1",
                "kind": key.kind.as_str(),
                "metadata": {"name": key.name},
                "status": {"conditions": msg.conditions},
            });
            let pp = PatchParams::apply(FIELD_MANAGER).force();
            let reference = match (key.kind, &key.namespace) {
                (IssuerKind::Issuer, Some(ns)) => {
                    let api: Api<Issuer> = Api::namespaced(client, ns);
                    let apply = Patch::Apply(&body);
                    let call = api.patch_status(&key.name, &pp, &apply);
                    bounded("the issuer status patch", CALL_DEADLINE, call)
                        .await
                        .map(|o| o.object_ref(&()))
                }
                _ => {
                    let api: Api<ClusterIssuer> = Api::all(client);
                    let apply = Patch::Apply(&body);
                    let call = api.patch_status(&key.name, &pp, &apply);
                    bounded("the issuer status patch", CALL_DEADLINE, call)
                        .await
                        .map(|o| o.object_ref(&()))
                }
            }
            .map_err(|e| format!("patching status of {key}: {e}"))?;
            if msg.transition {
                let (type_, reason) = if msg.ready {
                    (EventType::Normal, "Ready")
                } else {
                    (EventType::Warning, "NotReady")
                };
                info!(issuer = %key, ready = msg.ready, detail = %msg.message, "issuer Ready changed");
                publish(
                    &recorder,
                    &reference,
                    type_,
                    reason,
                    msg.message.clone(),
                    "HealthCheck",
                )
                .await;
            }
            Ok(())
        })
    }
}
