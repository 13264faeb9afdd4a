//! Heartbeat lapse: a Cluster (at the root) or a Node (in a cluster) whose last
//! heartbeat is older than the timeout becomes `Ready=False` with reason
//! `HeartbeatLapsed`. A Cluster's last heartbeat is its `status.lastHeartbeat`; a Node's
//! is the later of that and its `Lease`'s `renewTime` (its agent renews the Lease at
//! every beat and writes the status only every few beats). Objects that never sent a heartbeat are left alone (they are
//! managed by hand). What happens to the Instances of a NotReady target after its
//! grace period is the placement controller's business.
//!
//! A Node's Lease goes with the Node: once the Node is gone (deleted, also while this
//! controller was not running), its Lease is deleted too.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use client::runtime::{Action, Controller, ObjectRef, Recorder, Store};
use client::{Client, ListParams};
use crds::{set_condition, Cluster, ConditionStatus, EventType, Lease, Node, Time};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::placement::Target;
use crate::Error;

/// A kind that reports heartbeats.
pub trait Heartbeats: Target {
    /// Whether the kind also heartbeats through a `Lease` of the same name.
    const LEASED: bool = false;
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
                let key = ObjectRef::new(None, &l.metadata.name);
                match objects.get(&key) {
                    Some(_) => vec![],
                    None => vec![key],
                }
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

/// Delete the Lease of `key`, an object that is not cached, once the API confirms the
/// object is gone (the caches of the object and of Leases may lag each other).
async fn remove_lease<K: Heartbeats>(
    key: ObjectRef,
    client: Client,
    leases: Option<Store<Lease>>,
) -> Result<Action, Error> {
    if leases.is_none_or(|l| l.get(&key).is_none()) {
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
    let Some(beat) = k.last_heartbeat().max(renewed) else {
        return Ok(Action::await_change());
    };
    let age = (Utc::now() - beat).to_std().unwrap_or_default();
    if age <= timeout {
        return Ok(Action::requeue(timeout - age + Duration::from_millis(200)));
    }
    let mut conditions = k.conditions().to_vec();
    let message = format!(
        "no heartbeat for {}s (timeout {}s)",
        age.as_secs(),
        timeout.as_secs()
    );
    let was_ready = crds::is_true(&conditions, "Ready");
    if set_condition(
        &mut conditions,
        "Ready",
        ConditionStatus::False,
        "HeartbeatLapsed",
        &message,
        Utc::now(),
    ) && was_ready
    {
        let patch = json!({
            "metadata": {"resourceVersion": k.metadata().resource_version},
            "status": {"conditions": conditions},
        });
        client
            .api::<K>(None)
            .patch_status(&k.metadata().name, &patch)
            .await?;
        recorder
            .record(k.as_ref(), EventType::Warning, "HeartbeatLapsed", &message)
            .await;
    }
    Ok(Action::await_change())
}
