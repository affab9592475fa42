//! Secret and ConfigMap watcher, metadata only (no data cached), so issuers that reference a
//! changed object are re-checked at once.

use std::fmt::Debug;
use std::marker::PhantomData;

use actix::{Actor, AsyncContext, Context, Recipient, StreamHandler, Supervised};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::core::{NamespaceResourceScope, PartialObjectMeta};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{watcher as watch, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::messages::ReferenceChanged;

/// Watches Secrets or ConfigMaps metadata-only (no data cached) so issuers that reference a
/// changed object are re-checked at once.
pub struct ReferenceWatcher<K> {
    client: Client,
    namespace: Option<String>,
    registry: Recipient<ReferenceChanged>,
    _kind: PhantomData<K>,
}

impl<K> ReferenceWatcher<K> {
    /// Watches one namespace, or all with None.
    pub fn new(
        client: Client,
        namespace: Option<String>,
        registry: Recipient<ReferenceChanged>,
    ) -> Self {
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
