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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
        closest_ip: closest_ip(svc),
        ports: ports(svc),
        endpoints,
    }
}

/// The Service's closest IP, once the allocator has reserved it for it (its
/// `ClosestIPAssigned` condition is `True` for this address): an address another
/// Service holds is never routed twice.
fn closest_ip(svc: &Service) -> Option<std::net::Ipv4Addr> {
    let ip = svc.spec.addressing.closest_ip?;
    let conditions = crds::HasConditions::conditions(svc);
    let reserved = crds::find_condition(conditions, crate::subnets::CLOSEST_IP_ASSIGNED)
        .is_some_and(|c| c.status == crds::ConditionStatus::True && c.message == ip.to_string());
    reserved.then_some(ip)
}

struct Ctx {
    client: Client,
    instances: Store<Instance>,
    clusters: Store<Cluster>,
    endpoints: Store<Endpoints>,
    pacer: Pacer,
}

/// How often, at most, an `Endpoints` object is written while its Instances change in
/// a burst (a change after a quiet period is written at once; see [`pace`]), by the
/// root and by each cluster's copy. An `Endpoints` object holds every Instance of its
/// Service: at 1,000 replicas it is some 200 KB that each write parses, checks, stores
/// and sends to every cluster, so a 10,000-Instance burst with a write per 100 ms
/// kept the root's store busy with them (Kubernetes' `EndpointSlice` controller batches
/// the same way, `--endpointslice-updates-batch-period`).
pub const BATCH: std::time::Duration = std::time::Duration::from_secs(1);

/// Run the endpoints controller until `shutdown`.
pub async fn run(client: Client, config: &RootConfig, shutdown: CancellationToken) {
    let mut controller = Controller::new(client.api::<Service>(None), ListParams::default())
        .name("endpoints")
        .concurrency(config.concurrency);
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
        pacer: Pacer::default(),
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
    if let Some(later) = ctx.pacer.hold(&key, current.as_deref()) {
        return Ok(later);
    }
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
    write(
        &api,
        &key,
        current.as_deref(),
        spec,
        vec![owner],
        &ctx.pacer,
    )
    .await
}

/// Endpoints entries per second of [`pace`]: an object of 1,000 entries is written
/// at most every 10 s while its Instances change.
const ENTRIES_PER_SECOND_OF_PACE: usize = 100;
/// The longest [`pace`].
pub const MAX_PACE: Duration = Duration::from_secs(10);

/// The least time between two writes of one `Endpoints` object of `entries` entries
/// while it keeps changing: [`BATCH`] for up to 100 entries, a second more for each 100
/// more, at most [`MAX_PACE`]. Each write of such an object costs in proportion to
/// its size (at the root and at every cluster that copies it), so a Service with
/// thousands of Instances in a burst cost quadratically many bytes without it; a
/// change after a quiet period is still written at once.
pub fn pace(entries: usize) -> Duration {
    let seconds = (entries / ENTRIES_PER_SECOND_OF_PACE).max(1);
    (BATCH * u32::try_from(seconds).unwrap_or(u32::MAX)).min(MAX_PACE)
}

/// When each `Endpoints` object was last written by this controller (see [`pace`]).
///
/// The pace counts from the last *write*, not from the last reconcile: every write
/// comes back as a watch event (and the root's copy of a change comes back to a
/// cluster a moment later), and a window that such an echo opened would hold the next
/// real change back for up to [`BATCH`] (a debounce did, measured by `oakbench
/// --scenario endpoints`). While a write is recent, a reconcile stops at
/// [`Pacer::hold`] before it computes anything, so a burst of changes costs one
/// computation and one write per pace.
#[derive(Default)]
pub(crate) struct Pacer {
    written: Mutex<HashMap<ObjectRef, Instant>>,
}

impl Pacer {
    /// When `key`, whose cached object is `current` (none: not in the cache yet, as
    /// right after its create), was written too recently for its size: the requeue
    /// that comes back once its pace allows a write.
    pub(crate) fn hold(&self, key: &ObjectRef, current: Option<&Endpoints>) -> Option<Action> {
        let entries = current.map_or(0, |c| c.spec.endpoints.len());
        self.wait(key, entries).map(Action::requeue)
    }

    /// How long a write of `key` with `entries` entries must still wait, if at all.
    fn wait(&self, key: &ObjectRef, entries: usize) -> Option<Duration> {
        let written = self.written.lock().expect("pacer lock");
        let since = written.get(key)?.elapsed();
        pace(entries).checked_sub(since).filter(|d| !d.is_zero())
    }

    fn wrote(&self, key: &ObjectRef) {
        let mut written = self.written.lock().expect("pacer lock");
        // Forget what is past any pace, once the map has grown.
        if written.len() > 1024 {
            written.retain(|_, t| t.elapsed() < MAX_PACE);
        }
        written.insert(key.clone(), Instant::now());
    }
}

/// Create (with `owners`) or replace the Endpoints at `key` when `spec` differs from
/// `current`, the cached copy, as `pacer` allows (else: when to try again). The replace carries the cached version: a 409 is retried
/// from a fresher cache.
pub(crate) async fn write(
    api: &client::Api<Endpoints>,
    key: &ObjectRef,
    current: Option<&Endpoints>,
    spec: EndpointsSpec,
    owners: Vec<OwnerReference>,
    pacer: &Pacer,
) -> Result<Action, Error> {
    match current {
        Some(c) if c.spec == spec => Ok(Action::await_change()),
        Some(c) => {
            if let Some(wait) = pacer.wait(key, spec.endpoints.len()) {
                return Ok(Action::requeue(wait));
            }
            let mut next = c.clone();
            next.spec = spec;
            api.replace(&next).await?;
            pacer.wrote(key);
            Ok(Action::await_change())
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
            pacer.wrote(key);
            Ok(Action::await_change())
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

    #[test]
    fn big_endpoints_are_written_less_often() {
        // entries → least time between two writes while they keep changing
        for (entries, secs) in [(0, 1), (1, 1), (199, 1), (200, 2), (1000, 10), (50_000, 10)] {
            assert_eq!(pace(entries), Duration::from_secs(secs), "{entries}");
        }
        let pacer = Pacer::default();
        let key = ObjectRef::new(Some("default"), "web");
        assert_eq!(pacer.wait(&key, 1000), None, "never written: at once");
        pacer.wrote(&key);
        let wait = pacer.wait(&key, 1000).expect("just written");
        assert!(
            wait > Duration::from_secs(9) && wait <= MAX_PACE,
            "{wait:?}"
        );
        let other = ObjectRef::new(Some("default"), "db");
        assert_eq!(pacer.wait(&other, 1000), None, "per object");
    }

    #[test]
    fn a_reconcile_is_held_only_after_a_recent_write() {
        let pacer = Pacer::default();
        let key = ObjectRef::new(Some("default"), "web");
        let object = Endpoints::new("web", EndpointsSpec::default());
        // Never written: go on (a lone change is written at once).
        assert_eq!(pacer.hold(&key, None), None);
        assert_eq!(pacer.hold(&key, Some(&object)), None);
        pacer.wrote(&key);
        // Just written: held (requeued for what is left of the pace, as `wait` says),
        // also while the cache does not show the create yet…
        assert!(pacer.hold(&key, Some(&object)).is_some());
        assert!(pacer.hold(&key, None).is_some());
        // … and only that object.
        let other = ObjectRef::new(Some("default"), "db");
        assert_eq!(pacer.hold(&other, Some(&object)), None);
    }

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
        let mut status = ServiceStatus {
            service_ip: Some("10.30.0.5".parse().unwrap()),
            ..Default::default()
        };
        crds::set_condition(
            &mut status.conditions,
            crate::subnets::CLOSEST_IP_ASSIGNED,
            crds::ConditionStatus::True,
            "Reserved",
            "10.30.1.1",
            chrono::Utc::now(),
        );
        svc.status = Some(status);
        svc
    }

    #[test]
    fn a_closest_ip_is_routed_only_once_reserved_for_the_service() {
        let reserved = service(&[]);
        assert_eq!(closest_ip(&reserved), Some("10.30.1.1".parse().unwrap()));
        let mut refused = reserved.clone();
        let conditions = &mut refused.status.as_mut().unwrap().conditions;
        crds::set_condition(
            conditions,
            crate::subnets::CLOSEST_IP_ASSIGNED,
            crds::ConditionStatus::False,
            "RequestedIPUnavailable",
            "10.30.1.1 is already the address of default/db",
            chrono::Utc::now(),
        );
        assert_eq!(closest_ip(&refused), None);
        // Reserved for the address it had before, not the one it asks for now.
        let mut moved = reserved.clone();
        moved.spec.addressing.closest_ip = Some("10.30.1.2".parse().unwrap());
        assert_eq!(closest_ip(&moved), None);
        let mut unchecked = reserved;
        unchecked.status.as_mut().unwrap().conditions.clear();
        assert_eq!(closest_ip(&unchecked), None);
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
