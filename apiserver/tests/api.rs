//! The HTTP API over real storage (embedded, and a real etcd process), exercised with
//! the project's own client as a user would: every verb, every rejection, watches.

use std::sync::Arc;
use std::time::Duration;

use apiserver::storage::embedded::{EmbeddedOptions, EmbeddedStore};
use apiserver::storage::etcd::EtcdStore;
use apiserver::storage::Storage;
use apiserver::{Server, ServerConfig};
use client::{Client, ClientError, DynamicApi, ListParams, WatchEvent};
use futures::StreamExt;
use serde_json::{json, Value};

fn config() -> ServerConfig {
    ServerConfig {
        max_body_bytes: 64 * 1024,
        bookmark_interval: Duration::from_millis(200),
        watch_cache_events: 50,
        security: None,
    }
}

async fn start(store: Arc<dyn Storage>) -> (Server, Client) {
    let server = Server::start_with_store("127.0.0.1:0".parse().unwrap(), store, config())
        .await
        .unwrap();
    let client = Client::new(&format!("http://{}", server.addr)).unwrap();
    (server, client)
}

fn kind(name: &str) -> &'static crds::KindInfo {
    crds::kind_by_name(name).unwrap()
}

fn service(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "oakestra.io/v1", "kind": "Service",
        "metadata": {"name": name, "labels": {"app": name, "tier": if replicas > 2 { "big" } else { "small" }}},
        "spec": {"replicas": replicas, "template": {"image": "localhost:5000/busybox:1"}},
    })
}

fn rv(o: &Value) -> String {
    o["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

fn api_error(e: ClientError) -> (u16, String, Vec<String>) {
    match e {
        ClientError::Api { status } => {
            let fields = status
                .details
                .map(|d| d.causes.into_iter().map(|c| c.field).collect())
                .unwrap_or_default();
            (status.code, status.message, fields)
        }
        other => panic!("expected an API error, got {other}"),
    }
}

async fn next_event(
    w: &mut futures::stream::BoxStream<'static, client::Result<WatchEvent<Value>>>,
) -> WatchEvent<Value> {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("watch event within 10s")
        .expect("stream open")
        .expect("no error")
}

async fn crud_and_concurrency(c: &Client) {
    let svc = c.dynamic(kind("svc"), Some("default"));
    let created = svc.create(&service("web", 2)).await.unwrap();
    assert_eq!(created["metadata"]["generation"], 1);
    assert!(
        created["metadata"]["uid"].is_string()
            && created["metadata"]["creationTimestamp"].is_string()
    );
    assert_eq!(
        created["spec"]["template"]["runtime"], "container",
        "defaults are filled in"
    );
    let (code, message, _) = api_error(svc.create(&service("web", 2)).await.unwrap_err());
    assert_eq!(
        (code, message.as_str()),
        (409, "services \"web\" already exists")
    );

    // Optimistic concurrency: a stale resourceVersion is a 409, the fresh one works.
    let mut update = created.clone();
    update["spec"]["replicas"] = json!(3);
    let updated = svc.replace("web", &update).await.unwrap();
    assert_eq!(
        updated["metadata"]["generation"], 2,
        "a spec change bumps generation"
    );
    let (code, message, _) = api_error(svc.replace("web", &update).await.unwrap_err());
    assert_eq!(code, 409);
    assert!(
        message.contains("the object has been modified"),
        "{message}"
    );
    assert_eq!(
        svc.get("web").await.unwrap()["spec"]["replicas"],
        3,
        "the conflicting write changed nothing"
    );

    // Merge patch; a no-op write keeps the version.
    let patched = svc
        .patch(
            "web",
            &json!({"spec": {"replicas": 4}, "metadata": {"labels": {"tier": null}}}),
        )
        .await
        .unwrap();
    assert_eq!(patched["spec"]["replicas"], 4);
    assert!(patched["metadata"]["labels"].get("tier").is_none());
    let same = svc
        .patch("web", &json!({"spec": {"replicas": 4}}))
        .await
        .unwrap();
    assert_eq!(rv(&same), rv(&patched));
    let stale = json!({"metadata": {"resourceVersion": rv(&created)}, "spec": {"replicas": 1}});
    assert_eq!(
        api_error(svc.patch("web", &stale).await.unwrap_err()).0,
        409
    );

    // Unconditional concurrent patches all land.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            svc.patch(
                "web",
                &json!({"metadata": {"annotations": {format!("w{i}"): "x"}}}),
            )
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        svc.get("web").await.unwrap()["metadata"]["annotations"]
            .as_object()
            .unwrap()
            .len(),
        8
    );
    // Back-to-back writes each build on the one before (a write's first attempt may
    // start from the watch hub's copy, which can lag the store by a change).
    for i in 0..100 {
        let out = svc
            .patch(
                "web",
                &json!({"metadata": {"annotations": {format!("s{i}"): "x"}}}),
            )
            .await
            .unwrap();
        let seen = out["metadata"]["annotations"].as_object().unwrap().len();
        assert_eq!(seen, 8 + i + 1, "write {i} lost an earlier one: {out}");
    }

    svc.delete("web", None).await.unwrap();
    let (code, message, _) = api_error(svc.get("web").await.unwrap_err());
    assert_eq!(
        (code, message.as_str()),
        (404, "services \"web\" not found")
    );
}

async fn validation_errors(c: &Client) {
    let svc = c.dynamic(kind("svc"), Some("default"));
    let mut bad = service("bad", 1);
    bad["spec"]["replicas"] = json!(-1);
    let (code, message, fields) = api_error(svc.create(&bad).await.unwrap_err());
    assert_eq!(code, 422);
    assert_eq!(
        message,
        "Service \"bad\" is invalid: spec.replicas: must be >= 0"
    );
    assert_eq!(fields, ["spec.replicas"]);

    let mut unknown = service("bad", 1);
    unknown["spec"]["template"]["imagee"] = json!("x");
    let (code, _, fields) = api_error(svc.create(&unknown).await.unwrap_err());
    assert_eq!(
        (code, fields),
        (422, vec!["spec.template.imagee".to_string()])
    );

    let (code, _, fields) = api_error(svc.create(&service("Bad_Name", 1)).await.unwrap_err());
    assert_eq!((code, fields), (422, vec!["metadata.name".to_string()]));

    let mut wrong_kind = service("x", 1);
    wrong_kind["kind"] = json!("Cluster");
    assert_eq!(api_error(svc.create(&wrong_kind).await.unwrap_err()).0, 400);

    let elsewhere = c.dynamic(kind("svc"), Some("nowhere"));
    let (code, message, _) = api_error(elsewhere.create(&service("x", 1)).await.unwrap_err());
    assert_eq!(
        (code, message.as_str()),
        (404, "namespaces \"nowhere\" not found")
    );

    let mut huge = service("huge", 1);
    huge["metadata"]["annotations"] = json!({"blob": "x".repeat(100 * 1024)});
    assert_eq!(api_error(svc.create(&huge).await.unwrap_err()).0, 413);

    // None of it was stored.
    let (items, _) = svc.list_all(&ListParams::default()).await.unwrap();
    assert!(
        items.is_empty(),
        "rejected writes stored nothing: {items:?}"
    );

    // Immutable fields.
    let inst = c.dynamic(kind("inst"), Some("default"));
    let instance = json!({
        "apiVersion": "oakestra.io/v1", "kind": "Instance", "metadata": {"name": "web-0"},
        "spec": {"service": "web", "ordinal": 0, "template": {"image": "x"}},
    });
    inst.create(&instance).await.unwrap();
    let (code, message, _) = api_error(
        inst.patch("web-0", &json!({"spec": {"service": "other"}}))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    assert!(
        message.contains("spec.service: field is immutable"),
        "{message}"
    );
    inst.patch("web-0", &json!({"spec": {"cluster": "munich-1"}}))
        .await
        .unwrap();
    inst.delete("web-0", None).await.unwrap();
}

async fn status_subresource_and_generation(c: &Client) {
    let clusters = c.dynamic(kind("cl"), None);
    let cluster = json!({
        "apiVersion": "oakestra.io/v1", "kind": "Cluster", "metadata": {"name": "munich-1"},
        "spec": {"location": {"latitude": 48.1, "longitude": 11.5}},
        "status": {"subnet": "ignored on create"},
    });
    let created = clusters.create(&cluster).await.unwrap();
    assert!(
        created.get("status").is_none(),
        "status is written through /status only"
    );
    let status = json!({"status": {"subnet": "10.18.0.0/20", "conditions": [{"type": "Ready", "status": "True"}]}, "spec": {"location": null}});
    let after = clusters.patch_status("munich-1", &status).await.unwrap();
    assert_eq!(after["status"]["subnet"], "10.18.0.0/20");
    assert_eq!(
        after["spec"]["location"]["latitude"], 48.1,
        "a status write leaves spec alone"
    );
    assert_eq!(
        after["metadata"]["generation"], 1,
        "status writes do not bump generation"
    );
    // A main-resource write leaves status alone.
    let mut replaced = after.clone();
    replaced["status"] = json!({"subnet": "overwritten?"});
    replaced["spec"]["location"]["latitude"] = json!(48.2);
    let replaced = clusters.replace("munich-1", &replaced).await.unwrap();
    assert_eq!(replaced["status"]["subnet"], "10.18.0.0/20");
    assert_eq!(replaced["metadata"]["generation"], 2);
    let bad = json!({"status": {"conditions": [{"type": "Ready", "status": "Maybe"}]}});
    let (code, _, fields) = api_error(clusters.patch_status("munich-1", &bad).await.unwrap_err());
    assert_eq!(
        (code, fields),
        (422, vec!["status.conditions[0].status".to_string()])
    );
    clusters.delete("munich-1", None).await.unwrap();
}

async fn binding_subresource(c: &Client) {
    let inst = c.dynamic(kind("inst"), Some("default"));
    let created = inst
        .create(&json!({
            "apiVersion": "oakestra.io/v1", "kind": "Instance", "metadata": {"name": "bind-0"},
            "spec": {"service": "bind", "ordinal": 0, "template": {"image": "x"}},
        }))
        .await
        .unwrap();

    // A stale version is a 409 and writes nothing.
    let stale = (rv(&created).parse::<i64>().unwrap() - 1).to_string();
    let (code, _, _) = api_error(
        inst.bind("bind-0", "Cluster", "c1", Some(&stale))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 409);
    assert!(inst.get("bind-0").await.unwrap()["spec"]
        .get("cluster")
        .is_none());

    // One write: the target field, the phase and the Scheduled condition.
    let bound = inst
        .bind("bind-0", "Cluster", "c1", Some(&rv(&created)))
        .await
        .unwrap();
    assert_eq!(bound["spec"]["cluster"], "c1");
    assert_eq!(bound["status"]["phase"], "Scheduled");
    let scheduled = &bound["status"]["conditions"][0];
    assert_eq!(
        (
            &scheduled["type"],
            &scheduled["status"],
            &scheduled["message"]
        ),
        (
            &json!("Scheduled"),
            &json!("True"),
            &json!("placed on cluster c1")
        )
    );
    assert_eq!(
        rv(&bound).parse::<i64>().unwrap(),
        rv(&created).parse::<i64>().unwrap() + 1,
        "one write"
    );
    let read = inst.get("bind-0").await.unwrap();
    assert_eq!(read, bound);

    // Then the node; binding the same target again changes nothing.
    let on_node = inst.bind("bind-0", "Node", "n1", None).await.unwrap();
    assert_eq!(
        (&on_node["spec"]["cluster"], &on_node["spec"]["node"]),
        (&json!("c1"), &json!("n1"))
    );
    let again = inst.bind("bind-0", "Node", "n1", None).await.unwrap();
    assert_eq!(rv(&again), rv(&on_node));

    // Another target is a 409 that names the one it has; a bad target a 400.
    let (code, message, _) = api_error(
        inst.bind("bind-0", "Cluster", "c2", None)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 409);
    assert!(message.contains("already bound to cluster c1"), "{message}");
    let (code, message, _) = api_error(inst.bind("bind-0", "Widget", "w", None).await.unwrap_err());
    assert_eq!(code, 400);
    assert!(message.contains("target.kind"), "{message}");
    let (code, _, _) = api_error(inst.bind("nobody", "Node", "n1", None).await.unwrap_err());
    assert_eq!(code, 404);
    // Only Instances have bindings.
    let services = c.dynamic(kind("svc"), Some("default"));
    let (code, _, _) = api_error(services.bind("web", "Node", "n1", None).await.unwrap_err());
    assert_eq!(code, 404);
    inst.delete("bind-0", None).await.unwrap();
}

async fn finalizers(c: &Client) {
    let nodes = c.dynamic(kind("no"), None);
    let node = json!({
        "apiVersion": "oakestra.io/v1", "kind": "Node",
        "metadata": {"name": "pi-1", "finalizers": ["oakestra.io/drain"]},
        "spec": {"address": "192.0.2.10", "runtimes": ["container"]},
    });
    nodes.create(&node).await.unwrap();
    let marked = nodes.delete("pi-1", None).await.unwrap();
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    assert!(
        nodes.get_opt("pi-1").await.unwrap().is_some(),
        "kept while a finalizer remains"
    );
    nodes
        .patch("pi-1", &json!({"metadata": {"finalizers": null}}))
        .await
        .unwrap();
    assert!(
        nodes.get_opt("pi-1").await.unwrap().is_none(),
        "gone once the last finalizer is removed"
    );
}

async fn paging_and_selectors(c: &Client) {
    let ns = c.dynamic(kind("ns"), None);
    ns.create(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "paging"}}))
        .await
        .unwrap();
    let svc = c.dynamic(kind("svc"), Some("paging"));
    for i in 0..7 {
        svc.create(&service(&format!("s{i}"), i)).await.unwrap();
    }
    let first = svc
        .list(&ListParams {
            limit: Some(3),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(first["items"].as_array().unwrap().len(), 3);
    assert!(first["metadata"]["continue"].is_string());
    let (all, _) = svc
        .list_all(&ListParams {
            limit: Some(3),
            ..Default::default()
        })
        .await
        .unwrap();
    let names: Vec<_> = all
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["s0", "s1", "s2", "s3", "s4", "s5", "s6"]);

    let big = ListParams {
        label_selector: Some("tier=big".into()),
        limit: Some(2),
        ..Default::default()
    };
    let (items, _) = svc.list_all(&big).await.unwrap();
    assert_eq!(items.len(), 4, "s3..s6 are big, across pages");
    let set = ListParams {
        label_selector: Some("app in (s1,s5),tier!=big".into()),
        ..Default::default()
    };
    let (items, _) = svc.list_all(&set).await.unwrap();
    assert_eq!(
        items
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["s1"]
    );
    let all_ns = c.dynamic(kind("svc"), None);
    assert_eq!(
        all_ns
            .list_all(&ListParams::default())
            .await
            .unwrap()
            .0
            .len(),
        7
    );

    let (code, message, _) = api_error(ns.delete("paging", None).await.unwrap_err());
    assert_eq!(code, 409, "{message}");
    for i in 0..7 {
        svc.delete(&format!("s{i}"), None).await.unwrap();
    }
    ns.delete("paging", None).await.unwrap();
}

async fn watches(c: &Client) {
    let clusters = c.dynamic(kind("cl"), None);
    let (_, version) = clusters.list_all(&ListParams::default()).await.unwrap();
    let params = ListParams {
        resource_version: Some(version.clone()),
        bookmarks: true,
        ..Default::default()
    };
    let mut w = clusters.watch(&params).await.unwrap();
    let cluster = |n: &str| json!({"apiVersion": "oakestra.io/v1", "kind": "Cluster", "metadata": {"name": n}, "spec": {}});
    let a = clusters.create(&cluster("a")).await.unwrap();
    let a2 = clusters
        .patch("a", &json!({"metadata": {"labels": {"x": "y"}}}))
        .await
        .unwrap();
    clusters.delete("a", None).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match next_event(&mut w).await {
            WatchEvent::Added(o) => seen.push(("ADDED", rv(&o))),
            WatchEvent::Modified(o) => seen.push(("MODIFIED", rv(&o))),
            WatchEvent::Deleted(o) => seen.push((
                "DELETED",
                o["metadata"]["name"].as_str().unwrap().to_string(),
            )),
            WatchEvent::Bookmark(_) => {}
        }
    }
    assert_eq!(
        seen,
        [
            ("ADDED", rv(&a)),
            ("MODIFIED", rv(&a2)),
            ("DELETED", "a".into())
        ]
    );
    // Bookmarks arrive on an idle watch and carry the latest version.
    let bookmark = loop {
        if let WatchEvent::Bookmark(v) = next_event(&mut w).await {
            break v;
        }
    };
    assert!(bookmark.parse::<i64>().unwrap() >= rv(&a2).parse::<i64>().unwrap());

    // A selective watch sees objects enter (ADDED) and leave (DELETED) its selection.
    let (_, now) = clusters.list_all(&ListParams::default()).await.unwrap();
    let gold = ListParams {
        label_selector: Some("tier=gold".into()),
        resource_version: Some(now),
        ..Default::default()
    };
    let mut selective = clusters.watch(&gold).await.unwrap();
    clusters.create(&cluster("g")).await.unwrap();
    clusters
        .patch("g", &json!({"metadata": {"labels": {"tier": "gold"}}}))
        .await
        .unwrap();
    clusters
        .patch("g", &json!({"metadata": {"labels": {"zone": "a"}}}))
        .await
        .unwrap();
    clusters
        .patch("g", &json!({"metadata": {"labels": {"tier": "silver"}}}))
        .await
        .unwrap();
    clusters.delete("g", None).await.unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        match next_event(&mut selective).await {
            WatchEvent::Added(_) => kinds.push("ADDED"),
            WatchEvent::Modified(_) => kinds.push("MODIFIED"),
            WatchEvent::Deleted(o) => {
                assert_eq!(
                    o["metadata"]["labels"]["tier"], "silver",
                    "the object as it left"
                );
                kinds.push("DELETED")
            }
            WatchEvent::Bookmark(_) => {}
        }
    }
    assert_eq!(
        kinds,
        ["ADDED", "MODIFIED", "DELETED"],
        "not matching before or after: no event"
    );

    // Resume from the middle: exactly what came after.
    let mut resumed = clusters
        .watch(&ListParams {
            resource_version: Some(rv(&a)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(matches!(
        next_event(&mut resumed).await,
        WatchEvent::Modified(_)
    ));
    assert!(matches!(
        next_event(&mut resumed).await,
        WatchEvent::Deleted(_)
    ));

    // Without a version: the current objects first, as ADDED.
    clusters.create(&cluster("b")).await.unwrap();
    let mut fresh = clusters.watch(&ListParams::default()).await.unwrap();
    match next_event(&mut fresh).await {
        WatchEvent::Added(o) => assert_eq!(o["metadata"]["name"], "b"),
        other => panic!("expected ADDED b, got {other:?}"),
    }

    // Many watchers, one write: every watcher sees it.
    let mut watchers = Vec::new();
    let (_, now) = clusters.list_all(&ListParams::default()).await.unwrap();
    for _ in 0..100 {
        watchers.push(
            clusters
                .watch(&ListParams {
                    resource_version: Some(now.clone()),
                    ..Default::default()
                })
                .await
                .unwrap(),
        );
    }
    clusters
        .patch("b", &json!({"metadata": {"labels": {"seen": "yes"}}}))
        .await
        .unwrap();
    for w in &mut watchers {
        match next_event(w).await {
            WatchEvent::Modified(o) => assert_eq!(o["metadata"]["labels"]["seen"], "yes"),
            other => panic!("expected MODIFIED, got {other:?}"),
        }
    }
    let metrics = c.get_text("/metrics").await.unwrap();
    let open = e2e::open_watches(&metrics);
    assert!(open >= 100, "{open} watches open");
    assert!(metrics.contains(
        "oakestra_apiserver_requests_total{verb=\"create\",resource=\"clusters\",code=\"201\"}"
    ));
    // A watcher that goes away closes its watch on the server.
    drop(watchers);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now_open = e2e::open_watches(&c.get_text("/metrics").await.unwrap());
        if now_open <= open - 100 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{now_open} watches still open 20 s after 100 of {open} were dropped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Too old: more changes than the watch cache keeps (50 in this config).
    for i in 0..60 {
        clusters
            .patch("b", &json!({"metadata": {"labels": {"n": i.to_string()}}}))
            .await
            .unwrap();
    }
    let old = ListParams {
        resource_version: Some(version),
        ..Default::default()
    };
    let e = clusters.watch(&old).await.err().expect("too old");
    assert!(e.is_gone(), "{e}");
    // Past the store's latest: a version of another history (a store restored from a
    // backup), gone as well, not a watch that skips every change up to it.
    let (_, latest) = clusters.list_all(&ListParams::default()).await.unwrap();
    let future = ListParams {
        resource_version: Some((latest.parse::<i64>().unwrap() + 1_000_000).to_string()),
        ..Default::default()
    };
    let e = clusters
        .watch(&future)
        .await
        .err()
        .expect("from the future");
    assert!(e.is_gone() && e.to_string().contains("newer than"), "{e}");
    clusters.delete("b", None).await.unwrap();
}

/// `dryRun=All` on every write: the answer is the object as the real write would
/// leave it (or the same rejection), and nothing is stored or seen by a watch.
async fn dry_run(c: &Client) {
    let svc = c.dynamic(kind("svc"), Some("default"));
    let inst = c.dynamic(kind("inst"), Some("default"));
    let nodes = c.dynamic(kind("no"), None);
    let (dry_svc, dry_inst, dry_nodes) = (svc.dry_run(), inst.dry_run(), nodes.dry_run());
    let web = svc.create(&service("web", 2)).await.unwrap();
    let pod = inst
        .create(&json!({
            "apiVersion": "oakestra.io/v1", "kind": "Instance", "metadata": {"name": "web-0"},
            "spec": {"service": "web", "ordinal": 0, "template": {"image": "x"}},
        }))
        .await
        .unwrap();
    let node = nodes
        .create(&json!({
            "apiVersion": "oakestra.io/v1", "kind": "Node",
            "metadata": {"name": "pi-1", "finalizers": ["oakestra.io/drain"]},
            "spec": {"address": "192.0.2.10", "runtimes": ["container"]},
        }))
        .await
        .unwrap();
    let at = |version: &Value| ListParams {
        resource_version: Some(rv(version)),
        ..Default::default()
    };
    let mut svc_watch = svc.watch(&at(&node)).await.unwrap();
    let mut inst_watch = inst.watch(&at(&node)).await.unwrap();
    let mut node_watch = nodes.watch(&at(&node)).await.unwrap();
    let unchanged = |api: &DynamicApi, name: &'static str, before: Value| {
        let api = api.clone();
        async move {
            assert_eq!(api.get(name).await.unwrap(), before, "{name} was changed");
        }
    };

    // Create: defaulted, with server-owned metadata, no resourceVersion; not stored.
    let would = dry_svc.create(&service("new", 1)).await.unwrap();
    assert_eq!(would["spec"]["template"]["runtime"], "container");
    assert_eq!(would["metadata"]["generation"], 1);
    assert!(would["metadata"]["uid"].is_string());
    assert!(would["metadata"]["creationTimestamp"].is_string());
    assert!(
        would["metadata"].get("resourceVersion").is_none(),
        "{would}"
    );
    assert!(svc.get("new").await.unwrap_err().is_not_found());
    let (listed, _) = svc.list_all(&ListParams::default()).await.unwrap();
    assert_eq!(listed.len(), 1, "only web: {listed:?}");
    // The same checks as a real create.
    let mut bad = service("bad", 1);
    bad["spec"]["replicas"] = json!(-1);
    let (code, _, fields) = api_error(dry_svc.create(&bad).await.unwrap_err());
    assert_eq!((code, fields), (422, vec!["spec.replicas".to_string()]));
    let (code, _, _) = api_error(dry_svc.create(&service("web", 2)).await.unwrap_err());
    assert_eq!(code, 409, "web exists");
    let nowhere = c.dynamic(kind("svc"), Some("nowhere")).dry_run();
    let (code, _, _) = api_error(nowhere.create(&service("x", 1)).await.unwrap_err());
    assert_eq!(code, 404, "the namespace must exist");

    // PUT and merge PATCH: the next object, at the current version; nothing stored.
    let mut update = web.clone();
    update["spec"]["replicas"] = json!(5);
    let would = dry_svc.replace("web", &update).await.unwrap();
    assert_eq!(
        (&would["spec"]["replicas"], &would["metadata"]["generation"]),
        (&json!(5), &json!(2))
    );
    assert_eq!(rv(&would), rv(&web));
    unchanged(&svc, "web", web.clone()).await;
    let would = dry_svc
        .patch("web", &json!({"spec": {"replicas": 7}}))
        .await
        .unwrap();
    assert_eq!(would["spec"]["replicas"], 7);
    unchanged(&svc, "web", web.clone()).await;
    // Still validated, still optimistic concurrency.
    update["spec"]["replicas"] = json!(-1);
    let (code, _, fields) = api_error(dry_svc.replace("web", &update).await.unwrap_err());
    assert_eq!((code, fields), (422, vec!["spec.replicas".to_string()]));
    let mut stale = web.clone();
    stale["metadata"]["resourceVersion"] =
        json!((rv(&web).parse::<i64>().unwrap() - 1).to_string());
    let (code, _, _) = api_error(dry_svc.replace("web", &stale).await.unwrap_err());
    assert_eq!(code, 409);
    let stale_patch = json!({"metadata": {"resourceVersion": stale["metadata"]["resourceVersion"]}, "spec": {"replicas": 3}});
    let (code, _, _) = api_error(dry_svc.patch("web", &stale_patch).await.unwrap_err());
    assert_eq!(code, 409);
    let (code, _, fields) = api_error(
        dry_inst
            .patch("web-0", &json!({"spec": {"ordinal": 3}}))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, fields), (422, vec!["spec.ordinal".to_string()]));

    // The status subresource.
    let would = dry_svc
        .patch_status("web", &json!({"status": {"readyReplicas": 2}}))
        .await
        .unwrap();
    assert_eq!(would["status"]["readyReplicas"], 2, "{would}");
    unchanged(&svc, "web", web.clone()).await;

    // The binding subresource: the bound object, not stored; a stale version is a 409.
    let bound = dry_inst
        .bind("web-0", "Cluster", "c1", Some(&rv(&pod)))
        .await
        .unwrap();
    assert_eq!(bound["spec"]["cluster"], "c1");
    assert_eq!(bound["status"]["phase"], "Scheduled");
    unchanged(&inst, "web-0", pod.clone()).await;
    let stale = (rv(&pod).parse::<i64>().unwrap() - 1).to_string();
    let (code, _, _) = api_error(
        dry_inst
            .bind("web-0", "Cluster", "c1", Some(&stale))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 409);

    // Delete: as the real delete answers (marked where a finalizer holds it), kept.
    let gone = dry_svc.delete("web", None).await.unwrap();
    assert_eq!(gone["metadata"]["name"], "web");
    unchanged(&svc, "web", web.clone()).await;
    let marked = dry_nodes.delete("pi-1", None).await.unwrap();
    assert!(
        marked["metadata"]["deletionTimestamp"].is_string(),
        "{marked}"
    );
    unchanged(&nodes, "pi-1", node.clone()).await;
    let web_stale = (rv(&web).parse::<i64>().unwrap() - 1).to_string();
    let (code, _, _) = api_error(dry_svc.delete("web", Some(&web_stale)).await.unwrap_err());
    assert_eq!(code, 409);

    // No watch saw any of it: the first event each sees is the real write after.
    for (api, watch, name) in [
        (&svc, &mut svc_watch, "web"),
        (&inst, &mut inst_watch, "web-0"),
        (&nodes, &mut node_watch, "pi-1"),
    ] {
        let real = api
            .patch(name, &json!({"metadata": {"labels": {"real": "yes"}}}))
            .await
            .unwrap();
        match next_event(watch).await {
            WatchEvent::Modified(o) => assert_eq!(rv(&o), rv(&real), "{name}: {o}"),
            other => panic!("{name}: the first event is not the real write: {other:?}"),
        }
        let more = tokio::time::timeout(Duration::from_millis(300), watch.next()).await;
        assert!(more.is_err(), "{name}: a second event: {more:?}");
    }

    // Anything but `All` is a 400 naming the parameter, on every write.
    for (code, message, _) in [
        api_error(
            svc.with_dry_run("Bogus")
                .create(&service("x", 1))
                .await
                .unwrap_err(),
        ),
        api_error(
            svc.with_dry_run("Bogus")
                .patch("web", &json!({}))
                .await
                .unwrap_err(),
        ),
        api_error(
            svc.with_dry_run("Bogus")
                .delete("web", None)
                .await
                .unwrap_err(),
        ),
    ] {
        assert_eq!(code, 400);
        assert!(
            message.contains("dryRun") && message.contains("\"All\""),
            "{message}"
        );
    }
    assert!(svc.get("web").await.is_ok());

    // The OpenAPI document offers `dryRun` on the writes, and only there.
    let openapi = c.get_json("/openapi/v3/apis/oakestra.io/v1").await.unwrap();
    let has_dry_run = |path: &str, op: &str| {
        openapi["paths"][path][op]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "dryRun")
    };
    let services = "/apis/oakestra.io/v1/namespaces/{namespace}/services";
    let one = format!("{services}/{{name}}");
    let status = format!("{one}/status");
    for (path, op, want) in [
        (services, "post", true),
        (services, "get", false),
        (&one, "put", true),
        (&one, "patch", true),
        (&one, "delete", true),
        (&one, "get", false),
        (&status, "put", true),
        (&status, "patch", true),
        (&status, "get", false),
    ] {
        assert_eq!(has_dry_run(path, op), want, "{op} {path}");
    }
}

async fn json_patches(c: &Client) {
    let services = c.dynamic(kind("services"), Some("default"));
    let created = services.create(&service("jp", 1)).await.unwrap();
    let ops = json!([
        {"op": "test", "path": "/spec/replicas", "value": 1},
        {"op": "replace", "path": "/spec/replicas", "value": 4},
        {"op": "add", "path": "/metadata/labels/patched", "value": "yes"},
    ]);
    let patched = services.json_patch("jp", &ops, false).await.unwrap();
    assert_eq!(patched["spec"]["replicas"], 4);
    assert_eq!(patched["metadata"]["labels"]["patched"], "yes");
    assert_ne!(rv(&patched), rv(&created));

    // All or nothing: a failing `test` writes none of the operations.
    let ops = json!([
        {"op": "replace", "path": "/spec/replicas", "value": 9},
        {"op": "test", "path": "/spec/replicas", "value": 1},
    ]);
    let (code, message, fields) =
        api_error(services.json_patch("jp", &ops, false).await.unwrap_err());
    assert_eq!(code, 422, "{message}");
    assert_eq!(fields, vec!["/spec/replicas".to_string()], "{message}");
    let (code, message, _) = api_error(
        services
            .json_patch(
                "jp",
                &json!([{"op": "remove", "path": "/spec/nothing"}]),
                false,
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422, "{message}");
    assert_eq!(services.get("jp").await.unwrap()["spec"]["replicas"], 4);

    // A resourceVersion the patch sets is a precondition (kubectl's migration to
    // server-side apply replaces it); the stale one of the first version is a 409.
    let stale = json!([{"op": "replace", "path": "/metadata/resourceVersion", "value": rv(&created)},
                       {"op": "replace", "path": "/spec/replicas", "value": 2}]);
    let (code, _, _) = api_error(services.json_patch("jp", &stale, false).await.unwrap_err());
    assert_eq!(code, 409);
    let current = services.get("jp").await.unwrap();
    let fresh = json!([{"op": "replace", "path": "/metadata/resourceVersion", "value": rv(&current)},
                       {"op": "replace", "path": "/spec/replicas", "value": 2}]);
    assert_eq!(
        services.json_patch("jp", &fresh, false).await.unwrap()["spec"]["replicas"],
        2
    );

    // The status subresource takes JSON patches too, and they change only the status.
    let status = json!([{"op": "add", "path": "/status", "value": {"readyReplicas": 1}},
                        {"op": "replace", "path": "/spec/replicas", "value": 7}]);
    let written = services.json_patch("jp", &status, true).await.unwrap();
    assert_eq!(
        (
            written["status"]["readyReplicas"].clone(),
            written["spec"]["replicas"].clone()
        ),
        (json!(1), json!(2))
    );

    let (code, _, _) = api_error(
        services
            .json_patch("jp", &json!({"op": "add"}), false)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 400, "a JSON patch is a list");
}

/// The managedFields entries of `o` as `(manager, operation, subresource)`.
fn managers(o: &Value) -> Vec<(String, String, String)> {
    o["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (text("manager"), text("operation"), text("subresource"))
        })
        .collect()
}

/// The fieldsV1 of `manager`'s entry (of `operation`) in `o`.
fn fields_of(o: &Value, manager: &str, operation: &str) -> Value {
    o["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
        .map(|e| e["fieldsV1"].clone())
        .unwrap_or(Value::Null)
}

fn entry(manager: &str, operation: &str, subresource: &str) -> (String, String, String) {
    (manager.into(), operation.into(), subresource.into())
}

/// Server-side apply: field ownership, conflicts, force, removal of what an applier
/// stops sending, list-maps merged by key, the status subresource, dry runs, and the
/// managedFields every other write keeps.
async fn server_side_apply(c: &Client) {
    let svc = c.dynamic(kind("svc"), Some("default"));
    let applied = |labels: Value, spec: Value| {
        json!({"apiVersion": "oakestra.io/v1", "kind": "Service",
               "metadata": {"name": "ssa", "labels": labels}, "spec": spec})
    };
    let a1 = applied(
        json!({"app": "ssa", "team": "a"}),
        json!({"replicas": 2, "template": {"image": "x"}}),
    );

    // Created by an apply: one Apply entry, owning what it sent.
    let created = svc.apply("ssa", &a1, "a", false).await.unwrap();
    assert_eq!(managers(&created), vec![entry("a", "Apply", "")]);
    let owned = fields_of(&created, "a", "Apply");
    assert_eq!(owned["f:spec"]["f:replicas"], json!({}), "{owned}");
    assert_eq!(
        owned["f:metadata"]["f:labels"]["f:team"],
        json!({}),
        "{owned}"
    );
    assert!(created["metadata"]["managedFields"][0]["time"].is_string());
    assert_eq!(
        created["spec"]["template"]["runtime"], "container",
        "defaulted"
    );

    // The same apply again writes nothing.
    let again = svc.apply("ssa", &a1, "a", false).await.unwrap();
    assert_eq!(rv(&again), rv(&created));
    assert_eq!(
        again["metadata"]["managedFields"],
        created["metadata"]["managedFields"]
    );

    // Another manager changing a's field: a conflict naming both.
    let b = applied(json!(null), json!({"replicas": 3}));
    let status = match svc.apply("ssa", &b, "b", false).await.unwrap_err() {
        ClientError::Api { status } => status,
        other => panic!("expected a conflict, got {other}"),
    };
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        status.message,
        "Apply failed with 1 conflict: conflict with \"a\" using oakestra.io/v1: .spec.replicas"
    );
    let causes = status.details.unwrap().causes;
    assert_eq!(causes.len(), 1, "{causes:?}");
    assert_eq!(
        (
            causes[0].reason.as_str(),
            causes[0].field.as_str(),
            causes[0].message.as_str()
        ),
        (
            "FieldManagerConflict",
            ".spec.replicas",
            "conflict with \"a\" using oakestra.io/v1"
        )
    );
    assert_eq!(svc.get("ssa").await.unwrap()["spec"]["replicas"], 2);

    // Forced, b takes the field from a.
    let forced = svc.apply("ssa", &b, "b", true).await.unwrap();
    assert_eq!(forced["spec"]["replicas"], 3);
    assert_eq!(
        managers(&forced),
        vec![entry("a", "Apply", ""), entry("b", "Apply", "")]
    );
    assert_eq!(
        fields_of(&forced, "b", "Apply"),
        json!({"f:spec": {"f:replicas": {}}})
    );
    assert!(fields_of(&forced, "a", "Apply")["f:spec"]
        .get("f:replicas")
        .is_none());

    // a stops sending replicas: b owns them, they stay.
    let a2 = applied(
        json!({"app": "ssa", "team": "a"}),
        json!({"template": {"image": "x"}}),
    );
    let kept = svc.apply("ssa", &a2, "a", false).await.unwrap();
    assert_eq!(kept["spec"]["replicas"], 3);
    // a stops sending a label it alone owned: it goes.
    let a3 = applied(json!({"app": "ssa"}), json!({"template": {"image": "x"}}));
    let dropped = svc.apply("ssa", &a3, "a", false).await.unwrap();
    assert_eq!(dropped["metadata"]["labels"], json!({"app": "ssa"}));

    // A merge patch is an Update of its manager: without a fieldManager, the product
    // of the User-Agent (this client sends `oakestra/<version>`).
    let patched = svc
        .patch("ssa", &json!({"metadata": {"annotations": {"note": "hi"}}}))
        .await
        .unwrap();
    assert!(
        managers(&patched).contains(&entry("oakestra", "Update", "")),
        "{patched}"
    );
    assert_eq!(
        fields_of(&patched, "oakestra", "Update"),
        json!({"f:metadata": {"f:annotations": {"f:note": {}}}})
    );

    // Template ports are a list-map by containerPort and protocol: two managers' ports
    // merge (a missing protocol is its default, tcp).
    let a4 = applied(
        json!({"app": "ssa"}),
        json!({"template": {"image": "x", "ports": [{"containerPort": 80}]}}),
    );
    svc.apply("ssa", &a4, "a", false).await.unwrap();
    let c_ports = applied(
        json!(null),
        json!({"template": {"ports": [{"containerPort": 81, "protocol": "udp"}]}}),
    );
    let merged = svc.apply("ssa", &c_ports, "c", false).await.unwrap();
    let ports: Vec<(Value, Value)> = merged["spec"]["template"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["containerPort"].clone(), p["protocol"].clone()))
        .collect();
    assert_eq!(
        ports,
        vec![(json!(80), json!("tcp")), (json!(81), json!("udp"))]
    );
    assert_eq!(
        fields_of(&merged, "c", "Apply")["f:spec"]["f:template"]["f:ports"]
            ["k:{\"containerPort\":81,\"protocol\":\"udp\"}"]["."],
        json!({}),
        "{merged}"
    );
    assert!(
        fields_of(&merged, "a", "Apply")["f:spec"]["f:template"]["f:ports"]
            .get("k:{\"containerPort\":80,\"protocol\":\"tcp\"}")
            .is_some()
    );

    // The status subresource: its own Apply entry; a main apply does not touch status.
    let ready = json!({"apiVersion": "oakestra.io/v1", "kind": "Service",
                       "metadata": {"name": "ssa"}, "status": {"readyReplicas": 1}});
    let with_status = svc
        .apply_status("ssa", &ready, "ctrl", false)
        .await
        .unwrap();
    assert_eq!(with_status["status"]["readyReplicas"], 1);
    assert!(managers(&with_status).contains(&entry("ctrl", "Apply", "status")));
    assert_eq!(
        fields_of(&with_status, "ctrl", "Apply"),
        json!({"f:status": {"f:readyReplicas": {}}})
    );
    let mut main_with_status = a4.clone();
    main_with_status["status"] = json!({"readyReplicas": 7});
    let main = svc
        .apply("ssa", &main_with_status, "a", false)
        .await
        .unwrap();
    assert_eq!(main["status"]["readyReplicas"], 1);
    assert_eq!(rv(&main), rv(&with_status), "nothing changed");

    // A resourceVersion in the applied object is a precondition: stale is a 409, and an
    // absent object is not created.
    let mut stale = a4.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    let refused = svc.apply("ssa", &stale, "a", false).await.unwrap_err();
    assert!(refused.is_conflict(), "{refused}");
    let mut current = a4.clone();
    current["metadata"]["resourceVersion"] = json!(rv(&main));
    current["metadata"]["labels"]["tier"] = json!("web");
    let at_version = svc.apply("ssa", &current, "a", false).await.unwrap();
    assert_eq!(at_version["metadata"]["labels"]["tier"], "web");
    let mut absent = current.clone();
    absent["metadata"]["name"] = json!("ssa-absent");
    let refused = svc
        .apply("ssa-absent", &absent, "a", false)
        .await
        .unwrap_err();
    assert!(refused.is_not_found(), "{refused}");
    svc.apply("ssa", &a4, "a", false).await.unwrap();

    // Dry runs store nothing, creating or changing.
    let before = svc.get("ssa").await.unwrap();
    let would = svc
        .dry_run()
        .apply(
            "ssa",
            &applied(json!(null), json!({"replicas": 9})),
            "b",
            false,
        )
        .await
        .unwrap();
    assert_eq!(would["spec"]["replicas"], 9);
    assert_eq!(svc.get("ssa").await.unwrap(), before);
    let mut fresh = a1.clone();
    fresh["metadata"]["name"] = json!("ssa-new");
    let would = svc
        .dry_run()
        .apply("ssa-new", &fresh, "a", false)
        .await
        .unwrap();
    assert_eq!(managers(&would), vec![entry("a", "Apply", "")]);
    assert!(svc.get("ssa-new").await.unwrap_err().is_not_found());

    // Rejections: no fieldManager, managedFields in the body, another name.
    for (body, manager, want) in [
        (a1.clone(), "", "fieldManager"),
        (
            {
                let mut o = a1.clone();
                o["metadata"]["managedFields"] = json!([]);
                o
            },
            "a",
            "managedFields",
        ),
        (fresh.clone(), "a", "does not match"),
    ] {
        let (code, message, _) =
            api_error(svc.apply("ssa", &body, manager, false).await.unwrap_err());
        assert_eq!(code, 400, "{message}");
        assert!(message.contains(want), "{message}");
    }

    // A write that sets managedFields stores them as given; an empty list clears them.
    let current = svc.get("ssa").await.unwrap();
    let only_b: Vec<Value> = current["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["manager"] == "b")
        .cloned()
        .collect();
    let migrated = svc
        .json_patch(
            "ssa",
            &json!([{"op": "replace", "path": "/metadata/managedFields", "value": only_b}]),
            false,
        )
        .await
        .unwrap();
    assert_eq!(managers(&migrated), vec![entry("b", "Apply", "")]);
    let cleared = svc
        .json_patch(
            "ssa",
            &json!([{"op": "replace", "path": "/metadata/managedFields", "value": []}]),
            false,
        )
        .await
        .unwrap();
    assert!(
        cleared["metadata"].get("managedFields").is_none(),
        "{cleared}"
    );
    svc.delete("ssa", None).await.unwrap();
}

async fn discovery(c: &Client) {
    let groups = c.get_json("/apis").await.unwrap();
    assert_eq!(groups["groups"][0]["name"], "oakestra.io");
    let resources = c.get_json("/apis/oakestra.io/v1").await.unwrap();
    let names: Vec<_> = resources["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for n in [
        "clusters",
        "clusters/status",
        "nodes",
        "services",
        "services/status",
        "instances",
        "instances/binding",
        "events",
        "leases",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let core = c.get_json("/api/v1").await.unwrap();
    assert_eq!(core["resources"][0]["name"], "namespaces");
    let openapi = c.get_json("/openapi/v3/apis/oakestra.io/v1").await.unwrap();
    let schemas = &openapi["components"]["schemas"];
    assert!(schemas["io.oakestra.v1.Service"]["properties"]["spec"].is_object());
    // The list markers kubectl merges by are served.
    let ports = &schemas["io.oakestra.v1.Service.Workload"]["properties"]["ports"];
    assert_eq!(ports["x-kubernetes-list-type"], "map", "{ports}");
    assert_eq!(
        ports["x-kubernetes-list-map-keys"],
        json!(["containerPort", "protocol"])
    );
    let conditions = &schemas["io.oakestra.v1.Service.ServiceStatus"]["properties"]["conditions"];
    assert_eq!(
        conditions["x-kubernetes-list-map-keys"],
        json!(["type"]),
        "{conditions}"
    );
    let wrong = c
        .get_json("/apis/oakestra.io/v1/widgets")
        .await
        .unwrap_err();
    assert!(wrong.is_not_found());
}

/// A server of its own for one test, on one backend, and a client of it. Dropping it
/// stops the server, then removes its directory or kills its etcd.
struct Setup {
    client: Client,
    server: Server,
    _dir: Option<tempfile::TempDir>,
    _etcd: Option<e2e::Etcd>,
}

impl Setup {
    /// The embedded store in a temp dir, served over TCP.
    async fn embedded() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap());
        let (server, client) = start(store).await;
        Setup {
            client,
            server,
            _dir: Some(dir),
            _etcd: None,
        }
    }

    /// The embedded store, through a client of the server in its own process
    /// ([`Server::local`]), as the controllers of `oakestra root` and `oakestra cluster`
    /// use it. The client's URL points at a port nobody listens on: any request that
    /// went over the network would fail.
    async fn in_process() -> Setup {
        let mut setup = Setup::embedded().await;
        let nowhere = format!("http://127.0.0.1:{}", e2e::free_port());
        setup.client = Client::in_process(&nowhere, Arc::new(setup.server.local())).unwrap();
        setup
    }

    /// A real etcd process of its own.
    async fn etcd() -> Setup {
        let etcd = e2e::Etcd::start();
        let store = Arc::new(
            EtcdStore::connect(&[etcd.url()], "/oakestra")
                .await
                .unwrap(),
        );
        let (server, client) = start(store).await;
        Setup {
            client,
            server,
            _dir: None,
            _etcd: Some(etcd),
        }
    }
}

/// One `#[test]` per scenario and backend, so a failure names both:
/// `embedded::watches`, `in_process::watches`, `etcd::watches`.
macro_rules! scenarios {
    ($($scenario:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let setup = super::Setup::embedded().await;
                    super::$scenario(&setup.client).await;
                }
            )*
        }
        mod in_process {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let setup = super::Setup::in_process().await;
                    super::$scenario(&setup.client).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let setup = super::Setup::etcd().await;
                    super::$scenario(&setup.client).await;
                }
            )*
        }
    };
}

scenarios!(
    crud_and_concurrency,
    validation_errors,
    status_subresource_and_generation,
    binding_subresource,
    finalizers,
    paging_and_selectors,
    watches,
    discovery,
    dry_run,
    json_patches,
    server_side_apply,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_is_a_clear_error() {
    let port = e2e::free_port();
    let err = EtcdStore::connect(&[format!("http://127.0.0.1:{port}")], "/oakestra")
        .await
        .err()
        .expect("no etcd there");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[allow(dead_code)]
fn assert_send(_: &DynamicApi) {}
