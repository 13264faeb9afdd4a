//! The hierarchy with real processes: one root, two clusters, three workers running
//! native processes (the process runtime). One test per scenario, each on a hierarchy of
//! its own: replicas spread over both clusters, get addresses in their node's subnet and
//! serve their logs; they scale, roll to a new template, survive an agent restart, a
//! root outage and a worker crash, and leave nothing behind when deleted. What fits a
//! cluster but none of its nodes is handed back with the reason. Their environment
//! takes values from `ConfigMap`s and Secrets applied at the root. Each controller owns
//! its part of an Instance's status (`metadata.managedFields`).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use client::{Api, Client, ListParams};
use crds::{Instance, Phase};
use e2e::{equals, eventually, free_port, stays, KillMatching, Oakestra, RootServer};

const WAIT: Duration = Duration::from_secs(60);

/// Live processes whose command line contains `marker`, as pid → command line.
fn processes(marker: &str) -> BTreeMap<u32, String> {
    e2e::processes_matching(marker)
}

/// The pids of the live processes whose command line contains `marker`.
fn pids(marker: &str) -> HashSet<u32> {
    processes(marker).keys().copied().collect()
}

/// Tells the tests of this file apart in their markers, as they run at the same time.
static TESTS: AtomicU32 = AtomicU32::new(0);

struct Topology {
    root: RootServer,
    clusters: Vec<Oakestra>,
    workers: BTreeMap<String, Oakestra>,
    api: Client,
    dir: tempfile::TempDir,
    /// The markers of a first and a second template: numbers, so that `sleep` takes them
    /// as its duration, and unique to the test, so that its processes are told apart.
    markers: [String; 2],
    /// Kills the test's workload processes, which outlive killed agents.
    _cleanup: KillMatching,
}

impl Topology {
    /// Start the root, both clusters and their workers, and wait until both clusters
    /// report their nodes to the root.
    async fn start() -> Topology {
        let dir = tempfile::tempdir().unwrap();
        let root = RootServer::start_with(
            &format!("embedded:{}", dir.path().join("root").display()),
            dir.path(),
            &[
                "--cluster-grace-seconds",
                "3",
                "--cluster-heartbeat-timeout-seconds",
                "4",
            ],
        );
        let mut clusters = Vec::new();
        let mut workers = BTreeMap::new();
        for (name, location, nodes) in [
            ("c1", "48.1,11.6", vec!["w1", "w2"]),
            ("c2", "52.5,13.4", vec!["w3"]),
        ] {
            let port = free_port();
            let mut flags = vec!["--location", location];
            flags.extend_from_slice(e2e::QUICK_CLUSTER);
            let cluster = Oakestra::start(
                name,
                &e2e::cluster_args(name, &root.upstream(), port, dir.path(), &flags),
                Some(port),
                dir.path(),
            );
            let upstream = e2e::Upstream::cluster(&cluster.url(), dir.path(), name);
            for node in nodes {
                let worker = Oakestra::start(
                    node,
                    &e2e::worker_args(
                        node,
                        &upstream,
                        dir.path(),
                        &["--heartbeat-seconds", "1", "--runtime", "process"],
                    ),
                    None,
                    dir.path(),
                );
                workers.insert(node.to_string(), worker);
            }
            clusters.push(cluster);
        }
        let api = root.client();
        let test = TESTS.fetch_add(1, Ordering::Relaxed);
        let markers =
            [1, 2].map(|template| format!("1{:06}{test:02}{template}", std::process::id()));
        let _cleanup = KillMatching(markers.iter().map(|m| format!("sleep {m}")).collect());
        let t = Topology {
            root,
            clusters,
            workers,
            api,
            dir,
            markers,
            _cleanup,
        };
        t.clusters_ready().await;
        t
    }

    /// A topology running `replicas` Instances of `work` with the first template;
    /// returns it and how many run on each node.
    async fn with_work(replicas: u32) -> (Topology, BTreeMap<String, usize>) {
        let t = Topology::start().await;
        let marker = t.markers[0].clone();
        t.apply(replicas, &marker);
        let per = t.running(replicas as usize, &marker).await;
        (t, per)
    }

    /// Wait until both clusters are Ready at the root, c1 with two nodes, c2 with one.
    async fn clusters_ready(&self) {
        eventually("clusters ready with their nodes", WAIT, || async {
            let (clusters, _) = self
                .api
                .api::<crds::Cluster>(None)
                .list(&ListParams::default())
                .await
                .ok()?;
            let ready: BTreeMap<String, u32> = clusters
                .iter()
                .filter(|c| {
                    c.status
                        .as_ref()
                        .is_some_and(|s| crds::is_true(&s.conditions, "Ready"))
                })
                .map(|c| {
                    (
                        c.metadata.name.clone(),
                        c.status
                            .as_ref()
                            .and_then(|s| s.allocatable.as_ref())
                            .map_or(0, |a| a.nodes),
                    )
                })
                .collect();
            (ready == BTreeMap::from([("c1".to_string(), 2), ("c2".to_string(), 1)])).then_some(())
        })
        .await;
    }

    fn instances(&self) -> Api<Instance> {
        self.api.api(Some("default"))
    }

    fn apply(&self, replicas: u32, marker: &str) -> std::process::Output {
        let manifest = format!(
            "apiVersion: oakestra.io/v1\nkind: Service\nmetadata: {{name: work}}\nspec:\n  replicas: {replicas}\n  template:\n    runtime: process\n    executable: /bin/sh\n    command: [-c, 'echo started $OAKESTRA_INSTANCE; exec sleep {marker}']\n    resources: {{cpuMillicores: 100, memoryMiB: 32}}\n"
        );
        e2e::apply_manifest(
            &self.root.kubeconfig(),
            self.dir.path(),
            "work.yaml",
            &manifest,
        )
    }

    /// Wait until exactly `n` Instances of `work` are Running at the root, each with one
    /// live process carrying `marker`; returns node → count.
    async fn running(&self, n: usize, marker: &str) -> BTreeMap<String, usize> {
        eventually(
            &format!("{n} running instances with one process each ({marker})"),
            WAIT,
            || async {
                let (items, _) = self.instances().list(&ListParams::default()).await.ok()?;
                let live: Vec<_> = items
                    .iter()
                    .filter(|i| i.metadata.deletion_timestamp.is_none())
                    .collect();
                let running = live
                    .iter()
                    .filter(|i| i.status.as_ref().is_some_and(|s| s.phase == Phase::Running))
                    .count();
                if live.len() != n || running != n || processes(marker).len() != n {
                    return None;
                }
                let mut per = BTreeMap::new();
                for i in live {
                    *per.entry(i.spec.node.clone()?).or_default() += 1;
                }
                Some(per)
            },
        )
        .await
    }

    /// An administrator's client of cluster `name`.
    fn cluster_api(&self, name: &str) -> Client {
        e2e::tier_client(&e2e::tier_kubeconfig(&e2e::cluster_dir(
            self.dir.path(),
            name,
        )))
    }

    fn logs(&self) -> String {
        let mut all = self.root.log();
        for p in self.clusters.iter().chain(self.workers.values()) {
            all.push_str(&p.log());
        }
        all
    }
}

impl Drop for Topology {
    /// On failure, show what the processes logged.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            let tail: Vec<&str> = logs.lines().rev().take(150).collect();
            eprintln!(
                "--- last log lines ---\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_spread_over_both_clusters() {
    let (_t, per) = Topology::with_work(3).await;
    let c2_used = per.contains_key("w3");
    let c1_used = per.contains_key("w1") || per.contains_key("w2");
    assert!(
        c1_used && c2_used,
        "replicas spread over both clusters: {per:?}"
    );
}

/// Each node has a distinct subnet, each instance a distinct IP of its node's subnet
/// (reported up to the root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_get_subnets_and_host_network_instances_no_address() {
    let (t, _) = Topology::with_work(3).await;
    let (clusters, _) = t
        .api
        .api::<crds::Cluster>(None)
        .list(&ListParams::default())
        .await
        .unwrap();
    let cluster_subnets: HashSet<String> = clusters
        .iter()
        .filter_map(|c| c.status.as_ref()?.subnet.clone())
        .collect();
    assert_eq!(cluster_subnets.len(), 2, "{cluster_subnets:?}");
    let mut node_subnets = BTreeMap::new();
    for name in ["c1", "c2"] {
        let nodes: Api<crds::Node> = t.cluster_api(name).api(None);
        let subnets = eventually("node subnets", WAIT, || async {
            let (items, _) = nodes.list(&ListParams::default()).await.ok()?;
            items
                .iter()
                .map(|n| Some((n.metadata.name.clone(), n.status.as_ref()?.subnet.clone()?)))
                .collect::<Option<Vec<_>>>()
        })
        .await;
        node_subnets.extend(subnets);
    }
    assert_eq!(
        node_subnets.values().collect::<HashSet<_>>().len(),
        3,
        "{node_subnets:?}"
    );
    assert!(
        node_subnets.values().all(|s| s.ends_with("/26")),
        "{node_subnets:?}"
    );
    // The process runtime shares the node's network: its Instances get no address of
    // their own (bridged ones get one from their node, `containers.rs`).
    let (items, _) = t.instances().list(&ListParams::default()).await.unwrap();
    assert_eq!(items.len(), 3);
    for i in &items {
        let status = i.status.as_ref().expect("a status");
        assert_eq!(status.instance_ip, None, "{}: {status:?}", i.metadata.name);
    }
}

/// Each controller writes its own part of an Instance's status by server-side apply, and
/// `metadata.managedFields` says whose each part is, as `kubectl get
/// --show-managed-fields` shows it: in the cluster the binding is the scheduler's and
/// the phase the agent's (with its `Ready` condition); at the root the mirrored status
/// is the cluster's. No writer took another's condition away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_controller_owns_its_part_of_an_instance() {
    let (t, _) = Topology::with_work(1).await;
    let (items, _) = t.instances().list(&ListParams::default()).await.unwrap();
    let instance = &items[0];
    let name = instance.metadata.name.clone();
    let cluster = instance.spec.cluster.clone().expect("placed");
    let conditions: HashSet<String> = instance
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .map(|c| c.type_.clone())
        .collect();
    for kind in ["Scheduled", "Ready"] {
        assert!(
            conditions.contains(kind),
            "{kind} missing at the root: {conditions:?}"
        );
    }
    /// The fields (`FieldsV1`) of `manager`'s entry of `operation` on `subresource`.
    fn owned(
        object: &serde_json::Value,
        manager: &str,
        operation: &str,
        subresource: &str,
    ) -> serde_json::Value {
        let entries = object
            .pointer("/metadata/managedFields")
            .and_then(|m| m.as_array())
            .cloned()
            .unwrap_or_default();
        entries
            .into_iter()
            .find(|e| {
                e["manager"] == manager
                    && e["operation"] == operation
                    && e.get("subresource").and_then(|s| s.as_str()).unwrap_or("") == subresource
            })
            .map(|e| e["fieldsV1"].clone())
            .unwrap_or_else(|| {
                panic!(
                    "no {operation} of {subresource:?} by {manager}: {}",
                    object["metadata"]["managedFields"]
                )
            })
    }
    let ready = r#"k:{"type":"Ready"}"#;
    let root = t.instances().dynamic().get(&name).await.unwrap();
    let up = &owned(&root, "oakestra-cluster", "Apply", "status")["f:status"];
    for field in ["f:phase", "f:hostIP", "f:runtimeId", "f:observedGeneration"] {
        assert!(
            up.get(field).is_some(),
            "the cluster owns {field} at the root: {up}"
        );
    }
    assert!(up["f:conditions"].get(ready).is_some(), "{up}");
    let local = eventually("the cluster's copy Running", WAIT, || async {
        let api: Api<Instance> = t.cluster_api(&cluster).api(Some("default"));
        let copy = api.dynamic().get(&name).await.ok()?;
        Some(copy).filter(|c| c.pointer("/status/phase") == Some(&serde_json::json!("Running")))
    })
    .await;
    let agent = &owned(&local, "oakestra-agent", "Apply", "status")["f:status"];
    for field in ["f:phase", "f:hostIP", "f:runtimeId", "f:observedGeneration"] {
        assert!(
            agent.get(field).is_some(),
            "the agent owns {field}: {agent}"
        );
    }
    assert!(agent["f:conditions"].get(ready).is_some(), "{agent}");
    let scheduled = r#"k:{"type":"Scheduled"}"#;
    assert!(agent["f:conditions"].get(scheduled).is_none(), "{agent}");
    let binding = &owned(&local, "oakestra-scheduler", "Update", "binding");
    assert!(binding.pointer("/f:spec/f:node").is_some(), "{binding}");
    assert!(
        binding["f:status"]["f:conditions"].get(scheduled).is_some(),
        "{binding}"
    );
}

/// Logs come from the agent of the node, found through the root and the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_come_from_the_agent_of_the_node() {
    let (t, _) = Topology::with_work(3).await;
    let (items, _) = t.instances().list(&ListParams::default()).await.unwrap();
    for i in &items {
        let name = &i.metadata.name;
        let out = e2e::oakctl(&t.root.kubeconfig(), &["logs", name]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text,
            format!("started {name}\n"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_scale_up_and_down() {
    let (t, _) = Topology::with_work(3).await;
    let marker = &t.markers[0];
    t.apply(5, marker);
    t.running(5, marker).await;
    t.apply(2, marker);
    t.running(2, marker).await;
}

/// A new template rolls out; the old processes go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_template_replaces_the_old_processes() {
    let (t, _) = Topology::with_work(2).await;
    let [old, new] = &t.markers;
    t.apply(2, new);
    t.running(2, new).await;
    eventually("old processes gone", WAIT, || async {
        processes(old).is_empty().then_some(())
    })
    .await;
}

/// An agent restart adopts what runs: same processes, no duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_adopts_its_processes() {
    let (mut t, per) = Topology::with_work(2).await;
    let marker = t.markers[0].clone();
    let before = pids(&marker);
    // A node that runs one of them.
    let node = per.keys().next().unwrap().clone();
    let w = t.workers.get_mut(&node).unwrap();
    w.kill9();
    w.restart();
    stays(
        &format!("the processes {before:?}, none stopped or added, after {node}'s agent restarted"),
        Duration::from_secs(3),
        || async { equals(&before, pids(&marker)) },
    )
    .await;
    t.running(2, &marker).await;
    let after = pids(&marker);
    assert_eq!(before, after, "the restarted agent adopted its processes");
}

/// The root goes away: the clusters keep every instance running; it comes back and
/// everything converges without duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_keep_running_while_the_root_is_away() {
    let (mut t, _) = Topology::with_work(2).await;
    let marker = t.markers[0].clone();
    let before = pids(&marker);
    t.root.kill9();
    stays(
        &format!("instances kept running without the root (processes {before:?})"),
        Duration::from_secs(4),
        || async { equals(&before, pids(&marker)) },
    )
    .await;
    t.root.restart();
    t.running(2, &marker).await;
    assert_eq!(pids(&marker), before);
}

/// A worker dies: its instances run elsewhere within heartbeat timeout + eviction (+ the
/// cluster's grace when a cluster loses its last node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_move_off_a_dead_worker() {
    let (mut t, per) = Topology::with_work(2).await;
    let marker = t.markers[0].clone();
    let victim = per.keys().next().unwrap().clone();
    t.workers.get_mut(&victim).unwrap().kill9();
    let started = std::time::Instant::now();
    let moved = eventually("instances re-run off the dead worker", WAIT, || async {
        let (items, _) = t.instances().list(&ListParams::default()).await.ok()?;
        let ok = items.len() == 2
            && items.iter().all(|i| {
                i.spec.node.as_deref().is_some_and(|n| n != victim)
                    && i.status.as_ref().is_some_and(|s| s.phase == Phase::Running)
            });
        ok.then(|| started.elapsed())
    })
    .await;
    eprintln!("failover off {victim} took {moved:?}");
    // The dead worker's processes outlive it (same machine); when it comes back it
    // removes what is no longer bound to it.
    t.workers.get_mut(&victim).unwrap().restart();
    t.running(2, &marker).await;
}

/// Fits the cluster's total but none of its nodes: the cluster hands it back and the
/// root says precisely why nothing fits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_fits_no_node_is_handed_back_with_the_reason() {
    let t = Topology::start().await;
    let big = serde_json::json!({"apiVersion": "oakestra.io/v1", "kind": "Service", "metadata": {"name": "big"},
        "spec": {"replicas": 1, "template": {"runtime": "process", "executable": "/bin/true",
            "resources": {"cpuMillicores": 2500}}}});
    t.api
        .api::<crds::Service>(Some("default"))
        .dynamic()
        .create(&big)
        .await
        .unwrap();
    let message = eventually("big handed back and unplaceable", WAIT, || async {
        let params = ListParams {
            label_selector: Some("oakestra.io/service=big".into()),
            ..Default::default()
        };
        let (items, _) = t.instances().list(&params).await.ok()?;
        let i = items.first()?;
        let rejected = i.metadata.annotations.get("oakestra.io/rejected-by")?;
        let c = i
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Scheduled")?;
        (rejected == "c1"
            && i.spec.cluster.is_none()
            && c.reason == "NoResourcesAvailable"
            && c.message.contains("clusters fit"))
        .then(|| c.message.clone())
    })
    .await;
    assert!(
        message.contains("c1: turned this instance down before (no room)"),
        "{message}"
    );
    assert!(message.contains("c2: cpu"), "{message}");
    t.api
        .api::<crds::Service>(Some("default"))
        .delete("big")
        .await
        .unwrap();
}

/// Delete: every process goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_service_stops_every_process() {
    let (t, _) = Topology::with_work(2).await;
    let out = e2e::oakctl(
        &t.root.kubeconfig(),
        &["delete", "service", "work", "--wait"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("every process gone", WAIT, || async {
        processes(&t.markers[0]).is_empty().then_some(())
    })
    .await;
}

/// Environment values from a `ConfigMap` and a Secret created at the root with kubectl:
/// an Instance waits with `CreateContainerConfigError` naming what is missing, starts
/// once it exists, and reads the values; each cluster keeps a copy of what its
/// Instances use, and removes it once none does. No status or Event shows the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_comes_from_configmaps_and_secrets() {
    let t = Topology::start().await;
    let marker = t.markers[0].clone();
    let manifest = format!(
        "apiVersion: oakestra.io/v1\nkind: Service\nmetadata: {{name: work}}\nspec:\n  replicas: 3\n  template:\n    runtime: process\n    executable: /bin/sh\n    command: [-c, 'echo mode=$MODE password=$PASSWORD; exec sleep {marker}']\n    resources: {{cpuMillicores: 100, memoryMiB: 32}}\n    env:\n    - {{name: MODE, valueFrom: {{configMapKeyRef: {{name: conf, key: mode}}}}}}\n    - {{name: PASSWORD, valueFrom: {{secretKeyRef: {{name: db, key: password}}}}}}\n"
    );
    let out = e2e::apply_manifest(&t.root.kubeconfig(), t.dir.path(), "work.yaml", &manifest);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Nothing to take the values from yet: every Instance says what is missing.
    eventually(
        "instances waiting for their configuration",
        WAIT,
        || async {
            let (items, _) = t.instances().list(&ListParams::default()).await.ok()?;
            let waiting = items.iter().filter(|i| {
                i.status.as_ref().is_some_and(|s| {
                    s.reason == "CreateContainerConfigError"
                        && s.message.contains(r#"ConfigMap "conf" not found"#)
                })
            });
            (waiting.count() == 3).then_some(())
        },
    )
    .await;
    assert!(processes(&marker).is_empty());

    let kubectl = |args: &[&str]| {
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(t.root.kubeconfig())
            .args(args)
            .output()
            .expect("kubectl is installed on these machines");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    kubectl(&["create", "configmap", "conf", "--from-literal=mode=fast"]);
    kubectl(&[
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal=password=s3cret",
    ]);
    let per = t.running(3, &marker).await;
    assert_eq!(per.values().sum::<usize>(), 3);

    let (items, _) = t.instances().list(&ListParams::default()).await.unwrap();
    for i in &items {
        let name = &i.metadata.name;
        let out = e2e::oakctl(&t.root.kubeconfig(), &["logs", name]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "mode=fast password=s3cret\n",
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Whose part of an Instance is whose: each writer records its own manager, at the
    // root (the service controller, placement, the cluster writing up) and in the
    // cluster (the cluster's copy, its scheduler, the node's agent).
    let managers = |i: &Instance| -> HashSet<String> {
        i.metadata
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|e| e["manager"].as_str().map(String::from))
            .collect()
    };
    let at_root = managers(&items[0]);
    for m in ["oakestra-service", "oakestra-scheduler", "oakestra-cluster"] {
        assert!(at_root.contains(m), "{m} not in {at_root:?}");
    }
    let cluster = items[0].spec.cluster.clone().unwrap();
    let local: Instance = t
        .cluster_api(&cluster)
        .api(Some("default"))
        .get(&items[0].metadata.name)
        .await
        .unwrap();
    let in_cluster = managers(&local);
    for m in ["oakestra-cluster", "oakestra-scheduler", "oakestra-agent"] {
        assert!(in_cluster.contains(m), "{m} not in {in_cluster:?}");
    }
    assert!(
        !in_cluster.contains("oakestra-ipam"),
        "the node hands out instance IPs: {in_cluster:?}"
    );

    // Each cluster with an Instance keeps a copy.
    let clusters: HashSet<String> = items
        .iter()
        .filter_map(|i| i.spec.cluster.clone())
        .collect();
    for cluster in &clusters {
        let api = t.cluster_api(cluster);
        let secret: crds::Secret = api.api(Some("default")).get("db").await.unwrap();
        assert_eq!(secret.data["password"], "czNjcmV0", "{cluster}");
        let map: crds::ConfigMap = api.api(Some("default")).get("conf").await.unwrap();
        assert_eq!(map.data["mode"], "fast", "{cluster}");
    }

    // Neither the Instances nor any Event at the root or a cluster shows the value.
    let mut shown = serde_json::to_string(&items).unwrap();
    let events = |client: Client| async move {
        let (events, _) = client
            .api::<crds::Event>(None)
            .list(&ListParams::default())
            .await
            .unwrap();
        serde_json::to_string(&events).unwrap()
    };
    shown.push_str(&events(t.api.clone()).await);
    for cluster in ["c1", "c2"] {
        shown.push_str(&events(t.cluster_api(cluster)).await);
    }
    assert!(
        !shown.contains("s3cret"),
        "a status or Event shows the secret"
    );

    // Once no Instance uses them, the clusters remove their copies.
    t.api
        .api::<crds::Service>(Some("default"))
        .delete("work")
        .await
        .unwrap();
    for cluster in &clusters {
        let api: Api<crds::Secret> = t.cluster_api(cluster).api(Some("default"));
        eventually(
            &format!("{cluster} removes its copy of the secret"),
            Duration::from_secs(90),
            || async { api.get_opt("db").await.ok()?.is_none().then_some(()) },
        )
        .await;
    }
}
