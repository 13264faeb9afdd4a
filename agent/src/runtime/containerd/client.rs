//! The gRPC wrapper around containerd: [`Containerd`], a channel scoped to one
//! containerd namespace with the service clients the runtime and the image pull use,
//! pull leases, and [`CtrError`].

use std::collections::HashMap;
use std::path::Path;

use chrono::Utc;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    CreateRequest as CreateLeaseRequest, DeleteRequest as DeleteLeaseRequest,
};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use super::registry;

/// containerd's overlay snapshotter (the default on Linux).
pub const SNAPSHOTTER: &str = "overlayfs";

/// What went wrong talking to containerd or a registry.
#[derive(Debug, thiserror::Error)]
pub enum CtrError {
    /// containerd refused a call.
    #[error("containerd {call}: {message} ({code:?})")]
    Call {
        /// The service and method (`tasks.start`).
        call: &'static str,
        /// containerd's gRPC status code.
        code: Code,
        /// containerd's message.
        message: String,
    },
    /// The registry half of a pull failed.
    #[error(transparent)]
    Pull(#[from] registry::RegistryError),
    /// A stored image is not usable (malformed blobs, no manifest for this platform).
    #[error("image: {0}")]
    Image(String),
    /// containerd (or the runtime's data directory) is not there.
    #[error("connecting to containerd at {path}: {message}")]
    Connect {
        /// The socket (or directory) tried.
        path: String,
        /// What went wrong.
        message: String,
    },
}

impl CtrError {
    /// containerd answered `call` with `status`.
    pub(super) fn call(call: &'static str, status: Status) -> CtrError {
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
    /// Connect to containerd at `socket`; requests are made in `namespace`.
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
    pub(super) fn req<T>(&self, message: T) -> Request<T> {
        let mut req = Request::new(message);
        req.metadata_mut().insert(
            "containerd-namespace",
            self.namespace.parse().expect("namespace names are ASCII"),
        );
        req
    }

    /// A request in this namespace that holds `lease` (what it writes is not collected).
    pub(super) fn leased<T>(&self, message: T, lease: &str) -> Request<T> {
        let mut req = self.req(message);
        req.metadata_mut().insert(
            "containerd-lease",
            lease.parse().expect("lease ids are ASCII"),
        );
        req
    }

    /// A new lease that expires in an hour, for the writes of one pull.
    pub(super) async fn lease(&self) -> Result<String, CtrError> {
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

    /// Drop `id` (what it held is collected unless something else refers to it).
    pub(super) async fn drop_lease(&self, id: &str) {
        let _ = LeasesClient::new(self.channel.clone())
            .delete(self.req(DeleteLeaseRequest {
                id: id.to_string(),
                sync: false,
            }))
            .await;
    }

    pub(super) fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone())
    }
    pub(super) fn content(&self) -> ContentClient<Channel> {
        ContentClient::new(self.channel.clone())
    }
    pub(super) fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }
    pub(super) fn diff(&self) -> DiffClient<Channel> {
        DiffClient::new(self.channel.clone())
    }
    pub(super) fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }
    pub(super) fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }
    pub(super) fn events(&self) -> EventsClient<Channel> {
        EventsClient::new(self.channel.clone())
    }

    /// The containerd namespace requests are made in.
    pub(super) fn namespace(&self) -> &str {
        &self.namespace
    }
}
