//! The controllers of the root and cluster tiers, each an independent loop on the reconcile runtime that
//! meets the others only through objects in the API:
//!
//! - [`service`]: keeps `spec.replicas` Instances per Service, rolls template changes
//!   out one at a time, reports readiness;
//! - [`placement`]: assigns each Instance a cluster (or, in a cluster, a node), or says
//!   precisely why it cannot, and re-places the Instances of a target that stays
//!   NotReady past a grace period;
//! - [`subnets`]: a subnet per Cluster and a service IP per Service, never one twice;
//! - [`gc`]: deletes Instances whose owner is gone and implements foreground deletion;
//! - [`lifecycle`]: marks Clusters (and Nodes) NotReady when their heartbeat lapses.
//!
//! [`cluster`] runs the cluster tier: cluster sync, the cluster scheduler (placement over
//! Nodes) and node lifecycle.

pub mod bind;
pub mod cluster;
pub mod gc;
pub use crds::ipam;
pub mod lifecycle;
pub mod placement;
pub mod service;
pub mod subnets;

use std::time::Duration;

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
    /// How long a cluster may be NotReady before its Instances are placed elsewhere.
    pub cluster_grace: Duration,
    /// A cluster whose last heartbeat is older than this becomes NotReady.
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

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API request failed: {0}")]
    Api(#[from] ClientError),
}

impl client::runtime::ReconcileError for Error {
    fn is_conflict(&self) -> bool {
        matches!(self, Error::Api(e) if e.is_conflict())
    }
}

/// Run every root controller against the API at `client` until `shutdown` is cancelled.
pub async fn run_root(client: Client, config: RootConfig, shutdown: CancellationToken) {
    tracing::info!(?config, "starting root controllers");
    tokio::join!(
        service::run(client.clone(), &config, shutdown.clone()),
        placement::run::<crds::Cluster>(
            client.clone(),
            config.cluster_grace,
            config.concurrency,
            shutdown.clone()
        ),
        subnets::run(client.clone(), &config, shutdown.clone()),
        lifecycle::run::<crds::Cluster>(
            client.clone(),
            config.cluster_heartbeat_timeout,
            shutdown.clone()
        ),
        gc::run(client, &config, shutdown),
    );
}

/// A stable 64-bit FNV-1a hash (the same in every build, unlike `DefaultHasher`).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether `owned` names `owner_uid` among its owners.
/// Name of the Instance-cache index by owning Service ([`service_key`]).
pub const BY_SERVICE: client::runtime::IndexName = client::runtime::IndexName::new("service");

/// The [`BY_SERVICE`] key of Instances of Service `service` in `namespace`.
pub fn service_key(namespace: Option<&str>, service: &str) -> String {
    format!("{}/{service}", namespace.unwrap_or_default())
}

/// Index an Instance cache by owning Service (the name in `spec.service`).
pub fn index_by_service(instances: &client::runtime::Store<crds::Instance>) {
    instances.add_index(BY_SERVICE, |i| {
        Some(service_key(
            i.metadata.namespace.as_deref(),
            &i.spec.service,
        ))
    });
}

pub fn owned_by(meta: &crds::ObjectMeta, owner_uid: &str) -> bool {
    meta.owner_references.iter().any(|o| o.uid == owner_uid)
}

/// How long a target (cluster or node) has been unusable: `None` when its `Ready`
/// condition is `True`; `Duration::MAX` when it does not exist.
pub fn not_ready_for(exists: bool, conditions: Option<&[crds::Condition]>) -> Option<Duration> {
    if !exists {
        return Some(Duration::MAX);
    }
    match conditions.and_then(|c| crds::find_condition(c, "Ready")) {
        Some(c) if c.status == crds::ConditionStatus::True => None,
        Some(c) => {
            let since = c.last_transition_time.unwrap_or_else(chrono::Utc::now);
            Some((chrono::Utc::now() - since).to_std().unwrap_or_default())
        }
        None => Some(Duration::ZERO),
    }
}
