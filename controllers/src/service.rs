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
use crds::conditions::{
    reason, AVAILABLE, LATENCY_ENFORCED, PLACED, READY, RECONCILING, SCHEDULED, STALLED,
};
use crds::{
    find_with_status, is_false, set_condition, ConditionStatus, EventType, Instance, InstanceSpec,
    ObjectMeta, OwnerReference, Phase, Service, ServiceStatus, API_VERSION,
};
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{
    index_by_service, instance_owner, owned_by, stable_hash, Error, RootConfig, ServiceKey,
    BY_SERVICE,
};

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

/// Run the service controller against the API at `client` until `shutdown`.
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
        instance_owner,
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
    i.status
        .as_ref()
        .is_some_and(|s| s.phase == Phase::Pending && is_false(&s.conditions, SCHEDULED))
}

/// `Scheduled=False` reasons that mean no target can take an Instance as it is (the
/// placement controllers keep trying, but the Service cannot progress by itself): the
/// Service is `Stalled`. `NodeLost`/`ClusterLost` are not among them: such an Instance
/// is being placed again.
const CANNOT_PLACE: [&str; 3] = [
    reason::NO_RESOURCES_AVAILABLE,
    reason::NO_TARGET_CLUSTER,
    reason::NO_TARGET_NODE,
];

/// Reason of `Ready=True` (and of `Reconciling=False`, `Stalled=False` then).
const ALL_REPLICAS_READY: &str = "AllReplicasReady";
/// Reason of `Ready=False` and `Stalled=False` while the controllers still make progress.
const PROGRESSING: &str = "Progressing";
/// Reason of `Stalled=True` for an Instance that failed and is not restarted.
const INSTANCE_FAILED: &str = "InstanceFailed";

/// One condition as computed: type, status, reason, message.
type Computed = (&'static str, ConditionStatus, String, String);

/// Why a Service cannot progress, if it cannot: the first of its Instances (those of
/// the current template first) that nothing can place, or that failed for good.
fn stall<'a>(mine: impl Iterator<Item = &'a Instance>) -> Option<(String, String)> {
    let mut failed = None;
    for i in mine {
        let Some(s) = &i.status else { continue };
        let name = &i.metadata.name;
        if s.phase == Phase::Pending {
            let unplaced = find_with_status(&s.conditions, SCHEDULED, ConditionStatus::False)
                .filter(|c| CANNOT_PLACE.contains(&c.reason.as_str()));
            if let Some(c) = unplaced {
                return Some((c.reason.clone(), format!("instance {name}: {}", c.message)));
            }
        }
        if s.phase == Phase::Failed && failed.is_none() {
            let why = match (s.reason.as_str(), s.message.as_str()) {
                ("", "") => String::new(),
                (r, "") => format!(" ({r})"),
                ("", m) => format!(": {m}"),
                (r, m) => format!(" ({r}): {m}"),
            };
            failed = Some((
                INSTANCE_FAILED.to_string(),
                format!("instance {name} failed and is not restarted{why}"),
            ));
        }
    }
    failed
}

/// The `Ready`, `Reconciling` and `Stalled` conditions of a Service that wants
/// `replicas` Instances of the template with `hash`, from `mine`, its live Instances.
///
/// Ready: exactly `replicas` Instances, all of the current template and all running.
/// Stalled: not ready, and an Instance cannot be placed ([`CANNOT_PLACE`]) or failed
/// for good; the reason is the Instance's. Reconciling: neither ready nor stalled (a
/// scale or a rollout is under way, or Instances are starting). kstatus reads
/// `Reconciling=True` as `InProgress` and `Stalled=True` as `Failed`.
fn progress(mine: &[Arc<Instance>], hash: &str, replicas: u32) -> [Computed; 3] {
    let is_current =
        |i: &Instance| i.metadata.labels.get(TEMPLATE_LABEL).map(String::as_str) == Some(hash);
    let current: Vec<&Instance> = mine
        .iter()
        .map(Arc::as_ref)
        .filter(|i| is_current(i))
        .collect();
    let old = mine.len() - current.len();
    let running_current = current.iter().filter(|i| running(i)).count();
    let counts = format!("{running_current} of {replicas} wanted instances running");
    let done =
        old == 0 && current.len() == replicas as usize && running_current == replicas as usize;
    use ConditionStatus::{False, True};
    if done {
        let ok = |t| {
            (
                t,
                if t == READY { True } else { False },
                ALL_REPLICAS_READY.to_string(),
                counts.clone(),
            )
        };
        return [ok(READY), ok(RECONCILING), ok(STALLED)];
    }
    // Current-template Instances first: an old one being replaced is less telling.
    let ordered = current
        .iter()
        .copied()
        .chain(mine.iter().map(Arc::as_ref).filter(|i| !is_current(i)));
    if let Some((why, message)) = stall(ordered) {
        return [
            (READY, False, why.clone(), message.clone()),
            (RECONCILING, False, why.clone(), message.clone()),
            (STALLED, True, why, message),
        ];
    }
    let (doing, what) = if old > 0 {
        (
            "RollingUpdate",
            format!("rolling out a new template, old instances left: {old}"),
        )
    } else if current.len() < replicas as usize {
        (
            "ScalingUp",
            format!("{} of {replicas} instances exist", current.len()),
        )
    } else if current.len() > replicas as usize {
        (
            "ScalingDown",
            format!("{} instances exist, {replicas} wanted", current.len()),
        )
    } else {
        (
            "InstancesStarting",
            "waiting for instances to run".to_string(),
        )
    };
    let message = format!("{what}; {counts}");
    [
        (READY, False, PROGRESSING.to_string(), message.clone()),
        (RECONCILING, True, doing.to_string(), message.clone()),
        (STALLED, False, PROGRESSING.to_string(), message),
    ]
}

/// What one reconcile of a Service does, drawn from its Instances alone.
#[derive(Debug, Default, PartialEq)]
struct Plan<'a> {
    /// Current-template Instances beyond the replica count, highest ordinal first.
    scale_down: Vec<&'a Instance>,
    /// Ordinals of current-template Instances to create, lowest first.
    create: Vec<u32>,
    /// Old-template Instances to delete now: one for each new one that runs or cannot be
    /// placed; those not running first, then the highest ordinals.
    replace: Vec<&'a Instance>,
}

/// Plan a reconcile of a Service that wants `replicas` Instances of the template with
/// `hash`, given `mine`, its live Instances. `awaited(ordinal)` says whether this
/// controller already created that ordinal and waits for its cache to show it (such an
/// ordinal is not created again).
///
/// Scaling creates every missing ordinal at once; during a rollout (old-template
/// Instances are left) at most one Instance more than `replicas` exists at a time.
fn plan<'a>(
    mine: &'a [Arc<Instance>],
    hash: &str,
    replicas: u32,
    awaited: impl Fn(u32) -> bool,
) -> Plan<'a> {
    let (current, old): (Vec<&Instance>, Vec<&Instance>) = mine
        .iter()
        .map(Arc::as_ref)
        .partition(|i| i.metadata.labels.get(TEMPLATE_LABEL).map(String::as_str) == Some(hash));

    // Scale down: current-template Instances beyond the replica count go, highest first.
    let mut scale_down: Vec<&Instance> = current
        .iter()
        .copied()
        .filter(|i| i.spec.ordinal >= replicas)
        .collect();
    scale_down.sort_by_key(|i| std::cmp::Reverse(i.spec.ordinal));
    let kept: Vec<&Instance> = current
        .iter()
        .copied()
        .filter(|i| i.spec.ordinal < replicas)
        .collect();
    let have: HashSet<u32> = kept.iter().map(|i| i.spec.ordinal).collect();
    let missing = (0..replicas).filter(|o| !have.contains(o) && !awaited(*o));

    // Create: all missing at once, or one at a time (surge of one) during a rollout.
    let create = if old.is_empty() {
        missing.collect()
    } else if kept.len() + old.len() < replicas as usize + 1 {
        missing.take(1).collect()
    } else {
        Vec::new()
    };

    // Rollout: an old Instance goes for each new one that runs, and for each new one that
    // cannot be placed (the old ones may hold what it needs: room, a host port).
    let ready_new = kept.iter().filter(|i| running(i)).count();
    let stuck_new = kept.iter().filter(|i| unplaceable(i)).count();
    let old_to_keep = (replicas as usize).saturating_sub(ready_new + stuck_new);
    let mut replace = old;
    replace.sort_by_key(|i| (running(i), std::cmp::Reverse(i.spec.ordinal)));
    replace.truncate(replace.len().saturating_sub(old_to_keep));
    Plan {
        scale_down,
        create,
        replace,
    }
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
    let mut mine = ctx.instances.by_index(
        BY_SERVICE,
        &ServiceKey::new(ns.as_deref(), &svc.metadata.name).key(),
    );
    mine.retain(|i| owned_by(&i.metadata, &uid) && i.metadata.deletion_timestamp.is_none());
    let plan = {
        let mut expected = ctx.expected.lock().expect("expectations lock");
        expected.retain(|k, at| at.elapsed() < EXPECTATION_TTL && ctx.instances.get(k).is_none());
        plan(&mine, &hash, replicas, |o| {
            let name = instance_name(&svc.metadata.name, &hash, o);
            expected.contains_key(&ObjectRef::new(ns.as_deref(), &name))
        })
    };

    let deletes: Vec<_> = plan
        .scale_down
        .iter()
        .map(|i| {
            let (api, key) = (api.clone(), ObjectRef::of(*i));
            let ctx = ctx.clone();
            async move { delete(&ctx, &api, &key).await.map(|()| Some(key.name)) }
        })
        .collect();
    let deleted = parallel(deletes.into_iter()).await?;
    record_batch(&ctx, &svc, "ScaledDown", "deleted", deleted);

    let creates: Vec<_> = plan
        .create
        .iter()
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
    record_batch(&ctx, &svc, "ScaledUp", "created", created);

    for i in &plan.replace {
        delete(&ctx, &api, &ObjectRef::of(*i)).await?;
        let message = format!("replaced instance {} (template changed)", i.metadata.name);
        ctx.recorder
            .record(svc.as_ref(), EventType::Normal, "RollingUpdate", &message);
    }

    update_status(&svc, &ctx, &mine, &hash, replicas).await?;
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
fn record_batch(ctx: &Ctx, svc: &Service, reason: &str, verb: &str, names: Vec<String>) {
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
        .record(svc, EventType::Normal, reason, &message);
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
    hash: &str,
    replicas: u32,
) -> Result<(), Error> {
    let now = Utc::now();
    let old = svc.status.clone().unwrap_or_default();
    let ready = mine.iter().filter(|i| running(i)).count() as i32;
    let mut status = ServiceStatus {
        replicas: mine.len() as i32,
        ready_replicas: ready,
        // The ready entries its Endpoints get (the endpoints controller's rule, on
        // the same Instances).
        ready_endpoints: Some(
            mine.iter()
                .filter(|i| crate::endpoints::ready_endpoint(i))
                .count() as i32,
        ),
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
        AVAILABLE,
        available,
        reason,
        &message,
        now,
    );
    // Surface why Instances cannot be placed.
    let unplaced = mine.iter().find_map(|i| {
        let c = find_with_status(
            &i.status.as_ref()?.conditions,
            SCHEDULED,
            ConditionStatus::False,
        )?;
        Some((&i.metadata.name, c))
    });
    match unplaced {
        Some((name, c)) => set_condition(
            &mut status.conditions,
            PLACED,
            ConditionStatus::False,
            &c.reason,
            &format!("instance {name}: {}", c.message),
            now,
        ),
        None => set_condition(
            &mut status.conditions,
            PLACED,
            ConditionStatus::True,
            "AllInstancesPlaced",
            "",
            now,
        ),
    };
    for (type_, value, reason, message) in progress(mine, hash, replicas) {
        set_condition(&mut status.conditions, type_, value, &reason, &message, now);
    }
    match latency_not_enforced(&svc.spec.template.placement) {
        Some(message) => set_condition(
            &mut status.conditions,
            LATENCY_ENFORCED,
            ConditionStatus::False,
            "NotMeasured",
            &message,
            now,
        ),
        None => {
            status.conditions.retain(|c| c.type_ != LATENCY_ENFORCED);
            false
        }
    };
    if status != old {
        // Everything of the status this controller owns, applied (no version: the
        // address allocator's writes of the same status never make it a 409); the
        // allocator's conditions are its own and not sent.
        let allocators = [
            <Service as crate::subnets::Addressed>::CONDITION,
            crate::subnets::CLOSEST_IP_ASSIGNED,
        ];
        let conditions: Vec<&crds::Condition> = status
            .conditions
            .iter()
            .filter(|c| !allocators.contains(&c.type_.as_str()))
            .collect();
        let owned = json!({
            "replicas": status.replicas,
            "readyReplicas": status.ready_replicas,
            "readyEndpoints": status.ready_endpoints,
            "observedGeneration": status.observed_generation,
            "conditions": conditions,
        });
        let api: Api<Service> = ctx.client.api(svc.metadata.namespace.as_deref());
        api.apply_own_status(&svc.metadata.name, &owned).await?;
    }
    Ok(())
}

/// For a Service with a latency constraint: the message saying it is kept but not
/// acted on (nothing measures latency yet).
fn latency_not_enforced(placement: &crds::Placement) -> Option<String> {
    let l = placement.latency.as_ref()?;
    Some(format!(
        "placement.latency ({} ms to {}) is kept but not enforced: no latency is measured \
         yet, so Instances are placed without it",
        l.max_ms, l.target
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_latency_constraint_is_said_not_enforced() {
        let mut placement = crds::Placement::default();
        assert_eq!(latency_not_enforced(&placement), None);
        placement.latency = Some(crds::LatencyConstraint {
            target: "munich".into(),
            max_ms: 20,
        });
        let message = latency_not_enforced(&placement).unwrap();
        assert!(
            message.starts_with("placement.latency (20 ms to munich) is kept but not enforced"),
            "{message}"
        );
    }

    /// How an Instance of the table is doing.
    #[derive(Clone, Copy)]
    enum State {
        Pending,
        Unplaceable,
        Running,
        /// Taken off a lost node, to be placed again.
        Lost,
        /// Failed for good.
        Failed,
    }

    /// An Instance of template `hash` with `ordinal`, in `state`.
    fn instance(hash: &str, ordinal: u32, state: State) -> Arc<Instance> {
        let mut status = crds::InstanceStatus::default();
        match state {
            State::Pending => status.phase = Phase::Pending,
            State::Running => status.phase = Phase::Running,
            State::Unplaceable => {
                status.phase = Phase::Pending;
                set_condition(
                    &mut status.conditions,
                    SCHEDULED,
                    ConditionStatus::False,
                    scheduler::NO_RESOURCES,
                    "0/1 clusters fit",
                    Utc::now(),
                );
            }
            State::Lost => {
                status.phase = Phase::Pending;
                set_condition(
                    &mut status.conditions,
                    SCHEDULED,
                    ConditionStatus::False,
                    "NodeLost",
                    "node n1 was deleted",
                    Utc::now(),
                );
            }
            State::Failed => {
                status.phase = Phase::Failed;
                status.reason = "StartFailed".into();
                status.message = "no such file".into();
            }
        }
        let spec = InstanceSpec {
            service: "web".into(),
            ordinal,
            ..Default::default()
        };
        let mut i = Instance::new(&instance_name("web", hash, ordinal), spec);
        i.metadata.labels = [(TEMPLATE_LABEL.to_string(), hash.to_string())].into();
        i.status = Some(status);
        Arc::new(i)
    }

    /// A plan by Instance names: (scaled down, created ordinals, replaced).
    type Names = (Vec<String>, Vec<u32>, Vec<String>);

    /// `plan` as [`Names`].
    fn names(plan: &Plan) -> Names {
        let names = |is: &[&Instance]| is.iter().map(|i| i.metadata.name.clone()).collect();
        (
            names(&plan.scale_down),
            plan.create.clone(),
            names(&plan.replace),
        )
    }

    #[test]
    fn ready_reconciling_and_stalled() {
        use ConditionStatus::{False, True};
        use State::*;
        let new = |o, s| instance("new", o, s);
        let old = |o, s| instance("old", o, s);
        let running = |n: u32, of: u32| format!("{n} of {of} wanted instances running");
        let ready = |r: &str, m: &str| (READY, True, r.to_string(), m.to_string());
        let not = |t: &'static str, r: &str, m: &str| (t, False, r.to_string(), m.to_string());
        let yes = |t: &'static str, r: &str, m: &str| (t, True, r.to_string(), m.to_string());
        // (what, instances, replicas) → (Ready, Reconciling, Stalled)
        let done = |n| {
            let m = running(n, n);
            [
                ready(ALL_REPLICAS_READY, &m),
                not(RECONCILING, ALL_REPLICAS_READY, &m),
                not(STALLED, ALL_REPLICAS_READY, &m),
            ]
        };
        let progressing = |doing: &str, m: String| {
            [
                not(READY, PROGRESSING, &m),
                yes(RECONCILING, doing, &m),
                not(STALLED, PROGRESSING, &m),
            ]
        };
        let stalled = |why: &str, m: &str| {
            [
                not(READY, why, m),
                not(RECONCILING, why, m),
                yes(STALLED, why, m),
            ]
        };
        let unplaced = |o: u32| {
            format!(
                "instance {}: 0/1 clusters fit",
                instance_name("web", "new", o)
            )
        };
        let failed = format!(
            "instance {} failed and is not restarted (StartFailed): no such file",
            instance_name("web", "new", 1)
        );
        #[rustfmt::skip]
        let cases = [
            ("all running", vec![new(0, Running), new(1, Running)], 2, done(2)),
            ("scaled to zero, nothing left", vec![], 0, done(0)),
            ("a new Service: nothing created yet", vec![], 2,
             progressing("ScalingUp", format!("0 of 2 instances exist; {}", running(0, 2)))),
            ("an Instance is starting", vec![new(0, Running), new(1, Pending)], 2,
             progressing("InstancesStarting", format!("waiting for instances to run; {}", running(1, 2)))),
            ("an Instance on a lost node is placed again: still progressing",
             vec![new(0, Running), new(1, Lost)], 2,
             progressing("InstancesStarting", format!("waiting for instances to run; {}", running(1, 2)))),
            ("scaling down", vec![new(0, Running), new(1, Running), new(2, Running)], 2,
             progressing("ScalingDown", format!("3 instances exist, 2 wanted; {}", running(3, 2)))),
            ("a rollout with old Instances left", vec![old(0, Running), new(0, Running), new(1, Running)], 2,
             progressing("RollingUpdate", format!("rolling out a new template, old instances left: 1; {}", running(2, 2)))),
            ("nothing can place an Instance: stalled with its reason",
             vec![new(0, Running), new(1, Unplaceable)], 2,
             stalled(scheduler::NO_RESOURCES, &unplaced(1))),
            ("a rollout whose new Instance cannot be placed",
             vec![old(0, Running), old(1, Running), new(0, Unplaceable)], 2,
             stalled(scheduler::NO_RESOURCES, &unplaced(0))),
            ("a failed Instance stalls the Service",
             vec![new(0, Running), new(1, Failed)], 2, stalled(INSTANCE_FAILED, &failed)),
            ("an unplaceable one is named before a failed one",
             vec![new(1, Failed), new(0, Unplaceable)], 2,
             stalled(scheduler::NO_RESOURCES, &unplaced(0))),
        ];
        for (what, mine, replicas, expected) in cases {
            assert_eq!(progress(&mine, "new", replicas), expected, "{what}");
        }
    }

    #[test]
    fn rollout_plans() {
        use State::*;
        let new = |o, s| instance("new", o, s);
        let old = |o, s| instance("old", o, s);
        let n = |o: u32| instance_name("web", "new", o);
        let o = |o: u32| instance_name("web", "old", o);
        #[rustfmt::skip]
        let cases = [
            ("scale up from nothing: all at once",
             vec![], 3, vec![], (vec![], vec![0, 1, 2], vec![])),
            ("scale up fills the gaps",
             vec![new(1, Running)], 3, vec![], (vec![], vec![0, 2], vec![])),
            ("an awaited create is not sent again",
             vec![new(0, Running)], 3, vec![1], (vec![], vec![2], vec![])),
            ("settled: nothing to do",
             vec![new(0, Running), new(1, Pending)], 2, vec![], (vec![], vec![], vec![])),
            ("scale down: the highest ordinals go",
             vec![new(0, Running), new(2, Running), new(1, Running)], 1, vec![], (vec![n(2), n(1)], vec![], vec![])),
            ("scale to zero",
             vec![new(0, Running)], 0, vec![], (vec![n(0)], vec![], vec![])),
            ("rollout starts with one surge Instance",
             vec![old(0, Running), old(1, Running)], 2, vec![], (vec![], vec![0], vec![])),
            ("rollout waits while the new one is not running",
             vec![old(0, Running), old(1, Running), new(0, Pending)], 2, vec![], (vec![], vec![], vec![])),
            ("a running new one replaces an old one, the highest first",
             vec![old(0, Running), old(1, Running), new(0, Running)], 2, vec![], (vec![], vec![], vec![o(1)])),
            ("an old one that is not running goes first",
             vec![old(0, Pending), old(1, Running), new(0, Running)], 2, vec![], (vec![], vec![], vec![o(0)])),
            ("after a replacement the next surge Instance comes",
             vec![old(0, Running), new(0, Running)], 2, vec![], (vec![], vec![1], vec![])),
            ("an unplaceable new one lets an old one go (it may hold the room)",
             vec![old(0, Running), old(1, Running), new(0, Unplaceable)], 2, vec![], (vec![], vec![], vec![o(1)])),
            ("the last old one goes once all new ones run",
             vec![old(1, Running), new(0, Running), new(1, Running)], 2, vec![], (vec![], vec![], vec![o(1)])),
            ("scaled down during a rollout: excess new ones and old ones beyond the count",
             vec![old(0, Running), new(0, Running), new(1, Running)], 1, vec![], (vec![n(1)], vec![], vec![o(0)])),
        ];
        for (name, mine, replicas, awaited, expected) in cases {
            let plan = plan(&mine, "new", replicas, |o| awaited.contains(&o));
            assert_eq!(names(&plan), expected, "{name}");
        }
    }
}
