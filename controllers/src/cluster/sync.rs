//! Instance sync between the root and this cluster. Down: root Instances placed here get
//! a local copy. Up: the local binding and status go to the root Instance (its
//! `observedGeneration` translated into the root's generations). Gone or moved at the
//! root: the local copy is deleted.
//!
//! The writes up never race the root's own writes: the node goes up as a JSON patch
//! whose precondition is the one fact it depends on (the Instance is still this
//! cluster's, `test` of `spec.cluster` and the uid), and the status as a server-side
//! apply of the whole mirrored status under this controller's field manager, which
//! owns it once the Instance is here.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::runtime::{Action, Controller, ObjectRef, Store, Written};
use client::{Api, Client, ListParams};
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
    /// root has not caught up: the status written up is compared with what was
    /// written, not with the cache's older copy (else it would be written again).
    written: Written<Instance>,
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
        written: Written::default(),
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
        ctx.written.forget(&key);
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
    let remote = ctx.written.newest(&key, remote);
    if local.spec.node != remote.spec.node {
        let node = match &local.spec.node {
            Some(node) => json!({"op": "add", "path": "/spec/node", "value": node}),
            None => json!({"op": "remove", "path": "/spec/node"}),
        };
        let up = json!([
            {"op": "test", "path": "/metadata/uid", "value": remote.metadata.uid},
            {"op": "test", "path": "/spec/cluster", "value": ctx.cluster},
            node,
        ]);
        match root_api.json_patch(&remote.metadata.name, &up, false).await {
            Ok(written) => ctx.written.wrote(key, written),
            // Deleted, or no longer this cluster's (the test failed): its next event
            // says which.
            Err(e) if e.is_not_found() || e.is_invalid() => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(Action::await_change());
    }
    if let Some(status) = status_up(&local, &remote) {
        if remote.status.as_ref() != Some(&status) && !adds_nothing(&status, remote.status.as_ref())
        {
            match root_api
                .apply_own_status(&remote.metadata.name, &status)
                .await
            {
                Ok(written) => ctx.written.wrote(key, written),
                Err(e) if e.is_not_found() => return Ok(Action::await_change()),
                Err(e) => return Err(e.into()),
            }
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

/// Whether `status`, the local status to write up, adds nothing the root's `remote`
/// status lacks that anyone waits for: both say the Instance is only bound (the root
/// from its own binding to this cluster; the node goes up in the spec). The next local
/// status is the agent's first report (with the instance IP its node handed out), or
/// the scheduler's `Pending` when the Instance is moved off a node: either goes up.
fn adds_nothing(status: &InstanceStatus, remote: Option<&InstanceStatus>) -> bool {
    let only_bound = |s: &InstanceStatus| s.phase == Phase::Scheduled;
    only_bound(status) && remote.is_some_and(only_bound)
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
    use crds::conditions::{READY, SCHEDULED};
    use crds::{set_condition, ConditionStatus};

    /// A status in `phase`, bound to node n1.
    fn bound(phase: Phase) -> InstanceStatus {
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
            Utc::now(),
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
    fn a_status_that_only_says_bound_waits_for_the_agents_report() {
        let at_root = bound(Phase::Scheduled);
        let mut here = bound(Phase::Scheduled);
        set_condition(
            &mut here.conditions,
            READY,
            ConditionStatus::False,
            "Scheduled",
            "",
            Utc::now(),
        );
        let mut running = bound(Phase::Running);
        running.instance_ip = Some("10.0.0.5".parse().unwrap());
        let waiting = bound(Phase::Starting);
        let pending = bound(Phase::Pending);
        // (what, local status, root status) → adds nothing (not written up)
        let cases = [
            ("bound here, bound at the root", &here, Some(&at_root), true),
            (
                "the agent reported, with the address",
                &running,
                Some(&at_root),
                false,
            ),
            (
                "the agent waits for an address and says why",
                &waiting,
                Some(&at_root),
                false,
            ),
            ("moved off its node", &pending, Some(&at_root), false),
            (
                "the root shows something else",
                &here,
                Some(&running),
                false,
            ),
            ("the root has no status", &here, None, false),
        ];
        for (what, local, root, expected) in cases {
            assert_eq!(adds_nothing(local, root), expected, "{what}");
        }
    }
}
