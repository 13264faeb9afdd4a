//! Conditions: the `Condition` type, the condition types and reasons that more than one
//! component writes or reads, and the helpers every controller uses to read and set them.
//!
//! A reason used by one component alone stays a constant beside its writer; the ones
//! here cross a crate boundary (written by the scheduler or a controller, read by
//! another tier, a CLI or a test).

use chrono::Utc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::Time;
use crate::types::Phase;

/// Condition type: the object is ready (a Cluster or Node that reports in time, an
/// Instance whose workload runs, a Service whose Instances all run the current
/// template). `kubectl wait --for=condition=Ready` and Argo CD health checks read it.
pub const READY: &str = "Ready";
/// Condition type (kstatus): `True` while the controller is still working towards the
/// spec (a Service scaling or rolling out); kstatus reports the object `InProgress`.
pub const RECONCILING: &str = "Reconciling";
/// Condition type (kstatus): `True` while the object cannot progress without a change
/// (a Service with an Instance nothing can place, or one that failed for good);
/// kstatus reports the object `Failed`.
pub const STALLED: &str = "Stalled";
/// Condition type: an Instance is bound to a cluster and a node (or why it is not).
pub const SCHEDULED: &str = "Scheduled";
/// Condition type of a Service: at least `spec.replicas` of its Instances run.
pub const AVAILABLE: &str = "Available";
/// Condition type of a Service: every Instance is placed (`False` names one that is not,
/// and why).
pub const PLACED: &str = "Placed";

/// Condition type of a Service with a `placement.latency` constraint: `False`
/// (`NotMeasured`) while nothing measures latency, so placement keeps the constraint but
/// does not act on it (an imported Oakestra SLA's `latency` constraint becomes one).
pub const LATENCY_ENFORCED: &str = "LatencyEnforced";

/// Condition type of a Node: its agent's network data plane (service rules, overlay)
/// is in place; `False` says which part failed and why, and the cluster scheduler
/// places nothing there.
pub const NETWORK_READY: &str = "NetworkReady";

/// Reasons shared between tiers and components.
pub mod reason {
    /// `Scheduled=True`: the Instance was bound.
    pub const PLACED: &str = "Placed";
    /// Event reason: a placement attempt found no target.
    pub const FAILED_PLACEMENT: &str = "FailedPlacement";
    /// `Scheduled=False`: candidates pass the constraints but none has room.
    pub const NO_RESOURCES_AVAILABLE: &str = "NoResourcesAvailable";
    /// `Scheduled=False`: no cluster passes the constraints.
    pub const NO_TARGET_CLUSTER: &str = "NoTargetCluster";
    /// `Scheduled=False`: no node of the cluster passes the constraints.
    pub const NO_TARGET_NODE: &str = "NoTargetNode";
}

/// The `Ready` condition of an Instance in `phase`: `True` (reason `Running`) while the
/// workload runs, otherwise `False` with the phase as the reason. The message is
/// `detail` (the status message, e.g. why it exited) when there is one, else what the
/// phase means.
pub fn instance_readiness(phase: Phase, detail: &str) -> (ConditionStatus, &'static str, String) {
    let (status, reason, meaning) = match phase {
        Phase::Running => (ConditionStatus::True, "Running", "the workload runs"),
        Phase::Pending => (
            ConditionStatus::False,
            "Pending",
            "not bound to a cluster and a node yet",
        ),
        Phase::Scheduled => (
            ConditionStatus::False,
            "Scheduled",
            "bound to a node; its agent has not started it yet",
        ),
        Phase::Starting => (
            ConditionStatus::False,
            "Starting",
            "the agent is starting the workload",
        ),
        Phase::Succeeded => (
            ConditionStatus::False,
            "Succeeded",
            "the workload exited with 0 and is not restarted",
        ),
        Phase::Failed => (
            ConditionStatus::False,
            "Failed",
            "the workload failed and is not restarted",
        ),
        Phase::Terminating => (
            ConditionStatus::False,
            "Terminating",
            "the workload is being stopped and removed",
        ),
    };
    let message = if detail.is_empty() { meaning } else { detail };
    (status, reason, message.to_string())
}

/// `True`, `False` or `Unknown`, as in Kubernetes conditions.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold (the reason says why).
    False,
    /// Nobody knows yet, e.g. the reporter stopped reporting.
    Unknown,
}

/// One observation about an object, e.g. `Ready=True` or `Scheduled=False`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// What is observed, e.g. `Ready` or `Scheduled`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Whether it holds.
    pub status: ConditionStatus,
    /// One CamelCase word, e.g. `NoResourcesAvailable`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When `status` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

/// Find a condition by type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// The condition `type_` when its status is `status`.
pub fn find_with_status<'a>(
    conditions: &'a [Condition],
    type_: &str,
    status: ConditionStatus,
) -> Option<&'a Condition> {
    find_condition(conditions, type_).filter(|c| c.status == status)
}

/// Set condition `type_` to the given status, reason and message. The transition time
/// changes only when the status does. Returns whether anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    now: Time,
) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) if c.status == status && c.reason == reason && c.message == message => false,
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Some(now);
            }
            c.status = status;
            c.reason = reason.to_string();
            c.message = message.to_string();
            true
        }
        None => {
            conditions.push(Condition {
                type_: type_.to_string(),
                status,
                reason: reason.to_string(),
                message: message.to_string(),
                last_transition_time: Some(now),
            });
            true
        }
    }
}

/// How long ago condition `type_` last changed status (`None` without one, without a
/// transition time, or with one in the future).
pub fn since_transition(conditions: &[Condition], type_: &str) -> Option<std::time::Duration> {
    let at = find_condition(conditions, type_)?.last_transition_time?;
    (Utc::now() - at).to_std().ok()
}

/// Whether condition `type_` is `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True)
}

/// Whether condition `type_` is `False` (absent or `Unknown` is neither).
pub fn is_false(conditions: &[Condition], type_: &str) -> bool {
    find_with_status(conditions, type_, ConditionStatus::False).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(secs: i64) -> Time {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn set_condition_moves_the_transition_time_only_with_the_status() {
        let mut c = Vec::new();
        // (status, reason, changed?, transition time afterwards)
        let steps = [
            (ConditionStatus::False, "NoTargetNode", true, at(0)),
            (ConditionStatus::False, "NoTargetNode", false, at(0)),
            (ConditionStatus::False, "NoResourcesAvailable", true, at(0)),
            (ConditionStatus::True, "Placed", true, at(3)),
            (ConditionStatus::True, "Placed", false, at(3)),
        ];
        for (i, (status, reason, changed, since)) in steps.into_iter().enumerate() {
            let now = at(i as i64);
            assert_eq!(
                set_condition(&mut c, SCHEDULED, status, reason, "", now),
                changed,
                "step {i}"
            );
            assert_eq!(c.len(), 1, "step {i}: one condition per type");
            assert_eq!(c[0].last_transition_time, Some(since), "step {i}");
            assert_eq!(c[0].reason, reason, "step {i}");
        }
    }

    #[test]
    fn an_instance_is_ready_while_it_runs() {
        use ConditionStatus::{False, True};
        // (phase, status message) → (status, reason, message)
        let cases = [
            (Phase::Running, "", (True, "Running", "the workload runs")),
            (
                Phase::Pending,
                "",
                (False, "Pending", "not bound to a cluster and a node yet"),
            ),
            (
                Phase::Pending,
                "0/2 clusters have room",
                (False, "Pending", "0/2 clusters have room"),
            ),
            (
                Phase::Scheduled,
                "",
                (
                    False,
                    "Scheduled",
                    "bound to a node; its agent has not started it yet",
                ),
            ),
            (
                Phase::Starting,
                "exited (Error, code Some(1)); restarting in 2s",
                (
                    False,
                    "Starting",
                    "exited (Error, code Some(1)); restarting in 2s",
                ),
            ),
            (
                Phase::Succeeded,
                "exited with code 0",
                (False, "Succeeded", "exited with code 0"),
            ),
            (
                Phase::Failed,
                "",
                (False, "Failed", "the workload failed and is not restarted"),
            ),
            (
                Phase::Terminating,
                "",
                (
                    False,
                    "Terminating",
                    "the workload is being stopped and removed",
                ),
            ),
        ];
        for (phase, detail, (status, reason, message)) in cases {
            assert_eq!(
                instance_readiness(phase, detail),
                (status, reason, message.to_string()),
                "{phase:?} {detail:?}"
            );
        }
    }

    #[test]
    fn status_lookups() {
        let mut c = Vec::new();
        set_condition(&mut c, READY, ConditionStatus::True, "", "", at(0));
        set_condition(&mut c, SCHEDULED, ConditionStatus::False, "", "", at(0));
        set_condition(&mut c, "Other", ConditionStatus::Unknown, "", "", at(0));
        // (type, is_true, is_false)
        let cases = [
            (READY, true, false),
            (SCHEDULED, false, true),
            ("Other", false, false),
            ("Absent", false, false),
        ];
        for (type_, t, f) in cases {
            assert_eq!(is_true(&c, type_), t, "{type_} is_true");
            assert_eq!(is_false(&c, type_), f, "{type_} is_false");
        }
        assert!(find_with_status(&c, READY, ConditionStatus::False).is_none());
        assert_eq!(
            find_with_status(&c, SCHEDULED, ConditionStatus::False).map(|c| c.type_.as_str()),
            Some(SCHEDULED)
        );
    }
}
