//! Address allocation, one mechanism for four uses:
//!
//! | object | field | pool | tier |
//! |---|---|---|---|
//! | Cluster | `status.subnet` | a `/--cluster-prefix` block of `--cluster-cidr` | root |
//! | Service | `status.serviceIP` | an address of `--service-cidr`; `spec.addressing.roundRobinIP` honoured when free | root |
//! | Node | `status.subnet` | a `/--node-prefix` block of the cluster's subnet | cluster |
//!
//! An Instance's IP is not handed out here: its node gives it one of its own subnet
//! (`agent::addresses`), with its first report.
//!
//! Allocations are recorded in the objects themselves, so after a restart the table is
//! rebuilt from the API. Each allocator reconciles one object at a time and remembers
//! what it wrote until its cache shows it, so no address is handed out twice even when
//! the cache lags. Deleting an object returns its address to the pool.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use client::runtime::{Action, Controller, ObjectRef, Recorder, Store};
use client::{Client, ListParams};
use crds::{
    set_condition, Cluster, ConditionStatus, EventType, HasConditions, Node, Resource, Service,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::ipam::Cidr;
use crate::{Error, RootConfig};

/// An object that holds an address taken from a pool.
pub trait Addressed: Resource + HasConditions {
    /// The status field that holds the address.
    const FIELD: &'static str;
    /// The condition that reports the allocation.
    const CONDITION: &'static str;
    /// Whether an allocation is also recorded as an Event.
    const EVENT_ON_ASSIGN: bool = true;
    /// The address the object holds now, as its status field has it.
    fn address(&self) -> Option<String>;
    /// An address the user asked for.
    fn requested(&self) -> Option<Ipv4Addr> {
        None
    }
    /// A second address of the pool the object holds, which the user chose and the
    /// allocator only reserves (a Service's closest IP), and the condition that says
    /// whether it is the object's.
    fn reserved(&self) -> Option<(Ipv4Addr, &'static str)> {
        None
    }
}

/// The condition of a Service's closest IP: `True` once it is reserved for it, `False`
/// (`RequestedIPUnavailable`) when it is outside the service range or another Service
/// holds it; the Service's Endpoints carry the closest IP only while it is `True`.
pub const CLOSEST_IP_ASSIGNED: &str = "ClosestIPAssigned";

impl Addressed for Cluster {
    const FIELD: &'static str = "subnet";
    const CONDITION: &'static str = "SubnetAssigned";
    fn address(&self) -> Option<String> {
        self.status.as_ref()?.subnet.clone()
    }
}

impl Addressed for Node {
    const FIELD: &'static str = "subnet";
    const CONDITION: &'static str = "SubnetAssigned";
    fn address(&self) -> Option<String> {
        self.status.as_ref()?.subnet.clone()
    }
}

impl Addressed for Service {
    const FIELD: &'static str = "serviceIP";
    const CONDITION: &'static str = "ServiceIPAssigned";
    fn address(&self) -> Option<String> {
        Some(self.status.as_ref()?.service_ip?.to_string())
    }
    fn requested(&self) -> Option<Ipv4Addr> {
        self.spec.addressing.round_robin_ip
    }
    fn reserved(&self) -> Option<(Ipv4Addr, &'static str)> {
        Some((self.spec.addressing.closest_ip?, CLOSEST_IP_ASSIGNED))
    }
}

/// What an object draws from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pool {
    /// Subnets of `prefix` length inside `cidr`.
    Blocks {
        /// The range the blocks are cut from.
        cidr: Cidr,
        /// The prefix length of each block.
        prefix: u8,
    },
    /// Single addresses of `cidr`.
    Addresses(Cidr),
}

impl Pool {
    fn holds(&self, address: &str) -> bool {
        match self {
            Pool::Blocks { cidr, prefix } => address
                .parse::<Cidr>()
                .is_ok_and(|c| c.prefix == *prefix && cidr.contains(c.base)),
            Pool::Addresses(cidr) => address
                .parse::<Ipv4Addr>()
                .is_ok_and(|ip| cidr.contains(ip)),
        }
    }

    /// A free subnet (the lowest) or address (the next after `last`, the last one handed
    /// out in this pool, going round).
    fn free(&self, used: &HashMap<String, String>, last: Option<&str>) -> Option<String> {
        match self {
            Pool::Blocks { cidr, prefix } => {
                let used = used.keys().cloned().collect();
                cidr.first_free_block(*prefix, &used).map(|c| c.to_string())
            }
            Pool::Addresses(cidr) => {
                let used = used.keys().filter_map(|a| a.parse().ok()).collect();
                let last = last.and_then(|a| a.parse().ok());
                cidr.next_free_address(&used, last).map(|ip| ip.to_string())
            }
        }
    }
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pool::Blocks { cidr, prefix } => write!(f, "/{prefix} blocks of {cidr}"),
            Pool::Addresses(cidr) => write!(f, "{cidr}"),
        }
    }
}

/// The pool of an object (objects of one [`Addressed::scope`] share it), or `None`
/// while it is not known (e.g. the cluster has no subnet yet, for its Nodes).
type PoolOf<K> = Box<dyn Fn(&K) -> Option<Pool> + Send + Sync>;

struct Ctx<K> {
    client: Client,
    store: Store<K>,
    recorder: Recorder,
    pool_of: PoolOf<K>,
    /// Written, not yet in the cache: object → address.
    pending: Mutex<HashMap<ObjectRef, String>>,
    /// The last address handed out (since this process started).
    last: Mutex<Option<String>>,
}

/// Run one allocator over the objects of `controller`.
async fn run_allocator<K: Addressed>(
    controller: Controller<K>,
    client: Client,
    pool_of: PoolOf<K>,
    shutdown: CancellationToken,
) {
    let ctx = Arc::new(Ctx {
        store: controller.store(),
        recorder: Recorder::new(client.clone(), "subnet-allocator"),
        client,
        pool_of,
        pending: Mutex::default(),
        last: Mutex::default(),
    });
    controller
        .run(
            move |k| reconcile(k, ctx.clone()),
            shutdown.cancelled_owned(),
        )
        .await;
}

/// The controller of one allocator: one object at a time.
fn allocator<K: Addressed>(client: &Client, name: &str) -> Controller<K> {
    Controller::new(client.api::<K>(None), ListParams::default())
        .name(name)
        .concurrency(1)
}

/// The root's allocators: cluster subnets and service IPs.
pub async fn run(client: Client, config: &RootConfig, shutdown: CancellationToken) {
    let clusters = Pool::Blocks {
        cidr: config.cluster_cidr,
        prefix: config.cluster_prefix,
    };
    let services = Pool::Addresses(config.service_cidr);
    tokio::join!(
        run_allocator::<Cluster>(
            allocator(&client, "cluster-subnets"),
            client.clone(),
            Box::new(move |_| Some(clusters)),
            shutdown.clone()
        ),
        run_allocator::<Service>(
            allocator(&client, "service-ips"),
            client.clone(),
            Box::new(move |_| Some(services)),
            shutdown
        ),
    );
}

/// A cluster's allocator: a subnet per Node from the cluster's own subnet (its local
/// `Cluster` object named `cluster`).
pub async fn run_cluster(
    client: Client,
    cluster: String,
    node_prefix: u8,
    shutdown: CancellationToken,
) {
    let mut nodes = allocator::<Node>(&client, "node-subnets");
    let node_store = nodes.store();
    let clusters = nodes.watches(
        client.api::<Cluster>(None),
        ListParams::default(),
        move |_: &Cluster| {
            node_store
                .state()
                .iter()
                .map(|n| ObjectRef::of(n.as_ref()))
                .collect()
        },
    );
    let node_pool: PoolOf<Node> = Box::new(move |_| {
        let subnet: Cidr = clusters
            .get(&ObjectRef::new(None, &cluster))?
            .address()?
            .parse()
            .ok()?;
        Some(Pool::Blocks {
            cidr: subnet,
            prefix: node_prefix,
        })
    });
    run_allocator(nodes, client, node_pool, shutdown).await;
}

/// Everything of `k`'s status the allocator owns, as it applies it (server-side apply,
/// [`client::Api::apply_own_status`]): the address field (`address`; `None`: none),
/// and its conditions as `k` shows them with `condition` set (type, status, reason,
/// message) at `now`. `None` when that changes nothing: no write.
///
/// No version precondition, so another writer of the status (the node's agent, the
/// Service controller, the cluster's heartbeat) never makes this write fail.
fn owned_status<K: Addressed>(
    k: &K,
    address: Option<&str>,
    condition: (&str, ConditionStatus, &str, &str),
    now: chrono::DateTime<Utc>,
) -> Option<serde_json::Value> {
    let (kind, status, reason, message) = condition;
    let mut conditions = k.conditions().to_vec();
    let changed = set_condition(&mut conditions, kind, status, reason, message, now);
    if !changed && k.address().as_deref() == address {
        return None;
    }
    let reserved = k.reserved().map(|(_, c)| c);
    let mine: Vec<&crds::Condition> = conditions
        .iter()
        .filter(|c| c.type_ == K::CONDITION || Some(c.type_.as_str()) == reserved)
        .collect();
    Some(json!({K::FIELD: address, "conditions": mine}))
}

/// Apply `address` to `k` with its condition `Assigned` ([`owned_status`]).
async fn write_address<K: Addressed>(
    api: &client::Api<K>,
    k: &K,
    address: &str,
) -> client::Result<()> {
    let condition = (K::CONDITION, ConditionStatus::True, "Assigned", address);
    if let Some(status) = owned_status(k, Some(address), condition, Utc::now()) {
        api.apply_own_status(&k.metadata().name, &status).await?;
    }
    Ok(())
}

/// The address an allocation hands out.
#[derive(Debug, PartialEq)]
struct Allocation {
    address: String,
    /// Drawn from the pool's free addresses (not asked for, not written before): the
    /// next draw in this pool starts after it.
    drawn: bool,
}

/// Why an object gets no address.
#[derive(Debug, PartialEq)]
struct Refusal {
    /// `RequestedIPUnavailable` or `PoolExhausted`.
    reason: &'static str,
    message: String,
}

/// The address an object of `pool` gets: the one it `requested` if that is in the
/// pool and free; else the one this allocator `written` for it before (its cache does
/// not show that yet); else a free one, after `last`, the last one drawn in the pool.
/// `owners` maps the addresses of the pool's other objects (as cached, and as written
/// by this allocator) to the objects holding them.
fn allocate(
    pool: &Pool,
    requested: Option<Ipv4Addr>,
    written: Option<&str>,
    owners: &HashMap<String, String>,
    last: Option<&str>,
) -> Result<Allocation, Refusal> {
    let taken = |address: String, drawn| Ok(Allocation { address, drawn });
    let refuse = |reason, message| Err(Refusal { reason, message });
    match requested {
        Some(ip) if !pool.holds(&ip.to_string()) => refuse(
            REQUESTED_IP_UNAVAILABLE,
            format!("{ip} is outside the pool {pool}"),
        ),
        Some(ip) => match owners.get(&ip.to_string()) {
            Some(owner) => refuse(
                REQUESTED_IP_UNAVAILABLE,
                format!("{ip} is already the address of {owner}"),
            ),
            None => taken(ip.to_string(), false),
        },
        None => match written {
            Some(a) => taken(a.to_string(), false),
            None => match pool.free(owners, last) {
                Some(a) => taken(a, true),
                None => refuse(POOL_EXHAUSTED, format!("no free address left in {pool}")),
            },
        },
    }
}

/// Reason: the address an object asked for is outside its pool or taken.
const REQUESTED_IP_UNAVAILABLE: &str = "RequestedIPUnavailable";
/// Reason: every address of the pool is taken.
const POOL_EXHAUSTED: &str = "PoolExhausted";

async fn reconcile<K: Addressed>(k: Arc<K>, ctx: Arc<Ctx<K>>) -> Result<Action, Error> {
    let key = ObjectRef::of(k.as_ref());
    let pool = (ctx.pool_of)(&k);
    let current = k.address();
    let settled = |pool: &Pool| {
        current.as_deref().is_some_and(|a| pool.holds(a))
            && k.requested().is_none_or(|r| Some(r.to_string()) == current)
    };
    let Some(pool) = pool.filter(|_| k.metadata().deletion_timestamp.is_none()) else {
        // Being deleted, or its pool is not known yet: a change of either queues it again.
        ctx.pending.lock().expect("pending lock").remove(&key);
        return Ok(Action::await_change());
    };
    if settled(&pool) {
        ctx.pending.lock().expect("pending lock").remove(&key);
        // Its reserved address is looked at once its own is settled (one write each).
        check_reserved(&ctx, &k, &key, &pool, current.as_deref()).await?;
        return Ok(Action::await_change());
    }
    let outcome: Result<String, Refusal> = {
        let mut pending = ctx.pending.lock().expect("pending lock");
        let mut owners = owners(&ctx, &key, &mut pending);
        // Its own reserved address is not one to hand it as well.
        if let Some((ip, _)) = k.reserved() {
            owners.insert(ip.to_string(), format!("{key} (its closest IP)"));
        }
        let written = pending.get(&key).map(String::as_str);
        let mut last = ctx.last.lock().expect("last lock");
        let outcome = allocate(&pool, k.requested(), written, &owners, last.as_deref());
        if let Ok(Allocation { address, drawn }) = &outcome {
            if *drawn {
                *last = Some(address.clone());
            }
            pending.insert(key.clone(), address.clone());
        }
        outcome.map(|a| a.address)
    };
    let api = ctx.client.api::<K>(k.metadata().namespace.as_deref());
    match outcome {
        Ok(address) => {
            if let Err(e) = write_address(&api, &k, &address).await {
                ctx.pending.lock().expect("pending lock").remove(&key);
                return Err(e.into());
            }
            if K::EVENT_ON_ASSIGN {
                let message = format!("{} {address}", K::FIELD);
                ctx.recorder
                    .record(k.as_ref(), EventType::Normal, K::CONDITION, &message);
            }
            Ok(Action::await_change())
        }
        Err(refusal) => {
            set_own_condition(&ctx, &k, K::CONDITION, Err(refusal)).await?;
            check_reserved(&ctx, &k, &key, &pool, None).await?;
            // A released address frees the pool for it: look again soon.
            Ok(Action::requeue(Duration::from_secs(5)))
        }
    }
}

/// The addresses of the pool held by objects other than `key`: their allocated and
/// reserved addresses as cached, and what this allocator wrote and its cache does not
/// show yet (`pending`, from which what the cache shows is dropped).
fn owners<K: Addressed>(
    ctx: &Ctx<K>,
    key: &ObjectRef,
    pending: &mut HashMap<ObjectRef, String>,
) -> HashMap<String, String> {
    pending.retain(|k, a| {
        ctx.store
            .get(k)
            .is_some_and(|o| o.address().as_ref() != Some(a))
    });
    let mut owners = HashMap::new();
    for o in ctx.store.state() {
        let of = ObjectRef::of(o.as_ref());
        if of == *key {
            continue;
        }
        if let Some((ip, _)) = o.reserved() {
            owners.insert(ip.to_string(), format!("{of} (its closest IP)"));
        }
        if let Some(address) = o.address() {
            owners.insert(address, of.to_string());
        }
    }
    owners.extend(
        pending
            .iter()
            .filter(|(k, _)| *k != key)
            .map(|(k, a)| (a.clone(), k.to_string())),
    );
    owners
}

/// Check the address `k` reserves, if any, against the others of its pool and its own
/// `address`, and set its condition.
async fn check_reserved<K: Addressed>(
    ctx: &Ctx<K>,
    k: &K,
    key: &ObjectRef,
    pool: &Pool,
    address: Option<&str>,
) -> Result<(), Error> {
    let Some((ip, condition)) = k.reserved() else {
        return Ok(());
    };
    let verdict = {
        let mut pending = ctx.pending.lock().expect("pending lock");
        let mut owners = owners(ctx, key, &mut pending);
        if let Some(own) = address {
            owners.insert(own.to_string(), format!("{key} (its round-robin IP)"));
        }
        reserve(pool, ip, &owners)
    };
    set_own_condition(ctx, k, condition, verdict).await
}

/// Whether `ip`, which an object reserves, is in `pool` and held by no one in `owners`:
/// `Ok` with the message of its condition, or why not.
fn reserve(pool: &Pool, ip: Ipv4Addr, owners: &HashMap<String, String>) -> Result<String, Refusal> {
    if !pool.holds(&ip.to_string()) {
        return Err(Refusal {
            reason: REQUESTED_IP_UNAVAILABLE,
            message: format!("{ip} is outside the pool {pool}"),
        });
    }
    match owners.get(&ip.to_string()) {
        Some(owner) => Err(Refusal {
            reason: REQUESTED_IP_UNAVAILABLE,
            message: format!("{ip} is already the address of {owner}"),
        }),
        None => Ok(ip.to_string()),
    }
}

/// Set `k`'s `condition` to what `verdict` says (`True`/`Reserved` with its message, or
/// `False` with the refusal's reason), writing only when it changes; a refusal is also
/// a Warning Event.
async fn set_own_condition<K: Addressed>(
    ctx: &Ctx<K>,
    k: &K,
    condition: &str,
    verdict: Result<String, Refusal>,
) -> Result<(), Error> {
    let (status, reason, message) = match &verdict {
        Ok(message) => (ConditionStatus::True, "Reserved", message.as_str()),
        Err(Refusal { reason, message }) => (ConditionStatus::False, *reason, message.as_str()),
    };
    let address = k.address();
    let owned = owned_status(
        k,
        address.as_deref(),
        (condition, status, reason, message),
        Utc::now(),
    );
    let Some(owned) = owned else {
        return Ok(());
    };
    let api = ctx.client.api::<K>(k.metadata().namespace.as_deref());
    api.apply_own_status(&k.metadata().name, &owned).await?;
    if verdict.is_err() {
        ctx.recorder.record(k, EventType::Warning, reason, message);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations() {
        let addresses = Pool::Addresses("10.30.0.0/29".parse().unwrap());
        let blocks = Pool::Blocks {
            cidr: "10.128.0.0/9".parse().unwrap(),
            prefix: 16,
        };
        let tiny = Pool::Blocks {
            cidr: "10.0.0.0/31".parse().unwrap(),
            prefix: 32,
        };
        let ip = |s: &str| Some(s.parse::<Ipv4Addr>().unwrap());
        let owners = |held: &[&str]| -> HashMap<String, String> {
            held.iter()
                .map(|a| (a.to_string(), format!("default/{a}")))
                .collect()
        };
        let drawn = |a: &str| {
            Ok(Allocation {
                address: a.into(),
                drawn: true,
            })
        };
        let kept = |a: &str| {
            Ok(Allocation {
                address: a.into(),
                drawn: false,
            })
        };
        let refused = |reason, message: &str| {
            Err(Refusal {
                reason,
                message: message.into(),
            })
        };
        let all = owners(&[
            "10.30.0.2",
            "10.30.0.3",
            "10.30.0.4",
            "10.30.0.5",
            "10.30.0.6",
        ]);
        #[rustfmt::skip]
        let cases = [
            ("the first draw: the lowest host (not the gateway)",
             &addresses, None, None, owners(&[]), None, drawn("10.30.0.2")),
            ("round robin: after the last drawn, though it is free again",
             &addresses, None, None, owners(&[]), Some("10.30.0.2"), drawn("10.30.0.3")),
            ("taken addresses are skipped",
             &addresses, None, None, owners(&["10.30.0.3"]), Some("10.30.0.2"), drawn("10.30.0.4")),
            ("past the top: round from the bottom",
             &addresses, None, None, owners(&["10.30.0.2"]), Some("10.30.0.6"), drawn("10.30.0.3")),
            ("after a restart: above the highest in use",
             &addresses, None, None, owners(&["10.30.0.2", "10.30.0.4"]), None, drawn("10.30.0.5")),
            ("exhausted",
             &addresses, None, None, all.clone(), Some("10.30.0.4"),
             refused(POOL_EXHAUSTED, "no free address left in 10.30.0.0/29")),
            ("written before, not cached yet: the same again",
             &addresses, None, Some("10.30.0.5"), all, None, kept("10.30.0.5")),
            ("a requested address that is free",
             &addresses, ip("10.30.0.4"), None, owners(&["10.30.0.3"]), None, kept("10.30.0.4")),
            ("a request wins over what was written",
             &addresses, ip("10.30.0.4"), Some("10.30.0.5"), owners(&[]), None, kept("10.30.0.4")),
            ("a requested address that is taken",
             &addresses, ip("10.30.0.3"), None, owners(&["10.30.0.3"]), None,
             refused(REQUESTED_IP_UNAVAILABLE, "10.30.0.3 is already the address of default/10.30.0.3")),
            ("a requested address outside the pool",
             &addresses, ip("10.31.0.1"), None, owners(&[]), None,
             refused(REQUESTED_IP_UNAVAILABLE, "10.31.0.1 is outside the pool 10.30.0.0/29")),
            ("subnets: the lowest free block, whatever was drawn last",
             &blocks, None, None, owners(&["10.128.0.0/16"]), Some("10.130.0.0/16"), drawn("10.129.0.0/16")),
            ("subnets exhausted",
             &tiny, None, None, owners(&["10.0.0.0/32", "10.0.0.1/32"]), None,
             refused(POOL_EXHAUSTED, "no free address left in /32 blocks of 10.0.0.0/31")),
        ];
        for (name, pool, requested, written, owners, last, expected) in cases {
            assert_eq!(
                allocate(pool, requested, written, &owners, last),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn the_allocator_applies_only_what_it_owns() {
        let now = Utc::now();
        let block = "10.128.0.0/26";
        let assigned = ("SubnetAssigned", ConditionStatus::True, "Assigned", block);
        let mut node = Node::new("n1", Default::default());
        let first = owned_status(&node, Some(block), assigned, now).unwrap();
        assert_eq!(first["subnet"], block);
        assert_eq!(first["conditions"][0]["type"], "SubnetAssigned");
        // Once the status shows it, applying it again would change nothing: no write.
        let mut status = crds::NodeStatus {
            subnet: Some(block.into()),
            ..Default::default()
        };
        set_condition(
            &mut status.conditions,
            "SubnetAssigned",
            ConditionStatus::True,
            "Assigned",
            block,
            now,
        );
        // Conditions of other writers (the agent's Ready) are not sent: they merge by type.
        set_condition(
            &mut status.conditions,
            "Ready",
            ConditionStatus::True,
            "NodeReady",
            "",
            now,
        );
        node.status = Some(status);
        assert_eq!(owned_status(&node, Some(block), assigned, now), None);
        let moved = (
            "SubnetAssigned",
            ConditionStatus::True,
            "Assigned",
            "10.128.0.64/26",
        );
        let again = owned_status(&node, Some("10.128.0.64/26"), moved, now).unwrap();
        let types: Vec<&str> = again["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["SubnetAssigned"]);
        // A Service owns its closest IP's condition too, and keeps sending its address
        // when only a condition changes (else the apply would drop the address).
        let mut svc = Service::new("web", Default::default());
        svc.spec.addressing.closest_ip = Some("10.30.0.9".parse().unwrap());
        let mut status = crds::ServiceStatus {
            service_ip: Some("10.30.0.2".parse().unwrap()),
            ..Default::default()
        };
        set_condition(
            &mut status.conditions,
            "ServiceIPAssigned",
            ConditionStatus::True,
            "Assigned",
            "10.30.0.2",
            now,
        );
        svc.status = Some(status);
        let taken = (
            CLOSEST_IP_ASSIGNED,
            ConditionStatus::False,
            "RequestedIPUnavailable",
            "taken",
        );
        let owned = owned_status(&svc, svc.address().as_deref(), taken, now).unwrap();
        assert_eq!(owned["serviceIP"], "10.30.0.2");
        assert_eq!(owned["conditions"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn pools_hold_their_own_kind_of_address() {
        let addresses = Pool::Addresses("10.30.0.0/16".parse().unwrap());
        let blocks = Pool::Blocks {
            cidr: "10.128.0.0/9".parse().unwrap(),
            prefix: 16,
        };
        let cases = [
            (&addresses, "10.30.4.2", true),
            (&addresses, "10.31.0.2", false),
            (&addresses, "10.30.0.0/24", false),
            (&blocks, "10.129.0.0/16", true),
            (&blocks, "10.129.0.0/17", false),
            (&blocks, "10.0.0.0/16", false),
            (&blocks, "10.129.0.1", false),
        ];
        for (pool, address, holds) in cases {
            assert_eq!(pool.holds(address), holds, "{pool} holds {address}");
        }
    }
}
