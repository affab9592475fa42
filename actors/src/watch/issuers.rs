//! Issuer and ClusterIssuer watcher: one actor type for both kinds, feeding the registry.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::{Actor, AsyncContext, Context, Recipient, StreamHandler, Supervised};
use command_issuer::api::{ClusterIssuer, Issuer, IssuerCondition, IssuerKind, IssuerSpec};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{watcher as watch, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::http::Readiness;
use crate::messages::{IssuerDeleted, IssuerKey, IssuerUpserted, IssuersListed};

/// Where issuer events go (the registry), as recipients so this module needs no actor type.
#[derive(Clone)]
pub struct IssuerEvents {
    /// Created or changed.
    pub upserted: Recipient<IssuerUpserted>,
    /// Deleted.
    pub deleted: Recipient<IssuerDeleted>,
    /// A full list finished.
    pub listed: Recipient<IssuersListed>,
}

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
    registry: IssuerEvents,
    readiness: Arc<Readiness>,
    listing: Vec<IssuerKey>,
    _kind: PhantomData<K>,
}

impl<K: IssuerObject> IssuerWatcher<K> {
    /// A watcher feeding this registry.
    pub fn new(client: Client, registry: IssuerEvents, readiness: Arc<Readiness>) -> Self {
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
            uid: o.meta().uid.clone().unwrap_or_default(),
            spec: o.issuer_spec(),
            generation: o.meta().generation.unwrap_or(0),
            conditions: o.issuer_conditions(),
        };
        match item {
            Ok(Event::Apply(o)) => self.registry.upserted.do_send(upsert(&o)),
            Ok(Event::InitApply(o)) => {
                self.listing.push(Self::key(&o));
                self.registry.upserted.do_send(upsert(&o));
            }
            Ok(Event::Delete(o)) => self
                .registry
                .deleted
                .do_send(IssuerDeleted { key: Self::key(&o) }),
            Ok(Event::Init) => self.listing.clear(),
            Ok(Event::InitDone) => {
                self.registry.listed.do_send(IssuersListed {
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
