//! The worker agent: registers its `Node` in the cluster API, heartbeats with capacity
//! and usage, and runs the Instances bound to the node through a [`runtime::Runtime`],
//! reporting their status (phase, runtime id, start time, exit code, restarts, reason).
//! [`run`] wires these together; [`runtime::build`] puts a worker's runtime together
//! from its settings.
//!
//! Modules:
//! - [`node`]: the Node's side of the protocol (register, heartbeat, Lease, status),
//!   shared with [`hollow`].
//! - [`instances`]: the Instance state machine (restart policy, back-off, exit reasons,
//!   adoption, waiting for an address) as a pure decision, and the reconcile around it.
//! - [`runtime`]: the `Runtime` trait and its implementations (processes, containerd,
//!   both combined, an in-memory fake), and their assembly.
//! - [`addresses`]: Instance IPs, handed out by the node from its subnet.
//! - [`network`]: Instance networking outside the runtime (CNI bridge, published ports);
//!   the node's service rules and overlay are [`netplane`]'s, which [`run`] starts
//!   beside the runtime.
//! - [`host`]: capacity and usage of the machine, from `/proc`.
//! - [`cgroup`]: cgroup v2 limits of Instances.
//! - [`config`]: environment values taken from `ConfigMap`s and Secrets at each start.
//! - [`serve`]: the agent's HTTP endpoint (logs, metrics, health).
//! - [`metrics`]: the agent's Prometheus metrics.
//! - [`hollow`]: simulated nodes for scale tests.
//! - [`digest`]: `sha256:` content digests.

/// The field manager of the agent's writes (`metadata.managedFields`).
pub const MANAGER: &str = "oakestra-agent";

pub mod addresses;
pub mod cgroup;
pub mod config;
pub mod digest;
pub mod hollow;
pub mod host;
pub mod instances;
pub mod metrics;
pub mod network;
pub mod node;
pub mod runtime;
pub mod serve;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use client::runtime::{Controller, ObjectRef};
use client::{Client, ClientError, ListParams};
use crds::{Capacity, Instance, Location, RuntimeKind};
use tokio_util::sync::CancellationToken;

use crate::instances::Instances;
use crate::network::NetworkError;
use crate::node::{register_node, NodeHeartbeat, NodeInfo, NodeReport};
use crate::runtime::{Assembly, RuntimeError};

/// Settings of one agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Node name (unique in the cluster).
    pub node: String,
    /// Address other nodes and users reach this node at.
    pub address: String,
    /// Where the node is (reported in its spec).
    pub location: Option<Location>,
    /// The Node's labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Where the agent keeps instance state and logs.
    pub data_dir: PathBuf,
    /// Time between heartbeats.
    pub heartbeat: Duration,
    /// Capacity to report; detected from the machine when `None`.
    pub capacity: Option<Capacity>,
    /// Where the agent serves the logs of its Instances (port 0: any free port).
    pub listen: std::net::SocketAddr,
    /// The node's service rules and overlay, kept by [`netplane`] when its Instances
    /// have a network of their own (bridge networking); `None`: not kept.
    pub dataplane: Option<netplane::controller::Config>,
}

/// Why the agent (or one reconcile of it) failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A request to the cluster API failed.
    #[error("API request failed: {0}")]
    Api(#[from] ClientError),
    /// The runtime failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Taking an Instance's network down failed.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// The agent's endpoint cannot listen.
    #[error("serving the agent endpoint: {0}")]
    Listen(std::io::Error),
}

impl client::runtime::ReconcileError for AgentError {
    fn is_conflict(&self) -> bool {
        matches!(self, AgentError::Api(e) if e.is_conflict())
    }
}

/// The node side of the agent: its registration and heartbeats.
struct NodeSide {
    client: Client,
    config: AgentConfig,
    kinds: Vec<RuntimeKind>,
    /// URL of the agent's HTTP endpoint, as reported in the Node's status.
    endpoint: String,
    /// The Lease and status side of the heartbeats.
    heartbeat: tokio::sync::Mutex<NodeHeartbeat>,
    /// Where the subnet the cluster assigned is handed to the Instances.
    subnet: Arc<std::sync::Mutex<Option<crds::ipam::Cidr>>>,
}

impl NodeSide {
    async fn register(&self) -> Result<(), AgentError> {
        let c = &self.config;
        // As kubelet does: selectors (and Oakestra SLAs' `direct` node constraints) can
        // name the node by this label.
        let mut labels = c.labels.clone();
        labels
            .entry(crds::HOSTNAME_LABEL.to_string())
            .or_insert_with(|| c.node.clone());
        let info = NodeInfo {
            name: c.node.clone(),
            address: c.address.clone(),
            runtimes: self.kinds.clone(),
            location: c.location.clone(),
            labels,
        };
        register_node(&self.client.api(None), &info).await?;
        self.beat().await
    }

    async fn beat(&self) -> Result<(), AgentError> {
        let report = NodeReport {
            capacity: self
                .config
                .capacity
                .clone()
                .unwrap_or_else(host::detect_capacity),
            usage: host::usage(),
            agent_endpoint: Some(self.endpoint.clone()),
        };
        let subnet = self
            .heartbeat
            .lock()
            .await
            .beat(&self.client, &report)
            .await?;
        *self.subnet.lock().expect("not poisoned") = subnet;
        Ok(())
    }

    async fn heartbeats(self: Arc<Self>, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.config.heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if let Err(e) = self.beat().await {
                tracing::warn!(node = %self.config.node, error = %e, "heartbeat failed");
            }
        }
    }
}

/// Run the agent with what [`runtime::build`] assembled until `shutdown`: register the
/// Node, heartbeat, and reconcile the Instances bound to it. What the node already
/// holds is adopted if still wanted and removed if not.
///
/// The agent's endpoint (logs, metrics) serves TLS as `endpoint` says.
pub async fn run(
    client: Client,
    config: AgentConfig,
    assembly: Assembly,
    endpoint: apiserver::auth::Security,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    // Its writes (the Node, its Lease, Instance status) are recorded under its name.
    let client = client.as_manager(MANAGER);
    let Assembly {
        runtime,
        mut exits,
        network,
    } = assembly;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(AgentError::Listen)?;
    let port = listener.local_addr().map_err(AgentError::Listen)?.port();
    let metrics = Arc::new(metrics::Metrics::default());
    tokio::spawn(serve::serve(
        listener,
        runtime.clone(),
        metrics.clone(),
        endpoint,
    ));
    let subnet = Arc::new(std::sync::Mutex::new(None));
    let node = Arc::new(NodeSide {
        client: client.clone(),
        config: config.clone(),
        kinds: runtime.kinds(),
        endpoint: format!("https://{}:{port}", config.address),
        heartbeat: tokio::sync::Mutex::new(NodeHeartbeat::new(&config.node, config.heartbeat)),
        subnet: subnet.clone(),
    });
    node.register().await?;
    tracing::info!(node = %config.node, runtime = runtime.name(), "worker agent registered");
    let bridged = network.is_some();
    // Only the Instances bound here; one that leaves arrives as a deletion.
    let bound_here = ListParams {
        field_selector: Some(format!("spec.node={}", config.node)),
        ..Default::default()
    };
    let controller = Controller::new(client.api::<Instance>(None), bound_here)
        .name("agent")
        .concurrency(4);
    let instances = Arc::new(Instances {
        client: client.clone(),
        node: config.node.clone(),
        address: config.address.clone(),
        runtime: runtime.clone(),
        network,
        metrics,
        subnet,
        removing: Default::default(),
        written: Default::default(),
        addresses: Default::default(),
        bound: controller.store(),
    });
    let trigger = controller.trigger();
    // What the node already holds: adopted if still wanted, removed if not.
    for id in instances.held().await? {
        trigger(ObjectRef::new(Some(&id.namespace), &id.name));
    }
    tokio::spawn(async move {
        while let Some(id) = exits.recv().await {
            trigger(ObjectRef::new(Some(&id.namespace), &id.name));
        }
    });
    let beats = tokio::spawn(node.heartbeats(shutdown.clone()));
    // The service rules and the overlay, beside the runtime (bridge networking only:
    // with host networking the Instances have no address of their own to route to).
    let dataplane = match (&config.dataplane, bridged) {
        (Some(settings), true) => {
            let (client, settings, shutdown) = (client.clone(), settings.clone(), shutdown.clone());
            Some(tokio::spawn(async move {
                if let Err(e) = netplane::controller::run(client, settings, shutdown).await {
                    tracing::error!(error = %e, "the node's network controller stopped");
                }
            }))
        }
        _ => None,
    };
    controller
        .run_keyed(
            move |key, instance| instances::reconcile(key, instance, instances.clone()),
            shutdown.cancelled_owned(),
        )
        .await;
    beats.abort();
    if let Some(dataplane) = dataplane {
        let _ = dataplane.await;
    }
    Ok(())
}
