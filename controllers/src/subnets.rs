//! The root subnet allocator: a subnet per Cluster (`status.subnet`, a block of
//! `--cluster-cidr`) and a service IP per Service (`status.serviceIP`, from
//! `--service-cidr`, honouring `spec.addressing.roundRobinIP` when it is free).
//!
//! Allocations are recorded in the objects themselves, so after a restart the table is
//! rebuilt from the API. Each allocator reconciles one object at a time and remembers
//! what it wrote until its cache shows it, so no address is handed out twice even when
//! the cache lags. Deleting an object returns its address to the pool.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use client::runtime::{Action, Controller, ObjectRef, Recorder, Store};
use client::{Api, Client, ListParams};
use crds::{set_condition, Cluster, ConditionStatus, EventType, Service};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::ipam::Cidr;
use crate::{Error, RootConfig};

pub async fn run(client: Client, config: &RootConfig, shutdown: CancellationToken) {
    tokio::join!(
        run_clusters(
            client.clone(),
            config.cluster_cidr,
            config.cluster_prefix,
            shutdown.clone()
        ),
        run_services(client, config.service_cidr, shutdown),
    );
}

/// Addresses written but not yet seen in the cache, per object.
type Pending<T> = Mutex<HashMap<ObjectRef, T>>;

struct ClusterCtx {
    client: Client,
    store: Store<Cluster>,
    pool: Cidr,
    prefix: u8,
    pending: Pending<String>,
    recorder: Recorder,
}

async fn run_clusters(client: Client, pool: Cidr, prefix: u8, shutdown: CancellationToken) {
    let controller = Controller::new(client.api::<Cluster>(None), ListParams::default())
        .name("cluster-subnets")
        .concurrency(1);
    let ctx = Arc::new(ClusterCtx {
        store: controller.store(),
        recorder: Recorder::new(client.clone(), "subnet-allocator"),
        client,
        pool,
        prefix,
        pending: Mutex::default(),
    });
    controller
        .run(
            move |c| reconcile_cluster(c, ctx.clone()),
            shutdown.cancelled_owned(),
        )
        .await;
}

async fn reconcile_cluster(cluster: Arc<Cluster>, ctx: Arc<ClusterCtx>) -> Result<Action, Error> {
    let key = ObjectRef::of(cluster.as_ref());
    if cluster.status.as_ref().is_some_and(|s| s.subnet.is_some())
        || cluster.metadata.deletion_timestamp.is_some()
    {
        ctx.pending.lock().expect("pending lock").remove(&key);
        return Ok(Action::await_change());
    }
    let chosen = {
        let mut pending = ctx.pending.lock().expect("pending lock");
        if let Some(already) = pending.get(&key) {
            Some(already.clone()) // written, cache not caught up yet
        } else {
            pending.retain(|k, _| {
                ctx.store
                    .get(k)
                    .is_some_and(|c| c.status.as_ref().is_none_or(|s| s.subnet.is_none()))
            });
            let mut used: HashSet<String> = ctx
                .store
                .state()
                .iter()
                .filter_map(|c| c.status.as_ref()?.subnet.clone())
                .collect();
            used.extend(pending.values().cloned());
            let chosen = ctx
                .pool
                .first_free_block(ctx.prefix, &used)
                .map(|c| c.to_string());
            if let Some(c) = &chosen {
                pending.insert(key.clone(), c.clone());
            }
            chosen
        }
    };
    let api: Api<Cluster> = ctx.client.api(None);
    let mut conditions = cluster.status.clone().unwrap_or_default().conditions;
    let now = Utc::now();
    match chosen {
        Some(subnet) => {
            set_condition(
                &mut conditions,
                "SubnetAssigned",
                ConditionStatus::True,
                "Assigned",
                &subnet,
                now,
            );
            let patch = json!({
                "metadata": {"resourceVersion": cluster.metadata.resource_version},
                "status": {"subnet": subnet, "conditions": conditions},
            });
            if let Err(e) = api.patch_status(&cluster.metadata.name, &patch).await {
                ctx.pending.lock().expect("pending lock").remove(&key);
                return Err(e.into());
            }
            ctx.recorder
                .record(
                    cluster.as_ref(),
                    EventType::Normal,
                    "SubnetAssigned",
                    &format!("assigned subnet {subnet}"),
                )
                .await;
        }
        None => {
            let message = format!("no free /{} left in {}", ctx.prefix, ctx.pool);
            if set_condition(
                &mut conditions,
                "SubnetAssigned",
                ConditionStatus::False,
                "PoolExhausted",
                &message,
                now,
            ) {
                api.patch_status(
                    &cluster.metadata.name,
                    &json!({"status": {"conditions": conditions}}),
                )
                .await?;
                ctx.recorder
                    .record(
                        cluster.as_ref(),
                        EventType::Warning,
                        "PoolExhausted",
                        &message,
                    )
                    .await;
            }
            return Ok(Action::requeue(std::time::Duration::from_secs(30)));
        }
    }
    Ok(Action::await_change())
}

struct ServiceCtx {
    client: Client,
    store: Store<Service>,
    pool: Cidr,
    pending: Pending<Ipv4Addr>,
    recorder: Recorder,
}

async fn run_services(client: Client, pool: Cidr, shutdown: CancellationToken) {
    let controller = Controller::new(client.api::<Service>(None), ListParams::default())
        .name("service-ips")
        .concurrency(1);
    let ctx = Arc::new(ServiceCtx {
        store: controller.store(),
        recorder: Recorder::new(client.clone(), "subnet-allocator"),
        client,
        pool,
        pending: Mutex::default(),
    });
    controller
        .run(
            move |s| reconcile_service(s, ctx.clone()),
            shutdown.cancelled_owned(),
        )
        .await;
}

async fn reconcile_service(svc: Arc<Service>, ctx: Arc<ServiceCtx>) -> Result<Action, Error> {
    let key = ObjectRef::of(svc.as_ref());
    let current = svc.status.as_ref().and_then(|s| s.service_ip);
    let requested = svc.spec.addressing.round_robin_ip;
    if svc.metadata.deletion_timestamp.is_some()
        || (current.is_some() && (requested.is_none() || requested == current))
    {
        ctx.pending.lock().expect("pending lock").remove(&key);
        return Ok(Action::await_change());
    }
    let outcome: Result<Ipv4Addr, (&str, String)> = {
        let mut pending = ctx.pending.lock().expect("pending lock");
        pending.retain(|k, ip| {
            ctx.store
                .get(k)
                .is_some_and(|s| s.status.as_ref().and_then(|s| s.service_ip) != Some(*ip))
        });
        let mut owners: HashMap<Ipv4Addr, String> = ctx
            .store
            .state()
            .iter()
            .filter(|s| ObjectRef::of(s.as_ref()) != key)
            .filter_map(|s| {
                Some((
                    s.status.as_ref()?.service_ip?,
                    ObjectRef::of(s.as_ref()).to_string(),
                ))
            })
            .collect();
        owners.extend(
            pending
                .iter()
                .filter(|(k, _)| **k != key)
                .map(|(k, ip)| (*ip, k.to_string())),
        );
        let used: HashSet<Ipv4Addr> = owners.keys().copied().collect();
        let outcome = match requested {
            Some(ip) if !ctx.pool.contains(ip) => Err((
                "RequestedIPUnavailable",
                format!("{ip} is outside the service pool {}", ctx.pool),
            )),
            Some(ip) => match owners.get(&ip) {
                Some(owner) => Err((
                    "RequestedIPUnavailable",
                    format!("{ip} is already the service IP of {owner}"),
                )),
                None => Ok(ip),
            },
            None => match pending.get(&key) {
                Some(ip) => Ok(*ip),
                None => ctx.pool.first_free_address(&used).ok_or((
                    "PoolExhausted",
                    format!("no free address left in {}", ctx.pool),
                )),
            },
        };
        if let Ok(ip) = outcome {
            pending.insert(key.clone(), ip);
        }
        outcome
    };
    let api: Api<Service> = ctx.client.api(svc.metadata.namespace.as_deref());
    let mut conditions = svc.status.clone().unwrap_or_default().conditions;
    let now = Utc::now();
    match outcome {
        Ok(ip) => {
            set_condition(
                &mut conditions,
                "ServiceIPAssigned",
                ConditionStatus::True,
                "Assigned",
                &ip.to_string(),
                now,
            );
            let patch = json!({
                "metadata": {"resourceVersion": svc.metadata.resource_version},
                "status": {"serviceIP": ip, "conditions": conditions},
            });
            if let Err(e) = api.patch_status(&svc.metadata.name, &patch).await {
                ctx.pending.lock().expect("pending lock").remove(&key);
                return Err(e.into());
            }
            ctx.recorder
                .record(
                    svc.as_ref(),
                    EventType::Normal,
                    "ServiceIPAssigned",
                    &format!("service IP {ip}"),
                )
                .await;
            Ok(Action::await_change())
        }
        Err((reason, message)) => {
            if set_condition(
                &mut conditions,
                "ServiceIPAssigned",
                ConditionStatus::False,
                reason,
                &message,
                now,
            ) {
                let patch = json!({
                    "metadata": {"resourceVersion": svc.metadata.resource_version},
                    "status": {"conditions": conditions},
                });
                api.patch_status(&svc.metadata.name, &patch).await?;
                ctx.recorder
                    .record(svc.as_ref(), EventType::Warning, reason, &message)
                    .await;
            }
            Ok(Action::requeue(std::time::Duration::from_secs(30)))
        }
    }
}
