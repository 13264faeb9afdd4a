//! `oakestra hollow`: many simulated worker nodes for scale tests (like kubemark or
//! KWOK), which heartbeat and report their Instances `Running` without running them.

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tokio_util::sync::CancellationToken;

/// The flags of `oakestra hollow`.
#[derive(Args)]
pub struct HollowArgs {
    /// The cluster's admin kubeconfig (`DATA/admin.kubeconfig` of `oakestra cluster`):
    /// hollow nodes are a test tool that registers many nodes under one credential.
    #[arg(long)]
    kubeconfig: std::path::PathBuf,
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
    /// Address the nodes report (and their Instances' `hostIP`).
    #[arg(long, default_value = "127.0.0.1")]
    address: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

/// Simulate the nodes until Ctrl-C or SIGTERM (or until simulating fails).
pub async fn run(args: HollowArgs) -> anyhow::Result<()> {
    let nodes = args.nodes;
    anyhow::ensure!(nodes > 0, "--nodes must be positive");
    let (client, _) = client::kubeconfig::Kubeconfig::load(&args.kubeconfig)
        .and_then(|k| k.client(None))
        .context("--kubeconfig")?;
    let config = agent::hollow::HollowConfig {
        prefix: args.prefix,
        nodes,
        address: args.address,
        heartbeat: Duration::from_secs(args.heartbeat_seconds.max(1)),
        capacity: crds::Capacity {
            cpu_millicores: args.cpu_millicores,
            memory_mib: args.memory_mib,
            gpus: 0,
            nodes: 1,
        },
        concurrency: args.concurrency,
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
        _ = crate::roles::stop_signal() => {
            shutdown.cancel();
            Ok(())
        }
    }
}
