//! The hierarchy with real processes: one root, two clusters, three workers running
//! native processes (the process runtime). Replicas spread, scale, roll, survive a
//! worker crash, a root outage and an agent restart, and leave nothing behind.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use client::{Api, Client, ListParams};
use crds::{Instance, Phase};
use e2e::{eventually, free_port, Oakestra, RootServer};

const WAIT: Duration = Duration::from_secs(60);

fn processes(marker: &str) -> BTreeMap<u32, String> {
    e2e::processes_matching(marker)
}

struct Topology {
    root: RootServer,
    clusters: Vec<Oakestra>,
    workers: BTreeMap<String, Oakestra>,
    api: Client,
    dir: tempfile::TempDir,
}

impl Topology {
    fn start() -> Topology {
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
                &e2e::cluster_args(name, &root.url(), port, dir.path(), &flags),
                Some(port),
                dir.path(),
            );
            for node in nodes {
                let worker = Oakestra::start(
                    node,
                    &e2e::worker_args(
                        node,
                        &cluster.url(),
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
        let api = Client::new(&root.url()).unwrap();
        Topology {
            root,
            clusters,
            workers,
            api,
            dir,
        }
    }

    fn instances(&self) -> Api<Instance> {
        self.api.api(Some("default"))
    }

    fn apply(&self, replicas: u32, marker: &str) -> std::process::Output {
        let manifest = format!(
            "apiVersion: oakestra.io/v1\nkind: Service\nmetadata: {{name: work}}\nspec:\n  replicas: {replicas}\n  template:\n    runtime: process\n    executable: /bin/sh\n    command: [-c, 'echo started $OAKESTRA_INSTANCE; exec sleep {marker}']\n    resources: {{cpuMillicores: 100, memoryMiB: 32}}\n"
        );
        let path = self.dir.path().join("work.yaml");
        std::fs::write(&path, manifest).unwrap();
        let out = e2e::oakctl(&self.root.url(), &["apply", "-f", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
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
async fn hierarchy_with_processes() {
    let mut t = Topology::start();
    let token = std::process::id();
    let marker = format!("1{token:06}1");
    let marker2 = format!("1{token:06}2");
    let _cleanup = e2e::KillMatching(vec![format!("sleep {marker}"), format!("sleep {marker2}")]);

    // Both clusters report their nodes to the root.
    eventually("clusters ready with their nodes", WAIT, || async {
        let (clusters, _) = t
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

    // Spread over both clusters.
    t.apply(3, &marker);
    let per = t.running(3, &marker).await;
    let c2_used = per.contains_key("w3");
    let c1_used = per.contains_key("w1") || per.contains_key("w2");
    assert!(
        c1_used && c2_used,
        "replicas spread over both clusters: {per:?}"
    );

    // Addresses: each node a distinct subnet of its cluster's subnet, each instance a
    // distinct IP of its node's subnet (reported up to the root).
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
    for c in &t.clusters {
        let nodes: Api<crds::Node> = Client::new(&c.url()).unwrap().api(None);
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
    let ips = eventually("instance IPs at the root", WAIT, || async {
        let (items, _) = t.instances().list(&ListParams::default()).await.ok()?;
        items
            .iter()
            .map(|i| Some((i.spec.node.clone()?, i.status.as_ref()?.instance_ip?)))
            .collect::<Option<Vec<_>>>()
    })
    .await;
    assert_eq!(
        ips.iter().map(|(_, ip)| ip).collect::<HashSet<_>>().len(),
        3,
        "{ips:?}"
    );
    for (node, ip) in &ips {
        let subnet = &node_subnets[node];
        let base: std::net::Ipv4Addr = subnet.split('/').next().unwrap().parse().unwrap();
        assert_eq!(
            u32::from(*ip) & !63,
            u32::from(base),
            "{ip} is in {node}'s subnet {subnet}"
        );
    }

    // Logs come from the agent of the node, found through the root and the cluster.
    let (items, _) = t.instances().list(&ListParams::default()).await.unwrap();
    for i in &items {
        let name = &i.metadata.name;
        let out = e2e::oakctl(&t.root.url(), &["logs", name]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text,
            format!("started {name}\n"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Scale up and down.
    t.apply(5, &marker);
    t.running(5, &marker).await;
    t.apply(2, &marker);
    t.running(2, &marker).await;

    // A new template rolls out; the old processes go.
    t.apply(2, &marker2);
    t.running(2, &marker2).await;
    eventually("old processes gone", WAIT, || async {
        processes(&marker).is_empty().then_some(())
    })
    .await;

    // An agent restart adopts what runs: same processes, no duplicates.
    let before: HashSet<u32> = processes(&marker2).keys().copied().collect();
    let w = t.workers.get_mut("w1").unwrap();
    w.kill9();
    w.restart();
    tokio::time::sleep(Duration::from_secs(3)).await;
    t.running(2, &marker2).await;
    let after: HashSet<u32> = processes(&marker2).keys().copied().collect();
    assert_eq!(before, after, "the restarted agent adopted its processes");

    // The root goes away: the clusters keep every instance running; it comes back and
    // everything converges without duplicates.
    t.root.kill9();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        processes(&marker2).keys().copied().collect::<HashSet<_>>(),
        after,
        "instances kept running without the root"
    );
    t.root.restart();
    t.running(2, &marker2).await;
    assert_eq!(
        processes(&marker2).keys().copied().collect::<HashSet<_>>(),
        after
    );

    // A worker dies: its instances run elsewhere within heartbeat timeout + eviction
    // (+ the cluster's grace when a cluster loses its last node).
    let per = t.running(2, &marker2).await;
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
    t.running(2, &marker2).await;

    // Fits the cluster's total but none of its nodes: the cluster hands it back and the
    // root says precisely why nothing fits.
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

    // Delete: every process goes.
    let out = e2e::oakctl(&t.root.url(), &["delete", "service", "work", "--wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("every process gone", WAIT, || async {
        processes(&marker2).is_empty().then_some(())
    })
    .await;
}
