//! The reconcile runtime against real API server processes: a watcher/reflector that
//! survives a dropped stream and a restarted server, relists on 410, and a controller
//! that loses nothing in a burst of 10,000 events and never reconciles a key twice at
//! once, controllers of one client that share one watch per kind, and a debounced
//! controller that merges a burst of changes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::runtime::{reflector, watcher, Action, Change, Controller, ObjectRef};
use client::{Api, Client, ListParams};
use crds::Cluster;
use e2e::{eventually, Etcd, RootServer};
use futures::StreamExt;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn cluster(name: &str) -> serde_json::Value {
    json!({"apiVersion": "oakestra.io/v1", "kind": "Cluster", "metadata": {"name": name}, "spec": {}})
}

async fn create_many(api: &Api<Cluster>, prefix: &str, n: usize, parallel: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let (api, next, prefix) = (api.clone(), next.clone(), prefix.to_string());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                api.dynamic()
                    .create(&cluster(&format!("{prefix}-{i}")))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// The names and resourceVersions the API has now.
async fn truth(api: &Api<Cluster>) -> HashMap<String, Option<String>> {
    let (items, _) = api.list(&ListParams::default()).await.unwrap();
    items
        .into_iter()
        .map(|c| (c.metadata.name, c.metadata.resource_version))
        .collect()
}

fn cached(store: &client::runtime::Store<Cluster>) -> HashMap<String, Option<String>> {
    store
        .state()
        .iter()
        .map(|c| (c.metadata.name.clone(), c.metadata.resource_version.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_survives_restarts_and_relists_on_410() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start();
    let store_flag = format!("etcd:{}", etcd.url());
    // Two API servers on one etcd: the reflector follows A; B writes while A is down.
    let mut a = RootServer::start_with(&store_flag, dir.path(), &["--no-controllers"]);
    let token = a.upstream().token;
    let b = RootServer::start_with(
        &store_flag,
        dir.path(),
        &["--no-controllers", "--token", &token],
    );
    let api_a: Api<Cluster> = a.client().api(None);
    let api_b: Api<Cluster> = b.client().api(None);

    let (store, writer) = reflector::store::<Cluster>();
    let relists = Arc::new(AtomicUsize::new(0));
    let counter = relists.clone();
    let events = reflector::reflector(writer, watcher(api_a.clone(), ListParams::default()));
    tokio::spawn(async move {
        futures::pin_mut!(events);
        while let Some(e) = events.next().await {
            if let Ok(Change::Restarted(_)) = e {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    store.wait_ready().await;
    create_many(&api_a, "first", 50, 4).await;
    eventually("cache has the first 50", WAIT, || async {
        (cached(&store) == truth(&api_a).await).then_some(())
    })
    .await;
    assert_eq!(relists.load(Ordering::Relaxed), 1);

    // The stream drops (server killed and restarted, nothing written meanwhile):
    // the watcher resumes from its last version without a relist.
    a.kill9();
    a.restart();
    create_many(&api_a, "second", 10, 2).await;
    eventually("cache follows after the restart", WAIT, || async {
        (cached(&store) == truth(&api_a).await).then_some(())
    })
    .await;
    assert_eq!(relists.load(Ordering::Relaxed), 1, "a resume, not a relist");

    // Changes while A is down are older than A's fresh watch cache: 410, then a relist.
    a.kill9();
    create_many(&api_b, "third", 30, 4).await;
    for i in 0..5 {
        api_b.delete(&format!("first-{i}")).await.unwrap();
    }
    api_b
        .patch(
            "first-9",
            &json!({"metadata": {"labels": {"changed": "while-down"}}}),
        )
        .await
        .unwrap();
    a.restart();
    eventually("cache has everything after the relist", WAIT, || async {
        (cached(&store) == truth(&api_b).await).then_some(())
    })
    .await;
    assert_eq!(
        relists.load(Ordering::Relaxed),
        2,
        "exactly one relist after the 410"
    );
    assert_eq!(store.len(), 85);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_10000_events_loses_nothing_and_never_overlaps_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = api_server(dir.path());
    let client = server.client();
    let api: Api<Cluster> = client.api(None);

    let in_flight: Arc<Mutex<HashSet<ObjectRef>>> = Arc::default();
    let overlaps = Arc::new(AtomicUsize::new(0));
    let seen: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let controller = Controller::new(api.clone(), ListParams::default()).concurrency(8);
    let store = controller.store();
    let shutdown = shutdown_signal();
    let (fl, ov, sn) = (in_flight.clone(), overlaps.clone(), seen.clone());
    let stop = shutdown.clone();
    let running = tokio::spawn(controller.run(
        move |c: Arc<Cluster>| {
            let (fl, ov, sn) = (fl.clone(), ov.clone(), sn.clone());
            async move {
                let key = ObjectRef::of(c.as_ref());
                if !fl.lock().unwrap().insert(key.clone()) {
                    ov.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
                sn.lock().unwrap().insert(
                    c.metadata.name.clone(),
                    c.metadata.resource_version.clone().unwrap_or_default(),
                );
                fl.lock().unwrap().remove(&key);
                Ok::<_, std::convert::Infallible>(Action::await_change())
            }
        },
        async move { stop.notified().await },
    ));

    // 10,000 creates, and a stream of updates to a few hot keys at the same time.
    let hot = api.clone();
    let updates = tokio::spawn(async move {
        for round in 0..20 {
            for k in 0..25 {
                let name = format!("burst-{k}");
                let _ = hot
                    .patch(
                        &name,
                        &json!({"metadata": {"labels": {"round": round.to_string()}}}),
                    )
                    .await;
            }
        }
    });
    create_many(&api, "burst", 10_000, 32).await;
    updates.await.unwrap();

    let truth = truth(&api).await;
    assert_eq!(truth.len(), 10_000);
    eventually(
        "the cache has all 10,000 at their latest version",
        WAIT,
        || async { (cached(&store) == truth).then_some(()) },
    )
    .await;
    eventually(
        "every object reconciled at its latest version",
        WAIT,
        || async {
            let seen = seen.lock().unwrap();
            truth
                .iter()
                .all(|(name, rv)| seen.get(name) == rv.as_ref())
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        overlaps.load(Ordering::Relaxed),
        0,
        "a key was reconciled twice at once"
    );
    shutdown.notify_one();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("clean shutdown")
        .unwrap();
}

/// An API server alone (no controllers) on an embedded store under `dir`.
fn api_server(dir: &std::path::Path) -> RootServer {
    RootServer::start_with(
        &format!("embedded:{}", dir.join("store").display()),
        dir,
        &["--no-controllers"],
    )
}

fn shutdown_signal() -> Arc<tokio::sync::Notify> {
    Arc::new(tokio::sync::Notify::new())
}

/// The server's count of open watches.
async fn open_watches(client: &Client) -> i64 {
    e2e::open_watches(&client.get_text("/metrics").await.unwrap())
}

/// Name → resourceVersion of the objects a controller reconciled, latest last.
type Seen = Arc<Mutex<HashMap<String, Option<String>>>>;

/// A controller that records the version of each Cluster it reconciles, until `stop`.
fn recording(
    controller: Controller<Cluster>,
    stop: Arc<tokio::sync::Notify>,
) -> (Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let task = tokio::spawn(controller.run(
        move |c: Arc<Cluster>| {
            record
                .lock()
                .unwrap()
                .insert(c.metadata.name.clone(), c.metadata.resource_version.clone());
            async { Ok::<_, std::convert::Infallible>(Action::await_change()) }
        },
        async move { stop.notified().await },
    ));
    (seen, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_of_one_client_share_one_watch_per_kind() {
    let dir = tempfile::tempdir().unwrap();
    let server = api_server(dir.path());
    let client = server.client();
    let api: Api<Cluster> = client.api(None);
    create_many(&api, "before", 20, 4).await;

    // Two controllers of Clusters, a third that also follows them, and a plain cache.
    let (stop_a, stop_b) = (shutdown_signal(), shutdown_signal());
    let (seen_a, run_a) = recording(
        Controller::new(api.clone(), ListParams::default()),
        stop_a.clone(),
    );
    let (seen_b, run_b) = recording(
        Controller::new(api.clone(), ListParams::default()),
        stop_b.clone(),
    );
    let (stop_cache_tx, stop_cache) = tokio::sync::oneshot::channel::<()>();
    let cache = client::runtime::cache(api.clone(), ListParams::default(), async {
        let _ = stop_cache.await;
    });
    create_many(&api, "after", 10, 2).await;
    let everything = truth(&api).await;
    assert_eq!(everything.len(), 30);
    for (who, seen) in [("first", &seen_a), ("second", &seen_b)] {
        eventually(
            &format!("the {who} controller reconciled all 30 at their versions"),
            WAIT,
            || async { (*seen.lock().unwrap() == everything).then_some(()) },
        )
        .await;
    }
    assert_eq!(cached(&cache), everything);
    assert_eq!(open_watches(&client).await, 1, "one watch serves all three");

    // Another client has a watch of its own.
    let other = server.client();
    let stop_c = shutdown_signal();
    let (_, run_c) = recording(
        Controller::new(other.api(None), ListParams::default()),
        stop_c.clone(),
    );
    eventually("the other client's watch is open", WAIT, || async {
        (open_watches(&client).await == 2).then_some(())
    })
    .await;
    stop_c.notify_one();
    run_c.await.unwrap();

    // The first controller stops: the watch stays for the second, which goes on.
    stop_a.notify_one();
    run_a.await.unwrap();
    create_many(&api, "later", 5, 1).await;
    let everything = truth(&api).await;
    eventually(
        "the second controller sees the later ones",
        WAIT,
        || async { (*seen_b.lock().unwrap() == everything).then_some(()) },
    )
    .await;
    eventually("the stopped client's watch is closed", WAIT, || async {
        (open_watches(&client).await == 1).then_some(())
    })
    .await;

    // The last users go: the watch ends.
    stop_b.notify_one();
    run_b.await.unwrap();
    stop_cache_tx.send(()).unwrap();
    eventually("no watch is left open", WAIT, || async {
        (open_watches(&client).await == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debounced_controller_merges_a_burst_into_few_reconciles() {
    let dir = tempfile::tempdir().unwrap();
    let server = api_server(dir.path());
    let client = server.client();
    let api: Api<Cluster> = client.api(None);
    create_many(&api, "hot", 1, 1).await;

    let runs = Arc::new(AtomicUsize::new(0));
    let last: Arc<Mutex<Option<String>>> = Arc::default();
    let (count, seen) = (runs.clone(), last.clone());
    let stop = shutdown_signal();
    let stopped = stop.clone();
    let debounce = Duration::from_millis(500);
    let controller = Controller::new(api.clone(), ListParams::default()).debounce(debounce);
    let running = tokio::spawn(controller.run(
        move |c: Arc<Cluster>| {
            count.fetch_add(1, Ordering::Relaxed);
            *seen.lock().unwrap() = c.metadata.resource_version.clone();
            async { Ok::<_, std::convert::Infallible>(Action::await_change()) }
        },
        async move { stopped.notified().await },
    ));
    eventually("the first reconcile", WAIT, || async {
        (runs.load(Ordering::Relaxed) >= 1).then_some(())
    })
    .await;
    // Triggers from the start (the first list) are over once no reconcile has come for
    // one more period (and a margin).
    let quiet = debounce + Duration::from_millis(300);
    let mut last_change = (runs.load(Ordering::Relaxed), tokio::time::Instant::now());
    let before = eventually(
        "no reconcile for a debounce period after the first list",
        WAIT,
        || {
            let n = runs.load(Ordering::Relaxed);
            if n != last_change.0 {
                last_change = (n, tokio::time::Instant::now());
            }
            let settled = last_change.1.elapsed() >= quiet;
            async move { settled.then_some(n) }
        },
    )
    .await;

    // 30 changes of one object, sent one after the other: at most one reconcile per
    // debounce period the burst lasted (plus the one after it), and the last one sees
    // the last version.
    let burst = std::time::Instant::now();
    for round in 0..30 {
        api.patch(
            "hot-0",
            &json!({"metadata": {"labels": {"round": round.to_string()}}}),
        )
        .await
        .unwrap();
    }
    let periods = (burst.elapsed().as_millis() / debounce.as_millis().max(1)) as usize;
    let latest = api.get("hot-0").await.unwrap().metadata.resource_version;
    eventually("a reconcile of the last version", WAIT, || async {
        (*last.lock().unwrap() == latest).then_some(())
    })
    .await;
    let after_burst = runs.load(Ordering::Relaxed) - before;
    assert!(
        after_burst >= 1 && after_burst <= periods + 2,
        "{after_burst} reconciles for 30 changes over {} ms",
        burst.elapsed().as_millis()
    );
    stop.notify_one();
    running.await.unwrap();
}

/// An Event recorder against a real server: beyond ten objects of one group, their
/// Events are combined into one about the group, written once at first and then at
/// most every `COMBINED_EVERY` while the burst goes on; the count written at the end
/// (the recorder dropped) is every occurrence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorder_writes_a_burst_of_combined_events_seldom_and_loses_no_count() {
    use client::runtime::events::{AGGREGATE_AFTER, COMBINED, COMBINED_EVERY, FLUSH_EVERY};
    use crds::{Event, EventType, ObjectReference};

    let dir = tempfile::tempdir().unwrap();
    let server = api_server(dir.path());
    let client = server.client();
    let recorder = client::runtime::Recorder::new(client.clone(), "oakestra-test");
    let group = ObjectReference {
        kind: "Service".into(),
        name: "web".into(),
        namespace: Some("default".into()),
        uid: Some("uid-web".into()),
    };
    let placed = |from: usize, to: usize| {
        for n in from..to {
            let mut c: Cluster = serde_json::from_value(cluster(&format!("web-{n}"))).unwrap();
            c.metadata.namespace = Some("default".into());
            recorder.record_in(
                &c,
                Some(group.clone()),
                EventType::Normal,
                "Placed",
                "placed",
            );
        }
    };
    let events: Api<Event> = client.api(Some("default"));
    let combined_count = || async {
        let (list, _) = events.list(&ListParams::default()).await.unwrap();
        let combined: Vec<&Event> = list
            .iter()
            .filter(|e| e.message.starts_with(COMBINED))
            .collect();
        assert!(combined.len() <= 1, "one combined Event: {combined:?}");
        let singles = list.len() - combined.len();
        (singles, combined.first().map(|e| e.count))
    };

    let first = 25;
    placed(0, first);
    let combined = first - AGGREGATE_AFTER;
    eventually("the combined Event is written", WAIT, || async {
        (combined_count().await == (AGGREGATE_AFTER, Some(combined as u32))).then_some(())
    })
    .await;

    // More of the same burst, right after: held, though many flushes pass.
    placed(first, first + 40);
    let held = FLUSH_EVERY * 4;
    assert!(held < COMBINED_EVERY / 2);
    tokio::time::sleep(held).await;
    assert_eq!(
        combined_count().await,
        (AGGREGATE_AFTER, Some(combined as u32)),
        "within {COMBINED_EVERY:?} of its first write the combined Event is not written again"
    );

    // Its writer ends with the recorder, writing what it held.
    drop(recorder);
    eventually("the held count is written at the end", WAIT, || async {
        (combined_count().await == (AGGREGATE_AFTER, Some((combined + 40) as u32))).then_some(())
    })
    .await;
}
