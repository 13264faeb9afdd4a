//! `oakestra root`: the root API server and the root controllers (services, placement
//! on clusters, subnets and service IPs, garbage collection).

use std::net::SocketAddr;
use std::time::Duration;

use apiserver::{ServerConfig, StoreConfig};
use clap::Args;
use controllers::ipam::Cidr;
use controllers::RootConfig;

use crate::roles::{ApiFlags, Running, Served};

/// The flags of `oakestra root`.
#[derive(Args)]
pub struct RootArgs {
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
}

/// Flags of the root controllers (also taken by `oakestra up`).
#[derive(Args)]
pub struct RootFlags {
    /// Pool the cluster subnets are taken from.
    #[arg(long, default_value = "10.128.0.0/9")]
    cluster_cidr: Cidr,
    /// Prefix length of each cluster's subnet (a /16 holds 1024 nodes of /26).
    #[arg(long, default_value_t = 16)]
    cluster_prefix: u8,
    /// Pool of service IPs (Oakestra's default, so its SLAs' `rr_ip` values fit).
    #[arg(long, default_value = "10.30.0.0/16")]
    service_cidr: Cidr,
    /// Seconds a cluster may stay `NotReady` before its Instances are placed elsewhere.
    #[arg(long, default_value_t = 60)]
    cluster_grace_seconds: u64,
    /// A cluster without a heartbeat for this many seconds becomes `NotReady`.
    #[arg(long, default_value_t = 20)]
    cluster_heartbeat_timeout_seconds: u64,
    /// Run the API server only, without controllers.
    #[arg(long)]
    no_controllers: bool,
}

impl RootFlags {
    /// The controllers' settings, or `None` with `--no-controllers`; a subnet prefix
    /// that does not fit the pool is refused.
    pub fn config(&self) -> anyhow::Result<Option<RootConfig>> {
        anyhow::ensure!(
            self.cluster_prefix >= self.cluster_cidr.prefix && self.cluster_prefix <= 30,
            "--cluster-prefix /{} must lie between the pool's /{} and /30",
            self.cluster_prefix,
            self.cluster_cidr.prefix
        );
        Ok((!self.no_controllers).then(|| RootConfig {
            cluster_cidr: self.cluster_cidr,
            cluster_prefix: self.cluster_prefix,
            service_cidr: self.service_cidr,
            cluster_grace: Duration::from_secs(self.cluster_grace_seconds),
            cluster_heartbeat_timeout: Duration::from_secs(self.cluster_heartbeat_timeout_seconds),
            ..RootConfig::default()
        }))
    }
}

/// Run the root tier until Ctrl-C or SIGTERM.
pub async fn run(args: RootArgs) -> anyhow::Result<()> {
    let config = args.root.config()?;
    let mut running = Running::new();
    let root = start(
        &mut running,
        args.listen,
        args.store,
        args.api.config(),
        config,
    )
    .await?;
    println!("oakestra root: API at http://{}", root.addr);
    running.until_stopped().await
}

/// Start the root API server on `store` and, given a config, the root controllers on
/// it; both are added to `running`.
pub async fn start(
    running: &mut Running,
    listen: SocketAddr,
    store: StoreConfig,
    api: ServerConfig,
    controllers: Option<RootConfig>,
) -> anyhow::Result<Served> {
    let served = running.serve_api("root", listen, store, api).await?;
    if let Some(config) = controllers {
        running.spawn(controllers::run_root(
            served.client.clone(),
            config,
            running.shutdown().clone(),
        ));
    }
    Ok(served)
}
