//! Binding Instances to a target — a cluster (root placement) or a node (cluster
//! scheduler) — with one piece of logic for both tiers.
//!
//! The caller supplies the candidates as they report themselves; the binder adds what
//! they cannot know yet: the requests of Instances bound to them but not yet reflected
//! in their allocatable ("in flight"), including this binder's own recent bindings
//! until its cache shows them, how many replicas of the same Service each already
//! has (for spreading) and, for nodes, the host ports their Instances publish. Decisions are serialized, so a burst does not over-commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use client::runtime::{Action, IndexName, ObjectRef, Recorder, Store};
use client::{Api, Client};
use crds::{set_condition, ConditionStatus, EventType, Instance, Phase, Protocol, Resources};
use scheduler::{Candidate, Decision, Request, Tier};
use serde_json::json;

use crate::{index_by_service, service_key, Error, BY_SERVICE};

struct Recent {
    target: String,
    resources: Resources,
    service: String,
    host_ports: Vec<(u16, Protocol)>,
}

/// The host ports an Instance publishes.
fn host_ports(i: &Instance) -> Vec<(u16, Protocol)> {
    i.spec
        .template
        .ports
        .iter()
        .filter_map(|p| Some((p.host_port?, p.protocol)))
        .collect()
}

/// The candidates of a decision and where each target's name is among them (the
/// position map is shared: cloning this copies the list, not the map).
#[derive(Clone, Default)]
pub struct Targets {
    candidates: Vec<Candidate>,
    position: Arc<HashMap<String, usize>>,
}

impl Targets {
    pub fn new(candidates: Vec<Candidate>) -> Self {
        let position = candidates
            .iter()
            .enumerate()
            .map(|(n, c)| (c.profile.name.clone(), n))
            .collect();
        Targets {
            candidates,
            position: Arc::new(position),
        }
    }

    /// The candidate named `name`.
    fn get_mut(&mut self, name: &str) -> Option<&mut Candidate> {
        let n = *self.position.get(name)?;
        self.candidates.get_mut(n)
    }
}

pub struct Binder {
    tier: Tier,
    client: Client,
    instances: Store<Instance>,
    recorder: Recorder,
    recent: Mutex<HashMap<ObjectRef, Recent>>,
    /// Per target, what its [`IN_FLIGHT`] group added up to at a version of the group.
    in_flight: Mutex<HashMap<String, InFlight>>,
}

/// The requests and host ports of one target's in-flight Instances.
struct InFlight {
    version: u64,
    resources: Resources,
    host_ports: Vec<(u16, Protocol)>,
}

impl InFlight {
    /// The sum of `bound`, a target's in-flight group at `version`.
    fn of<'a>(tier: Tier, version: u64, bound: impl Iterator<Item = &'a Arc<Instance>>) -> Self {
        let mut sum = InFlight {
            version,
            resources: Resources::default(),
            host_ports: Vec::new(),
        };
        for i in bound {
            add(&mut sum.resources, &i.spec.template.resources);
            if tier == Tier::Node {
                sum.host_ports.extend(host_ports(i));
            }
        }
        sum
    }

    fn add_to(&self, c: &mut Candidate) {
        add(&mut c.in_flight, &self.resources);
        c.host_ports.extend(self.host_ports.iter().copied());
    }
}

/// Annotation listing the clusters that handed an Instance back for lack of room.
pub const REJECTED_BY: &str = "oakestra.io/rejected-by";

/// How long an Instance that no cluster takes waits before the clusters that handed it
/// back are asked again.
const RETRY_HANDED_BACK: Duration = Duration::from_secs(30);

/// How soon an Instance no node can take is tried again.
const RETRY_UNPLACED_ON_NODES: Duration = Duration::from_secs(5);

/// The clusters that handed `instance` back.
pub fn rejected_by(instance: &Instance) -> Vec<String> {
    instance
        .metadata
        .annotations
        .get(REJECTED_BY)
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// The field an Instance's target is in.
pub fn target_of(tier: Tier, i: &Instance) -> Option<&String> {
    match tier {
        Tier::Cluster => i.spec.cluster.as_ref(),
        Tier::Node => i.spec.node.as_ref(),
    }
}

/// Whether a bound Instance's request still counts against its target.
fn counts_in_flight(tier: Tier, i: &Instance) -> bool {
    match tier {
        // Placed on a cluster, not yet on a node: the cluster's report cannot know it.
        Tier::Cluster => i.spec.node.is_none(),
        // On a node: counts until it ends.
        Tier::Node => !matches!(
            i.status.as_ref().map(|s| s.phase),
            Some(Phase::Succeeded | Phase::Failed)
        ),
    }
}

fn add(total: &mut Resources, r: &Resources) {
    total.cpu_millicores += r.cpu_millicores;
    total.memory_mib += r.memory_mib;
    total.gpus += r.gpus;
    total.storage_mib += r.storage_mib;
}

/// Name of the Instance-cache index of what counts in flight, by target.
const IN_FLIGHT: IndexName = IndexName::new("in-flight");

/// Name of the Instance-cache index by Service and target ([`service_target_key`]).
const BY_SERVICE_TARGET: IndexName = IndexName::new("service-target");

/// The [`BY_SERVICE_TARGET`] key: a [`service_key`] and a target.
fn service_target_key(service_key: &str, target: &str) -> String {
    format!("{service_key}\0{target}")
}

impl Binder {
    pub fn new(tier: Tier, client: Client, instances: Store<Instance>, source: &str) -> Self {
        index_by_service(&instances);
        instances.add_index(BY_SERVICE_TARGET, move |i| {
            let service = service_key(i.metadata.namespace.as_deref(), &i.spec.service);
            target_of(tier, i).map(|t| service_target_key(&service, t))
        });
        instances.add_index(IN_FLIGHT, move |i| {
            target_of(tier, i)
                .filter(|_| counts_in_flight(tier, i))
                .cloned()
        });
        Binder {
            tier,
            recorder: Recorder::new(client.clone(), source),
            client,
            instances,
            recent: Mutex::default(),
            in_flight: Mutex::default(),
        }
    }

    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    fn noun(&self) -> &'static str {
        match self.tier {
            Tier::Cluster => "cluster",
            Tier::Node => "node",
        }
    }

    /// Fill in each candidate's in-flight requests and replicas of `instance`'s Service,
    /// from the cache's indexes (a decision reads the Instances of the candidates and
    /// of the Service, not the whole cache).
    fn complete(
        &self,
        instance: &Instance,
        targets: &mut Targets,
        recent: &HashMap<ObjectRef, Recent>,
    ) {
        // Each target's sum is kept until its group changes: a decision adds up only the
        // groups that changed since the last one (a node's Instances, not all of them).
        let mut sums = self.in_flight.lock().expect("in-flight lock");
        let mut groups = 0;
        self.instances
            .for_each_group(IN_FLIGHT, |target, version, bound| {
                groups += 1;
                let Some(c) = targets.get_mut(target) else {
                    return;
                };
                if let Some(sum) = sums.get(target).filter(|s| s.version == version) {
                    sum.add_to(c);
                    return;
                }
                let sum = InFlight::of(self.tier, version, bound);
                sum.add_to(c);
                sums.insert(target.to_string(), sum);
            });
        // Forget the targets whose groups are gone, once they are most of the map.
        if sums.len() > 2 * groups + 64 {
            sums.retain(|target, _| self.instances.group_len(IN_FLIGHT, target) > 0);
        }
        drop(sums);
        let key = service_key(
            instance.metadata.namespace.as_deref(),
            &instance.spec.service,
        );
        // Replicas of the Service on each candidate, counted from the smaller side: the
        // Service's Instances (100 of them over 500 nodes) or the candidates (1,000
        // Instances over 10 clusters).
        if self.instances.group_len(BY_SERVICE, &key) <= targets.candidates.len() {
            self.instances.for_each_in_group(BY_SERVICE, &key, |i| {
                if let Some(c) = target_of(self.tier, i).and_then(|t| targets.get_mut(t)) {
                    c.replicas_here += 1;
                }
            });
        } else {
            for c in &mut targets.candidates {
                let here = service_target_key(&key, &c.profile.name);
                let n = self.instances.group_len(BY_SERVICE_TARGET, &here);
                c.replicas_here += u32::try_from(n).unwrap_or(u32::MAX);
            }
        }
        for r in recent.values() {
            let Some(c) = targets.get_mut(&r.target) else {
                continue;
            };
            add(&mut c.in_flight, &r.resources);
            c.host_ports.extend(r.host_ports.iter().copied());
            if r.service == instance.spec.service {
                c.replicas_here += 1;
            }
        }
    }

    /// Choose a target for `instance` among `targets` and write it, or record why not.
    pub async fn bind(&self, instance: &Instance, mut targets: Targets) -> Result<Action, Error> {
        let key = ObjectRef::of(instance);
        let decision = {
            let mut recent = self.recent.lock().expect("recent lock");
            // Forget bindings the cache now shows (or whose Instance is gone).
            recent.retain(|k, r| {
                self.instances
                    .get(k)
                    .is_some_and(|i| target_of(self.tier, &i) != Some(&r.target))
            });
            self.complete(instance, &mut targets, &recent);
            let excluded = rejected_by(instance);
            let wanted = host_ports(instance);
            let request = Request {
                tier: self.tier,
                runtime: instance.spec.template.runtime,
                resources: &instance.spec.template.resources,
                placement: &instance.spec.template.placement,
                excluded: &excluded,
                host_ports: &wanted,
            };
            let decision = scheduler::schedule(&targets.candidates, &request);
            if let Decision::Place(target) = &decision {
                let r = Recent {
                    target: target.clone(),
                    resources: instance.spec.template.resources.clone(),
                    service: instance.spec.service.clone(),
                    host_ports: wanted.clone(),
                };
                recent.insert(key.clone(), r);
            }
            decision
        };
        let api: Api<Instance> = self.client.api(instance.metadata.namespace.as_deref());
        let now = Utc::now();
        let mut status = instance.status.clone().unwrap_or_default();
        let noun = self.noun();
        match decision {
            Decision::Place(target) => {
                let target_kind = match self.tier {
                    Tier::Cluster => "Cluster",
                    Tier::Node => "Node",
                };
                // Target field, phase and Scheduled condition in one write, at the
                // version read.
                let bound = api
                    .bind(
                        &instance.metadata.name,
                        target_kind,
                        &target,
                        instance.metadata.resource_version.as_deref(),
                    )
                    .await;
                if let Err(e) = bound {
                    self.recent.lock().expect("recent lock").remove(&key);
                    return Err(e.into());
                }
                let message = format!("placed on {noun} {target}");
                self.recorder
                    .record(instance, EventType::Normal, "Placed", &message)
                    .await;
                Ok(Action::await_change())
            }
            Decision::Unschedulable { reason, message } => {
                let unplaced_since = status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Scheduled" && c.status == ConditionStatus::False)
                    .and_then(|c| c.last_transition_time);
                let unplaced_for = unplaced_since
                    .and_then(|t| (now - t).to_std().ok())
                    .unwrap_or_default();
                if self.tier == Tier::Cluster
                    && !rejected_by(instance).is_empty()
                    && unplaced_for >= RETRY_HANDED_BACK
                {
                    // Every cluster that may take it is full or handed it back, for a
                    // while now: forget the hand-backs, so that the next attempt asks
                    // them all again (room may have come free since).
                    let patch = json!({"metadata": {"annotations": {REJECTED_BY: null}}});
                    api.patch(&instance.metadata.name, &patch).await?;
                }
                if set_condition(
                    &mut status.conditions,
                    "Scheduled",
                    ConditionStatus::False,
                    reason,
                    &message,
                    now,
                ) {
                    let patch = json!({"status": {"phase": Phase::Pending, "reason": reason, "message": message, "conditions": status.conditions}});
                    api.patch_status(&instance.metadata.name, &patch).await?;
                    self.recorder
                        .record(instance, EventType::Warning, "FailedPlacement", &message)
                        .await;
                }
                // Changes of the candidates trigger a retry. Room that comes free on a
                // node (an Instance deleted or ended there) changes no Node — node
                // heartbeats renew Leases — so the node tier looks again every few
                // seconds, well before its cluster would hand the Instance back.
                Ok(Action::requeue(match self.tier {
                    Tier::Cluster => Duration::from_secs(30),
                    Tier::Node => RETRY_UNPLACED_ON_NODES,
                }))
            }
        }
    }

    /// Take `instance` off its target (it will be bound again), at the version read.
    pub async fn unbind(
        &self,
        instance: &Instance,
        reason: &str,
        message: &str,
    ) -> Result<(), Error> {
        let api: Api<Instance> = self.client.api(instance.metadata.namespace.as_deref());
        let spec = match self.tier {
            Tier::Cluster => json!({"cluster": null, "node": null}),
            Tier::Node => json!({"node": null}),
        };
        let patch = json!({"metadata": {"resourceVersion": instance.metadata.resource_version}, "spec": spec});
        api.patch(&instance.metadata.name, &patch).await?;
        let mut status = instance.status.clone().unwrap_or_default();
        set_condition(
            &mut status.conditions,
            "Scheduled",
            ConditionStatus::False,
            reason,
            message,
            Utc::now(),
        );
        let patch = json!({"status": {"phase": Phase::Pending, "reason": reason, "message": message, "conditions": status.conditions}});
        api.patch_status(&instance.metadata.name, &patch).await?;
        self.recorder
            .record(instance, EventType::Warning, reason, message)
            .await;
        Ok(())
    }
}
