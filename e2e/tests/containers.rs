//! Real containers: a private containerd, a local docker-registry and busybox images built
//! for the test. 1-DOC through `oakestra up` (instance IPs, published ports, logs, OOM,
//! a missing image, adoption after kill -9, clean delete), and
//! the hierarchy with two containerd workers sharing one containerd beside a process
//! worker.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use client::{Api, Client, ListParams};
use crds::{Instance, Phase};
use e2e::containers::{Containerd, Registry};
use e2e::{eventually, free_port, Oakestra, RootServer};

const WAIT: Duration = Duration::from_secs(90);

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.lines().next()?;
    (status.starts_with("HTTP/1.") && status.contains(" 200 ")).then_some(out)
}

/// A web server image: writes `<instance> <marker>` as its index page, says so on stdout.
fn web_image(registry: &Registry, tag: &str) -> String {
    registry.push_busybox(
        "web",
        tag,
        &[
            "/bin/sh",
            "-c",
            "echo \"$OAKESTRA_INSTANCE $(cat /marker)\" > /index.html; echo serving $OAKESTRA_INSTANCE; exec httpd -f -p 80 -h /",
        ],
        tag,
    )
}

fn apply(server: &str, dir: &std::path::Path, name: &str, yaml: &str) {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    let out = e2e::oakctl(server, &["apply", "-f", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn service(name: &str, replicas: u32, template: &str) -> String {
    format!("apiVersion: oakestra.io/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  template:\n{template}")
}

/// Instances of `service` (not being deleted).
async fn instances_of(api: &Api<Instance>, service: &str) -> Vec<Instance> {
    let (items, _) = api.list(&ListParams::default()).await.unwrap_or_default();
    items
        .into_iter()
        .filter(|i| i.spec.service == service && i.metadata.deletion_timestamp.is_none())
        .collect()
}

/// Wait until `n` Instances of `service` are Running; returns them.
async fn running(api: &Api<Instance>, service: &str, n: usize) -> Vec<Instance> {
    eventually(
        &format!("{n} Running instances of {service}"),
        WAIT,
        || async {
            let items = instances_of(api, service).await;
            let ok = items.len() == n
                && items
                    .iter()
                    .all(|i| i.status.as_ref().is_some_and(|s| s.phase == Phase::Running));
            ok.then_some(items)
        },
    )
    .await
}

fn netns_left(prefix: &str) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_device_runs_containers() {
    let _one_at_a_time = e2e::containers::exclusive().await;
    let containerd = Containerd::start();
    let registry = Registry::start();
    let v1 = web_image(&registry, "v1");
    let dir = tempfile::tempdir().unwrap();
    let (api_port, cluster_port) = (free_port(), free_port());
    let up_args = e2e::up_args(
        api_port,
        cluster_port,
        &dir.path().join("data"),
        &[
            "--containerd-socket",
            &containerd.socket.display().to_string(),
        ],
    );
    let mut up = Oakestra::start("up", &up_args, Some(api_port), dir.path());
    let server = up.url();
    let api: Api<Instance> = Client::new(&server).unwrap().api(Some("default"));
    let ns = "oakestra-local";

    // Two replicas, each on its own instance IP.
    let applied = Instant::now();
    let web = |image: &str| {
        service(
            "web",
            2,
            &format!("    runtime: container\n    image: {image}\n    resources: {{cpuMillicores: 200, memoryMiB: 32}}\n"),
        )
    };
    apply(&server, dir.path(), "web", &web(&v1));
    let items = running(&api, "web", 2).await;
    println!(
        "apply -> 2 containers Running: {:?} (incl. first pull)",
        applied.elapsed()
    );
    for i in &items {
        let ip = i
            .status
            .as_ref()
            .unwrap()
            .instance_ip
            .expect("an instance IP");
        let page = eventually(&format!("HTTP from {ip}"), WAIT, || async move {
            http_get(&format!("{ip}:80"), "/index.html")
        })
        .await;
        assert!(page.contains(&format!("{} v1", i.metadata.name)), "{page}");
    }
    let tasks = containerd.tasks(ns);
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    assert!(tasks.values().all(|(_, s)| s == "RUNNING"), "{tasks:?}");
    // Logs through oakctl.
    let name = items[0].metadata.name.clone();
    let logs = eventually("the container's output in oakctl logs", WAIT, || async {
        let out = e2e::oakctl(&server, &["logs", &name]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains(&format!("serving {name}")).then_some(text)
    })
    .await;
    assert!(!logs.is_empty());

    // A published port on the node's address.
    let host_port = free_port();
    apply(
        &server,
        dir.path(),
        "front",
        &service(
            "front",
            1,
            &format!("    runtime: container\n    image: {v1}\n    ports:\n    - {{containerPort: 80, hostPort: {host_port}}}\n"),
        ),
    );
    running(&api, "front", 1).await;
    let page = eventually("HTTP on the published port", WAIT, || async {
        http_get(&format!("127.0.0.1:{host_port}"), "/index.html")
    })
    .await;
    assert!(page.contains("front-"), "{page}");

    // Memory is enforced: a hog is OOMKilled; a missing image says why.
    apply(
        &server,
        dir.path(),
        "hog",
        &service(
            "hog",
            1,
            &format!("    runtime: container\n    image: {v1}\n    command: [/bin/sh, -c, 'x=a; while true; do x=$x$x; done']\n    restartPolicy: Never\n    resources: {{memoryMiB: 16}}\n"),
        ),
    );
    let missing = format!("{}/does-not-exist:1", registry.host);
    apply(
        &server,
        dir.path(),
        "ghost",
        &service(
            "ghost",
            1,
            &format!("    runtime: container\n    image: {missing}\n"),
        ),
    );
    for (svc, reason) in [("hog", "OOMKilled"), ("ghost", "ImagePullFailed")] {
        eventually(&format!("{svc}: {reason}"), WAIT, || async {
            let items = instances_of(&api, svc).await;
            let s = items.first()?.status.clone()?;
            (s.phase == Phase::Failed && s.reason == reason).then_some(())
        })
        .await;
    }
    let ghost = instances_of(&api, "ghost").await.remove(0).metadata.name;
    let out = e2e::oakctl(&server, &["describe", "instance", &ghost]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ImagePullFailed") && text.contains("manifest unknown")
            || text.contains("name unknown"),
        "{text}"
    );
    for svc in ["hog", "ghost"] {
        assert!(e2e::oakctl(&server, &["delete", "service", svc])
            .status
            .success());
    }

    // kill -9 everything of oakestra: the containers run on; a restart adopts them.
    let before = eventually("only web and front containers", WAIT, || async {
        let tasks = containerd.tasks(ns);
        (tasks.len() == 3).then_some(tasks)
    })
    .await;
    up.kill9();
    assert_eq!(containerd.tasks(ns), before, "containers outlive the agent");
    up.restart();
    running(&api, "web", 2).await;
    running(&api, "front", 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        containerd.tasks(ns),
        before,
        "adopted: same containers, same pids"
    );
    let page = eventually(
        "the published port again after the restart",
        WAIT,
        || async { http_get(&format!("127.0.0.1:{host_port}"), "/index.html") },
    )
    .await;
    assert!(page.contains("front-"), "{page}");

    // Delete: no container, no task, no network namespace left.
    for svc in ["web", "front"] {
        assert!(e2e::oakctl(&server, &["delete", "service", svc])
            .status
            .success());
    }
    eventually("every container gone", WAIT, || async {
        (containerd.containers(ns).is_empty() && instances_of(&api, "web").await.is_empty())
            .then_some(())
    })
    .await;
    assert_eq!(netns_left("oak-default_web"), Vec::<String>::new());
    assert_eq!(netns_left("oak-default_front"), Vec::<String>::new());
}

/// One root, two clusters; cluster `ca` has containerd worker `ca1`, cluster `cb` has
/// containerd worker `cb1` and process-only worker `cb2`. Both containerd workers share
/// one containerd, each in its own namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_across_the_hierarchy() {
    let _one_at_a_time = e2e::containers::exclusive().await;
    let containerd = Containerd::start();
    let registry = Registry::start();
    let image = registry.push_busybox("sleeper", "1", &["/bin/sleep", "3600"], "1");
    let dir = tempfile::tempdir().unwrap();
    let root = RootServer::start(
        &format!("embedded:{}", dir.path().join("root").display()),
        dir.path(),
    );
    let socket = containerd.socket.display().to_string();
    let mut processes = Vec::new();
    for (cluster, workers) in [
        ("ca", vec![("ca1", "containerd")]),
        ("cb", vec![("cb1", "containerd"), ("cb2", "process")]),
    ] {
        let port = free_port();
        let c = Oakestra::start(
            cluster,
            &args(&[
                "cluster",
                "--name",
                cluster,
                "--root",
                &root.url(),
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--store",
                &format!("embedded:{}", dir.path().join(cluster).display()),
                "--heartbeat-seconds",
                "1",
            ]),
            Some(port),
            dir.path(),
        );
        for (node, runtime) in workers {
            processes.push(Oakestra::start(
                node,
                &args(&[
                    "worker",
                    "--cluster",
                    &c.url(),
                    "--name",
                    node,
                    "--runtime",
                    runtime,
                    "--containerd-socket",
                    &socket,
                    "--heartbeat-seconds",
                    "1",
                    "--data-dir",
                    &dir.path().join("workers").display().to_string(),
                ]),
                None,
                dir.path(),
            ));
        }
        processes.push(c);
    }
    let server = root.url();
    let root_client = Client::new(&server).unwrap();
    let api: Api<Instance> = root_client.api(Some("default"));
    let clusters: Api<crds::Cluster> = root_client.api(None);
    eventually("both clusters Ready, cb with 2 nodes", WAIT, || async {
        let (items, _) = clusters.list(&ListParams::default()).await.ok()?;
        let ready = items.iter().filter(|c| {
            let s = c.status.clone().unwrap_or_default();
            crds::is_true(&s.conditions, "Ready")
                && s.runtimes.contains(&crds::Runtime::Container)
                && s.capacity
                    .as_ref()
                    .is_some_and(|cap| cap.nodes == if c.metadata.name == "cb" { 2 } else { 1 })
        });
        (ready.count() == 2).then_some(())
    })
    .await;
    let marker = format!("oakestra-e2e-{}", free_port());
    let _cleanup = e2e::KillMatching(vec![marker.clone()]);
    let sleepers = |n: u32| {
        service(
            "sleepers",
            n,
            &format!("    runtime: container\n    image: {image}\n    resources: {{cpuMillicores: 100, memoryMiB: 16}}\n"),
        )
    };
    apply(&server, dir.path(), "sleepers", &sleepers(4));
    apply(
        &server,
        dir.path(),
        "native",
        &service(
            "native",
            1,
            &format!("    runtime: process\n    executable: /bin/sh\n    command: [-c, 'exec sleep 3600 {marker}']\n"),
        ),
    );
    let items = running(&api, "sleepers", 4).await;
    let per_node: BTreeMap<String, usize> = items.iter().fold(BTreeMap::new(), |mut m, i| {
        *m.entry(i.spec.node.clone().unwrap()).or_default() += 1;
        m
    });
    assert_eq!(
        per_node,
        BTreeMap::from([("ca1".to_string(), 2), ("cb1".to_string(), 2)]),
        "containers spread over the two clusters' containerd nodes"
    );
    assert_eq!(containerd.tasks("oakestra-ca1").len(), 2);
    assert_eq!(containerd.tasks("oakestra-cb1").len(), 2);
    // Native processes run on any node: containerd workers supervise them too.
    running(&api, "native", 1).await;

    // Scale down, then delete: containerd is left empty in both namespaces.
    apply(&server, dir.path(), "sleepers", &sleepers(2));
    eventually("two containers left", WAIT, || async {
        let n = containerd.containers("oakestra-ca1").len()
            + containerd.containers("oakestra-cb1").len();
        (n == 2 && instances_of(&api, "sleepers").await.len() == 2).then_some(())
    })
    .await;
    for svc in ["sleepers", "native"] {
        assert!(e2e::oakctl(&server, &["delete", "service", svc])
            .status
            .success());
    }
    eventually("no container in either namespace", WAIT, || async {
        (containerd.containers("oakestra-ca1").is_empty()
            && containerd.containers("oakestra-cb1").is_empty())
        .then_some(())
    })
    .await;
}
