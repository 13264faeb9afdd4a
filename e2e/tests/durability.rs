//! `kill -9` of `oakestra root` in the middle of a stream of writes loses no write the
//! server acknowledged, on the embedded store and on etcd.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::{Etcd, RootServer};
use serde_json::json;

async fn kill_during_writes(server: &mut RootServer) {
    let client = server.client();
    let acknowledged = Arc::new(Mutex::new(Vec::<(String, i64)>::new()));
    let mut writers = Vec::new();
    for w in 0..4 {
        let api = client.dynamic(crds::kind_by_name("clusters").unwrap(), None);
        let acknowledged = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("c-{w}-{i}");
                let body = json!({"apiVersion": "oakestra.io/v1", "kind": "Cluster", "metadata": {"name": name}, "spec": {}});
                match api.create(&body).await {
                    Ok(o) => {
                        let rv = o["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
                        acknowledged.lock().unwrap().push((name, rv));
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // Let writes flow, then crash the server while they are in flight.
    e2e::eventually("100 acknowledged writes", Duration::from_secs(60), || {
        let n = acknowledged.lock().unwrap().len();
        async move { (n >= 100).then_some(()) }
    })
    .await;
    server.kill9();
    for w in writers {
        w.await.unwrap();
    }
    server.restart();

    let acknowledged = acknowledged.lock().unwrap().clone();
    let api = client.dynamic(crds::kind_by_name("clusters").unwrap(), None);
    let (items, _) = api.list_all(&Default::default()).await.unwrap();
    let stored: std::collections::HashMap<String, i64> = items
        .iter()
        .map(|o| {
            let rv = o["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            (o["metadata"]["name"].as_str().unwrap().to_string(), rv)
        })
        .collect();
    for (name, rv) in &acknowledged {
        assert_eq!(
            stored.get(name),
            Some(rv),
            "acknowledged write {name} (rv {rv}) lost; log:\n{}",
            server.log()
        );
    }
    // Revisions continue upward after the crash.
    let max = acknowledged.iter().map(|(_, rv)| *rv).max().unwrap();
    let after = api
        .create(&json!({"apiVersion": "oakestra.io/v1", "kind": "Cluster", "metadata": {"name": "after"}, "spec": {}}))
        .await
        .unwrap();
    assert!(
        after["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > max
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_loses_no_acknowledged_write_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("embedded:{}", dir.path().join("store").display());
    let mut server = RootServer::start_with(&store, dir.path(), &["--no-controllers"]);
    kill_during_writes(&mut server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_loses_no_acknowledged_write_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start();
    let mut server = RootServer::start_with(
        &format!("etcd:{}", etcd.url()),
        dir.path(),
        &["--no-controllers"],
    );
    kill_during_writes(&mut server).await;
}
