//! Scenario `endpoints`: the service data plane end to end, at the scale issue #16 names
//! (2,000 Services × 3 endpoints), on real agents.
//!
//! It starts, as separate processes with embedded stores: a real `oakestra root`, one
//! `oakestra cluster`, an `oakestra hollow` whose nodes run the Instances (hollow
//! Instances get an address of their node's subnet and are reported `Running`, so they
//! are real endpoints), one containerd, and W real `oakestra worker`s, each in a network
//! namespace of its own (`onb-<pid>-w<k>`, removed at the end, also on error) with the
//! cluster's port relayed onto its loopback, `--overlay none` (the overlay is measured
//! by the `network` scenario). The workers run no Instance (the Services select the
//! hollow nodes): what they hold is the node's nftables table, which their network
//! controller (`netplane`) keeps from the cluster's `Endpoints`. Every check reads that
//! table with `nft` inside the worker's namespace, as a user would.
//!
//! 1. *Load*: the workers are Ready first (their resident memory then is the baseline),
//!    then S Services of 3 replicas each are created at the root, all at once. Measured:
//!    from the first create until the cluster's Endpoints hold every endpoint ready
//!    (placement, start, the endpoints controllers), and until every worker's table has
//!    every frontend with its 3 backends; each worker's memory then.
//! 2. *One endpoint change*: C times, one Instance (a different Service each time) is
//!    marked `Ready=False` at the cluster, as its agent reports a failed workload, and
//!    later `Ready=True` again. Measured: from just before the status write until the
//!    cluster's copy of the Service's Endpoints shows it (read every [`POLL`]), and
//!    until each worker's kernel commits the Service's frontend chain without (with)
//!    the Instance's backend (seen with `nft monitor`). Changes are [`GAP`] apart, so each
//!    is a lone change (the root's endpoints controller batches bursts to once a
//!    second, by design).
//! 3. *A node joins*: one more worker starts; measured from its start until its table is
//!    complete (registration, subnet, the caches' first lists, the first apply), and its
//!    memory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use client::{Api, Client, ListParams};
use crds::conditions::{instance_readiness, READY};
use crds::{set_condition, ConditionStatus, Endpoints, Instance, Phase};
use e2e::netns::{Netns, Relay};
use e2e::Oakestra;
use netplane::exec::Host;
use netplane::rules::{frontend_chain, Proto};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::procfs;
use crate::stats::{round3, Summary};

/// The target for one endpoint change, on every node.
const CHANGE_TARGET_MS: f64 = 1000.0;
/// How often the cluster's copy of the Endpoints is read while a change is awaited.
const POLL: Duration = Duration::from_millis(10);
/// How often a worker's table is counted while it fills (`nft -j list chains`, some
/// 50 ms of CPU at 2,000 Services: the resolution of the load and join figures).
const TABLE_POLL: Duration = Duration::from_millis(200);
/// Time between two endpoint changes.
const GAP: Duration = Duration::from_millis(1200);
/// A change not seen on a worker within this long counts as missed.
const CHANGE_BOUND: Duration = Duration::from_secs(10);
/// The port every Service's template exposes.
const PORT: u16 = 8080;
/// Instances per Service.
const REPLICAS: usize = 3;
/// What each hollow node offers and each Instance requests: at most 40 Instances per
/// node, within the 62 addresses of a node's /26.
const NODE_CPU: u64 = 4000;
const INSTANCE_CPU: u64 = 100;
/// The namespace of the Services.
const NAMESPACE: &str = "default";

pub struct Options {
    pub services: usize,
    pub workers: usize,
    /// Instances marked unready and ready again (two changes each).
    pub changes: usize,
    pub oakestra: Option<PathBuf>,
    /// Where stores and logs go (kept); a temp dir (removed) when `None`.
    pub work_dir: Option<PathBuf>,
    /// Bound on the load phase (placement of every Instance included).
    pub time_bound: Duration,
}

impl Options {
    /// 2,000 Services, 3 workers, 20 instances toggled; `quick`: 300, 2, 5.
    pub fn new(
        quick: bool,
        oakestra: Option<PathBuf>,
        work_dir: Option<PathBuf>,
        time_bound: Duration,
    ) -> Options {
        Options {
            services: if quick { 300 } else { 2000 },
            workers: if quick { 2 } else { 3 },
            changes: if quick { 5 } else { 20 },
            oakestra,
            work_dir,
            time_bound,
        }
    }
}

/// A worker's resident memory, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_kib: u64,
    pub peak_kib: u64,
}

pub struct Report {
    pub services: usize,
    pub workers: usize,
    pub hollow_nodes: usize,
    pub binary: PathBuf,
    /// First create → every endpoint ready in the cluster's Endpoints.
    pub endpoints_ready_s: f64,
    /// First create → each worker's table complete.
    pub tables_complete_s: Vec<f64>,
    /// Each worker before the Services (Ready, empty table), and with all of them.
    pub memory_idle: Vec<Memory>,
    pub memory_loaded: Vec<Memory>,
    /// One Instance's readiness written → the cluster's copy of its Endpoints shows it
    /// (both directions).
    pub change_at_cluster: Summary,
    /// One Instance unready → its backend gone from each worker's table.
    pub change_down: Summary,
    /// The same Instance ready again → its backend back.
    pub change_up: Summary,
    /// Changes the cluster's copy or some worker did not show within [`CHANGE_BOUND`]
    /// (one per copy and per worker).
    pub missed: usize,
    /// The late worker: start → table complete, and its memory then.
    pub join_s: f64,
    pub join_memory: Memory,
}

/// The processes of the run, dropped workers first, containerd last.
struct Lab {
    workers: Vec<Worker>,
    _hollow: Oakestra,
    _cluster: Oakestra,
    root: e2e::RootServer,
    cluster_client: Client,
    cluster_port: u16,
    upstream: e2e::Upstream,
    containerd: e2e::containers::Containerd,
    binary: PathBuf,
    prefix: String,
    dir: PathBuf,
}

/// One worker: the process, the relay of the cluster's port, its namespace (dropped in
/// that order).
struct Worker {
    name: String,
    process: Oakestra,
    _relay: Relay,
    ns: Netns,
}

impl Worker {
    fn host(&self) -> Host {
        Host::netns(self.ns.name())
    }

    fn table(&self) -> String {
        netplane::controller::Config::table_for(&self.name)
    }

    fn memory(&self) -> anyhow::Result<Memory> {
        let pid = self.process.pid().context("the worker is not running")?;
        Ok(Memory {
            rss_kib: procfs::rss_kib(pid)?,
            peak_kib: procfs::peak_rss_kib(pid)?,
        })
    }

    /// Frontend chains and backend chains in the worker's table (0, 0 before it exists).
    async fn chains(&self) -> (usize, usize) {
        // The chains of every `ip` table, without their rules: a fraction of the table.
        let Ok(listing) = self
            .host()
            .run("nft", &["-j", "list", "chains", "ip"])
            .await
        else {
            return (0, 0);
        };
        let Ok(listing) = serde_json::from_str::<Value>(&listing) else {
            return (0, 0);
        };
        let table = self.table();
        let names = listing["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|o| o["chain"]["table"].as_str() == Some(&table))
            .filter_map(|o| o["chain"]["name"].as_str());
        names.fold((0, 0), |(svc, ep), name| {
            (
                svc + usize::from(name.starts_with("svc-")),
                ep + usize::from(name.starts_with("ep-")),
            )
        })
    }
}

/// Each worker's memory now.
fn memories_of(workers: &[Worker]) -> anyhow::Result<Vec<Memory>> {
    workers.iter().map(Worker::memory).collect()
}

/// `nft monitor rules` in a worker's namespace: each rule the kernel commits there, read
/// as it is committed (a multicast of the kernel's, no polling: reading the table with
/// `nft list` fetches every rule of it, some 0.15 s of CPU at 2,000 Services, which
/// polling three workers would have spent on the same 2 cores it measures).
struct Monitor {
    /// The worker's table.
    table: String,
    _child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<(Instant, String)>,
}

impl Monitor {
    fn start(worker: &Worker) -> anyhow::Result<Monitor> {
        let mut child = tokio::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", worker.ns.name()))
            .args(["--", "nft", "monitor", "rules"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting nft monitor")?;
        let stdout = child.stdout.take().context("nft monitor's output")?;
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Ok(Monitor {
            table: worker.table(),
            _child: child,
            lines,
        })
    }

    /// Forget what was committed so far.
    fn clear(&mut self) {
        while self.lines.try_recv().is_ok() {}
    }

    /// How long after `written` a rule committed to `chain` of the table lists the backend
    /// `ip` as `listed` wants it (the frontend's chain is rewritten with its backends at
    /// each change); `None` after [`CHANGE_BOUND`].
    async fn until(
        &mut self,
        chain: &str,
        ip: std::net::Ipv4Addr,
        listed: bool,
        written: Instant,
    ) -> Option<Duration> {
        let rule = format!("add rule ip {} {chain} ", self.table);
        let backend = format!("-{ip}-{PORT}");
        let deadline = tokio::time::Instant::from_std(written + CHANGE_BOUND);
        loop {
            let (at, line) = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .ok()??;
            if line.starts_with(&rule) && line.contains(&backend) == listed {
                return Some(at.saturating_duration_since(written));
            }
        }
    }
}

pub async fn run(opts: &Options) -> anyhow::Result<Report> {
    anyhow::ensure!(
        opts.services > 0 && opts.workers > 0,
        "--services and the workers must be positive"
    );
    if let Some(why) = e2e::netns::unavailable(&["nft", "ip", "nsenter", "containerd"]) {
        anyhow::bail!("the endpoints scenario needs root and the kernel's pieces: {why}");
    }
    let (_temp, dir) = crate::run_dir(opts.work_dir.as_deref())?;
    let hollow_nodes = (opts.services * REPLICAS).div_ceil(30) + 1;
    let mut lab = start(opts, &dir, hollow_nodes).await?;
    let root = lab.root.client();
    for k in 0..opts.workers {
        let worker = start_worker(&lab, &format!("w{k}"))?;
        lab.workers.push(worker);
    }
    eprintln!(
        "endpoints: waiting for {hollow_nodes} hollow nodes and {} workers",
        opts.workers
    );
    wait_nodes_ready(&lab.cluster_client, hollow_nodes + opts.workers).await?;
    // The workers' tables exist (empty) once their network is ready.
    let memory_idle = memories_of(&lab.workers)?;

    eprintln!(
        "endpoints: creating {} Services of {REPLICAS} Instances",
        opts.services
    );
    let start = Instant::now();
    create_services(&root, opts.services).await?;
    let endpoints = wait_endpoints_ready(&lab.cluster_client, opts, start).await?;
    let endpoints_ready_s = start.elapsed().as_secs_f64();
    eprintln!("endpoints: every endpoint ready at the cluster after {endpoints_ready_s:.1} s");
    let mut tables_complete_s = Vec::new();
    for worker in &lab.workers {
        wait_table_complete(worker, opts.services, start + opts.time_bound).await?;
        tables_complete_s.push(start.elapsed().as_secs_f64());
    }
    let memory_loaded = memories_of(&lab.workers)?;

    eprintln!(
        "endpoints: {} Instances marked unready and ready again, one at a time",
        opts.changes
    );
    let (mut down, mut up, mut at_cluster, mut missed) = (Vec::new(), Vec::new(), Vec::new(), 0);
    let instances: Api<Instance> = lab.cluster_client.api(Some(NAMESPACE));
    let copies: Api<Endpoints> = lab.cluster_client.api(Some(NAMESPACE));
    let mut monitors = lab
        .workers
        .iter()
        .map(Monitor::start)
        .collect::<anyhow::Result<Vec<_>>>()?;
    for c in 0..opts.changes {
        // Spread over the Services (7919 is prime, so the picks differ).
        let target = &endpoints[(c * 7919) % endpoints.len()];
        for ready in [false, true] {
            tokio::time::sleep(GAP).await;
            monitors.iter_mut().for_each(Monitor::clear);
            let written = Instant::now();
            set_ready(&instances, &target.instance, ready).await?;
            let workers = futures::future::join_all(
                monitors
                    .iter_mut()
                    .map(|m| m.until(&target.chain, target.ip, ready, written)),
            );
            let (copied, seen) =
                futures::join!(until_copied(&copies, target, ready, written), workers);
            match copied {
                Some(took) => at_cluster.push(took),
                None => missed += 1,
            }
            for took in seen {
                match took {
                    Some(took) if ready => up.push(took),
                    Some(took) => down.push(took),
                    None => missed += 1,
                }
            }
        }
    }

    drop(monitors);
    eprintln!("endpoints: one more worker joins");
    let joined = Instant::now();
    let late = start_worker(&lab, "wjoin")?;
    wait_table_complete(&late, opts.services, joined + opts.time_bound).await?;
    let join_s = joined.elapsed().as_secs_f64();
    let join_memory = late.memory()?;
    lab.workers.push(late);
    let binary = lab.binary.clone();
    drop(lab);
    Ok(Report {
        services: opts.services,
        workers: opts.workers,
        hollow_nodes,
        binary,
        endpoints_ready_s,
        tables_complete_s,
        memory_idle,
        memory_loaded,
        change_at_cluster: Summary::of(&mut at_cluster),
        change_down: Summary::of(&mut down),
        change_up: Summary::of(&mut up),
        missed,
        join_s,
        join_memory,
    })
}

/// Root, cluster, hollow nodes and containerd; no workers yet.
async fn start(opts: &Options, dir: &Path, hollow_nodes: usize) -> anyhow::Result<Lab> {
    let (oakestra, dir) = (opts.oakestra.clone(), dir.to_path_buf());
    tokio::task::spawn_blocking(move || -> anyhow::Result<Lab> {
        let binary = crate::oakestra_binary(oakestra);
        let store = |name: &str| format!("embedded:{}", dir.join(name).display());
        let root = e2e::RootServer::start_binary(&binary, &store("root"), &dir, &[]);
        let cluster_port = e2e::free_port();
        let args = e2e::cluster_args(
            "c0",
            &root.upstream(),
            cluster_port,
            &dir,
            &["--heartbeat-seconds", "1"],
        );
        let cluster = Oakestra::start_binary(&binary, "c0", &args, Some(cluster_port), &dir);
        let kubeconfig = crate::cluster_kubeconfig(&dir, "c0");
        let hollow = crate::start_hollow(
            &binary,
            "hollow",
            &kubeconfig,
            (hollow_nodes, "h", 5),
            &["--cpu-millicores", &NODE_CPU.to_string()],
            &dir,
        );
        let containerd = e2e::containers::Containerd::start();
        let upstream =
            e2e::Upstream::cluster(&format!("https://127.0.0.1:{cluster_port}"), &dir, "c0");
        Ok(Lab {
            workers: Vec::new(),
            _hollow: hollow,
            _cluster: cluster,
            cluster_client: e2e::tier_client(&kubeconfig),
            root,
            cluster_port,
            upstream,
            containerd,
            binary,
            prefix: format!("onb-{}", std::process::id()),
            dir,
        })
    })
    .await
    .context("starting the processes")?
}

/// A worker `name` in a namespace of its own, joined to the cluster.
fn start_worker(lab: &Lab, name: &str) -> anyhow::Result<Worker> {
    let ns = Netns::create(&format!("{}-{name}", lab.prefix));
    let relay = ns.relay_loopback(lab.cluster_port);
    let socket = lab.containerd.socket.display().to_string();
    let extra = [
        "--address",
        "127.0.0.1",
        "--runtime",
        "containerd",
        "--containerd-socket",
        &socket,
        "--heartbeat-seconds",
        "2",
        "--overlay",
        "none",
    ];
    let args = e2e::worker_args(name, &lab.upstream, &lab.dir, &extra);
    let process = Oakestra::start_binary_in(&lab.binary, &ns, name, &args, &lab.dir);
    Ok(Worker {
        name: name.to_string(),
        process,
        _relay: relay,
        ns,
    })
}

/// Wait until the cluster has `count` Nodes `Ready`, those with a data plane also
/// `NetworkReady`.
async fn wait_nodes_ready(cluster: &Client, count: usize) -> anyhow::Result<()> {
    let nodes: Api<crds::Node> = cluster.api(None);
    let deadline = Instant::now() + Duration::from_secs(120 + count as u64 / 5);
    loop {
        let (items, _) = nodes.list(&ListParams::default()).await?;
        let ready = items
            .iter()
            .filter(|n| {
                let conditions = n.status.as_ref().map(|s| s.conditions.as_slice());
                let conditions = conditions.unwrap_or_default();
                let hollow = n.metadata.labels.contains_key("oakestra.io/hollow");
                crds::is_true(conditions, "Ready")
                    && (hollow || crds::is_true(conditions, "NetworkReady"))
            })
            .count();
        if ready == count {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {ready} of {count} nodes Ready (workers: NetworkReady too)"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Create `services` Services of [`REPLICAS`] Instances on the hollow nodes, all at once.
async fn create_services(root: &Client, services: usize) -> anyhow::Result<()> {
    let api = root.dynamic(
        crds::kind_by_name("services").expect("served"),
        Some(NAMESPACE),
    );
    let creates = (0..services).map(|s| {
        let service = json!({"apiVersion": "oakestra.io/v1", "kind": "Service",
            "metadata": {"name": service_name(s)},
            "spec": {"replicas": REPLICAS, "template": {"image": "bench",
                "ports": [{"containerPort": PORT}],
                "resources": {"cpuMillicores": INSTANCE_CPU, "memoryMiB": 16},
                "placement": {"nodeSelector": {"oakestra.io/hollow": "true"}}}}});
        let api = api.clone();
        async move { api.create(&service).await }
    });
    for created in futures::future::join_all(creates).await {
        created.context("creating a Service")?;
    }
    Ok(())
}

fn service_name(s: usize) -> String {
    format!("svc-{s:05}")
}

/// One endpoint a change picks: the Instance, its address and its Service's frontend
/// chain.
struct Target {
    service: String,
    instance: String,
    ip: std::net::Ipv4Addr,
    chain: String,
}

/// Wait until every Service's Endpoints at the cluster has [`REPLICAS`] ready entries;
/// then the first entry of each, sorted by Service.
async fn wait_endpoints_ready(
    cluster: &Client,
    opts: &Options,
    start: Instant,
) -> anyhow::Result<Vec<Target>> {
    let api: Api<Endpoints> = cluster.api(Some(NAMESPACE));
    let mut progress = Instant::now();
    loop {
        let (items, _) = api.list(&ListParams::default()).await?;
        let complete: Vec<&Endpoints> = items
            .iter()
            .filter(|e| e.spec.round_robin_ip.is_some() && e.ready().count() == REPLICAS)
            .collect();
        if complete.len() == opts.services {
            let mut targets: Vec<Target> = complete
                .iter()
                .map(|e| {
                    let first = e.ready().next().expect("three ready");
                    Target {
                        service: e.metadata.name.clone(),
                        instance: first.instance.clone(),
                        ip: first.ip,
                        chain: frontend_chain(
                            NAMESPACE,
                            &e.metadata.name,
                            e.spec.round_robin_ip.expect("filtered"),
                            Proto::Tcp,
                            PORT,
                        ),
                    }
                })
                .collect();
            targets.sort_by(|a, b| a.chain.cmp(&b.chain));
            return Ok(targets);
        }
        anyhow::ensure!(
            start.elapsed() < opts.time_bound,
            "after {:?}: {} of {} Services have {REPLICAS} ready endpoints at the cluster",
            opts.time_bound,
            complete.len(),
            opts.services
        );
        if progress.elapsed() > Duration::from_secs(10) {
            progress = Instant::now();
            eprintln!(
                "endpoints: after {:>4.0} s: {} of {} Services with every endpoint ready",
                start.elapsed().as_secs_f64(),
                complete.len(),
                opts.services
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Wait until `worker`'s table has `services` frontends with [`REPLICAS`] backends each.
async fn wait_table_complete(
    worker: &Worker,
    services: usize,
    deadline: Instant,
) -> anyhow::Result<()> {
    loop {
        let (frontends, backends) = worker.chains().await;
        if frontends == services && backends == REPLICAS * services {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "worker {}'s table has {frontends} frontends and {backends} backends, not {services} and {}; its log:\n{}",
            worker.name,
            REPLICAS * services,
            worker.process.log().lines().rev().take(20).collect::<Vec<_>>().join("\n")
        );
        tokio::time::sleep(TABLE_POLL).await;
    }
}

/// Mark `instance` at the cluster `Ready` or not, as its agent would (a conflict with
/// another writer is retried).
async fn set_ready(api: &Api<Instance>, instance: &str, ready: bool) -> anyhow::Result<()> {
    loop {
        let current = api.get(instance).await?;
        let mut conditions = current
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        let (status, reason, message) = if ready {
            instance_readiness(Phase::Running, "")
        } else {
            (
                ConditionStatus::False,
                "OakbenchUnready",
                "marked unready by oakbench".to_string(),
            )
        };
        set_condition(
            &mut conditions,
            READY,
            status,
            reason,
            &message,
            chrono::Utc::now(),
        );
        let patch = json!({
            "metadata": {"resourceVersion": current.metadata.resource_version},
            "status": {"conditions": conditions},
        });
        match api.patch_status(instance, &patch).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e).context("writing the Instance's readiness"),
        }
    }
}

/// How long after `written` the cluster's copy of `target`'s Endpoints shows its entry
/// `ready` as wanted (read every [`POLL`]); `None` after [`CHANGE_BOUND`].
async fn until_copied(
    copies: &Api<Endpoints>,
    target: &Target,
    ready: bool,
    written: Instant,
) -> Option<Duration> {
    while written.elapsed() < CHANGE_BOUND {
        let copy = copies.get(&target.service).await.ok()?;
        let entry = copy
            .spec
            .endpoints
            .iter()
            .find(|e| e.instance == target.instance);
        if entry.is_some_and(|e| e.ready == ready) {
            return Some(written.elapsed());
        }
        tokio::time::sleep(POLL).await;
    }
    None
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn print(r: &Report) {
    println!(
        "\nendpoints: {} Services × {REPLICAS} endpoints on {} hollow nodes, {} real workers \
         (each in its own namespace, --overlay none), binary {}",
        r.services,
        r.hollow_nodes,
        r.workers,
        r.binary.display()
    );
    println!(
        "  created → every endpoint ready at the cluster: {:.1} s (placement and start of {} Instances included)",
        r.endpoints_ready_s,
        r.services * REPLICAS
    );
    println!(
        "  created → each worker's table complete: {} s",
        r.tables_complete_s
            .iter()
            .map(|s| format!("{s:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  one endpoint change: its status written → the cluster's Endpoints copy (read every {} ms); \
         → committed to each worker's table (`nft monitor`; target p99 ≤ {CHANGE_TARGET_MS:.0} ms):",
        POLL.as_millis()
    );
    println!(
        "  {:<10} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "change", "samples", "mean ms", "p50 ms", "p99 ms", "max ms"
    );
    for (label, s) in [
        ("at cluster", &r.change_at_cluster),
        ("unready", &r.change_down),
        ("ready", &r.change_up),
    ] {
        println!(
            "  {:<10} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            label, s.count, s.mean_ms, s.p50_ms, s.p99_ms, s.max_ms
        );
    }
    if r.missed > 0 {
        println!(
            "  {} changes not seen within {:?} at the cluster or on some worker",
            r.missed, CHANGE_BOUND
        );
    }
    println!(
        "  worker memory (RSS / peak MiB): before the Services {}; with them {}",
        memories(&r.memory_idle),
        memories(&r.memory_loaded)
    );
    println!(
        "  a worker joining: started → table complete in {:.1} s, then {:.1} / {:.1} MiB",
        r.join_s,
        mib(r.join_memory.rss_kib),
        mib(r.join_memory.peak_kib)
    );
}

fn memories(m: &[Memory]) -> String {
    m.iter()
        .map(|m| format!("{:.1} / {:.1}", mib(m.rss_kib), mib(m.peak_kib)))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn to_json(r: &Report) -> Value {
    let memory = |m: &[Memory]| -> Value {
        m.iter()
            .map(|m| json!({"rss_kib": m.rss_kib, "peak_kib": m.peak_kib}))
            .collect()
    };
    json!({
        "services": r.services,
        "endpoints": r.services * REPLICAS,
        "workers": r.workers,
        "hollow_nodes": r.hollow_nodes,
        "binary": r.binary.display().to_string(),
        "endpoints_ready_s": round3(r.endpoints_ready_s),
        "tables_complete_s": r.tables_complete_s.iter().map(|s| round3(*s)).collect::<Vec<_>>(),
        "memory_idle": memory(&r.memory_idle),
        "memory_loaded": memory(&r.memory_loaded),
        "change_at_cluster": r.change_at_cluster.to_json(),
        "change_unready": r.change_down.to_json(),
        "change_ready": r.change_up.to_json(),
        "change_target_p99_ms": CHANGE_TARGET_MS,
        "missed": r.missed,
        "join_s": round3(r.join_s),
        "join_memory": {"rss_kib": r.join_memory.rss_kib, "peak_kib": r.join_memory.peak_kib},
        "poll_ms": POLL.as_millis() as u64,
    })
}
