//! The Instance state machine: what the agent does with each Instance bound to its node.
//!
//! [`next_step`] is the decision, without IO: from the Instance's status, what the
//! runtime says about its workload, its restart policy, its addressing and the time, it
//! picks one step: report a status, start the workload, or wait. [`after_start`]
//! decides what a start's outcome reports. [`reconcile`] does the IO around them:
//! it asks the runtime, attaches the network around a start, writes the status, and
//! removes in the background what no longer has an Instance here.
//!
//! Restart policy: `Always` restarts, `OnFailure` restarts on a non-zero exit, `Never`
//! (Oakestra's `one_shot`) runs once; restarts back off exponentially (1 s .. 30 s). A
//! workload found after an agent restart is adopted as it is. A networked Instance
//! starts once the cluster has assigned the node a subnet and the Instance an IP in it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use client::runtime::{Action, ObjectRef};
use client::{Api, Client};
use crds::ipam::Cidr;
use crds::{Instance, InstanceStatus, Phase, RestartPolicy};
use serde_json::json;

use crate::metrics::{Metrics, ReasonLabel};
use crate::network::{InstanceAddress, Network, NetworkError};
use crate::runtime::{InstanceId, Runtime, RuntimeError, State};
use crate::AgentError;

/// How often a running workload is looked at again (exits of workloads this agent
/// started arrive at once; adopted ones are polled).
const RUNNING_POLL: Duration = Duration::from_secs(5);
/// How long after its binding an Instance waits for its address before it says so
/// (the address usually follows within milliseconds; this leaves the allocator's write
/// uncontended), and how often it looks again.
const ADDRESS_GRACE: Duration = Duration::from_secs(1);
/// The status reason of an Instance waiting for its address.
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
    /// (`subnet`, as last heard) and the Instance an IP in it.
    Own {
        /// The node's subnet, if assigned yet.
        subnet: Option<Cidr>,
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
    /// It waits for the cluster to assign its address.
    WaitingForAddress,
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
    /// The status merge patch of this report, for an agent at `host_ip`.
    pub fn patch(&self, host_ip: &str) -> serde_json::Value {
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
            Report::WaitingForAddress => {
                json!({"phase": Phase::Starting, "reason": WAITING_FOR_ADDRESS,
                    "message": "waiting for the cluster to assign the node a subnet and the instance an IP"})
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

/// Start as restart number `restarts`, or wait for the address first.
fn start_step(o: &Observed, restarts: u32) -> Step {
    let Addressing::Own { subnet } = o.addressing else {
        return Step::Start {
            restarts,
            address: None,
        };
    };
    match (o.status.instance_ip, subnet) {
        (Some(ip), Some(subnet)) if subnet.contains(ip) => Step::Start {
            restarts,
            address: Some(InstanceAddress {
                ip,
                prefix: subnet.prefix,
                gateway: subnet.gateway(),
            }),
        },
        _ => {
            let bound_for = crds::find_condition(&o.status.conditions, crds::conditions::SCHEDULED)
                .and_then(|c| c.last_transition_time)
                .and_then(|at| (o.now - at).to_std().ok())
                .unwrap_or_default();
            if bound_for < ADDRESS_GRACE {
                return report(None, Next::Requeue(ADDRESS_GRACE - bound_for));
            }
            let waiting =
                (o.status.reason != WAITING_FOR_ADDRESS).then_some(Report::WaitingForAddress);
            report(waiting, Next::Requeue(ADDRESS_GRACE))
        }
    }
}

/// Why a start failed: in the runtime, or attaching the network.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The runtime could not start the workload.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
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
}

impl Instances {
    /// Stop and forget `id`'s workload and take its network down: ports first (so a new
    /// replica finds them free), then the workload, then the namespace.
    async fn remove(&self, id: &InstanceId) -> Result<(), AgentError> {
        if let Some(network) = &self.network {
            network.unpublish(id);
        }
        self.runtime.remove(id).await?;
        if let Some(network) = &self.network {
            network.detach(id).await?;
        }
        Ok(())
    }

    /// Everything the node holds of Instances: what the runtime has and what is
    /// attached (for adoption and cleanup when the agent starts).
    pub async fn held(&self) -> Result<Vec<InstanceId>, AgentError> {
        let mut ids = self.runtime.list().await?;
        if let Some(network) = &self.network {
            ids.extend(network.attached());
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }
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
    let addressing = match netns {
        Some(_) => Addressing::Own {
            subnet: *ctx.subnet.lock().expect("not poisoned"),
        },
        None => Addressing::Node,
    };
    let status = instance.status.clone().unwrap_or_default();
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
    let api: Api<Instance> = ctx.client.api(Some(&id.namespace));
    let next = match plan.step {
        Step::Report { report, next } => {
            if let Some(report) = report {
                tracing::debug!(instance = %id, ?report, "status");
                write(&api, &instance, &report, &ctx.address).await?;
            }
            next
        }
        Step::Start { restarts, address } => {
            start(&ctx, &id, &instance, restarts, netns.zip(address)).await?
        }
    };
    Ok(next.into())
}

/// Write `report` to `instance`'s status.
async fn write(
    api: &Api<Instance>,
    instance: &Instance,
    report: &Report,
    host_ip: &str,
) -> Result<(), AgentError> {
    api.patch_status(
        &instance.metadata.name,
        &json!({ "status": report.patch(host_ip) }),
    )
    .await?;
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
    let workload = &instance.spec.template;
    let outcome = async {
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
        let api: Api<Instance> = ctx.client.api(Some(&id.namespace));
        write(&api, instance, &report, &ctx.address).await?;
    }
    Ok(next)
}
