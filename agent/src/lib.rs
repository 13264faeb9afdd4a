//! The worker agent: registers its `Node` in the cluster API, heartbeats with capacity
//! and usage, and runs the Instances bound to the node through a [`runtime::Runtime`],
//! reporting their status (phase, runtime id, start time, exit code, restarts, reason).
//!
//! Restart policy: `Always` restarts, `OnFailure` restarts on a non-zero exit, `Never`
//! (Oakestra's `one_shot`) runs once; restarts back off exponentially (1 s .. 30 s).
//! After an agent restart, what is already running is adopted and what no longer has an
//! Instance on this node is removed.
//!
//! [`register_node`] and [`NodeHeartbeat`] are the Node's side of the protocol, shared
//! with [`hollow`]: simulated nodes that register and heartbeat like this agent but run
//! nothing (for scale tests). A heartbeat renews the node's `Lease`; the Node's status
//! is written only when it changed and every [`STATUS_EVERY_BEATS`] beats otherwise.

pub mod cgroup;
pub mod containerd;
pub mod hollow;
pub mod metrics;
pub mod process;
pub mod runtime;
pub mod serve;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use client::runtime::{Action, Controller, ObjectRef};
use client::{Api, Client, ClientError, ListParams};
use crds::{
    set_condition, Capacity, ConditionStatus, Instance, Lease, LeaseSpec, Location, Node, NodeSpec,
    Phase, RestartPolicy, RuntimeKind,
};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::runtime::{InstanceAddress, InstanceId, Runtime, RuntimeError, State};

/// Settings of one agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Node name (unique in the cluster).
    pub node: String,
    /// Address other nodes and users reach this node at.
    pub address: String,
    pub location: Option<Location>,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Where the agent keeps instance state and logs.
    pub data_dir: PathBuf,
    pub heartbeat: Duration,
    /// Capacity to report; detected from the machine when `None`.
    pub capacity: Option<Capacity>,
    /// Where the agent serves the logs of its Instances (port 0: any free port).
    pub listen: std::net::SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("API request failed: {0}")]
    Api(#[from] ClientError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("serving the agent endpoint: {0}")]
    Listen(std::io::Error),
}

impl client::runtime::ReconcileError for AgentError {
    fn is_conflict(&self) -> bool {
        matches!(self, AgentError::Api(e) if e.is_conflict())
    }
}

/// CPUs and memory of this machine.
pub fn detect_capacity() -> Capacity {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Capacity {
        cpu_millicores: cpus * 1000,
        memory_mib: meminfo_kib(&meminfo, "MemTotal") / 1024,
        gpus: 0,
        nodes: 1,
    }
}

fn meminfo_kib(meminfo: &str, key: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// What the machine uses now: memory in use, and the 1-minute load as millicores.
fn usage() -> Capacity {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let used = meminfo_kib(&meminfo, "MemTotal")
        .saturating_sub(meminfo_kib(&meminfo, "MemAvailable"))
        / 1024;
    let load: f64 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    Capacity {
        cpu_millicores: (load * 1000.0) as u64,
        memory_mib: used,
        gpus: 0,
        nodes: 1,
    }
}

struct Ctx {
    client: Client,
    config: AgentConfig,
    runtime: Arc<dyn Runtime>,
    kinds: Vec<RuntimeKind>,
    /// URL of the agent's HTTP endpoint, as reported in the Node's status.
    endpoint: String,
    metrics: Arc<metrics::Metrics>,
    /// The node's subnet, once the cluster has assigned it (read at each heartbeat).
    subnet: std::sync::Mutex<Option<crds::ipam::Cidr>>,
    /// The Lease and status side of the heartbeats.
    heartbeat: tokio::sync::Mutex<NodeHeartbeat>,
    /// Instances whose removal runs in the background (a stop may take its grace
    /// period: it must not hold one of the few reconcile slots that starts need).
    removing: Arc<std::sync::Mutex<std::collections::HashSet<InstanceId>>>,
}

/// Remove `id` from the runtime in the background, retried a few times; a second call
/// while one runs does nothing.
fn remove_in_background(ctx: &Ctx, id: InstanceId) {
    if !ctx
        .removing
        .lock()
        .expect("not poisoned")
        .insert(id.clone())
    {
        return;
    }
    let (runtime, removing) = (ctx.runtime.clone(), ctx.removing.clone());
    tokio::spawn(async move {
        for attempt in 0..4u32 {
            match runtime.remove(&id).await {
                Ok(()) => break,
                Err(e) if attempt == 3 => {
                    tracing::error!(instance = %id, error = %e, "removal failed; it is retried when the agent restarts");
                }
                Err(e) => {
                    tracing::warn!(instance = %id, error = %e, "removal failed; retrying");
                    tokio::time::sleep(restart_backoff(attempt)).await;
                }
            }
        }
        removing.lock().expect("not poisoned").remove(&id);
    });
}

/// Run the agent with `runtime` (which reports exits on `exits`) until `shutdown`.
pub async fn run(
    client: Client,
    config: AgentConfig,
    runtime: Arc<dyn Runtime>,
    mut exits: mpsc::UnboundedReceiver<InstanceId>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let kinds = runtime.kinds();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(AgentError::Listen)?;
    let port = listener.local_addr().map_err(AgentError::Listen)?.port();
    let endpoint = format!("http://{}:{port}", config.address);
    let metrics = Arc::new(metrics::Metrics::default());
    tokio::spawn(serve::serve(listener, runtime.clone(), metrics.clone()));
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        config: config.clone(),
        runtime: runtime.clone(),
        kinds,
        endpoint,
        metrics,
        subnet: Default::default(),
        heartbeat: tokio::sync::Mutex::new(NodeHeartbeat::new(&config.node, config.heartbeat)),
        removing: Default::default(),
    });
    register(&ctx).await?;
    tracing::info!(node = %config.node, runtime = runtime.name(), "worker agent registered");
    // Only the Instances bound here; one that leaves arrives as a deletion.
    let bound_here = ListParams {
        field_selector: Some(format!("spec.node={}", config.node)),
        ..Default::default()
    };
    let controller = Controller::new(client.api::<Instance>(None), bound_here)
        .name("agent")
        .concurrency(4);
    let trigger = controller.trigger();
    // What the runtime already has: adopted if still wanted, removed if not.
    for id in runtime.list().await? {
        trigger(ObjectRef::new(Some(&id.namespace), &id.name));
    }
    let trigger = Arc::new(trigger);
    let exits_trigger = trigger.clone();
    tokio::spawn(async move {
        while let Some(id) = exits.recv().await {
            exits_trigger(ObjectRef::new(Some(&id.namespace), &id.name));
        }
    });
    let beat_ctx = ctx.clone();
    let beat_shutdown = shutdown.clone();
    let beats = tokio::spawn(async move { heartbeat(beat_ctx, beat_shutdown).await });
    controller
        .run_keyed(
            move |key, instance| reconcile(key, instance, ctx.clone()),
            shutdown.cancelled_owned(),
        )
        .await;
    beats.abort();
    Ok(())
}

/// What a node says about itself when it registers: the same for a real agent and for a
/// hollow node ([`hollow`]).
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    /// Address other nodes and users reach the node at.
    pub address: String,
    pub runtimes: Vec<RuntimeKind>,
    pub location: Option<Location>,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// What a node reports in each heartbeat.
#[derive(Debug, Clone)]
pub struct NodeReport {
    pub capacity: Capacity,
    pub usage: Capacity,
    /// URL of the agent's endpoint (logs); hollow nodes have none.
    pub agent_endpoint: Option<String>,
}

/// Create the Node `info.name`, or refresh what the agent knows of an existing one
/// (address, runtimes, location, labels), keeping what an operator set
/// (`unschedulable`).
pub async fn register_node(api: &Api<Node>, info: &NodeInfo) -> Result<(), ClientError> {
    let spec = NodeSpec {
        address: info.address.clone(),
        runtimes: info.runtimes.clone(),
        location: info.location.clone(),
        unschedulable: false,
    };
    match api.dynamic().get_opt(&info.name).await? {
        None => {
            let mut node = Node::new(&info.name, spec);
            node.metadata.labels = info.labels.clone();
            match api.create(&node).await {
                Err(e) if !e.is_conflict() => return Err(e),
                _ => {}
            }
        }
        Some(_) => {
            let patch = json!({"metadata": {"labels": info.labels}, "spec": {"address": spec.address, "runtimes": spec.runtimes, "location": spec.location}});
            api.patch(&info.name, &patch).await?;
        }
    }
    Ok(())
}

/// The node's side of liveness: every beat renews the node's [`Lease`] (one small write
/// no Node watcher sees); the Node's status is written when it is due — at the first
/// beat, after a failed beat, while the cluster has not assigned a subnet, when the
/// capacity or the agent endpoint changed, and otherwise every `status_every`
/// (Kubernetes' node lease and node status report frequency, scaled to the period).
#[derive(Debug)]
pub struct NodeHeartbeat {
    name: String,
    period: Duration,
    status_every: Duration,
    /// When the status was last written, and what it said.
    reported: Option<(std::time::Instant, NodeReport)>,
    failed: bool,
    subnet: Option<crds::ipam::Cidr>,
}

/// Status writes happen at least every this many heartbeat periods.
pub const STATUS_EVERY_BEATS: u32 = 6;

impl NodeHeartbeat {
    /// Heartbeats of Node `name`, one every `period`.
    pub fn new(name: &str, period: Duration) -> Self {
        NodeHeartbeat {
            name: name.to_string(),
            period,
            status_every: period * STATUS_EVERY_BEATS,
            reported: None,
            failed: false,
            subnet: None,
        }
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn status_due(&self, report: &NodeReport) -> bool {
        match &self.reported {
            None => true,
            Some((at, last)) => {
                self.failed
                    || self.subnet.is_none()
                    || last.capacity != report.capacity
                    || last.agent_endpoint != report.agent_endpoint
                    || at.elapsed() >= self.status_every
            }
        }
    }

    /// One beat: renew the Lease, and write the status if it is due. Returns the subnet
    /// the cluster assigned to the node, as last seen.
    pub async fn beat(
        &mut self,
        client: &Client,
        report: &NodeReport,
    ) -> Result<Option<crds::ipam::Cidr>, ClientError> {
        let result = self.try_beat(client, report).await;
        self.failed = result.is_err();
        result
    }

    async fn try_beat(
        &mut self,
        client: &Client,
        report: &NodeReport,
    ) -> Result<Option<crds::ipam::Cidr>, ClientError> {
        if self.status_due(report) {
            let subnet = report_status(&client.api(None), &self.name, report).await?;
            self.subnet = subnet.or(self.subnet);
            self.reported = Some((std::time::Instant::now(), report.clone()));
        }
        renew_lease(&client.api(None), &self.name, self.period).await?;
        Ok(self.subnet)
    }
}

/// Renew Lease `name` (create it the first time).
async fn renew_lease(api: &Api<Lease>, name: &str, period: Duration) -> Result<(), ClientError> {
    let spec = LeaseSpec {
        holder_identity: Some(name.to_string()),
        lease_duration_seconds: Some((period * 4).as_secs().max(1) as u32),
        renew_time: Some(Utc::now()),
    };
    match api.patch(name, &json!({ "spec": spec })).await {
        Err(e) if e.is_not_found() => match api.create(&Lease::new(name, spec.clone())).await {
            // Created meanwhile by an earlier beat that timed out: renew it.
            Err(e) if e.is_conflict() => api.patch(name, &json!({ "spec": spec })).await,
            other => other,
        },
        other => other,
    }
    .map(|_| ())
}

/// The status part of a heartbeat of Node `name`: `Ready=True` (reason `AgentReady`),
/// capacity, allocatable (= capacity), usage, agent endpoint and `lastHeartbeat`.
/// Returns the subnet the cluster assigned to the node, if any.
async fn report_status(
    api: &Api<Node>,
    name: &str,
    report: &NodeReport,
) -> Result<Option<crds::ipam::Cidr>, ClientError> {
    let now = Utc::now();
    // Usually the Node is Ready already: one write, and its answer shows the rest.
    let beat = json!({"status": {
        "capacity": report.capacity,
        "allocatable": report.capacity,
        "usage": report.usage,
        "agentEndpoint": report.agent_endpoint,
        "lastHeartbeat": now,
    }});
    let node = api.patch_status(name, &beat).await?;
    let mut status = node.status.unwrap_or_default();
    let subnet = status.subnet.as_deref().and_then(|s| s.parse().ok());
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True);
    if ready {
        return Ok(subnet);
    }
    // Not Ready (new, or declared lost): say Ready, keeping the other conditions, at the
    // version read; another controller may write the Node meanwhile (its subnet, say).
    let mut version = node.metadata.resource_version;
    for attempt in 1.. {
        set_condition(
            &mut status.conditions,
            "Ready",
            ConditionStatus::True,
            "AgentReady",
            "the agent is heartbeating",
            now,
        );
        let patch = json!({
            "metadata": {"resourceVersion": version},
            "status": {"conditions": status.conditions},
        });
        match api.patch_status(name, &patch).await {
            Err(e) if e.is_conflict() && attempt < 5 => {
                let node = api.get(name).await?;
                status = node.status.unwrap_or_default();
                version = node.metadata.resource_version;
            }
            other => {
                other?;
                break;
            }
        }
    }
    Ok(subnet)
}

async fn register(ctx: &Ctx) -> Result<(), AgentError> {
    let c = &ctx.config;
    let info = NodeInfo {
        name: c.node.clone(),
        address: c.address.clone(),
        runtimes: ctx.kinds.clone(),
        location: c.location.clone(),
        labels: c.labels.clone(),
    };
    register_node(&ctx.client.api(None), &info).await?;
    beat(ctx).await
}

async fn beat(ctx: &Ctx) -> Result<(), AgentError> {
    let report = NodeReport {
        capacity: ctx.config.capacity.clone().unwrap_or_else(detect_capacity),
        usage: usage(),
        agent_endpoint: Some(ctx.endpoint.clone()),
    };
    let subnet = ctx
        .heartbeat
        .lock()
        .await
        .beat(&ctx.client, &report)
        .await?;
    *ctx.subnet.lock().expect("not poisoned") = subnet;
    Ok(())
}

async fn heartbeat(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(ctx.config.heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(e) = beat(&ctx).await {
            tracing::warn!(node = %ctx.config.node, error = %e, "heartbeat failed");
        }
    }
}

/// Delay before restart number `restarts + 1`.
fn restart_backoff(restarts: u32) -> Duration {
    Duration::from_secs(1 << restarts.min(5)).min(Duration::from_secs(30))
}

async fn reconcile(
    key: ObjectRef,
    instance: Option<Arc<Instance>>,
    ctx: Arc<Ctx>,
) -> Result<Action, AgentError> {
    let id = InstanceId {
        namespace: key.namespace.clone().unwrap_or_default(),
        name: key.name.clone(),
    };
    let mine = instance.filter(|i| {
        i.spec.node.as_deref() == Some(ctx.config.node.as_str())
            && i.metadata.deletion_timestamp.is_none()
    });
    if ctx.removing.lock().expect("not poisoned").contains(&id) {
        // The container of this name is still being removed (a stop may take its grace
        // period). Asking the runtime for its state now would publish its ports again
        // (adopted containers get their ports back that way) after the removal took
        // them down, and the port would stay taken.
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let state = ctx.runtime.state(&id).await?;
    let Some(instance) = mine else {
        if state.is_some() {
            tracing::info!(instance = %id, "no longer bound here; removing");
            remove_in_background(&ctx, id);
        }
        return Ok(Action::await_change());
    };
    let status = instance.status.clone().unwrap_or_default();
    let api: Api<Instance> = ctx.client.api(Some(&id.namespace));
    let update = |patch: serde_json::Value| {
        let api = api.clone();
        let name = instance.metadata.name.clone();
        async move {
            api.patch_status(&name, &json!({ "status": patch }))
                .await
                .map(|_| ())
        }
    };
    match state {
        None => start(&ctx, &id, &instance, status.restart_count, &update).await,
        Some(State::Running {
            runtime_id,
            started,
        }) => {
            if status.phase != Phase::Running
                || status.runtime_id.as_deref() != Some(runtime_id.as_str())
            {
                update(json!({"phase": Phase::Running, "runtimeId": runtime_id, "startTime": started,
                    "hostIP": ctx.config.address, "reason": null, "message": null, "exitCode": null}))
                .await?;
            }
            // Exits of processes this agent started arrive at once; adopted ones are polled.
            Ok(Action::requeue(Duration::from_secs(5)))
        }
        Some(State::Exited {
            code,
            oom_killed,
            finished,
            ..
        }) => {
            let restart = match instance.spec.template.restart_policy {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => code != Some(0),
                RestartPolicy::Never => false,
            };
            let reason = match (oom_killed, code) {
                (true, _) => "OOMKilled",
                (false, Some(0)) => "Completed",
                (false, None) => "ExitedWhileAgentDown",
                (false, Some(_)) => "Error",
            };
            if status.phase == Phase::Running {
                // First time this exit is seen.
                ctx.metrics
                    .exits
                    .get_or_create(&metrics::ReasonLabel {
                        reason: reason.into(),
                    })
                    .inc();
            }
            if !restart {
                let phase = if code == Some(0) {
                    Phase::Succeeded
                } else {
                    Phase::Failed
                };
                if status.phase != phase {
                    update(json!({"phase": phase, "exitCode": code, "reason": reason,
                        "message": format!("exited with code {}", code.map(|c| c.to_string()).unwrap_or_else(|| "unknown".into()))}))
                    .await?;
                }
                return Ok(Action::await_change());
            }
            let wait = restart_backoff(status.restart_count);
            let since = (Utc::now() - finished).to_std().unwrap_or_default();
            if since < wait {
                let message = format!(
                    "exited ({reason}, code {code:?}); restarting in {}s",
                    (wait - since).as_secs().max(1)
                );
                if status.reason != reason || status.phase != Phase::Starting {
                    update(json!({"phase": Phase::Starting, "exitCode": code, "reason": reason, "message": message})).await?;
                }
                return Ok(Action::requeue(wait - since));
            }
            start(&ctx, &id, &instance, status.restart_count + 1, &update).await
        }
    }
}

async fn start<F, Fut>(
    ctx: &Ctx,
    id: &InstanceId,
    instance: &Instance,
    restarts: u32,
    update: &F,
) -> Result<Action, AgentError>
where
    F: Fn(serde_json::Value) -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>>,
{
    let env = vec![
        ("OAKESTRA_NAMESPACE".to_string(), id.namespace.clone()),
        ("OAKESTRA_INSTANCE".to_string(), id.name.clone()),
        (
            "OAKESTRA_SERVICE".to_string(),
            instance.spec.service.clone(),
        ),
        (
            "OAKESTRA_ORDINAL".to_string(),
            instance.spec.ordinal.to_string(),
        ),
        ("OAKESTRA_NODE".to_string(), ctx.config.node.clone()),
    ];
    let address = if ctx.runtime.wants_address(&instance.spec.template) {
        let subnet = *ctx.subnet.lock().expect("not poisoned");
        let ip = instance.status.as_ref().and_then(|s| s.instance_ip);
        match (ip, subnet) {
            (Some(ip), Some(subnet)) if subnet.contains(ip) => Some(InstanceAddress {
                ip,
                prefix: subnet.prefix,
                gateway: subnet.gateway(),
            }),
            _ => {
                tracing::debug!(instance = %id, ?ip, ?subnet, "waiting for an address");
                let status = instance.status.clone().unwrap_or_default();
                // The address usually follows the binding within milliseconds: say so
                // only when it does not, and leave the allocator's write uncontended.
                let bound_for =
                    crds::since_transition(&status.conditions, "Scheduled").unwrap_or_default();
                if bound_for < Duration::from_secs(1) {
                    return Ok(Action::requeue(Duration::from_secs(1) - bound_for));
                }
                if status.reason != "WaitingForAddress" {
                    update(json!({"phase": Phase::Starting, "reason": "WaitingForAddress",
                        "message": "waiting for the cluster to assign the node a subnet and the instance an IP"}))
                    .await?;
                }
                return Ok(Action::requeue(Duration::from_secs(1)));
            }
        }
    } else {
        None
    };
    // A left-over record of an earlier run is replaced.
    let begun = std::time::Instant::now();
    ctx.runtime.remove(id).await?;
    tracing::debug!(instance = %id, took_ms = begun.elapsed().as_millis(), "cleared earlier record");
    match ctx
        .runtime
        .start(id, &instance.spec.template, &env, address.as_ref())
        .await
    {
        Ok(State::Running {
            runtime_id,
            started,
        }) => {
            tracing::info!(instance = %id, runtime_id, restarts, "started");
            ctx.metrics.starts.inc();
            if restarts > 0 {
                ctx.metrics.restarts.inc();
            }
            update(json!({"phase": Phase::Running, "runtimeId": runtime_id, "startTime": started, "hostIP": ctx.config.address,
                "restartCount": restarts, "reason": null, "message": null, "exitCode": null}))
            .await?;
            Ok(Action::requeue(Duration::from_secs(5)))
        }
        Ok(State::Exited { .. }) => Ok(Action::requeue(Duration::from_secs(1))),
        Err(e) => {
            let reason = match e {
                RuntimeError::Start { .. } => "StartFailed",
                RuntimeError::ImagePull { .. } => "ImagePullFailed",
                RuntimeError::Network { .. } => "NetworkFailed",
                RuntimeError::Io { .. } => "RuntimeError",
            };
            update(json!({"phase": Phase::Failed, "reason": reason, "message": e.to_string(), "restartCount": restarts})).await?;
            Ok(Action::requeue(restart_backoff(restarts)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(cpu: u64) -> NodeReport {
        NodeReport {
            capacity: Capacity {
                cpu_millicores: cpu,
                ..Default::default()
            },
            usage: Capacity::default(),
            agent_endpoint: None,
        }
    }

    #[test]
    fn the_status_is_written_when_due_and_not_at_every_beat() {
        let mut beat = NodeHeartbeat::new("n1", Duration::from_secs(10));
        assert!(beat.status_due(&report(1000)), "the first beat reports");
        beat.reported = Some((std::time::Instant::now(), report(1000)));
        assert!(
            beat.status_due(&report(1000)),
            "until the cluster has assigned a subnet"
        );
        beat.subnet = Some("10.0.0.0/26".parse().unwrap());
        assert!(
            !beat.status_due(&report(1000)),
            "a plain beat renews the Lease only"
        );
        // Usage moves at every beat; that alone does not make a status write.
        let mut busier = report(1000);
        busier.usage.cpu_millicores = 500;
        assert!(!beat.status_due(&busier));
        assert!(beat.status_due(&report(2000)), "capacity changed");
        beat.failed = true;
        assert!(beat.status_due(&report(1000)), "after a failed beat");
        beat.failed = false;
        let long_ago = std::time::Instant::now() - Duration::from_secs(61);
        beat.reported = Some((long_ago, report(1000)));
        assert!(beat.status_due(&report(1000)), "every 6 beats (60 s)");
    }
}
