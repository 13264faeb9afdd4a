//! Scenario `start-latency`: apply → Running for one container Instance, against raw
//! `ctr run -d` of the same image on the same containerd, in the same run.
//!
//! A private containerd and docker-registry are started, a busybox image is pushed and
//! pulled on both sides first (pulls are not measured). Each of N rounds then times:
//! `ctr run -d IMAGE ID sleep` until it returns (the task is started), and the creation
//! of a one-replica Service through `oakestra up` until its Instance reports `Running`
//! (service controller, placement, cluster sync, scheduling, instance IP, network
//! namespace, container and task). Both sides delete what they made between rounds.
//!
//! The Instance is followed by watches on the root's and the cluster's API (no
//! polling), which also give the time line of one start: when each step was first seen
//! (created at the root, placed, copied into the cluster, bound, IP, Running in the
//! cluster, Running at the root), to show where the time goes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use client::{Api, ListParams, WatchEvent};
use crds::Instance;
use e2e::containers::{Containerd, Registry};
use futures::StreamExt;
use serde_json::json;

use crate::stats::Summary;

pub struct Options {
    pub rounds: usize,
    pub oakestra: Option<PathBuf>,
    /// `bridge` (instance IP in its own namespace) or `host`.
    pub network: String,
}

pub struct Report {
    pub rounds: usize,
    pub network: String,
    pub ctr: Summary,
    pub oakestra: Summary,
    /// When each step of a start was first seen, from the create ([`STEPS`] order).
    pub steps: Vec<(&'static str, Summary)>,
}

/// The steps of one start, in the order they happen.
const STEPS: [&str; 7] = [
    "created at the root",
    "placed on the cluster",
    "copied into the cluster",
    "bound to the node",
    "instance IP assigned",
    "Running in the cluster",
    "Running at the root",
];

pub async fn run(opts: &Options) -> anyhow::Result<Report> {
    let (containerd, registry, image) = tokio::task::spawn_blocking(|| {
        let containerd = Containerd::start();
        let registry = Registry::start();
        let image = registry.push_busybox("bench", "1", &["/bin/sleep", "3600"], "bench");
        (containerd, registry, image)
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let binary = crate::oakestra_binary(opts.oakestra.clone());
    let (port, cluster_port) = (e2e::free_port(), e2e::free_port());
    let socket = containerd.socket.display().to_string();
    let data = dir.path().join("data");
    let args = e2e::up_args(
        port,
        cluster_port,
        &data,
        &["--containerd-socket", &socket, "--network", &opts.network],
    );
    let up = e2e::Oakestra::start_binary(&binary, "up", &args, Some(port), dir.path());
    let client = e2e::tier_client(&e2e::up_kubeconfig(&data));
    let cluster = crate::up_cluster_client(&data, cluster_port)?;
    let services = client.dynamic(
        crds::kind_by_name("services").expect("served"),
        Some("default"),
    );
    let instances: Api<Instance> = client.api(Some("default"));
    let apis = Apis {
        services: &services,
        root: client.api(Some("default")),
        cluster: cluster.api(Some("default")),
    };

    // Warm up: the image pulled and unpacked on both sides.
    containerd.ctr("bench", &["images", "pull", "--plain-http", &image]);
    let (warm, _) = apply_and_wait(&apis, "warmup", &image).await?;
    eprintln!("start-latency: warm-up (with the pull) took {warm:?}");
    delete_and_wait(&services, &instances, "warmup").await?;

    let (mut raw, mut ours) = (Vec::new(), Vec::new());
    let mut steps: BTreeMap<&'static str, Vec<Duration>> = BTreeMap::new();
    for round in 0..opts.rounds {
        let id = format!("raw-{round}");
        let sock = containerd.socket.display().to_string();
        let image2 = image.clone();
        let id2 = id.clone();
        let took = tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let out = std::process::Command::new("ctr")
                .args([
                    "-a",
                    &sock,
                    "-n",
                    "bench",
                    "run",
                    "-d",
                    &image2,
                    &id2,
                    "/bin/sleep",
                    "3600",
                ])
                .output();
            (start.elapsed(), out)
        })
        .await?;
        anyhow::ensure!(
            took.1.as_ref().is_ok_and(|o| o.status.success()),
            "ctr run failed: {:?}",
            took.1
        );
        raw.push(took.0);
        containerd.ctr("bench", &["tasks", "kill", "-s", "SIGKILL", &id]);
        tokio::time::sleep(Duration::from_millis(100)).await;
        containerd.ctr("bench", &["tasks", "delete", "-f", &id]);
        containerd.ctr("bench", &["containers", "delete", &id]);

        let name = format!("s{round}");
        let (took, seen) = apply_and_wait(&apis, &name, &image).await?;
        ours.push(took);
        for (step, at) in seen {
            steps.entry(step).or_default().push(at);
        }
        delete_and_wait(&services, &instances, &name).await?;
    }
    drop(up);
    drop(registry);
    Ok(Report {
        rounds: opts.rounds,
        network: opts.network.clone(),
        ctr: Summary::of(&mut raw),
        oakestra: Summary::of(&mut ours),
        steps: STEPS
            .iter()
            .map(|step| (*step, Summary::of(steps.entry(step).or_default())))
            .collect(),
    })
}

/// The APIs one start is followed on.
struct Apis<'a> {
    services: &'a client::DynamicApi,
    root: Api<Instance>,
    cluster: Api<Instance>,
}

/// Create a one-replica Service `name` and follow its Instance at the root and in the
/// cluster until it is Running at the root; the time that took and when each of
/// [`STEPS`] was first seen.
async fn apply_and_wait(
    apis: &Apis<'_>,
    name: &str,
    image: &str,
) -> anyhow::Result<(Duration, BTreeMap<&'static str, Duration>)> {
    let from_now = |api: &Api<Instance>| {
        let api = api.clone();
        async move {
            let (_, version) = api.list(&ListParams::default()).await?;
            api.watch(&ListParams {
                resource_version: Some(version),
                ..Default::default()
            })
            .await
        }
    };
    let mut root = from_now(&apis.root).await?;
    let mut cluster = from_now(&apis.cluster).await?;
    let start = Instant::now();
    apis.services
        .create(
            &json!({"apiVersion": "oakestra.io/v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"replicas": 1, "template": {"runtime": "container", "image": image,
                "resources": {"cpuMillicores": 100, "memoryMiB": 16}}}}),
        )
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut seen = BTreeMap::new();
    loop {
        let (at_root, event) = tokio::select! {
            e = root.next() => (true, e),
            e = cluster.next() => (false, e),
            _ = tokio::time::sleep_until(deadline) => anyhow::bail!("{name} not Running after 60 s"),
        };
        let event = event.ok_or_else(|| anyhow::anyhow!("a watch of {name} ended"))??;
        let (WatchEvent::Added(i) | WatchEvent::Modified(i)) = event else {
            continue;
        };
        if i.spec.service != name {
            continue;
        }
        let at = start.elapsed();
        let status = i.status.clone().unwrap_or_default();
        let running = status.phase == crds::Phase::Running;
        let reached = if at_root {
            [
                Some(STEPS[0]),
                i.spec.cluster.is_some().then_some(STEPS[1]),
                running.then_some(STEPS[6]),
            ]
        } else {
            [
                Some(STEPS[2]),
                i.spec.node.is_some().then_some(STEPS[3]),
                status.instance_ip.is_some().then_some(STEPS[4]),
            ]
        };
        for step in reached.into_iter().flatten() {
            seen.entry(step).or_insert(at);
        }
        if !at_root && running {
            seen.entry(STEPS[5]).or_insert(at);
        }
        if at_root && running {
            return Ok((at, seen));
        }
    }
}

async fn delete_and_wait(
    services: &client::DynamicApi,
    instances: &Api<Instance>,
    name: &str,
) -> anyhow::Result<()> {
    services.delete(name, None).await?;
    let start = Instant::now();
    loop {
        let (items, _) = instances.list(&ListParams::default()).await?;
        if !items.iter().any(|i| i.spec.service == name) {
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(60),
            "{name} not deleted after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn print(r: &Report) {
    println!(
        "\n== start latency: {} rounds, network {} ==",
        r.rounds, r.network
    );
    println!(
        "{:<28} {:>10} {:>10} {:>10}",
        "", "p50 ms", "p99 ms", "max ms"
    );
    for (label, s) in [
        ("raw `ctr run -d`", &r.ctr),
        ("oakestra apply -> Running", &r.oakestra),
    ] {
        println!(
            "{label:<28} {:>10.1} {:>10.1} {:>10.1}",
            s.p50_ms, s.p99_ms, s.max_ms
        );
    }
    println!(
        "oakestra - ctr at p50: {:+.1} ms (target: <= +300 ms)",
        r.oakestra.p50_ms - r.ctr.p50_ms
    );
    println!("time line of a start (first seen, from the create):");
    for (step, s) in &r.steps {
        println!(
            "  {step:<26} {:>10.1} {:>10.1} {:>10.1}",
            s.p50_ms, s.p99_ms, s.max_ms
        );
    }
}

pub fn to_json(r: &Report) -> serde_json::Value {
    json!({
        "rounds": r.rounds,
        "network": r.network,
        "ctr": r.ctr.to_json(),
        "oakestra": r.oakestra.to_json(),
                "difference_p50_ms": crate::stats::round3(r.oakestra.p50_ms - r.ctr.p50_ms),
        "steps": r.steps.iter().map(|(step, s)| json!({"step": step, "first_seen": s.to_json()})).collect::<Vec<_>>(),
    })
}
