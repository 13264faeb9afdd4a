//! Prometheus metrics of the agent, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The `reason` label of the exit counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why the workload exited (`Completed`, `Error`, `OOMKilled`, …).
    pub reason: String,
}

/// The agent's metrics, registered under the `oakestra_agent` prefix.
pub struct Metrics {
    registry: Registry,
    /// Workloads started (first starts and restarts).
    pub starts: Counter,
    /// Restarts after an exit.
    pub restarts: Counter,
    /// Exits seen, by reason (`Completed`, `Error`, `OOMKilled`, …).
    pub exits: Family<ReasonLabel, Counter>,
    /// Instances the runtime holds.
    pub instances: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("oakestra_agent");
        let (starts, restarts, exits, instances) = (
            Counter::default(),
            Counter::default(),
            Family::<ReasonLabel, Counter>::default(),
            Gauge::default(),
        );
        registry.register("starts", "Workloads started", starts.clone());
        registry.register(
            "restarts",
            "Workloads restarted after an exit",
            restarts.clone(),
        );
        registry.register("exits", "Workload exits by reason", exits.clone());
        registry.register(
            "instances",
            "Instances the runtime holds",
            instances.clone(),
        );
        Metrics {
            registry,
            starts,
            restarts,
            exits,
            instances,
        }
    }
}

impl Metrics {
    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}
