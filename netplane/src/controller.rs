//! The node's network controller: follows the cluster's `Endpoints`, `Node`s and its
//! `Cluster` and keeps the node's nftables table and overlay in line with them.
//!
//! Level-triggered: each pass computes the whole desired state ([`ruleset`], the
//! overlay's [`overlay::plan`]), applies what differs from the last pass (the table in
//! one transaction, the overlay's peers by diff against the kernel) and, every
//! [`Config::resync`], applies everything again whatever it believes, so a table someone
//! flushed comes back. A table or overlay that cannot be applied leaves the last good
//! one in place and says why in the Node's `NetworkReady` condition (`RulesFailed`,
//! `OverlayFailed`), which the cluster scheduler reads.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use client::runtime::{informer, Store};
use client::{Client, ListParams};
use crds::{Cluster, ClusterNetwork, Endpoints, Gateway, Node, NodeNetwork};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::closest::{closest, Candidate, Locality};
use crate::dns;
use crate::exec::Host;
use crate::overlay::{self, NodeNet, Subnet, Vxlan};
use crate::rules::{self, Frontend, Proto, Ruleset, ServiceRules};
use crate::wireguard::{self, Tunnel, WgNode, WgPeer, WgPlan, WireGuard};

pub use crds::conditions::NETWORK_READY;
/// The field manager of its status writes.
pub const FIELD_MANAGER: &str = "oakestra-netplane";

/// Settings of a node's network controller.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Node this agent runs.
    pub node: String,
    /// The node's underlay address (its `spec.address`), announced to its peers.
    pub address: Ipv4Addr,
    /// The nftables table it owns.
    pub table: String,
    /// All instance addresses of every cluster: traffic leaving it is masqueraded.
    pub instance_range: (Ipv4Addr, u8),
    /// The overlay to the cluster's other nodes (`None`: only the node's own subnet).
    pub overlay: Option<Overlay>,
    /// How often everything is applied again regardless.
    pub resync: Duration,
    /// Where the commands run (the agent's own namespace).
    pub host: Host,
    /// The DNS responder on the bridge gateway (`None`: none).
    pub dns: Option<DnsSettings>,
}

/// What the node's DNS responder serves.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// The zone's domain: names are `<service>.<namespace>.svc.<domain>`.
    pub domain: String,
    /// Where other names are forwarded (the host's resolvers).
    pub upstreams: Vec<std::net::SocketAddr>,
}

/// The overlay backend of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    /// Encrypted, through NAT: userspace WireGuard ([`wireguard`]).
    WireGuard(WireGuard),
    /// For trusted networks: the kernel's vxlan ([`overlay`]).
    Vxlan(Vxlan),
}

impl Overlay {
    /// The MTU Instances get so that their packets fit the overlay.
    pub fn instance_mtu(&self) -> u32 {
        match self {
            Overlay::WireGuard(wg) => wg.mtu,
            Overlay::Vxlan(vx) => vx.instance_mtu(),
        }
    }

    /// The backend's name, as the Node's `status.network.backend` says it.
    pub fn backend(&self) -> &'static str {
        match self {
            Overlay::WireGuard(_) => "wireguard",
            Overlay::Vxlan(_) => "vxlan",
        }
    }
}

impl Config {
    /// The table name for node `node`: one table per node, so that several agents in
    /// one network namespace (tests, simulations) keep out of each other's way.
    pub fn table_for(node: &str) -> String {
        format!("oakestra-{node}")
    }
}

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The kernel refused the bridge's netfilter setting.
    #[error("preparing the node's network: {0}")]
    Prepare(String),
}

/// The service rules node `me` wants for the cluster's `endpoints`: each Service's
/// round-robin IP balances over all its ready endpoints; its closest IP over the ready
/// endpoints [`closest`] to the node. Pure.
pub fn ruleset(
    table: &str,
    instance_range: (Ipv4Addr, u8),
    me: &Locality,
    endpoints: &[Arc<Endpoints>],
) -> Ruleset {
    let mut services: Vec<ServiceRules> = endpoints
        .iter()
        .map(|e| {
            let ready: Vec<Candidate> = e
                .ready()
                .map(|ep| Candidate {
                    addr: SocketAddrV4::new(ep.ip, 0),
                    node: ep.node.clone().unwrap_or_default(),
                    cluster: ep.cluster.clone(),
                    location: ep.location.as_ref().map(|l| (l.latitude, l.longitude)),
                })
                .collect();
            let near: Vec<Ipv4Addr> = closest(me, &ready).iter().map(|c| *c.addr.ip()).collect();
            let all: Vec<Ipv4Addr> = ready.iter().map(|c| *c.addr.ip()).collect();
            let mut frontends = Vec::new();
            for (ip, backends) in [(e.spec.round_robin_ip, &all), (e.spec.closest_ip, &near)] {
                let Some(ip) = ip else { continue };
                for port in &e.spec.ports {
                    frontends.push(Frontend {
                        ip,
                        port: port.port,
                        proto: match port.protocol {
                            crds::Protocol::Tcp => Proto::Tcp,
                            crds::Protocol::Udp => Proto::Udp,
                        },
                        backends: backends
                            .iter()
                            .map(|b| SocketAddrV4::new(*b, port.port))
                            .collect(),
                    });
                }
            }
            ServiceRules {
                namespace: e.metadata.namespace.clone().unwrap_or_default(),
                name: e.metadata.name.clone(),
                frontends,
            }
        })
        .filter(|s| !s.frontends.is_empty())
        .collect();
    services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ruleset {
        table: table.to_string(),
        instance_range,
        services,
    }
}

/// The overlay entries to the other clusters' subnets: on a gateway of this cluster,
/// straight to each remote cluster's gateway; on any other node, through this
/// cluster's gateway (which forwards them). Pure.
pub fn remote_peers(me: &str, network: &ClusterNetwork) -> Vec<overlay::Peer> {
    let own_gateway = network.gateways.first();
    let i_am_gateway = own_gateway.is_some_and(|g| g.node == me);
    let peer = |node: String, subnet: Subnet, gw: &Gateway| {
        Some(overlay::Peer {
            node,
            subnet,
            underlay: gw.public_address.parse().ok()?,
            mac: gw.vtep_mac.as_ref()?.to_ascii_lowercase(),
        })
    };
    network
        .remotes
        .iter()
        .filter_map(|remote| {
            let subnet: Subnet = remote.subnet.parse().ok()?;
            if i_am_gateway {
                let gw = remote.gateways.first()?;
                peer(format!("{}/{}", remote.name, gw.node), subnet, gw)
            } else {
                let gw = own_gateway?;
                peer(format!("{} via {}", remote.name, gw.node), subnet, gw)
            }
        })
        .collect()
}

/// Adds the other clusters' subnets to a WireGuard plan (pure): on a gateway of this
/// cluster, one peer per remote cluster's gateway, allowed that cluster's subnet; on any
/// other node, each remote subnet goes to this cluster's gateway, which forwards it.
/// Returns what could not be added, with why.
pub fn add_remote_wireguard(
    me: &str,
    network: &ClusterNetwork,
    port: u16,
    plan: &mut WgPlan,
) -> Vec<(String, String)> {
    let own_gateway = network.gateways.first();
    let i_am_gateway = own_gateway.is_some_and(|g| g.node == me);
    let mut skipped = Vec::new();
    for remote in &network.remotes {
        let Ok(subnet) = remote.subnet.parse::<Subnet>() else {
            skipped.push((remote.name.clone(), format!("subnet {:?}", remote.subnet)));
            continue;
        };
        if !i_am_gateway {
            let Some(gw) = own_gateway else { continue };
            if !plan.route_through(&gw.node, subnet) {
                skipped.push((
                    remote.name.clone(),
                    format!("gateway {} is no peer", gw.node),
                ));
            }
            continue;
        }
        let Some(gw) = remote.gateways.first() else {
            continue;
        };
        let peer = (|| {
            let address: Ipv4Addr = gw.public_address.parse().ok()?;
            Some(WgPeer {
                node: format!("{}/{}", remote.name, gw.node),
                public_key: gw.public_key.as_deref()?.parse().ok()?,
                endpoint: Some(SocketAddrV4::new(address, gw.public_port.unwrap_or(port))),
                allowed: vec![subnet],
                keepalive: None,
            })
        })();
        let result = match peer {
            Some(peer) => plan.add_remote(peer),
            None => Err(format!(
                "gateway {} announces no WireGuard key and address",
                gw.node
            )),
        };
        if let Err(why) = result {
            skipped.push((remote.name.clone(), why));
        }
    }
    skipped
}

/// The DNS zone of the cluster's `endpoints`: each Service's round-robin and closest
/// IPs under `domain`. Pure.
pub fn zone(domain: &str, endpoints: &[Arc<Endpoints>]) -> Result<dns::Zone, dns::DnsError> {
    dns::Zone::new(
        domain,
        endpoints.iter().map(|e| {
            (
                e.metadata.namespace.clone().unwrap_or_default(),
                e.metadata.name.clone(),
                e.spec.round_robin_ip,
                e.spec.closest_ip,
            )
        }),
    )
}

/// What the overlay needs to know of each Node.
fn node_net(node: &Node) -> NodeNet {
    let status = node.status.as_ref();
    let network = status.and_then(|s| s.network.as_ref());
    NodeNet {
        name: node.metadata.name.clone(),
        subnet: status
            .and_then(|s| s.subnet.as_deref())
            .and_then(|s| s.parse().ok()),
        underlay: network
            .and_then(|n| n.public_address.as_deref())
            .and_then(|a| a.parse().ok()),
        mac: network.and_then(|n| n.vtep_mac.clone()),
    }
}

/// What the WireGuard backend knows of a node.
fn wg_node(node: &Node) -> WgNode {
    let status = node.status.as_ref();
    let network = status.and_then(|s| s.network.as_ref());
    let address = network
        .and_then(|n| n.public_address.as_deref())
        .and_then(|a| a.parse().ok());
    WgNode {
        name: node.metadata.name.clone(),
        subnet: status
            .and_then(|s| s.subnet.as_deref())
            .and_then(|s| s.parse().ok()),
        public_key: network.and_then(|n| n.public_key.clone()),
        ready: status.is_some_and(|s| crds::is_true(&s.conditions, "Ready")),
        endpoint: address
            .zip(network.and_then(|n| n.public_port))
            .map(|(a, p)| SocketAddrV4::new(a, p)),
    }
}

/// The state of the last pass, and what the Node's status says.
#[derive(Default)]
struct Applied {
    /// The service rules the kernel holds.
    ruleset: Option<Ruleset>,
    /// The vxlan peers the kernel holds.
    vxlan: Option<Vec<overlay::Peer>>,
    /// The WireGuard device, its public key and the plan its peers and routes follow.
    wireguard: Option<(Tunnel, wireguard::PublicKey, Option<WgPlan>)>,
    /// The condition last written: (status, reason, message).
    condition: Option<(bool, String, String)>,
    /// When the condition's status last changed (its `lastTransitionTime`).
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// The overlay end last published.
    published: Option<NodeNetwork>,
    /// The DNS responder's zone, once it serves.
    dns: Option<dns::ZoneHandle>,
}

impl Applied {
    /// How many peers the overlay has (either backend), once it was synced.
    fn peer_count(&self) -> Option<usize> {
        let wireguard = self
            .wireguard
            .as_ref()
            .and_then(|(_, _, plan)| plan.as_ref());
        self.vxlan
            .as_ref()
            .map(Vec::len)
            .or(wireguard.map(|p| p.peers.len()))
    }
}

/// The caches a pass reads.
struct Caches {
    endpoints: Store<Endpoints>,
    nodes: Store<Node>,
    clusters: Store<Cluster>,
}

/// Run the controller until `shutdown`.
pub async fn run(
    client: Client,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), ControllerError> {
    crate::nft::ensure_bridge_netfilter(&config.host)
        .await
        .map_err(|e| ControllerError::Prepare(e.to_string()))?;
    // The node routes between its bridge, the overlay and (a gateway) other clusters.
    config
        .host
        .run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])
        .await
        .map_err(|e| ControllerError::Prepare(e.to_string()))?;
    let changed = Arc::new(Notify::new());
    let endpoints = follow::<Endpoints>(&client, &changed);
    let nodes = follow::<Node>(&client, &changed);
    let clusters = follow::<Cluster>(&client, &changed);
    endpoints.1.wait_ready().await;
    nodes.1.wait_ready().await;
    clusters.1.wait_ready().await;
    let caches = Caches {
        endpoints: endpoints.1.clone(),
        nodes: nodes.1.clone(),
        clusters: clusters.1.clone(),
    };
    let mut applied = Applied::default();
    let mut resync = tokio::time::interval(config.resync);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(node = %config.node, table = %config.table, overlay = config.overlay.is_some(), "network controller started");
    loop {
        let force = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = resync.tick() => true,
            _ = changed.notified() => {
                // Let a burst of changes settle into one pass.
                tokio::time::sleep(Duration::from_millis(50)).await;
                false
            }
        };
        pass(&client, &config, &caches, &mut applied, force, &shutdown).await;
    }
    drop((endpoints, nodes, clusters));
    Ok(())
}

/// Remove what the controller keeps on the node: its table and its overlay device (for
/// `oakestra down`; a stopped agent leaves them, so that service IPs keep working while
/// it restarts).
pub async fn teardown(config: &Config) -> Result<(), String> {
    crate::nft::apply(&config.host, &rules::delete_script(&config.table))
        .await
        .map_err(|e| e.to_string())?;
    // A WireGuard device goes with the process that holds it.
    if let Some(Overlay::Vxlan(vx)) = &config.overlay {
        overlay::remove(&config.host, vx)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The shared informer of `K` (all namespaces), waking `changed` at every event.
fn follow<K: crds::Resource>(
    client: &Client,
    changed: &Arc<Notify>,
) -> (Arc<client::runtime::Informer<K>>, Store<K>) {
    let informer = informer(client.api::<K>(None), ListParams::default());
    let wake = changed.clone();
    informer.subscribe(move |_| {
        wake.notify_one();
        true
    });
    let store = informer.store();
    (informer, store)
}

async fn pass(
    client: &Client,
    config: &Config,
    caches: &Caches,
    applied: &mut Applied,
    force: bool,
    shutdown: &CancellationToken,
) {
    let Caches {
        endpoints,
        nodes,
        clusters,
    } = caches;
    let me = nodes.get(&client::runtime::ObjectRef::new(None, &config.node));
    let cluster = clusters.state().into_iter().next();
    let locality = Locality {
        node: config.node.clone(),
        cluster: cluster
            .as_ref()
            .map(|c| c.metadata.name.clone())
            .unwrap_or_default(),
        location: cluster
            .as_ref()
            .and_then(|c| c.spec.location.as_ref())
            .map(|l| (l.latitude, l.longitude)),
    };
    let mut problems = Vec::new();

    // The overlay: this node's end first (it needs the subnet), then its peers.
    let own_subnet: Option<Subnet> = me
        .as_ref()
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.subnet.as_deref())
        .and_then(|s| s.parse().ok());
    let network = cluster
        .as_ref()
        .and_then(|c| c.status.as_ref())
        .and_then(|s| s.network.clone())
        .unwrap_or_default();
    let end = match (&config.overlay, own_subnet) {
        (Some(Overlay::Vxlan(vx)), Some(subnet)) => {
            vxlan_pass(config, vx, subnet, &nodes.state(), &network, applied, force).await
        }
        (Some(Overlay::WireGuard(wg)), Some(subnet)) => {
            wireguard_pass(config, wg, subnet, &nodes.state(), &network, applied, force).await
        }
        _ => Ok(None),
    };
    let end = match end {
        Ok(end) => end,
        Err(message) => {
            problems.push(("OverlayFailed", message));
            None
        }
    };

    let services = endpoints.state();

    // Names: the responder starts on the bridge gateway once the node has its subnet.
    if let (Some(settings), Some(subnet)) = (&config.dns, own_subnet) {
        if let Err(e) = serve_names(settings, subnet, &services, applied, shutdown) {
            problems.push(("DnsFailed", e.to_string()));
        }
    }

    // The service rules.
    let wanted = ruleset(&config.table, config.instance_range, &locality, &services);
    if force || applied.ruleset.as_ref() != Some(&wanted) {
        let started = std::time::Instant::now();
        // Between resyncs, rewrite only what changed (the whole table costs seconds of
        // kernel time at thousands of services); replace it all when that is refused.
        let update = match &applied.ruleset {
            Some(old) if !force => rules::render_update(old, &wanted),
            _ => None,
        };
        let partial = match update {
            // The same table after all (the inputs came in another order).
            Some(update) if update.is_empty() => true,
            Some(update) => match crate::nft::apply(&config.host, &update).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(node = %config.node, error = %e, "the partial update of the service rules was refused; replacing the table");
                    false
                }
            },
            None => false,
        };
        let result = if partial {
            Ok(())
        } else {
            crate::nft::apply(&config.host, &rules::render(&wanted)).await
        };
        match result {
            Ok(()) => {
                tracing::debug!(node = %config.node, services = wanted.services.len(), partial, took = ?started.elapsed(), "service rules applied");
                if let Some(old) = &applied.ruleset {
                    for flow in rules::udp_removed(old, &wanted) {
                        if let Err(e) = crate::nft::forget_udp_flows(
                            &config.host,
                            *flow.frontend.ip(),
                            flow.frontend.port(),
                            flow.backend,
                        )
                        .await
                        {
                            tracing::warn!(error = %e, "deleting the UDP flows of a removed endpoint failed");
                        }
                    }
                }
                applied.ruleset = Some(wanted);
            }
            Err(e) => problems.push(("RulesFailed", e.to_string())),
        }
    }

    let condition = match problems.first() {
        None => (
            true,
            "RulesApplied".to_string(),
            format!(
                "{} services in table {}{}",
                applied.ruleset.as_ref().map_or(0, |r| r.services.len()),
                config.table,
                match (&config.overlay, applied.peer_count()) {
                    (Some(o), Some(p)) => format!(", {p} {} peers", o.backend()),
                    (Some(_), None) => ", overlay waiting for the node's subnet".to_string(),
                    (None, _) => String::new(),
                }
            ),
        ),
        Some((reason, message)) => {
            tracing::warn!(node = %config.node, reason, message, "the node's network is not in shape");
            (false, reason.to_string(), message.clone())
        }
    };
    // Rewrite only when it changes (a count in the message changes with every Service).
    let same = applied
        .condition
        .as_ref()
        .is_some_and(|(s, r, _)| *s == condition.0 && *r == condition.1);
    let end = end.or_else(|| applied.published.clone());
    if !same || end != applied.published {
        // The transition time moves only when the status does.
        let flipped = applied.condition.as_ref().map(|(s, _, _)| *s) != Some(condition.0);
        let since = match applied.since {
            Some(at) if !flipped => at,
            _ => chrono::Utc::now(),
        };
        match report(client, &config.node, end.as_ref(), &condition, since).await {
            Ok(()) => {
                applied.condition = Some(condition);
                applied.since = Some(since);
                applied.published = end;
            }
            Err(e) => tracing::warn!(error = %e, "writing the node's network status failed"),
        }
    }
}

/// The vxlan overlay's part of a pass: the device, then the peers (this cluster's other
/// nodes, then the other clusters through the gateways). Returns the node's end.
async fn vxlan_pass(
    config: &Config,
    vx: &Vxlan,
    subnet: Subnet,
    nodes: &[Arc<Node>],
    network: &ClusterNetwork,
    applied: &mut Applied,
    force: bool,
) -> Result<Option<NodeNetwork>, String> {
    let mac = overlay::ensure(&config.host, vx, subnet)
        .await
        .map_err(|e| e.to_string())?;
    let end = NodeNetwork {
        backend: "vxlan".into(),
        public_address: Some(config.address.to_string()),
        public_port: Some(vx.port),
        vtep_mac: Some(mac),
        public_key: None,
    };
    // A node on this very address is on this machine (tests, simulations): its subnet
    // is on a bridge here already, so it is no peer.
    let all: Vec<NodeNet> = nodes
        .iter()
        .map(|n| node_net(n))
        .filter(|n| n.name == config.node || n.underlay != Some(config.address))
        .collect();
    let plan = overlay::plan(&config.node, &all);
    for (node, why) in &plan.skipped {
        tracing::debug!(node = %config.node, peer = %node, reason = %why, "not an overlay peer (yet)");
    }
    let mut peers = plan.peers;
    peers.extend(remote_peers(&config.node, network));
    if force || applied.vxlan.as_ref() != Some(&peers) {
        let report = overlay::sync(&config.host, vx, &peers)
            .await
            .map_err(|e| e.to_string())?;
        tracing::debug!(node = %config.node, ?report, peers = peers.len(), "overlay synced");
        applied.vxlan = Some(peers);
    }
    Ok(Some(end))
}

/// The WireGuard overlay's part of a pass: the device (opened at the first pass: the
/// one still running from an earlier agent, else a new device process), its address,
/// then its peers and routes. Returns the node's end.
async fn wireguard_pass(
    config: &Config,
    wg: &WireGuard,
    subnet: Subnet,
    nodes: &[Arc<Node>],
    network: &ClusterNetwork,
    applied: &mut Applied,
    force: bool,
) -> Result<Option<NodeNetwork>, String> {
    if config.host.netns.is_some() {
        return Err("the WireGuard device is made in the agent's own network namespace: run the agent there".into());
    }
    if applied.wireguard.is_none() {
        let key = wireguard::load_or_create_key(&wg.key_file).map_err(|e| e.to_string())?;
        // It may wait for a device process to start: off the async threads.
        let (settings, private) = (wg.clone(), key.clone());
        let tunnel = tokio::task::spawn_blocking(move || Tunnel::open(&settings, &private))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        applied.wireguard = Some((tunnel, key.public(), None));
    }
    let Some((tunnel, public_key, last)) = applied.wireguard.as_mut() else {
        unreachable!("made above");
    };
    wireguard::tune(&config.host, wg, subnet)
        .await
        .map_err(|e| e.to_string())?;
    let end = NodeNetwork {
        backend: "wireguard".into(),
        public_address: wg.endpoint.map(|e| e.ip().to_string()),
        public_port: Some(wg.endpoint.map_or(wg.port, |e| e.port())),
        vtep_mac: None,
        public_key: Some(public_key.to_string()),
    };
    // A node announcing this node's own endpoint is on this machine (tests,
    // simulations): its subnet is on a bridge here already, so it is no peer.
    let all: Vec<WgNode> = nodes
        .iter()
        .map(|n| wg_node(n))
        .filter(|n| {
            n.name == config.node
                || wg.endpoint.is_none()
                || n.endpoint.map(|e| *e.ip()) != wg.endpoint.map(|e| *e.ip())
        })
        .collect();
    let mut plan = wireguard::plan(&config.node, wg.endpoint.is_none(), &all, wg.keepalive);
    let remote_skips = add_remote_wireguard(&config.node, network, wg.port, &mut plan);
    for (node, why) in plan.skipped.iter().chain(&remote_skips) {
        tracing::debug!(node = %config.node, peer = %node, reason = %why, "not a WireGuard peer (yet)");
    }
    if force || last.as_ref() != Some(&plan) {
        tunnel
            .set_peers(&plan.peers)
            .await
            .map_err(|e| e.to_string())?;
        let report = wireguard::sync_routes(&config.host, wg, &plan)
            .await
            .map_err(|e| e.to_string())?;
        let called = wireguard::call_peers(&plan);
        tracing::debug!(node = %config.node, ?report, peers = plan.peers.len(), called, "WireGuard peers and routes synced");
        *last = Some(plan);
    }
    Ok(Some(end))
}

/// Give the DNS responder the zone of `endpoints`, starting it on the gateway of
/// `subnet` (its first address) the first time.
fn serve_names(
    settings: &DnsSettings,
    subnet: Subnet,
    endpoints: &[Arc<Endpoints>],
    applied: &mut Applied,
    shutdown: &CancellationToken,
) -> Result<(), dns::DnsError> {
    let zone = zone(&settings.domain, endpoints)?;
    if let Some(handle) = &applied.dns {
        handle.replace(zone);
        return Ok(());
    }
    let gateway = Ipv4Addr::from(u32::from(subnet.base()) + 1);
    let listen = SocketAddrV4::new(gateway, dns::DNS_PORT);
    let sockets = dns::bind(listen)?;
    let handle = dns::ZoneHandle::new(zone);
    let (zone, upstreams) = (handle.clone(), settings.upstreams.clone());
    let stop = shutdown.clone().cancelled_owned();
    tokio::spawn(async move {
        if let Err(e) = dns::serve_on(sockets, zone, upstreams, stop).await {
            tracing::error!(error = %e, "the DNS responder stopped");
        }
    });
    tracing::info!(%listen, domain = %settings.domain, "DNS responder serving");
    applied.dns = Some(handle);
    Ok(())
}

/// Server-side apply of the node's overlay end and its `NetworkReady` condition into
/// its status, as one manager: conditions merge by type, so the agent's `Ready` stays
/// the agent's; both fields go in every apply, since one left out would be removed.
async fn report(
    client: &Client,
    node: &str,
    network: Option<&NodeNetwork>,
    (ok, reason, message): &(bool, String, String),
    since: chrono::DateTime<chrono::Utc>,
) -> Result<(), client::ClientError> {
    let condition: BTreeMap<&str, serde_json::Value> = [
        ("type", json!(NETWORK_READY)),
        ("status", json!(if *ok { "True" } else { "False" })),
        ("reason", json!(reason)),
        ("message", json!(message)),
        ("lastTransitionTime", json!(since)),
    ]
    .into();
    let mut status = json!({"conditions": [condition]});
    if let Some(network) = network {
        status["network"] = json!(network);
    }
    let body = json!({
        "apiVersion": crds::API_VERSION, "kind": "Node", "metadata": {"name": node},
        "status": status,
    });
    client
        .api::<Node>(None)
        .dynamic()
        .apply_status(node, &body, FIELD_MANAGER, true)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::{Endpoint, EndpointPort, EndpointsSpec, Location, Protocol};

    fn at(lat: f64, lon: f64) -> Option<Location> {
        Some(Location {
            latitude: lat,
            longitude: lon,
            place: None,
        })
    }

    fn entry(ip: &str, node: &str, cluster: &str, ready: bool) -> Endpoint {
        Endpoint {
            instance: format!("web-{node}"),
            ip: ip.parse().unwrap(),
            cluster: cluster.into(),
            node: Some(node.into()),
            ready,
            location: if cluster == "munich" {
                at(48.1, 11.6)
            } else {
                at(52.5, 13.4)
            },
        }
    }

    #[test]
    fn other_clusters_are_reached_through_the_gateways() {
        let gw = |node: &str, ip: &str, mac: &str| Gateway {
            node: node.into(),
            public_address: ip.into(),
            public_port: Some(50103),
            vtep_mac: Some(mac.into()),
            public_key: None,
        };
        let network = ClusterNetwork {
            gateways: vec![gw("a1", "192.168.1.1", "AA:00:00:00:00:01")],
            remotes: vec![
                crds::RemoteCluster {
                    name: "b".into(),
                    subnet: "10.129.0.0/16".into(),
                    gateways: vec![gw("b1", "192.168.2.1", "aa:00:00:00:00:02")],
                },
                // No gateway yet: nothing to route through.
                crds::RemoteCluster {
                    name: "c".into(),
                    subnet: "10.130.0.0/16".into(),
                    gateways: vec![],
                },
            ],
        };
        let show = |peers: Vec<overlay::Peer>| -> Vec<String> {
            peers
                .iter()
                .map(|p| format!("{} {} {} {}", p.node, p.subnet, p.underlay, p.mac))
                .collect()
        };
        // The gateway goes to the remote gateway.
        assert_eq!(
            show(remote_peers("a1", &network)),
            ["b/b1 10.129.0.0/16 192.168.2.1 aa:00:00:00:00:02"]
        );
        // Any other node sends both remote subnets to its own gateway.
        assert_eq!(
            show(remote_peers("a2", &network)),
            [
                "b via a1 10.129.0.0/16 192.168.1.1 aa:00:00:00:00:01",
                "c via a1 10.130.0.0/16 192.168.1.1 aa:00:00:00:00:01"
            ]
        );
        // No gateway in this cluster: no route out.
        let alone = ClusterNetwork {
            gateways: vec![],
            ..network
        };
        assert!(remote_peers("a2", &alone).is_empty());
    }

    #[test]
    fn each_service_ip_and_port_is_a_frontend_over_the_ready_endpoints() {
        let mut web = Endpoints::new(
            "web",
            EndpointsSpec {
                round_robin_ip: Some("10.30.0.5".parse().unwrap()),
                closest_ip: Some("10.30.1.5".parse().unwrap()),
                ports: vec![
                    EndpointPort {
                        port: 80,
                        protocol: Protocol::Tcp,
                    },
                    EndpointPort {
                        port: 53,
                        protocol: Protocol::Udp,
                    },
                ],
                endpoints: vec![
                    entry("10.128.0.2", "m1", "munich", true),
                    entry("10.128.0.66", "m2", "munich", true),
                    entry("10.129.0.2", "b1", "berlin", true),
                    entry("10.129.0.3", "b2", "berlin", false),
                ],
            },
        );
        web.metadata.namespace = Some("shop".into());
        // A Service without an IP yet has no rules.
        let pending = Endpoints::new("pending", EndpointsSpec::default());
        let me = Locality {
            node: "m2".into(),
            cluster: "munich".into(),
            location: Some((48.1, 11.6)),
        };
        let rules = ruleset(
            "t",
            ("10.128.0.0".parse().unwrap(), 9),
            &me,
            &[Arc::new(web), Arc::new(pending)],
        );
        assert_eq!(rules.services.len(), 1);
        let got: Vec<(String, Vec<String>)> = rules.services[0]
            .frontends
            .iter()
            .map(|f| {
                (
                    format!("{}:{}/{}", f.ip, f.port, f.proto),
                    f.backends.iter().map(|b| b.to_string()).collect(),
                )
            })
            .collect();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            got,
            vec![
                (
                    "10.30.0.5:80/tcp".to_string(),
                    s(&["10.128.0.2:80", "10.128.0.66:80", "10.129.0.2:80"])
                ),
                (
                    "10.30.0.5:53/udp".to_string(),
                    s(&["10.128.0.2:53", "10.128.0.66:53", "10.129.0.2:53"])
                ),
                // The closest IP: the endpoint on this very node.
                ("10.30.1.5:80/tcp".to_string(), s(&["10.128.0.66:80"])),
                ("10.30.1.5:53/udp".to_string(), s(&["10.128.0.66:53"])),
            ]
        );
    }
}
