//! The endpoints controller: one `Endpoints` object per Service (same namespace and
//! name, owned by it) listing its service IPs, its ports and every Instance that has an
//! address, with the Instance's cluster, node, readiness and the cluster's location.
//! Every node's agent turns these into its service rules; each cluster keeps a copy
//! whose entries for its own Instances it keeps current itself
//! ([`crate::cluster`]'s endpoints sync), so a cluster cut off from the root still
//! routes, and sees its own changes at once.
//!
//! What an Endpoints object should hold is the pure [`desired`] (and [`endpoint`] per
//! Instance, shared with the cluster tier); the reconcile writes it when it differs.

use std::sync::Arc;

use client::runtime::{Action, Controller, ObjectRef, Store};
use client::{Client, ListParams};
use crds::{
    Cluster, Endpoint, EndpointPort, Endpoints, EndpointsSpec, Instance, Location, ObjectMeta,
    OwnerReference, Phase, Service, API_VERSION,
};
use tokio_util::sync::CancellationToken;

use crate::{index_by_service, instance_owner, Error, RootConfig, ServiceKey, BY_SERVICE};

/// Whether `instance` takes new connections as far as its Instance says: its workload
/// runs, it is not being deleted, and its cluster has not marked it `Ready=False`
/// because its node is not Ready ([`crate::cluster`]'s readiness).
/// `process` Instances share their node's network: they reach service IPs but are not
/// behind them (nothing answers at their instance IP), so they never serve.
pub fn serving(instance: &Instance) -> bool {
    if instance.spec.template.runtime == crds::RuntimeKind::Process {
        return false;
    }
    // `Ready=False` while running: its cluster says its node is not Ready.
    instance.metadata.deletion_timestamp.is_none()
        && instance.status.as_ref().is_some_and(|s| {
            s.phase == Phase::Running && !crds::is_false(&s.conditions, crds::conditions::READY)
        })
}

/// The entry of `instance`, running in `cluster`, if it has an address: `ready` as the
/// caller judged it, `location` its cluster's.
pub fn endpoint(
    instance: &Instance,
    cluster: &str,
    ready: bool,
    location: Option<&Location>,
) -> Option<Endpoint> {
    let ip = instance.status.as_ref()?.instance_ip?;
    Some(Endpoint {
        instance: instance.metadata.name.clone(),
        ip,
        cluster: cluster.to_string(),
        node: instance.spec.node.clone(),
        ready,
        location: location.cloned(),
    })
}

/// Whether `instance` is a ready entry of its Service's Endpoints: [`serving`], with an
/// address and a cluster (what the Service's `status.readyEndpoints` counts).
pub fn ready_endpoint(instance: &Instance) -> bool {
    serving(instance)
        && instance.spec.cluster.is_some()
        && instance
            .status
            .as_ref()
            .is_some_and(|s| s.instance_ip.is_some())
}

/// Sort entries by Instance name, the order every Endpoints object keeps.
pub fn sort(endpoints: &mut [Endpoint]) {
    endpoints.sort_by(|a, b| a.instance.cmp(&b.instance));
}

/// The ports a Service's IPs answer on: its template's container ports, each
/// protocol once.
pub fn ports(svc: &Service) -> Vec<EndpointPort> {
    let mut ports: Vec<EndpointPort> = svc
        .spec
        .template
        .ports
        .iter()
        .map(|p| EndpointPort {
            port: p.container_port,
            protocol: p.protocol,
        })
        .collect();
    ports.sort_by_key(|p| (p.port, p.protocol == crds::Protocol::Udp));
    ports.dedup();
    ports
}

/// What the Endpoints of `svc` should hold, given its Instances and where each cluster
/// is. Entries are sorted by Instance name, so equal inputs give equal objects.
pub fn desired<'a>(
    svc: &Service,
    instances: impl IntoIterator<Item = &'a Instance>,
    location_of: impl Fn(&str) -> Option<Location>,
) -> EndpointsSpec {
    let mut endpoints: Vec<Endpoint> = instances
        .into_iter()
        .filter_map(|i| {
            let cluster = i.spec.cluster.as_deref()?;
            endpoint(i, cluster, serving(i), location_of(cluster).as_ref())
        })
        .collect();
    sort(&mut endpoints);
    EndpointsSpec {
        round_robin_ip: svc.status.as_ref().and_then(|s| s.service_ip),
        closest_ip: svc.spec.addressing.closest_ip,
        ports: ports(svc),
        endpoints,
    }
}

struct Ctx {
    client: Client,
    instances: Store<Instance>,
    clusters: Store<Cluster>,
    endpoints: Store<Endpoints>,
}

/// Run the endpoints controller until `shutdown`.
pub async fn run(client: Client, config: &RootConfig, shutdown: CancellationToken) {
    let mut controller = Controller::new(client.api::<Service>(None), ListParams::default())
        .name("endpoints")
        .concurrency(config.concurrency)
        // A burst of Instance changes costs a Service one write per 100 ms.
        .debounce(std::time::Duration::from_millis(100));
    let instances = controller.watches(
        client.api::<Instance>(None),
        ListParams::default(),
        instance_owner,
    );
    index_by_service(&instances);
    let endpoints = controller.watches(
        client.api::<Endpoints>(None),
        ListParams::default(),
        |e: &Endpoints| vec![ObjectRef::of(e)],
    );
    // A cluster's location is read at each reconcile; moving a cluster is rare and
    // shows at the Service's next change.
    let clusters = controller.watches(client.api::<Cluster>(None), ListParams::default(), |_| {
        Vec::new()
    });
    let ctx = Arc::new(Ctx {
        client,
        instances,
        clusters,
        endpoints,
    });
    controller
        .run_keyed(
            move |key, svc| reconcile(key, svc, ctx.clone()),
            shutdown.cancelled_owned(),
        )
        .await;
}

async fn reconcile(
    key: ObjectRef,
    svc: Option<Arc<Service>>,
    ctx: Arc<Ctx>,
) -> Result<Action, Error> {
    let ns = key.namespace.as_deref();
    let current = ctx.endpoints.get(&key);
    let api = ctx.client.api::<Endpoints>(ns);
    let Some(svc) = svc.filter(|s| s.metadata.deletion_timestamp.is_none()) else {
        if current.is_some() {
            match api.delete(&key.name).await {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => {}
            }
        }
        return Ok(Action::await_change());
    };
    let instances = ctx
        .instances
        .by_index(BY_SERVICE, &ServiceKey::new(ns, &svc.metadata.name).key());
    let spec = desired(&svc, instances.iter().map(|i| i.as_ref()), |cluster| {
        ctx.clusters
            .get(&ObjectRef::new(None, cluster))
            .and_then(|c| c.spec.location.clone())
    });
    let owner = OwnerReference {
        api_version: API_VERSION.into(),
        kind: "Service".into(),
        name: svc.metadata.name.clone(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    };
    write(&api, &key, current.as_deref(), spec, vec![owner]).await?;
    Ok(Action::await_change())
}

/// Create (with `owners`) or replace the Endpoints at `key` when `spec` differs from
/// `current`, the cached copy. The replace carries the cached version: a 409 is retried
/// from a fresher cache.
pub(crate) async fn write(
    api: &client::Api<Endpoints>,
    key: &ObjectRef,
    current: Option<&Endpoints>,
    spec: EndpointsSpec,
    owners: Vec<OwnerReference>,
) -> Result<(), Error> {
    match current {
        Some(c) if c.spec == spec => Ok(()),
        Some(c) => {
            let mut next = c.clone();
            next.spec = spec;
            api.replace(&next).await?;
            Ok(())
        }
        None => {
            let mut object = Endpoints::new(&key.name, spec);
            object.metadata = ObjectMeta {
                name: key.name.clone(),
                namespace: key.namespace.clone(),
                owner_references: owners,
                ..Default::default()
            };
            // A 409 (made by an earlier reconcile this cache does not show yet) is
            // retried from the cache that then shows it.
            api.create(&object).await?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::{
        Addressing, InstanceSpec, InstanceStatus, Protocol, ServicePort, ServiceSpec,
        ServiceStatus, Workload,
    };

    fn service(ports: &[(u16, Protocol)]) -> Service {
        let mut svc = Service::new(
            "web",
            ServiceSpec {
                replicas: 3,
                addressing: Addressing {
                    round_robin_ip: None,
                    closest_ip: Some("10.30.1.1".parse().unwrap()),
                },
                template: Workload {
                    ports: ports
                        .iter()
                        .map(|&(container_port, protocol)| ServicePort {
                            container_port,
                            host_port: None,
                            protocol,
                        })
                        .collect(),
                    ..Default::default()
                },
            },
        );
        svc.status = Some(ServiceStatus {
            service_ip: Some("10.30.0.5".parse().unwrap()),
            ..Default::default()
        });
        svc
    }

    fn instance(
        name: &str,
        cluster: Option<&str>,
        ip: Option<&str>,
        phase: Phase,
        deleting: bool,
    ) -> Instance {
        let mut i = Instance::new(
            name,
            InstanceSpec {
                service: "web".into(),
                cluster: cluster.map(String::from),
                node: cluster.map(|c| format!("{c}-n1")),
                ..Default::default()
            },
        );
        i.status = Some(InstanceStatus {
            phase,
            instance_ip: ip.map(|ip| ip.parse().unwrap()),
            ..Default::default()
        });
        if deleting {
            i.metadata.deletion_timestamp = Some(chrono::Utc::now());
        }
        i
    }

    #[test]
    fn ports_are_the_templates_each_once() {
        let svc = service(&[
            (80, Protocol::Tcp),
            (53, Protocol::Udp),
            (53, Protocol::Tcp),
            (80, Protocol::Tcp),
        ]);
        let got: Vec<_> = ports(&svc)
            .into_iter()
            .map(|p| (p.port, p.protocol))
            .collect();
        assert_eq!(
            got,
            [
                (53, Protocol::Tcp),
                (53, Protocol::Udp),
                (80, Protocol::Tcp)
            ]
        );
    }

    #[test]
    fn entries_are_instances_with_an_address_ready_when_running() {
        let svc = service(&[(80, Protocol::Tcp)]);
        let munich = Location {
            latitude: 48.1,
            longitude: 11.6,
            place: None,
        };
        // (instance, in the list, ready)
        let cases = [
            (
                instance(
                    "web-c",
                    Some("a"),
                    Some("10.128.0.4"),
                    Phase::Running,
                    false,
                ),
                true,
                true,
            ),
            (
                instance(
                    "web-a",
                    Some("b"),
                    Some("10.129.0.2"),
                    Phase::Starting,
                    false,
                ),
                true,
                false,
            ),
            (
                instance("web-b", Some("a"), Some("10.128.0.3"), Phase::Running, true),
                true,
                false,
            ),
            (
                instance("web-d", Some("a"), None, Phase::Scheduled, false),
                false,
                false,
            ),
            (
                instance("web-e", None, Some("10.128.0.9"), Phase::Running, false),
                false,
                false,
            ),
        ];
        let spec = desired(&svc, cases.iter().map(|c| &c.0), |cluster| {
            (cluster == "a").then(|| munich.clone())
        });
        assert_eq!(spec.round_robin_ip, Some("10.30.0.5".parse().unwrap()));
        assert_eq!(spec.closest_ip, Some("10.30.1.1".parse().unwrap()));
        let got: Vec<_> = spec
            .endpoints
            .iter()
            .map(|e| (e.instance.as_str(), e.ready, e.location.is_some()))
            .collect();
        // Sorted by name; the located cluster's entries carry its location.
        assert_eq!(
            got,
            [
                ("web-a", false, false),
                ("web-b", false, true),
                ("web-c", true, true)
            ]
        );
        for (i, listed, ready) in &cases {
            let entry = spec
                .endpoints
                .iter()
                .find(|e| e.instance == i.metadata.name);
            assert_eq!(entry.is_some(), *listed, "{}", i.metadata.name);
            assert_eq!(
                entry.is_some_and(|e| e.ready),
                *ready,
                "{}",
                i.metadata.name
            );
        }
    }
}
