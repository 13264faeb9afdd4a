//! The Node's side of the cluster protocol, shared by the agent and by [`hollow`]
//! nodes: [`register_node`] creates or refreshes the `Node`, and [`NodeHeartbeat`]
//! renews its `Lease` at every beat and writes its status (`Ready`, capacity, usage,
//! agent endpoint) when that is due, reading back the subnet the cluster assigned.
//!
//! [`hollow`]: crate::hollow

use std::time::Duration;

use chrono::Utc;
use client::{Api, Client, ClientError};
use crds::{
    set_condition, Capacity, ConditionStatus, Lease, LeaseSpec, Location, Node, NodeSpec,
    RuntimeKind,
};
use serde_json::json;

/// What a node says about itself when it registers: the same for a real agent and for a
/// hollow node ([`crate::hollow`]).
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The Node's name.
    pub name: String,
    /// Address other nodes and users reach the node at.
    pub address: String,
    /// The workload kinds it runs.
    pub runtimes: Vec<RuntimeKind>,
    /// Where it is.
    pub location: Option<Location>,
    /// The Node's labels.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// What a node reports in each heartbeat.
#[derive(Debug, Clone)]
pub struct NodeReport {
    /// What it has (reported as capacity and allocatable).
    pub capacity: Capacity,
    /// What it uses now.
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
        ..Default::default()
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
/// capacity, allocatable (= capacity), usage, agent endpoint and `lastHeartbeat`, and
/// `observedGeneration` (a second write, only when the Node is not Ready or its
/// generation moved since the agent last said it saw it).
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
    let mut generation = node.metadata.generation;
    let mut status = node.status.unwrap_or_default();
    let subnet = status.subnet.as_deref().and_then(|s| s.parse().ok());
    let ready = crds::is_true(&status.conditions, crds::conditions::READY);
    if ready && status.observed_generation == generation {
        return Ok(subnet);
    }
    if ready {
        // The spec changed (registration, a cordon): say the agent has seen it. A write
        // only when the generation moved.
        let patch = json!({"status": {"observedGeneration": generation}});
        api.patch_status(name, &patch).await?;
        return Ok(subnet);
    }
    // Not Ready (new, or declared lost): say Ready, keeping the other conditions, at the
    // version read; another controller may write the Node meanwhile (its subnet, say).
    let mut version = node.metadata.resource_version;
    for attempt in 1.. {
        set_condition(
            &mut status.conditions,
            crds::conditions::READY,
            ConditionStatus::True,
            "AgentReady",
            "the agent is heartbeating",
            now,
        );
        let patch = json!({
            "metadata": {"resourceVersion": version},
            "status": {"conditions": status.conditions, "observedGeneration": generation},
        });
        match api.patch_status(name, &patch).await {
            Err(e) if e.is_conflict() && attempt < 5 => {
                let node = api.get(name).await?;
                status = node.status.unwrap_or_default();
                version = node.metadata.resource_version;
                generation = node.metadata.generation;
            }
            other => {
                other?;
                break;
            }
        }
    }
    Ok(subnet)
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
