//! The controllers of the root and cluster tiers, each an independent loop on the reconcile runtime that
//! meets the others only through objects in the API. Each reconcile reads its caches,
//! asks a pure function what to do (tested by tables beside it) and writes the answer.
//!
//! Root tier ([`run_root`]):
//!
//! - [`service`]: keeps `spec.replicas` Instances per Service, rolls template changes
//!   out one at a time, reports readiness;
//! - [`placement`]: assigns each Instance a cluster (or, in a cluster, a node), or says
//!   precisely why it cannot, and re-places the Instances of a target that stays
//!   `NotReady` past a grace period;
//! - [`bind`]: the binder both placement tiers share: completes the candidates with
//!   what they cannot report yet, asks [`scheduler`] and writes the binding;
//! - [`subnets`]: the address allocators: a subnet per Cluster and a service IP per
//!   Service at the root, a subnet per Node and an IP per Instance in a cluster, never
//!   one twice;
//! - [`endpoints`]: keeps one `Endpoints` object per Service: its service IPs, ports
//!   and the Instances that have an address (each node's service rules);
//! - [`gc`]: deletes Instances whose owner is gone and implements foreground deletion;
//! - [`lifecycle`]: marks Clusters (and Nodes) `NotReady` when their heartbeat lapses.
//!
//! Cluster tier ([`cluster::run_cluster`]): [`cluster`] reports the cluster to the root,
//! syncs Instances between the root and the cluster and hands back those no node has
//! room for; beside it run [`placement`] over Nodes (the cluster scheduler),
//! [`lifecycle`] over Nodes and the node-subnet and Instance-IP allocators of
//! [`subnets`].
//!
//! [`leader`] runs either tier's controllers only in the process that holds a leader
//! `Lease` (`crds::LEADER_LEASES`), as kube-controller-manager's `--leader-elect`, for
//! several processes sharing one store.
//!
//! [`ipam`] (the address arithmetic) is re-exported from `crds`.

pub mod bind;
pub mod cluster;
pub mod endpoints;
pub mod gc;
pub use crds::ipam;
pub mod leader;
pub mod lifecycle;
pub mod placement;
pub mod service;
pub mod subnets;

use std::time::Duration;

use client::runtime::ObjectRef;
use client::{Client, ClientError};
use tokio_util::sync::CancellationToken;

/// Settings of the root controllers.
#[derive(Debug, Clone)]
pub struct RootConfig {
    /// Pool of cluster subnets.
    pub cluster_cidr: ipam::Cidr,
    /// Prefix length of one cluster's subnet.
    pub cluster_prefix: u8,
    /// Pool of service IPs.
    pub service_cidr: ipam::Cidr,
    /// How long a cluster may be `NotReady` before its Instances are placed elsewhere.
    pub cluster_grace: Duration,
    /// A cluster whose last heartbeat is older than this becomes `NotReady`.
    pub cluster_heartbeat_timeout: Duration,
    /// Reconciles running at once per controller.
    pub concurrency: usize,
}

impl Default for RootConfig {
    fn default() -> Self {
        RootConfig {
            cluster_cidr: "10.128.0.0/9".parse().expect("valid CIDR"),
            cluster_prefix: 16,
            service_cidr: "10.30.0.0/16".parse().expect("valid CIDR"),
            cluster_grace: Duration::from_secs(60),
            cluster_heartbeat_timeout: Duration::from_secs(20),
            concurrency: 8,
        }
    }
}

/// Why a reconcile failed; the reconcile runtime retries it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the API failed (a 409 is retried at once from a fresh cache).
    #[error("API request failed: {0}")]
    Api(#[from] ClientError),
}

impl client::runtime::ReconcileError for Error {
    fn is_conflict(&self) -> bool {
        matches!(self, Error::Api(e) if e.is_conflict())
    }
}

/// The field managers the controllers write under (their User-Agent, see
/// `client::Client::as_manager`): `metadata.managedFields` names which controller
/// wrote which part of an object.
pub mod managers {
    /// The service controller (Instances of a Service, its status).
    pub const SERVICE: &str = "oakestra-service";
    /// Root placement and the cluster scheduler (bindings, placement conditions).
    pub const SCHEDULER: &str = "oakestra-scheduler";
    /// Subnets and addresses.
    pub const IPAM: &str = "oakestra-ipam";
    /// Cluster and node lifecycle (readiness lapse, eviction).
    pub const LIFECYCLE: &str = "oakestra-lifecycle";
    /// `Endpoints` at the root and in each cluster's copy.
    pub const ENDPOINTS: &str = "oakestra-endpoints";
    /// Owner-reference garbage collection.
    pub const GC: &str = "oakestra-gc";
    /// A cluster's reports, Instance sync and hand-back towards the root.
    pub const CLUSTER: &str = "oakestra-cluster";
    /// A cluster's copies of `ConfigMap`s and Secrets.
    pub const CONFIG: &str = "oakestra-config";
    /// A cluster's instance readiness.
    pub const READINESS: &str = "oakestra-readiness";
}

/// Run every root controller against the API at `client` until `shutdown` is cancelled.
pub async fn run_root(client: Client, config: RootConfig, shutdown: CancellationToken) {
    tracing::info!(?config, "starting root controllers");
    tokio::join!(
        service::run(
            client.as_manager(managers::SERVICE),
            &config,
            shutdown.clone()
        ),
        placement::run::<crds::Cluster>(
            client.as_manager(managers::SCHEDULER),
            config.cluster_grace,
            config.concurrency,
            shutdown.clone()
        ),
        subnets::run(client.as_manager(managers::IPAM), &config, shutdown.clone()),
        lifecycle::run::<crds::Cluster>(
            client.as_manager(managers::LIFECYCLE),
            config.cluster_heartbeat_timeout,
            shutdown.clone()
        ),
        endpoints::run(
            client.as_manager(managers::ENDPOINTS),
            &config,
            shutdown.clone()
        ),
        gc::run(client.as_manager(managers::GC), &config, shutdown),
    );
}

/// A stable 64-bit FNV-1a hash (the same in every build, unlike `DefaultHasher`).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Name of the Instance-cache index by owning Service ([`ServiceKey::key`]).
pub const BY_SERVICE: client::runtime::IndexName = client::runtime::IndexName::new("service");

/// An Instance's Service, as the Instance-cache indexes file it: the one place the keys
/// of those indexes are made. Borrowed from the Instance (or the Service); a key is
/// built only when asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceKey<'a> {
    namespace: Option<&'a str>,
    service: &'a str,
}

impl<'a> ServiceKey<'a> {
    /// The Service named `service` in `namespace`.
    pub fn new(namespace: Option<&'a str>, service: &'a str) -> Self {
        ServiceKey { namespace, service }
    }

    /// The Service `instance` belongs to (`spec.service`, in the Instance's namespace).
    pub fn of(instance: &'a crds::Instance) -> Self {
        ServiceKey::new(
            instance.metadata.namespace.as_deref(),
            &instance.spec.service,
        )
    }

    /// The [`BY_SERVICE`] key: `namespace/service`.
    pub fn key(self) -> String {
        format!("{}/{}", self.namespace.unwrap_or_default(), self.service)
    }

    /// The key of the Service's Instances on `target` (a cluster or node name); a name
    /// cannot hold the separator, so no two pairs share a key.
    pub fn on(self, target: &str) -> String {
        format!(
            "{}/{}\0{target}",
            self.namespace.unwrap_or_default(),
            self.service
        )
    }

    /// The Service as an object key, for a mapper that queues it.
    pub fn object_ref(self) -> ObjectRef {
        ObjectRef::new(self.namespace, self.service)
    }
}

/// Index an Instance cache by owning Service (the name in `spec.service`).
pub fn index_by_service(instances: &client::runtime::Store<crds::Instance>) {
    instances.add_index(BY_SERVICE, |i| Some(ServiceKey::of(i).key()));
}

/// Name of the Instance-cache index by node (`spec.node`).
pub const BY_NODE: client::runtime::IndexName = client::runtime::IndexName::new("node");

/// Index an Instance cache by the node it is bound to, and return what a mapper of
/// Node changes needs: the Instances bound to a node, read through that index.
pub fn index_by_node(
    instances: &client::runtime::Store<crds::Instance>,
) -> impl Fn(&str) -> Vec<std::sync::Arc<crds::Instance>> + Send + Sync + 'static {
    instances.add_index(BY_NODE, |i| i.spec.node.clone());
    let instances = instances.clone();
    move |node| instances.by_index(BY_NODE, node)
}

/// The mapper from an Instance to the Service it belongs to, for controllers of
/// Services that an Instance change queues.
pub fn instance_owner(instance: &crds::Instance) -> Vec<ObjectRef> {
    vec![ServiceKey::of(instance).object_ref()]
}

/// Whether `meta` names `owner_uid` among its owners.
pub fn owned_by(meta: &crds::ObjectMeta, owner_uid: &str) -> bool {
    meta.owner_references.iter().any(|o| o.uid == owner_uid)
}

/// How long a target (cluster or node) has been unusable: `None` when its `Ready`
/// condition is `True`; `Duration::MAX` when it does not exist.
pub fn not_ready_for(exists: bool, conditions: Option<&[crds::Condition]>) -> Option<Duration> {
    if !exists {
        return Some(Duration::MAX);
    }
    match conditions.and_then(|c| crds::find_condition(c, crds::conditions::READY)) {
        Some(c) if c.status == crds::ConditionStatus::True => None,
        Some(c) => {
            let since = c.last_transition_time.unwrap_or_else(chrono::Utc::now);
            Some((chrono::Utc::now() - since).to_std().unwrap_or_default())
        }
        None => Some(Duration::ZERO),
    }
}
