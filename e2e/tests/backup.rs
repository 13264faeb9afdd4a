//! Backup and restore (`docs/operations.md`, "Backup and restore"): `oakestra backup`
//! while the root runs, `oakestra restore` into a new store, and the controllers
//! converging on what came back; refusals that write nothing; and etcd's own snapshot
//! (`etcdctl snapshot save|restore`) under a root.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use client::{Client, ListParams};
use e2e::{binary, eventually, free_port, stays, wait_for_port, Etcd, Process, RootServer};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

/// Run `oakestra ARGS…` to its end: whether it succeeded, and what it printed.
fn oakestra(args: &[&str]) -> (bool, String) {
    let out = Command::new(binary("oakestra"))
        .args(args)
        .output()
        .expect("run oakestra");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// The objects of a backup file, as key → value.
fn backup_objects(file: &Path) -> BTreeMap<String, Value> {
    apiserver::backup::read(file)
        .unwrap_or_else(|e| panic!("{e}"))
        .objects
        .into_iter()
        .map(|(k, v)| (k, serde_json::from_slice(&v).unwrap()))
        .collect()
}

/// The values of `objects` under `prefix`, by name.
fn under(objects: &BTreeMap<String, Value>, prefix: &str) -> BTreeMap<String, Value> {
    objects
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| {
            (
                v["metadata"]["name"].as_str().unwrap().to_string(),
                v.clone(),
            )
        })
        .collect()
}

/// What must come back unchanged: each object's uid and spec, and the addresses and
/// placements in its status.
fn essentials(objects: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    objects
        .iter()
        .map(|(name, o)| {
            let kept = json!({
                "uid": o["metadata"]["uid"],
                "spec": o["spec"],
                "serviceIP": o.pointer("/status/serviceIP"),
                "subnet": o.pointer("/status/subnet"),
            });
            (name.clone(), kept)
        })
        .collect()
}

/// The objects of `plural` (`oakestra.io`, default namespace where namespaced) as the
/// API lists them, by name, without those being deleted.
async fn listed(client: &Client, plural: &str) -> BTreeMap<String, Value> {
    let kind = crds::KINDS.iter().find(|k| k.plural == plural).unwrap();
    let ns = kind.namespaced.then_some("default");
    let list = client
        .dynamic(kind, ns)
        .list(&ListParams::default())
        .await
        .unwrap_or_default();
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|o| o.pointer("/metadata/deletionTimestamp").is_none())
        .map(|o| (o["metadata"]["name"].as_str().unwrap().to_string(), o))
        .collect()
}

/// Register a cluster and report it Ready with room, as cluster sync would.
async fn ready_cluster(client: &Client, name: &str, lat: f64) {
    let clusters = client.api::<crds::Cluster>(None);
    let body = json!({"apiVersion": "oakestra.io/v1", "kind": "Cluster", "metadata": {"name": name},
        "spec": {"location": {"latitude": lat, "longitude": 11.5}}});
    clusters.dynamic().create(&body).await.unwrap();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let status = json!({"status": {"runtimes": ["container", "process"],
        "capacity": {"cpuMillicores": 4000, "memoryMiB": 8192, "nodes": 3},
        "allocatable": {"cpuMillicores": 4000, "memoryMiB": 8192, "nodes": 3},
        "conditions": [{"type": "Ready", "status": "True", "reason": "Heartbeat", "lastTransitionTime": now}]}});
    clusters.patch_status(name, &status).await.unwrap();
}

/// Create Service `name` of `replicas`, or scale it to them.
async fn apply_service(client: &Client, name: &str, replicas: i64) {
    let spec = json!({"replicas": replicas, "template": {"image": "localhost:5000/busybox:1",
        "resources": {"cpuMillicores": 100, "memoryMiB": 64}}});
    let api = client.api::<crds::Service>(Some("default"));
    match api.dynamic().get_opt(name).await.unwrap() {
        None => {
            let body = json!({"apiVersion": "oakestra.io/v1", "kind": "Service",
                "metadata": {"name": name}, "spec": spec});
            api.dynamic().create(&body).await.unwrap();
        }
        Some(_) => {
            api.dynamic()
                .patch(name, &json!({"spec": spec}))
                .await
                .unwrap();
        }
    }
}

/// The Instances of `service` as name → cluster, once there are `n`, all placed.
async fn placed(client: &Client, service: &str, n: usize) -> BTreeMap<String, String> {
    eventually(
        &format!("{n} placed instances of {service}"),
        WAIT,
        || async {
            let placed: BTreeMap<String, Option<String>> = listed(client, "instances")
                .await
                .into_iter()
                .filter(|(_, i)| i["spec"]["service"] == service)
                .map(|(name, i)| (name, i["spec"]["cluster"].as_str().map(String::from)))
                .collect();
            let all = placed.values().all(Option::is_some);
            (placed.len() == n && all).then(|| {
                placed
                    .into_iter()
                    .map(|(name, cluster)| (name, cluster.unwrap()))
                    .collect()
            })
        },
    )
    .await
}

/// The service IP of `service`, once it has one.
async fn service_ip(client: &Client, service: &str) -> String {
    eventually(&format!("a service IP for {service}"), WAIT, || async {
        let services = listed(client, "services").await;
        services
            .get(service)?
            .pointer("/status/serviceIP")?
            .as_str()
            .map(String::from)
    })
    .await
}

/// A root with controllers on the embedded store, two clusters and two Services placed;
/// a backup taken while it runs; changes after it; the root stopped. Restored into a new
/// directory, a root there serves exactly the backup's objects, and its controllers
/// leave them as they are: the same Instances (no duplicate, none recreated), the same
/// service IPs and subnets; a new Service gets an address none of them has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_a_running_root_restores_into_a_new_store_and_converges() {
    let dir = tempfile::tempdir().unwrap();
    let first_store = dir.path().join("first");
    let mut root = RootServer::start(&format!("embedded:{}", path(&first_store)), dir.path());
    let client = root.client();
    ready_cluster(&client, "munich-1", 48.1).await;
    ready_cluster(&client, "berlin-1", 52.5).await;
    apply_service(&client, "web", 3).await;
    apply_service(&client, "api", 2).await;
    let web = placed(&client, "web", 3).await;
    let api = placed(&client, "api", 2).await;
    let web_ip = service_ip(&client, "web").await;
    let api_ip = service_ip(&client, "api").await;

    // While it runs: the store is the server's, so the backup goes through it.
    let file = dir.path().join("root.backup");
    let (ok, text) = oakestra(&[
        "backup",
        "--store",
        &format!("embedded:{}", path(&first_store)),
        &path(&file),
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("held by a running server"), "{text}");
    assert!(text.contains("2 services, 5 instances"), "{text}");
    assert!(!dir.path().join("root.backup.partial").exists());
    let backup = backup_objects(&file);
    let services = under(&backup, "/oakestra.io/services/default/");
    let instances = under(&backup, "/oakestra.io/instances/default/");
    let clusters = under(&backup, "/oakestra.io/clusters/");
    assert_eq!(
        services.keys().collect::<Vec<_>>(),
        ["api", "web"],
        "{services:?}"
    );
    assert_eq!(
        instances.keys().cloned().collect::<BTreeSet<_>>(),
        web.keys()
            .chain(api.keys())
            .cloned()
            .collect::<BTreeSet<_>>()
    );
    assert_eq!(services["web"]["status"]["serviceIP"], web_ip.as_str());
    assert_eq!(services["api"]["status"]["serviceIP"], api_ip.as_str());
    assert!(
        clusters
            .values()
            .all(|c| c.pointer("/status/subnet").is_some()),
        "{clusters:?}"
    );
    // Only administrators: a caller without a credential is turned away.
    let ca = std::fs::read_to_string(root.data_dir.join("pki/ca.crt")).unwrap();
    let anonymous = Client::with_tls(
        &root.url(),
        client::tls::TlsOptions {
            ca_pem: Some(ca),
            ..Default::default()
        },
    )
    .unwrap();
    let refused = anonymous
        .get_text(apiserver::backup::SNAPSHOT_PATH)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(401), "{refused}");
    // Nor can a restore go into the store while its server runs.
    let (ok, text) = oakestra(&[
        "restore",
        "--store",
        &format!("embedded:{}", path(&first_store)),
        &path(&file),
    ]);
    assert!(!ok && text.contains("held by a running server"), "{text}");

    // After the backup: one Service gone, the other scaled.
    client
        .api::<crds::Service>(Some("default"))
        .delete("api")
        .await
        .unwrap();
    apply_service(&client, "web", 5).await;
    placed(&client, "web", 5).await;
    placed(&client, "api", 0).await;
    root.kill9();

    let second_store = dir.path().join("second");
    let (ok, text) = oakestra(&[
        "restore",
        "--store",
        &format!("embedded:{}", path(&second_store)),
        &path(&file),
    ]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("restored {} objects", backup.len())),
        "{text}"
    );
    assert!(
        text.contains("2 clusters, 2 services, 5 instances"),
        "{text}"
    );

    let restored = RootServer::start(&format!("embedded:{}", path(&second_store)), dir.path());
    let client = restored.client();
    let expected = (
        essentials(&services),
        essentials(&instances),
        essentials(&clusters),
    );
    let placements = |instances: &BTreeMap<String, Value>| -> BTreeMap<String, Value> {
        instances
            .iter()
            .map(|(n, i)| (n.clone(), i["spec"]["cluster"].clone()))
            .collect()
    };
    let backup_placements = placements(&instances);
    // The objects are the backup's, and the controllers keep them so: the same
    // Instances on the same clusters, no duplicate, none recreated (same uids), the
    // same service IPs and subnets.
    stays(
        "the restored objects as they were backed up",
        Duration::from_secs(5),
        || async {
            let now = (
                essentials(&listed(&client, "services").await),
                essentials(&listed(&client, "instances").await),
                essentials(&listed(&client, "clusters").await),
            );
            e2e::equals(&expected, now)
        },
    )
    .await;
    assert_eq!(
        placements(&listed(&client, "instances").await),
        backup_placements
    );

    // A new Service gets an address of its own, and its Instances a place.
    apply_service(&client, "fresh", 2).await;
    let fresh_ip = service_ip(&client, "fresh").await;
    assert!(
        fresh_ip != web_ip && fresh_ip != api_ip,
        "{fresh_ip} was handed out again (web {web_ip}, api {api_ip})"
    );
    placed(&client, "fresh", 2).await;
    assert_eq!(placed(&client, "web", 3).await, web);
    assert_eq!(placed(&client, "api", 2).await, api);
}

/// A backup file of a Namespace and a Service, as `oakestra backup` writes one.
fn small_backup(file: &Path) -> String {
    let lines = [
        json!({"format": "oakestra-backup", "version": 1, "revision": 12,
            "takenAt": "2025-01-01T00:00:00Z", "store": "embedded"}),
        json!({"key": "/core/namespaces/default", "value": {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "default", "uid": "u1", "creationTimestamp": "2025-01-01T00:00:00Z"}}}),
        json!({"key": "/oakestra.io/services/default/web", "value": {"apiVersion": "oakestra.io/v1",
            "kind": "Service", "metadata": {"name": "web", "namespace": "default", "uid": "u2",
            "generation": 1, "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"replicas": 1, "template": {"image": "x"}},
            "status": {"serviceIP": "10.30.0.7"}}}),
        json!({"end": {"objects": 2}}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(file, &text).unwrap();
    text
}

/// What the embedded store in `dir` holds, key → bytes (none without a store there).
async fn stored(dir: &Path) -> Vec<(String, Vec<u8>)> {
    use apiserver::storage::embedded::{EmbeddedOptions, EmbeddedStore, FILE};
    use apiserver::storage::Storage;
    if !dir.join(FILE).exists() {
        return Vec::new();
    }
    let store = EmbeddedStore::open(dir, EmbeddedOptions::default()).unwrap();
    let list = store
        .list(apiserver::storage::ListRequest::default())
        .await
        .unwrap();
    list.items
        .into_iter()
        .map(|kv| (kv.key, kv.value.to_vec()))
        .collect()
}

/// A restore writes only into a store without objects, and only a file that reads whole:
/// a corrupt or cut file is refused naming the file and the line, and nothing is
/// written. A stopped store is backed up by reading it directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_a_store_with_objects_and_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("small.backup");
    let text = small_backup(&file);
    let store = dir.path().join("store");
    let into = |d: &Path| format!("embedded:{}", path(d));
    let (ok, out) = oakestra(&["restore", "--store", &into(&store), &path(&file)]);
    assert!(ok, "{out}");
    assert!(out.contains("restored 2 objects"), "{out}");
    assert!(out.contains("1 namespaces, 1 services"), "{out}");
    let before = stored(&store).await;
    assert_eq!(before.len(), 2);

    // Not into a store that holds objects.
    let (ok, out) = oakestra(&["restore", "--store", &into(&store), &path(&file)]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("already holds objects (/core/namespaces/default"),
        "{out}"
    );
    assert!(out.contains("nothing was written"), "{out}");
    assert_eq!(stored(&store).await, before);

    // Broken files: refused before anything is written.
    let lines: Vec<&str> = text.lines().collect();
    let broken = [
        (
            "cut inside a line",
            text[..text.len() - 30].to_string(),
            "line 3: EOF while parsing a string (column ",
        ),
        (
            "without its end line",
            lines[..3].join("\n") + "\n",
            "truncated after line 3: no end line",
        ),
        (
            "a value of another kind",
            text.replacen("\"kind\":\"Service\"", "\"kind\":\"Cluster\"", 1),
            "line 3: value.kind: \"Cluster\"",
        ),
        (
            "an end line that does not count",
            text.replace("{\"end\":{\"objects\":2}}", "{\"end\":{\"objects\":3}}"),
            "line 4: end.objects: 3 objects announced, 2 in the file",
        ),
    ];
    for (i, (what, content, message)) in broken.into_iter().enumerate() {
        let bad = dir.path().join(format!("bad-{i}.backup"));
        std::fs::write(&bad, content).unwrap();
        let fresh = dir.path().join(format!("fresh-{i}"));
        let (ok, out) = oakestra(&["restore", "--store", &into(&fresh), &path(&bad)]);
        assert!(!ok, "{what}: restored: {out}");
        assert!(
            out.contains(&format!("{}: {message}", path(&bad))),
            "{what}: {out}"
        );
        assert!(!fresh.exists(), "{what}: {} was made", path(&fresh));
    }

    // A stopped store is read directly, the same objects, byte for byte.
    let again = dir.path().join("again.backup");
    let (ok, out) = oakestra(&["backup", "--store", &into(&store), &path(&again)]);
    assert!(ok, "{out}");
    assert!(out.contains("backed up 2 objects"), "{out}");
    assert!(!out.contains("running server"), "{out}");
    let read = apiserver::backup::read(&again).unwrap();
    assert_eq!(read.objects, before);
    assert!(read.header.revision > apiserver::backup::REVISION_BUMP);
}

/// etcd started on `data` (its own data directory, as `etcdctl snapshot restore` made
/// it: member `test` at `peer`), on a fresh client port.
fn etcd_on(data: &Path, peer: u16, log: &Path) -> (Process, u16) {
    let client = free_port();
    let cmd = e2e::etcd_command(
        "test",
        data,
        client,
        peer,
        &format!("test=http://127.0.0.1:{peer}"),
    );
    let process = Process::spawn("etcd (restored)", cmd, Some(log));
    wait_for_port(client, "restored etcd", WAIT);
    (process, client)
}

fn etcdctl(args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(args)
        .output()
        .expect("run etcdctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "etcdctl {args:?}: {text}");
    text
}

/// A root on etcd: `etcdctl snapshot save`, more changes, etcd gone; `etcdctl snapshot
/// restore` into a new data directory and an etcd on it: a root started there (the
/// roots' shared CA came back with the snapshot) serves exactly the snapshot's objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_snapshot_brings_the_roots_objects_back() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start();
    let store = format!("etcd:{}", etcd.url());
    let root = RootServer::start_with(&store, dir.path(), &["--no-controllers"]);
    let client = root.client();
    ready_cluster(&client, "munich-1", 48.1).await;
    apply_service(&client, "a", 1).await;
    apply_service(&client, "b", 2).await;

    let snapshot = dir.path().join("etcd.snapshot");
    etcdctl(&[
        "--endpoints",
        &etcd.url(),
        "snapshot",
        "save",
        &path(&snapshot),
    ]);
    // The same objects, as oakestra backup reads them from etcd directly.
    let logical = dir.path().join("etcd.backup");
    let (ok, text) = oakestra(&["backup", "--store", &store, &path(&logical)]);
    assert!(ok, "{text}");
    let expected = backup_objects(&logical);
    assert_eq!(
        under(&expected, "/oakestra.io/services/default/")
            .keys()
            .collect::<Vec<_>>(),
        ["a", "b"]
    );

    // After the snapshot.
    apply_service(&client, "after", 1).await;
    client
        .api::<crds::Service>(Some("default"))
        .delete("b")
        .await
        .unwrap();
    let token = root.upstream().token;
    let ca = std::fs::read_to_string(root.data_dir.join("pki/ca.crt")).unwrap();
    drop(root);
    drop(etcd);

    let data = dir.path().join("restored-etcd");
    let peer = free_port();
    etcdctl(&[
        "snapshot",
        "restore",
        &path(&snapshot),
        "--data-dir",
        &path(&data),
        "--name",
        "test",
        "--initial-cluster",
        &format!("test=http://127.0.0.1:{peer}"),
        "--initial-advertise-peer-urls",
        &format!("http://127.0.0.1:{peer}"),
    ]);
    let (_etcd, port) = etcd_on(&data, peer, &dir.path().join("restored-etcd.log"));
    let store = format!("etcd:http://127.0.0.1:{port}");
    // A root with a data directory of its own joins the roots of the restored etcd.
    let root = RootServer::start_with(&store, dir.path(), &["--no-controllers", "--token", &token]);
    let again = std::fs::read_to_string(root.data_dir.join("pki/ca.crt")).unwrap();
    assert_eq!(again, ca, "the shared CA came back with the snapshot");
    let client = root.client();
    let services = listed(&client, "services").await;
    assert_eq!(services.keys().collect::<Vec<_>>(), ["a", "b"]);
    let now = dir.path().join("restored.backup");
    let (ok, text) = oakestra(&["backup", "--store", &store, &path(&now)]);
    assert!(ok, "{text}");
    assert_eq!(
        backup_objects(&now),
        expected,
        "exactly the snapshot's objects"
    );
}
