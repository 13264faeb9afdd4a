//! Instance sync between the root and this cluster. Down: root Instances placed here get
//! a local copy. Up: the local binding and status go to the root Instance (its
//! `observedGeneration` translated into the root's generations). Gone or moved at the
//! root: the local copy is deleted.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::runtime::{Action, Controller, ObjectRef, Store};
use client::{Api, Client, ListParams};
use crds::conditions::SCHEDULED;
use crds::{Instance, InstanceStatus, ObjectMeta, Phase, API_VERSION};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::handback::hand_back_if_no_room;
use crate::Error;

struct SyncCtx {
    local: Client,
    root: Client,
    cluster: String,
    handback: Duration,
    locals: Store<Instance>,
    namespaces: Namespaces,
    /// The root Instances as this controller last wrote them, while its cache of the
    /// root has not caught up: the next write up goes at that version, not at the
    /// cache's older one (each write up — binding, then status a few times — would
    /// otherwise be a 409 and a read).
    written: Mutex<HashMap<ObjectRef, Instance>>,
}

/// The version of an object as a number (0 when it has none).
fn version(i: &Instance) -> i64 {
    i.metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl SyncCtx {
    /// The newer of the cached root Instance and the one this controller last wrote.
    fn newest(&self, key: &ObjectRef, cached: Arc<Instance>) -> Arc<Instance> {
        let mut written = self.written.lock().expect("written lock");
        match written.get(key) {
            Some(w) if w.metadata.uid == cached.metadata.uid && version(w) > version(&cached) => {
                Arc::new(w.clone())
            }
            Some(_) => {
                written.remove(key);
                cached
            }
            None => cached,
        }
    }

    fn wrote(&self, key: ObjectRef, instance: Instance) {
        self.written
            .lock()
            .expect("written lock")
            .insert(key, instance);
    }
}

/// Run the sync (see the module docs) until `shutdown`; an Instance that finds no
/// node with room for `handback` goes back to the root.
pub(super) async fn sync_instances(
    local: Client,
    root: Client,
    cluster: String,
    handback: Duration,
    concurrency: usize,
    shutdown: CancellationToken,
) {
    // Only the root Instances placed here; one placed elsewhere arrives as a deletion.
    let placed_here = ListParams {
        field_selector: Some(format!("spec.cluster={cluster}")),
        ..Default::default()
    };
    let mut controller = Controller::new(root.api::<Instance>(None), placed_here)
        .name("cluster-sync")
        .concurrency(concurrency);
    let locals = controller.watches(
        local.api::<Instance>(None),
        ListParams::default(),
        |i: &Instance| vec![ObjectRef::of(i)],
    );
    let ctx = Arc::new(SyncCtx {
        local,
        root,
        cluster,
        handback,
        locals,
        namespaces: Namespaces::default(),
        written: Mutex::default(),
    });
    controller
        .run_keyed(
            move |key, root_instance| sync_one(key, root_instance, ctx.clone()),
            shutdown.cancelled_owned(),
        )
        .await;
}

async fn sync_one(
    key: ObjectRef,
    root_instance: Option<Arc<Instance>>,
    ctx: Arc<SyncCtx>,
) -> Result<Action, Error> {
    let ns = key.namespace.as_deref();
    let local_api: Api<Instance> = ctx.local.api(ns);
    let local = ctx.locals.get(&key);
    let ours = root_instance.filter(|r| {
        r.spec.cluster.as_deref() == Some(ctx.cluster.as_str())
            && r.metadata.deletion_timestamp.is_none()
    });
    let Some(remote) = ours else {
        ctx.written.lock().expect("written lock").remove(&key);
        if let Some(l) = local {
            tracing::info!(instance = %key, "no longer placed on this cluster; removing the local copy");
            match local_api.delete(&l.metadata.name).await {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => {}
            }
        }
        return Ok(Action::await_change());
    };
    let Some(local) = local else {
        if let Some(ns) = ns {
            ctx.namespaces.ensure(&ctx.local, ns).await?;
        }
        let copy = Instance {
            api_version: API_VERSION.into(),
            kind: "Instance".into(),
            metadata: ObjectMeta {
                name: remote.metadata.name.clone(),
                namespace: remote.metadata.namespace.clone(),
                labels: remote.metadata.labels.clone(),
                annotations: remote.metadata.annotations.clone(),
                ..Default::default()
            },
            spec: remote.spec.clone(),
            status: None,
        };
        match local_api.create(&copy).await {
            Err(e) if !e.is_conflict() => return Err(e.into()),
            _ => return Ok(Action::await_change()),
        }
    };
    let root_api: Api<Instance> = ctx.root.api(ns);
    let remote = ctx.newest(&key, remote);
    if local.spec.node != remote.spec.node {
        let node = local.spec.node.clone();
        write_up(&ctx, &key, &root_api, &remote, |at| {
            let patch = json!({"metadata": {"resourceVersion": at.metadata.resource_version}, "spec": {"node": node}});
            let api = root_api.clone();
            async move { api.patch(&at.metadata.name, &patch).await }
        })
        .await?;
        return Ok(Action::await_change());
    }
    if let Some(status) = status_up(&local, &remote) {
        if remote.status.as_ref() != Some(&status) {
            if let Some(wait) = settling(&status) {
                return Ok(Action::requeue(wait));
            }
            write_up(&ctx, &key, &root_api, &remote, |mut up| {
                up.status = status_up(&local, &up);
                let api = root_api.clone();
                async move { api.replace_status(&up).await }
            })
            .await?;
        }
    }
    hand_back_if_no_room(&ctx.root, &ctx.cluster, ctx.handback, &local, &remote).await
}

/// The status of the root's `remote` that mirrors `local`, this cluster's copy of it
/// (`None` while the copy has none): the same status, but `observedGeneration` counts
/// in the root's generations. It is `remote`'s generation when the local status is of
/// the local copy's current generation (the two share their spec: the binding is
/// written up before any status), and otherwise stays what the root had.
fn status_up(local: &Instance, remote: &Instance) -> Option<InstanceStatus> {
    let mut status = local.status.clone()?;
    let caught_up = status.observed_generation.is_some()
        && status.observed_generation == local.metadata.generation;
    status.observed_generation = if caught_up {
        remote.metadata.generation
    } else {
        remote.status.as_ref().and_then(|s| s.observed_generation)
    };
    Some(status)
}

/// How long the status of a freshly bound local Instance waits before it is written
/// up while its node has not reported on it yet: the instance IP and the agent's first
/// report usually follow within milliseconds, and one write up then carries them all
/// (the root already shows the Instance Scheduled, from its own binding).
///
/// A guess about timing, not a guarantee: three writers share `Instance.status` (the
/// binder, the Instance-IP allocator, the agent), and a status written up in between
/// costs the root one more write of the Instance. It stays until those writers stop
/// colliding (server-side apply with a field manager each would remove the need).
const SETTLE_UP: Duration = Duration::from_millis(100);

/// Time left before `status` is worth writing up: while the Instance is only bound
/// (phase Scheduled) and was bound less than [`SETTLE_UP`] ago.
fn settling(status: &InstanceStatus) -> Option<Duration> {
    if status.phase != Phase::Scheduled {
        return None;
    }
    let age = crds::since_transition(&status.conditions, SCHEDULED)?;
    SETTLE_UP.checked_sub(age).filter(|left| !left.is_zero())
}

/// Write to the root's `remote` at the version this cluster saw; when that version is
/// stale (409: usually the root's own status write after placing it), read the
/// Instance again and, while it is still placed here, write at the fresh version at
/// once, instead of a retry with backoff from a cache that may lag still.
async fn write_up<F, Fut>(
    ctx: &SyncCtx,
    key: &ObjectRef,
    root_api: &Api<Instance>,
    remote: &Instance,
    write: F,
) -> Result<(), Error>
where
    F: Fn(Instance) -> Fut,
    Fut: std::future::Future<Output = Result<Instance, client::ClientError>>,
{
    let mut at = remote.clone();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match write(at).await {
            // Still racing after three tries: the controller's retry takes it from here.
            Err(e) if e.is_conflict() && attempts < 3 => {
                let fresh = match root_api.get(&remote.metadata.name).await {
                    Err(e) if e.is_not_found() => return Ok(()),
                    other => other?,
                };
                let still_ours = fresh.spec.cluster.as_deref() == Some(ctx.cluster.as_str())
                    && fresh.metadata.deletion_timestamp.is_none()
                    && fresh.metadata.uid == remote.metadata.uid;
                if !still_ours {
                    return Ok(());
                }
                at = fresh;
            }
            other => {
                ctx.wrote(key.clone(), other?);
                return Ok(());
            }
        }
    }
}

/// The local namespaces known to exist: each is created once (a 409 means it was).
#[derive(Default)]
pub(super) struct Namespaces {
    known: Mutex<HashSet<String>>,
}

impl Namespaces {
    /// Create the namespace `ns` in the cluster API unless it is known to exist.
    pub(super) async fn ensure(&self, local: &Client, ns: &str) -> Result<(), Error> {
        if self.known.lock().expect("namespaces lock").contains(ns) {
            return Ok(());
        }
        let api = local.dynamic(crds::kind_by_name("namespaces").expect("served"), None);
        match api
            .create(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
            .await
        {
            Err(e) if !e.is_conflict() => return Err(e.into()),
            _ => {}
        }
        self.known
            .lock()
            .expect("namespaces lock")
            .insert(ns.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use crds::{set_condition, ConditionStatus};

    fn bound(phase: Phase, ago: chrono::Duration) -> InstanceStatus {
        let mut status = InstanceStatus {
            phase,
            ..Default::default()
        };
        set_condition(
            &mut status.conditions,
            SCHEDULED,
            ConditionStatus::True,
            "Bound",
            "on n1",
            Utc::now() - ago,
        );
        status
    }

    #[test]
    fn the_status_written_up_observes_the_roots_generation() {
        /// An Instance at `generation` whose status observed `observed` (no status: `None`).
        fn at(generation: i64, observed: Option<Option<i64>>) -> Instance {
            let mut i = Instance::new("web-0", Default::default());
            i.metadata.generation = Some(generation);
            i.status = observed.map(|o| InstanceStatus {
                phase: Phase::Running,
                observed_generation: o,
                ..Default::default()
            });
            i
        }
        // (what, local copy, root copy) → observedGeneration written up (None: no status)
        let cases = [
            (
                "no local status: nothing to write",
                at(2, None),
                at(3, Some(Some(1))),
                None,
            ),
            (
                "the local status is current: the root's generation",
                at(2, Some(Some(2))),
                at(3, Some(Some(1))),
                Some(Some(3)),
            ),
            (
                "the local status lags: the root keeps its own",
                at(3, Some(Some(2))),
                at(5, Some(Some(1))),
                Some(Some(1)),
            ),
            (
                "the local status never observed: the root keeps its own",
                at(2, Some(None)),
                at(3, None),
                Some(None),
            ),
        ];
        for (what, local, remote, expected) in cases {
            assert_eq!(
                status_up(&local, &remote).map(|s| s.observed_generation),
                expected,
                "{what}"
            );
        }
        let up = status_up(&at(2, Some(Some(2))), &at(3, None)).unwrap();
        assert_eq!(up.phase, Phase::Running, "the rest is the local status");
    }

    #[test]
    fn only_a_fresh_binding_waits_before_it_is_written_up() {
        let fresh = settling(&bound(Phase::Scheduled, chrono::Duration::zero()));
        assert!(fresh.is_some_and(|left| left <= SETTLE_UP), "{fresh:?}");
        let old = chrono::Duration::milliseconds(2 * SETTLE_UP.as_millis() as i64);
        assert_eq!(settling(&bound(Phase::Scheduled, old)), None);
        // The agent has reported: write up at once.
        let running = settling(&bound(Phase::Running, chrono::Duration::zero()));
        assert_eq!(running, None);
        // No binding time to go by: at once.
        let unknown = InstanceStatus {
            phase: Phase::Scheduled,
            ..Default::default()
        };
        assert_eq!(settling(&unknown), None);
    }
}
