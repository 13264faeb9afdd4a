//! Status conventions over real processes (a root, one cluster, one worker running
//! native processes), as the `GitOps` tools and kubectl read them: `kubectl wait
//! --for=condition=Ready` on a Service, `status.observedGeneration` equal to
//! `metadata.generation` on the Service, its Instances, the Cluster and the Node, a
//! Service that cannot be placed `Ready=False` and `Stalled=True` with the reason, and
//! `kubectl explain` documenting the fields.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use client::{Client, ListParams};
use crds::conditions::{reason, READY, RECONCILING, STALLED};
use crds::{find_condition, Cluster, ConditionStatus, Instance, Node, Resource, Service};
use e2e::{eventually, free_port, KillMatching, Oakestra, RootServer};

const WAIT: Duration = Duration::from_secs(60);

/// `kubectl --kubeconfig KUBECONFIG --cache-dir DIR/kube-cache ARGS…` (a cache of the
/// test's own: discovery cached for another server on the same port would mislead it).
fn kubectl(kubeconfig: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(dir.join("kube-cache"))
        .args(args)
        .output()
        .expect("kubectl is installed on these machines")
}

/// The standard output of a command that must succeed.
fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The generation of `k` and the one its status observed, when they are equal.
fn observed<K: Resource>(k: &K, status_generation: Option<i64>) -> Option<i64> {
    let generation = k.metadata().generation?;
    (status_generation == Some(generation)).then_some(generation)
}

/// The Service `web`.
async fn service(api: &Client) -> Option<Service> {
    api.api::<Service>(Some("default")).get("web").await.ok()
}

/// The condition `type_` of `svc` as (status, reason), if it has one.
fn condition(svc: &Service, type_: &str) -> Option<(ConditionStatus, String)> {
    let c = find_condition(&svc.status.as_ref()?.conditions, type_)?;
    Some((c.status, c.reason.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_stalled_and_observed_generations_as_gitops_tools_read_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = RootServer::start(
        &format!("embedded:{}", dir.path().join("root").display()),
        dir.path(),
    );
    let port = free_port();
    let cluster = Oakestra::start(
        "c1",
        &e2e::cluster_args("c1", &root.upstream(), port, dir.path(), e2e::QUICK_CLUSTER),
        Some(port),
        dir.path(),
    );
    let upstream = e2e::Upstream::cluster(&cluster.url(), dir.path(), "c1");
    let _worker = Oakestra::start(
        "w1",
        &e2e::worker_args(
            "w1",
            &upstream,
            dir.path(),
            &["--runtime", "process", "--heartbeat-seconds", "1"],
        ),
        None,
        dir.path(),
    );
    // A duration unique to this run, so that its processes are told apart.
    let marker = format!("36{:07}", std::process::id());
    let _cleanup = KillMatching(vec![format!("sleep {marker}")]);
    let kubeconfig: PathBuf = root.kubeconfig();
    let api = root.client();
    let local = e2e::tier_client(&e2e::tier_kubeconfig(&e2e::cluster_dir(dir.path(), "c1")));

    let manifest = format!(
        "apiVersion: oakestra.io/v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  replicas: 2\n  template:\n    runtime: process\n    executable: /bin/sleep\n    args: ['{marker}']\n"
    );
    e2e::apply_manifest(&kubeconfig, dir.path(), "web.yaml", &manifest);

    // kubectl lists and watches the Service by `metadata.name` and waits for Ready=True
    // at the current generation.
    ok(
        "kubectl wait --for=condition=Ready",
        kubectl(
            &kubeconfig,
            dir.path(),
            &[
                "wait",
                "--for=condition=Ready",
                "service.oakestra.io/web",
                "--timeout=60s",
            ],
        ),
    );
    let svc = service(&api).await.expect("the Service");
    assert_eq!(
        observed(
            &svc,
            svc.status.as_ref().and_then(|s| s.observed_generation)
        ),
        Some(1),
        "the Service's status observed its generation: {:?}",
        svc.status
    );
    assert_eq!(
        condition(&svc, READY),
        Some((ConditionStatus::True, "AllReplicasReady".into()))
    );
    assert_eq!(
        condition(&svc, RECONCILING).map(|c| c.0),
        Some(ConditionStatus::False)
    );
    assert_eq!(
        condition(&svc, STALLED).map(|c| c.0),
        Some(ConditionStatus::False)
    );
    assert_eq!(e2e::processes_matching(&format!("sleep {marker}")).len(), 2);

    // Every Instance (at the root), the Cluster (at the root) and the Node (in the
    // cluster) have a status of their current generation, and the Instances are Ready.
    eventually("instances Ready at their generation", WAIT, || async {
        let (items, _) = api
            .api::<Instance>(Some("default"))
            .list(&ListParams::default())
            .await
            .ok()?;
        let current = items.iter().filter(|i| {
            let s = i.status.as_ref();
            observed(*i, s.and_then(|s| s.observed_generation)).is_some()
                && s.is_some_and(|s| crds::is_true(&s.conditions, READY))
        });
        (items.len() == 2 && current.count() == 2).then_some(())
    })
    .await;
    eventually("the Cluster's status at its generation", WAIT, || async {
        let c = api.api::<Cluster>(None).get("c1").await.ok()?;
        observed(&c, c.status.as_ref()?.observed_generation)
    })
    .await;
    eventually("the Node's status at its generation", WAIT, || async {
        let n = local.api::<Node>(None).get("w1").await.ok()?;
        let ready = crds::is_true(&n.status.as_ref()?.conditions, READY);
        observed(&n, n.status.as_ref()?.observed_generation).filter(|_| ready)
    })
    .await;

    // Ask for more CPU than any node has: the rollout cannot place its Instances, and
    // the Service says so (kstatus: Failed) at its new generation.
    ok(
        "kubectl patch",
        kubectl(
            &kubeconfig,
            dir.path(),
            &[
                "patch",
                "service.oakestra.io/web",
                "--type=merge",
                "-p",
                r#"{"spec": {"template": {"resources": {"cpuMillicores": 100000000}}}}"#,
            ],
        ),
    );
    let stalled = eventually("the Service Stalled at generation 2", WAIT, || async {
        let svc = service(&api).await?;
        observed(&svc, svc.status.as_ref()?.observed_generation).filter(|g| *g == 2)?;
        let stalled = condition(&svc, STALLED)?;
        (stalled.0 == ConditionStatus::True).then_some(svc)
    })
    .await;
    let (ready, why) = condition(&stalled, READY).expect("a Ready condition");
    assert_eq!(ready, ConditionStatus::False);
    assert_eq!(why, reason::NO_RESOURCES_AVAILABLE, "{:?}", stalled.status);
    assert_eq!(
        condition(&stalled, STALLED).map(|c| c.1),
        Some(reason::NO_RESOURCES_AVAILABLE.to_string())
    );
    assert_eq!(
        condition(&stalled, RECONCILING).map(|c| c.0),
        Some(ConditionStatus::False),
        "a stalled Service is not reconciling (kstatus would say InProgress)"
    );
    let message = find_condition(&stalled.status.as_ref().unwrap().conditions, READY)
        .unwrap()
        .message
        .clone();
    assert!(
        message.starts_with("instance web-"),
        "names the instance: {message}"
    );
    // kubectl agrees: Ready is not met, Stalled is.
    ok(
        "kubectl wait --for=condition=Stalled",
        kubectl(
            &kubeconfig,
            dir.path(),
            &[
                "wait",
                "--for=condition=Stalled",
                "service.oakestra.io/web",
                "--timeout=10s",
            ],
        ),
    );
    let not_ready = kubectl(
        &kubeconfig,
        dir.path(),
        &[
            "wait",
            "--for=condition=Ready",
            "service.oakestra.io/web",
            "--timeout=2s",
        ],
    );
    assert!(
        !not_ready.status.success(),
        "Ready must not be met while stalled"
    );

    // kubectl explain documents the fields from the types' doc comments.
    let spec = ok(
        "kubectl explain services.spec",
        kubectl(&kubeconfig, dir.path(), &["explain", "services.spec"]),
    );
    for description in [
        "Desired number of Instances",
        "The workload every Instance runs",
    ] {
        assert!(
            spec.contains(description),
            "{description:?} missing from:\n{spec}"
        );
    }
    let tree = ok(
        "kubectl explain services.spec --recursive",
        kubectl(
            &kubeconfig,
            dir.path(),
            &["explain", "services.spec", "--recursive"],
        ),
    );
    for field in [
        "replicas",
        "template",
        "restartPolicy",
        "cpuMillicores",
        "maxDistanceKm",
    ] {
        assert!(tree.contains(field), "{field} missing from:\n{tree}");
    }
    assert!(
        tree.contains("What the user declares about a Service"),
        "{tree}"
    );
}
