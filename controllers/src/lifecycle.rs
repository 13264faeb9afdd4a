//! Heartbeat lapse: a Cluster (at the root) or a Node (in a cluster) whose last
//! heartbeat is older than the timeout becomes `Ready=False` with reason
//! `HeartbeatLapsed`. A Cluster's last heartbeat is its `status.lastHeartbeat`; a Node's
//! is the later of that and its `Lease`'s `renewTime` (its agent renews the Lease at
//! every beat and writes the status only every few beats). Objects that never sent a heartbeat are left alone (they are
//! managed by hand). What happens to the Instances of a `NotReady` target after its
//! grace period is the placement controller's business.
//!
//! A Node's Lease goes with the Node: once the Node is gone (deleted, also while this
//! controller was not running), its Lease is deleted too. The leader-election Leases
//! (`crds::LEADER_LEASES`) belong to no Node and are never deleted.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use client::runtime::{Action, Controller, ObjectRef, Recorder, Store};
use client::{Client, ListParams};
use crds::conditions::READY;
use crds::{
    set_condition, Cluster, Condition, ConditionStatus, EventType, HasConditions, Lease, Node,
    Resource, Time,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// A kind that reports heartbeats.
pub trait Heartbeats: Resource + HasConditions {
    /// Whether the kind also heartbeats through a `Lease` of the same name.
    const LEASED: bool = false;
    /// When the object last reported, as its status says.
    fn last_heartbeat(&self) -> Option<Time>;
}

impl Heartbeats for Cluster {
    fn last_heartbeat(&self) -> Option<Time> {
        self.status.as_ref()?.last_heartbeat
    }
}

impl Heartbeats for Node {
    const LEASED: bool = true;
    fn last_heartbeat(&self) -> Option<Time> {
        self.status.as_ref()?.last_heartbeat
    }
}

/// Mark objects of kind `K` `NotReady` once their heartbeat is older than `timeout`
/// (and delete the Leases of Nodes that are gone), until `shutdown`.
pub async fn run<K: Heartbeats>(client: Client, timeout: Duration, shutdown: CancellationToken) {
    let name = format!("{}-lifecycle", K::KIND.to_lowercase());
    let mut controller = Controller::new(client.api::<K>(None), ListParams::default())
        .name(&name)
        .concurrency(2);
    // A renewal queues nothing: each reconcile of a live object requeues itself for
    // when its heartbeat would lapse, and reads the Lease then. A Lease whose object is
    // not cached queues that object's key, whose reconcile removes the Lease if the
    // object is really gone.
    let objects = controller.store();
    let leases = K::LEASED.then(|| {
        controller.watches(
            client.api::<Lease>(None),
            ListParams::default(),
            move |l: &Lease| {
                let name = &l.metadata.name;
                let cached = objects.get(&ObjectRef::new(None, name)).is_some();
                queued_by_lease(name, cached).into_iter().collect()
            },
        )
    });
    let recorder = Arc::new(Recorder::new(client.clone(), &name));
    controller
        .run_keyed(
            move |key, k| {
                let (client, recorder, leases) = (client.clone(), recorder.clone(), leases.clone());
                async move {
                    match k {
                        Some(k) => reconcile(k, client, recorder, leases, timeout).await,
                        None => remove_lease::<K>(key, client, leases).await,
                    }
                }
            },
            shutdown.cancelled_owned(),
        )
        .await;
}

/// The object a change of the Lease `name` queues: its object when that is not
/// `cached` (its reconcile removes the Lease if the object is really gone); none for
/// a cached object's Lease, nor for a leader-election Lease, which follows no object.
fn queued_by_lease(name: &str, cached: bool) -> Option<ObjectRef> {
    (!cached && follows_an_object(name)).then(|| ObjectRef::new(None, name))
}

/// Whether the Lease `name` is an object's (a node's liveness record), to be deleted
/// with it: every Lease but the leader-election ones (`crds::LEADER_LEASES`), even if
/// an object of the same name existed.
fn follows_an_object(name: &str) -> bool {
    !crds::is_leader_lease(name)
}

/// Delete the Lease of `key`, an object that is not cached, once the API confirms the
/// object is gone (the caches of the object and of Leases may lag each other).
async fn remove_lease<K: Heartbeats>(
    key: ObjectRef,
    client: Client,
    leases: Option<Store<Lease>>,
) -> Result<Action, Error> {
    if !follows_an_object(&key.name) || leases.is_none_or(|l| l.get(&key).is_none()) {
        return Ok(Action::await_change());
    }
    match client.api::<K>(None).get(&key.name).await {
        Ok(_) => return Ok(Action::await_change()),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    match client.api::<Lease>(None).delete(&key.name).await {
        Ok(()) => {
            tracing::info!(lease = %key, kind = K::KIND, "deleted the Lease of a removed object")
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

/// Slack added to the time a heartbeat has left, so that the recheck comes after it
/// lapsed rather than just before.
const RECHECK_SLACK: Duration = Duration::from_millis(200);

/// Reason (condition and Event) of an object whose heartbeat lapsed.
const HEARTBEAT_LAPSED: &str = "HeartbeatLapsed";

/// What the lifecycle controller does with one object.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// It never sent a heartbeat (managed by hand): leave it alone.
    Unmanaged,
    /// Its heartbeat is fresh: look again once it would lapse.
    RecheckIn(Duration),
    /// Its heartbeat lapsed and it was Ready: write these conditions (`Ready=False`)
    /// and record `message`.
    Lost {
        conditions: Vec<Condition>,
        message: String,
    },
    /// Its heartbeat lapsed, but it was not Ready anyway: nothing to write.
    AlreadyDown,
}

/// Judge an object by its `conditions` and its last heartbeat, the later of
/// `last_heartbeat` (its status) and `renewed` (its Lease), at `now`: lost once that
/// is more than `timeout` ago.
fn judge(
    conditions: &[Condition],
    last_heartbeat: Option<Time>,
    renewed: Option<Time>,
    now: Time,
    timeout: Duration,
) -> Verdict {
    let Some(beat) = last_heartbeat.max(renewed) else {
        return Verdict::Unmanaged;
    };
    let age = (now - beat).to_std().unwrap_or_default();
    if age <= timeout {
        return Verdict::RecheckIn(timeout - age + RECHECK_SLACK);
    }
    if !crds::is_true(conditions, READY) {
        return Verdict::AlreadyDown;
    }
    let message = format!(
        "no heartbeat for {}s (timeout {}s)",
        age.as_secs(),
        timeout.as_secs()
    );
    let mut conditions = conditions.to_vec();
    set_condition(
        &mut conditions,
        READY,
        ConditionStatus::False,
        HEARTBEAT_LAPSED,
        &message,
        now,
    );
    Verdict::Lost {
        conditions,
        message,
    }
}

async fn reconcile<K: Heartbeats>(
    k: Arc<K>,
    client: Client,
    recorder: Arc<Recorder>,
    leases: Option<Store<Lease>>,
    timeout: Duration,
) -> Result<Action, Error> {
    let renewed = leases
        .and_then(|l| l.get(&ObjectRef::new(None, &k.metadata().name)))
        .and_then(|l| l.spec.renew_time);
    let verdict = judge(
        k.conditions(),
        k.last_heartbeat(),
        renewed,
        Utc::now(),
        timeout,
    );
    match verdict {
        Verdict::Unmanaged | Verdict::AlreadyDown => Ok(Action::await_change()),
        Verdict::RecheckIn(after) => Ok(Action::requeue(after)),
        Verdict::Lost {
            conditions,
            message,
        } => {
            let patch = json!({
                "metadata": {"resourceVersion": k.metadata().resource_version},
                "status": {"conditions": conditions},
            });
            client
                .api::<K>(None)
                .patch_status(&k.metadata().name, &patch)
                .await?;
            recorder.record(k.as_ref(), EventType::Warning, HEARTBEAT_LAPSED, &message);
            Ok(Action::await_change())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_leases_follow_no_object() {
        let node = |name: &str| Some(ObjectRef::new(None, name));
        #[rustfmt::skip]
        let cases = [
            ("a node's Lease, node cached: nothing to do", "n1", true, None),
            ("a node's Lease, node not cached: check the node", "n1", false, node("n1")),
            ("the root's leader Lease", crds::ROOT_CONTROLLERS_LEASE, false, None),
            ("a cluster's leader Lease", crds::CLUSTER_CONTROLLERS_LEASE, false, None),
            ("a leader Lease, even beside a Node of its name", crds::CLUSTER_CONTROLLERS_LEASE, true, None),
        ];
        for (name, lease, cached, want) in cases {
            assert_eq!(queued_by_lease(lease, cached), want, "{name}");
        }
        for lease in crds::LEADER_LEASES {
            assert!(!follows_an_object(lease), "{lease}");
        }
        assert!(follows_an_object("n1"));
    }

    #[test]
    fn heartbeats_decide_between_alive_and_lost() {
        let now = Utc::now();
        let ago = |secs: i64| Some(now - chrono::Duration::seconds(secs));
        let timeout = Duration::from_secs(20);
        let ready = |status| {
            let mut c = Vec::new();
            set_condition(
                &mut c,
                READY,
                status,
                "NodeReady",
                "",
                now - chrono::Duration::hours(1),
            );
            c
        };
        let (up, down) = (ready(ConditionStatus::True), ready(ConditionStatus::False));
        let lost = |age: u64| {
            let message = format!("no heartbeat for {age}s (timeout 20s)");
            let mut conditions = up.clone();
            set_condition(
                &mut conditions,
                READY,
                ConditionStatus::False,
                HEARTBEAT_LAPSED,
                &message,
                now,
            );
            Verdict::Lost {
                conditions,
                message,
            }
        };
        let recheck = |secs: u64| Verdict::RecheckIn(Duration::from_secs(secs) + RECHECK_SLACK);
        #[rustfmt::skip]
        let cases = [
            ("never beat: managed by hand", &up, None, None, Verdict::Unmanaged),
            ("fresh status heartbeat", &up, ago(5), None, recheck(15)),
            ("right at the timeout: not yet", &up, ago(20), None, recheck(0)),
            ("a heartbeat from the future counts as now", &up, ago(-30), None, recheck(20)),
            ("lapsed: Ready goes False", &up, ago(30), None, lost(30)),
            ("a Lease renewal keeps it alive", &up, ago(300), ago(2), recheck(18)),
            ("a Lease alone is a heartbeat", &up, None, ago(4), recheck(16)),
            ("the later of the two counts", &up, ago(25), ago(40), lost(25)),
            ("lapsed but already NotReady: nothing to write", &down, ago(30), None, Verdict::AlreadyDown),
            ("lapsed, never Ready: nothing to write", &Vec::new(), ago(30), None, Verdict::AlreadyDown),
        ];
        for (name, conditions, beat, renewed, expected) in cases {
            assert_eq!(
                judge(conditions, beat, renewed, now, timeout),
                expected,
                "{name}"
            );
        }
    }
}
