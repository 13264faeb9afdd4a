//! `oakestra down`: stop the workloads that the worker of an `oakestra up` left running
//! (its process runtime's processes under the data dir and, where containerd runs,
//! its containers in the `oakestra-local` namespace). It asks the agent's runtimes,
//! built as `up` builds them, for what they have, and removes each; then it removes the
//! node's service rules (its nftables table) and overlay device.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use crate::roles::up::{default_data_dir, local_worker, worker_dir, LOCAL};
use crate::roles::worker::RuntimeFlags;

/// The flags of `oakestra down`.
#[derive(Args)]
pub struct DownArgs {
    /// The data dir of the `oakestra up` whose workloads to stop.
    #[arg(long, env = "OAKESTRA_DATA", default_value_os_t = default_data_dir())]
    data_dir: PathBuf,
    /// The runtime flags `up` ran with (the defaults find both processes and, where
    /// containerd runs, containers).
    #[command(flatten)]
    runtime: RuntimeFlags,
}

/// Remove every workload of the `up` worker; run it after stopping `up` (a running
/// worker would start them again).
pub async fn run(args: DownArgs) -> anyhow::Result<()> {
    let data_dir = &args.data_dir;
    anyhow::ensure!(
        worker_dir(data_dir).is_dir(),
        "no `oakestra up` data in {} (see --data-dir)",
        data_dir.display()
    );
    let worker = local_worker(data_dir, args.runtime);
    let config = worker.config(worker_dir(data_dir))?;
    // Nobody listens to exits here: the runtimes are only asked to list and remove.
    let workloads = agent::runtime::build(&config, &worker.runtime.settings()).await?;
    let ids = workloads
        .held()
        .await
        .context("listing the workloads of the worker")?;
    if let Some(dataplane) = &config.dataplane {
        if let Err(e) = netplane::controller::teardown(dataplane).await {
            println!("oakestra down: the node's service rules stay: {e}");
        }
    }
    if ids.is_empty() {
        println!("oakestra down: worker \"{LOCAL}\" runs no workloads");
        return Ok(());
    }
    for id in &ids {
        workloads
            .remove(id)
            .await
            .with_context(|| format!("stopping {id}"))?;
        println!("stopped {id}");
    }
    println!(
        "oakestra down: stopped {} workload(s) of worker \"{LOCAL}\"",
        ids.len()
    );
    Ok(())
}
