//! Instances of a node that is not Ready are not ready either (Kubernetes' node
//! lifecycle controller marks such pods `Ready=False` the same way): their `Ready`
//! condition goes `False` with reason `NodeNotReady` as soon as the node is `NotReady`,
//! long before their eviction, and back to `True` when the node returns with them still
//! running. The status goes up to the root with the rest, so every cluster's endpoints
//! leave them out, not only this cluster's.

use std::sync::Arc;

use chrono::Utc;
use client::runtime::{Action, Controller, ObjectRef, Store};
use client::{Api, Client, ListParams};
use crds::conditions::{instance_readiness, READY};
use crds::{find_condition, set_condition, ConditionStatus, Instance, Node, Phase};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{index_by_node, not_ready_for, Error};

/// The reason of `Ready=False` on an Instance whose node is not Ready.
pub const NODE_NOT_READY: &str = "NodeNotReady";

/// The `Ready` condition a running `instance` should get, if it should change: `False`
/// while its node is not Ready, `True` again once it is. Instances that do not run are
/// their agent's to report. Pure.
pub fn readiness_change(
    instance: &Instance,
    node_ready: bool,
) -> Option<(ConditionStatus, &'static str, String)> {
    let status = instance.status.as_ref()?;
    if status.phase != Phase::Running {
        return None;
    }
    let current = find_condition(&status.conditions, READY);
    let marked = current.is_some_and(|c| c.reason == NODE_NOT_READY);
    match (node_ready, marked) {
        (false, false) => Some((
            ConditionStatus::False,
            NODE_NOT_READY,
            format!(
                "node {} is not ready",
                instance.spec.node.as_deref().unwrap_or_default()
            ),
        )),
        (true, true) => Some(instance_readiness(Phase::Running, "")),
        _ => None,
    }
}

struct Ctx {
    client: Client,
    nodes: Store<Node>,
}

/// Keep the Instances' readiness in line with their nodes' until `shutdown`.
pub(super) async fn run(local: Client, concurrency: usize, shutdown: CancellationToken) {
    let mut controller = Controller::new(local.api::<Instance>(None), ListParams::default())
        .name("instance-readiness")
        .concurrency(concurrency);
    let bound = index_by_node(&controller.store());
    let nodes = controller.watches(
        local.api::<Node>(None),
        ListParams::default(),
        move |node: &Node| {
            bound(&node.metadata.name)
                .iter()
                .map(|i| ObjectRef::of(i.as_ref()))
                .collect()
        },
    );
    let ctx = Arc::new(Ctx {
        client: local,
        nodes,
    });
    controller
        .run(
            move |i| reconcile(i, ctx.clone()),
            shutdown.cancelled_owned(),
        )
        .await;
}

async fn reconcile(instance: Arc<Instance>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(node) = instance.spec.node.as_deref() else {
        return Ok(Action::await_change());
    };
    let cached = ctx.nodes.get(&ObjectRef::new(None, node));
    let node_ready = cached.as_ref().is_some_and(|n| {
        not_ready_for(true, n.status.as_ref().map(|s| s.conditions.as_slice())).is_none()
    });
    let Some((ready, reason, message)) = readiness_change(&instance, node_ready) else {
        return Ok(Action::await_change());
    };
    let mut conditions = instance
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    set_condition(&mut conditions, READY, ready, reason, &message, Utc::now());
    // At the version read: the agent may be writing the status too (a 409 is retried).
    let patch = json!({
        "metadata": {"resourceVersion": instance.metadata.resource_version},
        "status": {"conditions": conditions},
    });
    let api: Api<Instance> = ctx.client.api(instance.metadata.namespace.as_deref());
    api.patch_status(&instance.metadata.name, &patch).await?;
    tracing::info!(instance = %ObjectRef::of(instance.as_ref()), node, ready = ?ready, "instance readiness follows its node");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::{InstanceSpec, InstanceStatus};

    fn instance(phase: Phase, ready_reason: Option<&str>) -> Instance {
        let mut i = Instance::new(
            "web-0",
            InstanceSpec {
                service: "web".into(),
                node: Some("n1".into()),
                ..Default::default()
            },
        );
        let mut status = InstanceStatus {
            phase,
            ..Default::default()
        };
        if let Some(reason) = ready_reason {
            let value = if reason == NODE_NOT_READY {
                ConditionStatus::False
            } else {
                ConditionStatus::True
            };
            set_condition(&mut status.conditions, READY, value, reason, "", Utc::now());
        }
        i.status = Some(status);
        i
    }

    #[test]
    fn running_instances_follow_their_node() {
        let change = |i: &Instance, node_ready| readiness_change(i, node_ready).map(|c| (c.0, c.1));
        let running = instance(Phase::Running, Some("Running"));
        let marked = instance(Phase::Running, Some(NODE_NOT_READY));
        assert_eq!(
            change(&running, false),
            Some((ConditionStatus::False, NODE_NOT_READY))
        );
        assert_eq!(change(&running, true), None, "nothing to do");
        assert_eq!(change(&marked, false), None, "already marked");
        assert_eq!(
            change(&marked, true),
            Some((ConditionStatus::True, "Running")),
            "the node is back"
        );
        // What does not run is its agent's to report.
        assert_eq!(change(&instance(Phase::Starting, None), false), None);
        assert_eq!(change(&instance(Phase::Failed, None), false), None);
    }
}
