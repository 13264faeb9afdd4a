//! Garbage collection through ownerReferences.
//!
//! - An Instance whose owning Service no longer exists (checked against the API, not
//!   only the cache) is deleted: background propagation.
//! - A Service deleted with `propagationPolicy=Foreground` carries the
//!   `foregroundDeletion` finalizer: its Instances are deleted first, and the finalizer
//!   is removed (so the Service goes) once none is left.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use client::runtime::{Action, Controller, ObjectRef, Store};
use client::{Api, Client, ListParams};
use crds::{Instance, Service, FOREGROUND_DELETION as FOREGROUND};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::service::SERVICE_LABEL;
use crate::{instance_owner, owned_by, Error, RootConfig};

/// Run both collectors (orphans and foreground deletion) until `shutdown`.
pub async fn run(client: Client, config: &RootConfig, shutdown: CancellationToken) {
    tokio::join!(
        orphans(client.clone(), config, shutdown.clone()),
        foreground(client, config, shutdown)
    );
}

struct Ctx {
    client: Client,
    services: Store<Service>,
}

async fn orphans(client: Client, config: &RootConfig, shutdown: CancellationToken) {
    let mut controller = Controller::new(client.api::<Instance>(None), ListParams::default())
        .name("gc")
        .concurrency(config.concurrency);
    let instances = controller.store();
    // The Services cache, for the mapper (it exists only once `watches` returns).
    let cache: Arc<OnceLock<Store<Service>>> = Arc::default();
    let seen = cache.clone();
    let services = controller.watches(
        client.api::<Service>(None),
        ListParams::default(),
        move |s: &Service| {
            // Only a Service that is gone (or replaced, or being deleted) can leave
            // orphans. The cache already holds this change: a Service still there with
            // the same uid is an ordinary update (a status write: several per second
            // during a burst), and queueing its thousands of Instances for nothing
            // would crowd out real work.
            let key = ObjectRef::of(s);
            let live = seen.get().and_then(|c| c.get(&key)).is_some_and(|c| {
                c.metadata.uid == s.metadata.uid && c.metadata.deletion_timestamp.is_none()
            });
            if live {
                return Vec::new();
            }
            let uid = s.metadata.uid.clone().unwrap_or_default();
            instances
                .find(|i| owned_by(&i.metadata, &uid))
                .iter()
                .map(|i| ObjectRef::of(i.as_ref()))
                .collect()
        },
    );
    let _ = cache.set(services.clone());
    let ctx = Arc::new(Ctx { client, services });
    controller
        .run(move |i| collect(i, ctx.clone()), shutdown.cancelled_owned())
        .await;
}

async fn collect(instance: Arc<Instance>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = instance.metadata.namespace.as_deref();
    let owners: Vec<_> = instance
        .metadata
        .owner_references
        .iter()
        .filter(|o| o.kind == "Service")
        .collect();
    if owners.is_empty() {
        return Ok(Action::await_change());
    }
    for owner in owners {
        let cached = ctx.services.get(&ObjectRef::new(ns, &owner.name));
        if cached.is_some_and(|s| s.metadata.uid.as_deref() == Some(owner.uid.as_str())) {
            return Ok(Action::await_change());
        }
        // The cache may lag behind a new owner: ask the API before deleting.
        let live = ctx
            .client
            .api::<Service>(ns)
            .dynamic()
            .get_opt(&owner.name)
            .await?;
        if live.is_some_and(|s| s["metadata"]["uid"] == owner.uid.as_str()) {
            return Ok(Action::await_change());
        }
    }
    tracing::info!(instance = %ObjectRef::of(instance.as_ref()), "owner is gone; deleting");
    match ctx
        .client
        .api::<Instance>(ns)
        .delete(&instance.metadata.name)
        .await
    {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(Action::await_change()),
    }
}

async fn foreground(client: Client, config: &RootConfig, shutdown: CancellationToken) {
    let mut controller = Controller::new(client.api::<Service>(None), ListParams::default())
        .name("gc-foreground")
        .concurrency(config.concurrency);
    let services = controller.store();
    // An Instance going away queues its Service, to finish the deletion.
    controller.watches(
        client.api::<Instance>(None),
        ListParams::default(),
        instance_owner,
    );
    let ctx = Arc::new(Ctx { client, services });
    controller
        .run(
            move |s| delete_children_first(s, ctx.clone()),
            shutdown.cancelled_owned(),
        )
        .await;
}

async fn delete_children_first(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let finalizers = &svc.metadata.finalizers;
    if svc.metadata.deletion_timestamp.is_none() || !finalizers.iter().any(|f| f == FOREGROUND) {
        return Ok(Action::await_change());
    }
    let ns = svc.metadata.namespace.as_deref();
    let uid = svc.metadata.uid.clone().unwrap_or_default();
    let api: Api<Instance> = ctx.client.api(ns);
    let params = ListParams {
        label_selector: Some(format!("{SERVICE_LABEL}={}", svc.metadata.name)),
        ..Default::default()
    };
    let (live, _) = api.list(&params).await?;
    let children: Vec<_> = live
        .iter()
        .filter(|i| owned_by(&i.metadata, &uid))
        .collect();
    if children.is_empty() {
        let rest: Vec<&String> = finalizers.iter().filter(|f| *f != FOREGROUND).collect();
        let patch = json!({"metadata": {"resourceVersion": svc.metadata.resource_version, "finalizers": rest}});
        ctx.client
            .api::<Service>(ns)
            .patch(&svc.metadata.name, &patch)
            .await?;
        return Ok(Action::await_change());
    }
    for child in children
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
    {
        match api.delete(&child.metadata.name).await {
            Err(e) if !e.is_not_found() => return Err(e.into()),
            _ => {}
        }
    }
    Ok(Action::requeue(Duration::from_millis(500)))
}
