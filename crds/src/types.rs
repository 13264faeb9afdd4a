//! The served kinds: `Cluster`, `Node`, `Service`, `Instance`, `Event`, `Lease` and the core `Namespace`.
//!
//! Units are part of the field names: `cpuMillicores` (1000 = one core), `memoryMiB`
//! (mebibytes), `storageMiB`, `maxDistanceKm`, `maxMs`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::conditions::Condition;
use crate::meta::{ObjectMeta, Time};
use crate::API_VERSION;

/// A geographic position (WGS 84 degrees).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    /// Degrees north, -90..=90.
    pub latitude: f64,
    /// Degrees east, -180..=180.
    pub longitude: f64,
    /// Optional human name of the place, e.g. `munich-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
}

/// How a workload is run on a worker.
#[derive(
    Serialize,
    Deserialize,
    JsonSchema,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
)]
#[serde(rename_all = "lowercase")]
#[schemars(rename = "Runtime")]
pub enum RuntimeKind {
    /// An OCI image run by containerd.
    #[default]
    Container,
    /// A native executable supervised by the worker agent.
    Process,
    /// A unikernel / microVM (not implemented by workers yet).
    Unikernel,
}

/// Amounts of compute resources.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// CPU in thousandths of a core.
    #[serde(default)]
    pub cpu_millicores: u64,
    /// Memory in MiB.
    #[serde(default, rename = "memoryMiB")]
    pub memory_mib: u64,
    #[serde(default)]
    pub gpus: u32,
    /// Disk in MiB.
    #[serde(default, rename = "storageMiB")]
    pub storage_mib: u64,
}

/// Aggregated capacity, as reported for a Cluster or a Node.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Capacity {
    #[serde(default)]
    pub cpu_millicores: u64,
    #[serde(default, rename = "memoryMiB")]
    pub memory_mib: u64,
    #[serde(default)]
    pub gpus: u32,
    /// Number of nodes (for a Cluster); 1 for a Node.
    #[serde(default)]
    pub nodes: u32,
}

// ---------------------------------------------------------------- Cluster

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Subnet assigned by the root, in CIDR notation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Capacity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocatable: Option<Capacity>,
    /// Runtimes at least one of the cluster's nodes supports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtimes: Vec<RuntimeKind>,
    /// URL of the cluster's own API (where its Nodes are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

// ---------------------------------------------------------------- Node

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeSpec {
    /// Address other nodes and users reach this node at (IP or host name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Runtimes the node's agent can run.
    #[serde(default)]
    pub runtimes: Vec<RuntimeKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// When true no new Instances are bound to the node.
    #[serde(default)]
    pub unschedulable: bool,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Capacity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocatable: Option<Capacity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Capacity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When the agent last wrote this status: at changes and every few heartbeats
    /// (each beat renews the node's `Lease`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<Time>,
    /// Subnet assigned by the cluster, in CIDR notation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// URL of the node's agent (logs of its Instances).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

// ---------------------------------------------------------------- Service

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

/// A port of the workload, optionally published on the node's address.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    pub container_port: u16,
    /// Published on the node when set (Oakestra's `host:container`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    #[serde(default)]
    pub protocol: Protocol,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// What happens when an Instance's workload exits.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    /// Run once (Oakestra's `one_shot`).
    Never,
}

/// Keep Instances within a great-circle distance of a point.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GeoConstraint {
    pub latitude: f64,
    pub longitude: f64,
    pub max_distance_km: f64,
}

/// Keep Instances within a round-trip latency of a target.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LatencyConstraint {
    /// Where latency is measured to: a place name or an address.
    pub target: String,
    pub max_ms: u32,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Only these clusters may run the Service (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
    /// Labels a Cluster must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cluster_selector: BTreeMap<String, String>,
    /// Labels a Node must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo: Option<GeoConstraint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyConstraint>,
}

/// Service IPs requested by the user (Oakestra's `rr_ip` / closest IP).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Addressing {
    /// Balances round-robin across Instances.
    #[serde(
        default,
        rename = "roundRobinIP",
        skip_serializing_if = "Option::is_none"
    )]
    pub round_robin_ip: Option<Ipv4Addr>,
    /// Routes to the closest Instance.
    #[serde(default, rename = "closestIP", skip_serializing_if = "Option::is_none")]
    pub closest_ip: Option<Ipv4Addr>,
}

/// What one Instance runs: the part of a Service that is copied into each Instance.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    #[serde(default)]
    pub runtime: RuntimeKind,
    /// OCI image reference (for `container`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Path of the executable (for `process`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    #[serde(default)]
    pub placement: Placement,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Desired number of Instances (>= 0).
    #[serde(default = "one")]
    pub replicas: i32,
    #[serde(default)]
    pub addressing: Addressing,
    /// The workload every Instance runs.
    pub template: Workload,
}

fn one() -> i32 {
    1
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    #[serde(default, rename = "serviceIP", skip_serializing_if = "Option::is_none")]
    pub service_ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

// ---------------------------------------------------------------- Instance

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSpec {
    /// Name of the owning Service (same namespace). Immutable.
    pub service: String,
    /// Position of this Instance among the Service's replicas.
    #[serde(default)]
    pub ordinal: u32,
    pub template: Workload,
    /// Cluster chosen by root placement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Node chosen by the cluster scheduler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    #[default]
    Pending,
    Scheduled,
    Starting,
    Running,
    Succeeded,
    Failed,
    Terminating,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    #[serde(default)]
    pub phase: Phase,
    #[serde(
        default,
        rename = "instanceIP",
        skip_serializing_if = "Option::is_none"
    )]
    pub instance_ip: Option<Ipv4Addr>,
    #[serde(default, rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    /// Container or process id in the worker's runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    #[serde(default)]
    pub restart_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

// ---------------------------------------------------------------- Event

/// Points at the object an Event is about.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EventType {
    #[default]
    Normal,
    Warning,
}

// ---------------------------------------------------------------- Lease

/// A node's liveness record (as Kubernetes' `coordination.k8s.io` Lease): its agent
/// renews it at every heartbeat, a small write that no Node watcher sees. The Node's
/// status is written only when it changes, and every few heartbeats otherwise.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: LeaseSpec,
}

impl Lease {
    /// A new Lease with the given name and spec.
    pub fn new(name: &str, spec: LeaseSpec) -> Self {
        Lease {
            api_version: API_VERSION.to_string(),
            kind: "Lease".to_string(),
            metadata: ObjectMeta {
                name: name.to_string(),
                ..Default::default()
            },
            spec,
        }
    }
}

/// Who holds a Lease and when they last renewed it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LeaseSpec {
    /// The holder: for a node's Lease, the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_identity: Option<String>,
    /// How long the holder means the Lease to last after each renewal (informative:
    /// the cluster's node lifecycle applies its own timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_duration_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_time: Option<Time>,
}
