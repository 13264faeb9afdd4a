//! The containerd runtime: Instances as containers through containerd's gRPC API.
//!
//! Each node uses its own containerd namespace (`oakestra-<node>`), so several workers can
//! share one containerd. A container is named after its Instance (`<ns>_<name>`), which
//! is how the agent finds its containers again after a restart. Images are pulled on the
//! client side ([`image`]); the container's rootfs is an overlayfs snapshot of the image;
//! stdout and stderr go to a log file the shim appends to (so logs outlive the agent);
//! exits arrive as `/tasks/exit` events; limits are cgroup resources in the OCI spec and
//! an OOM kill is read from the container's memory cgroup before the task is deleted.

pub mod image;
pub mod network;
pub mod registry;
pub mod spec;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use containerd_client::services::v1::container::Runtime as ContainerRuntime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateRequest as CreateLeaseRequest, CreateTaskRequest,
    DeleteContainerRequest, DeleteRequest as DeleteLeaseRequest, DeleteTaskRequest,
    GetContainerRequest, GetRequest, KillRequest, ListContainersRequest, StartRequest,
    SubscribeRequest,
};
use containerd_client::types::v1::Status as TaskStatus;
use crds::Workload;
use prost::Message;
use sha2::Digest;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::cgroup::Cgroups;
use crate::runtime::{InstanceAddress, InstanceId, Runtime, RuntimeError, State};

/// containerd's overlay snapshotter (the default on Linux).
pub const SNAPSHOTTER: &str = "overlayfs";
/// The runc shim.
const RUNTIME: &str = "io.containerd.runc.v2";
const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// Label carrying the Instance a container belongs to.
const INSTANCE_LABEL: &str = "oakestra.io/instance";
/// Label carrying the container's address (`ip/prefix gateway`), to detach it later.
const ADDRESS_LABEL: &str = "oakestra.io/address";
/// How long a start waits for another container of the node to release its address
/// (longer than a stop: TERM, then KILL after 5 s).
const ADDRESS_WAIT: Duration = Duration::from_secs(15);
/// Label carrying the published ports (JSON), to publish them again after a restart.
const PORTS_LABEL: &str = "oakestra.io/ports";

fn address_label(a: &InstanceAddress) -> String {
    format!("{}/{} {}", a.ip, a.prefix, a.gateway)
}

fn parse_address_label(s: &str) -> Option<InstanceAddress> {
    let (cidr, gateway) = s.split_once(' ')?;
    let (ip, prefix) = cidr.split_once('/')?;
    Some(InstanceAddress {
        ip: ip.parse().ok()?,
        prefix: prefix.parse().ok()?,
        gateway: gateway.parse().ok()?,
    })
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = sha2::Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// What went wrong talking to containerd or a registry.
#[derive(Debug, thiserror::Error)]
pub enum CtrError {
    #[error("containerd {call}: {message} ({code:?})")]
    Call {
        call: &'static str,
        code: Code,
        message: String,
    },
    #[error(transparent)]
    Pull(#[from] registry::RegistryError),
    #[error("image: {0}")]
    Image(String),
    #[error("connecting to containerd at {path}: {message}")]
    Connect { path: String, message: String },
}

impl CtrError {
    fn call(call: &'static str, status: Status) -> CtrError {
        CtrError::Call {
            call,
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}

/// A connection to containerd, scoped to one namespace.
#[derive(Clone)]
pub struct Containerd {
    channel: Channel,
    namespace: String,
}

impl Containerd {
    pub async fn connect(socket: &Path, namespace: &str) -> Result<Containerd, CtrError> {
        let channel = containerd_client::connect(socket)
            .await
            .map_err(|e| CtrError::Connect {
                path: socket.display().to_string(),
                message: format!(
                    "{e}: {}",
                    std::error::Error::source(&e)
                        .map(|s| s.to_string())
                        .unwrap_or_default()
                ),
            })?;
        Ok(Containerd {
            channel,
            namespace: namespace.to_string(),
        })
    }

    /// A request in this namespace.
    fn req<T>(&self, message: T) -> Request<T> {
        let mut req = Request::new(message);
        req.metadata_mut().insert(
            "containerd-namespace",
            self.namespace.parse().expect("namespace names are ASCII"),
        );
        req
    }

    /// A request in this namespace that holds `lease` (what it writes is not collected).
    fn leased<T>(&self, message: T, lease: &str) -> Request<T> {
        let mut req = self.req(message);
        req.metadata_mut().insert(
            "containerd-lease",
            lease.parse().expect("lease ids are ASCII"),
        );
        req
    }

    async fn lease(&self) -> Result<String, CtrError> {
        let id = format!("oakestra-pull-{}", uuid::Uuid::new_v4().simple());
        let mut labels = HashMap::new();
        let expire = Utc::now() + chrono::Duration::hours(1);
        labels.insert("containerd.io/gc.expire".to_string(), expire.to_rfc3339());
        LeasesClient::new(self.channel.clone())
            .create(self.req(CreateLeaseRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .map_err(|s| CtrError::call("leases.create", s))?;
        Ok(id)
    }

    async fn drop_lease(&self, id: &str) {
        let _ = LeasesClient::new(self.channel.clone())
            .delete(self.req(DeleteLeaseRequest {
                id: id.to_string(),
                sync: false,
            }))
            .await;
    }

    fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone())
    }
    fn content(&self) -> ContentClient<Channel> {
        ContentClient::new(self.channel.clone())
    }
    fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }
    fn diff(&self) -> DiffClient<Channel> {
        DiffClient::new(self.channel.clone())
    }
    fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }
    fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }
}

/// Settings of the containerd runtime.
#[derive(Debug, Clone)]
pub struct ContainerdConfig {
    pub socket: PathBuf,
    /// Node name: the containerd namespace is `oakestra-<node>`, cgroups `/oakestra/<node>/…`.
    pub node: String,
    /// Where container logs are kept.
    pub data_dir: PathBuf,
    /// Registries (`host[:port]`) spoken to over plain HTTP (loopback always is).
    pub insecure_registries: Vec<String>,
    /// Each container in its own network namespace on this bridge; `None`: the node's
    /// network (ports are then the container's own).
    pub network: Option<network::Bridge>,
    /// Where published ports listen.
    pub publish_address: std::net::Ipv4Addr,
}

pub struct ContainerdRuntime {
    ctr: Containerd,
    config: ContainerdConfig,
    http: reqwest::Client,
    cgroups: Cgroups,
    publisher: network::Publisher,
    /// One pull at a time per image reference.
    pulls: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// How long each step of a start took, for the debug log (`image=2ms network=35ms …`).
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
            message: p.to_string(),
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
            publisher: Default::default(),
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

    /// Wait until no other container of this node holds `address` (one that is being
    /// removed, e.g. the Instance this one replaces, still stopping): two containers
    /// with one IP on the bridge would split its traffic. Gives up after
    /// [`ADDRESS_WAIT`].
    async fn wait_for_address(
        &self,
        id: &InstanceId,
        address: &InstanceAddress,
    ) -> Result<(), RuntimeError> {
        let token = id.token();
        let deadline = tokio::time::Instant::now() + ADDRESS_WAIT;
        loop {
            let containers = self
                .containers()
                .await
                .map_err(grpc_failed(id, "listing containers"))?;
            let holder = containers.iter().find(|c| {
                c.id != token
                    && c.labels
                        .get(ADDRESS_LABEL)
                        .and_then(|l| parse_address_label(l))
                        .is_some_and(|a| a.ip == address.ip)
            });
            let Some(holder) = holder else {
                return Ok(());
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(RuntimeError::Network {
                    instance: id.to_string(),
                    message: format!(
                        "address {} is still held by container {} after {}s",
                        address.ip,
                        holder.id,
                        ADDRESS_WAIT.as_secs()
                    ),
                });
            }
            tracing::debug!(instance = %id, address = %address.ip, holder = %holder.id, "waiting for the address to be released");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn create(
        &self,
        id: &InstanceId,
        workload: &Workload,
        env: &[(String, String)],
        address: Option<&InstanceAddress>,
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
        let network =
            match (&self.config.network, address) {
                (Some(bridge), Some(address)) => {
                    self.wait_for_address(id, address).await?;
                    labels.insert(ADDRESS_LABEL.to_string(), address_label(address));
                    let path = bridge.attach(&token, address).await.map_err(|e| {
                        RuntimeError::Network {
                            instance: id.to_string(),
                            message: e.to_string(),
                        }
                    })?;
                    spec::Network::Path(path)
                }
                _ => spec::Network::Host,
            };
        laps.lap("network");
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
        let published: Vec<_> = workload
            .ports
            .iter()
            .filter(|p| p.host_port.is_some())
            .cloned()
            .collect();
        if let (Some(address), false) = (address, published.is_empty()) {
            self.publisher
                .publish(&token, self.config.publish_address, address.ip, &published)
                .await
                .map_err(|e| RuntimeError::Network {
                    instance: id.to_string(),
                    message: e.to_string(),
                })?;
            labels.insert(
                PORTS_LABEL.to_string(),
                serde_json::to_string(&published).expect("ports serialize"),
            );
        }
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

    /// Publish the ports of a running container found after an agent restart.
    async fn republish(&self, token: &str, labels: &HashMap<String, String>) {
        if self.publisher.has(token) {
            return;
        }
        let address = labels
            .get(ADDRESS_LABEL)
            .and_then(|a| parse_address_label(a));
        let ports: Option<Vec<crds::ServicePort>> = labels
            .get(PORTS_LABEL)
            .and_then(|p| serde_json::from_str(p).ok());
        if let (Some(address), Some(ports)) = (address, ports) {
            if let Err(e) = self
                .publisher
                .publish(token, self.config.publish_address, address.ip, &ports)
                .await
            {
                tracing::warn!(container = token, error = %e, "publishing ports again failed");
            }
        }
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

    fn wants_address(&self, _workload: &Workload) -> bool {
        self.config.network.is_some()
    }

    async fn start(
        &self,
        id: &InstanceId,
        workload: &Workload,
        env: &[(String, String)],
        address: Option<&InstanceAddress>,
    ) -> Result<State, RuntimeError> {
        let started = Utc::now();
        let result = self.create(id, workload, env, address).await;
        match result {
            Ok(pid) => {
                tracing::debug!(instance = %id, pid, "container started");
                Ok(State::Running {
                    runtime_id: id.token(),
                    started,
                })
            }
            Err(e) => {
                // Leave nothing half-made behind (the network may be attached before the
                // container that records it exists).
                let _ = self.remove(id).await;
                if let (Some(bridge), Some(address)) = (&self.config.network, address) {
                    let _ = bridge.detach(&id.token(), address).await;
                }
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
            _ => {
                self.republish(&token, &container.labels).await;
                State::Running {
                    runtime_id: token,
                    started,
                }
            }
        }))
    }

    async fn remove(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        let ctr = &self.ctr;
        let token = id.token();
        self.publisher.unpublish(&token);
        self.stop_task(&token)
            .await
            .map_err(grpc_failed(id, "stopping the task"))?;
        let container = ctr
            .containers()
            .get(ctr.req(GetContainerRequest { id: token.clone() }))
            .await;
        let address = container
            .ok()
            .and_then(|c| c.into_inner().container)
            .and_then(|c| parse_address_label(c.labels.get(ADDRESS_LABEL)?));
        if let (Some(bridge), Some(address)) = (&self.config.network, address) {
            bridge
                .detach(&token, &address)
                .await
                .map_err(|e| RuntimeError::Network {
                    instance: id.to_string(),
                    message: e.to_string(),
                })?;
        }
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
    let filter = format!("topic==\"/tasks/exit\",namespace==\"{}\"", ctr.namespace);
    loop {
        let subscribed = EventsClient::new(ctr.channel.clone())
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
