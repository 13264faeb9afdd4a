//! `oakestra cluster`: a cluster's own API server and the cluster controllers (sync
//! with the root, scheduling onto nodes, node lifecycle, reports to the root).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use apiserver::{ServerConfig, StoreConfig};
use clap::Args;
use controllers::cluster::ClusterConfig;
use crds::Location;

use crate::roles::{parse_location, ApiFlags, Running, Served};

/// The flags of `oakestra cluster`.
#[derive(Args)]
pub struct ClusterArgs {
    /// Name of the cluster at the root.
    #[arg(long)]
    name: String,
    /// URL of the root API, e.g. `http://10.0.0.1:10000`.
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
}

/// Flags of the cluster controllers.
#[derive(Args)]
struct ClusterFlags {
    /// Where the cluster is, as LAT,LON in degrees.
    #[arg(long, value_parser = parse_location)]
    location: Option<Location>,
    /// Seconds between reports to the root.
    #[arg(long, default_value_t = 5)]
    heartbeat_seconds: u64,
    /// A node without a heartbeat for this long becomes `NotReady`.
    #[arg(long, default_value_t = 20)]
    node_heartbeat_timeout_seconds: u64,
    /// A node `NotReady` for this long loses its Instances to other nodes.
    #[arg(long, default_value_t = 30)]
    eviction_seconds: u64,
    /// Seconds an Instance may find no node with room before it goes back to the root.
    #[arg(long, default_value_t = 30)]
    handback_seconds: u64,
    /// URL of this cluster's API as clients reach it (default: from --listen).
    #[arg(long)]
    advertise_url: Option<String>,
}

impl ClusterFlags {
    /// The controllers' settings for cluster `name`, whose API `local` reaches.
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

/// Run a cluster orchestrator until Ctrl-C or SIGTERM.
pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let name = &args.name;
    crds::validate::name(name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    let root = client::Client::new(&args.root).context("--root")?;
    let mut running = Running::new();
    let cluster = start(
        &mut running,
        args.listen,
        args.store,
        args.api.config(),
        root.clone(),
        |local| args.cluster.config(name, local),
    )
    .await?;
    println!(
        "oakestra cluster {name}: API at http://{}, root at {}",
        cluster.addr,
        root.base()
    );
    running.until_stopped().await
}

/// Start the cluster API server on `store` and the cluster controllers on it,
/// reporting to `root`, with the settings `config` gives for the server's in-process
/// client; both are added to `running`.
pub async fn start(
    running: &mut Running,
    listen: SocketAddr,
    store: StoreConfig,
    api: ServerConfig,
    root: client::Client,
    config: impl FnOnce(&client::Client) -> ClusterConfig,
) -> anyhow::Result<Served> {
    let served = running.serve_api("cluster", listen, store, api).await?;
    let config = config(&served.client);
    running.spawn(controllers::cluster::run_cluster(
        served.client.clone(),
        root,
        config,
        running.shutdown().clone(),
    ));
    Ok(served)
}
