//! Scenario `start-latency`: apply → Running for one container Instance, against raw
//! `ctr run -d` of the same image on the same containerd, in the same run.
//!
//! A private containerd and docker-registry are started, a busybox image is pushed and
//! pulled on both sides first (pulls are not measured). Each of N rounds then times:
//! `ctr run -d IMAGE ID sleep` until it returns (the task is started), and the creation
//! of a one-replica Service through `oakestra up` until its Instance reports `Running`
//! (service controller, placement, cluster sync, scheduling, instance IP, network
//! namespace, container and task). Both sides delete what they made between rounds.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use client::{Api, Client, ListParams};
use crds::{Instance, Phase};
use e2e::containers::{Containerd, Registry};
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
}

pub async fn run(opts: &Options) -> anyhow::Result<Report> {
    let (containerd, registry, image) = tokio::task::spawn_blocking(|| {
        let containerd = Containerd::start();
        let registry = Registry::start();
        let image = registry.push_busybox("bench", "1", &["/bin/sleep", "3600"], "bench");
        (containerd, registry, image)
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let binary = opts
        .oakestra
        .clone()
        .unwrap_or_else(|| e2e::binary("oakestra"));
    let (port, cluster_port) = (e2e::free_port(), e2e::free_port());
    let socket = containerd.socket.display().to_string();
    let args = e2e::up_args(
        port,
        cluster_port,
        &dir.path().join("data"),
        &["--containerd-socket", &socket, "--network", &opts.network],
    );
    let up = e2e::Oakestra::start_binary(&binary, "up", &args, Some(port), dir.path());
    let client = Client::new(&up.url())?;
    let services = client.dynamic(
        crds::kind_by_name("services").expect("served"),
        Some("default"),
    );
    let instances: Api<Instance> = client.api(Some("default"));

    // Warm up: the image pulled and unpacked on both sides.
    containerd.ctr("bench", &["images", "pull", "--plain-http", &image]);
    let warm = apply_and_wait(&services, &instances, "warmup", &image).await?;
    eprintln!("start-latency: warm-up (with the pull) took {warm:?}");
    delete_and_wait(&services, &instances, "warmup").await?;

    let (mut raw, mut ours) = (Vec::new(), Vec::new());
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
        ours.push(apply_and_wait(&services, &instances, &name, &image).await?);
        delete_and_wait(&services, &instances, &name).await?;
    }
    drop(up);
    drop(registry);
    Ok(Report {
        rounds: opts.rounds,
        network: opts.network.clone(),
        ctr: Summary::of(&mut raw),
        oakestra: Summary::of(&mut ours),
    })
}

async fn apply_and_wait(
    services: &client::DynamicApi,
    instances: &Api<Instance>,
    name: &str,
    image: &str,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    services
        .create(
            &json!({"apiVersion": "oakestra.io/v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"replicas": 1, "template": {"runtime": "container", "image": image,
                "resources": {"cpuMillicores": 100, "memoryMiB": 16}}}}),
        )
        .await?;
    loop {
        let (items, _) = instances.list(&ListParams::default()).await?;
        let running = items.iter().any(|i| {
            i.spec.service == name && i.status.as_ref().is_some_and(|s| s.phase == Phase::Running)
        });
        if running {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(60),
            "{name} not Running after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
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
}

pub fn to_json(r: &Report) -> serde_json::Value {
    json!({
        "rounds": r.rounds,
        "network": r.network,
        "ctr": r.ctr.to_json(),
        "oakestra": r.oakestra.to_json(),
        "difference_p50_ms": crate::stats::round3(r.oakestra.p50_ms - r.ctr.p50_ms),
    })
}
