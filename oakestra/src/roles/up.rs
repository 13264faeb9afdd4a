//! `oakestra up`: everything on this one device (1-DOC): the root, one cluster called
//! `local` and one worker called `local`, with embedded stores under one data dir,
//! composed from the root, cluster and worker roles.
//!
//! Stopping `up` leaves the workloads of its worker running, so that the next `up`
//! adopts them; [`super::down`] stops them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use apiserver::StoreConfig;
use clap::Args;
use controllers::cluster::ClusterConfig;

use crate::roles::root::RootFlags;
use crate::roles::worker::{RuntimeFlags, WorkerFlags};
use crate::roles::{cluster, root, worker, ApiFlags, Running};

/// The name of the one cluster and of the one worker node of `oakestra up`.
pub const LOCAL: &str = "local";

/// The flags of `oakestra up`.
#[derive(Args)]
pub struct UpArgs {
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
}

/// `~/.local/share/oakestra`, or `.oakestra` without a home directory.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".local/share/oakestra"))
        .unwrap_or_else(|| PathBuf::from(".oakestra"))
}

/// The flags of the one worker of `up` with its data under `data_dir` (`down` finds
/// its workloads through the same flags).
pub fn local_worker(data_dir: &Path, runtime: RuntimeFlags) -> WorkerFlags {
    WorkerFlags {
        name: Some(LOCAL.into()),
        runtime,
        address: "127.0.0.1".into(),
        data_dir: Some(worker_dir(data_dir)),
        heartbeat_seconds: 2,
        location: None,
        labels: BTreeMap::new(),
        listen: "127.0.0.1:0".parse().expect("valid address"),
    }
}

/// Where the worker of `up` keeps its data (under its node's name).
pub fn worker_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("worker")
}

/// Run root, cluster and worker in this process until Ctrl-C or SIGTERM; then say that the
/// workloads keep running and how to stop them.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let data_dir = &args.data_dir;
    let controllers = args.root.config()?;
    let worker = local_worker(data_dir, args.runtime);
    let worker_config = worker.config(worker_dir(data_dir))?;
    let mut running = Running::new();
    let root = root::start(
        &mut running,
        args.listen,
        StoreConfig::Embedded(data_dir.join("root")),
        args.api.config(),
        controllers,
    )
    .await?;
    let cluster = cluster::start(
        &mut running,
        args.cluster_listen,
        StoreConfig::Embedded(data_dir.join("cluster")),
        args.api.config(),
        root.client.clone(),
        |local| ClusterConfig {
            heartbeat: Duration::from_secs(2),
            api_endpoint: Some(local.base().to_string()),
            ..ClusterConfig::new(LOCAL)
        },
    )
    .await?;
    let runtime = worker.runtime.settings().resolve();
    worker::start(&mut running, cluster.client, worker_config, worker.runtime);
    println!("oakestra up (one device: root, cluster \"{LOCAL}\", worker \"{LOCAL}\" with the {runtime} runtime)");
    println!("  API:   http://{}", root.addr);
    println!("  data:  {}", data_dir.display());
    println!(
        "  try:   oakctl --server http://{} apply -f manifests/",
        root.addr
    );
    println!(
        "         kubectl --server http://{} get services",
        root.addr
    );
    let result = running.until_stopped().await;
    eprintln!(
        "oakestra up stopped; the workloads of worker \"{LOCAL}\" keep running (the next \
         `oakestra up` adopts them, and their ports stay taken). To stop them: \
         oakestra down --data-dir {}",
        data_dir.display()
    );
    result
}
