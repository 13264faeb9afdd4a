//! Leader election (`controllers::leader`) against a real API server on an embedded
//! store: one leader at a time, release at shutdown, loss of the Lease, expiry of a
//! dead holder's Lease. Durations are short (lease 1.5 s, renew 1 s, retry 0.2 s) and
//! the deadlines generous.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiserver::{Server, ServerConfig, StoreConfig};
use chrono::Utc;
use client::{Api, Client};
use controllers::leader::{run_elected, LeaderConfig};
use crds::{Lease, LeaseSpec};
use e2e::{eventually, stays};
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const LEASE: &str = crds::ROOT_CONTROLLERS_LEASE;
const WAIT: Duration = Duration::from_secs(20);

fn config(identity: &str) -> LeaderConfig {
    LeaderConfig {
        lease: LEASE.into(),
        identity: identity.into(),
        lease_duration: Duration::from_millis(1500),
        renew_deadline: Duration::from_millis(1000),
        retry_period: Duration::from_millis(200),
    }
}

/// An API server on an embedded store in a temporary directory, and a client of it.
struct TestServer {
    server: Server,
    client: Client,
    _dir: tempfile::TempDir,
}

async fn start_server() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        "127.0.0.1:0".parse().unwrap(),
        StoreConfig::Embedded(dir.path().to_path_buf()),
        ServerConfig::default(),
    )
    .await
    .unwrap();
    let client = Client::new(&format!("http://{}", server.addr)).unwrap();
    TestServer {
        server,
        client,
        _dir: dir,
    }
}

fn leases(client: &Client) -> Api<Lease> {
    client.api::<Lease>(None)
}

async fn lease(client: &Client) -> Option<Lease> {
    leases(client).get_opt(LEASE).await.unwrap()
}

/// What the elected work of every candidate did, in order.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Started(String),
    Cancelled(String),
    Finished(String),
}

/// The candidates' shared record: how many works run now, the most that ever ran at
/// once, and what each did when.
#[derive(Default)]
struct Record {
    running: AtomicUsize,
    most: AtomicUsize,
    steps: Mutex<Vec<(Instant, Step)>>,
}

impl Record {
    fn note(&self, step: Step) {
        self.steps.lock().unwrap().push((Instant::now(), step));
    }

    fn steps(&self) -> Vec<Step> {
        self.steps
            .lock()
            .unwrap()
            .iter()
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// When `step` happened (its first time).
    fn when(&self, step: &Step) -> Option<Instant> {
        self.steps
            .lock()
            .unwrap()
            .iter()
            .find(|(_, s)| s == step)
            .map(|(at, _)| *at)
    }

    /// The identities whose work runs now, by the record.
    fn leaders(&self) -> Vec<String> {
        let mut running = Vec::new();
        for step in self.steps() {
            match step {
                Step::Started(who) => running.push(who),
                Step::Finished(who) => running.retain(|r| *r != who),
                Step::Cancelled(_) => {}
            }
        }
        running
    }
}

/// One candidate running `run_elected` in a task of its own: its work notes its steps
/// in `record` and takes `stop` to finish once cancelled.
struct Candidate {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

fn candidate(
    client: &Client,
    config: LeaderConfig,
    record: &Arc<Record>,
    stop: Duration,
) -> Candidate {
    let shutdown = CancellationToken::new();
    let (who, record) = (config.identity.clone(), record.clone());
    let work = move |token: CancellationToken| {
        let (who, record) = (who.clone(), record.clone());
        async move {
            let now = record.running.fetch_add(1, Ordering::SeqCst) + 1;
            record.most.fetch_max(now, Ordering::SeqCst);
            record.note(Step::Started(who.clone()));
            token.cancelled().await;
            record.note(Step::Cancelled(who.clone()));
            tokio::time::sleep(stop).await;
            record.running.fetch_sub(1, Ordering::SeqCst);
            record.note(Step::Finished(who));
        }
    };
    let task = tokio::spawn(run_elected(client.clone(), config, shutdown.clone(), work));
    Candidate { shutdown, task }
}

impl Candidate {
    /// Cancel its shutdown token and wait until `run_elected` returned.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("run_elected returns after shutdown")
            .unwrap();
    }
}

/// Wait until the record names exactly one leader and return it.
async fn one_leader(record: &Record) -> String {
    eventually("a leader", WAIT, || async {
        let leaders = record.leaders();
        (leaders.len() == 1).then(|| leaders[0].clone())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_the_lease_names_it() {
    let api = start_server().await;
    let record = Arc::new(Record::default());
    let a = candidate(&api.client, config("a"), &record, Duration::from_millis(50));
    let b = candidate(&api.client, config("b"), &record, Duration::from_millis(50));
    let leader = one_leader(&record).await;
    // For several lease durations, the same one leads, alone, and the Lease says so.
    stays(
        "one leader, named by the Lease",
        Duration::from_secs(4),
        || async {
            let holder = lease(&api.client)
                .await
                .and_then(|l| l.spec.holder_identity);
            let seen = (record.leaders(), holder, record.most.load(Ordering::SeqCst));
            e2e::equals(&(vec![leader.clone()], Some(leader.clone()), 1), seen)
        },
    )
    .await;
    let held = lease(&api.client).await.unwrap().spec;
    assert_eq!(held.lease_transitions, Some(0), "{held:?}");
    assert_eq!(held.lease_duration_seconds, Some(2), "1.5 s rounded up");
    assert!(
        held.acquire_time.is_some() && held.renew_time > held.acquire_time,
        "{held:?}"
    );
    a.stop().await;
    b.stop().await;
    assert_eq!(
        record.most.load(Ordering::SeqCst),
        1,
        "{:?}",
        record.steps()
    );
    assert_eq!(record.running.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_the_lease_and_the_standby_takes_over_at_once() {
    let api = start_server().await;
    let record = Arc::new(Record::default());
    // A long lease duration: a standby that waited for it would take many seconds.
    let long = |identity| LeaderConfig {
        lease_duration: Duration::from_secs(8),
        renew_deadline: Duration::from_secs(5),
        ..config(identity)
    };
    let a = candidate(&api.client, long("a"), &record, Duration::from_millis(100));
    one_leader(&record).await;
    let b = candidate(&api.client, long("b"), &record, Duration::from_millis(100));
    // The standby has seen the Lease held.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(record.leaders(), vec!["a".to_string()]);
    let before = Utc::now();
    a.stop().await;
    let released = Instant::now();
    assert!(
        record.when(&Step::Finished("a".into())).is_some(),
        "a's work stopped before run_elected returned: {:?}",
        record.steps()
    );
    eventually("b leads", WAIT, || async {
        (record.leaders() == ["b"]).then_some(())
    })
    .await;
    assert_eq!(
        record.steps(),
        [
            Step::Started("a".into()),
            Step::Cancelled("a".into()),
            Step::Finished("a".into()),
            Step::Started("b".into()),
        ],
        "b started only after a's work finished"
    );
    let took = record
        .when(&Step::Started("b".into()))
        .unwrap()
        .saturating_duration_since(released);
    assert!(
        took < Duration::from_secs(3),
        "the standby took {took:?} after the release, not the lease duration (8 s)"
    );
    let held = lease(&api.client).await.unwrap().spec;
    assert_eq!(held.holder_identity.as_deref(), Some("b"));
    assert_eq!(held.lease_transitions, Some(1), "{held:?}");
    assert!(held.acquire_time.is_some_and(|t| t >= before), "{held:?}");
    b.stop().await;
    assert_eq!(
        record.most.load(Ordering::SeqCst),
        1,
        "{:?}",
        record.steps()
    );
    // The last leader released it too: no holder, a one-second duration.
    let released = lease(&api.client).await.unwrap().spec;
    assert_eq!(released.holder_identity, None, "{released:?}");
    assert_eq!(released.lease_duration_seconds, Some(1));
    assert_eq!(released.lease_transitions, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_is_taken_stops_its_work_before_it_stands_again() {
    let api = start_server().await;
    let record = Arc::new(Record::default());
    // Longer than the lease duration: an elector that stood again at once would take
    // the intruder's Lease while its old work still runs.
    let stop = Duration::from_millis(2500);
    let a = candidate(&api.client, config("a"), &record, stop);
    one_leader(&record).await;
    // Another writer takes the Lease (and then never renews it).
    let mut taken = lease(&api.client).await.unwrap();
    taken.spec.holder_identity = Some("intruder".into());
    taken.spec.renew_time = Some(Utc::now());
    taken.metadata.resource_version = None;
    leases(&api.client).replace(&taken).await.unwrap();
    let overwritten = Instant::now();
    eventually("a's work cancelled", WAIT, || async {
        record.when(&Step::Cancelled("a".into()))
    })
    .await;
    let cancelled = record.when(&Step::Cancelled("a".into())).unwrap();
    let config = config("a");
    assert!(
        cancelled - overwritten < config.renew_deadline + Duration::from_secs(1),
        "cancelled {:?} after the Lease was taken",
        cancelled - overwritten
    );
    // The intruder's Lease expires; a takes it again, only after its work finished.
    eventually("a leads again", WAIT, || async {
        (record.steps().len() == 4).then_some(())
    })
    .await;
    let steps = record.steps.lock().unwrap().clone();
    assert_eq!(
        steps.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>(),
        [
            Step::Started("a".into()),
            Step::Cancelled("a".into()),
            Step::Finished("a".into()),
            Step::Started("a".into())
        ]
    );
    assert!(
        steps[2].0 - steps[1].0 >= stop,
        "the work took its time to stop"
    );
    assert!(
        steps[3].0 - overwritten >= config.lease_duration,
        "the intruder's Lease was taken after {:?}, before its duration",
        steps[3].0 - overwritten
    );
    let held = lease(&api.client).await.unwrap().spec;
    assert_eq!(held.holder_identity.as_deref(), Some("a"));
    assert_eq!(held.lease_transitions, Some(1), "{held:?}");
    a.stop().await;
    assert_eq!(record.most.load(Ordering::SeqCst), 1);
}

/// A client of `server` in this process that, while `down` is set, never answers (a
/// server that is gone without closing connections), and notes when each request
/// arrives.
fn gated_client(
    server: &Server,
    down: Arc<AtomicBool>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
) -> Client {
    let local = server.local();
    let gate = move |request: http::Request<bytes::Bytes>| -> BoxFuture<'static, http::Response<client::LocalBody>> {
        arrivals.lock().unwrap().push(Instant::now());
        if down.load(Ordering::SeqCst) {
            futures::future::pending().boxed()
        } else {
            local(request)
        }
    };
    Client::in_process(&format!("http://{}", server.addr), Arc::new(gate)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_reach_the_server_stops_within_the_renew_deadline() {
    let api = start_server().await;
    let (down, arrivals) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let client = gated_client(&api.server, down.clone(), arrivals.clone());
    let record = Arc::new(Record::default());
    let stop = Duration::from_millis(500);
    let a = candidate(&client, config("a"), &record, stop);
    one_leader(&record).await;
    let cut = Instant::now();
    down.store(true, Ordering::SeqCst);
    eventually("a's work finished", WAIT, || async {
        record.when(&Step::Finished("a".into()))
    })
    .await;
    let cancelled = record.when(&Step::Cancelled("a".into())).unwrap();
    let finished = record.when(&Step::Finished("a".into())).unwrap();
    let config = config("a");
    assert!(
        cancelled - cut <= config.renew_deadline + Duration::from_secs(1),
        "cancelled {:?} after the server went away (renew deadline {:?})",
        cancelled - cut,
        config.renew_deadline
    );
    // No request between the cancellation and the end of the work: the elector waited
    // for the work before it tried to acquire again. (The work notes its cancellation
    // a moment after the elector cancelled; the last renewal attempt before that began
    // most of a renew deadline earlier and hung.)
    eventually("a tries to acquire again", WAIT, || async {
        arrivals
            .lock()
            .unwrap()
            .iter()
            .any(|t| *t > finished)
            .then_some(())
    })
    .await;
    let during: Vec<_> = arrivals
        .lock()
        .unwrap()
        .iter()
        .filter(|t| **t > cancelled - Duration::from_millis(300) && **t < finished)
        .map(|t| t.saturating_duration_since(cut))
        .collect();
    assert!(
        during.is_empty(),
        "requests while the work stopped (time after the cut): {during:?}"
    );
    // The server comes back: a still holds the Lease (no one took it) and leads again.
    down.store(false, Ordering::SeqCst);
    eventually("a leads again", WAIT, || async {
        (record.leaders() == ["a"]).then_some(())
    })
    .await;
    let held = lease(&api.client).await.unwrap().spec;
    assert_eq!(held.holder_identity.as_deref(), Some("a"));
    assert_eq!(
        held.lease_transitions,
        Some(0),
        "the same holder: no transition"
    );
    a.stop().await;
    assert_eq!(record.most.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holders_lease_is_taken_after_the_lease_duration_not_before() {
    let api = start_server().await;
    // Renewed an hour ago by the other machine's clock: that does not make it expired
    // here; only seeing it unchanged for the lease duration does.
    let an_hour_ago = Utc::now() - chrono::Duration::hours(1);
    let dead = Lease::new(
        LEASE,
        LeaseSpec {
            holder_identity: Some("dead".into()),
            lease_duration_seconds: Some(1),
            acquire_time: Some(an_hour_ago),
            renew_time: Some(an_hour_ago),
            lease_transitions: Some(4),
        },
    );
    leases(&api.client).create(&dead).await.unwrap();
    let record = Arc::new(Record::default());
    let before = Utc::now();
    let started = Instant::now();
    let a = candidate(&api.client, config("a"), &record, Duration::ZERO);
    let config = config("a");
    stays(
        "the dead holder's Lease kept",
        config.lease_duration - Duration::from_millis(100),
        || async {
            let holder = lease(&api.client)
                .await
                .and_then(|l| l.spec.holder_identity);
            e2e::equals(
                &(Vec::<String>::new(), Some("dead".into())),
                (record.leaders(), holder),
            )
        },
    )
    .await;
    one_leader(&record).await;
    let took = record.when(&Step::Started("a".into())).unwrap() - started;
    assert!(
        took >= config.lease_duration,
        "taken after {took:?}, before the lease duration"
    );
    assert!(took < Duration::from_secs(10), "taken only after {took:?}");
    let held = lease(&api.client).await.unwrap().spec;
    assert_eq!(held.holder_identity.as_deref(), Some("a"));
    assert_eq!(held.lease_transitions, Some(5), "{held:?}");
    assert!(held.acquire_time.is_some_and(|t| t >= before), "{held:?}");
    a.stop().await;
}

#[tokio::test]
async fn an_invalid_configuration_runs_nothing() {
    let api = start_server().await;
    let called = Arc::new(AtomicBool::new(false));
    let flag = called.clone();
    let bad = LeaderConfig {
        renew_deadline: Duration::from_secs(2),
        ..config("a")
    };
    assert!(bad.validate().unwrap_err().contains("renew deadline"));
    let work = move |_: CancellationToken| {
        flag.store(true, Ordering::SeqCst);
        async {}
    };
    tokio::time::timeout(
        WAIT,
        run_elected(api.client.clone(), bad, CancellationToken::new(), work),
    )
    .await
    .expect("returns at once");
    assert!(!called.load(Ordering::SeqCst));
    assert!(lease(&api.client).await.is_none());
}
