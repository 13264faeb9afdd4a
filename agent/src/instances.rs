//! The Instance state machine: what the agent does with each Instance bound to its node.
//!
//! [`next_step`] is the decision, without IO: from the Instance's status, what the
//! runtime says about its workload, its restart policy, its addressing and the time, it
//! picks one step: report a status, start the workload, or wait. [`after_start`]
//! decides what a start's outcome reports. `reconcile` does the IO around them:
//! it asks the runtime, attaches the network around a start, writes the status, and
//! removes in the background what no longer has an Instance here.
//!
//! Restart policy: `Always` restarts, `OnFailure` restarts on a non-zero exit, `Never`
//! (Oakestra's `one_shot`) runs once; restarts back off exponentially (1 s .. 30 s). A
//! workload found after an agent restart is adopted as it is. A networked Instance
//! starts once the cluster has assigned the node a subnet and the Instance an IP in it.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use client::runtime::{Action, ObjectRef, Store, Written};
use client::{Api, Client};
use crds::conditions::{instance_readiness, READY};
use crds::ipam::Cidr;
use crds::{set_condition, Instance, InstanceStatus, Phase, RestartPolicy, Time};
use serde_json::json;

use crate::addresses::NodeAddresses;
use crate::metrics::{Metrics, ReasonLabel};
use crate::network::{InstanceAddress, Network, NetworkError};
use crate::runtime::{InstanceId, Runtime, RuntimeError, State};
use crate::AgentError;

/// How often a running workload is looked at again (exits of workloads this agent
/// started arrive at once; adopted ones are polled).
const RUNNING_POLL: Duration = Duration::from_secs(5);
/// How often an Instance looks again while it has no address (the node's subnet comes
/// with its heartbeat, a freed address with another Instance's change).
const SUBNET_POLL: Duration = Duration::from_secs(1);
/// The status reason of an Instance that has no address yet.
pub const WAITING_FOR_ADDRESS: &str = "WaitingForAddress";

/// Delay before restart number `restarts + 1`: 1 s, doubling, at most 30 s.
pub fn restart_backoff(restarts: u32) -> Duration {
    Duration::from_secs(1 << restarts.min(5)).min(Duration::from_secs(30))
}

/// Why a workload ended, as its Instance's status reason says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// The kernel killed it for running out of memory.
    OomKilled,
    /// It exited with code 0.
    Completed,
    /// It ended while the agent was down, so nobody saw its exit code.
    ExitedWhileAgentDown,
    /// It exited with a non-zero code.
    Error,
}

impl ExitReason {
    /// The reason of an exit with `code` (`None`: not seen), OOM-killed or not.
    pub fn of(code: Option<i32>, oom_killed: bool) -> ExitReason {
        match (oom_killed, code) {
            (true, _) => ExitReason::OomKilled,
            (false, Some(0)) => ExitReason::Completed,
            (false, None) => ExitReason::ExitedWhileAgentDown,
            (false, Some(_)) => ExitReason::Error,
        }
    }

    /// The status reason (`OOMKilled`, `Completed`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::OomKilled => "OOMKilled",
            ExitReason::Completed => "Completed",
            ExitReason::ExitedWhileAgentDown => "ExitedWhileAgentDown",
            ExitReason::Error => "Error",
        }
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an Instance is networked, as far as its start is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// It shares the node's network: there is no address to wait for.
    Node,
    /// It gets a network of its own, once the cluster has assigned the node a subnet
    /// (`subnet`, as last heard): at `address`, which the node hands out from it
    /// ([`crate::addresses`]).
    Own {
        /// The node's subnet, if assigned yet.
        subnet: Option<Cidr>,
        /// The Instance's address in it (`None`: no subnet, or no address left).
        address: Option<Ipv4Addr>,
    },
}

/// What [`next_step`] decides from.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The Instance's status as last read.
    pub status: &'a InstanceStatus,
    /// What the runtime has of its workload (`None`: nothing).
    pub state: Option<&'a State>,
    /// The Instance's restart policy.
    pub policy: RestartPolicy,
    /// Whether it waits for an address.
    pub addressing: Addressing,
    /// The time now.
    pub now: DateTime<Utc>,
}

/// A status the agent writes about an Instance.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// The workload runs (first seen, or adopted after an agent restart).
    Running {
        /// The runtime's id of it.
        runtime_id: String,
        /// When it started.
        started: DateTime<Utc>,
    },
    /// The agent just started it, as restart number `restarts`.
    Started {
        /// The runtime's id of it.
        runtime_id: String,
        /// When it started.
        started: DateTime<Utc>,
        /// How many restarts this start makes.
        restarts: u32,
    },
    /// It ended and stays ended (its policy does not restart it).
    Finished {
        /// `Succeeded` or `Failed`.
        phase: Phase,
        /// Its exit code, if seen.
        code: Option<i32>,
        /// Why it ended.
        reason: ExitReason,
    },
    /// It ended and restarts after a back-off.
    BackingOff {
        /// Its exit code, if seen.
        code: Option<i32>,
        /// Why it ended.
        reason: ExitReason,
        /// How long until the restart.
        remaining: Duration,
    },
    /// It waits for an address: the node has no subnet yet (`subnet`: `None`), or no
    /// free address is left in it.
    WaitingForAddress {
        /// The node's subnet, if it has one.
        subnet: Option<Cidr>,
    },
    /// The start failed.
    StartFailed {
        /// The status reason ([`StartError::reason`]).
        reason: &'static str,
        /// The error, in words.
        message: String,
        /// How many restarts the failed start would have made.
        restarts: u32,
    },
}

impl Report {
    /// The phase this report puts the Instance in.
    pub fn phase(&self) -> Phase {
        match self {
            Report::Running { .. } | Report::Started { .. } => Phase::Running,
            Report::Finished { phase, .. } => *phase,
            Report::BackingOff { .. } | Report::WaitingForAddress { .. } => Phase::Starting,
            Report::StartFailed { .. } => Phase::Failed,
        }
    }

    /// The status fields this report sets (a null: removes), for an agent at `host_ip`.
    pub fn fields(&self, host_ip: &str) -> serde_json::Value {
        match self {
            Report::Running {
                runtime_id,
                started,
            } => json!({"phase": Phase::Running, "runtimeId": runtime_id, "startTime": started,
                "hostIP": host_ip, "reason": null, "message": null, "exitCode": null}),
            Report::Started {
                runtime_id,
                started,
                restarts,
            } => {
                json!({"phase": Phase::Running, "runtimeId": runtime_id, "startTime": started, "hostIP": host_ip,
                "restartCount": restarts, "reason": null, "message": null, "exitCode": null})
            }
            Report::Finished {
                phase,
                code,
                reason,
            } => {
                let code_text = code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "unknown".into());
                json!({"phase": phase, "exitCode": code, "reason": reason.as_str(),
                    "message": format!("exited with code {code_text}")})
            }
            Report::BackingOff {
                code,
                reason,
                remaining,
            } => {
                let message = format!(
                    "exited ({reason}, code {code:?}); restarting in {}s",
                    remaining.as_secs().max(1)
                );
                json!({"phase": Phase::Starting, "exitCode": code, "reason": reason.as_str(), "message": message})
            }
            Report::WaitingForAddress { subnet } => {
                json!({"phase": Phase::Starting, "reason": WAITING_FOR_ADDRESS,
                    "message": waiting_for_address(*subnet)})
            }
            Report::StartFailed {
                reason,
                message,
                restarts,
            } => {
                json!({"phase": Phase::Failed, "reason": reason, "message": message, "restartCount": restarts})
            }
        }
    }
}

/// The status fields the agent owns, besides its `Ready` condition.
const AGENT_FIELDS: [&str; 10] = [
    "phase",
    "instanceIP",
    "hostIP",
    "runtimeId",
    "startTime",
    "restartCount",
    "exitCode",
    "reason",
    "message",
    "observedGeneration",
];

/// Everything of `instance`'s status the agent owns, as it applies it (server-side
/// apply, [`client::Api::apply_own_status`]) to put the Instance in `phase` with the
/// status `fields` (an object, e.g. [`Report::fields`]; a null removes a field) at
/// `now`: the agent's fields as the status has them with `fields` over them, the
/// `metadata.generation` it acted on as `observedGeneration`, and its `Ready` condition
/// ([`instance_readiness`]; its transition time kept while it does not change).
///
/// Conditions merge by type, so the allocator's and the binder's stay as they are, and
/// nothing is written at a version: their writes never make this one fail.
pub fn status_apply(
    instance: &Instance,
    phase: Phase,
    fields: serde_json::Value,
    now: Time,
) -> serde_json::Value {
    let status = instance.status.clone().unwrap_or_default();
    let mut owned = match serde_json::to_value(&status) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    owned.retain(|k, _| AGENT_FIELDS.contains(&k.as_str()));
    if let serde_json::Value::Object(fields) = fields {
        for (k, v) in fields {
            if v.is_null() {
                owned.remove(&k);
            } else {
                owned.insert(k, v);
            }
        }
    }
    owned.insert("phase".into(), json!(phase));
    owned.insert(
        "observedGeneration".into(),
        json!(instance.metadata.generation),
    );
    let detail = owned.get("message").and_then(|m| m.as_str()).unwrap_or("");
    let (ready, reason, message) = instance_readiness(phase, detail);
    let mut conditions = status.conditions;
    set_condition(&mut conditions, READY, ready, reason, &message, now);
    conditions.retain(|c| c.type_ == READY);
    owned.insert("conditions".into(), json!(conditions));
    serde_json::Value::Object(owned)
}

/// When to look at the Instance again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// After this long.
    Requeue(Duration),
    /// When it changes.
    AwaitChange,
}

impl From<Next> for Action {
    fn from(next: Next) -> Action {
        match next {
            Next::Requeue(after) => Action::requeue(after),
            Next::AwaitChange => Action::await_change(),
        }
    }
}

/// What to do with an Instance now.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Write `report` to the status when there is one, then look again at `next`.
    Report {
        /// The status to write, if it changed.
        report: Option<Report>,
        /// When to look again.
        next: Next,
    },
    /// Start the workload, as restart number `restarts`, at `address` when it has a
    /// network of its own.
    Start {
        /// The restart count the start makes.
        restarts: u32,
        /// Its address, when networked.
        address: Option<InstanceAddress>,
    },
}

/// [`next_step`]'s answer: the step, and an exit seen for the first time (counted in
/// the agent's metrics).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// What to do.
    pub step: Step,
    /// An exit the status does not show yet.
    pub new_exit: Option<ExitReason>,
}

impl From<Step> for Plan {
    fn from(step: Step) -> Plan {
        Plan {
            step,
            new_exit: None,
        }
    }
}

fn report(report: Option<Report>, next: Next) -> Step {
    Step::Report { report, next }
}

/// The next step for an Instance bound to this node (see the module docs).
pub fn next_step(o: &Observed) -> Plan {
    let status = o.status;
    match o.state {
        None => start_step(o, status.restart_count).into(),
        Some(State::Running {
            runtime_id,
            started,
        }) => {
            let changed = status.phase != Phase::Running
                || status.runtime_id.as_deref() != Some(runtime_id.as_str());
            let running = changed.then(|| Report::Running {
                runtime_id: runtime_id.clone(),
                started: *started,
            });
            report(running, Next::Requeue(RUNNING_POLL)).into()
        }
        Some(State::Exited {
            code,
            oom_killed,
            finished,
            ..
        }) => {
            let (code, reason) = (*code, ExitReason::of(*code, *oom_killed));
            let new_exit = (status.phase == Phase::Running).then_some(reason);
            let restart = match o.policy {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => code != Some(0),
                RestartPolicy::Never => false,
            };
            let step = if !restart {
                let phase = if code == Some(0) {
                    Phase::Succeeded
                } else {
                    Phase::Failed
                };
                let finished = (status.phase != phase).then_some(Report::Finished {
                    phase,
                    code,
                    reason,
                });
                report(finished, Next::AwaitChange)
            } else {
                let wait = restart_backoff(status.restart_count);
                let since = (o.now - *finished).to_std().unwrap_or_default();
                if since < wait {
                    let remaining = wait - since;
                    let changed =
                        status.reason != reason.as_str() || status.phase != Phase::Starting;
                    let backing_off = changed.then_some(Report::BackingOff {
                        code,
                        reason,
                        remaining,
                    });
                    report(backing_off, Next::Requeue(remaining))
                } else {
                    start_step(o, status.restart_count + 1)
                }
            };
            Plan { step, new_exit }
        }
    }
}

/// Start as restart number `restarts`, or wait for an address first: while the node has
/// no subnet, or no free address is left in it, the agent says so and looks again.
fn start_step(o: &Observed, restarts: u32) -> Step {
    let Addressing::Own { subnet, address } = o.addressing else {
        return Step::Start {
            restarts,
            address: None,
        };
    };
    match (subnet, address) {
        (Some(subnet), Some(ip)) => Step::Start {
            restarts,
            address: Some(InstanceAddress {
                ip,
                prefix: subnet.prefix,
                gateway: subnet.gateway(),
            }),
        },
        (subnet, _) => {
            let message = waiting_for_address(subnet);
            let said = o.status.reason == WAITING_FOR_ADDRESS && o.status.message == message;
            let waiting = (!said).then_some(Report::WaitingForAddress { subnet });
            report(waiting, Next::Requeue(SUBNET_POLL))
        }
    }
}

/// Why an Instance waits for an address, with its node's subnet (`None`: none yet).
fn waiting_for_address(subnet: Option<Cidr>) -> String {
    match subnet {
        None => "waiting for the cluster to assign the node a subnet".into(),
        Some(subnet) => format!("no free address left in the node's subnet {subnet}"),
    }
}

/// Why a start failed: in the runtime, or attaching the network.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The runtime could not start the workload.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Its environment takes a value that is not there (no value is ever shown).
    #[error("{instance}: {source}")]
    Config {
        /// The Instance (`ns/name`).
        instance: String,
        /// What is missing.
        #[source]
        source: crate::config::ConfigError,
    },
    /// The workload's network could not be attached.
    #[error("{instance}: network: {source}")]
    Network {
        /// The Instance (`ns/name`).
        instance: String,
        /// What failed.
        #[source]
        source: NetworkError,
    },
}

impl StartError {
    /// The reason the Instance's status shows.
    pub fn reason(&self) -> &'static str {
        match self {
            StartError::Runtime(e) => e.reason(),
            StartError::Config { .. } => crate::config::CONFIG_ERROR,
            StartError::Network { .. } => "NetworkFailed",
        }
    }
}

/// What a start as restart number `restarts` that ended with `outcome` reports, and
/// when to look again.
pub fn after_start(outcome: Result<&State, &StartError>, restarts: u32) -> (Option<Report>, Next) {
    match outcome {
        Ok(State::Running {
            runtime_id,
            started,
        }) => (
            Some(Report::Started {
                runtime_id: runtime_id.clone(),
                started: *started,
                restarts,
            }),
            Next::Requeue(RUNNING_POLL),
        ),
        // It ended at once: its exit is handled at the next look.
        Ok(State::Exited { .. }) => (None, Next::Requeue(Duration::from_secs(1))),
        Err(e) => (
            Some(Report::StartFailed {
                reason: e.reason(),
                message: e.to_string(),
                restarts,
            }),
            Next::Requeue(restart_backoff(restarts)),
        ),
    }
}

/// What the agent's reconcile works with.
pub(crate) struct Instances {
    pub client: Client,
    /// The node's name.
    pub node: String,
    /// The node's address (the Instances' `hostIP`).
    pub address: String,
    pub runtime: Arc<dyn Runtime>,
    pub network: Option<Network>,
    pub metrics: Arc<Metrics>,
    /// The node's subnet, once the cluster has assigned it (read at each heartbeat).
    pub subnet: Arc<Mutex<Option<Cidr>>>,
    /// Instances whose removal runs in the background (a stop may take its grace
    /// period: it must not hold one of the few reconcile slots that starts need).
    pub removing: Mutex<HashSet<InstanceId>>,
    /// The Instances as this agent last wrote them, until its cache shows that: each
    /// status write carries every field the agent owns, so one built from an older
    /// cached copy (an exit seen right after a start) would undo the last.
    pub written: Written<Instance>,
    /// The Instance IPs the node has handed out.
    pub addresses: NodeAddresses,
    /// The cache of the Instances bound here (the addresses they hold).
    pub bound: Store<Instance>,
}

impl Instances {
    /// The address `key` has or gets in `subnet` (see [`crate::addresses`]): the one its
    /// status shows, else the one it is attached with (a start whose report was lost),
    /// else a free one.
    fn address_for(
        &self,
        key: &ObjectRef,
        id: &InstanceId,
        status: &InstanceStatus,
        subnet: Cidr,
    ) -> Option<Ipv4Addr> {
        let own = status
            .instance_ip
            .filter(|ip| subnet.contains(*ip))
            .or_else(|| self.network.as_ref()?.address_of(id));
        let others = self
            .bound
            .state()
            .into_iter()
            .filter(|i| ObjectRef::of(i.as_ref()) != *key)
            .filter_map(|i| i.status.as_ref()?.instance_ip);
        self.addresses.address_for(key, subnet, own, others)
    }

    async fn remove(&self, id: &InstanceId) -> Result<(), AgentError> {
        remove_workload(self.runtime.as_ref(), self.network.as_ref(), id).await
    }

    /// Everything the node holds of Instances (for adoption and cleanup when the agent
    /// starts).
    pub async fn held(&self) -> Result<Vec<InstanceId>, AgentError> {
        held_workloads(self.runtime.as_ref(), self.network.as_ref()).await
    }
}

/// Stop and forget `id`'s workload and take its network down: ports first (so a new
/// replica finds them free), then the workload stops, then the namespace goes, then
/// the runtime forgets the workload (so what the runtime lists still has its network).
pub async fn remove_workload(
    runtime: &dyn Runtime,
    network: Option<&Network>,
    id: &InstanceId,
) -> Result<(), AgentError> {
    if let Some(network) = network {
        network.unpublish(id);
        runtime.stop(id).await?;
        network.detach(id).await?;
    }
    runtime.remove(id).await?;
    Ok(())
}

/// Everything a node holds of Instances: what the runtime has and what is attached.
pub async fn held_workloads(
    runtime: &dyn Runtime,
    network: Option<&Network>,
) -> Result<Vec<InstanceId>, AgentError> {
    let mut ids = runtime.list().await?;
    if let Some(network) = network {
        ids.extend(network.attached());
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Remove `id` in the background, retried a few times; a second call while one runs
/// does nothing.
fn remove_in_background(ctx: &Arc<Instances>, id: InstanceId) {
    if !ctx
        .removing
        .lock()
        .expect("not poisoned")
        .insert(id.clone())
    {
        return;
    }
    let ctx = ctx.clone();
    tokio::spawn(async move {
        for attempt in 0..4u32 {
            match ctx.remove(&id).await {
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
        ctx.removing.lock().expect("not poisoned").remove(&id);
    });
}

/// One look at the Instance `key` (`None`: deleted or bound elsewhere).
pub(crate) async fn reconcile(
    key: ObjectRef,
    instance: Option<Arc<Instance>>,
    ctx: Arc<Instances>,
) -> Result<Action, AgentError> {
    let id = InstanceId {
        namespace: key.namespace.clone().unwrap_or_default(),
        name: key.name.clone(),
    };
    let instance = instance.map(|cached| ctx.written.newest(&key, cached));
    let mine = instance.filter(|i| {
        i.spec.node.as_deref() == Some(ctx.node.as_str()) && i.metadata.deletion_timestamp.is_none()
    });
    if ctx.removing.lock().expect("not poisoned").contains(&id) {
        // The workload of this name is still being removed (a stop may take its grace
        // period). Looking at it now would publish its ports again (adopted workloads
        // get their ports back that way) after the removal took them down, and the
        // port would stay taken.
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let state = ctx.runtime.state(&id).await?;
    let Some(instance) = mine else {
        ctx.written.forget(&key);
        ctx.addresses.forget(&key);
        let attached = ctx.network.as_ref().is_some_and(|n| n.holds(&id));
        if state.is_some() || attached {
            tracing::info!(instance = %id, "no longer bound here; removing");
            remove_in_background(&ctx, id);
        }
        return Ok(Action::await_change());
    };
    if let (Some(State::Running { .. }), Some(network)) = (&state, &ctx.network) {
        network.adopt(&id).await;
    }
    let workload = &instance.spec.template;
    let netns = ctx.network.as_ref().and(ctx.runtime.netns(&id, workload));
    let status = instance.status.clone().unwrap_or_default();
    let addressing = match netns {
        Some(_) => {
            let subnet = *ctx.subnet.lock().expect("not poisoned");
            let address = subnet.and_then(|subnet| ctx.address_for(&key, &id, &status, subnet));
            Addressing::Own { subnet, address }
        }
        None => Addressing::Node,
    };
    let plan = next_step(&Observed {
        status: &status,
        state: state.as_ref(),
        policy: workload.restart_policy,
        addressing,
        now: Utc::now(),
    });
    if let Some(reason) = plan.new_exit {
        ctx.metrics
            .exits
            .get_or_create(&ReasonLabel {
                reason: reason.as_str().into(),
            })
            .inc();
    }
    let next = match plan.step {
        Step::Report { report, next } => {
            if let Some(report) = report {
                tracing::debug!(instance = %id, ?report, "status");
                let ip = match addressing {
                    Addressing::Own { address, .. } => address,
                    Addressing::Node => None,
                };
                write(&ctx, &instance, &report, ip).await?;
            }
            next
        }
        Step::Start { restarts, address } => {
            start(&ctx, &id, &instance, restarts, netns.zip(address)).await?
        }
    };
    Ok(next.into())
}

/// Write `report` to `instance`'s status, with the Instance's address `ip` when it has
/// one, and remember what the server stored.
async fn write(
    ctx: &Instances,
    instance: &Instance,
    report: &Report,
    ip: Option<Ipv4Addr>,
) -> Result<(), AgentError> {
    let api: Api<Instance> = ctx.client.api(instance.metadata.namespace.as_deref());
    let mut fields = report.fields(&ctx.address);
    if let Some(ip) = ip {
        fields["instanceIP"] = json!(ip);
    }
    let status = status_apply(instance, report.phase(), fields, Utc::now());
    let stored = api
        .apply_own_status(&instance.metadata.name, &status)
        .await?;
    ctx.written.wrote(ObjectRef::of(instance), stored);
    Ok(())
}

/// Start `instance`'s workload as restart number `restarts`, in namespace `netns` with
/// `address` when it has a network of its own, and report how that went.
async fn start(
    ctx: &Instances,
    id: &InstanceId,
    instance: &Instance,
    restarts: u32,
    network: Option<(PathBuf, InstanceAddress)>,
) -> Result<Next, AgentError> {
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
        ("OAKESTRA_NODE".to_string(), ctx.node.clone()),
    ];
    // A left-over record of an earlier run is replaced.
    let begun = std::time::Instant::now();
    ctx.remove(id).await?;
    tracing::debug!(instance = %id, took_ms = begun.elapsed().as_millis(), "cleared earlier record");
    let outcome = async {
        let workload = &crate::config::resolve(&ctx.client, &id.namespace, &instance.spec.template)
            .await
            .map_err(|source| StartError::Config {
                instance: id.to_string(),
                source,
            })?;
        if let (Some(attach), Some((netns, address))) = (&ctx.network, &network) {
            attach
                .attach(id, netns, address, &workload.ports)
                .await
                .map_err(|source| StartError::Network {
                    instance: id.to_string(),
                    source,
                })?;
        }
        Ok(ctx.runtime.start(id, workload, &env).await?)
    }
    .await;
    match &outcome {
        Ok(State::Running { runtime_id, .. }) => {
            tracing::info!(instance = %id, runtime_id, restarts, "started");
            ctx.metrics.starts.inc();
            if restarts > 0 {
                ctx.metrics.restarts.inc();
            }
        }
        Ok(State::Exited { .. }) => {}
        Err(_) => {
            // Leave nothing half-attached behind.
            if let Some(network) = &ctx.network {
                let _ = network.detach(id).await;
            }
        }
    }
    let (report, next) = after_start(outcome.as_ref(), restarts);
    if let Some(report) = report {
        let ip = network.filter(|_| outcome.is_ok()).map(|(_, a)| a.ip);
        write(ctx, instance, &report, ip).await?;
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::{Condition, ConditionStatus};

    const SECOND: Duration = Duration::from_secs(1);

    fn t0() -> DateTime<Utc> {
        "2024-05-01T12:00:00Z".parse().unwrap()
    }

    /// `t0` plus `secs` (fractions allowed).
    fn at(secs: f64) -> DateTime<Utc> {
        t0() + chrono::Duration::milliseconds((secs * 1000.0) as i64)
    }

    fn status(phase: Phase, restarts: u32, reason: &str) -> InstanceStatus {
        InstanceStatus {
            phase,
            restart_count: restarts,
            reason: reason.into(),
            runtime_id: (phase == Phase::Running).then(|| "c1".to_string()),
            ..Default::default()
        }
    }

    /// `status`, bound `secs` after `t0` and given `ip`.
    fn bound(mut status: InstanceStatus, secs: f64, ip: Option<&str>) -> InstanceStatus {
        status.conditions.push(Condition {
            type_: crds::conditions::SCHEDULED.into(),
            status: ConditionStatus::True,
            reason: "Placed".into(),
            message: String::new(),
            last_transition_time: Some(at(secs)),
        });
        status.instance_ip = ip.map(|ip| ip.parse().unwrap());
        status
    }

    fn running(id: &str) -> State {
        State::Running {
            runtime_id: id.into(),
            started: t0(),
        }
    }

    /// Exited at `t0` with `code`, OOM-killed or not.
    fn exited(code: Option<i32>, oom_killed: bool) -> State {
        State::Exited {
            runtime_id: "c1".into(),
            code,
            oom_killed,
            started: t0(),
            finished: t0(),
        }
    }

    fn subnet() -> Option<Cidr> {
        Some("10.0.0.0/26".parse().unwrap())
    }

    fn start(restarts: u32) -> Step {
        Step::Start {
            restarts,
            address: None,
        }
    }

    fn wait(report: Option<Report>, next: Next) -> Step {
        Step::Report { report, next }
    }

    fn finished(phase: Phase, code: Option<i32>, reason: ExitReason) -> Option<Report> {
        Some(Report::Finished {
            phase,
            code,
            reason,
        })
    }

    fn backing_off(code: Option<i32>, reason: ExitReason, remaining: f64) -> Option<Report> {
        Some(Report::BackingOff {
            code,
            reason,
            remaining: Duration::from_secs_f64(remaining),
        })
    }

    use ExitReason::*;
    use Next::*;
    use Phase::*;
    use RestartPolicy::*;

    struct Case {
        what: &'static str,
        status: InstanceStatus,
        state: Option<State>,
        policy: RestartPolicy,
        addressing: Addressing,
        now: DateTime<Utc>,
        step: Step,
        new_exit: Option<ExitReason>,
    }

    fn case(what: &'static str, status: InstanceStatus, state: Option<State>) -> Case {
        Case {
            what,
            status,
            state,
            policy: Always,
            addressing: Addressing::Node,
            now: t0(),
            step: start(0),
            new_exit: None,
        }
    }

    impl Case {
        fn policy(mut self, policy: RestartPolicy) -> Self {
            self.policy = policy;
            self
        }
        /// A network of its own, in `subnet` (if the node has one) at `address` (if
        /// the node has one for it).
        fn own_network(mut self, subnet: Option<Cidr>, address: Option<&str>) -> Self {
            let address = address.map(|a| a.parse().unwrap());
            self.addressing = Addressing::Own { subnet, address };
            self
        }
        fn now(mut self, secs: f64) -> Self {
            self.now = at(secs);
            self
        }
        fn then(mut self, step: Step) -> Self {
            self.step = step;
            self
        }
        fn counts(mut self, exit: ExitReason) -> Self {
            self.new_exit = Some(exit);
            self
        }
    }

    #[test]
    fn next_step_follows_the_restart_policy_backoff_and_exit_reasons() {
        let cases = [
            // Nothing in the runtime: start, keeping the restart count.
            case("a new Instance starts", status(Scheduled, 0, ""), None).then(start(0)),
            case(
                "a lost workload starts again at the same count",
                status(Running, 3, ""),
                None,
            )
            .then(start(3)),
            // Running, as this agent started it or as an earlier agent left it.
            case(
                "a running workload already reported is polled",
                status(Running, 0, ""),
                Some(running("c1")),
            )
            .then(wait(None, Requeue(5 * SECOND))),
            case(
                "an adopted workload is reported Running",
                status(Starting, 2, "Error"),
                Some(running("c1")),
            )
            .then(wait(
                Some(Report::Running {
                    runtime_id: "c1".into(),
                    started: t0(),
                }),
                Requeue(5 * SECOND),
            )),
            case(
                "a workload under another runtime id is reported again",
                status(Running, 0, ""),
                Some(running("c2")),
            )
            .then(wait(
                Some(Report::Running {
                    runtime_id: "c2".into(),
                    started: t0(),
                }),
                Requeue(5 * SECOND),
            )),
            // Exits under each policy.
            case(
                "Always restarts a completed workload after 1 s",
                status(Running, 0, ""),
                Some(exited(Some(0), false)),
            )
            .then(wait(backing_off(Some(0), Completed, 1.0), Requeue(SECOND)))
            .counts(Completed),
            case(
                "Always restarts once the back-off has passed",
                status(Starting, 0, "Completed"),
                Some(exited(Some(0), false)),
            )
            .now(1.0)
            .then(start(1)),
            case(
                "OnFailure restarts an error",
                status(Running, 0, ""),
                Some(exited(Some(2), false)),
            )
            .policy(OnFailure)
            .now(1.5)
            .then(start(1))
            .counts(Error),
            case(
                "OnFailure keeps a success",
                status(Running, 0, ""),
                Some(exited(Some(0), false)),
            )
            .policy(OnFailure)
            .then(wait(finished(Succeeded, Some(0), Completed), AwaitChange))
            .counts(Completed),
            case(
                "Never keeps an error",
                status(Running, 0, ""),
                Some(exited(Some(1), false)),
            )
            .policy(Never)
            .then(wait(finished(Failed, Some(1), Error), AwaitChange))
            .counts(Error),
            case(
                "Never keeps an OOM kill, whatever its code",
                status(Running, 0, ""),
                Some(exited(Some(137), true)),
            )
            .policy(Never)
            .then(wait(finished(Failed, Some(137), OomKilled), AwaitChange))
            .counts(OomKilled),
            case(
                "an exit nobody saw is a failure",
                status(Running, 0, ""),
                Some(exited(None, false)),
            )
            .policy(Never)
            .then(wait(
                finished(Failed, None, ExitedWhileAgentDown),
                AwaitChange,
            ))
            .counts(ExitedWhileAgentDown),
            case(
                "a reported end is not written or counted again",
                status(Failed, 0, "Error"),
                Some(exited(Some(1), false)),
            )
            .policy(Never)
            .then(wait(None, AwaitChange)),
            case(
                "an OOM kill with code 0 succeeds but says OOMKilled",
                status(Running, 0, ""),
                Some(exited(Some(0), true)),
            )
            .policy(Never)
            .then(wait(finished(Succeeded, Some(0), OomKilled), AwaitChange))
            .counts(OomKilled),
            // The back-off doubles from 1 s to at most 30 s.
            case(
                "the fourth restart waits 8 s",
                status(Running, 3, ""),
                Some(exited(Some(1), false)),
            )
            .now(5.0)
            .then(wait(backing_off(Some(1), Error, 3.0), Requeue(3 * SECOND)))
            .counts(Error),
            case(
                "the back-off stops growing at 30 s",
                status(Running, 10, ""),
                Some(exited(Some(1), false)),
            )
            .now(29.5)
            .then(wait(
                backing_off(Some(1), Error, 0.5),
                Requeue(Duration::from_millis(500)),
            ))
            .counts(Error),
            case(
                "a reported back-off is not written again",
                status(Starting, 3, "Error"),
                Some(exited(Some(1), false)),
            )
            .now(2.0)
            .then(wait(None, Requeue(6 * SECOND))),
            case(
                "a back-off for another reason is written",
                status(Starting, 3, "Completed"),
                Some(exited(Some(1), false)),
            )
            .now(2.0)
            .then(wait(backing_off(Some(1), Error, 6.0), Requeue(6 * SECOND))),
            case(
                "after 30 s the restart happens",
                status(Starting, 10, "Error"),
                Some(exited(Some(1), false)),
            )
            .now(30.0)
            .then(start(11)),
            // A networked Instance waits for its address.
            case(
                "no node subnet yet: say so",
                bound(status(Scheduled, 0, ""), 0.0, None),
                None,
            )
            .own_network(None, None)
            .then(wait(
                Some(Report::WaitingForAddress { subnet: None }),
                Requeue(SECOND),
            )),
            case(
                "said so already: wait quietly",
                bound(
                    InstanceStatus {
                        message: "waiting for the cluster to assign the node a subnet".into(),
                        ..status(Starting, 0, WAITING_FOR_ADDRESS)
                    },
                    0.0,
                    None,
                ),
                None,
            )
            .own_network(None, None)
            .now(3.0)
            .then(wait(None, Requeue(SECOND))),
            case(
                "the node's subnet is full: say so",
                bound(
                    InstanceStatus {
                        message: "waiting for the cluster to assign the node a subnet".into(),
                        ..status(Starting, 0, WAITING_FOR_ADDRESS)
                    },
                    0.0,
                    None,
                ),
                None,
            )
            .own_network(subnet(), None)
            .then(wait(
                Some(Report::WaitingForAddress { subnet: subnet() }),
                Requeue(SECOND),
            )),
            case(
                "with subnet and address it starts at that address",
                bound(status(Scheduled, 0, ""), 0.0, None),
                None,
            )
            .own_network(subnet(), Some("10.0.0.5"))
            .then(Step::Start {
                restarts: 0,
                address: Some(InstanceAddress {
                    ip: "10.0.0.5".parse().unwrap(),
                    prefix: 26,
                    gateway: "10.0.0.1".parse().unwrap(),
                }),
            }),
            case(
                "a restart waits for the address too",
                bound(status(Running, 0, ""), -10.0, None),
                Some(exited(Some(1), false)),
            )
            .own_network(None, None)
            .now(2.0)
            .then(wait(
                Some(Report::WaitingForAddress { subnet: None }),
                Requeue(SECOND),
            ))
            .counts(Error),
            case(
                "without a network of its own nothing waits",
                bound(status(Scheduled, 0, ""), 0.0, None),
                None,
            )
            .then(start(0)),
        ];
        for c in cases {
            let plan = next_step(&Observed {
                status: &c.status,
                state: c.state.as_ref(),
                policy: c.policy,
                addressing: c.addressing,
                now: c.now,
            });
            assert_eq!(plan.step, c.step, "{}", c.what);
            assert_eq!(plan.new_exit, c.new_exit, "{}: exit counted", c.what);
        }
    }

    #[test]
    fn restarts_back_off_from_1s_doubling_to_30s() {
        let table = [
            (0, 1),
            (1, 2),
            (2, 4),
            (3, 8),
            (4, 16),
            (5, 30),
            (6, 30),
            (40, 30),
        ];
        for (restarts, secs) in table {
            assert_eq!(
                restart_backoff(restarts),
                Duration::from_secs(secs),
                "after {restarts} restarts"
            );
        }
    }

    #[test]
    fn a_start_reports_running_or_its_failure_with_the_errors_reason() {
        let pull = StartError::Runtime(RuntimeError::ImagePull {
            instance: "default/a".into(),
            source: "manifest unknown".into(),
        });
        let network = StartError::Network {
            instance: "default/a".into(),
            source: NetworkError::Setup {
                step: "ip netns add".into(),
                message: "busy".into(),
            },
        };
        let io = StartError::Runtime(RuntimeError::Io {
            instance: "default/a".into(),
            step: "writing the state",
            source: std::io::Error::other("disk full"),
        });
        let start = StartError::Runtime(RuntimeError::Start {
            instance: "default/a".into(),
            message: "no image".into(),
        });
        let failed = |e: &StartError, restarts| {
            (
                Some(Report::StartFailed {
                    reason: e.reason(),
                    message: e.to_string(),
                    restarts,
                }),
                Requeue(restart_backoff(restarts)),
            )
        };
        assert_eq!(
            after_start(Ok(&running("c1")), 2),
            (
                Some(Report::Started {
                    runtime_id: "c1".into(),
                    started: t0(),
                    restarts: 2
                }),
                Requeue(5 * SECOND)
            )
        );
        assert_eq!(
            after_start(Ok(&exited(Some(0), false)), 0),
            (None, Requeue(SECOND))
        );
        assert_eq!(after_start(Err(&pull), 3), failed(&pull, 3));
        let reasons = [
            (
                &pull,
                "ImagePullFailed",
                "default/a: pulling the image: manifest unknown",
            ),
            (
                &network,
                "NetworkFailed",
                "default/a: network: ip netns add: busy",
            ),
            (
                &io,
                "RuntimeError",
                "default/a: writing the state: disk full",
            ),
            (&start, "StartFailed", "default/a: cannot start: no image"),
        ];
        for (e, reason, message) in reasons {
            assert_eq!(e.reason(), reason, "{e}");
            assert_eq!(e.to_string(), message);
        }
    }

    #[test]
    fn the_status_applied_is_all_the_agent_owns() {
        /// An Instance at generation 4, `Ready` as given (or absent), with what the
        /// binder wrote, and the agent's address and earlier exit.
        fn instance(ready: Option<ConditionStatus>) -> Instance {
            let mut i = Instance::new("web-0", Default::default());
            i.metadata.generation = Some(4);
            i.metadata.resource_version = Some("9".into());
            let mut status = InstanceStatus {
                phase: Phase::Starting,
                instance_ip: Some("10.0.0.5".parse().unwrap()),
                restart_count: 2,
                exit_code: Some(1),
                reason: "Error".into(),
                host_ip: Some("192.0.2.1".into()),
                ..Default::default()
            };
            let scheduled = crds::conditions::SCHEDULED;
            crds::set_condition(
                &mut status.conditions,
                scheduled,
                ConditionStatus::True,
                "Placed",
                "on n1",
                t0(),
            );
            if let Some(r) = ready {
                let reason = if r == ConditionStatus::True {
                    "Running"
                } else {
                    "Starting"
                };
                let message = if r == ConditionStatus::True {
                    "the workload runs"
                } else {
                    "the agent is starting the workload"
                };
                crds::set_condition(&mut status.conditions, READY, r, reason, message, t0());
            }
            i.status = Some(status);
            i
        }
        let ready = |status: &str, reason: &str, message: &str, at: DateTime<Utc>| json!([{"type": "Ready", "status": status, "reason": reason, "message": message, "lastTransitionTime": at}]);
        let now = at(5.0);
        let cases = [
            (
                "first report: Ready now; the exit's fields go; the address stays; the binder's condition is not sent",
                instance(None),
                Running,
                json!({"runtimeId": "c1", "reason": null, "message": null, "exitCode": null}),
                json!({"phase": "Running", "observedGeneration": 4, "runtimeId": "c1", "restartCount": 2,
                 "hostIP": "192.0.2.1", "instanceIP": "10.0.0.5", "conditions": ready("True", "Running", "the workload runs", now)}),
            ),
            (
                "Ready unchanged: its transition time stays",
                instance(Some(ConditionStatus::True)),
                Running,
                json!({"runtimeId": "c1", "reason": null, "message": null, "exitCode": null}),
                json!({"phase": "Running", "observedGeneration": 4, "runtimeId": "c1", "restartCount": 2,
                 "hostIP": "192.0.2.1", "instanceIP": "10.0.0.5", "conditions": ready("True", "Running", "the workload runs", t0())}),
            ),
            (
                "an exit turns Ready False with the status message; what the report leaves out stays",
                instance(Some(ConditionStatus::True)),
                Starting,
                json!({"message": "exited (Error, code Some(1)); restarting in 1s"}),
                json!({"phase": "Starting", "observedGeneration": 4, "restartCount": 2, "exitCode": 1,
                 "reason": "Error", "hostIP": "192.0.2.1", "instanceIP": "10.0.0.5",
                 "message": "exited (Error, code Some(1)); restarting in 1s",
                 "conditions": ready("False", "Starting", "exited (Error, code Some(1)); restarting in 1s", now)}),
            ),
        ];
        for (what, instance, phase, fields, expected) in cases {
            assert_eq!(
                status_apply(&instance, phase, fields, now),
                expected,
                "{what}"
            );
        }
    }

    #[test]
    fn reports_set_the_status_as_before() {
        let host = "192.0.2.1";
        let table = [
            (
                Report::BackingOff {
                    code: Some(1),
                    reason: Error,
                    remaining: Duration::from_millis(2500),
                },
                json!({"phase": "Starting", "exitCode": 1, "reason": "Error", "message": "exited (Error, code Some(1)); restarting in 2s"}),
            ),
            (
                Report::BackingOff {
                    code: None,
                    reason: ExitedWhileAgentDown,
                    remaining: Duration::from_millis(300),
                },
                json!({"phase": "Starting", "exitCode": null, "reason": "ExitedWhileAgentDown", "message": "exited (ExitedWhileAgentDown, code None); restarting in 1s"}),
            ),
            (
                Report::Finished {
                    phase: Failed,
                    code: None,
                    reason: ExitedWhileAgentDown,
                },
                json!({"phase": "Failed", "exitCode": null, "reason": "ExitedWhileAgentDown", "message": "exited with code unknown"}),
            ),
            (
                Report::Started {
                    runtime_id: "c1".into(),
                    started: t0(),
                    restarts: 1,
                },
                json!({"phase": "Running", "runtimeId": "c1", "startTime": "2024-05-01T12:00:00Z", "hostIP": host,
                    "restartCount": 1, "reason": null, "message": null, "exitCode": null}),
            ),
            (
                Report::StartFailed {
                    reason: "StartFailed",
                    message: "m".into(),
                    restarts: 0,
                },
                json!({"phase": "Failed", "reason": "StartFailed", "message": "m", "restartCount": 0}),
            ),
        ];
        for (report, patch) in table {
            assert_eq!(report.fields(host), patch, "{report:?}");
        }
    }
}
