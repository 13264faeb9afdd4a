//! Scenario `placement`: how fast the root turns a Service into placed Instances.
//!
//! A real `oakestra root` (with its controllers, embedded store) gets C `Cluster`
//! objects reported Ready with ample room, then one `Service` of N replicas. A watch on
//! Instances records, per Instance, when it was first seen (created by the service
//! controller) and when it was first seen with `spec.cluster` set (placed). Reported:
//! time until all N exist and until all are placed, placements per second, and the
//! creation-to-placement latency; the root's CPU during the burst and its resident
//! memory after it; and, after the burst, the root's bare write floor (creates of empty
//! Namespaces at concurrency 64, as in `scheduling`), so that the placement rate is
//! also a ratio to what the same server writes in the same run.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use client::{ListParams, WatchEvent};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::stats::{ms, round3, Summary};

pub struct Options {
    pub instances: usize,
    pub clusters: usize,
    pub oakestra: Option<PathBuf>,
    pub time_bound: Duration,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub binary: PathBuf,
    pub instances: usize,
    pub clusters: usize,
    pub created: usize,
    pub placed: usize,
    pub all_created_after: Option<Duration>,
    pub all_placed_after: Option<Duration>,
    pub per_cluster: Vec<usize>,
    /// From an Instance's creation to its placement, as the watcher saw them.
    pub latency: Summary,
    /// The root's CPU from the Service's create until the last placement, in cores.
    pub root_cores: Option<f64>,
    /// The root's resident memory after the burst.
    pub root_rss_kib: Option<u64>,
    pub write_floor: Option<crate::scheduling::WriteFloor>,
}

impl Report {
    /// Placements per second, from the Service's create to the last placement.
    pub fn per_second(&self) -> Option<f64> {
        self.all_placed_after
            .map(|d| self.placed as f64 / d.as_secs_f64())
    }

    /// The placement rate as a share of the write floor.
    pub fn floor_ratio(&self) -> Option<f64> {
        Some(self.per_second()? / self.write_floor.as_ref()?.per_second)
    }
}

pub async fn run(opts: &Options) -> anyhow::Result<Report> {
    let dir = tempfile::tempdir()?;
    let server = crate::watch_fanout::start_server(opts.oakestra.clone(), true, dir.path()).await?;
    let client = server.client();
    let clusters = client.dynamic(crds::kind_by_name("clusters").expect("served"), None);
    for i in 0..opts.clusters {
        let name = format!("c{i}");
        clusters.create(&json!({"apiVersion": "oakestra.io/v1", "kind": "Cluster", "metadata": {"name": name}, "spec": {}})).await?;
        let room = json!({"cpuMillicores": 1_000_000, "memoryMiB": 1_000_000, "nodes": 500});
        let status = json!({"status": {"runtimes": ["container"], "capacity": room, "allocatable": room,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Bench"}]}});
        clusters.patch_status(&name, &status).await?;
    }
    let instances = client.dynamic(
        crds::kind_by_name("instances").expect("served"),
        Some("default"),
    );
    let (_, version) = instances.list_all(&ListParams::default()).await?;
    let mut events = instances
        .watch(&ListParams {
            resource_version: Some(version),
            ..Default::default()
        })
        .await?;
    let services = client.dynamic(
        crds::kind_by_name("services").expect("served"),
        Some("default"),
    );
    let service = json!({"apiVersion": "oakestra.io/v1", "kind": "Service", "metadata": {"name": "bench"},
        "spec": {"replicas": opts.instances, "template": {"image": "bench", "resources": {"cpuMillicores": 10, "memoryMiB": 10}}}});
    let pid = server.pid();
    let cpu_before = crate::procfs::CpuSample::take(pid);
    let start = Instant::now();
    services
        .create(&service)
        .await
        .context("creating the Service")?;

    let mut seen: HashMap<String, Instant> = HashMap::new();
    let mut placed: HashMap<String, (Instant, String)> = HashMap::new();
    let (mut all_created_after, mut all_placed_after) = (None, None);
    let deadline = start + opts.time_bound;
    while placed.len() < opts.instances {
        let next = tokio::time::timeout_at(deadline.into(), events.next()).await;
        let Ok(Some(event)) = next else { break };
        let object = match event? {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => o,
            _ => continue,
        };
        let now = Instant::now();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        seen.entry(name.clone()).or_insert(now);
        if seen.len() == opts.instances && all_created_after.is_none() {
            all_created_after = Some(now - start);
        }
        if let Some(cluster) = object["spec"]["cluster"].as_str() {
            placed.entry(name).or_insert((now, cluster.to_string()));
        }
    }
    if placed.len() == opts.instances {
        all_placed_after = Some(start.elapsed());
    }
    let cpu = crate::procfs::CpuSample::take(pid).since(&cpu_before);
    let root_cores = cpu.other_process.map(|s| s / start.elapsed().as_secs_f64());
    let root_rss_kib = pid.and_then(|p| crate::procfs::rss_kib(p).ok());
    // Let the last writes settle, then the floor.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let floor = crate::scheduling::write_floor(
        &client,
        pid,
        0.0,
        opts.instances.clamp(200, 2000),
        opts.time_bound,
    )
    .await;
    let write_floor = match floor {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!("placement: the write floor was not measured: {e:#}");
            None
        }
    };
    let mut latencies: Vec<Duration> = placed
        .iter()
        .filter_map(|(n, (t, _))| Some(t.saturating_duration_since(*seen.get(n)?)))
        .collect();
    let mut per: HashMap<String, usize> = HashMap::new();
    for (_, c) in placed.values() {
        *per.entry(c.clone()).or_default() += 1;
    }
    let mut per_cluster: Vec<usize> = per.into_values().collect();
    per_cluster.sort_unstable();
    Ok(Report {
        binary: server.binary.clone(),
        instances: opts.instances,
        clusters: opts.clusters,
        created: seen.len(),
        placed: placed.len(),
        all_created_after,
        all_placed_after,
        per_cluster,
        latency: Summary::of(&mut latencies),
        root_cores,
        root_rss_kib,
        write_floor,
    })
}

pub fn to_json(r: &Report) -> Value {
    json!({
        "binary": r.binary.display().to_string(),
        "instances": r.instances,
        "clusters": r.clusters,
        "created": r.created,
        "placed": r.placed,
        "all_created_after_ms": r.all_created_after.map(|d| round3(ms(d))),
        "all_placed_after_ms": r.all_placed_after.map(|d| round3(ms(d))),
        "placements_per_second": r.per_second().map(round3),
        "root_cores_in_burst": r.root_cores.map(round3),
        "root_rss_kib_after": r.root_rss_kib,
        "write_floor_per_second": r.write_floor.as_ref().map(|f| round3(f.per_second)),
        "placements_to_write_floor": r.floor_ratio().map(round3),
        "per_cluster": r.per_cluster,
        "create_to_placed": r.latency.to_json(),
    })
}

pub fn print(r: &Report) {
    let secs = |d: Option<Duration>| {
        d.map(|d| format!("{:.2} s", d.as_secs_f64()))
            .unwrap_or_else(|| "not reached".into())
    };
    println!(
        "\nplacement: 1 Service × {} replicas over {} clusters, server {} (with controllers)",
        r.instances,
        r.clusters,
        r.binary.display()
    );
    println!(
        "  instances created  {} of {}, all after {}",
        r.created,
        r.instances,
        secs(r.all_created_after)
    );
    println!(
        "  instances placed   {} of {}, all after {}",
        r.placed,
        r.instances,
        secs(r.all_placed_after)
    );
    if let Some(rate) = r.per_second() {
        println!("  throughput         {rate:.0} placements/s");
    }
    if let (Some(f), Some(ratio)) = (&r.write_floor, r.floor_ratio()) {
        println!(
            "  write floor        {:.0} empty Namespaces/s at c = {} → placements at {ratio:.2}× the floor (target ≥ 0.3×)",
            f.per_second, f.concurrency
        );
    }
    println!(
        "  created → placed   p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        r.latency.p50_ms, r.latency.p99_ms, r.latency.max_ms
    );
    println!("  per cluster        {:?}", r.per_cluster);
    if let Some(cores) = r.root_cores {
        println!(
            "  root CPU           {:.0} % of one core during the burst",
            cores * 100.0
        );
    }
    if let Some(kib) = r.root_rss_kib {
        println!(
            "  root RSS           {:.1} MiB after the burst",
            kib as f64 / 1024.0
        );
    }
}
