//! Reference (b): a plain kube client that does what our controller does to the apiserver for
//! each approved request, minus Command: it watches the requests and, with the same concurrency,
//! writes the Issued status exactly as `actors/src/status_writer.rs` does (server-side apply of
//! status.certificate, status.ca and the Ready condition). Variant (b') also makes the other
//! apiserver writes our controller makes per request: the intent annotation (merge patch)
//! before, and the `Issued` Event after.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::Result;
use command_issuer::api::CertificateRequest;
use command_issuer::request::{
    gate, status_apply, CrOutcome, Gate, INTENT_ANNOTATION, INTENT_TIME_ANNOTATION,
};
use command_issuer::FIELD_MANAGER;
use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource, ResourceExt};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::sync::Semaphore;

use crate::workload::NAMESPACE;

/// A leaf + intermediate and a root, P-256 like the simulator's, so the status body has the
/// size of a real one.
pub fn sample_chain() -> Result<(String, String)> {
    let ca = |cn: &str| -> Result<CertificateParams> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ok(p)
    };
    let root_key = KeyPair::generate()?;
    let root_params = ca("Bench Root CA")?;
    let root = root_params.self_signed(&root_key)?;
    let root_issuer = Issuer::new(root_params, &root_key);
    let sub_key = KeyPair::generate()?;
    let sub_params = ca("Bench Sub CA")?;
    let sub = sub_params.signed_by(&sub_key, &root_issuer)?;
    let sub_issuer = Issuer::new(sub_params, &sub_key);
    let leaf_key = KeyPair::generate()?;
    let mut leaf_params =
        CertificateParams::new(vec!["bench-00000.bench.example.com".to_string()])?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "bench-00000.bench.example.com");
    let leaf = leaf_params.signed_by(&leaf_key, &sub_issuer)?;
    Ok((format!("{}{}", leaf.pem(), sub.pem()), root.pem()))
}

/// Which writes the plain client makes per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writes {
    /// (b): the status apply only.
    StatusOnly,
    /// (b'): intent annotation, status apply, Event.
    All,
}

/// Runs the plain client until aborted.
pub fn spawn(
    client: Client,
    concurrency: usize,
    writes: Writes,
) -> Result<tokio::task::JoinHandle<()>> {
    let (certificate_pem, ca_pem) = sample_chain()?;
    let chain = Arc::new((certificate_pem, ca_pem));
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "command-issuer-bench".into(),
            instance: Some(format!("bench-{}", std::process::id())),
        },
    );
    let permits = Arc::new(Semaphore::new(concurrency));
    let api: Api<CertificateRequest> = Api::namespaced(client, NAMESPACE);
    Ok(tokio::spawn(async move {
        let mut dispatched = HashSet::new();
        let mut stream = kube::runtime::watcher(api.clone(), watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut next_id = 0i64;
        while let Some(ev) = stream.next().await {
            let cr = match ev {
                Ok(WatchEvent::Apply(cr)) | Ok(WatchEvent::InitApply(cr)) => cr,
                Ok(_) => continue,
                Err(e) => {
                    eprintln!("[bench] plain client watch error: {e}");
                    continue;
                }
            };
            if !matches!(gate(&cr, true), Gate::Sign { .. }) || !dispatched.insert(cr.name_any()) {
                continue;
            }
            next_id += 1;
            let (api, recorder, chain, permits) = (
                api.clone(),
                recorder.clone(),
                chain.clone(),
                permits.clone(),
            );
            let request_id = next_id;
            tokio::spawn(async move {
                let Ok(_permit) = permits.acquire_owned().await else {
                    return;
                };
                if let Err(e) = write(&api, &recorder, &cr, &chain, request_id, writes).await {
                    eprintln!("[bench] plain client write failed: {e:#}");
                }
            });
        }
    }))
}

async fn write(
    api: &Api<CertificateRequest>,
    recorder: &Recorder,
    cr: &CertificateRequest,
    chain: &(String, String),
    request_id: i64,
    writes: Writes,
) -> Result<()> {
    let name = cr.name_any();
    let op_id = uuid::Uuid::new_v4().to_string();
    if writes == Writes::All {
        // As actors/src/enroller.rs records it: both annotations, guarded by resourceVersion.
        let intent = serde_json::json!({"metadata": {
            "annotations": {
                INTENT_ANNOTATION: op_id,
                INTENT_TIME_ANNOTATION: jiff::Timestamp::now().to_string(),
            },
            "resourceVersion": cr.resource_version(),
        }});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&intent))
            .await?;
    }
    let outcome = CrOutcome::Issued {
        certificate_pem: chain.0.clone(),
        ca_pem: chain.1.clone(),
        request_id,
    };
    let now = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string();
    let body = status_apply(&name, NAMESPACE, &outcome, None, false, &now);
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    if writes == Writes::All {
        let ev = Event {
            type_: EventType::Normal,
            reason: "Issued".into(),
            note: Some(format!(
                "Certificate issued by Command (request id {request_id}) [op {op_id}]"
            )),
            action: "Sign".into(),
            secondary: None,
        };
        recorder.publish(&ev, &cr.object_ref(&())).await?;
    }
    Ok(())
}
