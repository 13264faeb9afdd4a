//! Placement decisions, shared by root placement (candidates are clusters) and the
//! cluster scheduler (candidates are nodes).
//!
//! Plain data in, plain data out: [`schedule`] filters the candidates (ready,
//! schedulable, runtime, allowed names, labels, geo distance, host ports, free
//! resources) and
//! scores the rest (spread a Service's replicas, then prefer the most free capacity
//! after placement). When nothing fits it says why, candidate by candidate, with
//! Oakestra's reasons `NoTargetCluster` / `NoResourcesAvailable`.

use std::collections::BTreeMap;
use std::sync::Arc;

use crds::conditions::reason;
use crds::{Capacity, Instance, Location, Phase, Placement, Protocol, Resources, RuntimeKind};

/// What is being chosen: the tier a placement decision runs at. Everything that differs
/// between the tiers — names, the field a binding writes, reasons — is a method here,
/// so the callers need no tables of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Root placement: an Instance gets a cluster (`spec.cluster`).
    Cluster,
    /// The cluster scheduler: an Instance gets a node of its cluster (`spec.node`).
    Node,
}

impl Tier {
    /// The target as a lowercase noun, for messages: `cluster` or `node`.
    pub fn noun(self) -> &'static str {
        match self {
            Tier::Cluster => "cluster",
            Tier::Node => "node",
        }
    }

    /// The API kind of the target, as a binding names it: `Cluster` or `Node`.
    pub fn kind(self) -> &'static str {
        match self {
            Tier::Cluster => "Cluster",
            Tier::Node => "Node",
        }
    }

    /// The target `instance` is bound to at this tier (`spec.cluster` or `spec.node`).
    pub fn target_of(self, instance: &Instance) -> Option<&String> {
        match self {
            Tier::Cluster => instance.spec.cluster.as_ref(),
            Tier::Node => instance.spec.node.as_ref(),
        }
    }

    /// The `spec` fields cleared when an Instance is taken off its target at this tier:
    /// an Instance leaving its cluster leaves that cluster's node too.
    pub fn bound_fields(self) -> &'static [&'static str] {
        match self {
            Tier::Cluster => &["cluster", "node"],
            Tier::Node => &["node"],
        }
    }

    /// Reason when no candidate passes the constraints.
    pub fn no_target(self) -> &'static str {
        match self {
            Tier::Cluster => reason::NO_TARGET_CLUSTER,
            Tier::Node => reason::NO_TARGET_NODE,
        }
    }

    /// Reason when an Instance is taken off a target that stayed `NotReady` past its
    /// grace period, or was deleted: `ClusterLost` or `NodeLost`.
    pub fn lost(self) -> &'static str {
        match self {
            Tier::Cluster => "ClusterLost",
            Tier::Node => "NodeLost",
        }
    }

    /// Whether the request of `instance`, bound at this tier, still counts against its
    /// target as in flight ([`Candidate::in_flight`]): on a cluster until a node takes
    /// it (the cluster's report cannot know it before), on a node until it ends.
    pub fn counts_in_flight(self, instance: &Instance) -> bool {
        match self {
            Tier::Cluster => instance.spec.node.is_none(),
            Tier::Node => !matches!(
                instance.status.as_ref().map(|s| s.phase),
                Some(Phase::Succeeded | Phase::Failed)
            ),
        }
    }

    /// Whether the candidates of this tier know the host ports taken on them: a node
    /// does; a cluster does not know its nodes' ports.
    pub fn knows_host_ports(self) -> bool {
        self == Tier::Node
    }

    /// The allowed names and the label selector of `placement` that apply at this tier
    /// (names can be listed for clusters only).
    fn constraints(self, placement: &Placement) -> (&[String], &BTreeMap<String, String>) {
        match self {
            Tier::Cluster => (&placement.clusters, &placement.cluster_selector),
            Tier::Node => (&[], &placement.node_selector),
        }
    }
}

/// Reason when candidates pass the constraints but none has room.
pub const NO_RESOURCES: &str = reason::NO_RESOURCES_AVAILABLE;

/// One cluster or node as it reports itself. It changes only when the target's object
/// does, so callers keep one per object version and share it between decisions.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// The target's object name.
    pub name: String,
    /// The target's labels, matched against the placement's label selector.
    pub labels: BTreeMap<String, String>,
    /// Whether its `Ready` condition is `True` and it is not being deleted.
    pub ready: bool,
    /// Whether it takes new work (a node can be cordoned with `spec.unschedulable`).
    pub schedulable: bool,
    /// The workload runtimes it can run.
    pub runtimes: Vec<RuntimeKind>,
    /// Where it is, for geo constraints (`None`: unknown, fails any geo constraint).
    pub location: Option<Location>,
    /// Allocatable as reported.
    pub allocatable: Capacity,
    /// Why it cannot take work although it is ready, if so: a node whose network data
    /// plane failed (its `NetworkReady` condition is `False`) says why here.
    pub impaired: Option<String>,
}

/// One cluster or node, as the scheduler sees it for one decision: its profile and
/// what the caller knows that the target cannot report yet.
#[derive(Debug, Clone, Default)]
pub struct Candidate {
    /// The target as it reports itself.
    pub profile: Arc<Profile>,
    /// Requests of work placed here but not yet reflected in `allocatable`.
    pub in_flight: Resources,
    /// Replicas of the same Service already here.
    pub replicas_here: u32,
    /// Host ports already published here (nodes only; a cluster does not know them).
    pub host_ports: Vec<(u16, Protocol)>,
}

impl Candidate {
    /// A candidate with nothing in flight.
    pub fn new(profile: Arc<Profile>) -> Self {
        Candidate {
            profile,
            ..Default::default()
        }
    }
}

/// What one Instance needs.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The tier the decision is for.
    pub tier: Tier,
    /// The runtime the Instance's workload needs.
    pub runtime: RuntimeKind,
    /// The resources the Instance requests.
    pub resources: &'a Resources,
    /// The Instance's placement constraints.
    pub placement: &'a Placement,
    /// Candidates that already turned this Instance down.
    pub excluded: &'a [String],
    /// Host ports the Instance publishes (checked at the node tier only).
    pub host_ports: &'a [(u16, Protocol)],
}

/// The outcome of [`schedule`].
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Place on this candidate.
    Place(String),
    /// Nothing fits: a reason word and a message naming what failed where.
    Unschedulable {
        /// [`NO_RESOURCES`] or [`Tier::no_target`].
        reason: &'static str,
        /// Why each candidate failed (at most ten, sorted).
        message: String,
    },
}

/// Great-circle distance in km between two points (haversine, mean Earth radius).
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1, lat2, lon2) = (
        a.0.to_radians(),
        a.1.to_radians(),
        b.0.to_radians(),
        b.1.to_radians(),
    );
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().asin()
}

/// Why a candidate fails the constraints (not resources), if it does.
fn constraint_failure(c: &Candidate, r: &Request) -> Option<String> {
    if r.excluded.contains(&c.profile.name) {
        return Some("turned this instance down before (no room)".into());
    }
    if !c.profile.ready {
        return Some("not ready".into());
    }
    if let Some(why) = &c.profile.impaired {
        return Some(why.clone());
    }
    if !c.profile.schedulable {
        return Some("unschedulable".into());
    }
    if !c.profile.runtimes.contains(&r.runtime) {
        return Some(format!(
            "does not support runtime {}",
            format!("{:?}", r.runtime).to_lowercase()
        ));
    }
    let (allowed, selector) = r.tier.constraints(r.placement);
    if !allowed.is_empty() && !allowed.contains(&c.profile.name) {
        return Some(format!("not in the allowed clusters {allowed:?}"));
    }
    if let Some((k, v)) = selector
        .iter()
        .find(|(k, v)| c.profile.labels.get(*k) != Some(v))
    {
        return Some(format!("lacks label {k}={v}"));
    }
    if r.tier.knows_host_ports() {
        if let Some((port, proto)) = r.host_ports.iter().find(|p| c.host_ports.contains(p)) {
            let proto = format!("{proto:?}").to_lowercase();
            return Some(format!("host port {port}/{proto} is taken"));
        }
    }
    if let Some(geo) = &r.placement.geo {
        match &c.profile.location {
            None => return Some("has no location (geo constraint)".into()),
            Some(l) => {
                let d = distance_km((geo.latitude, geo.longitude), (l.latitude, l.longitude));
                if d > geo.max_distance_km {
                    return Some(format!("is {d:.0} km away, max {} km", geo.max_distance_km));
                }
            }
        }
    }
    None
}

/// Free capacity after counting in-flight work.
fn free(c: &Candidate) -> (i64, i64, i64) {
    (
        c.profile.allocatable.cpu_millicores as i64 - c.in_flight.cpu_millicores as i64,
        c.profile.allocatable.memory_mib as i64 - c.in_flight.memory_mib as i64,
        c.profile.allocatable.gpus as i64 - c.in_flight.gpus as i64,
    )
}

fn resource_failure(c: &Candidate, r: &Request) -> Option<String> {
    let (cpu, mem, gpus) = free(c);
    let mut short = Vec::new();
    if (r.resources.cpu_millicores as i64) > cpu {
        short.push(format!(
            "cpu {}m free < {}m requested",
            cpu.max(0),
            r.resources.cpu_millicores
        ));
    }
    if (r.resources.memory_mib as i64) > mem {
        short.push(format!(
            "memory {}MiB free < {}MiB requested",
            mem.max(0),
            r.resources.memory_mib
        ));
    }
    if (r.resources.gpus as i64) > gpus {
        short.push(format!(
            "gpus {} free < {} requested",
            gpus.max(0),
            r.resources.gpus
        ));
    }
    (!short.is_empty()).then(|| short.join(", "))
}

/// Fraction of the candidate left free after placing the request (0..1, higher is better).
fn free_after(c: &Candidate, r: &Request) -> f64 {
    let (cpu, mem, _) = free(c);
    let frac = |free: i64, req: u64, total: u64| {
        if total == 0 {
            0.0
        } else {
            (free - req as i64) as f64 / total as f64
        }
    };
    (frac(
        cpu,
        r.resources.cpu_millicores,
        c.profile.allocatable.cpu_millicores,
    ) + frac(
        mem,
        r.resources.memory_mib,
        c.profile.allocatable.memory_mib,
    )) / 2.0
}

/// Choose where one Instance goes.
pub fn schedule(candidates: &[Candidate], r: &Request) -> Decision {
    let noun = r.tier.noun();
    if candidates.is_empty() {
        return Decision::Unschedulable {
            reason: r.tier.no_target(),
            message: format!("there is no {noun}"),
        };
    }
    let mut failures = Vec::new();
    let mut fitting = Vec::new();
    let mut any_passed_constraints = false;
    for c in candidates {
        if let Some(why) = constraint_failure(c, r) {
            failures.push(format!("{}: {why}", c.profile.name));
        } else {
            any_passed_constraints = true;
            match resource_failure(c, r) {
                Some(why) => failures.push(format!("{}: {why}", c.profile.name)),
                None => fitting.push(c),
            }
        }
    }
    let best = fitting.into_iter().min_by(|a, b| {
        a.replicas_here
            .cmp(&b.replicas_here)
            .then(free_after(b, r).total_cmp(&free_after(a, r)))
            .then(a.profile.name.cmp(&b.profile.name))
    });
    match best {
        Some(c) => Decision::Place(c.profile.name.clone()),
        None => {
            failures.sort();
            let shown = failures.len().min(10);
            let mut message = format!(
                "0/{} {noun}s fit: {}",
                candidates.len(),
                failures[..shown].join("; ")
            );
            if failures.len() > shown {
                message.push_str(&format!("; and {} more", failures.len() - shown));
            }
            let reason = if any_passed_constraints {
                NO_RESOURCES
            } else {
                r.tier.no_target()
            };
            Decision::Unschedulable { reason, message }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::GeoConstraint;

    fn cluster(name: &str, cpu: u64, mem: u64) -> Candidate {
        Candidate::new(Arc::new(Profile {
            name: name.into(),
            ready: true,
            schedulable: true,
            runtimes: vec![RuntimeKind::Container],
            allocatable: Capacity {
                cpu_millicores: cpu,
                memory_mib: mem,
                gpus: 0,
                nodes: 1,
            },
            ..Default::default()
        }))
    }

    fn request<'a>(resources: &'a Resources, placement: &'a Placement) -> Request<'a> {
        Request {
            tier: Tier::Cluster,
            runtime: RuntimeKind::Container,
            resources,
            placement,
            excluded: &[],
            host_ports: &[],
        }
    }

    #[test]
    fn table_of_decisions() {
        let res = Resources {
            cpu_millicores: 500,
            memory_mib: 256,
            ..Default::default()
        };
        let none = Placement::default();
        let munich = Location {
            latitude: 48.137,
            longitude: 11.575,
            place: None,
        };
        let berlin = Location {
            latitude: 52.52,
            longitude: 13.405,
            place: None,
        };
        let near_munich = Placement {
            geo: Some(GeoConstraint {
                latitude: 48.1,
                longitude: 11.6,
                max_distance_km: 100.0,
            }),
            ..Default::default()
        };
        let only_b = Placement {
            clusters: vec!["b".into()],
            ..Default::default()
        };
        let gold = Placement {
            cluster_selector: [("tier".to_string(), "gold".to_string())].into(),
            ..Default::default()
        };

        let mut not_ready = cluster("a", 4000, 4096);
        Arc::make_mut(&mut not_ready.profile).ready = false;
        let mut at_munich = cluster("a", 1000, 1024);
        Arc::make_mut(&mut at_munich.profile).location = Some(munich);
        let mut at_berlin = cluster("b", 4000, 4096);
        Arc::make_mut(&mut at_berlin.profile).location = Some(berlin);
        let mut busy = cluster("a", 1000, 1024);
        busy.in_flight = Resources {
            cpu_millicores: 800,
            ..Default::default()
        };
        let mut spread = cluster("a", 8000, 8192);
        spread.replicas_here = 2;
        let mut impaired = cluster("a", 4000, 4096);
        Arc::make_mut(&mut impaired.profile).impaired =
            Some("network not ready (RulesFailed: nft: no such file)".into());
        let mut labelled = cluster("b", 1000, 1024);
        Arc::make_mut(&mut labelled.profile)
            .labels
            .insert("tier".into(), "gold".into());

        let cases: Vec<(&str, Vec<Candidate>, &Placement, Decision)> = vec![
            (
                "most free wins",
                vec![cluster("a", 1000, 1024), cluster("b", 4000, 4096)],
                &none,
                Decision::Place("b".into()),
            ),
            (
                "not ready is skipped",
                vec![not_ready.clone(), cluster("b", 1000, 1024)],
                &none,
                Decision::Place("b".into()),
            ),
            (
                "an impaired target is skipped, saying why",
                vec![impaired.clone()],
                &none,
                Decision::Unschedulable {
                    reason: "NoTargetCluster",
                    message:
                        "0/1 clusters fit: a: network not ready (RulesFailed: nft: no such file)"
                            .into(),
                },
            ),
            (
                "geo keeps it near",
                vec![at_munich.clone(), at_berlin.clone()],
                &near_munich,
                Decision::Place("a".into()),
            ),
            (
                "in-flight work counts",
                vec![busy.clone(), cluster("b", 600, 600)],
                &none,
                Decision::Place("b".into()),
            ),
            (
                "spread beats free capacity",
                vec![spread, cluster("b", 1000, 1024)],
                &none,
                Decision::Place("b".into()),
            ),
            (
                "allowed clusters",
                vec![cluster("a", 9000, 9000), cluster("b", 1000, 1024)],
                &only_b,
                Decision::Place("b".into()),
            ),
            (
                "cluster selector",
                vec![cluster("a", 9000, 9000), labelled],
                &gold,
                Decision::Place("b".into()),
            ),
            (
                "nothing meets the constraints",
                vec![not_ready, at_berlin],
                &near_munich,
                Decision::Unschedulable {
                    reason: "NoTargetCluster",
                    message: "0/2 clusters fit: a: not ready; b: is 508 km away, max 100 km".into(),
                },
            ),
            (
                "no room",
                vec![busy],
                &none,
                Decision::Unschedulable {
                    reason: "NoResourcesAvailable",
                    message: "0/1 clusters fit: a: cpu 200m free < 500m requested".into(),
                },
            ),
        ];
        for (name, candidates, placement, expected) in cases {
            assert_eq!(
                schedule(&candidates, &request(&res, placement)),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn a_candidate_that_turned_the_instance_down_is_skipped() {
        let res = Resources::default();
        let none = Placement::default();
        let excluded = vec!["a".to_string()];
        let r = Request {
            excluded: &excluded,
            ..request(&res, &none)
        };
        let d = schedule(&[cluster("a", 9000, 9000), cluster("b", 1000, 1000)], &r);
        assert_eq!(d, Decision::Place("b".into()));
        let d = schedule(&[cluster("a", 9000, 9000)], &r);
        assert_eq!(
            d,
            Decision::Unschedulable {
                reason: "NoTargetCluster",
                message: "0/1 clusters fit: a: turned this instance down before (no room)".into()
            }
        );
    }

    #[test]
    fn runtime_must_be_supported() {
        let res = Resources::default();
        let none = Placement::default();
        let r = Request {
            tier: Tier::Node,
            runtime: RuntimeKind::Process,
            resources: &res,
            placement: &none,
            excluded: &[],
            host_ports: &[],
        };
        let d = schedule(&[cluster("n1", 1000, 1000)], &r);
        assert_eq!(
            d,
            Decision::Unschedulable {
                reason: "NoTargetNode",
                message: "0/1 nodes fit: n1: does not support runtime process".into()
            }
        );
    }

    #[test]
    fn a_node_with_the_host_port_taken_is_filtered() {
        let res = Resources::default();
        let none = Placement::default();
        let wanted = [(8080, Protocol::Tcp)];
        let r = Request {
            tier: Tier::Node,
            host_ports: &wanted,
            ..request(&res, &none)
        };
        let taken = |name: &str, ports: Vec<(u16, Protocol)>| Candidate {
            host_ports: ports,
            ..cluster(name, 1000, 1000)
        };
        // n1 would win the tie by name, but its port is taken (tcp and udp differ).
        let nodes = [
            taken("n1", vec![(8080, Protocol::Tcp)]),
            taken("n2", vec![(8080, Protocol::Udp)]),
        ];
        assert_eq!(schedule(&nodes, &r), Decision::Place("n2".into()));
        assert_eq!(
            schedule(&nodes[..1], &r),
            Decision::Unschedulable {
                reason: "NoTargetNode",
                message: "0/1 nodes fit: n1: host port 8080/tcp is taken".into()
            }
        );
        // Clusters do not know their nodes' ports: not a filter there.
        let at_root = Request {
            tier: Tier::Cluster,
            ..r
        };
        assert_eq!(
            schedule(&nodes[..1], &at_root),
            Decision::Place("n1".into())
        );
    }

    #[test]
    fn tier_facts() {
        let mut instance = Instance::new("web-0", crds::InstanceSpec::default());
        let on = |i: &Instance, tier: Tier| (tier.target_of(i).cloned(), tier.counts_in_flight(i));
        // Unbound: no target (in flight matters only on one).
        assert_eq!(on(&instance, Tier::Cluster), (None, true));
        assert_eq!(on(&instance, Tier::Node), (None, true));
        // On a cluster, not on a node yet: in flight at the cluster only.
        instance.spec.cluster = Some("c1".into());
        assert_eq!(on(&instance, Tier::Cluster), (Some("c1".into()), true));
        assert_eq!(on(&instance, Tier::Node), (None, true));
        // On a node: the cluster's report counts it; the node's in flight until it ends.
        instance.spec.node = Some("n1".into());
        assert_eq!(on(&instance, Tier::Cluster), (Some("c1".into()), false));
        assert_eq!(on(&instance, Tier::Node), (Some("n1".into()), true));
        for (phase, counts) in [
            (Phase::Running, true),
            (Phase::Succeeded, false),
            (Phase::Failed, false),
        ] {
            instance.status = Some(crds::InstanceStatus {
                phase,
                ..Default::default()
            });
            assert_eq!(Tier::Node.counts_in_flight(&instance), counts, "{phase:?}");
        }
        // Leaving a cluster leaves its node too.
        assert_eq!(Tier::Cluster.bound_fields(), ["cluster", "node"]);
        assert_eq!(Tier::Node.bound_fields(), ["node"]);
        let names = |t: Tier| (t.noun(), t.kind(), t.no_target(), t.lost());
        assert_eq!(
            names(Tier::Cluster),
            ("cluster", "Cluster", "NoTargetCluster", "ClusterLost")
        );
        assert_eq!(
            names(Tier::Node),
            ("node", "Node", "NoTargetNode", "NodeLost")
        );
    }

    #[test]
    fn distances() {
        let munich = (48.137, 11.575);
        let berlin = (52.52, 13.405);
        let d = distance_km(munich, berlin);
        assert!((d - 504.0).abs() < 5.0, "{d}");
        assert_eq!(distance_km(munich, munich), 0.0);
    }
}
