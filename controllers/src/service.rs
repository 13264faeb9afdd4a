//! The service controller: keeps `spec.replicas` Instances per Service.
//!
//! Instances are named `<service>-<template hash>-<ordinal>`, so a reconcile working
//! from a cache that lags behind its own writes creates nothing twice (the second
//! create is a 409). A template change is rolled out one Instance at a time with one
//! extra Instance at most: a new one is created, and an old one goes only once a new
//! one is Running — or once a new one cannot be placed at all, since the old ones may
//! hold what it needs (the room of a full cluster, a node's host port).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use client::runtime::{Action, Controller, ObjectRef, Recorder, Store};
use client::{Api, Client, ListParams};
use crds::{
    set_condition, ConditionStatus, EventType, Instance, InstanceSpec, ObjectMeta, OwnerReference,
    Phase, Service, ServiceStatus, API_VERSION,
};
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{index_by_service, owned_by, service_key, stable_hash, Error, RootConfig, BY_SERVICE};

/// Label with the owning Service's name.
pub const SERVICE_LABEL: &str = "oakestra.io/service";
/// Label with the hash of the template an Instance runs.
pub const TEMPLATE_LABEL: &str = "oakestra.io/template-hash";

struct Ctx {
    client: Client,
    instances: Store<Instance>,
    recorder: Recorder,
    /// Instances this controller created (or found existing) that its cache may not
    /// show yet, with when: a reconcile from a lagging cache does not send their
    /// creates again (each would be a 409 through the store's writer). Forgotten once
    /// the cache shows them, or after [`EXPECTATION_TTL`].
    expected: Mutex<HashMap<ObjectRef, Instant>>,
}

/// How long a create this controller made is trusted without the cache showing it.
const EXPECTATION_TTL: Duration = Duration::from_secs(30);

pub async fn run(client: Client, config: &RootConfig, shutdown: CancellationToken) {
    let mut controller = Controller::new(client.api::<Service>(None), ListParams::default())
        .name("service")
        .concurrency(config.concurrency)
        // A burst changes a Service's Instances thousands of times: one reconcile
        // (a scan of its Instances and at most one status write) per 100 ms is enough.
        .debounce(Duration::from_millis(100));
    // An Instance change queues its Service.
    let instances = controller.watches(
        client.api::<Instance>(None),
        ListParams::default(),
        |i: &Instance| {
            vec![ObjectRef::new(
                i.metadata.namespace.as_deref(),
                &i.spec.service,
            )]
        },
    );
    index_by_service(&instances);
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), "service-controller"),
        client,
        instances,
        expected: Mutex::default(),
    });
    controller
        .run(
            move |svc| reconcile(svc, ctx.clone()),
            shutdown.cancelled_owned(),
        )
        .await;
}

/// The hash of a template, as a short hex string.
pub fn template_hash(svc: &Service) -> String {
    let json = serde_json::to_vec(&svc.spec.template).expect("templates serialize");
    format!("{:010x}", stable_hash(&json) & 0xff_ffff_ffff)
}

fn instance_name(svc: &str, hash: &str, ordinal: u32) -> String {
    format!("{svc}-{hash}-{ordinal}")
}

fn new_instance(svc: &Service, hash: &str, ordinal: u32) -> Instance {
    let name = instance_name(&svc.metadata.name, hash, ordinal);
    Instance {
        api_version: API_VERSION.into(),
        kind: "Instance".into(),
        metadata: ObjectMeta {
            name,
            namespace: svc.metadata.namespace.clone(),
            labels: [
                (SERVICE_LABEL.to_string(), svc.metadata.name.clone()),
                (TEMPLATE_LABEL.to_string(), hash.to_string()),
            ]
            .into(),
            owner_references: vec![OwnerReference {
                api_version: API_VERSION.into(),
                kind: "Service".into(),
                name: svc.metadata.name.clone(),
                uid: svc.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }],
            ..Default::default()
        },
        spec: InstanceSpec {
            service: svc.metadata.name.clone(),
            ordinal,
            template: svc.spec.template.clone(),
            cluster: None,
            node: None,
        },
        status: None,
    }
}

/// Ready: running, or — for a one-shot workload (`restartPolicy: Never`) — finished well.
fn running(i: &Instance) -> bool {
    let one_shot = i.spec.template.restart_policy == crds::RestartPolicy::Never;
    i.status
        .as_ref()
        .is_some_and(|s| s.phase == Phase::Running || (one_shot && s.phase == Phase::Succeeded))
}

/// Pending because no cluster or node could take it.
fn unplaceable(i: &Instance) -> bool {
    i.status.as_ref().is_some_and(|s| {
        s.phase == Phase::Pending
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Scheduled" && c.status == ConditionStatus::False)
    })
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = svc.metadata.namespace.clone();
    let uid = svc.metadata.uid.clone().unwrap_or_default();
    let api: Api<Instance> = ctx.client.api(ns.as_deref());
    let hash = template_hash(&svc);
    let replicas = svc.spec.replicas.max(0) as u32;
    let mut mine = ctx
        .instances
        .by_index(BY_SERVICE, &service_key(ns.as_deref(), &svc.metadata.name));
    mine.retain(|i| owned_by(&i.metadata, &uid) && i.metadata.deletion_timestamp.is_none());
    let (current, old): (Vec<_>, Vec<_>) = mine
        .iter()
        .partition(|i| i.metadata.labels.get(TEMPLATE_LABEL) == Some(&hash));

    // Scale down: current-template Instances beyond the replica count go, highest first.
    let mut excess: Vec<_> = current
        .iter()
        .filter(|i| i.spec.ordinal >= replicas)
        .collect();
    excess.sort_by_key(|i| std::cmp::Reverse(i.spec.ordinal));
    let deletes: Vec<_> = excess
        .iter()
        .map(|i| {
            let (api, key) = (api.clone(), ObjectRef::of(i.as_ref()));
            let ctx = ctx.clone();
            async move { delete(&ctx, &api, &key).await.map(|()| Some(key.name)) }
        })
        .collect();
    let deleted = parallel(deletes.into_iter()).await?;
    record_batch(&ctx, &svc, "ScaledDown", "deleted", deleted).await;
    let kept: Vec<_> = current
        .iter()
        .filter(|i| i.spec.ordinal < replicas)
        .collect();
    let have: HashSet<u32> = kept.iter().map(|i| i.spec.ordinal).collect();
    let missing: Vec<u32> = {
        let mut expected = ctx.expected.lock().expect("expectations lock");
        expected.retain(|k, at| at.elapsed() < EXPECTATION_TTL && ctx.instances.get(k).is_none());
        (0..replicas)
            .filter(|o| !have.contains(o))
            .filter(|o| {
                let name = instance_name(&svc.metadata.name, &hash, *o);
                !expected.contains_key(&ObjectRef::new(ns.as_deref(), &name))
            })
            .collect()
    };

    // Create: all missing at once, or one at a time (surge of one) during a rollout.
    let to_create = if old.is_empty() {
        missing.len()
    } else if kept.len() + old.len() < replicas as usize + 1 {
        missing.len().min(1)
    } else {
        0
    };
    let creates: Vec<_> = missing
        .iter()
        .take(to_create)
        .map(|ordinal| {
            let (api, instance) = (api.clone(), new_instance(&svc, &hash, *ordinal));
            let ctx = ctx.clone();
            async move {
                let result = match api.create(&instance).await {
                    Ok(_) => Ok(Some(instance.metadata.name.clone())),
                    Err(e) if e.is_conflict() => Ok(None), // already there; the cache is behind
                    Err(e) => Err(e),
                };
                if result.is_ok() {
                    ctx.expected
                        .lock()
                        .expect("expectations lock")
                        .insert(ObjectRef::of(&instance), Instant::now());
                }
                result
            }
        })
        .collect();
    let created = parallel(creates.into_iter()).await?;
    record_batch(&ctx, &svc, "ScaledUp", "created", created).await;

    // Rollout: an old Instance goes for each new one that runs, and for each new one that
    // cannot be placed (the old ones may hold what it needs: room, a host port).
    let ready_new = kept.iter().filter(|i| running(i)).count();
    let stuck_new = kept.iter().filter(|i| unplaceable(i)).count();
    let old_to_keep = (replicas as usize).saturating_sub(ready_new + stuck_new);
    let mut old_sorted: Vec<_> = old.iter().collect();
    old_sorted.sort_by_key(|i| (running(i), std::cmp::Reverse(i.spec.ordinal)));
    for i in old_sorted
        .iter()
        .take(old.len().saturating_sub(old_to_keep))
    {
        delete(&ctx, &api, &ObjectRef::of(i.as_ref())).await?;
        let message = format!("replaced instance {} (template changed)", i.metadata.name);
        ctx.recorder
            .record(svc.as_ref(), EventType::Normal, "RollingUpdate", &message)
            .await;
    }

    update_status(&svc, &ctx, &mine, replicas).await?;
    Ok(Action::await_change())
}

/// Run the writes of one reconcile concurrently (the store commits them together);
/// returns the names that were written.
async fn parallel<F, E>(writes: impl Iterator<Item = F>) -> Result<Vec<String>, Error>
where
    F: std::future::Future<Output = Result<Option<String>, E>>,
    Error: From<E>,
{
    let results: Vec<Result<Option<String>, E>> = futures::stream::iter(writes)
        .buffer_unordered(32)
        .collect()
        .await;
    let mut names = Vec::new();
    for r in results {
        names.extend(r?);
    }
    names.sort();
    Ok(names)
}

/// One Event for a batch of Instances ("created 3 instances: a, b, c").
async fn record_batch(ctx: &Ctx, svc: &Service, reason: &str, verb: &str, names: Vec<String>) {
    if names.is_empty() {
        return;
    }
    let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    let more = if names.len() > shown.len() {
        format!(" and {} more", names.len() - shown.len())
    } else {
        String::new()
    };
    let noun = if names.len() == 1 {
        "instance"
    } else {
        "instances"
    };
    let message = format!("{verb} {} {noun}: {}{more}", names.len(), shown.join(", "));
    ctx.recorder
        .record(svc, EventType::Normal, reason, &message)
        .await;
}

/// Delete Instance `key`, and forget that this controller expects to see it: a
/// deletion the cache shows before a reconcile has seen the create would otherwise leave
/// the expectation behind, and a scale-up within its TTL would not recreate the name.
async fn delete(ctx: &Ctx, api: &Api<Instance>, key: &ObjectRef) -> Result<(), Error> {
    ctx.expected.lock().expect("expectations lock").remove(key);
    match api.delete(&key.name).await {
        Err(e) if e.is_not_found() => Ok(()),
        other => Ok(other?),
    }
}

async fn update_status(
    svc: &Service,
    ctx: &Ctx,
    mine: &[Arc<Instance>],
    replicas: u32,
) -> Result<(), Error> {
    let now = Utc::now();
    let old = svc.status.clone().unwrap_or_default();
    let ready = mine.iter().filter(|i| running(i)).count() as i32;
    let mut status = ServiceStatus {
        replicas: mine.len() as i32,
        ready_replicas: ready,
        observed_generation: svc.metadata.generation,
        ..old.clone()
    };
    let (available, reason, message) = if ready >= replicas as i32 {
        (
            ConditionStatus::True,
            "MinimumReplicasAvailable",
            format!("{ready}/{replicas} instances running"),
        )
    } else {
        (
            ConditionStatus::False,
            "InstancesNotRunning",
            format!("{ready}/{replicas} instances running"),
        )
    };
    set_condition(
        &mut status.conditions,
        "Available",
        available,
        reason,
        &message,
        now,
    );
    // Surface why Instances cannot be placed.
    let unplaced = mine.iter().find_map(|i| {
        let c = i
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Scheduled" && c.status == ConditionStatus::False)?;
        Some((i.metadata.name.clone(), c.reason.clone(), c.message.clone()))
    });
    match unplaced {
        Some((name, reason, message)) => set_condition(
            &mut status.conditions,
            "Placed",
            ConditionStatus::False,
            &reason,
            &format!("instance {name}: {message}"),
            now,
        ),
        None => set_condition(
            &mut status.conditions,
            "Placed",
            ConditionStatus::True,
            "AllInstancesPlaced",
            "",
            now,
        ),
    };
    if status != old {
        // Only the fields this controller owns, at the version it read (409 if stale).
        let patch = json!({
            "metadata": {"resourceVersion": svc.metadata.resource_version},
            "status": {
                "replicas": status.replicas,
                "readyReplicas": status.ready_replicas,
                "observedGeneration": status.observed_generation,
                "conditions": status.conditions,
            },
        });
        let api: Api<Service> = ctx.client.api(svc.metadata.namespace.as_deref());
        api.patch_status(&svc.metadata.name, &patch).await?;
    }
    Ok(())
}
