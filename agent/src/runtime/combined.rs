//! [`Combined`]: one node running containers through one runtime and native processes
//! through another, dispatched by the workload's kind.

use std::path::PathBuf;

use async_trait::async_trait;
use crds::Workload;

use super::{InstanceId, Runtime, RuntimeError, State};

/// Containers through one runtime and native processes through another, on one node.
pub struct Combined {
    /// Runs every kind but `Process`.
    pub containers: std::sync::Arc<dyn Runtime>,
    /// Runs `Process` workloads.
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

    fn netns(&self, id: &InstanceId, workload: &Workload) -> Option<PathBuf> {
        self.for_kind(workload.runtime).netns(id, workload)
    }

    async fn start(
        &self,
        id: &InstanceId,
        workload: &Workload,
        env: &[(String, String)],
    ) -> Result<State, RuntimeError> {
        self.for_kind(workload.runtime)
            .start(id, workload, env)
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

    async fn stop(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        for r in self.both() {
            r.stop(id).await?;
        }
        Ok(())
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
