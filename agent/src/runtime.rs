//! The seam between the agent and what actually runs workloads.

use std::path::PathBuf;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crds::Workload;

/// Which Instance: namespace and name (unique in a cluster).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId {
    pub namespace: String,
    pub name: String,
}

impl InstanceId {
    /// A file-system-safe single token (`ns_name`; names are DNS-1123, so no `_`).
    pub fn token(&self) -> String {
        format!("{}_{}", self.namespace, self.name)
    }

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

/// Where an Instance sits on its node's network: its IP in the node subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceAddress {
    pub ip: std::net::Ipv4Addr,
    pub prefix: u8,
    pub gateway: std::net::Ipv4Addr,
}

/// What a runtime knows about one Instance's workload.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Running {
        runtime_id: String,
        started: DateTime<Utc>,
    },
    Exited {
        runtime_id: String,
        code: Option<i32>,
        oom_killed: bool,
        started: DateTime<Utc>,
        finished: DateTime<Utc>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{instance}: cannot start: {message}")]
    Start { instance: String, message: String },
    #[error("{instance}: network: {message}")]
    Network { instance: String, message: String },
    #[error("{instance}: pulling the image: {message}")]
    ImagePull { instance: String, message: String },
    #[error("{instance}: {step}: {source}")]
    Io {
        instance: String,
        step: &'static str,
        source: std::io::Error,
    },
}

/// Runs workloads. Implemented by the process runtime and the containerd runtime.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// The workload kinds it runs (reported in the Node's spec).
    fn kinds(&self) -> Vec<crds::RuntimeKind>;
    /// Whether `workload` gets its own network and so must wait for an instance IP.
    fn wants_address(&self, _workload: &Workload) -> bool {
        false
    }
    /// Start the workload. `env` comes first, then the template's env; `address` is
    /// given when [`wants_address`](Self::wants_address).
    async fn start(
        &self,
        id: &InstanceId,
        workload: &Workload,
        env: &[(String, String)],
        address: Option<&InstanceAddress>,
    ) -> Result<State, RuntimeError>;
    /// The workload's state, if the runtime has it (running or exited).
    async fn state(&self, id: &InstanceId) -> Result<Option<State>, RuntimeError>;
    /// Stop the workload if it runs, and forget it.
    async fn remove(&self, id: &InstanceId) -> Result<(), RuntimeError>;
    /// Every Instance the runtime has, running or exited (for adoption and cleanup).
    async fn list(&self) -> Result<Vec<InstanceId>, RuntimeError>;
    /// Where the workload's output is kept.
    fn log_path(&self, id: &InstanceId) -> PathBuf;
}

/// Containers through one runtime and native processes through another, on one node.
pub struct Combined {
    pub containers: std::sync::Arc<dyn Runtime>,
    pub processes: std::sync::Arc<dyn Runtime>,
}

impl Combined {
    fn for_kind(&self, kind: crds::RuntimeKind) -> &dyn Runtime {
        match kind {
            crds::RuntimeKind::Process => self.processes.as_ref(),
            _ => self.containers.as_ref(),
        }
    }

    fn both(&self) -> [&dyn Runtime; 2] {
        [self.containers.as_ref(), self.processes.as_ref()]
    }
}

#[async_trait]
impl Runtime for Combined {
    fn name(&self) -> &'static str {
        self.containers.name()
    }

    fn kinds(&self) -> Vec<crds::RuntimeKind> {
        self.both().iter().flat_map(|r| r.kinds()).collect()
    }

    fn wants_address(&self, workload: &Workload) -> bool {
        self.for_kind(workload.runtime).wants_address(workload)
    }

    async fn start(
        &self,
        id: &InstanceId,
        workload: &Workload,
        env: &[(String, String)],
        address: Option<&InstanceAddress>,
    ) -> Result<State, RuntimeError> {
        self.for_kind(workload.runtime)
            .start(id, workload, env, address)
            .await
    }

    async fn state(&self, id: &InstanceId) -> Result<Option<State>, RuntimeError> {
        for r in self.both() {
            if let Some(state) = r.state(id).await? {
                return Ok(Some(state));
            }
        }
        Ok(None)
    }

    async fn remove(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        for r in self.both() {
            r.remove(id).await?;
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<InstanceId>, RuntimeError> {
        let mut all = self.containers.list().await?;
        all.extend(self.processes.list().await?);
        all.sort();
        all.dedup();
        Ok(all)
    }

    fn log_path(&self, id: &InstanceId) -> PathBuf {
        let container = self.containers.log_path(id);
        if container.exists() {
            container
        } else {
            self.processes.log_path(id)
        }
    }
}
