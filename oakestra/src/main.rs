//! `oakestra`: the server binary. Thin: parses flags and wires crates per role.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use apiserver::{Server, ServerConfig, StoreConfig};
use clap::{Args, Parser, Subcommand};
use std::collections::BTreeMap;
use std::sync::Arc;

use agent::AgentConfig;
use controllers::cluster::ClusterConfig;
use controllers::ipam::Cidr;
use controllers::RootConfig;
use crds::Location;
use tokio_util::sync::CancellationToken;

/// mimalloc instead of glibc's malloc: the servers allocate and free many small JSON
/// values per request from several threads, where glibc's malloc and free took 10–17 %
/// of a busy server's CPU (perf; `docs/benchmarks-history.md`, session 10, has the
/// before/after). Its arenas are committed on demand (`MI_DEFAULT_ARENA_EAGER_COMMIT=0`
/// in `.cargo/config.toml`): committed eagerly, as mimalloc does on Linux by default, an
/// idle root stayed at 45 MiB resident instead of 20.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "oakestra", version, about = "Hierarchical edge orchestrator")]
struct Cli {
    #[command(subcommand)]
    role: Role,
    /// Log filter (tracing env-filter syntax), e.g. `info,apiserver=debug`.
    #[arg(long, global = true, env = "OAKESTRA_LOG", default_value = "info")]
    log: String,
    /// Also log when each enabled span closes, with its busy and idle time (e.g. every
    /// reconcile with `--log info,client::runtime::controller=debug`): for profiling.
    #[arg(long, global = true, env = "OAKESTRA_LOG_SPANS")]
    log_spans: bool,
}

#[derive(Subcommand)]
enum Role {
    /// Run the root orchestrator: the root API server and the root controllers.
    Root {
        /// Address to serve the API on.
        #[arg(long, default_value = "127.0.0.1:10000")]
        listen: SocketAddr,
        /// `embedded:DIR` or `etcd:http://HOST:PORT[,…]`.
        #[arg(long, default_value = "embedded:/var/lib/oakestra/root")]
        store: StoreConfig,
        #[command(flatten)]
        api: ApiFlags,
        #[command(flatten)]
        root: RootFlags,
    },
    /// Run a cluster orchestrator: its own API server and the cluster controllers.
    Cluster {
        /// Name of the cluster at the root.
        #[arg(long)]
        name: String,
        /// URL of the root API, e.g. http://10.0.0.1:10000.
        #[arg(long)]
        root: String,
        /// Address to serve the cluster API on (workers connect here).
        #[arg(long, default_value = "127.0.0.1:10100")]
        listen: SocketAddr,
        /// `embedded:DIR` or `etcd:http://HOST:PORT[,…]`.
        #[arg(long, default_value = "embedded:/var/lib/oakestra/cluster")]
        store: StoreConfig,
        #[command(flatten)]
        api: ApiFlags,
        #[command(flatten)]
        cluster: ClusterFlags,
    },
    /// Run a worker agent: registers a Node at its cluster and runs the Instances bound to it.
    Worker {
        /// URL of the cluster API, e.g. http://10.0.0.2:10100.
        #[arg(long)]
        cluster: String,
        #[command(flatten)]
        worker: WorkerFlags,
    },
    /// Simulate many worker nodes for scale tests (like kubemark/KWOK): registers
    /// `PREFIX-0` … `PREFIX-{N-1}` at the cluster, heartbeats them, and reports every
    /// Instance bound to them `Running` without running anything.
    Hollow {
        /// URL of the cluster API, e.g. http://10.0.0.2:10100.
        #[arg(long)]
        cluster: String,
        /// How many nodes to simulate.
        #[arg(long)]
        nodes: usize,
        /// Node names are PREFIX-0 … PREFIX-{N-1}.
        #[arg(long)]
        prefix: String,
        /// Seconds between two heartbeats of one node (spread over all nodes).
        #[arg(long, default_value_t = 10)]
        heartbeat_seconds: u64,
        /// CPU capacity of each node, in millicores.
        #[arg(long, default_value_t = 4000)]
        cpu_millicores: u64,
        /// Memory capacity of each node, in MiB.
        #[arg(long, default_value_t = 8192)]
        memory_mib: u64,
        /// Address the nodes report (and their Instances' hostIP).
        #[arg(long, default_value = "127.0.0.1")]
        address: String,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Run everything on this one device (1-DOC): root, one cluster and one worker, with
    /// embedded stores.
    Up {
        /// Address to serve the root API on.
        #[arg(long, default_value = "127.0.0.1:10000")]
        listen: SocketAddr,
        /// Address to serve the cluster API on.
        #[arg(long, default_value = "127.0.0.1:10100")]
        cluster_listen: SocketAddr,
        /// Where the stores and the worker keep their data.
        #[arg(long, env = "OAKESTRA_DATA", default_value_os_t = default_data_dir())]
        data_dir: PathBuf,
        #[command(flatten)]
        api: ApiFlags,
        #[command(flatten)]
        root: RootFlags,
        #[command(flatten)]
        runtime: RuntimeFlags,
    },
}

/// Which runtime a worker runs its Instances with.
#[derive(Args, Clone)]
struct RuntimeFlags {
    /// `containerd` runs containers, `process` native executables; `auto` picks
    /// containerd when its socket is there.
    #[arg(long, default_value = "auto")]
    runtime: String,
    /// containerd's gRPC socket.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    containerd_socket: PathBuf,
    /// Registries (host[:port]) to pull from over plain HTTP; loopback ones always are.
    #[arg(long, value_delimiter = ',')]
    insecure_registry: Vec<String>,
    /// cgroup file system root, for instance limits.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    cgroup_root: PathBuf,
    /// Container networking: `bridge` gives each container its own namespace and its
    /// instance IP (needs the CNI plugins), `host` shares the node's network.
    #[arg(long, default_value = "bridge")]
    network: String,
    /// Where the CNI plugins are.
    #[arg(long, default_value = agent::network::DEFAULT_CNI_PATH)]
    cni_path: PathBuf,
}

#[derive(Args)]
struct ClusterFlags {
    /// Where the cluster is, as LAT,LON in degrees.
    #[arg(long, value_parser = parse_location)]
    location: Option<Location>,
    /// Seconds between reports to the root.
    #[arg(long, default_value_t = 5)]
    heartbeat_seconds: u64,
    /// A node without a heartbeat for this long becomes NotReady.
    #[arg(long, default_value_t = 20)]
    node_heartbeat_timeout_seconds: u64,
    /// A node NotReady for this long loses its Instances to other nodes.
    #[arg(long, default_value_t = 30)]
    eviction_seconds: u64,
    /// Seconds an Instance may find no node with room before it goes back to the root.
    #[arg(long, default_value_t = 30)]
    handback_seconds: u64,
    /// URL of this cluster's API as clients reach it (default: from --listen).
    #[arg(long)]
    advertise_url: Option<String>,
}

#[derive(Args)]
struct WorkerFlags {
    /// Node name (default: the host name).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    runtime: RuntimeFlags,
    /// Address the node is reached at.
    #[arg(long, default_value = "127.0.0.1")]
    address: String,
    /// Where instance state and logs are kept.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 2)]
    heartbeat_seconds: u64,
    /// Where the node is, as LAT,LON in degrees.
    #[arg(long, value_parser = parse_location)]
    location: Option<Location>,
    /// Node labels, KEY=VALUE[,KEY=VALUE…].
    #[arg(long, value_parser = parse_labels, default_value = "")]
    labels: BTreeMap<String, String>,
    /// Where the agent serves instance logs (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

fn parse_location(s: &str) -> Result<Location, String> {
    let (lat, lon) = s
        .split_once(',')
        .ok_or_else(|| format!("{s:?}: expected LAT,LON"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<f64>()
            .map_err(|_| format!("{s:?}: {v:?} is not a number"))
    };
    Ok(Location {
        latitude: parse(lat)?,
        longitude: parse(lon)?,
        place: None,
    })
}

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

impl ClusterFlags {
    fn config(&self, name: &str, local: &client::Client) -> ClusterConfig {
        ClusterConfig {
            api_endpoint: Some(
                self.advertise_url
                    .clone()
                    .unwrap_or_else(|| local.base().to_string()),
            ),
            location: self.location.clone(),
            heartbeat: Duration::from_secs(self.heartbeat_seconds.max(1)),
            node_heartbeat_timeout: Duration::from_secs(self.node_heartbeat_timeout_seconds),
            eviction: Duration::from_secs(self.eviction_seconds),
            handback: Duration::from_secs(self.handback_seconds),
            ..ClusterConfig::new(name)
        }
    }
}

impl RuntimeFlags {
    /// The runtime to use: `auto` becomes containerd when its socket exists.
    fn resolve(&self) -> &str {
        match self.runtime.as_str() {
            "auto" if self.containerd_socket.exists() => "containerd",
            "auto" => "process",
            other => other,
        }
    }
}

impl WorkerFlags {
    fn config(&self, default_dir: PathBuf) -> anyhow::Result<AgentConfig> {
        let node = match &self.name {
            Some(n) => n.clone(),
            None => std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_lowercase())
                .unwrap_or_else(|_| "worker".into()),
        };
        crds::validate::name(&node).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
        Ok(AgentConfig {
            data_dir: self.data_dir.clone().unwrap_or(default_dir).join(&node),
            node,
            address: self.address.clone(),
            location: self.location.clone(),
            labels: self.labels.clone(),
            heartbeat: Duration::from_secs(self.heartbeat_seconds.max(1)),
            capacity: None,
            listen: self.listen,
        })
    }
}

#[derive(Args)]
struct ApiFlags {
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = 3 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Recent changes kept for watches that resume in the past (older: 410 Gone).
    #[arg(long, default_value_t = 10_000)]
    watch_cache_events: usize,
}

#[derive(Args)]
struct RootFlags {
    /// Pool the cluster subnets are taken from.
    #[arg(long, default_value = "10.128.0.0/9")]
    cluster_cidr: Cidr,
    /// Prefix length of each cluster's subnet (a /16 holds 1024 nodes of /26).
    #[arg(long, default_value_t = 16)]
    cluster_prefix: u8,
    /// Pool of service IPs (Oakestra's default, so its SLAs' rr_ip values fit).
    #[arg(long, default_value = "10.30.0.0/16")]
    service_cidr: Cidr,
    /// Seconds a cluster may stay NotReady before its Instances are placed elsewhere.
    #[arg(long, default_value_t = 60)]
    cluster_grace_seconds: u64,
    /// A cluster without a heartbeat for this many seconds becomes NotReady.
    #[arg(long, default_value_t = 20)]
    cluster_heartbeat_timeout_seconds: u64,
    /// Run the API server only, without controllers.
    #[arg(long)]
    no_controllers: bool,
}

impl ApiFlags {
    fn config(&self) -> ServerConfig {
        ServerConfig {
            max_body_bytes: self.max_body_bytes,
            watch_cache_events: self.watch_cache_events,
            ..ServerConfig::default()
        }
    }
}

impl RootFlags {
    fn config(&self) -> anyhow::Result<RootConfig> {
        anyhow::ensure!(
            self.cluster_prefix >= self.cluster_cidr.prefix && self.cluster_prefix <= 30,
            "--cluster-prefix /{} must lie between the pool's /{} and /30",
            self.cluster_prefix,
            self.cluster_cidr.prefix
        );
        Ok(RootConfig {
            cluster_cidr: self.cluster_cidr,
            cluster_prefix: self.cluster_prefix,
            service_cidr: self.service_cidr,
            cluster_grace: Duration::from_secs(self.cluster_grace_seconds),
            cluster_heartbeat_timeout: Duration::from_secs(self.cluster_heartbeat_timeout_seconds),
            ..RootConfig::default()
        })
    }
}

fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".local/share/oakestra"))
        .unwrap_or_else(|| PathBuf::from(".oakestra"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).context("invalid --log filter")?,
        )
        .with_writer(std::io::stderr)
        .with_span_events(if cli.log_spans {
            tracing_subscriber::fmt::format::FmtSpan::CLOSE
        } else {
            tracing_subscriber::fmt::format::FmtSpan::NONE
        })
        .init();
    match cli.role {
        Role::Root {
            listen,
            store,
            api,
            root,
        } => {
            let config = root.config()?;
            let server = Server::start(listen, store.clone(), api.config())
                .await
                .with_context(|| {
                    format!("starting the root API server on {listen} with store {store:?}")
                })?;
            println!("oakestra root: API at http://{}", server.addr);
            serve(server, (!root.no_controllers).then_some(config)).await
        }
        Role::Cluster {
            name,
            root,
            listen,
            store,
            api,
            cluster,
        } => {
            crds::validate::name(&name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
            let root = client::Client::new(&root).context("--root")?;
            let server = Server::start(listen, store.clone(), api.config())
                .await
                .with_context(|| {
                    format!("starting the cluster API server on {listen} with store {store:?}")
                })?;
            println!(
                "oakestra cluster {name}: API at http://{}, root at {}",
                server.addr,
                root.base()
            );
            let shutdown = CancellationToken::new();
            let local = local_client(&server)?;
            let config = cluster.config(&name, &local);
            let task = tokio::spawn(controllers::cluster::run_cluster(
                local,
                root,
                config,
                shutdown.clone(),
            ));
            until_stopped(vec![server], shutdown, vec![task]).await
        }
        Role::Worker { cluster, worker } => {
            let config = worker.config(PathBuf::from("/var/lib/oakestra/worker"))?;
            let client = client::Client::new(&cluster).context("--cluster")?;
            println!(
                "oakestra worker {}: cluster at {}",
                config.node,
                client.base()
            );
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(run_worker(
                client,
                config,
                worker.runtime.clone(),
                shutdown.clone(),
            ));
            tokio::select! {
                r = task => r.context("worker task")?,
                _ = tokio::signal::ctrl_c() => {
                    shutdown.cancel();
                    Ok(())
                }
            }
        }
        Role::Hollow {
            cluster,
            nodes,
            prefix,
            heartbeat_seconds,
            cpu_millicores,
            memory_mib,
            address,
            concurrency,
        } => {
            anyhow::ensure!(nodes > 0, "--nodes must be positive");
            let client = client::Client::new(&cluster).context("--cluster")?;
            let config = agent::hollow::HollowConfig {
                prefix,
                nodes,
                address,
                heartbeat: Duration::from_secs(heartbeat_seconds.max(1)),
                capacity: crds::Capacity {
                    cpu_millicores,
                    memory_mib,
                    gpus: 0,
                    nodes: 1,
                },
                concurrency,
            };
            println!(
                "oakestra hollow: {nodes} nodes {}-0…{}-{} at cluster {}",
                config.prefix,
                config.prefix,
                nodes - 1,
                client.base()
            );
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(agent::hollow::run(client, config, shutdown.clone()));
            tokio::select! {
                r = task => Ok(r.context("hollow task")??),
                _ = tokio::signal::ctrl_c() => {
                    shutdown.cancel();
                    Ok(())
                }
            }
        }
        Role::Up {
            listen,
            cluster_listen,
            data_dir,
            api,
            root,
            runtime,
        } => {
            let config = root.config()?;
            let server = Server::start(
                listen,
                StoreConfig::Embedded(data_dir.join("root")),
                api.config(),
            )
            .await
            .with_context(|| {
                format!(
                    "starting the root API on {listen} with data in {}",
                    data_dir.display()
                )
            })?;
            let cluster_server = Server::start(
                cluster_listen,
                StoreConfig::Embedded(data_dir.join("cluster")),
                api.config(),
            )
            .await
            .with_context(|| format!("starting the cluster API on {cluster_listen}"))?;
            let shutdown = CancellationToken::new();
            let root_client = local_client(&server)?;
            let cluster_client = local_client(&cluster_server)?;
            let worker = WorkerFlags {
                name: Some("local".into()),
                runtime: runtime.clone(),
                address: "127.0.0.1".into(),
                data_dir: Some(data_dir.join("worker")),
                heartbeat_seconds: 2,
                location: None,
                labels: BTreeMap::new(),
                listen: "127.0.0.1:0".parse().expect("valid address"),
            };
            let cluster_config = ClusterConfig {
                heartbeat: Duration::from_secs(2),
                api_endpoint: Some(cluster_client.base().to_string()),
                ..ClusterConfig::new("local")
            };
            let tasks = vec![
                tokio::spawn(controllers::run_root(
                    root_client.clone(),
                    config,
                    shutdown.clone(),
                )),
                tokio::spawn(controllers::cluster::run_cluster(
                    cluster_client.clone(),
                    root_client,
                    cluster_config,
                    shutdown.clone(),
                )),
                tokio::spawn({
                    let (config, shutdown) =
                        (worker.config(data_dir.join("worker"))?, shutdown.clone());
                    async move {
                        if let Err(e) = run_worker(cluster_client, config, runtime, shutdown).await
                        {
                            tracing::error!(error = %e, "worker stopped");
                        }
                    }
                }),
            ];
            println!("oakestra up (one device: root, cluster \"local\", worker \"local\" with the {} runtime)", worker.runtime.resolve());
            println!("  API:   http://{}", server.addr);
            println!("  data:  {}", data_dir.display());
            println!(
                "  try:   oakctl --server http://{} apply -f manifests/",
                server.addr
            );
            println!(
                "         kubectl --server http://{} get services",
                server.addr
            );
            until_stopped(vec![server, cluster_server], shutdown, tasks).await
        }
    }
}

/// Run the root API server and, unless disabled, the root controllers.
async fn serve(server: Server, controllers: Option<RootConfig>) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let client = local_client(&server)?;
    let tasks = controllers
        .map(|config| tokio::spawn(controllers::run_root(client, config, shutdown.clone())))
        .into_iter()
        .collect();
    until_stopped(vec![server], shutdown, tasks).await
}

/// A client of a server in this process: the controllers' requests reach it in memory
/// (see `client::Client::in_process`); the URL is the one it listens on.
fn local_client(server: &Server) -> anyhow::Result<client::Client> {
    let mut addr = server.addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok(client::Client::in_process(
        &format!("http://{addr}"),
        Arc::new(server.local()),
    )?)
}

/// Serve until Ctrl-C (or a server stops), then stop the tasks.
async fn until_stopped(
    servers: Vec<Server>,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<()> {
    let stopped = futures::future::select_all(servers.into_iter().map(|s| Box::pin(s.wait())));
    let result = tokio::select! {
        _ = stopped => Err(anyhow::anyhow!("an API server stopped")),
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted, shutting down");
            Ok(())
        }
    };
    shutdown.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    result
}

/// Run a worker agent with the runtime its flags name.
async fn run_worker(
    cluster: client::Client,
    config: AgentConfig,
    flags: RuntimeFlags,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let settings = agent::runtime::RuntimeSettings {
        choice: flags
            .runtime
            .parse()
            .map_err(|e| anyhow::anyhow!("--runtime {e}"))?,
        containerd_socket: flags.containerd_socket.clone(),
        insecure_registries: flags.insecure_registry.clone(),
        cgroup_root: flags.cgroup_root.clone(),
        network: flags
            .network
            .parse()
            .map_err(|e| anyhow::anyhow!("--network {e}"))?,
        cni_path: flags.cni_path.clone(),
    };
    let assembly = agent::runtime::build(&config, &settings).await?;
    agent::run(cluster, config, assembly, shutdown).await?;
    Ok(())
}
