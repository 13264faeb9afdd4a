//! Several `oakestra root` processes on one etcd are one root to their clients: they
//! share the CA, the tokens and the member records through the store, sealed with the
//! first root's join token (`trust::shared`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crds::Cluster;
use e2e::{binary, eventually, free_port, Etcd, RootServer};

const WAIT: Duration = Duration::from_secs(30);

/// Run `oakestra root` on `store` with a fresh data directory and `extra`, expecting it
/// to stop with an error; returns what it printed.
fn refused_root(store: &str, dir: &Path, name: &str, extra: &[&str]) -> String {
    let data = dir.join(name);
    let port = free_port();
    let mut child = Command::new(binary("oakestra"))
        .args([
            "root",
            "--no-controllers",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--store",
            store,
            "--data-dir",
            &data.display().to_string(),
        ])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start oakestra root");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > WAIT {
            let _ = child.kill();
            panic!("oakestra root {extra:?} kept running: it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!status.success(), "{text}");
    assert!(
        !data.join("pki/ca.crt").exists(),
        "a refused root made a CA of its own: {text}"
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roots_on_one_etcd_share_their_ca_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start();
    let store = format!("etcd:{}", etcd.url());
    let a = RootServer::start_with(&store, dir.path(), &["--no-controllers"]);
    let token = a.upstream().token;

    // A second root that cannot open what the first shares does not start, and says how.
    let text = refused_root(&store, dir.path(), "no-token", &[]);
    assert!(text.contains("--token"), "{text}");
    let (pin, _) = token.split_once("::").unwrap();
    let wrong_secret = format!("{pin}::abcdef.0123456789abcdef");
    let text = refused_root(&store, dir.path(), "wrong", &["--token", &wrong_secret]);
    assert!(text.contains("do not open"), "{text}");

    let b = RootServer::start_with(&store, dir.path(), &["--no-controllers", "--token", &token]);
    let ca = |root: &RootServer| std::fs::read_to_string(root.data_dir.join("pki/ca.crt")).unwrap();
    assert_eq!(ca(&a), ca(&b), "one CA");
    assert_eq!(e2e::join_token(&b.data_dir), token, "one first join token");

    // Either root's admin credentials work at the other, TLS verified by the shared CA.
    let a_at_b = client::kubeconfig::Kubeconfig::load(&a.kubeconfig())
        .unwrap()
        .resolve(None)
        .unwrap()
        .client(Some(&b.url()))
        .unwrap();
    let clusters = a_at_b.api::<Cluster>(None);
    let cluster = serde_json::json!({"apiVersion": "oakestra.io/v1", "kind": "Cluster",
        "metadata": {"name": "made-through-b"}, "spec": {}});
    clusters.dynamic().create(&cluster).await.unwrap();
    let got = b
        .client()
        .api::<Cluster>(None)
        .get("made-through-b")
        .await
        .unwrap();
    assert_eq!(got.metadata.name, "made-through-b");

    // A token created where root A runs is accepted by root B within a sync or two.
    let out = Command::new(binary("oakestra"))
        .args(["token", "create", "--admin", "--data-dir"])
        .arg(&a.data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bearer = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let with_token = |url: &str| {
        client::Client::with_tls(
            url,
            client::tls::TlsOptions {
                ca_pem: Some(ca(&a)),
                identity: None,
                bearer: Some(bearer.clone()),
                server_name: None,
            },
        )
        .unwrap()
    };
    let at_b = with_token(&b.url()).api::<Cluster>(None);
    eventually("root B accepts the token made at root A", WAIT, || async {
        at_b.get("made-through-b").await.ok()
    })
    .await;

    // Deleted at B, refused at A.
    let id = bearer.split_once('.').unwrap().0.to_string();
    let out = Command::new(binary("oakestra"))
        .args(["token", "delete", &id, "--data-dir"])
        .arg(&b.data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let at_a = with_token(&a.url()).api::<Cluster>(None);
    eventually(
        "root A refuses the token deleted at root B",
        WAIT,
        || async {
            match at_a.get("made-through-b").await {
                Err(e) if e.code() == Some(401) => Some(()),
                _ => None,
            }
        },
    )
    .await;

    // B restarts without --token: its data directory has what it needs.
    let mut b = b;
    b.restart();
    eventually("root B serves again after a restart", WAIT, || async {
        b.client()
            .api::<Cluster>(None)
            .get("made-through-b")
            .await
            .ok()
    })
    .await;
}

/// Leader election in seconds, not Kubernetes' 15/10/2, so a failover fits a test.
const QUICK_ELECTION: &[&str] = &[
    "--leader-elect-lease-duration",
    "3s",
    "--leader-elect-renew-deadline",
    "2s",
    "--leader-elect-retry-period",
    "500ms",
    "--cluster-heartbeat-timeout-seconds",
    "600",
];

/// A fresh etcd and two roots on it with `flags`, the second joining the first with
/// its token.
fn two_roots(dir: &Path, flags: &[&str]) -> (Etcd, [RootServer; 2]) {
    let etcd = Etcd::start();
    let store = format!("etcd:{}", etcd.url());
    let a = RootServer::start_with(&store, dir, flags);
    let token = a.upstream().token;
    let mut with_token = flags.to_vec();
    with_token.extend(["--token", &token]);
    let b = RootServer::start_with(&store, dir, &with_token);
    (etcd, [a, b])
}

/// The Service `work`: `replicas` processes `sleep MARKER`.
fn work_service(replicas: u32, marker: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "oakestra.io/v1", "kind": "Service", "metadata": {"name": "work"},
        "spec": {"replicas": replicas, "template": {"runtime": "process", "executable": "/bin/sh",
            "command": ["-c", format!("exec sleep {marker}")],
            "resources": {"cpuMillicores": 100, "memoryMiB": 32}}}})
}

/// Whether exactly `n` Instances of `work` exist and all are `Running`.
async fn work_running(instances: &client::Api<crds::Instance>, n: usize) -> bool {
    let live = e2e::instances_of(instances, "work").await;
    let running = live
        .iter()
        .filter(|i| {
            i.status
                .as_ref()
                .is_some_and(|s| s.phase == crds::Phase::Running)
        })
        .count();
    live.len() == n && running == n
}

/// How many times `root` logged that it started the root controllers.
fn controller_starts(root: &RootServer) -> usize {
    root.log().matches("starting root controllers").count()
}

/// The non-deleted Instances of `service`, with their clusters.
async fn placed(api: &client::Api<crds::Instance>, service: &str) -> Vec<Option<String>> {
    e2e::instances_of(api, service)
        .await
        .into_iter()
        .map(|i| i.spec.cluster)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_root_takes_the_controllers_over_when_the_leader_dies() {
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, mut roots) = two_roots(dir.path(), QUICK_ELECTION);

    // One of them leads: the Lease names it, and only it started the controllers.
    let first = eventually("a root holds the controllers' Lease", WAIT, || async {
        let lease = leases_at(&roots[0])
            .get(crds::ROOT_CONTROLLERS_LEASE)
            .await
            .ok()?;
        lease.spec.holder_identity.filter(|h| !h.is_empty())
    })
    .await;
    let leader = roots
        .iter()
        .position(|r| first.ends_with(&format!("_{}", r.port)))
        .unwrap_or_else(|| panic!("the holder {first:?} is neither root"));
    let standby = 1 - leader;
    e2e::stays(
        "only the leader runs the controllers",
        Duration::from_secs(2),
        || async {
            let starts = (
                controller_starts(&roots[leader]),
                controller_starts(&roots[standby]),
            );
            e2e::equals(&(1, 0), starts)
        },
    )
    .await;

    // A cluster with room for everything, as cluster sync would report it.
    let client = roots[standby].client();
    let clusters = client.api::<Cluster>(None);
    let cluster = serde_json::json!({"apiVersion": "oakestra.io/v1", "kind": "Cluster",
        "metadata": {"name": "c1"}, "spec": {"location": {"latitude": 48.1, "longitude": 11.6}}});
    clusters.dynamic().create(&cluster).await.unwrap();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let status = serde_json::json!({"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "Heartbeat", "lastTransitionTime": now}],
        "runtimes": ["container", "process"],
        "capacity": {"cpuMillicores": 64000, "memoryMiB": 65536, "nodes": 10},
        "allocatable": {"cpuMillicores": 64000, "memoryMiB": 65536, "nodes": 10}}});
    clusters.patch_status("c1", &status).await.unwrap();

    let services = client.api::<crds::Service>(Some("default"));
    let instances = client.api::<crds::Instance>(Some("default"));
    let service = |name: &str, replicas: u32| {
        serde_json::json!({"apiVersion": "oakestra.io/v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"replicas": replicas, "template": {"image": "localhost:5000/busybox:1",
                "resources": {"cpuMillicores": 10, "memoryMiB": 8}}}})
    };
    services
        .dynamic()
        .create(&service("web", 20))
        .await
        .unwrap();
    eventually("20 placed Instances", WAIT, || async {
        let p = placed(&instances, "web").await;
        (p.len() == 20 && p.iter().all(Option::is_some)).then_some(())
    })
    .await;

    // Scale up and kill the leader at once: the standby finishes the job, once.
    services
        .patch("web", &serde_json::json!({"spec": {"replicas": 60}}))
        .await
        .unwrap();
    roots[leader].kill9();
    let killed_at = Instant::now();
    let lease = eventually("the standby holds the Lease", WAIT, || async {
        let lease = leases_at(&roots[standby])
            .get(crds::ROOT_CONTROLLERS_LEASE)
            .await
            .ok()?;
        let holder = lease.spec.holder_identity.clone()?;
        holder
            .ends_with(&format!("_{}", roots[standby].port))
            .then_some(lease)
    })
    .await;
    let took_over = killed_at.elapsed();
    assert!(lease.spec.lease_transitions.unwrap_or(0) >= 1, "{lease:?}");
    assert!(lease.spec.acquire_time.is_some(), "{lease:?}");
    // The new leader writes the Lease first and logs its controllers' start after it.
    eventually("the standby starts its controllers", WAIT, || async {
        (controller_starts(&roots[standby]) >= 1).then_some(())
    })
    .await;
    assert_eq!(controller_starts(&roots[standby]), 1, "started once");
    eventually("60 placed Instances", WAIT, || async {
        let p = placed(&instances, "web").await;
        (p.len() == 60 && p.iter().all(Option::is_some)).then_some(())
    })
    .await;
    e2e::stays(
        "exactly 60 Instances, none doubled",
        Duration::from_secs(3),
        || async { e2e::equals(&60, placed(&instances, "web").await.len()) },
    )
    .await;
    eprintln!("the standby took the Lease over {took_over:?} after the leader was killed");

    // The new leader's address allocator knows what the old one handed out.
    services.dynamic().create(&service("api", 1)).await.unwrap();
    let ip = |name: &'static str| {
        let services = services.clone();
        async move { services.get(name).await.ok()?.status?.service_ip }
    };
    let api_ip = eventually("a service IP for api", WAIT, || ip("api")).await;
    let web_ip = ip("web").await.expect("web has a service IP");
    assert_ne!(api_ip, web_ip);
}

/// The Leases of `root`'s API.
fn leases_at(root: &RootServer) -> client::Api<crds::Lease> {
    root.client().api(None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_given_both_roots_keeps_working_when_one_dies() {
    let dir = tempfile::tempdir().unwrap();
    // A cluster silent for 4 s would become NotReady at the root.
    let mut flags = QUICK_ELECTION[..6].to_vec();
    flags.extend(["--cluster-heartbeat-timeout-seconds", "4"]);
    let (_etcd, [a, b]) = two_roots(dir.path(), &flags);

    let both = e2e::Upstream {
        url: format!("{},{}", a.url(), b.url()),
        token: a.upstream().token,
    };
    let port = free_port();
    let _cluster = e2e::Oakestra::start(
        "c1",
        &e2e::cluster_args("c1", &both, port, dir.path(), e2e::QUICK_CLUSTER),
        Some(port),
        dir.path(),
    );
    let upstream = e2e::Upstream::cluster(&format!("https://127.0.0.1:{port}"), dir.path(), "c1");
    let _worker = e2e::Oakestra::start(
        "w1",
        &e2e::worker_args("w1", &upstream, dir.path(), &["--heartbeat-seconds", "1"]),
        None,
        dir.path(),
    );
    let marker = format!("2{:07}1", std::process::id() % 10_000_000);
    let _cleanup = e2e::KillMatching(vec![format!("sleep {marker}")]);

    let at_b = b.client();
    let ready = |client: client::Client| async move {
        let c = client.api::<Cluster>(None).get("c1").await.ok()?;
        c.status
            .as_ref()
            .is_some_and(|s| crds::is_true(&s.conditions, "Ready"))
            .then_some(())
    };
    eventually("c1 Ready at the roots", WAIT, || ready(at_b.clone())).await;
    let service = |replicas: u32| work_service(replicas, &marker);
    let services = at_b.api::<crds::Service>(Some("default"));
    let instances = at_b.api::<crds::Instance>(Some("default"));
    services.dynamic().create(&service(1)).await.unwrap();
    let running = |n: usize| {
        let instances = instances.clone();
        async move { work_running(&instances, n).await.then_some(()) }
    };
    eventually("1 Running Instance", WAIT, || running(1)).await;

    // Root A goes: the cluster reports to B, stays Ready, and takes new work through B.
    let mut a = a;
    a.kill9();
    e2e::stays(
        "c1 stays Ready at root B",
        Duration::from_secs(8),
        || async { ready(at_b.clone()).await.ok_or("NotReady") },
    )
    .await;
    services
        .patch("work", &serde_json::json!({"spec": {"replicas": 2}}))
        .await
        .unwrap();
    eventually("2 Running Instances after root A died", WAIT, || running(2)).await;
}

/// `oakestra cluster --name c1` joining `root`, on `store` with its data in `data`,
/// serving on `port`, with quick heartbeats and elections.
fn standby_cluster_args(root: &e2e::Upstream, store: &str, data: &Path, port: u16) -> Vec<String> {
    let mut args: Vec<String> = [
        "cluster",
        "--name",
        "c1",
        "--root",
        &root.url,
        "--token",
        &root.token,
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--store",
        store,
        "--data-dir",
        &data.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(e2e::QUICK_CLUSTER.iter().map(|s| s.to_string()));
    args.extend(QUICK_ELECTION[..6].iter().map(|s| s.to_string()));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_cluster_orchestrator_takes_over_and_the_workload_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let root = RootServer::start(
        &format!("embedded:{}", dir.path().join("root").display()),
        dir.path(),
    );
    let etcd = Etcd::start();
    let store = format!("etcd:{}", etcd.url());
    // Two processes of cluster c1 on one etcd, each with its own data directory.
    let data = [dir.path().join("c1-x"), dir.path().join("c1-y")];
    let ports = [free_port(), free_port()];
    let x = e2e::Oakestra::start(
        "c1-x",
        &standby_cluster_args(&root.upstream(), &store, &data[0], ports[0]),
        Some(ports[0]),
        dir.path(),
    );
    let y = e2e::Oakestra::start(
        "c1-y",
        &standby_cluster_args(&root.upstream(), &store, &data[1], ports[1]),
        Some(ports[1]),
        dir.path(),
    );
    let mut processes = [x, y];
    let ca = |d: &Path| std::fs::read_to_string(d.join("pki/ca.crt")).unwrap();
    assert_eq!(ca(&data[0]), ca(&data[1]), "one cluster CA");

    let cluster = e2e::Upstream {
        url: format!("{},{}", processes[0].url(), processes[1].url()),
        token: e2e::join_token(&data[0]),
    };
    let _worker = e2e::Oakestra::start(
        "w1",
        &e2e::worker_args("w1", &cluster, dir.path(), &["--heartbeat-seconds", "1"]),
        None,
        dir.path(),
    );
    let marker = format!("3{:07}1", std::process::id() % 10_000_000);
    let _cleanup = e2e::KillMatching(vec![format!("sleep {marker}")]);

    let api = root.client();
    let services = api.api::<crds::Service>(Some("default"));
    let instances = api.api::<crds::Instance>(Some("default"));
    let service = |replicas: u32| work_service(replicas, &marker);
    let running = |n: usize| {
        let instances = instances.clone();
        let marker = marker.clone();
        async move {
            let processes = e2e::processes_matching(&format!("sleep {marker}")).len();
            (work_running(&instances, n).await && processes == n).then_some(())
        }
    };
    services.dynamic().create(&service(1)).await.unwrap();
    eventually("1 Running Instance", WAIT, || running(1)).await;

    // The cluster's leader: the holder of its controllers' Lease, in its own API.
    let leases = e2e::tier_client(&e2e::tier_kubeconfig(&data[0])).api::<crds::Lease>(None);
    let holder = eventually("a cluster process leads", WAIT, || async {
        leases
            .get(crds::CLUSTER_CONTROLLERS_LEASE)
            .await
            .ok()?
            .spec
            .holder_identity
    })
    .await;
    let leader = ports
        .iter()
        .position(|p| holder.ends_with(&format!("_{p}")))
        .unwrap_or_else(|| panic!("the holder {holder:?} is neither process"));
    let standby = 1 - leader;
    let pids = e2e::processes_matching(&format!("sleep {marker}"));
    processes[leader].kill9();

    // The workload never stops; the standby leads; the cluster takes new work.
    let standby_leases =
        e2e::tier_client(&e2e::tier_kubeconfig(&data[standby])).api::<crds::Lease>(None);
    eventually("the standby leads", WAIT, || async {
        let lease = standby_leases
            .get(crds::CLUSTER_CONTROLLERS_LEASE)
            .await
            .ok()?;
        lease
            .spec
            .holder_identity
            .filter(|h| h.ends_with(&format!("_{}", ports[standby])))
    })
    .await;
    assert_eq!(
        e2e::processes_matching(&format!("sleep {marker}")),
        pids,
        "the workload kept running, untouched"
    );
    services
        .patch("work", &serde_json::json!({"spec": {"replicas": 2}}))
        .await
        .unwrap();
    eventually("2 Running Instances through the standby", WAIT, || {
        running(2)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_the_roots_under_writes_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_etcd, mut roots) = two_roots(dir.path(), QUICK_ELECTION);

    // A writer given both roots, retrying a failed create once as clients do.
    let client = client::kubeconfig::Kubeconfig::load(&roots[0].kubeconfig())
        .unwrap()
        .resolve(None)
        .unwrap()
        .client(Some(&format!("{},{}", roots[0].url(), roots[1].url())))
        .unwrap();
    let configmaps = client.dynamic(crds::kind_by_name("configmaps").unwrap(), Some("default"));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn({
        let (stop, configmaps) = (stop.clone(), configmaps.clone());
        async move {
            let (mut acknowledged, mut first_failures, mut unwritten) = (Vec::new(), 0, Vec::new());
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("load-{n}");
                n += 1;
                let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name}, "data": {"n": n.to_string()}});
                let written = match configmaps.create(&body).await {
                    Ok(_) => true,
                    Err(_) => {
                        first_failures += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        match configmaps.create(&body).await {
                            Ok(_) => true,
                            // The first attempt was written after all.
                            Err(e) => e.is_conflict(),
                        }
                    }
                };
                if written {
                    acknowledged.push(name);
                } else {
                    unwritten.push(name);
                }
            }
            (acknowledged, first_failures, unwritten)
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    for root in roots.iter_mut() {
        let port = root.port;
        let pid = root.pid().unwrap();
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        eventually("the root stops listening", WAIT, || async {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .is_err()
                .then_some(())
        })
        .await;
        root.restart();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acknowledged, first_failures, unwritten) = writer.await.unwrap();
    eprintln!(
        "{} writes acknowledged, {first_failures} needed a retry, {} failed twice",
        acknowledged.len(),
        unwritten.len()
    );
    assert!(
        acknowledged.len() > 50,
        "the writer hardly wrote: {}",
        acknowledged.len()
    );
    assert!(
        unwritten.is_empty(),
        "writes that failed twice: {unwritten:?}"
    );
    let stored = configmaps
        .list(&client::ListParams::default())
        .await
        .unwrap();
    let present: std::collections::HashSet<&str> = stored["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|n| !present.contains(n.as_str()))
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}
