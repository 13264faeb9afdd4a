//! The seam between the agent and what actually runs workloads: the [`Runtime`] trait,
//! the ids and states it speaks in, its error, and [`build`], which puts a worker's
//! runtime together from its settings.
//!
//! Networking is not a runtime's business: a runtime only names the network namespace
//! a workload runs in ([`Runtime::netns`]); the agent's [`network`](crate::network)
//! module makes and attaches it around [`Runtime::start`] and [`Runtime::remove`].

mod build;
pub mod combined;
pub mod containerd;
pub mod fake;
pub mod process;

use std::path::PathBuf;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crds::Workload;

pub use build::{build, Assembly, BuildError, RuntimeChoice, RuntimeSettings};
pub use combined::Combined;

/// Which Instance: namespace and name (unique in a cluster).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId {
    /// The Instance's namespace.
    pub namespace: String,
    /// The Instance's name.
    pub name: String,
}

impl InstanceId {
    /// A file-system-safe single token (`ns_name`; names are DNS-1123, so no `_`).
    pub fn token(&self) -> String {
        format!("{}_{}", self.namespace, self.name)
    }

    /// The id a [`token`](Self::token) was made from (`None` for a name without `_`,
    /// which is not an Instance's).
    pub fn from_token(token: &str) -> Option<Self> {
        let (namespace, name) = token.split_once('_')?;
        Some(InstanceId {
            namespace: namespace.into(),
            name: name.into(),
        })
    }
}

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What a runtime knows about one Instance's workload.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// The workload runs.
    Running {
        /// The runtime's own id of it (a pid, a container id).
        runtime_id: String,
        /// When it started.
        started: DateTime<Utc>,
    },
    /// The workload ran and ended; the runtime still has its record.
    Exited {
        /// The runtime's own id of it (a pid, a container id).
        runtime_id: String,
        /// Its exit code; `None` when nobody saw it end (the agent was down).
        code: Option<i32>,
        /// Whether the kernel killed it for running out of memory.
        oom_killed: bool,
        /// When it started.
        started: DateTime<Utc>,
        /// When it ended (or when its end was noticed).
        finished: DateTime<Utc>,
    },
}

/// Why a runtime could not do what the agent asked.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The workload cannot start as specified (no command, no image, the executable
    /// does not run, containerd refused a step).
    #[error("{instance}: cannot start: {message}")]
    Start {
        /// The Instance (`ns/name`).
        instance: String,
        /// What went wrong, with the step it went wrong at.
        message: String,
    },
    /// The workload's image could not be pulled.
    #[error("{instance}: pulling the image: {source}")]
    ImagePull {
        /// The Instance (`ns/name`).
        instance: String,
        /// Why the pull failed (the registry's own words where it gave some).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The runtime's own bookkeeping failed (files, a call to containerd).
    #[error("{instance}: {step}: {source}")]
    Io {
        /// The Instance (`ns/name`; `*` when about all of them).
        instance: String,
        /// What the runtime was doing.
        step: &'static str,
        /// The failure.
        source: std::io::Error,
    },
}

impl RuntimeError {
    /// The reason an Instance's status shows when its start failed with this error.
    pub fn reason(&self) -> &'static str {
        match self {
            RuntimeError::Start { .. } => "StartFailed",
            RuntimeError::ImagePull { .. } => "ImagePullFailed",
            RuntimeError::Io { .. } => "RuntimeError",
        }
    }
}

/// Runs workloads. Implemented by the process runtime, the containerd runtime, the
/// [`Combined`] pair of both, and the in-memory [`fake::FakeRuntime`] for tests.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// A short name for logs (`process`, `containerd`).
    fn name(&self) -> &'static str;
    /// The workload kinds it runs (reported in the Node's spec).
    fn kinds(&self) -> Vec<crds::RuntimeKind>;
    /// The network namespace `workload` of Instance `id` runs in when it gets a network
    /// of its own; `None`: it shares the node's network. The agent's
    /// [`network`](crate::network) module makes this namespace and attaches it (the
    /// Instance's IP, published ports) before [`start`](Self::start), and takes it
    /// down after [`remove`](Self::remove).
    fn netns(&self, _id: &InstanceId, _workload: &Workload) -> Option<PathBuf> {
        None
    }
    /// Start the workload (in its [`netns`](Self::netns) if it has one). `env` comes
    /// first, then the template's env.
    async fn start(
        &self,
        id: &InstanceId,
        workload: &Workload,
        env: &[(String, String)],
    ) -> Result<State, RuntimeError>;
    /// The workload's state, if the runtime has it (running or exited).
    async fn state(&self, id: &InstanceId) -> Result<Option<State>, RuntimeError>;
    /// Stop the workload if it runs, and keep what the runtime knows of it. The agent
    /// takes the workload's network down after this and before [`Runtime::remove`], so
    /// a workload the runtime still lists never runs without its network.
    async fn stop(&self, id: &InstanceId) -> Result<(), RuntimeError>;
    /// Stop the workload if it runs, and forget it.
    async fn remove(&self, id: &InstanceId) -> Result<(), RuntimeError>;
    /// Every Instance the runtime has, running or exited (for adoption and cleanup).
    async fn list(&self) -> Result<Vec<InstanceId>, RuntimeError>;
    /// Where the workload's output is kept.
    fn log_path(&self, id: &InstanceId) -> PathBuf;
}
