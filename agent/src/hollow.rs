//! Hollow nodes: simulated workers for scale tests, in the manner of Kubernetes'
//! kubemark and KWOK.
//!
//! One process stands in for many nodes of one cluster. It registers N `Node` objects
//! (`PREFIX-0` … `PREFIX-{N-1}`) with a given capacity and the `container` and `process`
//! runtimes, through the same [`crate::node::register_node`] and
//! [`crate::node::NodeHeartbeat`] the real agent uses, so the cluster sees
//! exactly the writes a real node makes (a Lease renewal per beat, a status write when
//! due). Heartbeats are spread evenly over the interval
//! (one node every `interval / N`), not sent all at once.
//!
//! Nothing runs. One watch of the cluster's Instances serves all N nodes: every
//! Instance bound to one of them is marked `Running` (phase, `hostIP`, `startTime`) as if
//! it had started, once the cluster has assigned its instance IP (as the real agent
//! waits for it), and stays so until it is deleted or bound elsewhere.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use client::runtime::{Action, Controller, IndexName, ObjectRef, Store};
use client::{Api, Client, ClientError, ListParams};
use crds::ipam::Cidr;
use crds::{Capacity, Instance, Node, Phase, RuntimeKind};
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::addresses::NodeAddresses;
use crate::node::{register_node, NodeHeartbeat, NodeInfo, NodeReport};

/// The subnet the cluster assigned to each hollow node, as its heartbeats read it back.
type Subnets = Arc<RwLock<HashMap<String, Cidr>>>;

/// Name of the Instance-cache index by node.
const BY_NODE: IndexName = IndexName::new("node");

/// Settings of one hollow-node process.
#[derive(Debug, Clone)]
pub struct HollowConfig {
    /// Node names are `PREFIX-0` … `PREFIX-{nodes-1}`.
    pub prefix: String,
    /// How many nodes this process simulates.
    pub nodes: usize,
    /// Address every hollow node reports (`spec.address`, the Instances' `hostIP`).
    pub address: String,
    /// Each node heartbeats once per interval.
    pub heartbeat: Duration,
    /// Capacity (and allocatable) each node reports.
    pub capacity: Capacity,
    /// Requests in flight at once (registration, heartbeats, status writes each).
    pub concurrency: usize,
}

/// Why the hollow nodes could not be served.
#[derive(Debug, thiserror::Error)]
pub enum HollowError {
    /// A request to the cluster API failed.
    #[error("API request failed: {0}")]
    Api(#[from] ClientError),
    /// A node name the prefix makes is not a valid name.
    #[error("node name {name:?}: {message}")]
    Name {
        /// The name.
        name: String,
        /// Why it is not valid.
        message: String,
    },
}

impl client::runtime::ReconcileError for HollowError {
    fn is_conflict(&self) -> bool {
        matches!(self, HollowError::Api(e) if e.is_conflict())
    }
}

impl HollowConfig {
    /// The node names this process simulates.
    pub fn node_names(&self) -> Vec<String> {
        (0..self.nodes)
            .map(|i| format!("{}-{i}", self.prefix))
            .collect()
    }

    fn report(&self) -> NodeReport {
        NodeReport {
            capacity: self.capacity.clone(),
            usage: Capacity {
                nodes: 1,
                ..Capacity::default()
            },
            agent_endpoint: None,
        }
    }
}

/// Register the nodes, then heartbeat them and mark the Instances bound to them
/// `Running`, until `shutdown`.
pub async fn run(
    client: Client,
    config: HollowConfig,
    shutdown: CancellationToken,
) -> Result<(), HollowError> {
    let names = config.node_names();
    for name in &names {
        crds::validate::name(name).map_err(|e| HollowError::Name {
            name: name.clone(),
            message: e.to_string(),
        })?;
    }
    let span = tracing::info_span!("hollow", prefix = %config.prefix, nodes = config.nodes);
    tracing::Instrument::instrument(serve(client, config, names, shutdown), span).await
}

async fn serve(
    client: Client,
    config: HollowConfig,
    names: Vec<String>,
    shutdown: CancellationToken,
) -> Result<(), HollowError> {
    let started = Instant::now();
    let nodes: Api<Node> = client.api(None);
    let report = config.report();
    let beats: Vec<Arc<tokio::sync::Mutex<NodeHeartbeat>>> = names
        .iter()
        .map(|name| {
            Arc::new(tokio::sync::Mutex::new(NodeHeartbeat::new(
                name,
                config.heartbeat,
            )))
        })
        .collect();
    let subnets = Subnets::default();
    // Register and send a first heartbeat, so every node is Ready when this returns.
    let results: Vec<Result<(), ClientError>> =
        futures::stream::iter(names.iter().cloned().zip(beats.iter().cloned()))
            .map(|(name, beat)| {
                let (client, nodes, report) = (client.clone(), nodes.clone(), report.clone());
                let (info, subnets) = (node_info(&config, &name), subnets.clone());
                async move {
                    register_node(&nodes, &info).await?;
                    let subnet = beat.lock().await.beat(&client, &report).await?;
                    remember(&subnets, &name, subnet);
                    Ok(())
                }
            })
            .buffer_unordered(config.concurrency.max(1))
            .collect()
            .await;
    if let Some(e) = results.into_iter().find_map(Result::err) {
        return Err(e.into());
    }
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "hollow nodes registered and Ready"
    );
    let beats = tokio::spawn(tracing::Instrument::in_current_span(heartbeats(
        client.clone(),
        config.clone(),
        beats,
        subnets.clone(),
        shutdown.clone(),
    )));
    run_instances(client, config, names, subnets, shutdown).await;
    beats.abort();
    Ok(())
}

fn node_info(config: &HollowConfig, name: &str) -> NodeInfo {
    NodeInfo {
        name: name.to_string(),
        address: config.address.clone(),
        runtimes: vec![RuntimeKind::Container, RuntimeKind::Process],
        location: None,
        labels: [("oakestra.io/hollow".to_string(), "true".to_string())].into(),
    }
}

/// Heartbeat node `k mod N` every `interval / N`, at most `concurrency` at once. Each
/// round over all nodes is logged with its slowest heartbeat and its failures, so an
/// overloaded cluster API shows in the log.
async fn heartbeats(
    client: Client,
    config: HollowConfig,
    nodes: Vec<Arc<tokio::sync::Mutex<NodeHeartbeat>>>,
    subnets: Subnets,
    shutdown: CancellationToken,
) {
    let period = (config.heartbeat / nodes.len().max(1) as u32).max(Duration::from_millis(1));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let permits = Arc::new(tokio::sync::Semaphore::new(config.concurrency.max(1)));
    let report = Arc::new(config.report());
    let slowest_us = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let mut round_start = Instant::now();
    for (k, node) in nodes.iter().cycle().enumerate() {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if k > 0 && k % nodes.len() == 0 {
            tracing::info!(
                round_ms = round_start.elapsed().as_millis() as u64,
                slowest_beat_ms = slowest_us.swap(0, Ordering::Relaxed) / 1000,
                failures = failures.swap(0, Ordering::Relaxed),
                "heartbeat round"
            );
            round_start = Instant::now();
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (client, node, report) = (client.clone(), node.clone(), report.clone());
        let (slowest_us, failures) = (slowest_us.clone(), failures.clone());
        let subnets = subnets.clone();
        tokio::spawn(async move {
            let sent = Instant::now();
            let mut node = node.lock().await;
            match node.beat(&client, &report).await {
                Ok(subnet) => remember(&subnets, node.name(), subnet),
                Err(e) => {
                    failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(node = %node.name(), error = %e, "heartbeat failed");
                }
            }
            slowest_us.fetch_max(sent.elapsed().as_micros() as u64, Ordering::Relaxed);
            drop(permit);
        });
    }
}

/// Record the subnet a heartbeat of node `name` read back.
fn remember(subnets: &Subnets, name: &str, subnet: Option<Cidr>) {
    if let Some(subnet) = subnet {
        let mut known = subnets.write().expect("subnets lock");
        if known.get(name) != Some(&subnet) {
            known.insert(name.to_string(), subnet);
        }
    }
}

struct Ctx {
    client: Client,
    address: String,
    marked: AtomicU64,
    subnets: Subnets,
    /// The addresses each node handed out, by node.
    addresses: HashMap<String, NodeAddresses>,
    /// The cluster's Instances, indexed by node ([`BY_NODE`]).
    instances: Store<Instance>,
}

/// One controller over all the cluster's Instances: those bound to one of `names` get
/// an address of their node's subnet, as a real node hands them out, and are reported
/// `Running`.
async fn run_instances(
    client: Client,
    config: HollowConfig,
    names: Vec<String>,
    subnets: Subnets,
    shutdown: CancellationToken,
) {
    let controller = Controller::new(client.api::<Instance>(None), ListParams::default())
        .name(&format!("hollow-{}", config.prefix))
        .concurrency(config.concurrency.max(1));
    let instances = controller.store();
    instances.add_index(BY_NODE, |i: &Instance| i.spec.node.clone());
    let ctx = Arc::new(Ctx {
        client,
        address: config.address.clone(),
        marked: AtomicU64::new(0),
        subnets,
        addresses: names
            .into_iter()
            .map(|n| (n, NodeAddresses::default()))
            .collect(),
        instances,
    });
    controller
        .run(
            move |i| mark_running(i, ctx.clone()),
            shutdown.cancelled_owned(),
        )
        .await;
}

async fn mark_running(instance: Arc<Instance>, ctx: Arc<Ctx>) -> Result<Action, HollowError> {
    let Some(node) = instance.spec.node.as_deref() else {
        return Ok(Action::await_change());
    };
    let key = ObjectRef::of(instance.as_ref());
    let Some(addresses) = ctx.addresses.get(node) else {
        return Ok(Action::await_change());
    };
    if instance.metadata.deletion_timestamp.is_some() {
        addresses.forget(&key);
        return Ok(Action::await_change());
    }
    let status = instance.status.clone().unwrap_or_default();
    if status.phase == Phase::Running && status.host_ip.as_deref() == Some(ctx.address.as_str()) {
        return Ok(Action::await_change());
    }
    // As the real agent does for a networked Instance: an address of the node's subnet,
    // handed out by the node, goes up with the first report.
    let subnet = ctx.subnets.read().expect("subnets lock").get(node).copied();
    let Some(subnet) = subnet else {
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let others: Vec<_> = ctx
        .instances
        .by_index(BY_NODE, node)
        .into_iter()
        .filter(|i| ObjectRef::of(i.as_ref()) != key)
        .filter_map(|i| i.status.as_ref()?.instance_ip)
        .collect();
    let Some(ip) = addresses.address_for(&key, subnet, status.instance_ip, others) else {
        tracing::warn!(instance = %key, node, %subnet, "no free address left in the node's subnet");
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let name = &instance.metadata.name;
    let api: Api<Instance> = ctx.client.api(instance.metadata.namespace.as_deref());
    let fields = json!({"phase": Phase::Running, "hostIP": ctx.address, "startTime": Utc::now(),
        "instanceIP": ip, "runtimeId": format!("hollow/{node}/{name}"),
        "reason": null, "message": null, "exitCode": null});
    let status = crate::instances::status_apply(&instance, Phase::Running, fields, Utc::now());
    api.apply_own_status(name, &status).await?;
    let marked = ctx.marked.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::debug!(instance = %name, node, "hollow instance Running");
    if marked.is_multiple_of(1000) {
        tracing::info!(marked, "instances marked Running");
    }
    Ok(Action::await_change())
}
