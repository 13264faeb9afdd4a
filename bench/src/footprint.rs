//! Scenario `footprint`: resident memory and CPU of the three roles at rest.
//!
//! Starts `oakestra root`, `oakestra cluster` (registered at that root) and
//! `oakestra worker` (process runtime, joined to that cluster) as separate processes
//! with embedded stores in a temp dir, waits until the worker's Node is Ready at the
//! cluster, lets everything idle for a while, then reads each process's `VmRSS` and the
//! CPU it used while idle. Targets from the issue: worker ≤ 20 MiB, cluster ≤ 40 MiB,
//! root ≤ 60 MiB.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::procfs;

pub struct Options {
    pub oakestra: Option<PathBuf>,
    pub idle: Duration,
}

#[derive(Debug, Clone)]
pub struct Role {
    pub name: &'static str,
    pub rss_kib: u64,
    /// CPU used during the idle period, as a share of one core.
    pub idle_cpu_share: f64,
    pub target_mib: u64,
}

pub struct Report {
    pub binary: PathBuf,
    pub idle: Duration,
    pub roles: Vec<Role>,
}

pub async fn run(opts: &Options) -> anyhow::Result<Report> {
    let dir = tempfile::tempdir()?;
    let binary = crate::oakestra_binary(opts.oakestra.clone());
    let (root_port, cluster_port) = (e2e::free_port(), e2e::free_port());
    let d = dir.path().to_path_buf();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let root_data = d.join("root");
    let root_args = s(&[
        "root",
        "--listen",
        &format!("127.0.0.1:{root_port}"),
        "--store",
        &format!("embedded:{}", root_data.display()),
    ]);
    let (b, d2) = (binary.clone(), d.clone());
    let processes = tokio::task::spawn_blocking(move || {
        let root = e2e::Oakestra::start_binary(&b, "root", &root_args, Some(root_port), &d2);
        // The root's data (and join token) is in its embedded store's directory.
        let upstream = e2e::Upstream {
            url: root.url(),
            token: e2e::join_token(&root_data),
        };
        let cluster_args = e2e::cluster_args("c1", &upstream, cluster_port, &d2, &[]);
        let cluster =
            e2e::Oakestra::start_binary(&b, "cluster", &cluster_args, Some(cluster_port), &d2);
        let upstream = e2e::Upstream::cluster(&cluster.url(), &d2, "c1");
        let worker_args = e2e::worker_args("w1", &upstream, &d2, &["--runtime", "process"]);
        let worker = e2e::Oakestra::start_binary(&b, "worker", &worker_args, None, &d2);
        [
            ("root", root, 60),
            ("cluster", cluster, 40),
            ("worker", worker, 20),
        ]
    })
    .await?;
    let nodes = crate::cluster_client(&d, "c1").api::<crds::Node>(None);
    e2e::eventually(
        "the worker's Node Ready",
        Duration::from_secs(60),
        || async {
            let node = nodes.get("w1").await.ok()?;
            crds::is_true(
                node.status
                    .as_ref()
                    .map(|s| s.conditions.as_slice())
                    .unwrap_or_default(),
                "Ready",
            )
            .then_some(())
        },
    )
    .await;
    let pids: Vec<u32> = processes
        .iter()
        .map(|(_, p, _)| p.pid().unwrap_or_default())
        .collect();
    let before: Vec<Option<f64>> = pids
        .iter()
        .map(|p| procfs::cpu_seconds(&p.to_string()))
        .collect();
    tokio::time::sleep(opts.idle).await;
    let mut roles = Vec::new();
    for (((name, _, target), pid), cpu_before) in processes.iter().zip(&pids).zip(&before) {
        let cpu = procfs::cpu_seconds(&pid.to_string())
            .zip(*cpu_before)
            .map(|(a, b)| a - b)
            .unwrap_or(0.0);
        roles.push(Role {
            name,
            rss_kib: procfs::rss_kib(*pid)?,
            idle_cpu_share: cpu / opts.idle.as_secs_f64(),
            target_mib: *target,
        });
    }
    drop(processes);
    Ok(Report {
        binary,
        idle: opts.idle,
        roles,
    })
}

pub fn to_json(r: &Report) -> Value {
    json!({
        "binary": r.binary.display().to_string(),
        "idle_seconds": r.idle.as_secs_f64(),
        "roles": r.roles.iter().map(|x| json!({
            "role": x.name,
            "rss_kib": x.rss_kib,
            "idle_cpu_share": (x.idle_cpu_share * 1e4).round() / 1e4,
            "target_mib": x.target_mib,
        })).collect::<Vec<_>>(),
    })
}

pub fn print(r: &Report) {
    println!(
        "\nfootprint: root, cluster and one worker at rest for {:.0} s, binary {}",
        r.idle.as_secs_f64(),
        r.binary.display()
    );
    println!(
        "  {:<8} {:>10} {:>10} {:>12}",
        "role", "RSS MiB", "target", "idle CPU %"
    );
    for x in &r.roles {
        println!(
            "  {:<8} {:>10.1} {:>10} {:>12.2}",
            x.name,
            x.rss_kib as f64 / 1024.0,
            format!("≤ {}", x.target_mib),
            x.idle_cpu_share * 100.0
        );
    }
}
