//! Root placement: assigns `Instance.spec.cluster`.
//!
//! Candidates are the Clusters as they report themselves (Ready condition, runtimes,
//! allocatable, location, labels). Work placed on a cluster but not yet bound to one of
//! its nodes counts against the cluster's allocatable, as do this controller's own
//! recent placements until the cache shows them, so a burst does not over-commit. When
//! nothing fits the Instance gets `Scheduled=False` with the reason and an Event, and
//! is retried when clusters change. Instances of a cluster that stays NotReady (or
//! disappears) longer than the grace period are placed again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use client::runtime::{Action, Controller, ObjectRef, Recorder, Store};
use client::{Api, Client, ListParams};
use crds::{
    find_condition, set_condition, Cluster, ConditionStatus, EventType, Instance, Phase, Resources,
};
use scheduler::{Candidate, Decision, Request, Tier};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{Error, RootConfig};

struct Ctx {
    client: Client,
    instances: Store<Instance>,
    clusters: Store<Cluster>,
    recorder: Recorder,
    grace: Duration,
    /// Placements written but maybe not yet in the cache: instance → cluster.
    recent: Mutex<HashMap<ObjectRef, (String, Resources, String)>>,
}

pub async fn run(client: Client, config: &RootConfig, shutdown: CancellationToken) {
    let mut controller = Controller::new(client.api::<Instance>(None), ListParams::default())
        .name("placement")
        .concurrency(config.concurrency);
    let instances = controller.store();
    let for_mapper = instances.clone();
    // A cluster change queues the Instances waiting for a cluster and those on it.
    let clusters = controller.watches(
        client.api::<Cluster>(None),
        ListParams::default(),
        move |c: &Cluster| {
            for_mapper
                .find(|i| {
                    i.spec.cluster.is_none()
                        || i.spec.cluster.as_deref() == Some(c.metadata.name.as_str())
                })
                .iter()
                .map(|i| ObjectRef::of(i.as_ref()))
                .collect()
        },
    );
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), "root-placement"),
        client,
        instances,
        clusters,
        grace: config.cluster_grace,
        recent: Mutex::default(),
    });
    controller
        .run(
            move |i| reconcile(i, ctx.clone()),
            shutdown.cancelled_owned(),
        )
        .await;
}

/// How long the cluster has been unusable, if it is.
fn unready_for(cluster: Option<&Cluster>) -> Option<Duration> {
    let Some(cluster) = cluster else {
        return Some(Duration::MAX);
    };
    let status = cluster.status.as_ref()?;
    let ready = find_condition(&status.conditions, "Ready");
    match ready {
        Some(c) if c.status == ConditionStatus::True => None,
        Some(c) => {
            let since = c.last_transition_time.unwrap_or_else(Utc::now);
            Some((Utc::now() - since).to_std().unwrap_or_default())
        }
        None => Some(Duration::ZERO),
    }
}

async fn reconcile(instance: Arc<Instance>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if instance.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let key = ObjectRef::of(instance.as_ref());
    let api: Api<Instance> = ctx.client.api(instance.metadata.namespace.as_deref());
    if let Some(cluster) = &instance.spec.cluster {
        let known = ctx.clusters.get(&ObjectRef::new(None, cluster));
        return match unready_for(known.as_deref()) {
            None => Ok(Action::await_change()),
            Some(down) if down >= ctx.grace => {
                // Place it again: clear the cluster (and node) at the version we read.
                let patch = json!({
                    "metadata": {"resourceVersion": instance.metadata.resource_version},
                    "spec": {"cluster": null, "node": null},
                });
                api.patch(&instance.metadata.name, &patch).await?;
                let why = if known.is_none() {
                    "was deleted".to_string()
                } else {
                    format!("has been NotReady for {}s", down.as_secs())
                };
                let message = format!("cluster {cluster} {why}; placing the instance again");
                ctx.recorder
                    .record(
                        instance.as_ref(),
                        EventType::Warning,
                        "ClusterLost",
                        &message,
                    )
                    .await;
                Ok(Action::await_change())
            }
            Some(down) => Ok(Action::requeue(
                ctx.grace - down + Duration::from_millis(100),
            )),
        };
    }

    let decision = {
        // One decision at a time, so concurrent placements see each other.
        let mut recent = ctx.recent.lock().expect("recent lock");
        // Forget placements the cache now shows (or whose Instance is gone).
        recent.retain(|k, (cluster, _, _)| {
            ctx.instances
                .get(k)
                .is_some_and(|i| i.spec.cluster.as_deref() != Some(cluster.as_str()))
        });
        let candidates = candidates(&ctx, &instance, &recent);
        let request = Request {
            tier: Tier::Cluster,
            runtime: instance.spec.template.runtime,
            resources: &instance.spec.template.resources,
            placement: &instance.spec.template.placement,
        };
        let decision = scheduler::schedule(&candidates, &request);
        if let Decision::Place(c) = &decision {
            recent.insert(
                key.clone(),
                (
                    c.clone(),
                    instance.spec.template.resources.clone(),
                    instance.spec.service.clone(),
                ),
            );
        }
        decision
    };
    let now = Utc::now();
    let mut status = instance.status.clone().unwrap_or_default();
    match decision {
        Decision::Place(cluster) => {
            let patch = json!({
                "metadata": {"resourceVersion": instance.metadata.resource_version},
                "spec": {"cluster": cluster},
            });
            if let Err(e) = api.patch(&instance.metadata.name, &patch).await {
                ctx.recent.lock().expect("recent lock").remove(&key);
                return Err(e.into());
            }
            status.phase = Phase::Scheduled;
            set_condition(
                &mut status.conditions,
                "Scheduled",
                ConditionStatus::True,
                "Placed",
                &format!("placed on cluster {cluster}"),
                now,
            );
            let patch = json!({"status": {"phase": status.phase, "reason": null, "message": null, "conditions": status.conditions}});
            api.patch_status(&instance.metadata.name, &patch).await?;
            ctx.recorder
                .record(
                    instance.as_ref(),
                    EventType::Normal,
                    "Placed",
                    &format!("placed on cluster {cluster}"),
                )
                .await;
            Ok(Action::await_change())
        }
        Decision::Unschedulable { reason, message } => {
            let changed = set_condition(
                &mut status.conditions,
                "Scheduled",
                ConditionStatus::False,
                reason,
                &message,
                now,
            );
            if changed {
                let patch = json!({"status": {"phase": Phase::Pending, "reason": reason, "message": message, "conditions": status.conditions}});
                api.patch_status(&instance.metadata.name, &patch).await?;
                ctx.recorder
                    .record(
                        instance.as_ref(),
                        EventType::Warning,
                        "FailedPlacement",
                        &message,
                    )
                    .await;
            }
            // Cluster changes trigger a retry; this is the safety net.
            Ok(Action::requeue(Duration::from_secs(30)))
        }
    }
}

fn add(total: &mut Resources, r: &Resources) {
    total.cpu_millicores += r.cpu_millicores;
    total.memory_mib += r.memory_mib;
    total.gpus += r.gpus;
    total.storage_mib += r.storage_mib;
}

fn candidates(
    ctx: &Ctx,
    instance: &Instance,
    recent: &HashMap<ObjectRef, (String, Resources, String)>,
) -> Vec<Candidate> {
    let mut in_flight: HashMap<String, Resources> = HashMap::new();
    let mut replicas: HashMap<String, u32> = HashMap::new();
    for i in ctx.instances.state() {
        let Some(cluster) = &i.spec.cluster else {
            continue;
        };
        if i.spec.node.is_none() {
            add(
                in_flight.entry(cluster.clone()).or_default(),
                &i.spec.template.resources,
            );
        }
        if i.spec.service == instance.spec.service
            && i.metadata.namespace == instance.metadata.namespace
        {
            *replicas.entry(cluster.clone()).or_default() += 1;
        }
    }
    for (cluster, resources, service) in recent.values() {
        add(in_flight.entry(cluster.clone()).or_default(), resources);
        if *service == instance.spec.service {
            *replicas.entry(cluster.clone()).or_default() += 1;
        }
    }
    ctx.clusters
        .state()
        .iter()
        .map(|c| {
            let status = c.status.clone().unwrap_or_default();
            Candidate {
                name: c.metadata.name.clone(),
                labels: c.metadata.labels.clone(),
                ready: crds::is_true(&status.conditions, "Ready")
                    && c.metadata.deletion_timestamp.is_none(),
                schedulable: true,
                runtimes: status.runtimes.clone(),
                location: c.spec.location.clone(),
                allocatable: status.allocatable.clone().unwrap_or_default(),
                in_flight: in_flight.get(&c.metadata.name).cloned().unwrap_or_default(),
                replicas_here: replicas.get(&c.metadata.name).copied().unwrap_or_default(),
            }
        })
        .collect()
}
