//! Placement at both tiers: root placement assigns `Instance.spec.cluster` among
//! Clusters; the cluster scheduler assigns `Instance.spec.node` among Nodes. One
//! controller, parameterized by the [`Target`] kind (see [`crate::bind`] for how a
//! target is chosen).
//!
//! When nothing fits the Instance gets `Scheduled=False` with the reason and an Event,
//! and is retried when targets change. The Instances of a target that stays `NotReady`
//! (or disappears) longer than the grace period are bound again elsewhere.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use client::runtime::{Action, Controller, ObjectRef, Store};
use client::{Client, ListParams};
use crds::conditions::{NETWORK_READY, READY};
use crds::{Cluster, HasConditions, Instance, Node, Resource};
use scheduler::{Candidate, Profile, Tier};
use tokio_util::sync::CancellationToken;

use crate::bind::{Binder, Targets};
use crate::{not_ready_for, Error};

/// A kind Instances are bound to. What differs between the tiers is on [`Tier`]; what
/// differs between the two placement controllers is here.
pub trait Target: Resource + HasConditions {
    /// The tier whose decisions choose among objects of this kind.
    const TIER: Tier;
    /// The source of the controller's Events.
    const EVENT_SOURCE: &'static str;
    /// How soon an Instance no target of this kind can take is tried again (changes of
    /// the targets trigger a retry earlier).
    const RETRY_UNPLACED: Duration;
    /// The target as it reports itself to the scheduler.
    fn profile(&self) -> Profile;
}

/// The parts every target reports the same way; the rest comes from its kind.
fn profile_of<T: Target>(
    t: &T,
    runtimes: Vec<crds::RuntimeKind>,
    allocatable: Option<crds::Capacity>,
) -> Profile {
    let meta = t.metadata();
    Profile {
        name: meta.name.clone(),
        labels: meta.labels.clone(),
        ready: crds::is_true(t.conditions(), READY) && meta.deletion_timestamp.is_none(),
        schedulable: true,
        runtimes,
        allocatable: allocatable.unwrap_or_default(),
        location: None,
        impaired: None,
    }
}

impl Target for Cluster {
    const TIER: Tier = Tier::Cluster;
    const EVENT_SOURCE: &'static str = "root-placement";
    const RETRY_UNPLACED: Duration = Duration::from_secs(30);
    fn profile(&self) -> Profile {
        let status = self.status.as_ref();
        Profile {
            location: self.spec.location.clone(),
            ..profile_of(
                self,
                status.map(|s| s.runtimes.clone()).unwrap_or_default(),
                status.and_then(|s| s.allocatable.clone()),
            )
        }
    }
}

impl Target for Node {
    const TIER: Tier = Tier::Node;
    const EVENT_SOURCE: &'static str = "cluster-scheduler";
    // Room that comes free on a node (an Instance deleted or ended there) changes no
    // Node — node heartbeats renew Leases — so the node tier looks again every few
    // seconds, well before its cluster would hand the Instance back.
    const RETRY_UNPLACED: Duration = Duration::from_secs(5);
    fn profile(&self) -> Profile {
        let allocatable = self.status.as_ref().and_then(|s| s.allocatable.clone());
        // Its agent says so when the node's service rules or overlay failed: Instances
        // there could not be reached.
        let impaired = self
            .conditions()
            .iter()
            .find(|c| c.type_ == NETWORK_READY && c.status == crds::ConditionStatus::False)
            .map(|c| format!("network not ready ({}: {})", c.reason, c.message));
        Profile {
            schedulable: !self.spec.unschedulable,
            location: self.spec.location.clone(),
            impaired,
            ..profile_of(self, self.spec.runtimes.clone(), allocatable)
        }
    }
}

/// A profile and the resourceVersion of the object it was made from.
type Versioned = (Option<String>, Arc<Profile>);

struct Ctx<T: Target> {
    binder: Binder,
    targets: Store<T>,
    /// Each target's profile at the version it was made from: a decision builds only
    /// the profiles of targets that changed since the last one (at 500 nodes, building
    /// them all anew was a tenth of a cluster's CPU in a burst).
    profiles: Mutex<HashMap<String, Versioned>>,
    /// The last candidates built and the targets cache's generation they were built at:
    /// while no target changes (heartbeats renew Leases, not Nodes), decisions reuse them.
    last: Mutex<Option<(u64, Targets)>>,
    grace: Duration,
}

impl<T: Target> Ctx<T> {
    /// Every cached target as a candidate.
    fn candidates(&self) -> Targets {
        let generation = self.targets.generation();
        let mut last = self.last.lock().expect("last candidates lock");
        match &*last {
            Some((built_at, targets)) if *built_at == generation => targets.clone(),
            _ => {
                let targets = Targets::new(self.build_candidates());
                *last = Some((generation, targets.clone()));
                targets
            }
        }
    }

    /// Every cached target as a candidate, from the profiles kept per version.
    fn build_candidates(&self) -> Vec<Candidate> {
        let targets = self.targets.state();
        let mut profiles = self.profiles.lock().expect("profiles lock");
        if profiles.len() > targets.len() {
            let names: std::collections::HashSet<&str> =
                targets.iter().map(|t| t.metadata().name.as_str()).collect();
            profiles.retain(|name, _| names.contains(name.as_str()));
        }
        targets
            .iter()
            .map(|t| {
                let meta = t.metadata();
                let profile = match profiles.get(&meta.name) {
                    Some((version, p)) if *version == meta.resource_version => p.clone(),
                    _ => {
                        let p = Arc::new(t.profile());
                        let entry = (meta.resource_version.clone(), p.clone());
                        profiles.insert(meta.name.clone(), entry);
                        p
                    }
                };
                Candidate::new(profile)
            })
            .collect()
    }
}

/// Bind the Instances of the API at `client` to targets of kind `T`; the Instances of
/// a target `NotReady` for longer than `grace` are bound again.
pub async fn run<T: Target>(
    client: Client,
    grace: Duration,
    concurrency: usize,
    shutdown: CancellationToken,
) {
    let noun = T::TIER.noun();
    let mut controller = Controller::new(client.api::<Instance>(None), ListParams::default())
        .name(&format!("{noun}-placement"))
        .concurrency(concurrency);
    let instances = controller.store();
    let for_mapper = instances.clone();
    // The targets cache, for the mapper (it exists only once `watches` returns).
    let cache: Arc<OnceLock<Store<T>>> = Arc::default();
    let seen = cache.clone();
    // A target change queues the Instances waiting for one, and those on it when it is
    // not Ready or gone (the cache already holds this change). The Instances on a Ready
    // target have nothing to do; queueing them at each of its heartbeats cost
    // thousands of empty reconciles per second at scale.
    let targets = controller.watches(
        client.api::<T>(None),
        ListParams::default(),
        move |t: &T| {
            let name = &t.metadata().name;
            let ready = seen
                .get()
                .and_then(|c| c.get(&ObjectRef::new(None, name)))
                .is_some_and(|cur| {
                    crds::is_true(cur.conditions(), READY)
                        && cur.metadata().deletion_timestamp.is_none()
                });
            for_mapper
                .find(|i| match T::TIER.target_of(i) {
                    None => true,
                    Some(n) => !ready && n == name,
                })
                .iter()
                .map(|i| ObjectRef::of(i.as_ref()))
                .collect()
        },
    );
    let _ = cache.set(targets.clone());
    let binder = Binder::new(
        T::TIER,
        client,
        instances,
        T::EVENT_SOURCE,
        T::RETRY_UNPLACED,
        Arc::new(controller.trigger()),
    );
    let ctx = Arc::new(Ctx {
        binder,
        targets,
        profiles: Mutex::default(),
        last: Mutex::default(),
        grace,
    });
    controller
        .run(
            move |i| reconcile(i, ctx.clone()),
            shutdown.cancelled_owned(),
        )
        .await;
}

async fn reconcile<T: Target>(instance: Arc<Instance>, ctx: Arc<Ctx<T>>) -> Result<Action, Error> {
    if instance.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(target) = T::TIER.target_of(&instance) else {
        return ctx.binder.bind(&instance, ctx.candidates()).await;
    };
    let noun = T::TIER.noun();
    let known = ctx.targets.get(&ObjectRef::new(None, target));
    match not_ready_for(known.is_some(), known.as_ref().map(|t| t.conditions())) {
        None => Ok(Action::await_change()),
        Some(down) if down >= ctx.grace => {
            let why = if known.is_none() {
                "was deleted".to_string()
            } else {
                format!("has been NotReady for {}s", down.as_secs())
            };
            let message = format!("{noun} {target} {why}; placing the instance again");
            ctx.binder
                .unbind(&instance, T::TIER.lost(), &message)
                .await?;
            Ok(Action::await_change())
        }
        Some(down) => Ok(Action::requeue(
            ctx.grace - down + Duration::from_millis(100),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::{set_condition, ConditionStatus, NodeSpec, NodeStatus};

    /// A node that is Ready (or not), unschedulable (or not), being deleted (or not).
    fn node(ready: bool, unschedulable: bool, deleting: bool) -> Node {
        let spec = NodeSpec {
            unschedulable,
            ..Default::default()
        };
        let mut n = Node::new("n1", spec);
        let mut status = NodeStatus::default();
        let ready = if ready {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        set_condition(
            &mut status.conditions,
            READY,
            ready,
            "",
            "",
            chrono::Utc::now(),
        );
        n.status = Some(status);
        n.metadata.deletion_timestamp = deleting.then(chrono::Utc::now);
        n
    }

    #[test]
    fn a_nodes_profile_follows_its_lifecycle() {
        // (what, ready, unschedulable, deleting) → (profile.ready, profile.schedulable)
        let cases = [
            ("ready", (true, false, false), (true, true)),
            (
                "cordoned: ready, takes no new work",
                (true, true, false),
                (true, false),
            ),
            (
                "lost (heartbeat lapsed)",
                (false, false, false),
                (false, true),
            ),
            ("being deleted", (true, false, true), (false, true)),
        ];
        for (what, (ready, unschedulable, deleting), expected) in cases {
            let p = node(ready, unschedulable, deleting).profile();
            assert_eq!((p.ready, p.schedulable), expected, "{what}");
        }
    }
}
