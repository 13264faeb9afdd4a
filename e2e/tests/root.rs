//! The root tier end to end over a real `oakestra root` (embedded store and etcd):
//! Services become Instances placed on Clusters, or say precisely why they cannot.
//! Clusters are represented by `Cluster` objects whose status the test writes, as
//! cluster sync will. Each scenario is a test on each store (`embedded::…`, `etcd::…`),
//! with a root of its own.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use client::{Api, Client, ListParams};
use crds::{Cluster, ConditionStatus, Instance, Service};
use e2e::{eventually, Etcd, RootServer};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

struct Root {
    server: RootServer,
    client: Client,
    _dir: tempfile::TempDir,
    _etcd: Option<Etcd>,
}

fn start(backend: &str) -> Root {
    let dir = tempfile::tempdir().unwrap();
    let etcd = (backend == "etcd").then(Etcd::start);
    let store = match &etcd {
        Some(e) => format!("etcd:{}", e.url()),
        None => format!("embedded:{}", dir.path().join("store").display()),
    };
    let server = RootServer::start_with(&store, dir.path(), &["--cluster-grace-seconds", "2"]);
    let client = server.client();
    Root {
        server,
        client,
        _dir: dir,
        _etcd: etcd,
    }
}

impl Root {
    fn clusters(&self) -> Api<Cluster> {
        self.client.api(None)
    }
    fn services(&self) -> Api<Service> {
        self.client.api(Some("default"))
    }
    fn instances(&self) -> Api<Instance> {
        self.client.api(Some("default"))
    }

    /// Register a cluster and report it Ready with room, as cluster sync would.
    async fn cluster(&self, name: &str, lat: f64, lon: f64, cpu: u64) {
        let body = json!({"apiVersion": "oakestra.io/v1", "kind": "Cluster", "metadata": {"name": name},
            "spec": {"location": {"latitude": lat, "longitude": lon}}});
        self.clusters().dynamic().create(&body).await.unwrap();
        self.set_ready(name, true).await;
        let status = json!({"status": {"runtimes": ["container", "process"],
            "capacity": {"cpuMillicores": cpu, "memoryMiB": 8192, "nodes": 3},
            "allocatable": {"cpuMillicores": cpu, "memoryMiB": 8192, "nodes": 3}}});
        self.clusters().patch_status(name, &status).await.unwrap();
    }

    async fn set_ready(&self, name: &str, ready: bool) {
        let status = if ready { "True" } else { "False" };
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let patch = json!({"status": {"conditions": [{"type": "Ready", "status": status, "reason": "Heartbeat", "lastTransitionTime": now}]}});
        self.clusters().patch_status(name, &patch).await.unwrap();
    }

    /// Create the Service `name` with `spec`, or patch its spec to `spec`.
    async fn apply_service(&self, name: &str, spec: Value) {
        let body = json!({"apiVersion": "oakestra.io/v1", "kind": "Service", "metadata": {"name": name}, "spec": spec});
        let api = self.services().dynamic().clone();
        match api.get_opt(name).await.unwrap() {
            None => {
                api.create(&body).await.unwrap();
            }
            Some(_) => {
                api.patch(name, &json!({"spec": spec})).await.unwrap();
            }
        }
    }

    /// Instances of `service`, as (name, cluster).
    async fn placements(&self, service: &str) -> Vec<(String, Option<String>)> {
        let params = ListParams {
            label_selector: Some(format!("oakestra.io/service={service}")),
            ..Default::default()
        };
        let (items, _) = self.instances().list(&params).await.unwrap();
        items
            .into_iter()
            .filter(|i| i.metadata.deletion_timestamp.is_none())
            .map(|i| (i.metadata.name, i.spec.cluster))
            .collect()
    }

    /// Wait until `service` has exactly `n` Instances, all placed; returns count per cluster.
    async fn placed(&self, service: &str, n: usize) -> BTreeMap<String, usize> {
        eventually(
            &format!("{n} placed instances of {service}"),
            WAIT,
            || async {
                let p = self.placements(service).await;
                if p.len() != n || p.iter().any(|(_, c)| c.is_none()) {
                    return None;
                }
                let mut per = BTreeMap::new();
                for (_, c) in p {
                    *per.entry(c.unwrap()).or_default() += 1;
                }
                Some(per)
            },
        )
        .await
    }
}

/// The spec of a Service of `replicas` small Instances, for a test to change.
fn spec(replicas: i64) -> Value {
    json!({"replicas": replicas, "template": {"image": "localhost:5000/busybox:1",
        "resources": {"cpuMillicores": 100, "memoryMiB": 64}}})
}

/// A root on `backend` with two clusters, `munich-1` and `berlin-1`, Ready with room.
async fn two_clusters(backend: &str) -> Root {
    let root = start(backend);
    root.cluster("munich-1", 48.137, 11.575, 4000).await;
    root.cluster("berlin-1", 52.52, 13.405, 4000).await;
    root
}

/// 3 replicas over 2 clusters: placed and spread; then scaled up and down.
async fn replicas_spread_and_scale(backend: &str) {
    let root = two_clusters(backend).await;
    root.apply_service("web", spec(3)).await;
    let per = root.placed("web", 3).await;
    assert_eq!(per.len(), 2, "replicas spread over both clusters: {per:?}");
    assert!(per.values().all(|n| *n >= 1 && *n <= 2), "{per:?}");

    root.apply_service("web", spec(5)).await;
    let per = root.placed("web", 5).await;
    assert_eq!(
        per.values().copied().collect::<Vec<_>>().iter().max(),
        Some(&3),
        "spread 3+2: {per:?}"
    );
    root.apply_service("web", spec(1)).await;
    root.placed("web", 1).await;
}

/// Status: a service IP; the requested one is honoured, refused while another Service
/// has it, and handed on once that one is deleted. A closest IP is reserved: refused
/// while another Service holds it as either address, never handed out as a
/// round-robin IP, and in the Endpoints only once reserved.
async fn requested_service_ips(backend: &str) {
    let root = two_clusters(backend).await;
    let mut requested = spec(1);
    requested["addressing"] = json!({"roundRobinIP": "10.30.30.30"});
    root.apply_service("rr", requested.clone()).await;
    eventually("service IP 10.30.30.30", WAIT, || async {
        let s = root.services().get("rr").await.unwrap();
        (s.status?.service_ip? == "10.30.30.30".parse::<std::net::Ipv4Addr>().unwrap())
            .then_some(())
    })
    .await;
    root.apply_service("taken", requested).await;
    let message = eventually("taken IP refused", WAIT, || async {
        let s = root.services().get("taken").await.unwrap();
        let c = s
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "ServiceIPAssigned")?;
        (c.reason == "RequestedIPUnavailable").then_some(c.message)
    })
    .await;
    assert_eq!(message, "10.30.30.30 is already the address of default/rr");
    // Deleting rr returns its address to the pool: taken gets it.
    root.services().delete("rr").await.unwrap();
    eventually("taken gets 10.30.30.30 once rr is gone", WAIT, || async {
        let s = root.services().get("taken").await.unwrap();
        (s.status?.service_ip? == "10.30.30.30".parse::<std::net::Ipv4Addr>().unwrap())
            .then_some(())
    })
    .await;

    let closest_condition = |name: &'static str| {
        let root = &root;
        async move {
            let s = root.services().get(name).await.unwrap();
            let c = s
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "ClosestIPAssigned")?;
            Some((c.status, c.reason, c.message))
        }
    };
    let endpoints_closest = |name: &'static str| {
        let root = &root;
        async move {
            let e: crds::Endpoints = root.client.api(Some("default")).get(name).await.ok()?;
            Some(e.spec.closest_ip.map(|ip| ip.to_string()))
        }
    };
    // The closest IP 10.30.30.31 is the address the pool would draw next (after the
    // highest one held, 10.30.30.30): the allocator skips it, also for near itself.
    let mut near = spec(1);
    near["addressing"] = json!({"closestIP": "10.30.30.31"});
    root.apply_service("near", near.clone()).await;
    let (status, _, message) = eventually("near's closest IP reserved", WAIT, || async {
        closest_condition("near")
            .await
            .filter(|c| c.0 == ConditionStatus::True)
    })
    .await;
    assert_eq!(
        (status, message.as_str()),
        (ConditionStatus::True, "10.30.30.31")
    );
    eventually("near's endpoints carry it", WAIT, || async {
        (endpoints_closest("near").await? == Some("10.30.30.31".into())).then_some(())
    })
    .await;
    for name in ["plain-a", "plain-b"] {
        root.apply_service(name, spec(1)).await;
    }
    for name in ["plain-a", "plain-b", "near"] {
        let ip = eventually(&format!("{name} gets a service IP"), WAIT, || async {
            root.services().get(name).await.unwrap().status?.service_ip
        })
        .await;
        assert_ne!(
            ip.to_string(),
            "10.30.30.31",
            "{name} got near's closest IP"
        );
    }
    // Another Service asking for it, or for taken's round-robin IP, is refused.
    root.apply_service("also-near", near).await;
    let mut on_rr = spec(1);
    on_rr["addressing"] = json!({"closestIP": "10.30.30.30"});
    root.apply_service("on-rr", on_rr).await;
    for (name, holder) in [
        ("also-near", "default/near (its closest IP)"),
        ("on-rr", "default/taken"),
    ] {
        let (_, reason, message) = eventually(&format!("{name} refused"), WAIT, || async {
            closest_condition(name)
                .await
                .filter(|c| c.0 == ConditionStatus::False)
        })
        .await;
        assert_eq!(reason, "RequestedIPUnavailable");
        let ip = if name == "on-rr" {
            "10.30.30.30"
        } else {
            "10.30.30.31"
        };
        assert_eq!(message, format!("{ip} is already the address of {holder}"));
        let routed = eventually(&format!("{name}'s endpoints"), WAIT, || {
            endpoints_closest(name)
        })
        .await;
        assert_eq!(
            routed, None,
            "{name}'s endpoints route a closest IP it does not hold"
        );
    }
}

/// A constraint no cluster meets, and a size no cluster has: the precise reason, on the
/// Instance and the Service.
async fn unplaceable_services_say_why(backend: &str) {
    let root = two_clusters(backend).await;
    let mut far = spec(1);
    far["template"]["placement"] =
        json!({"geo": {"latitude": 40.7, "longitude": -74.0, "maxDistanceKm": 500}});
    root.apply_service("far", far).await;
    let (reason, message) = eventually("far is unplaceable", WAIT, || async {
        let s = root.services().get("far").await.unwrap();
        let c = s
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Placed" && c.status == crds::ConditionStatus::False)?;
        Some((c.reason, c.message))
    })
    .await;
    assert_eq!(reason, "NoTargetCluster");
    assert!(
        message.contains("berlin-1: is 6386 km away, max 500 km")
            && message.contains("munich-1: is 6489 km away"),
        "{message}"
    );
    // Events are written in the background, within a fraction of a second.
    let instance = root.placements("far").await[0].0.clone();
    let kubeconfig = root.server.kubeconfig();
    eventually("describe shows the FailedPlacement Event", WAIT, || async {
        let described = e2e::oakctl(&kubeconfig, &["describe", "instance", &instance]);
        let described = String::from_utf8_lossy(&described.stdout).to_string();
        (described.contains("NoTargetCluster") && described.contains("FailedPlacement"))
            .then_some(())
    })
    .await;
    // Too big for any cluster: NoResourcesAvailable.
    let mut huge = spec(1);
    huge["template"]["resources"]["cpuMillicores"] = json!(64000);
    root.apply_service("huge", huge).await;
    let reason = eventually("huge is unplaceable", WAIT, || async {
        let i = root
            .instances()
            .list(&ListParams {
                label_selector: Some("oakestra.io/service=huge".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .0;
        let c = i
            .first()?
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Scheduled")?
            .clone();
        (c.status == crds::ConditionStatus::False).then_some(c.reason)
    })
    .await;
    assert_eq!(reason, "NoResourcesAvailable");
    root.services().delete("huge").await.unwrap();
    root.services().delete("far").await.unwrap();
}

/// A cluster that stays `NotReady` past the grace period loses its Instances.
async fn a_cluster_not_ready_past_its_grace_loses_its_instances(backend: &str) {
    let root = two_clusters(backend).await;
    root.apply_service("web", spec(4)).await;
    root.placed("web", 4).await;
    root.set_ready("berlin-1", false).await;
    let per = eventually("web moved off berlin-1", WAIT, || async {
        let per = root.placed("web", 4).await;
        (!per.contains_key("berlin-1")).then_some(per)
    })
    .await;
    assert_eq!(per.get("munich-1"), Some(&4));
}

/// Subnets: one per cluster, distinct.
async fn clusters_get_distinct_subnets(backend: &str) {
    let root = two_clusters(backend).await;
    let subnets = eventually("a subnet for each cluster", WAIT, || async {
        let (clusters, _) = root.clusters().list(&ListParams::default()).await.ok()?;
        clusters
            .iter()
            .map(|c| c.status.as_ref()?.subnet.clone())
            .collect::<Option<Vec<String>>>()
            .filter(|s| s.len() == 2)
    })
    .await;
    let subnets: HashSet<String> = subnets.into_iter().collect();
    assert_eq!(subnets.len(), 2, "{subnets:?}");
}

/// Deleting a Service deletes its Instances (background), and with Foreground the
/// Service waits for them.
async fn deleting_a_service_deletes_its_instances(backend: &str) {
    let root = two_clusters(backend).await;
    root.apply_service("web", spec(4)).await;
    root.placed("web", 4).await;
    root.services().delete("web").await.unwrap();
    eventually("web's instances gone", WAIT, || async {
        root.placements("web").await.is_empty().then_some(())
    })
    .await;
    root.apply_service("fg", spec(2)).await;
    root.placed("fg", 2).await;
    let deleted = raw_delete(
        &root.server.kubeconfig(),
        "/apis/oakestra.io/v1/namespaces/default/services/fg?propagationPolicy=Foreground",
    )
    .await;
    assert!(deleted["metadata"]["finalizers"]
        .as_array()
        .unwrap()
        .contains(&json!("foregroundDeletion")));
    eventually("fg and its instances gone", WAIT, || async {
        let svc = root.services().dynamic().get_opt("fg").await.unwrap();
        (svc.is_none() && root.placements("fg").await.is_empty()).then_some(())
    })
    .await;
}

/// `DELETE path` through `kubectl delete --raw` with the admin kubeconfig `kubeconfig`
/// (the client sends no propagation policy), its JSON answer.
async fn raw_delete(kubeconfig: &std::path::Path, path: &str) -> Value {
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["delete", "--raw", path])
        .output()
        .await
        .expect("kubectl is installed on these machines");
    assert!(
        out.status.success(),
        "kubectl delete --raw {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Each scenario as a test on the embedded store and on etcd: `embedded::NAME` and
/// `etcd::NAME`.
macro_rules! on_both_stores {
    ($($scenario:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario("embedded").await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario("etcd").await;
                }
            )*
        }
    };
}

on_both_stores!(
    replicas_spread_and_scale,
    requested_service_ips,
    unplaceable_services_say_why,
    a_cluster_not_ready_past_its_grace_loses_its_instances,
    clusters_get_distinct_subnets,
    deleting_a_service_deletes_its_instances,
);

/// kill -9 of the root in the middle of a scale-up: after the restart there are exactly
/// `replicas` Instances, every one placed, and no subnet or service IP is handed out twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_scale_up_converges() {
    let mut root = start("embedded");
    for i in 0..4 {
        root.cluster(&format!("c{i}"), 48.0 + i as f64, 11.0, 64000)
            .await;
    }
    for i in 0..5 {
        root.apply_service(&format!("s{i}"), spec(1)).await;
    }
    root.apply_service("big", spec(60)).await;
    // Crash while the service controller is creating Instances.
    eventually("scale-up under way", WAIT, || async {
        (root.placements("big").await.len() >= 5).then_some(())
    })
    .await;
    root.server.kill9();
    root.server.restart();
    let per = root.placed("big", 60).await;
    assert_eq!(per.values().sum::<usize>(), 60);
    let names: HashSet<String> = root
        .placements("big")
        .await
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names.len(), 60);
    let ips = eventually("every service has an IP", WAIT, || async {
        let (svcs, _) = root.services().list(&ListParams::default()).await.unwrap();
        svcs.iter()
            .map(|s| s.status.as_ref().and_then(|st| st.service_ip))
            .collect::<Option<Vec<_>>>()
    })
    .await;
    assert_eq!(
        ips.iter().collect::<HashSet<_>>().len(),
        ips.len(),
        "service IPs unique: {ips:?}"
    );
    let (clusters, _) = root.clusters().list(&ListParams::default()).await.unwrap();
    let subnets: Vec<String> = clusters
        .iter()
        .filter_map(|c| c.status.as_ref()?.subnet.clone())
        .collect();
    assert_eq!(
        subnets.iter().collect::<HashSet<_>>().len(),
        4,
        "subnets unique: {subnets:?}"
    );
}
