//! Hand-back: an Instance that no node of this cluster has had room for during the
//! hand-back time goes back to the root, which places it on another cluster (never
//! again on this one: the cluster is added to the Instance's rejected-by list).

use std::time::Duration;

use chrono::Utc;
use client::runtime::{Action, ObjectRef};
use client::Client;
use crds::conditions::SCHEDULED;
use crds::{find_with_status, ConditionStatus, Instance, Time};
use scheduler::Tier;
use serde_json::json;

use crate::bind::{rejected_by, unbinding, REJECTED_BY};
use crate::Error;

/// Slack added to the time left before a hand-back is due, so that the recheck comes
/// after it rather than just before.
const RECHECK_SLACK: Duration = Duration::from_millis(100);

/// What the hand-back check decides for one local Instance.
#[derive(Debug, Clone, Copy, PartialEq)]
enum HandBack<'a> {
    /// It is on a node, or it waits for another reason than room: it stays.
    Keep,
    /// No node has had room for it, for less than the hand-back time: look again then.
    RecheckIn(Duration),
    /// No node has had room for it for the hand-back time: give it back; `why` is the
    /// scheduler's message.
    Now {
        /// Why no node takes it.
        why: &'a str,
    },
}

/// Decide on `local`, this cluster's copy of an Instance, at `now`: it goes back once
/// it has been unplaced for lack of room (`NoResourcesAvailable`, or `NoTargetNode` —
/// the nodes that would fit turned it down) for `handback`.
fn decide(local: &Instance, handback: Duration, now: Time) -> HandBack<'_> {
    if local.spec.node.is_some() {
        return HandBack::Keep;
    }
    let Some(status) = &local.status else {
        return HandBack::Keep;
    };
    let no_room = [scheduler::NO_RESOURCES, Tier::Node.no_target()];
    let Some(unplaced) = find_with_status(&status.conditions, SCHEDULED, ConditionStatus::False)
        .filter(|c| no_room.contains(&c.reason.as_str()))
    else {
        return HandBack::Keep;
    };
    let since = unplaced.last_transition_time.unwrap_or(now);
    let waited = (now - since).to_std().unwrap_or_default();
    if waited < handback {
        return HandBack::RecheckIn(handback - waited + RECHECK_SLACK);
    }
    HandBack::Now {
        why: &unplaced.message,
    }
}

/// The rejected-by list of `remote` once `cluster` hands it back, as the annotation
/// holds it.
fn rejected_with(remote: &Instance, cluster: &str) -> String {
    let mut rejected = rejected_by(remote);
    rejected.push(cluster.to_string());
    rejected.join(",")
}

/// Hand `remote`, the root's Instance of `local`, back to the root at `root` when
/// [`decide`] says so; `cluster` is this cluster's name.
pub(super) async fn hand_back_if_no_room(
    root: &Client,
    cluster: &str,
    handback: Duration,
    local: &Instance,
    remote: &Instance,
) -> Result<Action, Error> {
    let why = match decide(local, handback, Utc::now()) {
        HandBack::Keep => return Ok(Action::await_change()),
        HandBack::RecheckIn(after) => return Ok(Action::requeue(after)),
        HandBack::Now { why } => why,
    };
    tracing::info!(instance = %ObjectRef::of(remote), cluster = %cluster, reason = %why, "no node has room; handing the instance back to the root");
    let patch = json!({
        "metadata": {
            "resourceVersion": remote.metadata.resource_version,
            "annotations": {REJECTED_BY: rejected_with(remote, cluster)},
        },
        "spec": unbinding(Tier::Cluster),
    });
    root.api::<Instance>(remote.metadata.namespace.as_deref())
        .patch(&remote.metadata.name, &patch)
        .await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::{set_condition, InstanceSpec, InstanceStatus};

    /// A local Instance on `node` (or none), with `Scheduled` = `status` for `reason`
    /// since `ago` seconds (no transition time with `None`).
    fn local(
        node: Option<&str>,
        scheduled: Option<(ConditionStatus, &str)>,
        ago: Option<i64>,
        now: Time,
    ) -> Instance {
        let mut i = Instance::new("web-0", InstanceSpec::default());
        i.spec.node = node.map(String::from);
        i.status = scheduled.map(|(status, reason)| {
            let mut s = InstanceStatus::default();
            set_condition(
                &mut s.conditions,
                SCHEDULED,
                status,
                reason,
                "0/3 nodes fit",
                now,
            );
            s.conditions[0].last_transition_time = ago.map(|a| now - chrono::Duration::seconds(a));
            s
        });
        i
    }

    #[test]
    fn only_instances_without_room_for_the_handback_time_go_back() {
        let now = Utc::now();
        let handback = Duration::from_secs(30);
        let recheck = |secs| HandBack::RecheckIn(Duration::from_secs(secs) + RECHECK_SLACK);
        let now_back = HandBack::Now {
            why: "0/3 nodes fit",
        };
        let no_room = Some((ConditionStatus::False, scheduler::NO_RESOURCES));
        let no_node = Some((ConditionStatus::False, Tier::Node.no_target()));
        #[rustfmt::skip]
        let cases = [
            ("no room for long enough", None, no_room, Some(31), now_back),
            ("right at the hand-back time", None, no_room, Some(30), now_back),
            ("no node passes (those that fit turned it down)", None, no_node, Some(45), now_back),
            ("no room, not for long yet", None, no_room, Some(10), recheck(20)),
            ("no room, since when unknown: the full wait", None, no_room, None, recheck(30)),
            ("on a node: it stays", Some("n1"), no_room, Some(300), HandBack::Keep),
            ("no status yet", None, None, None, HandBack::Keep),
            ("placed", None, Some((ConditionStatus::True, crds::conditions::reason::PLACED)), Some(300), HandBack::Keep),
            ("unplaced for another reason (its node was lost)", None, Some((ConditionStatus::False, Tier::Node.lost())), Some(300), HandBack::Keep),
        ];
        for (name, node, scheduled, ago, expected) in cases {
            let i = local(node, scheduled, ago, now);
            assert_eq!(decide(&i, handback, now), expected, "{name}");
        }
    }

    #[test]
    fn a_handing_cluster_joins_the_rejected_list() {
        let mut i = Instance::new("web-0", InstanceSpec::default());
        assert_eq!(rejected_with(&i, "c1"), "c1");
        i.metadata
            .annotations
            .insert(REJECTED_BY.into(), "c0".into());
        assert_eq!(rejected_with(&i, "c1"), "c0,c1");
    }
}
