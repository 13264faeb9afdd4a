//! Binding Instances to a target — a cluster (root placement) or a node (cluster
//! scheduler) — with one piece of logic for both tiers.
//!
//! The caller supplies the candidates as they report themselves; the binder adds what
//! they cannot know yet: the requests of Instances bound to them but not yet reflected
//! in their allocatable ("in flight"), including this binder's own recent bindings
//! until its cache shows them, how many replicas of the same Service each already
//! has (for spreading) and, for nodes, the host ports their Instances publish.
//! Decisions are serialized, so a burst does not over-commit. What differs between the
//! tiers comes from [`Tier`]'s methods.
//!
//! As kube-scheduler splits its serial scheduling cycle from an asynchronous binding
//! cycle, a decision does not wait for the previous one's write: the binder decides,
//! reserves the target's room in its own bookkeeping ("recent"), and writes the binding
//! in a task of its own (at most [`BINDINGS_IN_FLIGHT`] at once). The reconcile is done
//! once the decision is made. A binding that fails gives its room back and queues the
//! Instance again; while a binding is in flight the Instance is not decided again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use client::runtime::{Action, IndexName, ObjectRef, Recorder, Store};
use client::{Api, Client};
use crds::conditions::{instance_readiness, reason, READY, SCHEDULED};
use crds::{
    find_with_status, set_condition, ConditionStatus, EventType, Instance, InstanceStatus,
    ObjectReference, Phase, Protocol, Resources, Time,
};
use scheduler::{Candidate, Decision, Request, Tier};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::{index_by_service, Error, ServiceKey, BY_SERVICE};

struct Recent {
    target: String,
    /// The Instance's resourceVersion the decision was made at (and its binding
    /// written at).
    version: Option<String>,
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
    /// The candidates of one decision, each findable by name.
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

/// Bindings written at once at most, per binder.
pub const BINDINGS_IN_FLIGHT: usize = 64;

/// How soon an Instance whose binding failed is decided again: after a conflict (the
/// cache is about to show the newer version), and after any other failure.
const REBIND_AFTER_CONFLICT: Duration = Duration::from_millis(50);
const REBIND_AFTER_ERROR: Duration = Duration::from_secs(1);

/// Decisions whose binding the cache does not show yet, by Instance.
type RecentMap = Arc<Mutex<HashMap<ObjectRef, Recent>>>;

/// Queues an Instance for its controller to reconcile again.
pub type Requeue = Arc<dyn Fn(ObjectRef) + Send + Sync>;

/// Binds Instances at one tier (see the module docs); one per placement controller,
/// whose reconciles share it.
pub struct Binder {
    tier: Tier,
    /// How soon an Instance nothing fits is tried again.
    retry_unplaced: Duration,
    client: Client,
    instances: Store<Instance>,
    recorder: Recorder,
    /// Decisions not yet in the cache: their bindings are in flight, or written and
    /// not yet seen.
    recent: RecentMap,
    /// Bindings in flight (see [`BINDINGS_IN_FLIGHT`]).
    bindings: Arc<Semaphore>,
    requeue: Requeue,
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
            if tier.knows_host_ports() {
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

fn add(total: &mut Resources, r: &Resources) {
    total.cpu_millicores += r.cpu_millicores;
    total.memory_mib += r.memory_mib;
    total.gpus += r.gpus;
    total.storage_mib += r.storage_mib;
}

/// The Service of `instance`, whose Events combine its Instances' (see
/// [`client::runtime::events`]); at a cluster the Service itself is not stored, and
/// the Instance does not reference it.
fn service_of(instance: &Instance) -> ObjectReference {
    ObjectReference {
        kind: <crds::Service as crds::Resource>::KIND.into(),
        name: instance.spec.service.clone(),
        namespace: instance.metadata.namespace.clone(),
        uid: instance.metadata.controller().map(|o| o.uid.clone()),
    }
}

/// The merge patch of `spec` that takes an Instance off its target at `tier`.
pub fn unbinding(tier: Tier) -> serde_json::Value {
    let fields = tier.bound_fields().iter();
    fields
        .map(|f| (f.to_string(), serde_json::Value::Null))
        .collect()
}

/// Mark `status` Pending, unplaced for `reason` (`Scheduled=False`, `Ready=False`), as
/// observed at `generation`. Returns everything of the status the binder owns, to
/// apply ([`client::Api::apply_own_status`]; its conditions merge by type, so the
/// others' stay), or `None` when the status says so already (no write needed).
fn pending(
    status: &mut InstanceStatus,
    generation: Option<i64>,
    reason: &str,
    message: &str,
    now: Time,
) -> Option<serde_json::Value> {
    let conditions = &mut status.conditions;
    let scheduled = set_condition(
        conditions,
        SCHEDULED,
        ConditionStatus::False,
        reason,
        message,
        now,
    );
    let (ready, why, detail) = instance_readiness(Phase::Pending, message);
    let readiness = set_condition(conditions, READY, ready, why, &detail, now);
    let observed = status.observed_generation != generation;
    (scheduled || readiness || observed || status.phase != Phase::Pending).then(|| {
        let mine: Vec<&crds::Condition> = status
            .conditions
            .iter()
            .filter(|c| c.type_ == SCHEDULED || c.type_ == READY)
            .collect();
        json!({"phase": Phase::Pending, "reason": reason, "message": message,
            "conditions": mine, "observedGeneration": generation})
    })
}

/// Name of the Instance-cache index of what counts in flight, by target.
const IN_FLIGHT: IndexName = IndexName::new("in-flight");

/// Name of the Instance-cache index by Service and target ([`ServiceKey::on`]).
const BY_SERVICE_TARGET: IndexName = IndexName::new("service-target");

impl Binder {
    /// A binder for `tier` over the Instances of `client`'s API, cached in
    /// `instances` (which it indexes); its Events come from `source`, an Instance
    /// nothing fits is tried again after `retry_unplaced` at most, and one whose binding
    /// failed is handed to `requeue`.
    pub fn new(
        tier: Tier,
        client: Client,
        instances: Store<Instance>,
        source: &str,
        retry_unplaced: Duration,
        requeue: Requeue,
    ) -> Self {
        index_by_service(&instances);
        instances.add_index(BY_SERVICE_TARGET, move |i| {
            tier.target_of(i).map(|t| ServiceKey::of(i).on(t))
        });
        instances.add_index(IN_FLIGHT, move |i| {
            tier.target_of(i)
                .filter(|_| tier.counts_in_flight(i))
                .cloned()
        });
        Binder {
            tier,
            retry_unplaced,
            recorder: Recorder::new(client.clone(), source),
            client,
            instances,
            recent: RecentMap::default(),
            bindings: Arc::new(Semaphore::new(BINDINGS_IN_FLIGHT)),
            requeue,
            in_flight: Mutex::default(),
        }
    }

    /// The Event recorder of this binder, for the placement controller's own Events.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
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
        let service = ServiceKey::of(instance);
        let key = service.key();
        // Replicas of the Service on each candidate, counted from the smaller side: the
        // Service's Instances (100 of them over 500 nodes) or the candidates (1,000
        // Instances over 10 clusters).
        if self.instances.group_len(BY_SERVICE, &key) <= targets.candidates.len() {
            self.instances.for_each_in_group(BY_SERVICE, &key, |i| {
                if let Some(c) = self.tier.target_of(i).and_then(|t| targets.get_mut(t)) {
                    c.replicas_here += 1;
                }
            });
        } else {
            for c in &mut targets.candidates {
                let here = service.on(&c.profile.name);
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

    /// Choose a target for `instance` among `targets` and write it (in the binding
    /// cycle, see the module docs), or record why not.
    pub async fn bind(
        &self,
        instance: &Arc<Instance>,
        mut targets: Targets,
    ) -> Result<Action, Error> {
        let key = ObjectRef::of(instance.as_ref());
        let decision = {
            let mut recent = self.recent.lock().expect("recent lock");
            // Forget bindings the cache now shows, and decisions about a version the
            // cache has moved past (the binding shown and undone since, or failed),
            // or whose Instance is gone.
            recent.retain(|k, r| {
                self.instances.get(k).is_some_and(|i| {
                    i.metadata.resource_version == r.version
                        && self.tier.target_of(&i) != Some(&r.target)
                })
            });
            if recent.contains_key(&key) {
                // Decided at the version the cache shows: its binding is in flight (or
                // written and not seen yet); the cache's change, or the failure, brings
                // it back.
                return Ok(Action::await_change());
            }
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
                    version: instance.metadata.resource_version.clone(),
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
        match decision {
            Decision::Place(target) => {
                let permit = self
                    .bindings
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the binder's semaphore is never closed");
                let binding = Binding {
                    tier: self.tier,
                    api,
                    recent: self.recent.clone(),
                    recorder: self.recorder.clone(),
                    requeue: self.requeue.clone(),
                };
                let instance = instance.clone();
                let span = tracing::debug_span!("binding", instance = %key, %target);
                tokio::spawn(tracing::Instrument::instrument(
                    async move {
                        binding.write(key, &instance, &target).await;
                        drop(permit);
                    },
                    span,
                ));
                Ok(Action::await_change())
            }
            Decision::Unschedulable { reason, message } => {
                let unplaced_since =
                    find_with_status(&status.conditions, SCHEDULED, ConditionStatus::False)
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
                let generation = instance.metadata.generation;
                if let Some(owned) = pending(&mut status, generation, reason, &message, now) {
                    api.apply_own_status(&instance.metadata.name, &owned)
                        .await?;
                    self.recorder.record_in(
                        instance.as_ref(),
                        Some(service_of(instance)),
                        EventType::Warning,
                        reason::FAILED_PLACEMENT,
                        &message,
                    );
                }
                // Changes of the candidates trigger a retry; without one, look again
                // after the tier's `Target::RETRY_UNPLACED`.
                Ok(Action::requeue(self.retry_unplaced))
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
        let patch = json!({"metadata": {"resourceVersion": instance.metadata.resource_version}, "spec": unbinding(self.tier)});
        let unbound = api.patch(&instance.metadata.name, &patch).await?;
        let mut status = instance.status.clone().unwrap_or_default();
        // The unbinding changed the spec: the status is of its generation.
        let generation = unbound.metadata.generation;
        if let Some(owned) = pending(&mut status, generation, reason, message, Utc::now()) {
            api.apply_own_status(&instance.metadata.name, &owned)
                .await?;
        }
        self.recorder
            .record(instance, EventType::Warning, reason, message);
        Ok(())
    }
}

/// What the binding cycle of one decision needs (see the module docs).
struct Binding {
    tier: Tier,
    api: Api<Instance>,
    recent: RecentMap,
    recorder: Recorder,
    requeue: Requeue,
}

impl Binding {
    /// Write the binding of `instance` (at the version decided on) to `target`: target
    /// field, phase and Scheduled condition in one write. On failure, give the room
    /// back and queue the Instance again.
    async fn write(self, key: ObjectRef, instance: &Instance, target: &str) {
        let bound = self
            .api
            .bind(
                &instance.metadata.name,
                self.tier.kind(),
                target,
                instance.metadata.resource_version.as_deref(),
            )
            .await;
        let e = match bound {
            Ok(_) => {
                let message = format!("placed on {} {target}", self.tier.noun());
                let group = Some(service_of(instance));
                self.recorder.record_in(
                    instance,
                    group,
                    EventType::Normal,
                    reason::PLACED,
                    &message,
                );
                return;
            }
            Err(e) => e,
        };
        // Give the room back, unless a later decision (at a newer version) took the
        // entry since.
        {
            let mut recent = self.recent.lock().expect("recent lock");
            if recent
                .get(&key)
                .is_some_and(|r| r.version == instance.metadata.resource_version)
            {
                recent.remove(&key);
            }
        }
        let after = if e.is_conflict() {
            tracing::debug!(error = %e, "binding at a stale version; deciding again");
            REBIND_AFTER_CONFLICT
        } else if e.is_not_found() {
            return; // deleted meanwhile
        } else {
            tracing::warn!(error = %e, "binding failed; deciding again");
            REBIND_AFTER_ERROR
        };
        tokio::time::sleep(after).await;
        (self.requeue)(key);
    }
}
