//! Watcher actors, one per kind: they turn apiserver watch events into typed messages.

use std::fmt::Debug;
use std::marker::PhantomData;

use actix::{Actor, Addr, AsyncContext, Context, StreamHandler, Supervised};
use command_issuer::api::{
    CertificateRequest, ClusterIssuer, Issuer, IssuerCondition, IssuerKind, IssuerSpec,
};
use command_issuer::request::{gate, Gate};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::core::{NamespaceResourceScope, PartialObjectMeta};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{watcher as watch, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::enroller::Enroller;
use crate::http::Readiness;
use crate::messages::{
    CrKey, Enroll, Forget, IssuerDeleted, IssuerKey, IssuerUpserted, IssuersListed,
    ReferenceChanged,
};
use crate::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Our two issuer kinds, seen through one interface so one watcher type serves both.
pub trait IssuerObject:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Unpin + 'static
{
    /// Which kind this is.
    const KIND: IssuerKind;
    /// The shared spec.
    fn issuer_spec(&self) -> IssuerSpec;
    /// Stored conditions.
    fn issuer_conditions(&self) -> Vec<IssuerCondition>;
    /// All objects of the kind.
    fn api(client: Client) -> Api<Self>;
}

impl IssuerObject for Issuer {
    const KIND: IssuerKind = IssuerKind::Issuer;
    fn issuer_spec(&self) -> IssuerSpec {
        self.spec.clone()
    }
    fn issuer_conditions(&self) -> Vec<IssuerCondition> {
        self.status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default()
    }
    fn api(client: Client) -> Api<Self> {
        Api::all(client)
    }
}

impl IssuerObject for ClusterIssuer {
    const KIND: IssuerKind = IssuerKind::ClusterIssuer;
    fn issuer_spec(&self) -> IssuerSpec {
        (*self.spec).clone()
    }
    fn issuer_conditions(&self) -> Vec<IssuerCondition> {
        self.status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default()
    }
    fn api(client: Client) -> Api<Self> {
        Api::all(client)
    }
}

/// Watches one issuer kind and tells the registry.
pub struct IssuerWatcher<K: IssuerObject> {
    client: Client,
    registry: Addr<Registry>,
    readiness: Arc<Readiness>,
    listing: Vec<IssuerKey>,
    _kind: PhantomData<K>,
}

impl<K: IssuerObject> IssuerWatcher<K> {
    /// A watcher feeding this registry.
    pub fn new(client: Client, registry: Addr<Registry>, readiness: Arc<Readiness>) -> Self {
        Self {
            client,
            registry,
            readiness,
            listing: Vec::new(),
            _kind: PhantomData,
        }
    }

    fn key(o: &K) -> IssuerKey {
        IssuerKey {
            kind: K::KIND,
            namespace: o.namespace(),
            name: o.name_any(),
        }
    }
}

impl<K: IssuerObject> Actor for IssuerWatcher<K> {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        info!(kind = %K::KIND, "watching");
        ctx.add_stream(
            watch(K::api(self.client.clone()), watcher::Config::default()).default_backoff(),
        );
    }
}

impl<K: IssuerObject> Supervised for IssuerWatcher<K> {}

impl<K: IssuerObject> StreamHandler<Result<Event<K>, watcher::Error>> for IssuerWatcher<K> {
    fn handle(&mut self, item: Result<Event<K>, watcher::Error>, _: &mut Context<Self>) {
        let upsert = |o: &K| IssuerUpserted {
            key: Self::key(o),
            spec: o.issuer_spec(),
            generation: o.meta().generation.unwrap_or(0),
            conditions: o.issuer_conditions(),
        };
        match item {
            Ok(Event::Apply(o)) => self.registry.do_send(upsert(&o)),
            Ok(Event::InitApply(o)) => {
                self.listing.push(Self::key(&o));
                self.registry.do_send(upsert(&o));
            }
            Ok(Event::Delete(o)) => self.registry.do_send(IssuerDeleted { key: Self::key(&o) }),
            Ok(Event::Init) => self.listing.clear(),
            Ok(Event::InitDone) => {
                self.registry.do_send(IssuersListed {
                    kind: K::KIND,
                    keys: std::mem::take(&mut self.listing),
                });
                match K::KIND {
                    IssuerKind::Issuer => self.readiness.issuers.store(true, Ordering::Relaxed),
                    IssuerKind::ClusterIssuer => self
                        .readiness
                        .cluster_issuers
                        .store(true, Ordering::Relaxed),
                }
            }
            Err(e) => warn!(kind = %K::KIND, error = %e, "watch error; retrying with backoff"),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        warn!(kind = %K::KIND, "watch stream ended; restarting watcher");
        actix::ActorContext::stop(ctx);
    }
}

/// Watches CertificateRequests; each one that needs work gets an op id and goes to the enroller.
pub struct RequestWatcher {
    client: Client,
    enroller: Addr<Enroller>,
    check_approval: bool,
    readiness: Arc<Readiness>,
}

impl RequestWatcher {
    /// A watcher feeding this enroller.
    pub fn new(
        client: Client,
        enroller: Addr<Enroller>,
        check_approval: bool,
        readiness: Arc<Readiness>,
    ) -> Self {
        Self {
            client,
            enroller,
            check_approval,
            readiness,
        }
    }
}

impl Actor for RequestWatcher {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        info!(kind = "CertificateRequest", "watching");
        let api: Api<CertificateRequest> = Api::all(self.client.clone());
        ctx.add_stream(watch(api, watcher::Config::default()).default_backoff());
    }
}

impl Supervised for RequestWatcher {}

impl StreamHandler<Result<Event<CertificateRequest>, watcher::Error>> for RequestWatcher {
    fn handle(
        &mut self,
        item: Result<Event<CertificateRequest>, watcher::Error>,
        _: &mut Context<Self>,
    ) {
        match item {
            Ok(Event::Apply(mut cr)) | Ok(Event::InitApply(mut cr)) => {
                // Nothing downstream reads managedFields, and as JSON trees they are the bulk
                // of a queued request's memory (issue #6: 5000 approved at once).
                cr.metadata.managed_fields = None;
                let g = gate(&cr, self.check_approval);
                if matches!(g, Gate::NotOurs | Gate::Final | Gate::AwaitingApproval) {
                    return;
                }
                let op_id = uuid::Uuid::new_v4().to_string();
                info!(
                    op_id = %op_id, request = %format!("{}/{}", cr.namespace().unwrap_or_default(), cr.name_any()),
                    resource_version = ?cr.resource_version(), issuer = %cr.spec.issuer_ref.name, gate = ?g, "watch event"
                );
                self.enroller.do_send(Enroll {
                    op_id,
                    cr: Box::new(cr),
                });
            }
            Ok(Event::Delete(cr)) => self.enroller.do_send(Forget {
                key: CrKey {
                    namespace: cr.namespace().unwrap_or_default(),
                    name: cr.name_any(),
                },
            }),
            Ok(Event::InitDone) => self.readiness.requests.store(true, Ordering::Relaxed),
            Ok(Event::Init) => {}
            Err(e) => {
                warn!(kind = "CertificateRequest", error = %e, "watch error; retrying with backoff")
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        warn!(
            kind = "CertificateRequest",
            "watch stream ended; restarting watcher"
        );
        actix::ActorContext::stop(ctx);
    }
}

/// Watches Secrets or ConfigMaps metadata-only (no data cached) so issuers that reference a
/// changed object are re-checked at once.
pub struct ReferenceWatcher<K> {
    client: Client,
    namespace: Option<String>,
    registry: Addr<Registry>,
    _kind: PhantomData<K>,
}

impl<K> ReferenceWatcher<K> {
    /// Watches one namespace, or all with None.
    pub fn new(client: Client, namespace: Option<String>, registry: Addr<Registry>) -> Self {
        Self {
            client,
            namespace,
            registry,
            _kind: PhantomData,
        }
    }
}

/// The object kinds whose changes re-check issuers.
pub trait Referenced:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Unpin
    + 'static
{
    /// "Secret" or "ConfigMap".
    const NAME: &'static str;
}
impl Referenced for Secret {
    const NAME: &'static str = "Secret";
}
impl Referenced for ConfigMap {
    const NAME: &'static str = "ConfigMap";
}

impl<K: Referenced> Actor for ReferenceWatcher<K> {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        let api: Api<PartialObjectMeta<K>> = match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        info!(kind = K::NAME, namespace = ?self.namespace, "watching metadata");
        let stream = watch(api, watcher::Config::default())
            .default_backoff()
            .filter_map(|e| async move {
                match e {
                    Ok(Event::Apply(o)) | Ok(Event::Delete(o)) => {
                        Some((o.namespace().unwrap_or_default(), o.name_any()))
                    }
                    Err(e) => {
                        warn!(kind = K::NAME, error = %e, "watch error; retrying with backoff");
                        None
                    }
                    _ => None,
                }
            });
        ctx.add_stream(stream);
    }
}

impl<K: Referenced> Supervised for ReferenceWatcher<K> {}

impl<K: Referenced> StreamHandler<(String, String)> for ReferenceWatcher<K> {
    fn handle(&mut self, (namespace, name): (String, String), _: &mut Context<Self>) {
        self.registry.do_send(ReferenceChanged {
            kind: K::NAME,
            namespace,
            name,
        });
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        actix::ActorContext::stop(ctx);
    }
}
