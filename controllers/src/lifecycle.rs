//! Heartbeat lapse: a Cluster (at the root) or a Node (in a cluster) whose
//! `status.lastHeartbeat` is older than the timeout becomes `Ready=False` with reason
//! `HeartbeatLapsed`. Objects that never sent a heartbeat are left alone (they are
//! managed by hand). What happens to the Instances of a NotReady target after its
//! grace period is the placement controller's business.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use client::runtime::{Action, Controller, Recorder};
use client::{Client, ListParams};
use crds::{set_condition, Cluster, ConditionStatus, EventType, Node, Time};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::placement::Target;
use crate::Error;

/// A kind that reports heartbeats.
pub trait Heartbeats: Target {
    fn last_heartbeat(&self) -> Option<Time>;
}

impl Heartbeats for Cluster {
    fn last_heartbeat(&self) -> Option<Time> {
        self.status.as_ref()?.last_heartbeat
    }
}

impl Heartbeats for Node {
    fn last_heartbeat(&self) -> Option<Time> {
        self.status.as_ref()?.last_heartbeat
    }
}

pub async fn run<K: Heartbeats>(client: Client, timeout: Duration, shutdown: CancellationToken) {
    let name = format!("{}-lifecycle", K::KIND.to_lowercase());
    let controller = Controller::new(client.api::<K>(None), ListParams::default())
        .name(&name)
        .concurrency(2);
    let recorder = Arc::new(Recorder::new(client.clone(), &name));
    controller
        .run(
            move |k| {
                let (client, recorder) = (client.clone(), recorder.clone());
                async move { reconcile(k, client, recorder, timeout).await }
            },
            shutdown.cancelled_owned(),
        )
        .await;
}

async fn reconcile<K: Heartbeats>(
    k: Arc<K>,
    client: Client,
    recorder: Arc<Recorder>,
    timeout: Duration,
) -> Result<Action, Error> {
    let Some(beat) = k.last_heartbeat() else {
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
