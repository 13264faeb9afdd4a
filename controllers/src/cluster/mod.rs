//! The cluster tier's controllers, run by `oakestra cluster` next to its own API server:
//!
//! - [`report`]: registers the `Cluster` at the root and heartbeats its aggregated
//!   capacity, allocatable, runtimes and readiness;
//! - `sync`: brings the Instances the root placed on this cluster down into the
//!   cluster API and sends their binding and status up;
//! - `endpoints`: keeps the cluster's copy of every Service's `Endpoints`, its own
//!   Instances' entries current (its nodes' service rules come from these);
//! - [`readiness`]: an Instance of a node that is not Ready is `Ready=False`
//!   (`NodeNotReady`) until the node is back, so every cluster's endpoints drop it;
//! - `config`: copies the `ConfigMap`s and Secrets its Instances take environment
//!   values from down from the root, for its nodes' agents to read;
//! - `handback`: gives an Instance no node has room for back to the root, to be
//!   placed on another cluster;
//! - **cluster scheduler**: [`crate::placement`] over Nodes;
//! - **node lifecycle**: [`crate::lifecycle`] over Nodes; Instances of a node `NotReady` past
//!   the eviction timeout are bound to other nodes by the scheduler;
//! - **addresses**: [`crate::subnets::run_cluster`], a subnet per Node and an IP per
//!   Instance.
//!
//! When the root is unreachable the cluster keeps running and healing from its own
//! API; the caches catch up when the root returns.

mod config;
mod endpoints;
mod handback;
pub mod readiness;
pub mod report;
mod sync;

use std::time::Duration;

use client::Client;
use crds::{Location, Node};
use tokio_util::sync::CancellationToken;

pub use report::{summarize, Summary};

/// Settings of a cluster orchestrator.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Name of the cluster at the root.
    pub name: String,
    /// Where the cluster is, reported to the root for geo constraints.
    pub location: Option<Location>,
    /// How often the cluster reports to the root.
    pub heartbeat: Duration,
    /// A node whose last heartbeat is older than this becomes `NotReady`.
    pub node_heartbeat_timeout: Duration,
    /// How long a node may be `NotReady` before its Instances move to other nodes.
    pub eviction: Duration,
    /// Reconciles running at once per controller.
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
    /// The defaults for a cluster named `name`.
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
    use crate::managers;
    // Towards the root, the cluster writes as itself: one manager for its part there.
    let up = root.as_manager(managers::CLUSTER);
    tokio::join!(
        report::heartbeat(
            local.as_manager(managers::CLUSTER),
            up.clone(),
            config.clone(),
            shutdown.clone()
        ),
        endpoints::sync_endpoints(
            local.as_manager(managers::ENDPOINTS),
            up.clone(),
            config.name.clone(),
            config.location.clone(),
            config.concurrency,
            shutdown.clone()
        ),
        config::run(
            local.as_manager(managers::CONFIG),
            up.clone(),
            config.concurrency,
            shutdown.clone()
        ),
        sync::sync_instances(
            local.as_manager(managers::CLUSTER),
            up,
            config.name.clone(),
            config.handback,
            config.concurrency,
            shutdown.clone()
        ),
        crate::placement::run::<Node>(
            local.as_manager(managers::SCHEDULER),
            config.eviction,
            config.concurrency,
            shutdown.clone()
        ),
        crate::lifecycle::run::<Node>(
            local.as_manager(managers::LIFECYCLE),
            config.node_heartbeat_timeout,
            shutdown.clone()
        ),
        readiness::run(
            local.as_manager(managers::READINESS),
            config.concurrency,
            shutdown.clone()
        ),
        crate::subnets::run_cluster(
            local.as_manager(managers::IPAM),
            config.name.clone(),
            config.node_prefix,
            shutdown
        ),
    );
}
