//! The cluster's report to the root: registration, then a heartbeat that carries the
//! capacity, allocatable, runtimes and readiness summed over the cluster's nodes (and
//! the `metadata.generation` of the Cluster it read as `observedGeneration`), and the
//! local copy of the subnet the root assigned.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::Utc;
use client::runtime::cache;
use client::{Api, Client, ListParams};
use crds::conditions::{NETWORK_READY, READY};
use crds::{
    set_condition, Capacity, Cluster, ClusterNetwork, ClusterSpec, ClusterStatus, ConditionStatus,
    Gateway, Instance, Location, Node, Phase, RemoteCluster, RuntimeKind,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::ClusterConfig;
use crate::Error;

/// What this cluster reports to the root.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    /// The capacity of all nodes (`nodes`: how many there are).
    pub capacity: Capacity,
    /// What the Ready schedulable nodes have left (`nodes`: how many they are).
    pub allocatable: Capacity,
    /// The runtimes of the Ready schedulable nodes, each once, in declaration order.
    pub runtimes: Vec<RuntimeKind>,
    /// How many nodes are Ready.
    pub ready_nodes: u32,
}

impl Summary {
    /// The cluster's `Ready` condition: `True` while one node at least is Ready.
    pub fn readiness(&self) -> (ConditionStatus, &'static str, String) {
        if self.ready_nodes > 0 {
            let message = format!(
                "{} of {} nodes ready",
                self.ready_nodes, self.capacity.nodes
            );
            (ConditionStatus::True, "NodesReady", message)
        } else {
            let message = format!("0 of {} nodes ready", self.capacity.nodes);
            (ConditionStatus::False, "NoReadyNodes", message)
        }
    }
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
        if !crds::is_true(&status.conditions, READY) || n.spec.unschedulable {
            continue;
        }
        s.ready_nodes += 1;
        runtimes.extend(n.spec.runtimes.iter().copied());
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
    s.runtimes = runtimes.into_iter().collect();
    s
}

/// The cluster's gateway: the first node by name that is Ready, whose data plane works
/// (`NetworkReady`) and that announced its overlay end with an address the other
/// clusters can reach. One gateway; none while no node
/// qualifies.
pub fn gateways(nodes: &[Arc<Node>]) -> Vec<Gateway> {
    let mut eligible: Vec<Gateway> = nodes
        .iter()
        .filter_map(|n| {
            let status = n.status.as_ref()?;
            let ready = crds::is_true(&status.conditions, READY)
                && crds::is_true(&status.conditions, NETWORK_READY);
            let network = status.network.as_ref().filter(|_| ready)?;
            // Reachable (a node behind NAT cannot be dialled) and with an overlay end.
            (network.vtep_mac.is_some() || network.public_key.is_some()).then_some(())?;
            Some(Gateway {
                node: n.metadata.name.clone(),
                public_address: network.public_address.clone()?,
                public_port: network.public_port,
                vtep_mac: network.vtep_mac.clone(),
                public_key: network.public_key.clone(),
            })
        })
        .collect();
    eligible.sort_by(|a, b| a.node.cmp(&b.node));
    eligible.truncate(1);
    eligible
}

/// The clusters other than `own` that have a subnet, as this cluster's nodes route to
/// them, sorted by name.
pub fn remotes(own: &str, clusters: &[Arc<Cluster>]) -> Vec<RemoteCluster> {
    let mut out: Vec<RemoteCluster> = clusters
        .iter()
        .filter(|c| c.metadata.name != own)
        .filter_map(|c| {
            let status = c.status.as_ref()?;
            Some(RemoteCluster {
                name: c.metadata.name.clone(),
                subnet: status.subnet.clone()?,
                gateways: status
                    .network
                    .as_ref()
                    .map(|n| n.gateways.clone())
                    .unwrap_or_default(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Register and heartbeat, forever; a root that cannot be reached is retried next beat.
pub(super) async fn heartbeat(
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
    // The other clusters (their subnets and gateways), for this cluster's routes; not
    // waited for: a root that cannot be reached yet must not hold the heartbeat up.
    let clusters = cache(root.api::<Cluster>(None), ListParams::default(), until());
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
        let network = ClusterNetwork {
            gateways: gateways(&nodes.state()),
            remotes: remotes(&config.name, &clusters.state()),
        };
        match beat(&local, &root, &config, summary, network).await {
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
    network: ClusterNetwork,
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
    let (ready, reason, message) = summary.readiness();
    set_condition(&mut status.conditions, READY, ready, reason, &message, now);
    let patch = json!({"status": {
        "capacity": summary.capacity,
        "allocatable": summary.allocatable,
        "runtimes": summary.runtimes,
        "apiEndpoint": config.api_endpoint,
        "conditions": status.conditions,
        "lastHeartbeat": now,
        "observedGeneration": current.metadata.generation,
        "network": {"gateways": network.gateways},
    }});
    let updated = clusters.patch_status(&config.name, &patch).await?;
    mirror_subnet(
        local,
        &config.name,
        config.location.as_ref(),
        updated.status.as_ref(),
        &network,
    )
    .await
}

/// Keep a local copy of this cluster's own `Cluster` object with the subnet the root
/// assigned, for the cluster's node subnet allocation, its location, for its nodes'
/// closest IPs, and `network` (its gateways and the other clusters), for their routes.
async fn mirror_subnet(
    local: &Client,
    name: &str,
    location: Option<&Location>,
    root_status: Option<&ClusterStatus>,
    network: &ClusterNetwork,
) -> Result<(), Error> {
    let Some(subnet) = root_status.and_then(|s| s.subnet.clone()) else {
        return Ok(());
    };
    let api: Api<Cluster> = local.api(None);
    let spec = ClusterSpec {
        location: location.cloned(),
    };
    let mut existing = match api.dynamic().get_opt(name).await? {
        Some(c) => c,
        None => {
            api.dynamic()
                .create(
                    &serde_json::to_value(Cluster::new(name, spec.clone())).expect("serializes"),
                )
                .await?
        }
    };
    let stored: Option<ClusterSpec> = existing
        .get("spec")
        .and_then(|s| serde_json::from_value(s.clone()).ok());
    if stored.as_ref() != Some(&spec) {
        let patch = json!({"spec": {"location": spec.location}});
        existing = serde_json::to_value(api.patch(name, &patch).await?).expect("serializes");
    }
    let generation = existing.pointer("/metadata/generation").cloned();
    let observed = existing.pointer("/status/observedGeneration").cloned();
    let mirrored: Option<ClusterNetwork> = existing
        .pointer("/status/network")
        .and_then(|n| serde_json::from_value(n.clone()).ok());
    if existing.pointer("/status/subnet").and_then(|s| s.as_str()) != Some(subnet.as_str())
        || observed != generation
        || mirrored.as_ref() != Some(network)
    {
        // The lists go whole (a merge patch replaces them): this writer owns them.
        let status = json!({"status": {"subnet": subnet, "observedGeneration": generation, "network": network}});
        api.patch_status(name, &status).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::{InstanceSpec, InstanceStatus, NodeSpec, NodeStatus, Resources};

    fn capacity(cpu_millicores: u64, memory_mib: u64, nodes: u32) -> Capacity {
        Capacity {
            cpu_millicores,
            memory_mib,
            gpus: 0,
            nodes,
        }
    }

    /// A node with `runtimes`, Ready or not, that can take 1000m and 1024 MiB of 2000m
    /// and 2048 MiB.
    fn node(name: &str, ready: bool, unschedulable: bool, runtimes: &[RuntimeKind]) -> Arc<Node> {
        let spec = NodeSpec {
            runtimes: runtimes.to_vec(),
            unschedulable,
            ..Default::default()
        };
        let mut n = Node::new(name, spec);
        let mut status = NodeStatus {
            capacity: Some(capacity(2000, 2048, 1)),
            allocatable: Some(capacity(1000, 1024, 1)),
            ..Default::default()
        };
        let ready = if ready {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        set_condition(&mut status.conditions, READY, ready, "", "", Utc::now());
        n.status = Some(status);
        Arc::new(n)
    }

    /// An Instance requesting 200m and 100 MiB on `node`, in `phase`.
    fn on(node: Option<&str>, phase: Phase) -> Arc<Instance> {
        let mut i = Instance::new("web-0", InstanceSpec::default());
        i.spec.node = node.map(String::from);
        i.spec.template.resources = Resources {
            cpu_millicores: 200,
            memory_mib: 100,
            ..Default::default()
        };
        i.status = Some(InstanceStatus {
            phase,
            ..Default::default()
        });
        Arc::new(i)
    }

    /// A Ready node whose data plane is `network_ready`, announcing its overlay end
    /// when `announced`.
    fn gateway_candidate(
        name: &str,
        ready: bool,
        network_ready: bool,
        announced: bool,
    ) -> Arc<Node> {
        let mut n = (*node(name, ready, false, &[])).clone();
        let status = n.status.as_mut().unwrap();
        let ok = if network_ready {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        set_condition(
            &mut status.conditions,
            NETWORK_READY,
            ok,
            "",
            "",
            Utc::now(),
        );
        if announced {
            status.network = Some(crds::NodeNetwork {
                backend: "vxlan".into(),
                public_address: Some(format!("192.168.0.{}", name.len())),
                public_port: Some(50103),
                vtep_mac: Some("aa:00:00:00:00:01".into()),
                public_key: None,
            });
        }
        Arc::new(n)
    }

    #[test]
    fn the_gateway_is_the_first_node_that_can_carry_traffic() {
        let cases = [
            (vec![], None),
            (
                vec![
                    gateway_candidate("b", true, true, true),
                    gateway_candidate("a", true, true, true),
                ],
                Some("a"),
            ),
            (
                vec![
                    gateway_candidate("a", false, true, true),
                    gateway_candidate("b", true, false, true),
                    gateway_candidate("c", true, true, false),
                    gateway_candidate("d", true, true, true),
                ],
                Some("d"),
            ),
        ];
        // WireGuard: a node behind NAT (no public address) is no gateway, one that can
        // be dialled is, with its key.
        let wireguard = |name: &str, address: Option<&str>| {
            let mut n = (*gateway_candidate(name, true, true, false)).clone();
            n.status.as_mut().unwrap().network = Some(crds::NodeNetwork {
                backend: "wireguard".into(),
                public_address: address.map(String::from),
                public_port: Some(50103),
                vtep_mac: None,
                public_key: Some(format!("key-of-{name}")),
            });
            Arc::new(n)
        };
        let got = gateways(&[wireguard("a", None), wireguard("b", Some("192.168.0.2"))]);
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].node.as_str(), got[0].public_key.as_deref()),
            ("b", Some("key-of-b"))
        );
        for (nodes, want) in cases {
            let got = gateways(&nodes);
            assert_eq!(got.first().map(|g| g.node.as_str()), want);
            assert!(got.len() <= 1);
        }
    }

    #[test]
    fn remotes_are_the_other_clusters_with_a_subnet() {
        let cluster = |name: &str, subnet: Option<&str>| {
            let mut c = Cluster::new(name, ClusterSpec::default());
            c.status = Some(ClusterStatus {
                subnet: subnet.map(String::from),
                ..Default::default()
            });
            Arc::new(c)
        };
        let all = [
            cluster("c", Some("10.130.0.0/16")),
            cluster("a", Some("10.128.0.0/16")),
            cluster("new", None),
            cluster("b", Some("10.129.0.0/16")),
        ];
        let got: Vec<_> = remotes("a", &all)
            .into_iter()
            .map(|r| (r.name, r.subnet))
            .collect();
        assert_eq!(
            got,
            [
                ("b".to_string(), "10.129.0.0/16".to_string()),
                ("c".to_string(), "10.130.0.0/16".to_string())
            ]
        );
    }

    #[test]
    fn summaries() {
        use RuntimeKind::*;
        let cases = [
            ("no nodes", vec![], vec![], Summary::default()),
            (
                "only Ready schedulable nodes add allocatable and runtimes",
                vec![
                    node("n1", true, false, &[Process, Container]),
                    node("n2", true, true, &[Unikernel]),
                    node("n3", false, false, &[Unikernel]),
                ],
                vec![],
                Summary {
                    capacity: capacity(6000, 6144, 3),
                    allocatable: capacity(1000, 1024, 1),
                    runtimes: vec![Container, Process],
                    ready_nodes: 1,
                },
            ),
            (
                "the runtimes once each, in declaration order",
                vec![
                    node("n1", true, false, &[Unikernel, Container]),
                    node("n2", true, false, &[Container, Process]),
                ],
                vec![],
                Summary {
                    capacity: capacity(4000, 4096, 2),
                    allocatable: capacity(2000, 2048, 2),
                    runtimes: vec![Container, Process, Unikernel],
                    ready_nodes: 2,
                },
            ),
            (
                "bound Instances use allocatable until they end",
                vec![node("n1", true, false, &[Container])],
                vec![
                    on(Some("n1"), Phase::Running),
                    on(Some("n1"), Phase::Scheduled),
                    on(Some("n1"), Phase::Succeeded),
                    on(Some("n1"), Phase::Failed),
                    on(None, Phase::Pending),
                    on(Some("elsewhere"), Phase::Running),
                ],
                Summary {
                    capacity: capacity(2000, 2048, 1),
                    allocatable: capacity(600, 824, 1),
                    runtimes: vec![Container],
                    ready_nodes: 1,
                },
            ),
        ];
        for (name, nodes, instances, expected) in cases {
            assert_eq!(summarize(&nodes, &instances), expected, "{name}");
        }
    }

    #[test]
    fn a_cluster_is_ready_while_one_node_is() {
        let summary = |ready_nodes, nodes| Summary {
            capacity: capacity(0, 0, nodes),
            ready_nodes,
            ..Default::default()
        };
        let cases = [
            (
                summary(0, 0),
                ConditionStatus::False,
                "NoReadyNodes",
                "0 of 0 nodes ready",
            ),
            (
                summary(0, 3),
                ConditionStatus::False,
                "NoReadyNodes",
                "0 of 3 nodes ready",
            ),
            (
                summary(1, 3),
                ConditionStatus::True,
                "NodesReady",
                "1 of 3 nodes ready",
            ),
        ];
        for (s, status, reason, message) in cases {
            assert_eq!(
                s.readiness(),
                (status, reason, message.to_string()),
                "{s:?}"
            );
        }
    }
}
