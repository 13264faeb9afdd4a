//! Real containers: a private containerd, a local docker-registry and busybox images built
//! for the test. 1-DOC through `oakestra up` (instance IPs, published ports, logs, OOM,
//! a missing image, a rolling image change, adoption after kill -9, clean delete), and
//! the hierarchy with two containerd workers sharing one containerd beside a process
//! worker (spread, a root outage, a worker failover, an image rollout, scale down,
//! delete).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use client::{Api, ListParams};
use crds::{Instance, Phase};
use e2e::containers::{Containerd, Registry};
use e2e::{equals, eventually, free_port, stays, Oakestra, RootServer};

const WAIT: Duration = Duration::from_secs(90);

/// One bounded HTTP/1.0 GET (2 s to connect, 5 s to answer); the body on a 200.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.lines().next()?;
    (status.starts_with("HTTP/1.") && status.contains(" 200 ")).then_some(out)
}

/// `oakctl apply` the manifest `yaml`, written to `dir/NAME.yaml`, with `kubeconfig`.
fn apply(kubeconfig: &Path, dir: &Path, name: &str, yaml: &str) {
    e2e::apply_manifest(kubeconfig, dir, &format!("{name}.yaml"), yaml);
}

fn service(name: &str, replicas: u32, template: &str) -> String {
    format!("apiVersion: oakestra.io/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  template:\n{template}")
}

/// Wait until `n` Instances of `service` are Running; returns them.
async fn running(api: &Api<Instance>, service: &str, n: usize) -> Vec<Instance> {
    e2e::running_instances(api, service, n, WAIT).await
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
    let v1 = registry.push_web("v1");
    let v2 = registry.push_web("v2");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (api_port, cluster_port) = (free_port(), free_port());
    let up_args = e2e::up_args(
        api_port,
        cluster_port,
        &data,
        &[
            "--containerd-socket",
            &containerd.socket.display().to_string(),
        ],
    );
    let mut up = Oakestra::start("up", &up_args, Some(api_port), dir.path());
    let kubeconfig = e2e::up_kubeconfig(&data);
    let api: Api<Instance> = e2e::tier_client(&kubeconfig).api(Some("default"));
    let ns = "oakestra-local";

    // Two replicas, each on its own instance IP.
    let applied = Instant::now();
    let web = |image: &str| {
        service(
            "web",
            2,
            &format!("    runtime: container\n    image: {image}\n    ports: [{{containerPort: 80}}]\n    resources: {{cpuMillicores: 200, memoryMiB: 32}}\n"),
        )
    };
    apply(&kubeconfig, dir.path(), "web", &web(&v1));
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
    // The Service's IP, from the device itself: both replicas answer.
    let services: Api<crds::Service> = e2e::tier_client(&kubeconfig).api(Some("default"));
    let service_ip = eventually("web's service IP", WAIT, || async {
        services.get("web").await.ok()?.status?.service_ip
    })
    .await;
    let answered = eventually(
        &format!("both replicas through {service_ip}"),
        WAIT,
        || async {
            let mut names = std::collections::BTreeSet::new();
            for _ in 0..6 {
                let page = http_get(&format!("{service_ip}:80"), "/index.html")?;
                names.insert(page.lines().last()?.split_whitespace().next()?.to_string());
            }
            (names.len() == 2).then_some(names)
        },
    )
    .await;
    let mut expected: Vec<String> = items.iter().map(|i| i.metadata.name.clone()).collect();
    expected.sort();
    assert_eq!(answered.into_iter().collect::<Vec<_>>(), expected);
    let tasks = containerd.tasks(ns);
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    assert!(tasks.values().all(|(_, s)| s == "RUNNING"), "{tasks:?}");
    // Logs through oakctl.
    let name = items[0].metadata.name.clone();
    let logs = eventually("the container's output in oakctl logs", WAIT, || async {
        let out = e2e::oakctl(&kubeconfig, &["logs", &name]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains(&format!("serving {name}")).then_some(text)
    })
    .await;
    assert!(!logs.is_empty());

    // A published port on the node's address.
    let host_port = free_port();
    let front = |replicas: u32, image: &str| {
        service(
            "front",
            replicas,
            &format!("    runtime: container\n    image: {image}\n    ports:\n    - {{containerPort: 80, hostPort: {host_port}}}\n"),
        )
    };
    apply(&kubeconfig, dir.path(), "front", &front(1, &v1));
    running(&api, "front", 1).await;
    let page = eventually("HTTP on the published port", WAIT, || async {
        http_get(&format!("127.0.0.1:{host_port}"), "/index.html")
    })
    .await;
    assert!(page.contains("front-"), "{page}");

    // Memory is enforced: a hog is OOMKilled; a missing image says why.
    apply(
        &kubeconfig,
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
        &kubeconfig,
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
            let items = e2e::instances_of(&api, svc).await;
            let s = items.first()?.status.clone()?;
            (s.phase == Phase::Failed && s.reason == reason).then_some(())
        })
        .await;
    }
    let ghost = e2e::instances_of(&api, "ghost")
        .await
        .remove(0)
        .metadata
        .name;
    let out = e2e::oakctl(&kubeconfig, &["describe", "instance", &ghost]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ImagePullFailed") && text.contains("manifest unknown")
            || text.contains("name unknown"),
        "{text}"
    );
    for svc in ["hog", "ghost"] {
        assert!(e2e::oakctl(&kubeconfig, &["delete", "service", svc])
            .status
            .success());
    }

    // Change the image: both replicas are replaced by v2 containers, one at a time.
    let rolled = Instant::now();
    apply(&kubeconfig, dir.path(), "web", &web(&v2));
    eventually("both replicas serving v2", WAIT, || async {
        let items = e2e::instances_of(&api, "web").await;
        let mut v2_pages = 0;
        for i in &items {
            let s = i.status.as_ref()?;
            if s.phase != Phase::Running || i.spec.template.image.as_deref() != Some(v2.as_str()) {
                return None;
            }
            let page = http_get(&format!("{}:80", s.instance_ip?), "/index.html")?;
            v2_pages += page.contains(&format!("{} v2", i.metadata.name)) as usize;
        }
        (items.len() == 2 && v2_pages == 2).then_some(())
    })
    .await;
    println!(
        "image change -> 2 v2 containers serving: {:?}",
        rolled.elapsed()
    );
    let web_images = eventually("the v1 web containers removed", WAIT, || async {
        let listed = containerd.ctr(ns, &["containers", "ls"]);
        let web: Vec<String> = listed
            .lines()
            .filter(|l| l.starts_with("default_web-"))
            .map(|l| l.split_whitespace().nth(1).unwrap_or_default().to_string())
            .collect();
        (!web.contains(&v1)).then_some(web)
    })
    .await;
    assert_eq!(web_images, vec![v2.clone(), v2.clone()]);

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
    stays(
        &format!("adopted: the same containers with the same pids {before:?}"),
        Duration::from_secs(3),
        || async { equals(&before, containerd.tasks(ns)) },
    )
    .await;
    let page = eventually(
        "the published port again after the restart",
        WAIT,
        || async { http_get(&format!("127.0.0.1:{host_port}"), "/index.html") },
    )
    .await;
    assert!(page.contains("front-"), "{page}");

    // A new image for the service with the host port: on the only node the old instance
    // holds the port, so the new one cannot be placed until the old one has gone.
    apply(&kubeconfig, dir.path(), "front", &front(1, &v2));
    let page = eventually("v2 on the published port", WAIT, || async {
        let page = http_get(&format!("127.0.0.1:{host_port}"), "/index.html")?;
        page.contains(" v2").then_some(page)
    })
    .await;
    let items = running(&api, "front", 1).await;
    assert!(page.contains(&items[0].metadata.name), "{page}");
    // Two replicas cannot share the port of one node: the second says so.
    apply(&kubeconfig, dir.path(), "front", &front(2, &v2));
    let port_taken = format!("host port {host_port}/tcp is taken");
    eventually("the second replica waits for the port", WAIT, || async {
        let items = e2e::instances_of(&api, "front").await;
        let pending = items.iter().find(|i| i.spec.ordinal == 1)?.status.clone()?;
        (pending.phase == Phase::Pending && pending.message.contains(&port_taken)).then_some(())
    })
    .await;

    // Delete: no container, no task, no network namespace left.
    for svc in ["web", "front"] {
        assert!(e2e::oakctl(&kubeconfig, &["delete", "service", svc])
            .status
            .success());
    }
    eventually("every container gone", WAIT, || async {
        (containerd.containers(ns).is_empty() && e2e::instances_of(&api, "web").await.is_empty())
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
    let image2 = registry.push_busybox("sleeper", "2", &["/bin/sleep", "3600"], "2");
    let dir = tempfile::tempdir().unwrap();
    let mut root = RootServer::start(
        &format!("embedded:{}", dir.path().join("root").display()),
        dir.path(),
    );
    let socket = containerd.socket.display().to_string();
    let (mut clusters, mut workers) = (Vec::new(), BTreeMap::new());
    for (cluster, nodes) in [
        ("ca", vec![("ca1", "containerd")]),
        ("cb", vec![("cb1", "containerd"), ("cb2", "process")]),
    ] {
        let port = free_port();
        let c = Oakestra::start(
            cluster,
            &e2e::cluster_args(
                cluster,
                &root.upstream(),
                port,
                dir.path(),
                e2e::QUICK_CLUSTER,
            ),
            Some(port),
            dir.path(),
        );
        let upstream = e2e::Upstream::cluster(&c.url(), dir.path(), cluster);
        for (node, runtime) in nodes {
            let worker = Oakestra::start(
                node,
                &e2e::worker_args(
                    node,
                    &upstream,
                    dir.path(),
                    &[
                        "--runtime",
                        runtime,
                        "--containerd-socket",
                        &socket,
                        "--heartbeat-seconds",
                        "1",
                    ],
                ),
                None,
                dir.path(),
            );
            workers.insert(node, worker);
        }
        clusters.push(c);
    }
    let kubeconfig = root.kubeconfig();
    let root_client = root.client();
    let api: Api<Instance> = root_client.api(Some("default"));
    let clusters: Api<crds::Cluster> = root_client.api(None);
    eventually("both clusters Ready, cb with 2 nodes", WAIT, || async {
        let (items, _) = clusters.list(&ListParams::default()).await.ok()?;
        let ready = items.iter().filter(|c| {
            let s = c.status.clone().unwrap_or_default();
            crds::is_true(&s.conditions, "Ready")
                && s.runtimes.contains(&crds::RuntimeKind::Container)
                && s.capacity
                    .as_ref()
                    .is_some_and(|cap| cap.nodes == if c.metadata.name == "cb" { 2 } else { 1 })
        });
        (ready.count() == 2).then_some(())
    })
    .await;
    // A number, so that `sleep` takes it as its duration.
    let marker = format!("7{:05}1", free_port());
    let _cleanup = e2e::KillMatching(vec![marker.clone()]);
    let sleepers = |n: u32, image: &str| {
        service(
            "sleepers",
            n,
            &format!("    runtime: container\n    image: {image}\n    resources: {{cpuMillicores: 100, memoryMiB: 16}}\n"),
        )
    };
    apply(&kubeconfig, dir.path(), "sleepers", &sleepers(4, &image));
    apply(
        &kubeconfig,
        dir.path(),
        "native",
        &service(
            "native",
            1,
            &format!("    runtime: process\n    executable: /bin/sh\n    command: [-c, 'exec sleep {marker}']\n"),
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
    eventually("the native process", WAIT, || async {
        (e2e::processes_matching(&marker).len() == 1).then_some(())
    })
    .await;

    // The root goes away: the containers run on; it comes back, nothing is duplicated.
    let tasks = || {
        let mut all = containerd.tasks("oakestra-ca1");
        all.extend(containerd.tasks("oakestra-cb1"));
        all
    };
    let before = tasks();
    root.kill9();
    stays(
        &format!("containers kept running without the root: {before:?}"),
        Duration::from_secs(4),
        || async { equals(&before, tasks()) },
    )
    .await;
    root.restart();
    running(&api, "sleepers", 4).await;
    assert_eq!(
        tasks(),
        before,
        "the same containers after the root is back"
    );

    // A containerd worker dies: its containers run again on the other cluster's
    // containerd node (cb2 runs processes only), after heartbeat timeout + eviction +
    // hand-back.
    workers.get_mut("cb1").unwrap().kill9();
    let killed = Instant::now();
    eventually("the 4 sleepers Running on ca1", WAIT, || async {
        let items = e2e::instances_of(&api, "sleepers").await;
        let moved = items.len() == 4
            && items.iter().all(|i| {
                i.spec.node.as_deref() == Some("ca1")
                    && i.status.as_ref().is_some_and(|s| s.phase == Phase::Running)
            });
        moved.then_some(())
    })
    .await;
    println!("containers failed over from cb1 in {:?}", killed.elapsed());
    assert_eq!(containerd.tasks("oakestra-ca1").len(), 4);
    // Its containers outlived it; back, it removes what is no longer bound to it.
    assert_eq!(containerd.tasks("oakestra-cb1").len(), 2);
    workers.get_mut("cb1").unwrap().restart();
    eventually("cb1's stale containers removed", WAIT, || async {
        containerd
            .containers("oakestra-cb1")
            .is_empty()
            .then_some(())
    })
    .await;

    // A new image tag rolls through both clusters (cb1 is back in use).
    apply(&kubeconfig, dir.path(), "sleepers", &sleepers(4, &image2));
    let images = || {
        ["oakestra-ca1", "oakestra-cb1"]
            .iter()
            .flat_map(|ns| {
                let listed = containerd.ctr(ns, &["containers", "ls"]);
                listed
                    .lines()
                    .skip(1)
                    .filter_map(|l| Some(l.split_whitespace().nth(1)?.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    eventually(
        "4 containers of the new tag, none of the old",
        WAIT,
        || async {
            let rolled = running(&api, "sleepers", 4)
                .await
                .iter()
                .all(|i| i.spec.template.image.as_deref() == Some(image2.as_str()));
            (rolled && images() == vec![image2.clone(); 4]).then_some(())
        },
    )
    .await;
    assert!(!containerd.tasks("oakestra-cb1").is_empty(), "spread again");

    // Scale down, then delete: containerd is left empty in both namespaces.
    apply(&kubeconfig, dir.path(), "sleepers", &sleepers(2, &image2));
    eventually("two containers left", WAIT, || async {
        let n = containerd.containers("oakestra-ca1").len()
            + containerd.containers("oakestra-cb1").len();
        (n == 2 && e2e::instances_of(&api, "sleepers").await.len() == 2).then_some(())
    })
    .await;
    for svc in ["sleepers", "native"] {
        assert!(e2e::oakctl(&kubeconfig, &["delete", "service", svc])
            .status
            .success());
    }
    eventually("no container in either namespace", WAIT, || async {
        (containerd.containers("oakestra-ca1").is_empty()
            && containerd.containers("oakestra-cb1").is_empty()
            && e2e::processes_matching(&marker).is_empty())
        .then_some(())
    })
    .await;
}
