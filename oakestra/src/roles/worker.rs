//! `oakestra worker`: the agent of one node. Joins its cluster with a token (once),
//! registers the Node there and runs the Instances bound to it, with the runtime its
//! flags choose (assembled by `agent::runtime::build`). Its endpoint (logs, metrics)
//! serves TLS and answers its cluster only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use agent::network::NetworkMode;
use agent::runtime::{RuntimeChoice, RuntimeSettings};
use agent::AgentConfig;
use anyhow::Context as _;
use clap::Args;
use crds::Location;
use tokio_util::sync::CancellationToken;

use crate::roles::{parse_location, Running};

/// The flags of `oakestra worker`.
#[derive(Args)]
pub struct WorkerArgs {
    /// URL of the cluster API, e.g. `https://10.0.0.2:10100`; several servers of it
    /// separated by commas (requests move to the next when one cannot be reached).
    #[arg(long)]
    cluster: String,
    /// The cluster's join token for nodes (`K10…`, from the cluster's `join-token` file
    /// or `oakestra token create`); needed the first time only.
    #[arg(long, env = "OAKESTRA_TOKEN")]
    token: Option<String>,
    #[command(flatten)]
    worker: WorkerFlags,
}

/// Which runtime a worker runs its Instances with.
#[derive(Args, Clone)]
pub struct RuntimeFlags {
    /// `containerd` runs containers, `process` native executables; `auto` picks
    /// containerd when its socket is there.
    #[arg(long, value_enum, default_value_t = RuntimeChoice::Auto)]
    runtime: RuntimeChoice,
    /// containerd's gRPC socket.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    containerd_socket: PathBuf,
    /// Registries (`host[:port]`) to pull from over plain HTTP; loopback ones always are.
    #[arg(long, value_delimiter = ',')]
    insecure_registry: Vec<String>,
    /// cgroup file system root, for instance limits.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    cgroup_root: PathBuf,
    /// Container networking: `bridge` gives each container its own namespace and its
    /// instance IP (needs the CNI plugins), `host` shares the node's network.
    #[arg(long, value_enum, default_value_t = NetworkMode::Bridge)]
    network: NetworkMode,
    /// Where the CNI plugins are.
    #[arg(long, default_value = agent::network::DEFAULT_CNI_PATH)]
    cni_path: PathBuf,
    /// Also run `runtime: process` Instances: arbitrary commands, unisolated, as the
    /// agent's user. Off unless asked for (`oakestra up` asks).
    #[arg(long)]
    pub allow_process_runtime: bool,
}

impl RuntimeFlags {
    /// The agent's runtime settings these flags stand for.
    pub fn settings(&self) -> RuntimeSettings {
        RuntimeSettings {
            choice: self.runtime,
            containerd_socket: self.containerd_socket.clone(),
            insecure_registries: self.insecure_registry.clone(),
            cgroup_root: self.cgroup_root.clone(),
            network: self.network,
            cni_path: self.cni_path.clone(),
            allow_process: self.allow_process_runtime,
        }
    }
}

/// Flags of a worker agent (`oakestra up` fills them in for its one worker).
#[derive(Args)]
pub struct WorkerFlags {
    /// Node name (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub runtime: RuntimeFlags,
    /// Address the node is reached at.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: String,
    /// Where instance state and logs are kept.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 2)]
    pub heartbeat_seconds: u64,
    /// Where the node is, as LAT,LON in degrees.
    #[arg(long, value_parser = parse_location)]
    pub location: Option<Location>,
    /// Node labels, KEY=VALUE[,KEY=VALUE…].
    #[arg(long, value_parser = parse_labels, default_value = "")]
    pub labels: BTreeMap<String, String>,
    /// Where the agent serves instance logs (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub net: NetworkFlags,
}

/// The overlay between nodes ( `--overlay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OverlayChoice {
    /// An encrypted WireGuard mesh (userspace, a device process that outlives the agent): other nodes' subnets are
    /// reached through them over UDP, also when they are behind NAT.
    Wireguard,
    /// A vxlan mesh, unencrypted, for trusted networks: other nodes' subnets are
    /// reached through them, over UDP; the kernel keeps it while the agent restarts.
    Vxlan,
    /// No overlay: Instances reach only their own node's subnet (and service IPs whose
    /// endpoints are there).
    None,
}

/// The node's network data plane (service IPs, overlay), as Oakestra's `NetManager`
/// configures it (public address and port).
#[derive(Args, Clone)]
pub struct NetworkFlags {
    /// The overlay to the cluster's other nodes.
    #[arg(long, value_enum, default_value_t = OverlayChoice::Wireguard)]
    pub overlay: OverlayChoice,
    /// Address the other nodes send overlay traffic to (default: `--address`). A
    /// loopback address turns the overlay off.
    #[arg(long)]
    pub public_address: Option<std::net::Ipv4Addr>,
    /// The other nodes cannot reach this one (it is behind NAT): it announces no
    /// address, dials the nodes that have one and keeps those paths open; two nodes
    /// behind NAT talk through a node that has one (`--overlay wireguard` only).
    #[arg(long)]
    pub behind_nat: bool,
    /// UDP port of the overlay (Oakestra's tunnel port); open it between the nodes.
    #[arg(long, default_value_t = 50103)]
    pub public_port: u16,
    /// Every instance address of every cluster (the root's `--cluster-cidr`): traffic
    /// leaving it is masqueraded, traffic inside it keeps the instance's address.
    #[arg(long, default_value = "10.128.0.0/9")]
    pub instance_cidr: crds::ipam::Cidr,
    /// Seconds between full re-applications of the node's service rules and overlay.
    #[arg(long, default_value_t = 300)]
    pub resync_seconds: u64,
    /// The DNS domain of Service names (`<service>.<namespace>.svc.<domain>`), answered
    /// on each node's bridge gateway for its containers.
    #[arg(long, default_value = netplane::dns::DEFAULT_DOMAIN)]
    pub dns_domain: String,
    /// Answer no DNS on the node: containers get the host's `resolv.conf`.
    #[arg(long)]
    pub no_dns: bool,
    /// Seconds the WireGuard device (a process of its own) keeps the tunnels up once
    /// no agent uses it: an agent restarted within them finds it running, and traffic
    /// to the other nodes goes on meanwhile.
    #[arg(long, default_value_t = 60)]
    pub wireguard_linger_seconds: u64,
}

impl NetworkFlags {
    /// The defaults (what `oakestra up` uses).
    pub fn defaults() -> NetworkFlags {
        NetworkFlags {
            overlay: OverlayChoice::Wireguard,
            public_address: None,
            behind_nat: false,
            public_port: 50103,
            instance_cidr: "10.128.0.0/9".parse().expect("valid CIDR"),
            resync_seconds: 300,
            dns_domain: netplane::dns::DEFAULT_DOMAIN.to_string(),
            no_dns: false,
            wireguard_linger_seconds: 60,
        }
    }

    /// The WireGuard device of a node reached at `endpoint` (`None`: behind NAT), its
    /// key and its device's socket in `data_dir`.
    fn wireguard(
        &self,
        endpoint: Option<std::net::SocketAddrV4>,
        data_dir: &std::path::Path,
    ) -> netplane::wireguard::WireGuard {
        netplane::wireguard::WireGuard {
            linger: Duration::from_secs(self.wireguard_linger_seconds),
            ..netplane::wireguard::WireGuard::new(
                self.public_port,
                endpoint,
                data_dir.join("wireguard.key"),
            )
        }
    }

    /// The data plane's settings for node `node` reachable at `address`, keeping its
    /// state (the WireGuard key) in `data_dir`. The overlay needs an IPv4 underlay
    /// address that is not loopback, or `--behind-nat`; without either it is off (and
    /// the log says why).
    pub fn dataplane(
        &self,
        node: &str,
        address: &str,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<netplane::controller::Config> {
        use netplane::controller::Overlay;
        let public = self
            .public_address
            .or_else(|| address.parse().ok())
            .filter(|ip: &std::net::Ipv4Addr| !ip.is_loopback());
        if self.behind_nat && self.overlay != OverlayChoice::Wireguard {
            anyhow::bail!("--behind-nat needs --overlay wireguard: vxlan cannot pass NAT");
        }
        let off = || {
            tracing::info!(node, address, "no overlay: the node's address is not an IPv4 address other nodes can reach (set --public-address, or --behind-nat)");
            None
        };
        let overlay = match (self.overlay, public) {
            (OverlayChoice::None, _) => None,
            (OverlayChoice::Wireguard, _) if self.behind_nat => {
                Some(Overlay::WireGuard(self.wireguard(None, data_dir)))
            }
            (OverlayChoice::Wireguard, Some(ip)) => {
                let endpoint = std::net::SocketAddrV4::new(ip, self.public_port);
                Some(Overlay::WireGuard(self.wireguard(Some(endpoint), data_dir)))
            }
            (OverlayChoice::Vxlan, Some(ip)) => Some(Overlay::Vxlan(netplane::overlay::Vxlan {
                port: self.public_port,
                ..netplane::overlay::Vxlan::new(ip)
            })),
            (_, None) => off(),
        };
        Ok(netplane::controller::Config {
            node: node.to_string(),
            address: public.unwrap_or(std::net::Ipv4Addr::LOCALHOST),
            table: netplane::controller::Config::table_for(node),
            instance_range: (self.instance_cidr.base, self.instance_cidr.prefix),
            overlay,
            resync: Duration::from_secs(self.resync_seconds.max(1)),
            host: netplane::exec::Host::current(),
            dns: (!self.no_dns).then(|| netplane::controller::DnsSettings {
                domain: self.dns_domain.clone(),
                // The host's own resolvers, never a public one of ours.
                upstreams: netplane::dns::upstreams_from_file(std::path::Path::new(
                    "/etc/resolv.conf",
                ))
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "no upstream resolvers: only Service names resolve");
                    Vec::new()
                }),
            }),
        })
    }
}

/// `KEY=VALUE[,KEY=VALUE…]`, as `--labels` takes them.
fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("{p:?}: expected KEY=VALUE"))
        })
        .collect()
}

impl WorkerFlags {
    /// The agent's settings; its data lives in `<data dir>/<node>`, the data dir being
    /// `--data-dir` or `default_dir`.
    pub fn config(&self, default_dir: PathBuf) -> anyhow::Result<AgentConfig> {
        let node = match &self.name {
            Some(n) => n.clone(),
            None => std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_lowercase())
                .unwrap_or_else(|_| "worker".into()),
        };
        crds::validate::name(&node).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
        let data_dir = self.data_dir.clone().unwrap_or(default_dir).join(&node);
        let dataplane = Some(self.net.dataplane(&node, &self.address, &data_dir)?);
        Ok(AgentConfig {
            data_dir,
            node,
            address: self.address.clone(),
            location: self.location.clone(),
            labels: self.labels.clone(),
            heartbeat: Duration::from_secs(self.heartbeat_seconds.max(1)),
            capacity: None,
            listen: self.listen,
            dataplane,
        })
    }
}

/// Run a worker agent until Ctrl-C or SIGTERM (or until it fails).
pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let config = args
        .worker
        .config(PathBuf::from("/var/lib/oakestra/worker"))?;
    let paths = trust::TierPaths::new(&config.data_dir);
    let upstream = trust::join::credentials(
        &paths,
        trust::join::Joining {
            url: &args.cluster,
            token: args.token.as_deref(),
            name: &config.node,
            members: trust::join::Members::Nodes,
            own_ca: None,
        },
    )
    .await
    .with_context(|| format!("joining the cluster at {}", args.cluster))?;
    let (tls, identity) = upstream.tls()?;
    let client = client::Client::with_tls(&args.cluster, tls).context("--cluster")?;
    let (endpoint, serving) = endpoint(&upstream)?;
    println!(
        "oakestra worker {}: cluster at {}",
        config.node,
        client.base()
    );
    let shutdown = CancellationToken::new();
    tokio::spawn(trust::join::keep_renewed(
        paths,
        client.clone(),
        identity,
        Some(serving),
        shutdown.clone(),
    ));
    let task = tokio::spawn(run_worker(
        client,
        config,
        args.worker.runtime.clone(),
        endpoint,
        shutdown.clone(),
    ));
    tokio::select! {
        r = task => r.context("worker task")?,
        _ = crate::roles::stop_signal() => {
            shutdown.cancel();
            Ok(())
        }
    }
}

/// The security of the agent's endpoint: the serving certificate the cluster issued,
/// answering only clients whose certificate the cluster's CA issued to the cluster
/// itself; with the handle that swaps in a renewed serving certificate.
pub fn endpoint(
    upstream: &trust::Upstream,
) -> anyhow::Result<(
    apiserver::auth::Security,
    apiserver::auth::ServingCertificate,
)> {
    let serving = upstream.serving.as_ref().ok_or_else(|| {
        anyhow::anyhow!("the cluster issued no serving certificate for the agent; delete the node's pki/upstream directory and join again")
    })?;
    let authenticator = pki::Authenticator::new(
        vec![pki::Trust {
            ca_pem: upstream.ca_pem.clone(),
            allows: vec![pki::Vouch::Cluster],
        }],
        None,
    )?;
    Ok(trust::authn::security(
        serving,
        authenticator,
        axum::Router::new(),
    )?)
}

/// Start a worker agent in `running`, talking to `cluster`, its endpoint secured by
/// `endpoint`; if it fails, the failure is logged and the rest of `running` goes on.
pub fn start(
    running: &mut Running,
    cluster: client::Client,
    config: AgentConfig,
    flags: RuntimeFlags,
    endpoint: apiserver::auth::Security,
) {
    let shutdown = running.shutdown().clone();
    running.spawn(async move {
        if let Err(e) = run_worker(cluster, config, flags, endpoint, shutdown).await {
            tracing::error!(error = %e, "worker stopped");
        }
    });
}

/// Run a worker agent with the runtime its flags name.
pub async fn run_worker(
    cluster: client::Client,
    config: AgentConfig,
    flags: RuntimeFlags,
    endpoint: apiserver::auth::Security,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let assembly = agent::runtime::build(&config, &flags.settings()).await?;
    agent::run(cluster, config, assembly, endpoint, shutdown).await?;
    Ok(())
}

/// `oakestra wireguard-device`: what the worker starts to run its node's WireGuard
/// device (`netplane::wgdevice`); not meant to be run by hand.
#[derive(Args)]
pub struct WireguardDeviceArgs {
    /// The tun interface.
    #[arg(long)]
    device: String,
    /// The configuration socket.
    #[arg(long)]
    socket: std::path::PathBuf,
    /// The lock file the node's agent holds while it uses the device.
    #[arg(long)]
    lock: std::path::PathBuf,
    /// Milliseconds the device goes on once no agent holds the lock.
    #[arg(long)]
    linger_ms: u64,
}

/// Runs a node's WireGuard device until no agent has used it for the linger time, or
/// its socket is gone.
pub async fn run_device(args: WireguardDeviceArgs) -> anyhow::Result<()> {
    let spec = netplane::wgdevice::DeviceSpec {
        device: args.device,
        socket: args.socket,
        lock: args.lock,
        linger: Duration::from_millis(args.linger_ms),
    };
    let stopped = tokio::task::spawn_blocking(move || netplane::wgdevice::serve(&spec))
        .await
        .context("the device's thread")??;
    tracing::info!(?stopped, "WireGuard device stopped");
    Ok(())
}
