//! `oakbench`: the benchmark harness of the workspace (a program, not tests).
//!
//! It owns the benchmark scenarios and everything they run against: it starts a real
//! `etcd` (`e2e::Etcd`), API servers in this process (`apiserver::Server` on
//! `127.0.0.1:0`) or as a real `oakestra root` process when the server's memory is
//! measured, drives load from this process over loopback only, prints a table and
//! writes the figures as JSON. Every request loop is bounded in count and in time.
//!
//! - [`api_writes`]: `Cluster` creates through the API (embedded store and etcd) against
//!   raw etcd writes of the same bytes;
//! - [`watch_fanout`]: delivery delay of changes to many watchers and server RSS per
//!   watcher;
//! - [`placement`]: a Service of N replicas to N placed Instances through the root
//!   controllers;
//! - [`footprint`]: memory and idle CPU of root, cluster and worker processes;
//! - [`start_latency`]: apply → Running of a container against raw `ctr run`;
//! - [`failover`]: a worker killed with its Instances → all Running elsewhere.
//! - [`ha`]: two roots on one etcd: controller failover when the leader is killed, and
//!   a rolling restart under writes (failed requests, acknowledged writes lost).
//! - [`scheduling`]: scheduling at scale over hollow nodes (clusters × nodes, a burst of
//!   Instances) with the footprint of root, cluster and hollow processes meanwhile.
//! - [`gitops`]: a reconcile of unchanged objects (drift check, re-apply) must write
//!   nothing.
//! - [`network`]: the worker's data plane in network namespaces: service rules at
//!   scale, service IP against direct, the vxlan and WireGuard overlays against the underlay.
//! - [`endpoints`]: the data plane end to end on real agents: 2,000 Services' endpoints
//!   into every worker's table, one endpoint change onto every node, the agents' memory.
//!
//! How to run it and the figures of a run are in `docs/benchmarks.md`.

mod api_writes;
mod endpoints;
mod failover;
mod footprint;
mod gitops;
mod ha;
mod network;
mod placement;
mod procfs;
mod prom;
mod scheduling;
mod start_latency;
mod stats;
mod watch_fanout;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    ApiWrites,
    WatchFanout,
    Placement,
    Footprint,
    StartLatency,
    Failover,
    Scheduling,
    Gitops,
    Network,
    Endpoints,
    Ha,
    All,
}

#[derive(Debug, Parser)]
#[command(name = "oakbench", about = "Benchmarks of the Oakestra API server")]
struct Cli {
    /// Which scenario to run.
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    scenario: Scenario,
    /// api-writes: measured objects per run (per backend and concurrency).
    #[arg(long, default_value_t = 2000)]
    count: usize,
    /// api-writes: concurrency levels (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 64])]
    concurrency: Vec<usize>,
    /// watch-fanout: concurrent watchers.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// watch-fanout: objects created one at a time while the watchers listen.
    #[arg(long, default_value_t = 200)]
    events: usize,
    /// placement: replicas of the Service [default: 1000]; scheduling: Instances in all
    /// [default: 10000].
    #[arg(long)]
    instances: Option<usize>,
    /// placement: clusters to spread them over.
    #[arg(long, default_value_t = 10)]
    clusters: usize,
    /// scheduling: hollow nodes per cluster (with --clusters clusters and --instances
    /// Instances; the full size of #5 is 10 × 500 and 10000).
    #[arg(long, default_value_t = 500)]
    nodes_per_cluster: usize,
    /// scheduling: Services the Instances are split over.
    #[arg(long, default_value_t = 10)]
    services: usize,
    /// scheduling: seconds between two heartbeats of one hollow node.
    #[arg(long, default_value_t = 10)]
    hollow_heartbeat_seconds: u64,
    /// scheduling: keep stores and process logs in this directory (default: a temp dir,
    /// removed afterwards).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Small numbers for a smoke run (200 objects, 50 watchers, 20 events, 100
    /// instances; scheduling: 2 clusters × 20 nodes, 200 Instances in 2 Services).
    #[arg(long)]
    quick: bool,
    /// Bound on each measured phase, in seconds.
    #[arg(long, default_value_t = 120)]
    run_timeout: u64,
    /// The `oakestra` binary the scenarios run (servers, hollow nodes, workers, the
    /// network scenario's WireGuard devices) [default: the debug build that
    /// `e2e::binary` builds, target/debug/oakestra].
    #[arg(long)]
    oakestra: Option<PathBuf>,
    /// watch-fanout: also run the root controllers in the server process (by default
    /// it runs with `--no-controllers`: the API server alone).
    #[arg(long)]
    controllers: bool,
    /// start-latency: rounds of apply -> Running (and of `ctr run`).
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// start-latency: container networking of the worker (bridge or host).
    #[arg(long, default_value = "bridge")]
    network: String,
    /// failover: Instances on the worker that is killed.
    #[arg(long, default_value_t = 10)]
    failover_instances: usize,
    /// failover: the cluster's node heartbeat timeout, in seconds.
    #[arg(long, default_value_t = 3)]
    node_timeout: u64,
    /// failover: the cluster's eviction timeout, in seconds.
    #[arg(long, default_value_t = 2)]
    eviction: u64,
    /// ha: rounds of killing the leading root.
    #[arg(long, default_value_t = 10)]
    ha_rounds: usize,
    /// ha: the leader election's lease duration in seconds (renew deadline 2/3 of it,
    /// retry period 2/15: Kubernetes' 15, 10 and 2 s at the default).
    #[arg(long, default_value_t = 15)]
    ha_lease_seconds: u64,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = "target/oakbench.json")]
    json: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    if cli.quick {
        cli.count = 200;
        cli.watchers = 50;
        cli.events = 20;
        cli.instances = Some(100);
        cli.nodes_per_cluster = 20;
    }
    anyhow::ensure!(
        cli.count > 0 && cli.concurrency.iter().all(|&c| c > 0),
        "--count and --concurrency must be positive"
    );
    let run_timeout = Duration::from_secs(cli.run_timeout);
    if let Some(load) = procfs::loadavg().filter(|l| *l > 0.5) {
        eprintln!(
            "note: the 1-minute load average is {load:.2} (it counts the last minute, \
             earlier runs included): the `other` figures show whether anything else \
             competed for the CPUs during a measurement"
        );
    }
    let mut report = json!({
        "machine": machine(),
        "options": {
            "count": cli.count,
            "concurrency": cli.concurrency,
            "watchers": cli.watchers,
            "events": cli.events,
            "quick": cli.quick,
            "controllers": cli.controllers,
        },
        "git_at_run_time": git(),
    });

    if matches!(cli.scenario, Scenario::ApiWrites | Scenario::All) {
        eprintln!("api-writes: starting etcd");
        let etcd = tokio::task::spawn_blocking(e2e::Etcd::start)
            .await
            .context("starting etcd (is `etcd` on PATH? Debian: etcd-server)")?;
        let opts = api_writes::Options {
            count: cli.count,
            concurrency: cli.concurrency.clone(),
            run_timeout,
        };
        eprintln!(
            "api-writes: {} creates per run at concurrency {:?}",
            cli.count, cli.concurrency
        );
        let runs = api_writes::run(&opts, &etcd.url()).await?;
        api_writes::print(&runs);
        report["api_writes"] = api_writes::to_json(&runs);
        report["api_writes_over_raw_txn"] = api_writes::floors_json(&runs);
        let handshakes = api_writes::handshakes(if cli.quick { 200 } else { 1000 }).await?;
        api_writes::print_handshakes(&handshakes);
        report["handshakes"] = api_writes::handshakes_json(&handshakes);
        drop(etcd);
    }

    if matches!(cli.scenario, Scenario::Gitops | Scenario::All) {
        let objects = if cli.quick { 200 } else { 1000 };
        eprintln!("gitops: {objects} Services, a drift check and a re-apply of each");
        let passes = gitops::run(objects).await?;
        gitops::print(&passes);
        report["gitops"] = gitops::to_json(&passes);
    }

    if matches!(cli.scenario, Scenario::WatchFanout | Scenario::All) {
        if cli.oakestra.is_none() {
            eprintln!("watch-fanout: building the debug oakestra binary (e2e::binary)");
        }
        let opts = watch_fanout::Options {
            watchers: cli.watchers,
            events: cli.events,
            oakestra: cli.oakestra.clone(),
            controllers: cli.controllers,
            time_bound: run_timeout,
        };
        eprintln!(
            "watch-fanout: {} watchers, {} creates",
            cli.watchers, cli.events
        );
        let fanout = watch_fanout::run(&opts).await?;
        watch_fanout::print(&fanout);
        report["watch_fanout"] = watch_fanout::to_json(&fanout);
    }

    if matches!(cli.scenario, Scenario::Placement | Scenario::All) {
        let opts = placement::Options {
            instances: cli.instances.unwrap_or(1000),
            clusters: cli.clusters,
            oakestra: cli.oakestra.clone(),
            time_bound: run_timeout,
        };
        let placement_report = placement::run(&opts).await?;
        placement::print(&placement_report);
        report["placement"] = placement::to_json(&placement_report);
    }

    if matches!(cli.scenario, Scenario::Footprint | Scenario::All) {
        let opts = footprint::Options {
            oakestra: cli.oakestra.clone(),
            idle: Duration::from_secs(if cli.quick { 3 } else { 10 }),
        };
        let footprint_report = footprint::run(&opts).await?;
        footprint::print(&footprint_report);
        report["footprint"] = footprint::to_json(&footprint_report);
    }

    if matches!(cli.scenario, Scenario::StartLatency | Scenario::All) {
        let opts = start_latency::Options {
            rounds: if cli.quick { 3 } else { cli.rounds },
            oakestra: cli.oakestra.clone(),
            network: cli.network.clone(),
        };
        let start_report = start_latency::run(&opts).await?;
        start_latency::print(&start_report);
        report["start_latency"] = start_latency::to_json(&start_report);
    }

    if matches!(cli.scenario, Scenario::Failover | Scenario::All) {
        let opts = failover::Options {
            instances: cli.failover_instances,
            oakestra: cli.oakestra.clone(),
            heartbeat_timeout: Duration::from_secs(cli.node_timeout),
            eviction: Duration::from_secs(cli.eviction),
            time_bound: run_timeout,
        };
        let failover_report = failover::run(&opts).await?;
        failover::print(&failover_report);
        report["failover"] = failover::to_json(&failover_report);
    }

    // Not part of `all`: ten rounds of a 15-s lease take minutes.
    if cli.scenario == Scenario::Ha {
        let (rounds, lease) = if cli.quick {
            (3, 3)
        } else {
            (cli.ha_rounds, cli.ha_lease_seconds)
        };
        let opts = ha::Options {
            rounds,
            lease: Duration::from_secs(lease.max(1)),
            oakestra: cli.oakestra.clone(),
            time_bound: run_timeout,
        };
        let ha_report = ha::run(&opts).await?;
        ha::print(&ha_report);
        report["ha"] = ha::to_json(&ha_report);
    }

    if matches!(cli.scenario, Scenario::Network | Scenario::All) {
        let network_report = network::run(network::Options::new(
            cli.quick,
            oakestra_binary(cli.oakestra.clone()),
        ))
        .await?;
        network::print(&network_report);
        report["network"] = network::to_json(&network_report);
    }

    // Not part of `all`: it places 6,000 Instances and runs 4 workers in namespaces.
    if cli.scenario == Scenario::Endpoints {
        let opts = endpoints::Options::new(
            cli.quick,
            cli.oakestra.clone(),
            cli.work_dir.clone(),
            run_timeout,
        );
        let endpoints_report = endpoints::run(&opts).await?;
        endpoints::print(&endpoints_report);
        report["endpoints"] = endpoints::to_json(&endpoints_report);
    }

    // Not part of `all`: at full size it runs for minutes and starts 21 processes.
    if cli.scenario == Scenario::Scheduling {
        let (clusters, instances, services) = if cli.quick {
            (2, 200, 2)
        } else {
            (cli.clusters, cli.instances.unwrap_or(10_000), cli.services)
        };
        let opts = scheduling::Options {
            clusters,
            nodes_per_cluster: cli.nodes_per_cluster,
            instances,
            services,
            heartbeat_seconds: cli.hollow_heartbeat_seconds,
            oakestra: cli.oakestra.clone(),
            work_dir: cli.work_dir.clone(),
            time_bound: run_timeout,
            idle_for: Duration::from_secs(if cli.quick { 3 } else { 10 }),
            settle_for: Duration::from_secs(if cli.quick {
                0
            } else {
                2 * cli.hollow_heartbeat_seconds
            }),
        };
        let scheduling_report = scheduling::run(&opts).await?;
        scheduling::print(&scheduling_report);
        report["scheduling"] = scheduling::to_json(&scheduling_report);
    }

    if let Some(parent) = cli.json.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    report["machine"]["loadavg_1min_end"] = json!(procfs::loadavg());
    std::fs::write(&cli.json, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", cli.json.display()))?;
    println!("\nfigures written to {}", cli.json.display());
    Ok(())
}

/// Where a scenario keeps its stores and logs: `--work-dir` (made if missing, kept),
/// else a new temporary directory, removed when the returned guard drops.
fn run_dir(work_dir: Option<&Path>) -> anyhow::Result<(Option<tempfile::TempDir>, PathBuf)> {
    match work_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            Ok((None, d.to_path_buf()))
        }
        None => {
            let temp = tempfile::tempdir()?;
            let path = temp.path().to_path_buf();
            Ok((Some(temp), path))
        }
    }
}

/// Start `oakestra hollow` (process name `name`, logs in `dir`): `nodes` simulated
/// nodes `PREFIX-k` of the cluster whose admin kubeconfig is `kubeconfig`, each
/// heartbeating every `heartbeat_seconds`, with `extra` flags.
fn start_hollow(
    binary: &Path,
    name: &str,
    kubeconfig: &Path,
    (nodes, prefix, heartbeat_seconds): (usize, &str, u64),
    extra: &[&str],
    dir: &Path,
) -> e2e::Oakestra {
    let (kubeconfig, nodes, heartbeat) = (
        kubeconfig.display().to_string(),
        nodes.to_string(),
        heartbeat_seconds.to_string(),
    );
    let args: Vec<String> = [
        "hollow",
        "--kubeconfig",
        &kubeconfig,
        "--nodes",
        &nodes,
        "--prefix",
        prefix,
        "--heartbeat-seconds",
        &heartbeat,
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect();
    e2e::Oakestra::start_binary(binary, name, &args, None, dir)
}

/// The `oakestra` binary a scenario runs: `--oakestra`, else the debug build that
/// `e2e::binary` builds (blocking: it runs cargo).
fn oakestra_binary(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| e2e::binary("oakestra"))
}

/// The admin kubeconfig of the cluster `name` started by `e2e::cluster_args` with
/// `data_dir`, once it is there: the cluster writes it just after it starts serving
/// (blocking, for up to 30 s; panics after that, as the harness does).
fn cluster_kubeconfig(data_dir: &Path, name: &str) -> PathBuf {
    let path = e2e::tier_kubeconfig(&e2e::cluster_dir(data_dir, name));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "cluster {name} wrote no admin kubeconfig {} within 30 s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    path
}

/// An administrator's client of the cluster API of `oakestra up` with `data_dir` on
/// `port`: `up` writes no kubeconfig of it, but the root's administrator (its admin
/// kubeconfig) is one there too, trusting the cluster's CA (`DATA/cluster/pki/ca.crt`).
fn up_cluster_client(data_dir: &Path, port: u16) -> anyhow::Result<client::Client> {
    let admin = e2e::up_kubeconfig(data_dir);
    let resolved = client::kubeconfig::Kubeconfig::load(&admin)?.resolve(None)?;
    let ca = data_dir.join("cluster").join("pki").join("ca.crt");
    let ca_pem =
        std::fs::read_to_string(&ca).with_context(|| format!("reading {}", ca.display()))?;
    let tls = client::tls::TlsOptions {
        ca_pem: Some(ca_pem),
        ..resolved.tls
    };
    Ok(client::Client::with_tls(
        &format!("https://127.0.0.1:{port}"),
        tls,
    )?)
}

/// An administrator's client of the cluster `name` (see [`cluster_kubeconfig`]).
fn cluster_client(data_dir: &Path, name: &str) -> client::Client {
    e2e::tier_client(&cluster_kubeconfig(data_dir, name))
}

/// The workspace's commit when the figures were taken, and whether the working tree
/// differed from it (the binaries may have been built from an earlier state).
fn git() -> serde_json::Value {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(e2e::workspace_root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    json!({
        "revision": run(&["rev-parse", "HEAD"]),
        "dirty": run(&["status", "--porcelain"]).map(|s| !s.is_empty()),
    })
}

/// What the figures ran on.
fn machine() -> serde_json::Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let field = |text: &str, key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let etcd = std::process::Command::new(e2e::etcd_binary())
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string));
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": field(&cpuinfo, "model name"),
        "mem_total": field(&read("/proc/meminfo"), "MemTotal"),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "loadavg_1min_start": procfs::loadavg(),
        "etcd": etcd,
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    })
}
