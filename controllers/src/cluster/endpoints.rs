//! The cluster's copy of every Service's `Endpoints`, for its nodes' service rules.
//!
//! Each copy is the root's object with this cluster's own entries replaced by what the
//! cluster itself knows: its Instances' addresses and phases, and whether their nodes
//! are Ready. So a node that stops heartbeating leaves its cluster's rules at once
//! (before its Instances are evicted), and while the root is unreachable the copies
//! keep the last entries the root sent while this cluster's own changes still apply.

use std::sync::Arc;

use client::runtime::{Action, Controller, ObjectRef, Store};
use client::{Client, ListParams};
use crds::{Endpoint, Endpoints, EndpointsSpec, Instance, Location, Node};
use tokio_util::sync::CancellationToken;

use super::sync::Namespaces;
use crate::endpoints::{endpoint, serving, sort, write, Pacer};
use crate::{
    index_by_node, index_by_service, instance_owner, not_ready_for, Error, ServiceKey, BY_SERVICE,
};

/// The root's `spec` with the entries of `cluster` replaced by `local` (this cluster's
/// own view of its Instances).
pub fn merge(root: &EndpointsSpec, cluster: &str, local: Vec<Endpoint>) -> EndpointsSpec {
    let mut endpoints: Vec<Endpoint> = root
        .endpoints
        .iter()
        .filter(|e| e.cluster != cluster)
        .cloned()
        .chain(local)
        .collect();
    sort(&mut endpoints);
    EndpointsSpec {
        endpoints,
        ..root.clone()
    }
}

struct Ctx {
    local: Client,
    cluster: String,
    location: Option<Location>,
    instances: Store<Instance>,
    nodes: Store<Node>,
    copies: Store<Endpoints>,
    namespaces: Namespaces,
    pacer: Pacer,
}

/// Keep the local copies until `shutdown`.
pub(super) async fn sync_endpoints(
    local: Client,
    root: Client,
    cluster: String,
    location: Option<Location>,
    concurrency: usize,
    shutdown: CancellationToken,
) {
    let mut controller = Controller::new(root.api::<Endpoints>(None), ListParams::default())
        .name("endpoints-sync")
        .concurrency(concurrency);
    let instances = controller.watches(
        local.api::<Instance>(None),
        ListParams::default(),
        instance_owner,
    );
    index_by_service(&instances);
    // A node's readiness changes the entries of the Instances bound to it.
    let bound = index_by_node(&instances);
    let nodes = controller.watches(
        local.api::<Node>(None),
        ListParams::default(),
        move |node: &Node| {
            let mut services: Vec<ObjectRef> = bound(&node.metadata.name)
                .iter()
                .map(|i| ServiceKey::of(i).object_ref())
                .collect();
            services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
            services.dedup();
            services
        },
    );
    let copies = controller.watches(
        local.api::<Endpoints>(None),
        ListParams::default(),
        |e: &Endpoints| vec![ObjectRef::of(e)],
    );
    let ctx = Arc::new(Ctx {
        local,
        cluster,
        location,
        instances,
        nodes,
        copies,
        namespaces: Namespaces::default(),
        pacer: Pacer::default(),
    });
    controller
        .run_keyed(
            move |key, root| reconcile(key, root, ctx.clone()),
            shutdown.cancelled_owned(),
        )
        .await;
}

async fn reconcile(
    key: ObjectRef,
    root: Option<Arc<Endpoints>>,
    ctx: Arc<Ctx>,
) -> Result<Action, Error> {
    let ns = key.namespace.as_deref();
    let api = ctx.local.api::<Endpoints>(ns);
    let current = ctx.copies.get(&key);
    let Some(root) = root else {
        // The Service is gone at the root (an unreachable root keeps its cache).
        if current.is_some() {
            match api.delete(&key.name).await {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => {}
            }
        }
        return Ok(Action::await_change());
    };
    if let Some(later) = ctx.pacer.hold(&key, current.as_deref()) {
        return Ok(later);
    }
    if let Some(ns) = ns {
        ctx.namespaces.ensure(&ctx.local, ns).await?;
    }
    let node_ready = |node: Option<&str>| {
        node.and_then(|n| ctx.nodes.get(&ObjectRef::new(None, n)))
            .is_some_and(|n| {
                not_ready_for(true, n.status.as_ref().map(|s| s.conditions.as_slice())).is_none()
            })
    };
    let local: Vec<Endpoint> = ctx
        .instances
        .by_index(BY_SERVICE, &ServiceKey::new(ns, &key.name).key())
        .iter()
        .filter_map(|i| {
            let ready = serving(i) && node_ready(i.spec.node.as_deref());
            endpoint(i, &ctx.cluster, ready, ctx.location.as_ref())
        })
        .collect();
    let spec = merge(&root.spec, &ctx.cluster, local);
    write(&api, &key, current.as_deref(), spec, Vec::new(), &ctx.pacer).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(instance: &str, cluster: &str, ready: bool) -> Endpoint {
        Endpoint {
            instance: instance.into(),
            ip: "10.128.0.2".parse().unwrap(),
            cluster: cluster.into(),
            node: None,
            ready,
            location: None,
        }
    }

    #[test]
    fn the_clusters_own_entries_replace_the_roots() {
        let root = EndpointsSpec {
            round_robin_ip: Some("10.30.0.5".parse().unwrap()),
            endpoints: vec![
                entry("web-a", "one", true),
                entry("web-b", "two", true),
                entry("web-c", "one", true),
            ],
            ..Default::default()
        };
        // Cluster "one" knows web-c went NotReady, web-a is gone, web-d is new.
        let merged = merge(
            &root,
            "one",
            vec![entry("web-d", "one", true), entry("web-c", "one", false)],
        );
        assert_eq!(merged.round_robin_ip, root.round_robin_ip);
        let got: Vec<_> = merged
            .endpoints
            .iter()
            .map(|e| (e.instance.as_str(), e.cluster.as_str(), e.ready))
            .collect();
        assert_eq!(
            got,
            [
                ("web-b", "two", true),
                ("web-c", "one", false),
                ("web-d", "one", true)
            ]
        );
        // Nothing of its own: only the other clusters' entries stay.
        assert_eq!(merge(&root, "one", Vec::new()).endpoints.len(), 1);
    }
}
