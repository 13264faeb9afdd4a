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
    /// Number of GPUs.
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
    /// CPU in thousandths of a core.
    #[serde(default)]
    pub cpu_millicores: u64,
    /// Memory in MiB.
    #[serde(default, rename = "memoryMiB")]
    pub memory_mib: u64,
    /// Number of GPUs.
    #[serde(default)]
    pub gpus: u32,
    /// Number of nodes (for a Cluster); 1 for a Node.
    #[serde(default)]
    pub nodes: u32,
}

// ---------------------------------------------------------------- Cluster

/// What the user declares about a Cluster.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Where the cluster is; root placement measures geographic constraints to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
}

/// What the cluster orchestrator reports (through the root's cluster sync) and the root assigns.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Subnet assigned by the root, in CIDR notation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// Total resources of all the cluster's nodes, Ready or not (`nodes`: how many).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Capacity>,
    /// What is left for new Instances: capacity less what bound Instances request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocatable: Option<Capacity>,
    /// Runtimes at least one of the cluster's nodes supports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub runtimes: Vec<RuntimeKind>,
    /// URL of the cluster's own API (where its Nodes are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_endpoint: Option<String>,
    /// How other clusters reach this one's Instances: its gateway nodes (reported by
    /// the cluster); in a cluster's own copy, also the other clusters' subnets and
    /// gateways (mirrored from the root), for its nodes' routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<ClusterNetwork>,
    /// `Ready`: `True` while the cluster orchestrator reports in time and one of its
    /// nodes at least is Ready (`NodesReady`); `False` with `NoReadyNodes` or
    /// `HeartbeatLapsed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// When the cluster orchestrator last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<Time>,
    /// The `metadata.generation` of the Cluster the orchestrator's last report read
    /// (written with each heartbeat); less than `metadata.generation` while the
    /// cluster has not reported since the spec changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

// ---------------------------------------------------------------- Node

/// What a worker's agent declares about its Node when it registers.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeSpec {
    /// Address other nodes and users reach this node at (IP or host name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Runtimes the node's agent can run.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub runtimes: Vec<RuntimeKind>,
    /// Where the node is; the cluster scheduler measures geographic constraints to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// When true no new Instances are bound to the node.
    #[serde(default)]
    pub unschedulable: bool,
}

/// What the agent reports about its Node, and what the cluster assigns.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Total resources of the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Capacity>,
    /// What is left for new Instances: capacity less what bound Instances request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocatable: Option<Capacity>,
    /// What the node's workloads use now, as measured by its agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Capacity>,
    /// `Ready`: `True` (`AgentReady`) while the agent renews its Lease in time, `False`
    /// (`HeartbeatLapsed`) once it stops.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
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
    /// How the node joins the overlay between the nodes of its cluster, as its agent
    /// set it up (the other nodes' agents make it their peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NodeNetwork>,
    /// The `metadata.generation` of the Node its agent last saw (written at the first
    /// status write after a spec change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A node's end of the overlay (written by its agent).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeNetwork {
    /// The overlay backend: `wireguard`, `vxlan`, or `none` (the node reaches only its
    /// own subnet).
    pub backend: String,
    /// The underlay address other nodes send its overlay traffic to; absent for a
    /// WireGuard node behind NAT, which the others cannot reach first (it calls them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_address: Option<String>,
    /// The UDP port of its overlay device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_port: Option<u16>,
    /// The MAC address of its vxlan device (`vxlan`).
    #[serde(default, rename = "vtepMAC", skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<String>,
    /// Its WireGuard public key, base64 (`wireguard`; the private key never leaves the
    /// node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// A node that carries a cluster's traffic to and from the other clusters.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Gateway {
    /// The node.
    pub node: String,
    /// Its overlay end (as in its Node's `status.network`).
    pub public_address: String,
    /// The UDP port of its overlay device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_port: Option<u16>,
    /// The MAC address of its vxlan device (a `vxlan` cluster).
    #[serde(default, rename = "vtepMAC", skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<String>,
    /// Its WireGuard public key, base64 (a `wireguard` cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// Another cluster, as a cluster's nodes route to it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RemoteCluster {
    /// The cluster's name.
    pub name: String,
    /// Its subnet (all its Instances' addresses).
    pub subnet: String,
    /// Its gateway nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<Gateway>,
}

/// A cluster's place in the network between clusters.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetwork {
    /// This cluster's gateway nodes (the first Ready node with a working data plane).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["node"]))]
    pub gateways: Vec<Gateway>,
    /// The other clusters (only in a cluster's own copy of its `Cluster`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub remotes: Vec<RemoteCluster>,
}

// ---------------------------------------------------------------- Service

/// Transport protocol of a port.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (the default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

/// A port of the workload, optionally published on the node's address.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Port the workload listens on inside its network namespace.
    pub container_port: u16,
    /// Published on the node when set (Oakestra's `host:container`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: Protocol,
}

/// One environment variable of a workload: a value, or one taken from a `ConfigMap` or
/// Secret of the Instance's namespace when the workload starts.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Variable value (empty by default; not with `valueFrom`).
    #[serde(default)]
    pub value: String,
    /// Where the value comes from instead: a key of a `ConfigMap` or Secret, read by the
    /// worker each time the workload starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

/// Where an environment variable's value comes from (exactly one of the two).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    /// A key of a `ConfigMap`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeySelector>,
    /// A key of a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeySelector>,
}

/// A key of a `ConfigMap` or Secret in the same namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
pub struct KeySelector {
    /// The `ConfigMap`'s or Secret's name.
    pub name: String,
    /// The key.
    pub key: String,
    /// When true, a missing object or key leaves the variable unset instead of
    /// keeping the workload from starting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// The kind of object an environment variable's value is taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigSource {
    /// A `ConfigMap`.
    ConfigMap,
    /// A `Secret`.
    Secret,
}

impl ConfigSource {
    /// The kind's plural, as in URL paths (`configmaps`, `secrets`).
    pub fn plural(self) -> &'static str {
        match self {
            ConfigSource::ConfigMap => "configmaps",
            ConfigSource::Secret => "secrets",
        }
    }

    /// The kind's name (`ConfigMap`, `Secret`).
    pub fn kind(self) -> &'static str {
        match self {
            ConfigSource::ConfigMap => "ConfigMap",
            ConfigSource::Secret => "Secret",
        }
    }
}

impl EnvVar {
    /// The `ConfigMap` or Secret key this variable is taken from, if any.
    pub fn source(&self) -> Option<(ConfigSource, &KeySelector)> {
        let from = self.value_from.as_ref()?;
        from.config_map_key_ref
            .as_ref()
            .map(|k| (ConfigSource::ConfigMap, k))
            .or_else(|| {
                from.secret_key_ref
                    .as_ref()
                    .map(|k| (ConfigSource::Secret, k))
            })
    }
}

impl Workload {
    /// The `ConfigMap`s and Secrets (kind and name, each once) this workload's
    /// environment takes values from.
    pub fn config_sources(&self) -> Vec<(ConfigSource, &str)> {
        let mut out: Vec<(ConfigSource, &str)> = Vec::new();
        for (kind, key) in self.env.iter().filter_map(EnvVar::source) {
            if !out.contains(&(kind, key.name.as_str())) {
                out.push((kind, key.name.as_str()));
            }
        }
        out
    }
}

/// What happens when an Instance's workload exits.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Restart after every exit (the default).
    #[default]
    Always,
    /// Restart after a non-zero exit only.
    OnFailure,
    /// Run once (Oakestra's `one_shot`).
    Never,
}

/// Keep Instances within a great-circle distance of a point.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GeoConstraint {
    /// Degrees north of the point, -90..=90.
    pub latitude: f64,
    /// Degrees east of the point, -180..=180.
    pub longitude: f64,
    /// Greatest allowed great-circle distance from the point, in km.
    pub max_distance_km: f64,
}

/// Keep Instances within a round-trip latency of a target.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LatencyConstraint {
    /// Where latency is measured to: a place name or an address.
    pub target: String,
    /// Greatest allowed round-trip time, in milliseconds.
    pub max_ms: u32,
}

/// Constraints on where a Service's Instances may run.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Only these clusters may run the Service (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub clusters: Vec<String>,
    /// Labels a Cluster must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cluster_selector: BTreeMap<String, String>,
    /// Labels a Node must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Keep Instances near a point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo: Option<GeoConstraint>,
    /// Keep Instances within a latency of a target.
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
    /// How the workload runs: `container` (default), `process` or `unikernel`.
    #[serde(default)]
    pub runtime: RuntimeKind,
    /// OCI image reference (for `container`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Path of the executable (for `process`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
    /// The command line: replaces the image's entrypoint (containers); follows the
    /// executable, or names it when there is none (processes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub command: Vec<String>,
    /// Arguments appended to the command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub args: Vec<String>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub env: Vec<EnvVar>,
    /// Ports the workload listens on, optionally published on the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["containerPort", "protocol"]))]
    pub ports: Vec<ServicePort>,
    /// What one Instance requests; placement reserves it and the worker enforces it (cgroup limits).
    #[serde(default)]
    pub resources: Resources,
    /// What happens when the workload exits.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Constraints on where Instances may run.
    #[serde(default)]
    pub placement: Placement,
}

/// What the user declares about a Service.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Desired number of Instances (>= 0).
    #[serde(default = "one")]
    pub replicas: i32,
    /// Service IPs the user asks for; allocated by the root when absent.
    #[serde(default)]
    pub addressing: Addressing,
    /// The workload every Instance runs.
    pub template: Workload,
}

fn one() -> i32 {
    1
}

/// What the root's controllers report about a Service.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// Instances that exist for the Service.
    #[serde(default)]
    pub replicas: i32,
    /// Instances whose workload is running.
    #[serde(default)]
    pub ready_replicas: i32,
    /// The Service's round-robin IP, allocated by the root.
    #[serde(default, rename = "serviceIP", skip_serializing_if = "Option::is_none")]
    pub service_ip: Option<Ipv4Addr>,
    /// Endpoints taking connections through the service IPs (its `Endpoints` object's
    /// ready entries, as the root last saw them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_endpoints: Option<i32>,
    /// `Ready` (exactly `spec.replicas` Instances, all of the current template and
    /// running), `Reconciling` (`True` while it scales, rolls out or waits for
    /// Instances to start), `Stalled` (`True` while an Instance cannot be placed or
    /// failed for good; the reason says which), `Available` and `Placed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the service controller acted on when it wrote this
    /// status; the conditions are about the spec of that generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

// ---------------------------------------------------------------- Instance

/// One replica of a Service, and where it was placed.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSpec {
    /// Name of the owning Service (same namespace). Immutable.
    pub service: String,
    /// Position of this Instance among the Service's replicas.
    #[serde(default)]
    pub ordinal: u32,
    /// The workload, copied from the Service when the Instance was created.
    pub template: Workload,
    /// Cluster chosen by root placement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Node chosen by the cluster scheduler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Where an Instance is in its life.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// Created, not yet bound to a cluster and a node.
    #[default]
    Pending,
    /// Bound to a node; its agent has not started it yet.
    Scheduled,
    /// The agent is starting it (pulling, creating).
    Starting,
    /// The workload runs.
    Running,
    /// The workload exited with 0 and is not restarted.
    Succeeded,
    /// The workload exited with an error, or could not start, and is not restarted.
    Failed,
    /// Being stopped and removed.
    Terminating,
}

/// What the binders, the address allocators and the worker's agent report about an Instance.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// Where the Instance is in its life.
    #[serde(default)]
    pub phase: Phase,
    /// The Instance's own IP, from its node's subnet.
    #[serde(
        default,
        rename = "instanceIP",
        skip_serializing_if = "Option::is_none"
    )]
    pub instance_ip: Option<Ipv4Addr>,
    /// Address of the node the Instance runs on.
    #[serde(default, rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    /// Container or process id in the worker's runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    /// How often the worker restarted the workload.
    #[serde(default)]
    pub restart_count: u32,
    /// Exit code of the workload's last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// When the workload's current run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// One CamelCase word for the last failure, e.g. `OOMKilled` or `ImagePullFailed`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Human-readable detail of `reason`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// `Scheduled` (with why not, when not) and `Ready` (`True` while the workload
    /// runs; otherwise `False` with the phase as the reason).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` the status was written for: by the binder that
    /// found no target, or by the node's agent (at the root: the root's generation
    /// once the cluster's copy has caught up with the spec they share).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

// ---------------------------------------------------------------- Event

/// Points at the object an Event is about.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    /// Kind of the object.
    pub kind: String,
    /// Name of the object.
    pub name: String,
    /// Namespace of the object (none for cluster-scoped kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// UID of the object, telling it apart from a later object of the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// Severity of an Event.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Something expected happened.
    #[default]
    Normal,
    /// Something went wrong or needs attention.
    Warning,
}

// ---------------------------------------------------------------- Lease

/// A lock with a holder and a renewal time (as Kubernetes' `coordination.k8s.io` Lease).
/// Two uses: a node's liveness record, which its agent renews at every heartbeat (a
/// small write that no Node watcher sees; the Node's status is written only when it
/// changes, and every few heartbeats otherwise); and the leader election of the
/// controllers (the Leases `oakestra-root-controllers` and
/// `oakestra-cluster-controllers`): only the process holding the Lease runs them.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// `oakestra.io/v1`.
    pub api_version: String,
    /// `Lease`.
    pub kind: String,
    /// Name (the node's, or a leader-election Lease's) and server-owned fields.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Holder, renewal time and, for leader election, the transitions.
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
    /// The identity of the current holder: for a node's Lease, the node; for a
    /// leader-election Lease, the process running the controllers. Absent (or empty)
    /// when the holder released it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_identity: Option<String>,
    /// How long candidates for the Lease wait before they take it over, counted from
    /// when they last saw it change (a renewal), by their own clock. A node's Lease
    /// states it for information: the cluster's node lifecycle applies its own timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_duration_seconds: Option<u32>,
    /// When the current holder acquired the Lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquire_time: Option<Time>,
    /// When the current holder last renewed the Lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_time: Option<Time>,
    /// How many times the Lease has passed from one holder to another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_transitions: Option<u32>,
}

// ---------------------------------------------------------------- Endpoints

/// A port a Service's IPs answer on: the template's `containerPort`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    /// The port, the same on the service IPs and the Instances.
    pub port: u16,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: Protocol,
}

/// One Instance that can take a Service's traffic.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// The Instance's name.
    pub instance: String,
    /// Its instance IP.
    pub ip: Ipv4Addr,
    /// The cluster it runs in.
    pub cluster: String,
    /// The node it runs on, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Whether it takes new connections: `Running` on a node that is Ready.
    #[serde(default)]
    pub ready: bool,
    /// Where its cluster is (`Cluster.spec.location`), for the closest IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
}

/// Where a Service's traffic goes (see [`Endpoints`]).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointsSpec {
    /// The Service's round-robin IP.
    #[serde(
        default,
        rename = "roundRobinIP",
        skip_serializing_if = "Option::is_none"
    )]
    pub round_robin_ip: Option<Ipv4Addr>,
    /// The Service's closest IP.
    #[serde(default, rename = "closestIP", skip_serializing_if = "Option::is_none")]
    pub closest_ip: Option<Ipv4Addr>,
    /// The ports both IPs answer on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["port", "protocol"]))]
    pub ports: Vec<EndpointPort>,
    /// The Instances that have an address, ready or not, sorted by name. An atomic
    /// list, as Kubernetes' `EndpointSlice.endpoints` is: its writers replace it whole.
    // As a list map keyed by instance, the managed fields of a 1,000-Instance Service
    // were as big as its entries, and recording them most of each write's CPU.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub endpoints: Vec<Endpoint>,
}

/// Where a Service's traffic goes: its service IPs, its ports and every Instance that
/// has an address. The root's endpoints controller keeps one per Service (same name and
/// namespace, owned by it); each cluster keeps a copy in which its own Instances'
/// entries are current even while the root is unreachable; every node's agent turns
/// them into its service rules.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// `oakestra.io/v1`.
    pub api_version: String,
    /// `Endpoints`.
    pub kind: String,
    /// Name (the Service's), namespace and server-owned fields.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Service IPs, ports and endpoints.
    #[serde(default)]
    pub spec: EndpointsSpec,
}

impl Endpoints {
    /// New Endpoints with the given name and spec.
    pub fn new(name: &str, spec: EndpointsSpec) -> Self {
        Endpoints {
            api_version: API_VERSION.to_string(),
            kind: "Endpoints".to_string(),
            metadata: ObjectMeta {
                name: name.to_string(),
                ..Default::default()
            },
            spec,
        }
    }

    /// The endpoints that take new connections.
    pub fn ready(&self) -> impl Iterator<Item = &Endpoint> {
        self.spec.endpoints.iter().filter(|e| e.ready)
    }
}
