//! `oakestra`: the server binary. Thin: parses flags and wires crates per role.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use apiserver::{Server, ServerConfig, StoreConfig};
use clap::{Args, Parser, Subcommand};
use controllers::ipam::Cidr;
use controllers::RootConfig;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "oakestra", version, about = "Hierarchical edge orchestrator")]
struct Cli {
    #[command(subcommand)]
    role: Role,
    /// Log filter (tracing env-filter syntax), e.g. `info,apiserver=debug`.
    #[arg(long, global = true, env = "OAKESTRA_LOG", default_value = "info")]
    log: String,
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
    /// Run everything on this one device with an embedded store (1-DOC).
    Up {
        /// Address to serve the API on.
        #[arg(long, default_value = "127.0.0.1:10000")]
        listen: SocketAddr,
        /// Where the embedded store keeps its data.
        #[arg(long, env = "OAKESTRA_DATA", default_value_os_t = default_data_dir())]
        data_dir: PathBuf,
        #[command(flatten)]
        api: ApiFlags,
        #[command(flatten)]
        root: RootFlags,
    },
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
        Role::Up {
            listen,
            data_dir,
            api,
            root,
        } => {
            let config = root.config()?;
            let store = StoreConfig::Embedded(data_dir.join("root"));
            let server = Server::start(listen, store, api.config())
                .await
                .with_context(|| {
                    format!(
                        "starting oakestra up on {listen} with data in {}",
                        data_dir.display()
                    )
                })?;
            println!("oakestra up");
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
            serve(server, (!root.no_controllers).then_some(config)).await
        }
    }
}

/// Run the server (and the root controllers, talking to it over HTTP) until Ctrl-C.
async fn serve(server: Server, controllers: Option<RootConfig>) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let mut addr = server.addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let client = client::Client::new(&format!("http://{addr}"))?;
    let running = controllers
        .map(|config| tokio::spawn(controllers::run_root(client, config, shutdown.clone())));
    let result = tokio::select! {
        _ = server.wait() => Err(anyhow::anyhow!("the API server stopped")),
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted, shutting down");
            Ok(())
        }
    };
    shutdown.cancel();
    if let Some(task) = running {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    result
}
