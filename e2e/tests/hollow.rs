//! Hollow nodes (`oakestra hollow`): one process registers 20 simulated nodes in a
//! cluster, they become Ready at the cluster and count at the root, and a Service of 40
//! replicas ends with every Instance Running on one of them, as a user would check it;
//! a burst that does not fit gives each node only what it has room for; the Lease of a
//! Node that is gone is deleted.

use std::collections::HashSet;
use std::time::Duration;

use client::{Client, ListParams};
use crds::{Instance, Lease, Node, Phase, Service};
use e2e::{eventually, free_port, Oakestra, RootServer};

const WAIT: Duration = Duration::from_secs(30);

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn hollow_nodes_register_heartbeat_and_run_a_service() {
    let dir = tempfile::tempdir().unwrap();
    let root = RootServer::start(
        &format!("embedded:{}", dir.path().join("root").display()),
        dir.path(),
    );
    let port = free_port();
    let _cluster = Oakestra::start(
        "c1",
        &e2e::cluster_args(
            "c1",
            &root.upstream(),
            port,
            dir.path(),
            &["--heartbeat-seconds", "1"],
        ),
        Some(port),
        dir.path(),
    );
    // The cluster writes its admin kubeconfig once it serves: the hollow process reads
    // it at its start.
    let kubeconfig = e2e::tier_kubeconfig(&e2e::cluster_dir(dir.path(), "c1"));
    eventually("the cluster's admin kubeconfig", WAIT, || async {
        kubeconfig.exists().then_some(())
    })
    .await;
    let _hollow = Oakestra::start(
        "hollow",
        &args(&[
            "hollow",
            "--kubeconfig",
            kubeconfig.to_str().expect("a UTF-8 path"),
            "--nodes",
            "20",
            "--prefix",
            "h",
            "--heartbeat-seconds",
            "2",
            "--cpu-millicores",
            "1000",
            "--memory-mib",
            "2048",
        ]),
        None,
        dir.path(),
    );
    let cluster = e2e::tier_client(&kubeconfig);

    // 20 Ready nodes at the cluster, with the capacity given and both runtimes.
    let nodes = cluster.api::<Node>(None);
    let listed = eventually("20 Ready hollow nodes", WAIT, || async {
        let (list, _) = nodes.list(&ListParams::default()).await.ok()?;
        let ready = list.iter().filter(|n| {
            crds::is_true(
                n.status
                    .as_ref()
                    .map(|s| s.conditions.as_slice())
                    .unwrap_or_default(),
                "Ready",
            )
        });
        (ready.count() == 20).then_some(list)
    })
    .await;
    let names: HashSet<String> = listed.iter().map(|n| n.metadata.name.clone()).collect();
    let expected: HashSet<String> = (0..20).map(|i| format!("h-{i}")).collect();
    assert_eq!(names, expected);
    let node = &listed[0];
    let status = node.status.as_ref().unwrap();
    assert_eq!(status.capacity.as_ref().unwrap().cpu_millicores, 1000);
    assert_eq!(status.allocatable.as_ref().unwrap().memory_mib, 2048);
    assert!(status.last_heartbeat.is_some());
    assert_eq!(node.spec.runtimes.len(), 2, "container and process");

    // The heartbeat goes on: the node's Lease is renewed, held by the node.
    let name = node.metadata.name.clone();
    let leases = cluster.api::<Lease>(None);
    let first = eventually("the node's Lease", WAIT, || async {
        leases.get(&name).await.ok()?.spec.renew_time
    })
    .await;
    let renewed = eventually("a renewal of the Lease", WAIT, || async {
        let lease = leases.get(&name).await.ok()?;
        (lease.spec.renew_time? > first).then_some(lease)
    })
    .await;
    assert_eq!(renewed.spec.holder_identity.as_deref(), Some(name.as_str()));

    // The root sees the cluster with 20 nodes.
    let api = root.client();
    let clusters = api.api::<crds::Cluster>(None);
    eventually(
        "cluster c1 Ready with 20 nodes at the root",
        WAIT,
        || async {
            let c = clusters.get("c1").await.ok()?;
            let s = c.status?;
            (crds::is_true(&s.conditions, "Ready") && s.allocatable?.nodes == 20).then_some(())
        },
    )
    .await;

    // A Service of 40 replicas: every Instance bound to a hollow node and Running.
    create_service(&api, "web", 40, 100).await;
    let instances = api.api::<Instance>(Some("default"));
    let running = eventually("40 Instances Running at the root", WAIT, || async {
        let (list, _) = instances.list(&ListParams::default()).await.ok()?;
        let running: Vec<Instance> = list
            .into_iter()
            .filter(|i| i.status.as_ref().is_some_and(|s| s.phase == Phase::Running))
            .collect();
        (running.len() == 40).then_some(running)
    })
    .await;
    for i in &running {
        let node = i.spec.node.as_deref().expect("bound");
        assert!(expected.contains(node), "{node} is a hollow node");
        assert_eq!(i.spec.cluster.as_deref(), Some("c1"));
        let status = i.status.as_ref().unwrap();
        assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
        assert!(status.start_time.is_some());
    }
    // Spread: 40 replicas of one Service over 20 nodes, 2 each.
    let used: HashSet<&str> = running
        .iter()
        .filter_map(|i| i.spec.node.as_deref())
        .collect();
    assert_eq!(used.len(), 20, "replicas spread over every node");

    // A burst that does not fit: 25 replicas of 500 m where every node has 800 m left
    // (1000 m, two 100-m web Instances). Exactly one goes to each node; the other five
    // stay unschedulable, and no node is ever given more than it has. Checked at the
    // root, which shows the five unschedulable whichever tier turned them down.
    create_service(&api, "big", 25, 500).await;
    let bound = eventually(
        "20 of 25 big Instances bound, 5 unschedulable",
        WAIT,
        || async {
            let (list, _) = instances.list(&ListParams::default()).await.ok()?;
            let (bound, unbound): (Vec<Instance>, Vec<Instance>) = list
                .into_iter()
                .filter(|i| i.spec.service == "big")
                .partition(|i| i.spec.node.is_some());
            let unschedulable = unbound.iter().filter(|i| {
                let conditions = i.status.as_ref().map(|s| s.conditions.as_slice());
                conditions
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Scheduled" && c.status == crds::ConditionStatus::False)
            });
            (bound.len() == 20 && unschedulable.count() == 5).then_some(bound)
        },
    )
    .await;
    let big_nodes: HashSet<&str> = bound
        .iter()
        .filter_map(|i| i.spec.node.as_deref())
        .collect();
    assert_eq!(
        big_nodes.len(),
        20,
        "one 500-m Instance per node: {big_nodes:?}"
    );

    // A node's Lease goes with its Node: a Node added by hand with a Lease, then
    // deleted, and a Lease left behind without any Node both disappear; the hollow
    // nodes' Leases stay.
    let by_hand: Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "oakestra.io/v1", "kind": "Node",
        "metadata": {"name": "gone"}, "spec": {}
    }))
    .unwrap();
    nodes.create(&by_hand).await.unwrap();
    for name in ["gone", "orphan"] {
        let lease = Lease::new(
            name,
            crds::LeaseSpec {
                holder_identity: Some(name.into()),
                ..Default::default()
            },
        );
        leases.create(&lease).await.unwrap();
    }
    nodes.delete("gone").await.unwrap();
    eventually("the Leases of missing nodes deleted", WAIT, || async {
        let (list, _) = leases.list(&ListParams::default()).await.ok()?;
        let names: HashSet<String> = list.into_iter().map(|l| l.metadata.name).collect();
        (names == expected).then_some(())
    })
    .await;
    drop(root);
}

/// Create Service `name` in `default`: `replicas` of an image, each requesting
/// `cpu_millicores` and 64 MiB.
async fn create_service(api: &Client, name: &str, replicas: u32, cpu_millicores: u32) {
    let service: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "oakestra.io/v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "template": {"image": "nginx",
            "resources": {"cpuMillicores": cpu_millicores, "memoryMiB": 64}}}
    }))
    .unwrap();
    api.api::<Service>(Some("default"))
        .create(&service)
        .await
        .unwrap();
}
