//! The cluster tier's controllers, run by `oakestra cluster` next to its own API server:
//!
//! - **cluster sync**: registers the `Cluster` at the root and heartbeats its aggregated
//!   capacity, allocatable, runtimes and readiness; brings the Instances the root placed
//!   on this cluster down into the cluster API and sends their binding and status up.
//!   When the root is unreachable the cluster keeps running and healing from its own
//!   API; the caches catch up when the root returns.
//! - **cluster scheduler**: [`crate::placement`] over Nodes.
//! - **node lifecycle**: [`crate::lifecycle`] over Nodes; Instances of a node NotReady past
//!   the eviction timeout are bound to other nodes by the scheduler.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use client::runtime::{cache, Action, Controller, ObjectRef, Store};
use client::{Api, Client, ListParams};
use crds::{
    set_condition, Capacity, Cluster, ClusterSpec, ClusterStatus, ConditionStatus, Instance,
    InstanceStatus, Location, Node, ObjectMeta, Phase, RuntimeKind, API_VERSION,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// Settings of a cluster orchestrator.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Name of the cluster at the root.
    pub name: String,
    pub location: Option<Location>,
    /// How often the cluster reports to the root.
    pub heartbeat: Duration,
    /// A node whose last heartbeat is older than this becomes NotReady.
    pub node_heartbeat_timeout: Duration,
    /// How long a node may be NotReady before its Instances move to other nodes.
    pub eviction: Duration,
    pub concurrency: usize,
    /// Prefix length of each node's subnet (a block of the cluster's subnet).
    pub node_prefix: u8,
    /// How long an Instance may find no node with room before it is handed back to the
    /// root to be placed on another cluster.
    pub handback: Duration,
    /// URL of this cluster's API as others reach it (reported to the root).
    pub api_endpoint: Option<String>,
}

impl ClusterConfig {
    pub fn new(name: &str) -> Self {
        ClusterConfig {
            name: name.to_string(),
            location: None,
            heartbeat: Duration::from_secs(5),
            node_heartbeat_timeout: Duration::from_secs(20),
            eviction: Duration::from_secs(30),
            concurrency: 8,
            node_prefix: 26,
            handback: Duration::from_secs(30),
            api_endpoint: None,
        }
    }
}

/// Run the cluster controllers: `local` is this cluster's API, `root` the root's.
pub async fn run_cluster(
    local: Client,
    root: Client,
    config: ClusterConfig,
    shutdown: CancellationToken,
) {
    tracing::info!(?config, "starting cluster controllers");
    tokio::join!(
        heartbeat(
            local.clone(),
            root.clone(),
            config.clone(),
            shutdown.clone()
        ),
        sync_instances(
            local.clone(),
            root,
            config.name.clone(),
            config.handback,
            config.concurrency,
            shutdown.clone()
        ),
        crate::placement::run::<Node>(
            local.clone(),
            config.eviction,
            config.concurrency,
            shutdown.clone()
        ),
        crate::lifecycle::run::<Node>(
            local.clone(),
            config.node_heartbeat_timeout,
            shutdown.clone()
        ),
        crate::subnets::run_cluster(local, config.name.clone(), config.node_prefix, shutdown),
    );
}

/// What this cluster reports to the root.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    pub capacity: Capacity,
    pub allocatable: Capacity,
    pub runtimes: Vec<RuntimeKind>,
    pub ready_nodes: u32,
}

/// Aggregate the nodes: capacity of all, allocatable of the Ready schedulable ones minus
/// the requests of the Instances bound to them.
pub fn summarize(nodes: &[Arc<Node>], instances: &[Arc<Instance>]) -> Summary {
    // Requests of the non-terminal Instances, per node.
    let mut used: HashMap<&str, (u64, u64, u32)> = HashMap::new();
    for i in instances {
        let Some(node) = i.spec.node.as_deref() else {
            continue;
        };
        let ended = matches!(
            i.status.as_ref().map(|s| s.phase),
            Some(Phase::Succeeded | Phase::Failed)
        );
        if !ended {
            let r = &i.spec.template.resources;
            let u = used.entry(node).or_default();
            *u = (u.0 + r.cpu_millicores, u.1 + r.memory_mib, u.2 + r.gpus);
        }
    }
    let mut s = Summary::default();
    let mut runtimes = BTreeSet::new();
    for n in nodes {
        let status = n.status.clone().unwrap_or_default();
        let cap = status.capacity.clone().unwrap_or_default();
        s.capacity.cpu_millicores += cap.cpu_millicores;
        s.capacity.memory_mib += cap.memory_mib;
        s.capacity.gpus += cap.gpus;
        s.capacity.nodes += 1;
        if !crds::is_true(&status.conditions, "Ready") || n.spec.unschedulable {
            continue;
        }
        s.ready_nodes += 1;
        runtimes.extend(n.spec.runtimes.iter().map(|r| format!("{r:?}")));
        let alloc = status.allocatable.unwrap_or_default();
        let used = used
            .get(n.metadata.name.as_str())
            .copied()
            .unwrap_or_default();
        s.allocatable.cpu_millicores += alloc.cpu_millicores.saturating_sub(used.0);
        s.allocatable.memory_mib += alloc.memory_mib.saturating_sub(used.1);
        s.allocatable.gpus += alloc.gpus.saturating_sub(used.2);
        s.allocatable.nodes += 1;
    }
    s.runtimes = [
        RuntimeKind::Container,
        RuntimeKind::Process,
        RuntimeKind::Unikernel,
    ]
    .into_iter()
    .filter(|r| runtimes.contains(&format!("{r:?}")))
    .collect();
    s
}

/// Register and heartbeat, forever; a root that cannot be reached is retried next beat.
async fn heartbeat(
    local: Client,
    root: Client,
    config: ClusterConfig,
    shutdown: CancellationToken,
) {
    // The report is summed from caches: listing every Node and Instance at each beat
    // cost about a tenth of an idle cluster's CPU at 500 nodes.
    let until = || shutdown.clone().cancelled_owned();
    let nodes = cache(local.api::<Node>(None), ListParams::default(), until());
    let instances = cache(local.api::<Instance>(None), ListParams::default(), until());
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = async { nodes.wait_ready().await; instances.wait_ready().await } => {}
    }
    let mut ticker = tokio::time::interval(config.heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reachable = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let summary = summarize(&nodes.state(), &instances.state());
        match beat(&local, &root, &config, summary).await {
            Ok(()) if !reachable => {
                tracing::info!(cluster = %config.name, "root reachable again");
                reachable = true;
            }
            Ok(()) => {}
            Err(e) => {
                if reachable {
                    tracing::warn!(cluster = %config.name, error = %e, "cannot report to the root; running on");
                }
                reachable = false;
            }
        }
    }
}

async fn beat(
    local: &Client,
    root: &Client,
    config: &ClusterConfig,
    summary: Summary,
) -> Result<(), Error> {
    let clusters: Api<Cluster> = root.api(None);
    let current = match clusters.dynamic().get_opt(&config.name).await? {
        Some(c) => {
            serde_json::from_value::<Cluster>(c).map_err(|e| client::ClientError::Decode {
                url: root.base().into(),
                message: e.to_string(),
            })?
        }
        None => {
            let spec = ClusterSpec {
                location: config.location.clone(),
            };
            tracing::info!(cluster = %config.name, "registering at the root");
            match clusters.create(&Cluster::new(&config.name, spec)).await {
                Ok(c) => c,
                Err(e) if e.is_conflict() => clusters.get(&config.name).await?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    let now = Utc::now();
    let mut status = current.status.clone().unwrap_or_default();
    let (ready, reason, message) = if summary.ready_nodes > 0 {
        (
            ConditionStatus::True,
            "NodesReady",
            format!(
                "{} of {} nodes ready",
                summary.ready_nodes, summary.capacity.nodes
            ),
        )
    } else {
        (
            ConditionStatus::False,
            "NoReadyNodes",
            format!("0 of {} nodes ready", summary.capacity.nodes),
        )
    };
    set_condition(
        &mut status.conditions,
        "Ready",
        ready,
        reason,
        &message,
        now,
    );
    let patch = json!({"status": {
        "capacity": summary.capacity,
        "allocatable": summary.allocatable,
        "runtimes": summary.runtimes,
        "apiEndpoint": config.api_endpoint,
        "conditions": status.conditions,
        "lastHeartbeat": now,
    }});
    let updated = clusters.patch_status(&config.name, &patch).await?;
    mirror_subnet(local, &config.name, updated.status.as_ref()).await
}

/// Keep a local copy of this cluster's own `Cluster` object with the subnet the root
/// assigned, for the cluster's node subnet allocation.
async fn mirror_subnet(
    local: &Client,
    name: &str,
    root_status: Option<&ClusterStatus>,
) -> Result<(), Error> {
    let Some(subnet) = root_status.and_then(|s| s.subnet.clone()) else {
        return Ok(());
    };
    let api: Api<Cluster> = local.api(None);
    let existing = match api.dynamic().get_opt(name).await? {
        Some(c) => c,
        None => {
            api.dynamic()
                .create(
                    &serde_json::to_value(Cluster::new(name, ClusterSpec::default()))
                        .expect("serializes"),
                )
                .await?
        }
    };
    if existing.pointer("/status/subnet").and_then(|s| s.as_str()) != Some(subnet.as_str()) {
        api.patch_status(name, &json!({"status": {"subnet": subnet}}))
            .await?;
    }
    Ok(())
}

struct SyncCtx {
    local: Client,
    root: Client,
    cluster: String,
    handback: Duration,
    locals: Store<Instance>,
    namespaces: Mutex<HashSet<String>>,
    /// The root Instances as this controller last wrote them, while its cache of the
    /// root has not caught up: the next write up goes at that version, not at the
    /// cache's older one (each write up — binding, then status a few times — would
    /// otherwise be a 409 and a read).
    written: Mutex<HashMap<ObjectRef, Instance>>,
}

/// The version of an object as a number (0 when it has none).
fn version(i: &Instance) -> i64 {
    i.metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl SyncCtx {
    /// The newer of the cached root Instance and the one this controller last wrote.
    fn newest(&self, key: &ObjectRef, cached: Arc<Instance>) -> Arc<Instance> {
        let mut written = self.written.lock().expect("written lock");
        match written.get(key) {
            Some(w) if w.metadata.uid == cached.metadata.uid && version(w) > version(&cached) => {
                Arc::new(w.clone())
            }
            Some(_) => {
                written.remove(key);
                cached
            }
            None => cached,
        }
    }

    fn wrote(&self, key: ObjectRef, instance: Instance) {
        self.written
            .lock()
            .expect("written lock")
            .insert(key, instance);
    }
}

/// Down: root Instances placed here get a local copy. Up: the local binding and status
/// go to the root Instance. Gone or moved at the root: the local copy is deleted.
async fn sync_instances(
    local: Client,
    root: Client,
    cluster: String,
    handback: Duration,
    concurrency: usize,
    shutdown: CancellationToken,
) {
    // Only the root Instances placed here; one placed elsewhere arrives as a deletion.
    let placed_here = ListParams {
        field_selector: Some(format!("spec.cluster={cluster}")),
        ..Default::default()
    };
    let mut controller = Controller::new(root.api::<Instance>(None), placed_here)
        .name("cluster-sync")
        .concurrency(concurrency);
    let locals = controller.watches(
        local.api::<Instance>(None),
        ListParams::default(),
        |i: &Instance| vec![ObjectRef::of(i)],
    );
    let ctx = Arc::new(SyncCtx {
        local,
        root,
        cluster,
        handback,
        locals,
        namespaces: Mutex::default(),
        written: Mutex::default(),
    });
    controller
        .run_keyed(
            move |key, root_instance| sync_one(key, root_instance, ctx.clone()),
            shutdown.cancelled_owned(),
        )
        .await;
}

async fn sync_one(
    key: ObjectRef,
    root_instance: Option<Arc<Instance>>,
    ctx: Arc<SyncCtx>,
) -> Result<Action, Error> {
    let ns = key.namespace.as_deref();
    let local_api: Api<Instance> = ctx.local.api(ns);
    let local = ctx.locals.get(&key);
    let ours = root_instance.filter(|r| {
        r.spec.cluster.as_deref() == Some(ctx.cluster.as_str())
            && r.metadata.deletion_timestamp.is_none()
    });
    let Some(remote) = ours else {
        ctx.written.lock().expect("written lock").remove(&key);
        if let Some(l) = local {
            tracing::info!(instance = %key, "no longer placed on this cluster; removing the local copy");
            match local_api.delete(&l.metadata.name).await {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => {}
            }
        }
        return Ok(Action::await_change());
    };
    let Some(local) = local else {
        if let Some(ns) = ns {
            ensure_namespace(&ctx, ns).await?;
        }
        let copy = Instance {
            api_version: API_VERSION.into(),
            kind: "Instance".into(),
            metadata: ObjectMeta {
                name: remote.metadata.name.clone(),
                namespace: remote.metadata.namespace.clone(),
                labels: remote.metadata.labels.clone(),
                annotations: remote.metadata.annotations.clone(),
                ..Default::default()
            },
            spec: remote.spec.clone(),
            status: None,
        };
        match local_api.create(&copy).await {
            Err(e) if !e.is_conflict() => return Err(e.into()),
            _ => return Ok(Action::await_change()),
        }
    };
    let root_api: Api<Instance> = ctx.root.api(ns);
    let remote = ctx.newest(&key, remote);
    if local.spec.node != remote.spec.node {
        let node = local.spec.node.clone();
        write_up(&ctx, &key, &root_api, &remote, |at| {
            let patch = json!({"metadata": {"resourceVersion": at.metadata.resource_version}, "spec": {"node": node}});
            let api = root_api.clone();
            async move { api.patch(&at.metadata.name, &patch).await }
        })
        .await?;
        return Ok(Action::await_change());
    }
    if let Some(status) = &local.status {
        if remote.status.as_ref() != Some(status) {
            if let Some(wait) = settling(status) {
                return Ok(Action::requeue(wait));
            }
            write_up(&ctx, &key, &root_api, &remote, |mut up| {
                up.status = Some(status.clone());
                let api = root_api.clone();
                async move { api.replace_status(&up).await }
            })
            .await?;
        }
    }
    hand_back_if_no_room(&ctx, &local, &remote).await
}

/// How long the status of a freshly bound local Instance waits before it is written
/// up while its node has not reported on it yet: the instance IP and the agent's first
/// report usually follow within milliseconds, and one write up then carries them all
/// (the root already shows the Instance Scheduled, from its own binding).
const SETTLE_UP: Duration = Duration::from_millis(100);

/// Time left before `status` is worth writing up: while the Instance is only bound
/// (phase Scheduled) and was bound less than [`SETTLE_UP`] ago.
fn settling(status: &InstanceStatus) -> Option<Duration> {
    if status.phase != Phase::Scheduled {
        return None;
    }
    let age = crds::since_transition(&status.conditions, "Scheduled")?;
    SETTLE_UP.checked_sub(age).filter(|left| !left.is_zero())
}

/// Write to the root's `remote` at the version this cluster saw; when that version is
/// stale (409: usually the root's own status write after placing it), read the
/// Instance again and, while it is still placed here, write at the fresh version at
/// once, instead of a retry with backoff from a cache that may lag still.
async fn write_up<F, Fut>(
    ctx: &SyncCtx,
    key: &ObjectRef,
    root_api: &Api<Instance>,
    remote: &Instance,
    write: F,
) -> Result<(), Error>
where
    F: Fn(Instance) -> Fut,
    Fut: std::future::Future<Output = Result<Instance, client::ClientError>>,
{
    let mut at = remote.clone();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match write(at).await {
            // Still racing after three tries: the controller's retry takes it from here.
            Err(e) if e.is_conflict() && attempts < 3 => {
                let fresh = match root_api.get(&remote.metadata.name).await {
                    Err(e) if e.is_not_found() => return Ok(()),
                    other => other?,
                };
                let still_ours = fresh.spec.cluster.as_deref() == Some(ctx.cluster.as_str())
                    && fresh.metadata.deletion_timestamp.is_none()
                    && fresh.metadata.uid == remote.metadata.uid;
                if !still_ours {
                    return Ok(());
                }
                at = fresh;
            }
            other => {
                ctx.wrote(key.clone(), other?);
                return Ok(());
            }
        }
    }
}

/// An Instance no node here has room for goes back to the root, which places it on
/// another cluster (never again on this one).
async fn hand_back_if_no_room(
    ctx: &SyncCtx,
    local: &Instance,
    remote: &Instance,
) -> Result<Action, Error> {
    let stuck = local.spec.node.is_none().then_some(()).and_then(|()| {
        let c = local
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Scheduled")?;
        let no_room = c.status == ConditionStatus::False
            && matches!(c.reason.as_str(), "NoResourcesAvailable" | "NoTargetNode");
        no_room.then(|| {
            (
                c.last_transition_time.unwrap_or_else(Utc::now),
                c.message.clone(),
            )
        })
    });
    let Some((since, why)) = stuck else {
        return Ok(Action::await_change());
    };
    let waited = (Utc::now() - since).to_std().unwrap_or_default();
    if waited < ctx.handback {
        return Ok(Action::requeue(
            ctx.handback - waited + Duration::from_millis(100),
        ));
    }
    let mut rejected = crate::bind::rejected_by(remote);
    rejected.push(ctx.cluster.clone());
    tracing::info!(instance = %ObjectRef::of(remote), cluster = %ctx.cluster, reason = %why, "no node has room; handing the instance back to the root");
    let patch = json!({
        "metadata": {
            "resourceVersion": remote.metadata.resource_version,
            "annotations": {crate::bind::REJECTED_BY: rejected.join(",")},
        },
        "spec": {"cluster": null, "node": null},
    });
    ctx.root
        .api::<Instance>(remote.metadata.namespace.as_deref())
        .patch(&remote.metadata.name, &patch)
        .await?;
    Ok(Action::await_change())
}

async fn ensure_namespace(ctx: &SyncCtx, ns: &str) -> Result<(), Error> {
    if ctx.namespaces.lock().expect("namespaces lock").contains(ns) {
        return Ok(());
    }
    let api = ctx
        .local
        .dynamic(crds::kind_by_name("namespaces").expect("served"), None);
    match api
        .create(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
        .await
    {
        Err(e) if !e.is_conflict() => return Err(e.into()),
        _ => {}
    }
    ctx.namespaces
        .lock()
        .expect("namespaces lock")
        .insert(ns.to_string());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(phase: Phase, ago: chrono::Duration) -> InstanceStatus {
        let mut status = InstanceStatus {
            phase,
            ..Default::default()
        };
        set_condition(
            &mut status.conditions,
            "Scheduled",
            ConditionStatus::True,
            "Bound",
            "on n1",
            Utc::now() - ago,
        );
        status
    }

    #[test]
    fn only_a_fresh_binding_waits_before_it_is_written_up() {
        let fresh = settling(&bound(Phase::Scheduled, chrono::Duration::zero()));
        assert!(fresh.is_some_and(|left| left <= SETTLE_UP), "{fresh:?}");
        let old = chrono::Duration::milliseconds(2 * SETTLE_UP.as_millis() as i64);
        assert_eq!(settling(&bound(Phase::Scheduled, old)), None);
        // The agent has reported: write up at once.
        let running = settling(&bound(Phase::Running, chrono::Duration::zero()));
        assert_eq!(running, None);
        // No binding time to go by: at once.
        let unknown = InstanceStatus {
            phase: Phase::Scheduled,
            ..Default::default()
        };
        assert_eq!(settling(&unknown), None);
    }
}
