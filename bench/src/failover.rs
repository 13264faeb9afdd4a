//! Scenario `failover`: `kill -9` a worker running N Instances; how long until all N run
//! on another node.
//!
//! A real `oakestra root`, one `oakestra cluster` (node heartbeat timeout T, eviction E)
//! and two `oakestra worker`s with the process runtime, as separate processes. Worker
//! `w1` starts first and gets all N replicas of a Service (`/bin/sleep`); then `w2`
//! joins, `w1` is killed with SIGKILL and the root's Instances are watched until every
//! one is `Running` on `w2`. The bound is T + E + 5 s (issue #5): the node must first be
//! declared lost, which takes T + E by design; what is measured beyond that is the
//! reaction of the cluster scheduler, the agent and the way back up to the root.
//!
//! The processes `w1` left behind (same machine) are killed at the end.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use client::{Api, ListParams, WatchEvent};
use crds::{Instance, Phase};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::stats::{ms, round3};

pub struct Options {
    pub instances: usize,
    pub oakestra: Option<PathBuf>,
    /// The cluster's node heartbeat timeout.
    pub heartbeat_timeout: Duration,
    /// The cluster's eviction timeout.
    pub eviction: Duration,
    pub time_bound: Duration,
}

pub struct Report {
    pub instances: usize,
    pub heartbeat_timeout: Duration,
    pub eviction: Duration,
    /// From the kill to the first Instance Running on the other node.
    pub first: Option<Duration>,
    /// From the kill to the last one.
    pub all: Option<Duration>,
    pub moved: usize,
}

pub async fn run(opts: &Options) -> anyhow::Result<Report> {
    let dir = tempfile::tempdir()?;
    let binary = crate::oakestra_binary(opts.oakestra.clone());
    let marker = format!("9{:05}3", e2e::free_port());
    let _leftovers = e2e::KillMatching(vec![marker.clone()]);
    let (heartbeat_timeout, eviction) = (
        opts.heartbeat_timeout.as_secs().to_string(),
        opts.eviction.as_secs().to_string(),
    );
    let path = dir.path().to_path_buf();
    let (root, _cluster, upstream, mut w1) = tokio::task::spawn_blocking(move || {
        let root = e2e::RootServer::start_binary(
            &binary,
            &format!("embedded:{}", path.join("root").display()),
            &path,
            &[],
        );
        let port = e2e::free_port();
        let flags = [
            "--heartbeat-seconds",
            "1",
            "--node-heartbeat-timeout-seconds",
            &heartbeat_timeout,
            "--eviction-seconds",
            &eviction,
        ];
        let args = e2e::cluster_args("c", &root.upstream(), port, &path, &flags);
        let cluster = e2e::Oakestra::start_binary(&binary, "c", &args, Some(port), &path);
        let upstream = e2e::Upstream::cluster(&cluster.url(), &path, "c");
        let w1 = worker(&binary, "w1", &upstream, &path);
        (root, cluster, upstream, w1)
    })
    .await?;
    let client = root.client();
    let instances: Api<Instance> = client.api(Some("default"));
    let services = client.dynamic(
        crds::kind_by_name("services").expect("served"),
        Some("default"),
    );
    let service = json!({"apiVersion": "oakestra.io/v1", "kind": "Service", "metadata": {"name": "victims"},
        "spec": {"replicas": opts.instances, "template": {"runtime": "process", "executable": "/bin/sleep",
            "command": [marker], "resources": {"cpuMillicores": 10, "memoryMiB": 8}}}});
    services
        .create(&service)
        .await
        .context("creating the Service")?;
    let on = |node: &'static str| {
        let instances = instances.clone();
        async move {
            let (items, _) = instances.list(&ListParams::default()).await?;
            Ok::<_, anyhow::Error>(
                items
                    .iter()
                    .filter(|i| {
                        i.spec.node.as_deref() == Some(node)
                            && i.status.as_ref().is_some_and(|s| s.phase == Phase::Running)
                    })
                    .count(),
            )
        }
    };
    let deadline = Instant::now() + opts.time_bound;
    while on("w1").await? < opts.instances {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the {} instances did not run on w1",
            opts.instances
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let path = dir.path().to_path_buf();
    let binary = w1.binary.clone();
    let _w2 = tokio::task::spawn_blocking(move || worker(&binary, "w2", &upstream, &path)).await?;
    let nodes: Api<crds::Node> = crate::cluster_client(dir.path(), "c").api(None);
    while !nodes
        .get("w2")
        .await
        .ok()
        .and_then(|n| n.status)
        .is_some_and(|s| crds::is_true(&s.conditions, "Ready"))
    {
        anyhow::ensure!(Instant::now() < deadline, "w2 did not become Ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (_, version) = instances.list(&ListParams::default()).await?;
    let mut events = instances
        .watch(&ListParams {
            resource_version: Some(version),
            ..Default::default()
        })
        .await?;
    eprintln!(
        "failover: kill -9 w1 with {} instances Running",
        opts.instances
    );
    w1.kill9();
    let killed = Instant::now();
    let mut moved: HashMap<String, Duration> = HashMap::new();
    let deadline = killed + opts.time_bound;
    while moved.len() < opts.instances {
        let next = tokio::time::timeout_at(deadline.into(), events.next()).await;
        let Ok(Some(event)) = next else { break };
        let (WatchEvent::Added(i) | WatchEvent::Modified(i)) = event? else {
            continue;
        };
        let running_on_w2 = i.spec.node.as_deref() == Some("w2")
            && i.status.as_ref().is_some_and(|s| s.phase == Phase::Running);
        if running_on_w2 {
            moved
                .entry(i.metadata.name.clone())
                .or_insert(killed.elapsed());
        }
    }
    let first = moved.values().min().copied();
    let all = (moved.len() == opts.instances)
        .then(|| moved.values().max().copied())
        .flatten();
    Ok(Report {
        instances: opts.instances,
        heartbeat_timeout: opts.heartbeat_timeout,
        eviction: opts.eviction,
        first,
        all,
        moved: moved.len(),
    })
}

fn worker(
    binary: &std::path::Path,
    name: &str,
    cluster: &e2e::Upstream,
    dir: &std::path::Path,
) -> e2e::Oakestra {
    let args = e2e::worker_args(
        name,
        cluster,
        dir,
        &["--runtime", "process", "--heartbeat-seconds", "1"],
    );
    e2e::Oakestra::start_binary(binary, name, &args, None, dir)
}

pub fn print(r: &Report) {
    let bound = r.heartbeat_timeout + r.eviction + Duration::from_secs(5);
    println!(
        "\n== failover: kill -9 a worker with {} instances (node timeout {}s, eviction {}s) ==",
        r.instances,
        r.heartbeat_timeout.as_secs(),
        r.eviction.as_secs()
    );
    let show =
        |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.2} s", d.as_secs_f64()));
    println!("first Running elsewhere     {}", show(r.first));
    println!(
        "all {} Running elsewhere   {} ({} moved; target <= {} s = timeout + eviction + 5 s)",
        r.instances,
        show(r.all),
        r.moved,
        bound.as_secs()
    );
}

pub fn to_json(r: &Report) -> Value {
    json!({
        "instances": r.instances,
        "node_heartbeat_timeout_s": r.heartbeat_timeout.as_secs(),
        "eviction_s": r.eviction.as_secs(),
        "first_ms": r.first.map(|d| round3(ms(d))),
        "all_ms": r.all.map(|d| round3(ms(d))),
        "moved": r.moved,
    })
}
