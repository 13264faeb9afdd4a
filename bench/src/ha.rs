//! Scenario `ha`: two `oakestra root` processes on one etcd.
//!
//! 1. **Controller failover**, `rounds` times: the root holding the controllers' Lease
//!    is killed with SIGKILL and a Service is created at the other at once; measured is
//!    the time from the kill to the first reconcile of the new leader (the Service's
//!    Instance exists). By design it is at least the lease duration (standbys wait that
//!    long after the last renewal they saw); what lies beyond it is the election's
//!    retry period and the controllers' start. The killed root is started again and
//!    becomes the standby of the next round.
//! 2. **Rolling restart under load**: a writer creates `ConfigMap`s without pause
//!    through a client given both roots' URLs (`client::Client` moves to the next
//!    server when one refuses connections) while each root in turn is stopped with
//!    SIGTERM and started again. Counted: requests sent, requests that failed (no
//!    retry), and acknowledged writes missing afterwards (must be 0).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use crate::stats::{round3, Summary};

pub struct Options {
    pub rounds: usize,
    /// The leader election's lease duration; the renew deadline is 2/3 of it and the
    /// retry period 2/15 (Kubernetes' 15 s, 10 s and 2 s).
    pub lease: Duration,
    pub oakestra: Option<std::path::PathBuf>,
    pub time_bound: Duration,
}

pub struct Report {
    pub rounds: usize,
    pub lease: Duration,
    /// Kill of the leader → first reconcile by the new one.
    pub failover: Summary,
    /// Requests sent during the rolling restart.
    pub sent: usize,
    /// Of those, failed (transport error or an error status), without retries.
    pub failed: usize,
    /// Acknowledged writes missing afterwards.
    pub lost: usize,
}

/// `--leader-elect-*` flags for a lease of `lease`.
fn election_flags(lease: Duration) -> Vec<String> {
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    vec![
        "--leader-elect-lease-duration".into(),
        ms(lease),
        "--leader-elect-renew-deadline".into(),
        ms(lease * 2 / 3),
        "--leader-elect-retry-period".into(),
        ms(lease * 2 / 15),
    ]
}

/// Which of `roots` holds the controllers' Lease, asking `roots[ask]`.
async fn leader(roots: &[e2e::RootServer], ask: usize, bound: Duration) -> anyhow::Result<usize> {
    let leases = roots[ask].client().api::<crds::Lease>(None);
    let deadline = Instant::now() + bound;
    loop {
        if let Ok(lease) = leases.get(crds::ROOT_CONTROLLERS_LEASE).await {
            let holder = lease.spec.holder_identity.unwrap_or_default();
            if let Some(i) = roots
                .iter()
                .position(|r| holder.ends_with(&format!("_{}", r.port)))
            {
                return Ok(i);
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "no root took the Lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn run(opts: &Options) -> anyhow::Result<Report> {
    let dir = tempfile::tempdir()?;
    let binary = crate::oakestra_binary(opts.oakestra.clone());
    let path = dir.path().to_path_buf();
    let flags = election_flags(opts.lease);
    let (etcd, roots) = tokio::task::spawn_blocking(move || {
        let etcd = e2e::Etcd::start();
        let store = format!("etcd:{}", etcd.url());
        let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
        let a = e2e::RootServer::start_binary(&binary, &store, &path, &refs);
        let token = a.upstream().token;
        let mut second = refs.clone();
        second.extend(["--token", &token]);
        let b = e2e::RootServer::start_binary(&binary, &store, &path, &second);
        (etcd, vec![a, b])
    })
    .await?;
    let mut roots = roots;
    let _etcd = etcd;

    // 1. Controller failover.
    let mut samples = Vec::new();
    let mut current = leader(&roots, 0, opts.time_bound).await?;
    for round in 0..opts.rounds {
        let survivor = 1 - current;
        let services = roots[survivor].client().dynamic(
            crds::kind_by_name("services").expect("served"),
            Some("default"),
        );
        let instances = roots[survivor]
            .client()
            .api::<crds::Instance>(Some("default"));
        let name = format!("probe-{round}");
        roots[current].kill9();
        let killed = Instant::now();
        let service = json!({"apiVersion": "oakestra.io/v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"replicas": 1, "template": {"image": "localhost:5000/busybox:1",
                "resources": {"cpuMillicores": 10, "memoryMiB": 8}}}});
        services
            .create(&service)
            .await
            .context("creating a probe Service")?;
        loop {
            if !e2e::instances_of(&instances, &name).await.is_empty() {
                break;
            }
            anyhow::ensure!(
                killed.elapsed() < opts.time_bound,
                "round {round}: the new leader did not reconcile {name}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = killed.elapsed();
        samples.push(took);
        eprintln!("ha: round {round}: failover {:.2} s", took.as_secs_f64());
        anyhow::ensure!(
            leader(&roots, survivor, opts.time_bound).await? == survivor,
            "round {round}: the Lease does not name the survivor"
        );
        let mut killed_root = roots.remove(current);
        killed_root = tokio::task::spawn_blocking(move || {
            killed_root.restart();
            killed_root
        })
        .await?;
        roots.insert(current, killed_root);
        current = survivor;
    }

    // 2. A rolling restart under a steady write load.
    let both = format!("{},{}", roots[0].url(), roots[1].url());
    let writer_client = client::kubeconfig::Kubeconfig::load(&roots[0].kubeconfig())?
        .resolve(None)?
        .client(Some(&both))?;
    let configmaps = writer_client.dynamic(
        crds::kind_by_name("configmaps").expect("served"),
        Some("default"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let writer = tokio::spawn({
        let (stop, acknowledged, configmaps) =
            (stop.clone(), acknowledged.clone(), configmaps.clone());
        async move {
            let (mut sent, mut failed) = (0usize, 0usize);
            while !stop.load(Ordering::Relaxed) {
                let name = format!("load-{sent}");
                sent += 1;
                let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name}, "data": {"n": sent.to_string()}});
                match configmaps.create(&body).await {
                    Ok(_) => acknowledged.lock().unwrap().push(name),
                    Err(_) => failed += 1,
                }
            }
            (sent, failed)
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..roots.len() {
        let pid = roots[i].pid().context("a running root")?;
        let port = roots[i].port;
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        let deadline = Instant::now() + opts.time_bound;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            anyhow::ensure!(Instant::now() < deadline, "a root ignored SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut root = roots.remove(i);
        root = tokio::task::spawn_blocking(move || {
            root.restart();
            root
        })
        .await?;
        roots.insert(i, root);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (sent, failed) = writer.await?;
    let stored = configmaps.list(&client::ListParams::default()).await?;
    let present: std::collections::HashSet<String> = stored["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["metadata"]["name"].as_str().map(String::from))
        .collect();
    let lost = acknowledged
        .lock()
        .unwrap()
        .iter()
        .filter(|n| !present.contains(*n))
        .count();
    Ok(Report {
        rounds: opts.rounds,
        lease: opts.lease,
        failover: Summary::of(&mut samples),
        sent,
        failed,
        lost,
    })
}

pub fn print(r: &Report) {
    println!(
        "\n== ha: two roots on one etcd (lease {:.1} s, renew {:.1} s, retry {:.1} s) ==",
        r.lease.as_secs_f64(),
        (r.lease * 2 / 3).as_secs_f64(),
        (r.lease * 2 / 15).as_secs_f64()
    );
    println!(
        "controller failover (kill -9 leader -> first reconcile), {} rounds: p50 {:.2} s, p99 {:.2} s, max {:.2} s ({:.2} s beyond the lease at p50)",
        r.rounds,
        r.failover.p50_ms / 1000.0,
        r.failover.p99_ms / 1000.0,
        r.failover.max_ms / 1000.0,
        r.failover.p50_ms / 1000.0 - r.lease.as_secs_f64()
    );
    let share = if r.sent == 0 {
        0.0
    } else {
        100.0 * r.failed as f64 / r.sent as f64
    };
    println!(
        "rolling restart of both roots under writes: {} sent, {} failed ({share:.2} %, no retries), {} acknowledged writes lost (must be 0)",
        r.sent, r.failed, r.lost
    );
}

pub fn to_json(r: &Report) -> Value {
    json!({
        "rounds": r.rounds,
        "lease_ms": round3(r.lease.as_secs_f64() * 1000.0),
        "failover": r.failover.to_json(),
        "rolling_restart": {"sent": r.sent, "failed": r.failed, "lost": r.lost},
    })
}
