//! The containerd runtime: Instances as containers through containerd's gRPC API.
//!
//! Each node uses its own containerd namespace (`oakestra-<node>`), so several workers can
//! share one containerd. A container is named after its Instance (`<ns>_<name>`), which
//! is how the agent finds its containers again after a restart. Images are pulled on the
//! client side ([`image`], from registries through [`registry`]); the container's rootfs
//! is an overlayfs snapshot of the image; stdout and stderr go to a log file the shim
//! appends to (so logs outlive the agent); exits arrive as `/tasks/exit` events; limits
//! are cgroup resources in the OCI spec ([`spec`]) and an OOM kill is read from the
//! container's memory cgroup before the task is deleted. With a network of its own, a
//! container joins the namespace [`Runtime::netns`] names, which the agent's
//! [`network`](crate::network) module has made and attached.
//!
//! Modules: [`client`] wraps containerd's gRPC services, [`image`] pulls and unpacks
//! images into containerd, [`registry`] speaks the OCI distribution protocol, [`spec`]
//! builds the OCI runtime spec.

pub mod client;
pub mod image;
pub mod registry;
pub mod spec;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use containerd_client::services::v1::container::Runtime as ContainerRuntime;
use containerd_client::services::v1::snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetContainerRequest, GetRequest, KillRequest, ListContainersRequest,
    StartRequest, SubscribeRequest,
};
use containerd_client::types::v1::Status as TaskStatus;
use crds::Workload;
use prost::Message;
use tokio::sync::mpsc;
use tonic::{Code, Status};

pub use client::{Containerd, CtrError, SNAPSHOTTER};

use super::{InstanceId, Runtime, RuntimeError, State};
use crate::cgroup::Cgroups;

/// The runc shim.
const RUNTIME: &str = "io.containerd.runc.v2";
const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// Label carrying the Instance a container belongs to.
const INSTANCE_LABEL: &str = "oakestra.io/instance";

/// Settings of the containerd runtime.
#[derive(Debug, Clone)]
pub struct ContainerdConfig {
    /// containerd's gRPC socket.
    pub socket: PathBuf,
    /// Node name: the containerd namespace is `oakestra-<node>`, cgroups `/oakestra/<node>/…`.
    pub node: String,
    /// Where container logs are kept.
    pub data_dir: PathBuf,
    /// Registries (`host[:port]`) spoken to over plain HTTP (loopback always is).
    pub insecure_registries: Vec<String>,
    /// Each container in a network namespace of its own (see [`Runtime::netns`]);
    /// `false`: in the node's network (its ports are then the node's).
    pub own_network: bool,
}

/// Runs container workloads through containerd (see the module docs).
pub struct ContainerdRuntime {
    ctr: Containerd,
    config: ContainerdConfig,
    http: reqwest::Client,
    cgroups: Cgroups,
    /// One pull at a time per image reference.
    pulls: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// How long each step of a start took, for the debug log (`image=2ms rootfs=35ms …`).
struct Laps {
    last: std::time::Instant,
    laps: Vec<(&'static str, Duration)>,
}

impl Laps {
    fn start() -> Laps {
        Laps {
            last: std::time::Instant::now(),
            laps: Vec::new(),
        }
    }

    fn lap(&mut self, step: &'static str) {
        let now = std::time::Instant::now();
        self.laps.push((step, now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for Laps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (step, took)) in self.laps.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{step}={}ms", took.as_millis())?;
        }
        Ok(())
    }
}

/// Map a containerd failure at `step` of Instance `id` to the agent's error.
fn failed(id: &InstanceId, step: &'static str) -> impl FnOnce(CtrError) -> RuntimeError {
    let instance = id.to_string();
    move |e| match e {
        CtrError::Pull(p) => RuntimeError::ImagePull {
            instance,
            source: Box::new(p),
        },
        other => RuntimeError::Start {
            instance,
            message: format!("{step}: {other}"),
        },
    }
}

/// Map a failed containerd call at `step` of Instance `id` (`*` when of all) to the
/// agent's error.
fn grpc_failed(
    id: &dyn std::fmt::Display,
    step: &'static str,
) -> impl FnOnce(Status) -> RuntimeError {
    let instance = id.to_string();
    move |s| RuntimeError::Io {
        instance,
        step,
        source: std::io::Error::other(s.message().to_string()),
    }
}

fn not_found(r: &Result<impl Sized, Status>) -> bool {
    matches!(r, Err(s) if s.code() == Code::NotFound)
}

fn time(ts: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let ts = ts?;
    Utc.timestamp_opt(ts.seconds, ts.nanos.max(0) as u32)
        .single()
}

impl ContainerdRuntime {
    /// Connect to containerd and start forwarding exits of this node's containers to
    /// `exits`.
    pub async fn new(
        config: ContainerdConfig,
        cgroups: Cgroups,
        exits: mpsc::UnboundedSender<InstanceId>,
    ) -> Result<ContainerdRuntime, CtrError> {
        let namespace = format!("oakestra-{}", config.node);
        let ctr = Containerd::connect(&config.socket, &namespace).await?;
        // Fail now, with the socket in the message, if containerd does not answer.
        ctr.containers()
            .list(ctr.req(ListContainersRequest::default()))
            .await
            .map_err(|s| CtrError::Connect {
                path: config.socket.display().to_string(),
                message: s.message().to_string(),
            })?;
        std::fs::create_dir_all(config.data_dir.join("containers")).map_err(|e| {
            CtrError::Connect {
                path: config.data_dir.display().to_string(),
                message: e.to_string(),
            }
        })?;
        tokio::spawn(forward_exits(ctr.clone(), exits));
        Ok(ContainerdRuntime {
            ctr,
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()
                .expect("a default HTTP client builds"),
            config,
            cgroups,
            pulls: Default::default(),
        })
    }

    fn container_dir(&self, id: &InstanceId) -> PathBuf {
        self.config.data_dir.join("containers").join(id.token())
    }

    fn cgroups_path(&self, id: &InstanceId) -> String {
        format!("/oakestra/{}/{}", self.config.node, id.token())
    }

    async fn image(&self, reference: &str) -> Result<image::Unpacked, CtrError> {
        let lock = self
            .pulls
            .lock()
            .await
            .entry(reference.to_string())
            .or_default()
            .clone();
        let _one = lock.lock().await;
        self.ctr
            .ensure_image(reference, &self.http, &self.config.insecure_registries)
            .await
    }

    /// The containers of this node's namespace.
    async fn containers(&self) -> Result<Vec<containerd_client::services::v1::Container>, Status> {
        let ctr = &self.ctr;
        let listed = ctr
            .containers()
            .list(ctr.req(ListContainersRequest::default()))
            .await?;
        Ok(listed.into_inner().containers)
    }

    async fn create(
        &self,
        id: &InstanceId,
        workload: &Workload,
        env: &[(String, String)],
    ) -> Result<u32, RuntimeError> {
        let reference = workload
            .image
            .as_deref()
            .ok_or_else(|| RuntimeError::Start {
                instance: id.to_string(),
                message: "no image".into(),
            })?;
        let mut laps = Laps::start();
        let image = self.image(reference).await.map_err(failed(id, "image"))?;
        laps.lap("image");
        let args = spec::argv(workload, &image.config);
        if args.is_empty() {
            return Err(RuntimeError::Start {
                instance: id.to_string(),
                message: format!(
                    "{reference} has no entrypoint or cmd and the template no command"
                ),
            });
        }
        let cwd = image
            .config
            .config
            .working_dir
            .clone()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "/".into());
        let token = id.token();
        let mut labels = HashMap::new();
        labels.insert(INSTANCE_LABEL.to_string(), id.to_string());
        let network = match self.netns(id, workload) {
            Some(path) => spec::Network::Path(path.display().to_string()),
            None => spec::Network::Host,
        };
        let spec = spec::build(
            &id.name,
            args,
            spec::env(workload, &image.config, env),
            &cwd,
            workload,
            &self.cgroups_path(id),
            &network,
        );
        let ctr = &self.ctr;
        let mounts = ctr
            .snapshots()
            .prepare(ctr.req(PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: token.clone(),
                parent: image.chain_id.clone(),
                ..Default::default()
            }))
            .await
            .map_err(|s| {
                failed(id, "preparing the rootfs")(CtrError::call("snapshots.prepare", s))
            })?
            .into_inner()
            .mounts;
        laps.lap("rootfs");
        let container = Container {
            id: token.clone(),
            labels,
            image: image.name.clone(),
            runtime: Some(ContainerRuntime {
                name: RUNTIME.into(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE.into(),
                value: serde_json::to_vec(&spec).expect("specs serialize"),
            }),
            snapshotter: SNAPSHOTTER.into(),
            snapshot_key: token.clone(),
            ..Default::default()
        };
        ctr.containers()
            .create(ctr.req(CreateContainerRequest {
                container: Some(container),
            }))
            .await
            .map_err(|s| {
                failed(id, "creating the container")(CtrError::call("containers.create", s))
            })?;
        laps.lap("container");
        let dir = self.container_dir(id);
        std::fs::create_dir_all(&dir).map_err(|source| RuntimeError::Io {
            instance: id.to_string(),
            step: "creating the log directory",
            source,
        })?;
        let log = format!("file://{}", dir.join("log").display());
        ctr.tasks()
            .create(ctr.req(CreateTaskRequest {
                container_id: token.clone(),
                rootfs: mounts,
                stdout: log.clone(),
                stderr: log,
                ..Default::default()
            }))
            .await
            .map_err(|s| failed(id, "creating the task")(CtrError::call("tasks.create", s)))?;
        laps.lap("task");
        let started = ctr
            .tasks()
            .start(ctr.req(StartRequest {
                container_id: token,
                exec_id: String::new(),
            }))
            .await
            .map_err(|s| failed(id, "starting the task")(CtrError::call("tasks.start", s)))?;
        laps.lap("start");
        tracing::debug!(instance = %id, took = %laps, "container created and started");
        Ok(started.into_inner().pid)
    }

    /// Whether the task runs: `None` when there is no task.
    async fn task_running(&self, token: &str) -> Result<Option<bool>, Status> {
        let ctr = &self.ctr;
        let task = ctr
            .tasks()
            .get(ctr.req(GetRequest {
                container_id: token.into(),
                exec_id: String::new(),
            }))
            .await;
        match task {
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(s),
            Ok(r) => Ok(Some(
                r.into_inner()
                    .process
                    .is_some_and(|p| p.status() != TaskStatus::Stopped),
            )),
        }
    }

    /// Kill the task (TERM, then KILL after a grace period) and delete it.
    async fn stop_task(&self, token: &str) -> Result<(), Status> {
        let ctr = &self.ctr;
        match self.task_running(token).await? {
            None => return Ok(()),
            Some(false) => {}
            Some(true) => {
                for signal in [15u32, 9] {
                    let _ = ctr
                        .tasks()
                        .kill(ctr.req(KillRequest {
                            container_id: token.into(),
                            exec_id: String::new(),
                            signal,
                            all: true,
                        }))
                        .await;
                    let mut stopped = false;
                    for _ in 0..50 {
                        if self.task_running(token).await? != Some(true) {
                            stopped = true;
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    if stopped {
                        break;
                    }
                }
            }
        }
        match ctr
            .tasks()
            .delete(ctr.req(DeleteTaskRequest {
                container_id: token.into(),
            }))
            .await
        {
            Err(s) if s.code() != Code::NotFound => Err(s),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Runtime for ContainerdRuntime {
    fn name(&self) -> &'static str {
        "containerd"
    }

    fn kinds(&self) -> Vec<crds::RuntimeKind> {
        vec![crds::RuntimeKind::Container]
    }

    fn netns(&self, id: &InstanceId, _workload: &Workload) -> Option<PathBuf> {
        self.config
            .own_network
            .then(|| PathBuf::from(format!("/run/netns/oak-{}", id.token())))
    }

    async fn start(
        &self,
        id: &InstanceId,
        workload: &Workload,
        env: &[(String, String)],
    ) -> Result<State, RuntimeError> {
        let started = Utc::now();
        let result = self.create(id, workload, env).await;
        match result {
            Ok(pid) => {
                tracing::debug!(instance = %id, pid, "container started");
                Ok(State::Running {
                    runtime_id: id.token(),
                    started,
                })
            }
            Err(e) => {
                // Leave nothing half-made behind.
                let _ = self.remove(id).await;
                Err(e)
            }
        }
    }

    async fn state(&self, id: &InstanceId) -> Result<Option<State>, RuntimeError> {
        let ctr = &self.ctr;
        let token = id.token();
        let container = ctr
            .containers()
            .get(ctr.req(GetContainerRequest { id: token.clone() }))
            .await;
        if not_found(&container) {
            return Ok(None);
        }
        let container = container
            .map_err(grpc_failed(id, "containers.get"))?
            .into_inner()
            .container
            .unwrap_or_default();
        let started = time(container.created_at).unwrap_or_else(Utc::now);
        let task = ctr
            .tasks()
            .get(ctr.req(GetRequest {
                container_id: token.clone(),
                exec_id: String::new(),
            }))
            .await;
        if not_found(&task) {
            // The container exists without a task: its task ended and was cleaned up.
            return Ok(Some(State::Exited {
                runtime_id: token,
                code: None,
                oom_killed: false,
                started,
                finished: Utc::now(),
            }));
        }
        let process = task
            .map_err(grpc_failed(id, "tasks.get"))?
            .into_inner()
            .process
            .unwrap_or_default();
        Ok(Some(match process.status() {
            TaskStatus::Stopped => State::Exited {
                runtime_id: token.clone(),
                code: Some(process.exit_status as i32),
                oom_killed: self.cgroups.oom_killed(&id.token()),
                started,
                finished: time(process.exited_at).unwrap_or_else(Utc::now),
            },
            _ => State::Running {
                runtime_id: token,
                started,
            },
        }))
    }

    async fn stop(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        self.stop_task(&id.token())
            .await
            .map_err(grpc_failed(id, "stopping the task"))
    }

    async fn remove(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        let ctr = &self.ctr;
        let token = id.token();
        self.stop_task(&token)
            .await
            .map_err(grpc_failed(id, "stopping the task"))?;
        let deleted = ctr
            .containers()
            .delete(ctr.req(DeleteContainerRequest { id: token.clone() }))
            .await;
        if !not_found(&deleted) {
            deleted.map_err(grpc_failed(id, "containers.delete"))?;
        }
        let removed = ctr
            .snapshots()
            .remove(ctr.req(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: token.clone(),
            }))
            .await;
        if !not_found(&removed) {
            removed.map_err(grpc_failed(id, "snapshots.remove"))?;
        }
        match std::fs::remove_dir_all(self.container_dir(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(RuntimeError::Io {
                instance: id.to_string(),
                step: "removing the log directory",
                source: e,
            }),
            _ => Ok(()),
        }
    }

    async fn list(&self) -> Result<Vec<InstanceId>, RuntimeError> {
        let listed = self
            .containers()
            .await
            .map_err(grpc_failed(&"*", "listing containers"))?;
        Ok(listed
            .iter()
            .filter_map(|c| InstanceId::from_token(&c.id))
            .collect())
    }

    fn log_path(&self, id: &InstanceId) -> PathBuf {
        self.container_dir(id).join("log")
    }
}

/// Forward `/tasks/exit` events of this namespace to the agent, resubscribing when the
/// stream breaks (containerd restarted).
async fn forward_exits(ctr: Containerd, exits: mpsc::UnboundedSender<InstanceId>) {
    #[derive(Clone, PartialEq, prost::Message)]
    struct TaskExit {
        #[prost(string, tag = "1")]
        container_id: String,
    }
    let filter = format!("topic==\"/tasks/exit\",namespace==\"{}\"", ctr.namespace());
    loop {
        let subscribed = ctr
            .events()
            .subscribe(SubscribeRequest {
                filters: vec![filter.clone()],
            })
            .await;
        match subscribed {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                while let Ok(Some(envelope)) = stream.message().await {
                    let Some(event) = envelope.event else {
                        continue;
                    };
                    if let Ok(exit) = TaskExit::decode(event.value.as_slice()) {
                        if let Some(id) = InstanceId::from_token(&exit.container_id) {
                            if exits.send(id).is_err() {
                                return;
                            }
                        }
                    }
                }
                tracing::warn!("containerd event stream ended; resubscribing");
            }
            Err(e) => tracing::warn!(error = %e, "subscribing to containerd events failed"),
        }
        if exits.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
