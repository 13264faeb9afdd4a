//! [`FakeRuntime`]: an in-memory [`Runtime`] for tests. Nothing runs; a test starts
//! workloads through the trait, ends them when it likes ([`FakeRuntime::exit`]), makes
//! the next start fail ([`FakeRuntime::fail_next_start`]), puts a workload in place as
//! if an earlier agent had left it ([`FakeRuntime::insert`]), and reads what was asked
//! of it ([`FakeRuntime::calls`]). Exits are reported on the channel [`FakeRuntime::new`]
//! returns, as the real runtimes report theirs.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crds::Workload;
use tokio::sync::mpsc;

use super::{InstanceId, Runtime, RuntimeError, State};

/// One thing the agent asked of a [`FakeRuntime`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `start` of this Instance, with this env (the agent's part first).
    Start(InstanceId, Vec<(String, String)>),
    /// `stop` of this Instance.
    Stop(InstanceId),
    /// `remove` of this Instance.
    Remove(InstanceId),
}

/// An in-memory runtime (see the module docs).
pub struct FakeRuntime {
    workloads: Mutex<BTreeMap<InstanceId, State>>,
    failures: Mutex<VecDeque<RuntimeError>>,
    calls: Mutex<Vec<Call>>,
    exits: mpsc::UnboundedSender<InstanceId>,
    /// Whether workloads get a network namespace of their own (as containers on a
    /// bridge node do).
    own_network: bool,
    starts: Mutex<u64>,
}

impl FakeRuntime {
    /// A fake runtime whose workloads share the node's network, and the channel its
    /// exits are reported on.
    pub fn new() -> (FakeRuntime, mpsc::UnboundedReceiver<InstanceId>) {
        let (exits, rx) = mpsc::unbounded_channel();
        let fake = FakeRuntime {
            workloads: Mutex::default(),
            failures: Mutex::default(),
            calls: Mutex::default(),
            exits,
            own_network: false,
            starts: Mutex::new(0),
        };
        (fake, rx)
    }

    /// The same, with a network namespace of its own for every workload
    /// (`/run/netns/fake-<ns>_<name>`).
    pub fn with_own_network(mut self) -> FakeRuntime {
        self.own_network = true;
        self
    }

    /// End `id`'s workload with `code` (`None`: unseen), OOM-killed or not, at
    /// `finished`, and report the exit. Nothing happens when it does not run.
    pub fn exit(
        &self,
        id: &InstanceId,
        code: Option<i32>,
        oom_killed: bool,
        finished: DateTime<Utc>,
    ) {
        let mut workloads = self.workloads.lock().expect("not poisoned");
        let Some(State::Running {
            runtime_id,
            started,
        }) = workloads.get(id).cloned()
        else {
            return;
        };
        workloads.insert(
            id.clone(),
            State::Exited {
                runtime_id,
                code,
                oom_killed,
                started,
                finished,
            },
        );
        let _ = self.exits.send(id.clone());
    }

    /// Make the next `start` fail with `error`.
    pub fn fail_next_start(&self, error: RuntimeError) {
        self.failures.lock().expect("not poisoned").push_back(error);
    }

    /// Hold `state` for `id`, as if an earlier agent had left it.
    pub fn insert(&self, id: &InstanceId, state: State) {
        self.workloads
            .lock()
            .expect("not poisoned")
            .insert(id.clone(), state);
    }

    /// What was asked of it so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("not poisoned").clone()
    }

    /// How many starts were asked of it.
    pub fn starts(&self) -> u64 {
        *self.starts.lock().expect("not poisoned")
    }

    fn call(&self, call: Call) {
        self.calls.lock().expect("not poisoned").push(call);
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn kinds(&self) -> Vec<crds::RuntimeKind> {
        vec![crds::RuntimeKind::Container, crds::RuntimeKind::Process]
    }

    fn netns(&self, id: &InstanceId, _workload: &Workload) -> Option<PathBuf> {
        self.own_network
            .then(|| PathBuf::from(format!("/run/netns/fake-{}", id.token())))
    }

    async fn start(
        &self,
        id: &InstanceId,
        _workload: &Workload,
        env: &[(String, String)],
    ) -> Result<State, RuntimeError> {
        self.call(Call::Start(id.clone(), env.to_vec()));
        if let Some(error) = self.failures.lock().expect("not poisoned").pop_front() {
            return Err(error);
        }
        let mut starts = self.starts.lock().expect("not poisoned");
        *starts += 1;
        let state = State::Running {
            runtime_id: format!("fake-{}", *starts),
            started: Utc::now(),
        };
        self.insert(id, state.clone());
        Ok(state)
    }

    async fn state(&self, id: &InstanceId) -> Result<Option<State>, RuntimeError> {
        Ok(self
            .workloads
            .lock()
            .expect("not poisoned")
            .get(id)
            .cloned())
    }

    async fn stop(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        self.call(Call::Stop(id.clone()));
        let mut workloads = self.workloads.lock().expect("not poisoned");
        if let Some(State::Running {
            runtime_id,
            started,
        }) = workloads.get(id).cloned()
        {
            // Ended by SIGTERM, as a stop ends a real workload.
            workloads.insert(
                id.clone(),
                State::Exited {
                    runtime_id,
                    code: Some(143),
                    oom_killed: false,
                    started,
                    finished: Utc::now(),
                },
            );
        }
        Ok(())
    }

    async fn remove(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        self.call(Call::Remove(id.clone()));
        self.workloads.lock().expect("not poisoned").remove(id);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<InstanceId>, RuntimeError> {
        Ok(self
            .workloads
            .lock()
            .expect("not poisoned")
            .keys()
            .cloned()
            .collect())
    }

    fn log_path(&self, id: &InstanceId) -> PathBuf {
        PathBuf::from(format!("/nonexistent/fake/{}", id.token()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scripted_exits_are_reported_and_calls_recorded() {
        let (fake, mut exits) = FakeRuntime::new();
        let id = InstanceId {
            namespace: "default".into(),
            name: "a".into(),
        };
        let workload = Workload::default();
        fake.fail_next_start(RuntimeError::Start {
            instance: id.to_string(),
            message: "scripted".into(),
        });
        assert!(fake.start(&id, &workload, &[]).await.is_err());
        let started = fake.start(&id, &workload, &[]).await.unwrap();
        assert!(matches!(started, State::Running { .. }));
        assert_eq!(fake.list().await.unwrap(), vec![id.clone()]);
        let at = Utc::now();
        fake.exit(&id, Some(3), false, at);
        assert_eq!(exits.recv().await, Some(id.clone()));
        assert!(matches!(
            fake.state(&id).await.unwrap(),
            Some(State::Exited { code: Some(3), finished, .. }) if finished == at
        ));
        fake.remove(&id).await.unwrap();
        assert_eq!(fake.state(&id).await.unwrap(), None);
        assert_eq!(fake.starts(), 1);
        assert_eq!(
            fake.calls(),
            vec![
                Call::Start(id.clone(), vec![]),
                Call::Start(id.clone(), vec![]),
                Call::Remove(id.clone())
            ]
        );
        assert_eq!(fake.netns(&id, &workload), None);
        let (own, _exits) = FakeRuntime::new();
        assert!(own.with_own_network().netns(&id, &workload).is_some());
    }
}
