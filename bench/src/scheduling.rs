//! Scenario `scheduling`: scheduling at scale over hollow nodes (issue #5, scenario 3),
//! and the footprint of root, cluster and hollow-node processes under that load.
//!
//! It starts, as separate processes with embedded stores in one directory: a real
//! `oakestra root` (with its controllers), C `oakestra cluster`s registered at it, and
//! for each cluster one `oakestra hollow` simulating N nodes (`agent::hollow`). Once
//! every cluster is Ready at the root with N Ready nodes, it creates S Services whose
//! replicas add up to the requested Instances, all at once, and watches Instances:
//!
//! - at the root: created (first seen), placed (`spec.cluster` set by root placement),
//!   bound (`spec.node`, which cluster sync copies up from the cluster) and Running
//!   (`status.phase`, which the hollow node writes in the cluster and cluster sync
//!   copies up);
//! - at each cluster: bound (`spec.node` set by that cluster's scheduler), i.e. the
//!   binding itself, before cluster sync reports it to the root.
//!
//! Every time is when `oakbench` received the event, relative to the Instance's
//! creation as seen at the root. Meanwhile it samples, once a second, the resident
//! memory and CPU of the root, of the first cluster and of the first hollow process
//! (and the CPU of all clusters and all hollow processes together).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use client::{Client, ListParams, WatchEvent};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::procfs;
use crate::stats::{ms, round3, Summary};

pub struct Options {
    pub clusters: usize,
    pub nodes_per_cluster: usize,
    pub instances: usize,
    pub services: usize,
    /// Seconds between two heartbeats of one hollow node.
    pub heartbeat_seconds: u64,
    pub oakestra: Option<PathBuf>,
    /// Where stores and logs go (kept); a temp dir (removed) when `None`.
    pub work_dir: Option<PathBuf>,
    pub time_bound: Duration,
    /// How long the fleet's CPU is measured at rest (all nodes Ready, nothing to
    /// schedule) before the burst, and how long it first settles (the first heartbeats
    /// write each node's status until the cluster has assigned its subnet).
    pub idle_for: Duration,
    pub settle_for: Duration,
}

/// A milestone of one Instance, as a watch saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mark {
    Created,
    Placed,
    BoundAtCluster,
    BoundAtRoot,
    Running,
}

const MARKS: [Mark; 5] = [
    Mark::Created,
    Mark::Placed,
    Mark::BoundAtCluster,
    Mark::BoundAtRoot,
    Mark::Running,
];

impl Mark {
    fn label(self) -> &'static str {
        match self {
            Mark::Created => "created",
            Mark::Placed => "placed",
            Mark::BoundAtCluster => "bound (cluster)",
            Mark::BoundAtRoot => "bound (root)",
            Mark::Running => "running (root)",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Mark::Created => "created",
            Mark::Placed => "placed",
            Mark::BoundAtCluster => "bound_at_cluster",
            Mark::BoundAtRoot => "bound_at_root",
            Mark::Running => "running",
        }
    }
}

/// Resident memory and CPU of one process (or, for CPU, a group) over the burst.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub role: String,
    pub rss_peak_kib: u64,
    pub rss_mean_kib: u64,
    /// CPU as a share of one core: mean over the burst, and the busiest 1 s sample.
    pub cpu_mean: f64,
    pub cpu_peak: f64,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub binary: PathBuf,
    /// CPUs of the machine.
    pub cpus: usize,
    pub clusters: usize,
    pub nodes_per_cluster: usize,
    pub instances: usize,
    pub services: usize,
    pub setup: Duration,
    /// Per milestone: how many Instances reached it, and when the last one did
    /// (from the first Service create), if all did.
    pub reached: Vec<(Mark, usize, Option<Duration>)>,
    /// Per milestone after creation: creation → milestone.
    pub latency: Vec<(Mark, Summary)>,
    /// Instances bound at a cluster in each second after the first Service create.
    pub bound_per_second: Vec<usize>,
    pub usage: Vec<Usage>,
    /// CPU of the whole fleet (root, clusters, hollow processes) in cores: at rest,
    /// and during the burst.
    pub idle_fleet_cores: f64,
    pub burst_fleet_cores: f64,
    /// How long the burst was sampled.
    pub burst_seconds: f64,
    pub other_load_cores: Option<f64>,
    pub loadavg_start: Option<f64>,
    pub watch_restarts: usize,
    /// Per API (root, cluster c0): requests and storage operations during the burst,
    /// as (labels, count, mean ms), busiest first.
    pub api_load: Vec<ApiLoad>,
    /// The cheapest durable write at the root, measured after the burst.
    pub write_floor: Option<WriteFloor>,
    /// Targets given more than they have, counted after the burst.
    pub commitment: Option<Commitment>,
}

/// What [`commitment`] found: how many targets, and which got more than they have.
#[derive(Debug, Clone, Default)]
pub struct Commitment {
    pub clusters: usize,
    pub clusters_over: Vec<String>,
    pub nodes: usize,
    pub nodes_over: Vec<String>,
}

/// Creates of empty Namespaces through the root's HTTP API, measured after the burst
/// with the fleet at rest again: what one durable write costs the root's CPU in this
/// run, on this machine. Multiplied by the writes an Instance takes, it estimates the
/// share of the CPU per Instance that no scheduling code removes without fewer writes
/// (an estimate, not a bound: the controllers' own writes skip HTTP, Events are
/// committed lazily, and an Instance is a larger object than an empty Namespace).
#[derive(Debug, Clone)]
pub struct WriteFloor {
    pub creates: usize,
    pub concurrency: usize,
    pub per_second: f64,
    /// The root's CPU per create beyond its CPU at rest, in µs.
    pub root_cpu_us: f64,
}

#[derive(Debug, Clone)]
pub struct ApiLoad {
    pub api: String,
    pub requests: Vec<(String, f64, f64)>,
    pub storage: Vec<(String, f64, f64)>,
    /// Requests the Instances caused that were answered 409 Conflict (a write at a
    /// stale version, or an apply that met another manager's field), by verb and
    /// resource: each one costs its writer a read and another write.
    pub conflicts: Vec<(String, f64)>,
}

/// The resources whose writes the Instances cause ([`ApiLoad::instance_writes`]).
const CAUSED: [&str; 3] = ["instances", "events", "services"];

/// Requests on [`CAUSED`] resources (and their subresources) answered 409 between two
/// scrapes of a server's `/metrics`, by their labels (verb and resource).
fn conflicts(before: &str, after: &str) -> Vec<(String, f64)> {
    let name = format!("{}requests_total", crate::prom::PREFIX);
    let caused = |labels: &str| {
        labels.contains("code=\"409\"")
            && CAUSED
                .iter()
                .any(|r| labels.contains(&format!("resource=\"{r}")))
    };
    crate::prom::counter_deltas(before, after, &name, caused)
        .into_iter()
        .map(|(labels, n)| (labels.replace(",code=\"409\"", ""), n))
        .collect()
}

impl ApiLoad {
    /// Writes the Instances caused (their creates, bindings, status and spec updates,
    /// Events; their Services and the Services' status), leaving out the heartbeats
    /// (Leases, Node and Cluster status), which go on at rest too.
    fn instance_writes(&self) -> f64 {
        let write = ["create", "update", "patch", "delete"].map(|v| format!("verb=\"{v}\""));
        let caused = CAUSED.map(|r| format!("resource=\"{r}"));
        self.requests
            .iter()
            .filter(|(labels, _, _)| {
                write.iter().any(|w| labels.contains(w.as_str()))
                    && caused.iter().any(|r| labels.contains(r.as_str()))
            })
            .map(|r| r.1)
            .sum()
    }

    /// Instances created in this API during the burst.
    fn instance_creates(&self) -> f64 {
        self.requests
            .iter()
            .filter(|(labels, _, _)| labels == "verb=\"create\",resource=\"instances\"")
            .map(|r| r.1)
            .sum()
    }
}

impl Report {
    fn all_after(&self, mark: Mark) -> Option<Duration> {
        self.reached.iter().find(|r| r.0 == mark).and_then(|r| r.2)
    }

    /// Instances placed and bound per second: all Instances / time until all were bound
    /// in their clusters.
    pub fn bound_rate(&self) -> Option<f64> {
        self.all_after(Mark::BoundAtCluster)
            .map(|d| self.instances as f64 / d.as_secs_f64())
    }

    /// CPU milliseconds the fleet spent per bound Instance beyond its CPU at rest
    /// (heartbeats and reports go on during the burst; this is what scheduling added).
    /// `None` when the fleet kept most of the machine busy already at rest: then the
    /// burst can only take CPU from the heartbeats, and the difference means nothing.
    pub fn cpu_ms_per_instance(&self) -> Option<f64> {
        if self.idle_fleet_cores > 0.75 * self.cpus as f64 {
            return None;
        }
        let bound = self.reached.iter().find(|r| r.0 == Mark::BoundAtCluster)?.1;
        (bound > 0).then(|| {
            (self.burst_fleet_cores - self.idle_fleet_cores).max(0.0) * self.burst_seconds
                / bound as f64
                * 1e3
        })
    }

    /// API writes per Instance: at the root (per Instance of the run) and at cluster c0
    /// (per Instance it received).
    pub fn writes_per_instance(&self) -> Option<(f64, f64)> {
        self.per_instance(ApiLoad::instance_writes)
    }

    /// Requests answered 409 per Instance, counted as [`Report::writes_per_instance`].
    pub fn conflicts_per_instance(&self) -> Option<(f64, f64)> {
        self.per_instance(|load| load.conflicts.iter().fold(0.0, |all, c| all + c.1))
    }

    /// `count` of the root's load per Instance of the run, and of cluster c0's per
    /// Instance it received.
    fn per_instance(&self, count: impl Fn(&ApiLoad) -> f64) -> Option<(f64, f64)> {
        let [root, cluster, ..] = self.api_load.as_slice() else {
            return None;
        };
        let received = cluster.instance_creates();
        (self.instances > 0 && received > 0.0).then(|| {
            (
                count(root) / self.instances as f64,
                count(cluster) / received,
            )
        })
    }

    /// CPU ms per Instance its writes alone take: writes per Instance (root and
    /// cluster) × the root's CPU per bare create.
    pub fn write_floor_ms_per_instance(&self) -> Option<f64> {
        let (root, cluster) = self.writes_per_instance()?;
        Some((root + cluster) * self.write_floor.as_ref()?.root_cpu_us / 1e3)
    }
}

/// The processes of a run; dropping it kills them all.
struct Fleet {
    root: e2e::RootServer,
    clusters: Vec<e2e::Oakestra>,
    /// An administrator's client of each cluster, in the order of `clusters`.
    cluster_apis: Vec<Client>,
    hollows: Vec<e2e::Oakestra>,
    nodes_per_hollow: usize,
}

pub async fn run(opts: &Options) -> anyhow::Result<Report> {
    anyhow::ensure!(
        opts.clusters > 0 && opts.nodes_per_cluster > 0 && opts.services > 0,
        "--clusters, --nodes-per-cluster and --services must be positive"
    );
    let (_temp, dir) = crate::run_dir(opts.work_dir.as_deref())?;
    if let Some(binary) = &opts.oakestra {
        anyhow::ensure!(binary.is_file(), "{} does not exist", binary.display());
    }
    let setup_start = Instant::now();
    let fleet = start_fleet(opts, &dir).await?;
    let binary = fleet.root.binary.clone();
    let root = fleet.root.client();
    eprintln!(
        "scheduling: waiting for {} clusters with {} Ready nodes each",
        opts.clusters, opts.nodes_per_cluster
    );
    wait_clusters_ready(&root, opts, &fleet).await?;
    let setup = setup_start.elapsed();
    eprintln!("scheduling: ready after {:.1} s", setup.as_secs_f64());

    // Watches first, then the burst.
    let (tx, mut rx) = mpsc::unbounded_channel::<(Mark, String, Instant)>();
    let restarts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut watchers = vec![tokio::spawn(follow(
        root.clone(),
        Side::Root,
        tx.clone(),
        restarts.clone(),
    ))];
    for c in &fleet.cluster_apis {
        watchers.push(tokio::spawn(follow(
            c.clone(),
            Side::Cluster,
            tx.clone(),
            restarts.clone(),
        )));
    }
    drop(tx);
    // Let the watches open before the first create.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let loadavg_start = procfs::loadavg();
    // What the fleet costs at rest (heartbeats, Lease renewals, cluster reports), so
    // that what the burst adds can be told apart.
    tokio::time::sleep(opts.settle_for).await;
    let idle = Sampler::start(&fleet);
    tokio::time::sleep(opts.idle_for).await;
    let idle = idle.stop(&fleet);
    eprintln!(
        "scheduling: at rest the fleet uses {:.2} cores",
        idle.fleet_cores
    );
    // The API's request counts cover the burst only (taken after the rest phases).
    let scraped = [&root, &fleet.cluster_apis[0]];
    let mut metrics_before = Vec::new();
    for api in scraped {
        metrics_before.push(crate::prom::scrape(api).await.unwrap_or_default());
    }
    let sampler = Sampler::start(&fleet);
    let services = root.dynamic(
        crds::kind_by_name("services").expect("served"),
        Some("default"),
    );
    let start = Instant::now();
    let creates = (0..opts.services).map(|s| {
        let replicas =
            opts.instances / opts.services + usize::from(s < opts.instances % opts.services);
        let service = json!({"apiVersion": "oakestra.io/v1", "kind": "Service",
            "metadata": {"name": format!("burst-{s}")},
            "spec": {"replicas": replicas, "template": {"image": "bench",
                "resources": {"cpuMillicores": 10, "memoryMiB": 16}}}});
        let services = services.clone();
        async move { services.create(&service).await }
    });
    for created in futures::future::join_all(creates).await {
        created.context("creating a Service")?;
    }
    eprintln!(
        "scheduling: {} Services of {} Instances in all created after {:.2} s",
        opts.services,
        opts.instances,
        start.elapsed().as_secs_f64()
    );

    let mut seen: HashMap<Mark, HashMap<String, Instant>> = HashMap::new();
    let mut all_after: HashMap<Mark, Duration> = HashMap::new();
    let deadline = start + opts.time_bound;
    let mut progress = Instant::now();
    while all_after.len() < MARKS.len() {
        let next = tokio::time::timeout_at(deadline.into(), rx.recv()).await;
        let Ok(Some((mark, name, at))) = next else {
            break;
        };
        let marks = seen.entry(mark).or_default();
        marks.entry(name).or_insert(at);
        if marks.len() == opts.instances {
            all_after.entry(mark).or_insert(at - start);
        }
        if progress.elapsed() > Duration::from_secs(10) {
            progress = Instant::now();
            eprintln!(
                "scheduling: after {:>4.0} s: {}",
                start.elapsed().as_secs_f64(),
                MARKS
                    .iter()
                    .map(|m| format!(
                        "{} {}",
                        m.label(),
                        seen.get(m).map(HashMap::len).unwrap_or(0)
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let usage = sampler.stop(&fleet);
    let mut api_load = Vec::new();
    for ((client, before), api) in scraped
        .iter()
        .zip(&metrics_before)
        .zip(["root", "cluster c0"])
    {
        let after = crate::prom::scrape(client).await.unwrap_or_default();
        api_load.push(ApiLoad {
            api: api.to_string(),
            requests: crate::prom::deltas(before, &after, "request_duration_seconds"),
            storage: crate::prom::deltas(before, &after, "storage_duration_seconds"),
            conflicts: conflicts(before, &after),
        });
    }
    for w in watchers {
        w.abort();
    }
    // Let the last status reports settle, then the floor, with the fleet at rest.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let commitment = match commitment(&root, &fleet.cluster_apis).await {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("scheduling: the bound requests were not counted: {e:#}");
            None
        }
    };
    let root_at_rest = idle.usage.first().map_or(0.0, |u| u.cpu_mean);
    let floor_creates = opts.instances.clamp(200, 2000);
    let write_floor = match write_floor(
        &root,
        fleet.root.pid(),
        root_at_rest,
        floor_creates,
        opts.time_bound,
    )
    .await
    {
        Ok(floor) => Some(floor),
        Err(e) => {
            eprintln!("scheduling: the write floor was not measured: {e:#}");
            None
        }
    };
    let empty = HashMap::new();
    let created = seen.get(&Mark::Created).unwrap_or(&empty);
    let reached = MARKS
        .iter()
        .map(|m| {
            (
                *m,
                seen.get(m).map(HashMap::len).unwrap_or(0),
                all_after.get(m).copied(),
            )
        })
        .collect();
    let latency = MARKS[1..]
        .iter()
        .map(|m| {
            let mut samples: Vec<Duration> = seen
                .get(m)
                .unwrap_or(&empty)
                .iter()
                .filter_map(|(n, t)| Some(t.saturating_duration_since(*created.get(n)?)))
                .collect();
            (*m, Summary::of(&mut samples))
        })
        .collect();
    let mut bound_per_second = Vec::new();
    for t in seen.get(&Mark::BoundAtCluster).unwrap_or(&empty).values() {
        let s = t.saturating_duration_since(start).as_secs() as usize;
        if bound_per_second.len() <= s {
            bound_per_second.resize(s + 1, 0);
        }
        bound_per_second[s] += 1;
    }
    drop(fleet);
    Ok(Report {
        binary,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        clusters: opts.clusters,
        nodes_per_cluster: opts.nodes_per_cluster,
        instances: opts.instances,
        services: opts.services,
        setup,
        reached,
        latency,
        bound_per_second,
        other_load_cores: usage.other,
        idle_fleet_cores: idle.fleet_cores,
        burst_fleet_cores: usage.fleet_cores,
        burst_seconds: usage.seconds,
        usage: usage.usage,
        loadavg_start,
        watch_restarts: restarts.load(std::sync::atomic::Ordering::Relaxed),
        api_load,
        write_floor,
        commitment,
    })
}

/// Count, after the burst, the requests bound to every target against what it has:
/// the Instances placed on each cluster (at the root) against the cluster's capacity,
/// those bound to each node (at its cluster) against the node's. A decision that
/// over-commits under the burst shows here.
async fn commitment(root: &Client, clusters: &[Client]) -> anyhow::Result<Commitment> {
    let (clusters_count, clusters_over) = over_at::<crds::Cluster>(
        root,
        |c| c.status.as_ref()?.capacity.as_ref(),
        |i| i.spec.cluster.as_ref(),
    )
    .await?;
    let mut out = Commitment {
        clusters: clusters_count,
        clusters_over,
        ..Default::default()
    };
    for api in clusters {
        let (nodes, over) = over_at::<crds::Node>(
            api,
            |n| n.status.as_ref()?.capacity.as_ref(),
            |i| i.spec.node.as_ref(),
        )
        .await?;
        out.nodes += nodes;
        out.nodes_over.extend(over);
    }
    Ok(out)
}

/// At the API of `client`: how many targets of kind `T` there are, and those whose
/// Instances (bound to them by `target_of`) ask for more than `capacity_of` says they
/// have.
async fn over_at<T: crds::Resource>(
    client: &Client,
    capacity_of: impl Fn(&T) -> Option<&crds::Capacity>,
    target_of: impl Fn(&crds::Instance) -> Option<&String>,
) -> anyhow::Result<(usize, Vec<String>)> {
    let (targets, _) = client.api::<T>(None).list(&ListParams::default()).await?;
    let (instances, _) = client
        .api::<crds::Instance>(None)
        .list(&ListParams::default())
        .await?;
    let capacity: HashMap<String, (u64, u64)> = targets
        .iter()
        .map(|t| {
            let c = capacity_of(t).map_or((0, 0), |c| (c.cpu_millicores, c.memory_mib));
            (t.metadata().name.clone(), c)
        })
        .collect();
    let bound = instances
        .iter()
        .filter_map(|i| Some((target_of(i)?.clone(), &i.spec.template.resources)));
    Ok((capacity.len(), over_committed(&capacity, bound)))
}

/// The targets (of `capacity`: CPU millicores and MiB) whose `bound` requests add up to
/// more than they have. Pure.
fn over_committed<'a>(
    capacity: &HashMap<String, (u64, u64)>,
    bound: impl Iterator<Item = (String, &'a crds::Resources)>,
) -> Vec<String> {
    let mut sums: HashMap<String, (u64, u64)> = HashMap::new();
    for (target, r) in bound {
        let sum = sums.entry(target).or_default();
        sum.0 += r.cpu_millicores;
        sum.1 += r.memory_mib;
    }
    let mut over: Vec<String> = sums
        .into_iter()
        .filter(|(t, (cpu, mem))| {
            let (has_cpu, has_mem) = capacity.get(t).copied().unwrap_or_default();
            *cpu > has_cpu || *mem > has_mem
        })
        .map(|(t, _)| t)
        .collect();
    over.sort();
    over
}

/// Measure [`WriteFloor`]: `count` creates of empty Namespaces at concurrency 64 (the
/// fastest in `api-writes`) through the root's HTTP API, after `2 × 64` unmeasured ones
/// to open the connections; `root_at_rest` is the root's CPU at rest, in cores.
pub(crate) async fn write_floor(
    root: &Client,
    root_pid: Option<u32>,
    root_at_rest: f64,
    count: usize,
    time_bound: Duration,
) -> anyhow::Result<WriteFloor> {
    const CONCURRENCY: usize = 64;
    let namespaces = root.dynamic(crds::kind_by_name("namespaces").context("served")?, None);
    let create = |prefix: &'static str| {
        let namespaces = namespaces.clone();
        move |i: usize| {
            let namespaces = namespaces.clone();
            async move {
                let namespace = json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": format!("oakbench-{prefix}-{i}")}});
                namespaces
                    .create(&namespace)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        }
    };
    let warm =
        crate::api_writes::drive(2 * CONCURRENCY, CONCURRENCY, time_bound, create("warm")).await;
    anyhow::ensure!(
        warm.errors == 0,
        "warm-up: {}",
        warm.first_error.unwrap_or_default()
    );
    let before = procfs::CpuSample::take(root_pid);
    let measured = crate::api_writes::drive(count, CONCURRENCY, time_bound, create("floor")).await;
    let spent = procfs::CpuSample::take(root_pid).since(&before);
    anyhow::ensure!(
        measured.errors == 0,
        "{}",
        measured.first_error.unwrap_or_default()
    );
    let created = measured.latencies.len();
    let seconds = measured.elapsed.as_secs_f64().max(1e-9);
    let root_cpu = spent
        .other_process
        .context("the root's CPU time is not readable")?;
    Ok(WriteFloor {
        creates: created,
        concurrency: CONCURRENCY,
        per_second: created as f64 / seconds,
        root_cpu_us: (root_cpu - root_at_rest * seconds).max(0.0) / created.max(1) as f64 * 1e6,
    })
}

async fn start_fleet(opts: &Options, dir: &Path) -> anyhow::Result<Fleet> {
    let (oakestra, dir) = (opts.oakestra.clone(), dir.to_path_buf());
    let (clusters, nodes, heartbeat) = (
        opts.clusters,
        opts.nodes_per_cluster,
        opts.heartbeat_seconds,
    );
    tokio::task::spawn_blocking(move || {
        let binary = crate::oakestra_binary(oakestra);
        let store = |name: &str| format!("embedded:{}", dir.join(name).display());
        let root = e2e::RootServer::start_binary(&binary, &store("root"), &dir, &[]);
        let mut cluster_processes = Vec::new();
        let mut cluster_apis = Vec::new();
        let mut hollows = Vec::new();
        for c in 0..clusters {
            let port = e2e::free_port();
            let name = format!("c{c}");
            // A node is NotReady after three missed heartbeats (at least the default
            // 20 s), so a slow heartbeat setting does not lose nodes.
            let timeout = (3 * heartbeat).max(20).to_string();
            let args = e2e::cluster_args(
                &name,
                &root.upstream(),
                port,
                &dir,
                &["--node-heartbeat-timeout-seconds", &timeout],
            );
            let cluster = e2e::Oakestra::start_binary(&binary, &name, &args, Some(port), &dir);
            let kubeconfig = crate::cluster_kubeconfig(&dir, &name);
            hollows.push(crate::start_hollow(
                &binary,
                &format!("{name}-hollow"),
                &kubeconfig,
                (nodes, &format!("{name}-n"), heartbeat),
                &[],
                &dir,
            ));
            cluster_processes.push(cluster);
            cluster_apis.push(e2e::tier_client(&kubeconfig));
        }
        Fleet {
            root,
            clusters: cluster_processes,
            cluster_apis,
            hollows,
            nodes_per_hollow: nodes,
        }
    })
    .await
    .context("starting the processes")
}

/// Wait until every cluster is Ready at the root and reports all its nodes Ready.
async fn wait_clusters_ready(root: &Client, opts: &Options, fleet: &Fleet) -> anyhow::Result<()> {
    let clusters = root.api::<crds::Cluster>(None);
    let deadline = Instant::now() + Duration::from_secs(120 + opts.nodes_per_cluster as u64 / 5);
    loop {
        let (list, _) = clusters.list(&ListParams::default()).await?;
        let ready = list
            .iter()
            .filter(|c| {
                let Some(s) = c.status.as_ref() else {
                    return false;
                };
                crds::is_true(&s.conditions, "Ready")
                    && s.allocatable.as_ref().map(|a| a.nodes)
                        == Some(opts.nodes_per_cluster as u32)
            })
            .count();
        if ready == opts.clusters {
            return Ok(());
        }
        if Instant::now() > deadline {
            let logs: String = fleet
                .hollows
                .iter()
                .take(1)
                .map(|h| h.log())
                .collect::<String>();
            anyhow::bail!(
                "only {ready} of {} clusters Ready with {} nodes; first hollow log:\n{}",
                opts.clusters,
                opts.nodes_per_cluster,
                logs.lines().rev().take(20).collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[derive(Clone, Copy)]
enum Side {
    Root,
    Cluster,
}

/// List and watch Instances at one API, sending each milestone the first time an
/// object shows it (the receiver keeps the first). On a watch error or end it lists
/// again: what the list shows is marked at the time of the list.
async fn follow(
    client: Client,
    side: Side,
    tx: mpsc::UnboundedSender<(Mark, String, Instant)>,
    restarts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let api = client.dynamic(
        crds::kind_by_name("instances").expect("served"),
        Some("default"),
    );
    let send = |object: &Value| {
        let now = Instant::now();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let spec = &object["spec"];
        let mut marks = Vec::new();
        match side {
            Side::Root => {
                marks.push(Mark::Created);
                if spec["cluster"].is_string() {
                    marks.push(Mark::Placed);
                }
                if spec["node"].is_string() {
                    marks.push(Mark::BoundAtRoot);
                }
                if object["status"]["phase"] == "Running" {
                    marks.push(Mark::Running);
                }
            }
            Side::Cluster => {
                if spec["node"].is_string() {
                    marks.push(Mark::BoundAtCluster);
                }
            }
        }
        for m in marks {
            let _ = tx.send((m, name.clone(), now));
        }
    };
    loop {
        let Ok((items, version)) = api.list_all(&ListParams::default()).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        items.iter().for_each(send);
        let params = ListParams {
            resource_version: Some(version),
            ..Default::default()
        };
        if let Ok(mut events) = api.watch(&params).await {
            while let Some(Ok(event)) = events.next().await {
                if let WatchEvent::Added(o) | WatchEvent::Modified(o) = event {
                    send(&o);
                }
            }
        }
        if tx.is_closed() {
            return;
        }
        restarts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Reads one CPU counter (seconds) out of a sample.
type CpuOf = dyn Fn(&Sample) -> f64;

/// What a [`Sampler`] measured.
struct Measured {
    usage: Vec<Usage>,
    /// The rest of the machine's load, in cores.
    other: Option<f64>,
    /// Root, clusters and hollow processes together, in cores.
    fleet_cores: f64,
    seconds: f64,
}

/// Samples RSS and CPU of the watched processes once a second in a thread.
struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Sample>>,
}

#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    /// Per watched process: (RSS KiB, CPU seconds so far).
    procs: Vec<(u64, f64)>,
    /// CPU seconds so far of all clusters, all hollows, oakbench, and the machine.
    clusters_cpu: f64,
    hollows_cpu: f64,
    own_cpu: f64,
    machine_busy: f64,
}

impl Sampler {
    fn start(fleet: &Fleet) -> Sampler {
        let watched: Vec<u32> = [
            fleet.root.pid(),
            fleet.clusters[0].pid(),
            fleet.hollows[0].pid(),
        ]
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect();
        let clusters: Vec<u32> = fleet.clusters.iter().filter_map(|c| c.pid()).collect();
        let hollows: Vec<u32> = fleet.hollows.iter().filter_map(|c| c.pid()).collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let cpu = |p: &u32| procfs::cpu_seconds(&p.to_string()).unwrap_or(0.0);
            let mut samples = Vec::new();
            loop {
                samples.push(Sample {
                    at: Instant::now(),
                    procs: watched
                        .iter()
                        .map(|p| (procfs::rss_kib(*p).unwrap_or(0), cpu(p)))
                        .collect(),
                    clusters_cpu: clusters.iter().map(cpu).sum(),
                    hollows_cpu: hollows.iter().map(cpu).sum(),
                    own_cpu: procfs::cpu_seconds("self").unwrap_or(0.0),
                    machine_busy: procfs::machine_busy_seconds().unwrap_or(0.0),
                });
                if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    return samples;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        Sampler { stop, thread }
    }

    /// Stop sampling; per role the RSS and CPU figures, the fleet's CPU and the rest of
    /// the machine's load in cores.
    fn stop(self, fleet: &Fleet) -> Measured {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let samples = self.thread.join().unwrap_or_default();
        let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
            return Measured {
                usage: Vec::new(),
                other: None,
                fleet_cores: 0.0,
                seconds: 0.0,
            };
        };
        let secs = (last.at - first.at).as_secs_f64().max(1e-9);
        let share = |f: &dyn Fn(&Sample) -> f64| {
            let mean = (f(last) - f(first)) / secs;
            let peak = samples
                .windows(2)
                .map(|w| (f(&w[1]) - f(&w[0])) / (w[1].at - w[0].at).as_secs_f64().max(1e-9))
                .fold(0.0, f64::max);
            (mean, peak)
        };
        let names = [
            "root".to_string(),
            "cluster c0".to_string(),
            format!("hollow c0 ({} nodes)", fleet.nodes_per_hollow),
        ];
        let mut usage: Vec<Usage> = names
            .iter()
            .enumerate()
            .map(|(i, role)| {
                let rss: Vec<u64> = samples.iter().map(|s| s.procs[i].0).collect();
                let (cpu_mean, cpu_peak) = share(&|s: &Sample| s.procs[i].1);
                Usage {
                    role: role.clone(),
                    rss_peak_kib: rss.iter().copied().max().unwrap_or(0),
                    rss_mean_kib: rss.iter().sum::<u64>() / rss.len().max(1) as u64,
                    cpu_mean,
                    cpu_peak,
                }
            })
            .collect();
        let groups: [(String, &CpuOf); 3] = [
            (format!("all {} clusters", fleet.clusters.len()), &|s| {
                s.clusters_cpu
            }),
            (
                format!("all {} hollow processes", fleet.hollows.len()),
                &|s| s.hollows_cpu,
            ),
            ("oakbench (watching)".to_string(), &|s| s.own_cpu),
        ];
        for (role, f) in groups {
            let (cpu_mean, cpu_peak) = share(f);
            usage.push(Usage {
                role,
                cpu_mean,
                cpu_peak,
                ..Usage::default()
            });
        }
        let fleet_cpu = |s: &Sample| s.procs[0].1 + s.clusters_cpu + s.hollows_cpu;
        let ours = |s: &Sample| fleet_cpu(s) + s.own_cpu;
        let other = ((last.machine_busy - first.machine_busy) - (ours(last) - ours(first))) / secs;
        Measured {
            usage,
            other: Some(other.max(0.0)),
            fleet_cores: (fleet_cpu(last) - fleet_cpu(first)) / secs,
            seconds: secs,
        }
    }
}

pub fn to_json(r: &Report) -> Value {
    json!({
        "binary": r.binary.display().to_string(),
        "clusters": r.clusters,
        "nodes_per_cluster": r.nodes_per_cluster,
        "nodes": r.clusters * r.nodes_per_cluster,
        "instances": r.instances,
        "services": r.services,
        "setup_s": round3(r.setup.as_secs_f64()),
        "reached": r.reached.iter().map(|(m, n, all)| (m.key().to_string(), json!({
            "count": n,
            "all_after_ms": all.map(|d| round3(ms(d))),
        }))).collect::<serde_json::Map<_, _>>(),
        "placed_and_bound_per_second": r.bound_rate().map(round3),
        "from_creation": r.latency.iter().map(|(m, s)| (m.key().to_string(), s.to_json()))
            .collect::<serde_json::Map<_, _>>(),
        "bound_per_second": r.bound_per_second,
        "usage": r.usage.iter().map(|u| json!({
            "role": u.role,
            "rss_peak_kib": u.rss_peak_kib,
            "rss_mean_kib": u.rss_mean_kib,
            "cpu_mean_share": round3(u.cpu_mean),
            "cpu_peak_share": round3(u.cpu_peak),
        })).collect::<Vec<_>>(),
        "other_load_cores": r.other_load_cores.map(round3),
        "fleet_cores_at_rest": round3(r.idle_fleet_cores),
        "fleet_cores_in_burst": round3(r.burst_fleet_cores),
        "fleet_cpu_ms_per_instance": r.cpu_ms_per_instance().map(round3),
        "writes_per_instance": r.writes_per_instance().map(|(root, cluster)| json!({
            "root": round3(root), "cluster": round3(cluster),
        })),
        "conflicts_per_instance": r.conflicts_per_instance().map(|(root, cluster)| json!({
            "root": round3(root), "cluster": round3(cluster),
        })),
        "over_committed": r.commitment.as_ref().map(|c| json!({
            "clusters": c.clusters, "clusters_over": c.clusters_over,
            "nodes": c.nodes, "nodes_over": c.nodes_over,
        })),
        "write_floor": r.write_floor.as_ref().map(|f| json!({
            "creates": f.creates,
            "concurrency": f.concurrency,
            "creates_per_s": round3(f.per_second),
            "root_cpu_us_per_create": round3(f.root_cpu_us),
        })),
        "write_floor_cpu_ms_per_instance": r.write_floor_ms_per_instance().map(round3),
        "loadavg_1min_start": r.loadavg_start,
        "watch_restarts": r.watch_restarts,
        "api_load": r.api_load.iter().map(|a| {
            let rows = |v: &[(String, f64, f64)]| v.iter().map(|(l, c, m)| json!({
                "labels": l, "count": c, "mean_ms": round3(*m),
            })).collect::<Vec<_>>();
            json!({"api": a.api, "requests": rows(&a.requests), "storage": rows(&a.storage)})
        }).collect::<Vec<_>>(),
    })
}

pub fn print(r: &Report) {
    println!(
        "\nscheduling: {} clusters × {} hollow nodes, {} Services × {} Instances in all, binary {}",
        r.clusters,
        r.nodes_per_cluster,
        r.services,
        r.instances,
        r.binary.display()
    );
    println!(
        "  setup (processes up, all nodes Ready at the root): {:.1} s",
        r.setup.as_secs_f64()
    );
    println!(
        "  {:<16} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "milestone", "reached", "all after", "p50 ms", "p99 ms", "max ms"
    );
    for (m, n, all) in &r.reached {
        let lat = r.latency.iter().find(|l| l.0 == *m).map(|l| l.1);
        let f = |x: Option<f64>| x.map(|v| format!("{v:.0}")).unwrap_or_else(|| "–".into());
        println!(
            "  {:<16} {:>8} {:>10} {:>10} {:>10} {:>10}",
            m.label(),
            n,
            all.map(|d| format!("{:.2} s", d.as_secs_f64()))
                .unwrap_or_else(|| "not reached".into()),
            f(lat.map(|l| l.p50_ms)),
            f(lat.map(|l| l.p99_ms)),
            f(lat.map(|l| l.max_ms)),
        );
    }
    match r.bound_rate() {
        Some(rate) => println!("  placed and bound: {rate:.0} Instances/s (target ≥ 1000)"),
        None => println!("  placed and bound: not all Instances were bound in time"),
    }
    let p99 = r
        .latency
        .iter()
        .find(|l| l.0 == Mark::BoundAtCluster)
        .map(|l| l.1.p99_ms);
    if let Some(p99) = p99 {
        println!("  creation → bound p99: {p99:.0} ms (target ≤ 2000)");
    }
    println!(
        "  bound per second: {}",
        r.bound_per_second
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "  {:<30} {:>10} {:>10} {:>10} {:>10}",
        "process", "RSS peak", "RSS mean", "CPU mean", "CPU peak"
    );
    for u in &r.usage {
        let rss = |k: u64| {
            if k == 0 {
                "–".to_string()
            } else {
                format!("{:.1} MiB", k as f64 / 1024.0)
            }
        };
        println!(
            "  {:<30} {:>10} {:>10} {:>9.0}% {:>9.0}%",
            u.role,
            rss(u.rss_peak_kib),
            rss(u.rss_mean_kib),
            u.cpu_mean * 100.0,
            u.cpu_peak * 100.0
        );
    }
    if let Some(other) = r.other_load_cores {
        println!("  rest of the machine meanwhile: {other:.2} cores");
    }
    println!(
        "  fleet CPU (root, clusters, hollow): {:.2} cores at rest, {:.2} in the burst",
        r.idle_fleet_cores, r.burst_fleet_cores
    );
    match r.cpu_ms_per_instance() {
        Some(per) => println!(
            "  CPU per Instance beyond the fleet at rest: {per:.1} ms (1000 Instances/s would need {:.1} cores for it)",
            per
        ),
        None => println!(
            "  CPU per Instance: not measurable, the fleet at rest keeps over 3/4 of the {} CPUs busy",
            r.cpus
        ),
    }
    if let Some((root, cluster)) = r.writes_per_instance() {
        println!(
            "  API writes per Instance (Instances, their bindings, status and Events, Services): root {root:.1}, cluster c0 {cluster:.1}"
        );
    }
    if let Some((root, cluster)) = r.conflicts_per_instance() {
        let which = |i: usize| {
            let load = r
                .api_load
                .get(i)
                .map(|l| l.conflicts.as_slice())
                .unwrap_or_default();
            if load.is_empty() {
                return String::new();
            }
            let each: Vec<String> = load.iter().map(|(l, n)| format!("{l}: {n}")).collect();
            format!(" ({})", each.join(", "))
        };
        println!(
            "  of them answered 409 Conflict, per Instance: root {root:.2}{}, cluster c0 {cluster:.2}{}",
            which(0),
            which(1)
        );
    }
    if let Some(c) = &r.commitment {
        println!(
            "  over-committed after the burst (requests bound against capacity): {} of {} clusters, {} of {} nodes{}",
            c.clusters_over.len(),
            c.clusters,
            c.nodes_over.len(),
            c.nodes,
            if c.clusters_over.is_empty() && c.nodes_over.is_empty() {
                String::new()
            } else {
                format!(": {:?} {:?}", c.clusters_over, c.nodes_over)
            }
        );
    }
    if let Some(f) = &r.write_floor {
        println!(
            "  write floor, after the burst: {} empty Namespaces created at the root over HTTP at concurrency {}: {:.0}/s, {:.0} µs of the root's CPU each",
            f.creates, f.concurrency, f.per_second, f.root_cpu_us
        );
    }
    if let Some(floor) = r.write_floor_ms_per_instance() {
        println!(
            "  → at that price the writes alone take ≈ {floor:.1} ms of CPU per Instance: 1000 Instances/s would need ≈ {floor:.1} cores for them, beside the fleet's {:.2} at rest, of {} CPUs",
            r.idle_fleet_cores, r.cpus
        );
    }
    for a in &r.api_load {
        let total: f64 = a.requests.iter().map(|x| x.1).sum();
        println!(
            "  API {} during the burst: {:.0} requests; busiest (count, mean ms):",
            a.api, total
        );
        for (labels, count, mean) in a.requests.iter().take(8) {
            println!("    {count:>8.0} {mean:>8.1}  {labels}");
        }
        for (labels, count, mean) in &a.storage {
            println!("    {count:>8.0} {mean:>8.1}  storage {labels}");
        }
    }
    if r.watch_restarts > 0 {
        println!(
            "  note: oakbench's watches restarted {} times (relisted)",
            r.watch_restarts
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(requests: &[(&str, f64)]) -> ApiLoad {
        ApiLoad {
            api: "test".into(),
            requests: requests
                .iter()
                .map(|(labels, count)| (labels.to_string(), *count, 1.0))
                .collect(),
            storage: Vec::new(),
            conflicts: Vec::new(),
        }
    }

    #[test]
    fn conflicts_count_only_the_instances_409s_between_scrapes() {
        let scrape = |instances: u32, leases: u32| {
            format!(
                "# TYPE oakestra_apiserver_requests_total counter\n\
                 oakestra_apiserver_requests_total{{verb=\"patch\",resource=\"instances/status\",code=\"409\"}} {instances}\n\
                 oakestra_apiserver_requests_total{{verb=\"patch\",resource=\"instances/status\",code=\"200\"}} 50\n\
                 oakestra_apiserver_requests_total{{verb=\"update\",resource=\"leases\",code=\"409\"}} {leases}\n"
            )
        };
        assert_eq!(
            conflicts(&scrape(2, 1), &scrape(9, 7)),
            [(
                "verb=\"patch\",resource=\"instances/status\"".to_string(),
                7.0
            )]
        );
    }

    #[test]
    fn over_commitment_is_counted_per_target() {
        let capacity: HashMap<String, (u64, u64)> =
            [("n1".into(), (1000, 1024)), ("n2".into(), (1000, 1024))].into();
        let r = |cpu, mem| crds::Resources {
            cpu_millicores: cpu,
            memory_mib: mem,
            ..Default::default()
        };
        let (half, big_memory) = (r(500, 100), r(10, 2000));
        // Exactly full is not over; one more millicore, too much memory, or an unknown
        // target is.
        let bound = [
            ("n1", &half),
            ("n1", &half),
            ("n2", &big_memory),
            ("gone", &half),
        ];
        let over = over_committed(&capacity, bound.iter().map(|(t, r)| (t.to_string(), *r)));
        assert_eq!(over, vec!["gone", "n2"]);
        let one_more = r(1, 0);
        let bound = [("n1", &half), ("n1", &half), ("n1", &one_more)];
        let over = over_committed(&capacity, bound.iter().map(|(t, r)| (t.to_string(), *r)));
        assert_eq!(over, vec!["n1"]);
    }

    #[test]
    fn instance_writes_leave_out_reads_and_heartbeats() {
        let cluster = load(&[
            ("verb=\"create\",resource=\"instances\"", 200.0),
            ("verb=\"create\",resource=\"instances/binding\"", 200.0),
            ("verb=\"patch\",resource=\"instances/status\"", 400.0),
            ("verb=\"create\",resource=\"events\"", 200.0),
            ("verb=\"get\",resource=\"instances\"", 50.0),
            ("verb=\"patch\",resource=\"leases\"", 500.0),
            ("verb=\"patch\",resource=\"nodes/status\"", 60.0),
            ("verb=\"create\",resource=\"namespaces\"", 1.0),
        ]);
        assert_eq!(cluster.instance_writes(), 1000.0);
        assert_eq!(cluster.instance_creates(), 200.0);
    }
}
