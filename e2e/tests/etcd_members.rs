//! A root on a 3-member etcd (three local `etcd` processes, `e2e::EtcdCluster`) while
//! members die (`kill -9`) and come back (issue #21; figures in `docs/operations.md`).
//!
//! - One member lost (a follower; then, with it back, the leader) while writers create
//!   objects: every create the server acknowledged is stored, whole, and nothing is
//!   stored that was not written; writes go on. The store tries a write again when its
//!   answer was lost with a member or a leader (`apiserver::storage::etcd`), so a
//!   writer normally sees no error, only a slower create (up to about 2 s after the
//!   leader's loss). The test still lets a writer see a 503 naming the store for an
//!   attempt started within [`ELECTION_WINDOW`] of a kill (an election slower than the
//!   store's deadline on a loaded machine) and retries it, as a client does on a 503;
//!   anything else fails it. It prints, per phase, the creates acknowledged, their
//!   median and longest latency, and every failed attempt.
//! - Two members lost: a create, a get and a list fail within seconds with a 503
//!   `Status` naming the store, and `/readyz` is 503. Nothing is half written: after
//!   recovery each failed create's object is there whole and a second create of it is
//!   a 409 (the leader had proposed it and committed it once a member returned), or it
//!   is not there and a second create succeeds.
//! - One of them back: writes succeed again, and a watch opened before the outage sees
//!   what is created after it, as does a new one.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{ClientError, DynamicApi, ListParams, WatchEvent};
use crds::Cluster;
use e2e::{eventually, EtcdCluster, RootServer};
use futures::StreamExt;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

/// Attempts of a create that fail must have started within this of a member's kill:
/// the followers notice a dead leader after etcd's election timeout (1 s, randomized
/// up to 2 s) and elect another within a round trip or two; the rest is slack for a
/// loaded machine.
const ELECTION_WINDOW: Duration = Duration::from_secs(5);

/// A failing request must be answered within this (the store's deadline is 5 s; this
/// is generous for a slow, shared machine).
const FAIL_FAST: Duration = Duration::from_secs(15);

/// Concurrent writers in the member-loss test.
const WRITERS: usize = 3;

/// A Cluster object whose labels say who wrote it, so a stored one can be checked whole.
fn cluster(name: &str, writer: &str) -> Value {
    json!({
        "apiVersion": "oakestra.io/v1",
        "kind": "Cluster",
        "metadata": {"name": name, "labels": {"writer": writer, "name": name}},
        "spec": {}
    })
}

/// Whether a stored object is the whole of what [`cluster`] wrote.
fn whole(object: &Value, name: &str) -> bool {
    let labels = &object["metadata"]["labels"];
    object["metadata"]["name"] == name
        && labels["name"] == name
        && labels["writer"].is_string()
        && object["metadata"]["uid"].is_string()
}

/// The Status of an API error, if it is one.
fn status(e: &ClientError) -> Option<&crds::Status> {
    match e {
        ClientError::Api { status } => Some(status),
        _ => None,
    }
}

/// Assert that `e` is a 503 `Status` naming the etcd store at `urls`.
fn assert_unavailable(e: &ClientError, urls: &str, what: &str) {
    let status = status(e).unwrap_or_else(|| panic!("{what}: not an API error: {e}"));
    assert_eq!(status.code, 503, "{what}: {status:?}");
    assert_eq!(status.reason, "ServiceUnavailable", "{what}: {status:?}");
    assert!(
        status.message.contains(&format!("etcd at {urls}")),
        "{what}: the message names the store: {}",
        status.message
    );
}

/// The names of every Cluster, and whether each is whole.
async fn stored(api: &DynamicApi) -> Vec<(String, bool)> {
    let (items, _) = api.list_all(&ListParams::default()).await.expect("list");
    items
        .iter()
        .map(|o| {
            let name = o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let ok = whole(o, &name);
            (name, ok)
        })
        .collect()
}

/// One failed attempt of a create.
#[derive(Debug)]
struct Failure {
    name: String,
    started: Instant,
    took: Duration,
    error: String,
    /// `Some(true)` for a 503 naming the store; `Some(false)` for another API error;
    /// `None` when it is no API error (or no answer).
    unavailable: Option<bool>,
}

/// What one writer saw.
#[derive(Debug, Default)]
struct Tally {
    /// Created, and the server said so (201).
    acknowledged: Vec<String>,
    /// An attempt failed, and a retry found the object there (409): the failed attempt
    /// was carried out after all.
    found_on_retry: Vec<String>,
    /// Every name tried, acknowledged or not.
    attempted: Vec<String>,
    failures: Vec<Failure>,
    /// Start and duration of each acknowledged create.
    latencies: Vec<(Instant, Duration)>,
}

/// Create `WRITER-0`, `WRITER-1`, … until `stop`, each until the server acknowledges it
/// (a failed attempt is tried again after 100 ms; a 409 after a failed attempt means
/// that attempt was carried out); counts acknowledged creates in `acks`.
async fn writer(
    api: DynamicApi,
    prefix: String,
    urls: String,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicUsize>,
) -> Tally {
    let mut tally = Tally::default();
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        let name = format!("{prefix}-{seq}");
        seq += 1;
        tally.attempted.push(name.clone());
        let mut failed_before = false;
        loop {
            let started = Instant::now();
            let answer = tokio::time::timeout(WAIT, api.create(&cluster(&name, &prefix))).await;
            let took = started.elapsed();
            let error = match answer {
                Ok(Ok(_)) => {
                    tally.acknowledged.push(name.clone());
                    tally.latencies.push((started, took));
                    acks.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(Err(e)) if e.is_conflict() && failed_before => {
                    tally.found_on_retry.push(name.clone());
                    break;
                }
                Ok(Err(e)) => e,
                Err(_) => {
                    tally.failures.push(Failure {
                        name: name.clone(),
                        started,
                        took,
                        error: format!("no answer within {WAIT:?}"),
                        unavailable: None,
                    });
                    failed_before = true;
                    continue;
                }
            };
            let unavailable = status(&error).map(|s| {
                s.code == 503
                    && s.reason == "ServiceUnavailable"
                    && s.message.contains(&format!("etcd at {urls}"))
            });
            tally.failures.push(Failure {
                name: name.clone(),
                started,
                took,
                error: error.to_string(),
                unavailable,
            });
            failed_before = true;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tally
}

/// Wait until `acks` reaches `n`.
async fn acknowledged(acks: &AtomicUsize, n: usize, what: &str) {
    eventually(what, WAIT, || async {
        (acks.load(Ordering::Relaxed) >= n).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_lost_during_writes_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = EtcdCluster::start(3);
    let urls = etcd.urls();
    let root = RootServer::start_with(&format!("etcd:{urls}"), dir.path(), &["--no-controllers"]);
    let api = root.client().api::<Cluster>(None).dynamic();

    let began = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (api, urls, stop, acks) = (api.clone(), urls.clone(), stop.clone(), acks.clone());
            tokio::spawn(writer(api, format!("w{w}"), urls, stop, acks))
        })
        .collect();
    acknowledged(&acks, 30, "30 creates before any member is lost").await;

    // A follower dies mid-write.
    let leader = etcd.leader().expect("a leader");
    let follower = (0..3).find(|&i| i != leader).expect("a follower");
    let follower_killed = Instant::now();
    etcd.kill(follower);
    let before = acks.load(Ordering::Relaxed);
    acknowledged(&acks, before + 60, "60 creates with a follower gone").await;

    // It comes back; then the leader dies mid-write.
    etcd.restart(follower);
    tokio::task::block_in_place(|| etcd.wait_healthy(WAIT));
    let follower_back = Instant::now();
    let before = acks.load(Ordering::Relaxed);
    acknowledged(&acks, before + 30, "30 creates with the follower back").await;
    let leader = etcd.leader().expect("a leader");
    let leader_killed = Instant::now();
    etcd.kill(leader);
    let before = acks.load(Ordering::Relaxed);
    acknowledged(&acks, before + 60, "60 creates with the leader gone").await;
    let new_leader = etcd.leader();
    stop.store(true, Ordering::Relaxed);

    let mut tallies = Vec::new();
    for w in writers {
        tallies.push(w.await.unwrap());
    }

    // Every acknowledged create is there, whole; nothing is there that was not tried.
    let stored = stored(&api).await;
    let names: BTreeSet<&str> = stored.iter().map(|(n, _)| n.as_str()).collect();
    let attempted: BTreeSet<&str> = tallies
        .iter()
        .flat_map(|t| t.attempted.iter().map(String::as_str))
        .collect();
    let mut acked = 0;
    for t in &tallies {
        for name in &t.acknowledged {
            assert!(
                names.contains(name.as_str()),
                "acknowledged {name} was lost"
            );
            acked += 1;
        }
        for name in &t.found_on_retry {
            assert!(
                names.contains(name.as_str()),
                "{name}, found by a retry, was lost"
            );
        }
    }
    for (name, ok) in &stored {
        assert!(*ok, "{name} is stored whole");
        assert!(
            attempted.contains(name.as_str()),
            "{name} was never written"
        );
    }

    // What writers saw, by phase (a create belongs to the phase it ended in):
    // failures only right after a kill, each a 503 naming the store.
    let phases = [
        ("3 members", began),
        ("follower killed", follower_killed),
        ("follower back", follower_back),
        ("leader killed", leader_killed),
    ];
    let phase_of = |end: Instant| {
        phases
            .iter()
            .rev()
            .find(|(_, from)| end >= *from)
            .expect("a phase")
    };
    let failures: Vec<&Failure> = tallies.iter().flat_map(|t| &t.failures).collect();
    for (what, from) in phases {
        let mut took: Vec<Duration> = tallies
            .iter()
            .flat_map(|t| &t.latencies)
            .filter(|(started, took)| phase_of(*started + *took).0 == what)
            .map(|(_, took)| *took)
            .collect();
        took.sort();
        let failed: Vec<String> = failures
            .iter()
            .filter(|f| phase_of(f.started + f.took).0 == what)
            .map(|f| {
                let after = f.started.saturating_duration_since(from);
                format!(
                    "{} (started {after:.1?} into the phase, took {:.1?}): {}",
                    f.name, f.took, f.error
                )
            })
            .collect();
        eprintln!(
            "{what}: {} creates acknowledged, p50 {:.1?}, max {:.1?}; {} failed attempts {failed:#?}",
            took.len(),
            took.get(took.len() / 2).copied().unwrap_or_default(),
            took.last().copied().unwrap_or_default(),
            failed.len(),
        );
    }
    eprintln!(
        "{acked} creates acknowledged ({} more found on a retry), {} stored; leader after the kill: {new_leader:?}",
        tallies.iter().map(|t| t.found_on_retry.len()).sum::<usize>(),
        stored.len()
    );
    let kills = [("follower", follower_killed), ("leader", leader_killed)];
    // The kill a failed attempt followed: the last one before it ended.
    let kill_of = |f: &Failure| kills.iter().rev().find(|(_, k)| f.started + f.took >= *k);
    for f in &failures {
        assert_eq!(f.unavailable, Some(true), "a 503 naming the store: {f:?}");
        let kill = kill_of(f).unwrap_or_else(|| panic!("failed before any kill: {f:?}"));
        assert!(
            f.started <= kill.1 + ELECTION_WINDOW,
            "failed though it started more than {ELECTION_WINDOW:?} after the {} was killed: {f:?}",
            kill.0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_lost_fails_fast_with_503_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = EtcdCluster::start(3);
    let urls = etcd.urls();
    let root = RootServer::start_with(&format!("etcd:{urls}"), dir.path(), &["--no-controllers"]);
    let client = root.client();
    let api = client.api::<Cluster>(None).dynamic();
    for i in 0..3 {
        api.create(&cluster(&format!("before-{i}"), "test"))
            .await
            .unwrap();
    }

    // A watch opened before the outage, collecting the names it sees added.
    let (_, version) = api.list_all(&ListParams::default()).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut events = api
        .watch(&ListParams {
            resource_version: Some(version),
            ..Default::default()
        })
        .await
        .unwrap();
    let (log, ended) = (seen.clone(), Arc::new(Mutex::new(None::<String>)));
    let watch_end = ended.clone();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                Ok(WatchEvent::Added(o)) => {
                    let name = o["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    log.lock().unwrap().push(name);
                }
                Ok(_) => {}
                Err(e) => {
                    *watch_end.lock().unwrap() = Some(e.to_string());
                    return;
                }
            }
        }
        *watch_end.lock().unwrap() = Some("the stream ended".into());
    });

    // The two followers die; the leader is left without a quorum. A create that
    // reaches it first is proposed but cannot commit.
    let leader = etcd.leader().expect("a leader");
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for &i in &followers {
        etcd.kill(i);
    }
    let mut failed = Vec::new();
    for i in 0..3 {
        let name = format!("during-{i}");
        let started = Instant::now();
        let answer = tokio::time::timeout(WAIT, api.create(&cluster(&name, "test")))
            .await
            .unwrap_or_else(|_| panic!("create {name} hung for {WAIT:?}"));
        let took = started.elapsed();
        let e = answer.expect_err("a create without a quorum fails");
        eprintln!("create {name} without a quorum failed after {took:?}: {e}");
        assert_unavailable(&e, &urls, &format!("create {name}"));
        assert!(took < FAIL_FAST, "create {name} took {took:?}");
        failed.push(name);
    }
    let started = Instant::now();
    let e = api
        .get("before-0")
        .await
        .expect_err("a get without a quorum fails");
    let took = started.elapsed();
    eprintln!("get without a quorum failed after {took:?}: {e}");
    assert_unavailable(&e, &urls, "get");
    assert!(took < FAIL_FAST, "get took {took:?}");
    let started = Instant::now();
    let e = api
        .list(&ListParams::default())
        .await
        .expect_err("a list without a quorum fails");
    let took = started.elapsed();
    eprintln!("list without a quorum failed after {took:?}: {e}");
    assert_unavailable(&e, &urls, "list");
    assert!(took < FAIL_FAST, "list took {took:?}");
    let e = client
        .get_text("/readyz")
        .await
        .expect_err("not ready without a quorum");
    assert_eq!(e.code(), Some(503), "readyz: {e}");

    // One member back: service resumes.
    let restarted = Instant::now();
    etcd.restart(followers[0]);
    let first = eventually("a create succeeds again", WAIT, || async {
        api.create(&cluster("after-0", "test")).await.ok()
    })
    .await;
    eprintln!(
        "first create after the restart acknowledged {:?} after it",
        restarted.elapsed()
    );
    assert_eq!(first["metadata"]["name"], "after-0");

    // Nothing half written: each failed create's object is there whole and a second
    // create of it is a 409, or it is not there and a second create succeeds.
    for name in &failed {
        let existing = api.get_opt(name).await.unwrap();
        let again = api.create(&cluster(name, "test")).await;
        match &existing {
            Some(object) => {
                assert!(whole(object, name), "{name} is whole: {object}");
                assert!(
                    again.as_ref().is_err_and(ClientError::is_conflict),
                    "{name} exists, so a second create is a 409: {again:?}"
                );
            }
            None => assert!(again.is_ok(), "{name} does not exist: {again:?}"),
        }
        eprintln!(
            "failed create {name}: {} after the outage",
            match existing {
                Some(_) => "carried out (stored whole; a second create is a 409)",
                None => "not carried out",
            }
        );
    }
    for (name, ok) in stored(&api).await {
        assert!(ok, "{name} is stored whole");
    }

    // Watches resume: the one opened before the outage sees what was created after it,
    // and so does a new one.
    eventually(
        "the watch from before the outage sees after-0",
        WAIT,
        || async {
            if let Some(end) = ended.lock().unwrap().clone() {
                panic!("the watch from before the outage ended: {end}");
            }
            seen.lock()
                .unwrap()
                .contains(&"after-0".to_string())
                .then_some(())
        },
    )
    .await;
    let (_, version) = api.list_all(&ListParams::default()).await.unwrap();
    let mut fresh = api
        .watch(&ListParams {
            resource_version: Some(version),
            ..Default::default()
        })
        .await
        .unwrap();
    api.create(&cluster("after-1", "test")).await.unwrap();
    let event = tokio::time::timeout(WAIT, fresh.next())
        .await
        .expect("an event on the new watch")
        .expect("the new watch is open")
        .expect("an event, not an error");
    match event {
        WatchEvent::Added(o) => assert_eq!(o["metadata"]["name"], "after-1"),
        other => panic!("expected after-1 added, got {other:?}"),
    }
    eventually(
        "the watch from before the outage sees after-1",
        WAIT,
        || async {
            seen.lock()
                .unwrap()
                .contains(&"after-1".to_string())
                .then_some(())
        },
    )
    .await;
}
