//! Instance networking, outside the runtime: on a bridge node each networked Instance
//! gets the network namespace its runtime names ([`Runtime::netns`]), attached to the
//! node's bridge with its instance IP ([`bridge`]), and its published ports forwarded
//! from the node's address ([`publish`]). The agent calls [`Network::attach`] before a
//! start and [`Network::detach`] after a removal; the runtime never calls in here.
//!
//! What is attached is recorded under `<data>/network/<ns>_<name>.json` (address,
//! namespace, ports), so an agent that restarts can publish an adopted Instance's ports
//! again and take down what no Instance wants any more. A start waits until no other
//! Instance of the node holds its address (the one it replaces may still be stopping).
//!
//! [`Runtime::netns`]: crate::runtime::Runtime::netns

pub mod bridge;
pub mod publish;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crds::ServicePort;
use serde::{Deserialize, Serialize};

pub use bridge::{Bridge, DEFAULT_CNI_PATH};
pub use publish::Publisher;

use crate::runtime::InstanceId;

/// How a worker networks its containers (the `--network` flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum NetworkMode {
    /// Each container in a namespace of its own with its instance IP on the node's
    /// bridge (needs the CNI plugins).
    #[default]
    Bridge,
    /// Containers share the node's network.
    Host,
}

impl NetworkMode {
    /// The spelling the flag takes.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Bridge => "bridge",
            NetworkMode::Host => "host",
        }
    }
}

impl std::fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--network` value that is neither `bridge` nor `host`.
#[derive(Debug, thiserror::Error)]
#[error("{0:?}: expected bridge or host")]
pub struct UnknownNetworkMode(pub String);

impl std::str::FromStr for NetworkMode {
    type Err = UnknownNetworkMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bridge" => Ok(NetworkMode::Bridge),
            "host" => Ok(NetworkMode::Host),
            other => Err(UnknownNetworkMode(other.to_string())),
        }
    }
}

/// Where an Instance sits on its node's network: its IP in the node subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceAddress {
    /// The instance IP.
    pub ip: Ipv4Addr,
    /// The node subnet's prefix length.
    pub prefix: u8,
    /// The node subnet's gateway (the bridge's address).
    pub gateway: Ipv4Addr,
}

/// Why attaching or detaching an Instance's network failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A setup command (`ip`, the CNI plugin) failed.
    #[error("{step}: {message}")]
    Setup {
        /// The command or step.
        step: String,
        /// Its error output.
        message: String,
    },
    /// A published host port is taken by someone else.
    #[error("host port {port}/{proto} on {address} is in use: {source}")]
    PortInUse {
        /// The node address the port was to listen on.
        address: String,
        /// The host port.
        port: u16,
        /// `tcp` or `udp`.
        proto: &'static str,
        /// The bind error.
        source: std::io::Error,
    },
    /// Another Instance of the node kept the address for longer than a stop takes.
    #[error("address {ip} is still held by {holder} after {}s", waited.as_secs())]
    AddressHeld {
        /// The address.
        ip: Ipv4Addr,
        /// The Instance holding it.
        holder: InstanceId,
        /// How long the start waited.
        waited: Duration,
    },
    /// The record of an attachment could not be written or removed.
    #[error("{step} {}: {source}", path.display())]
    Record {
        /// What was being done.
        step: &'static str,
        /// The record's file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

/// How long a start waits for another Instance of the node to release its address
/// (longer than a stop: TERM, then KILL after 5 s).
const ADDRESS_WAIT: Duration = Duration::from_secs(15);

/// What one Instance has attached, as recorded on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Attachment {
    address: InstanceAddress,
    netns: PathBuf,
    /// The ports published (those with a host port).
    ports: Vec<ServicePort>,
}

/// The networking of a bridge node's Instances (see the module docs).
pub struct Network {
    bridge: Bridge,
    publisher: Publisher,
    /// Where published ports listen.
    publish_address: Ipv4Addr,
    /// Where attachments are recorded.
    dir: PathBuf,
    /// The DNS domain of the node's responder, if it has one: each namespace gets a
    /// `resolv.conf` naming its gateway ([`resolv_conf`]).
    dns_domain: Option<String>,
}

/// Where the `resolv.conf` of the network namespace at `netns` is kept: `ip netns`'s
/// convention (`/etc/netns/<name>/`), which the containerd runtime mounts into the
/// container when it is there.
pub fn resolv_conf(netns: &Path) -> Option<PathBuf> {
    let name = netns.file_name()?;
    Some(Path::new("/etc/netns").join(name).join("resolv.conf"))
}

/// The `resolv.conf` of an Instance of namespace `namespace`: the node's responder at
/// `gateway`, and the search path of Service names (as Kubernetes writes a pod's).
fn resolv_conf_text(gateway: Ipv4Addr, namespace: &str, domain: &str) -> String {
    format!(
        "nameserver {gateway}\nsearch {namespace}.svc.{domain} svc.{domain} {domain}\noptions ndots:5\n"
    )
}

impl Network {
    /// Attach Instances to `bridge`, publish their ports on `publish_address`, and keep
    /// the records under `data_dir/network`.
    pub fn new(
        bridge: Bridge,
        publish_address: Ipv4Addr,
        data_dir: &Path,
        dns_domain: Option<String>,
    ) -> std::io::Result<Network> {
        let dir = data_dir.join("network");
        std::fs::create_dir_all(&dir)?;
        Ok(Network {
            bridge,
            publisher: Publisher::default(),
            publish_address,
            dir,
            dns_domain,
        })
    }

    fn record_path(&self, id: &InstanceId) -> PathBuf {
        self.dir.join(format!("{}.json", id.token()))
    }

    fn read(&self, id: &InstanceId) -> Option<Attachment> {
        let text = std::fs::read(self.record_path(id)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Every Instance with an attachment on record.
    pub fn attached(&self) -> Vec<InstanceId> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut ids: Vec<InstanceId> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                InstanceId::from_token(name.strip_suffix(".json")?)
            })
            .collect();
        ids.sort();
        ids
    }

    /// The address `id` is attached with, if it has an attachment on record.
    pub fn address_of(&self, id: &InstanceId) -> Option<std::net::Ipv4Addr> {
        self.read(id).map(|a| a.address.ip)
    }

    /// Whether `id` has an attachment on record.
    pub fn holds(&self, id: &InstanceId) -> bool {
        self.record_path(id).exists()
    }

    /// Wait until no other Instance of the node holds `address` (one that is being
    /// removed, e.g. the Instance this one replaces, still stopping): two namespaces
    /// with one IP on the bridge would split its traffic. Gives up after
    /// [`ADDRESS_WAIT`].
    async fn wait_for_address(
        &self,
        id: &InstanceId,
        address: &InstanceAddress,
    ) -> Result<(), NetworkError> {
        let deadline = tokio::time::Instant::now() + ADDRESS_WAIT;
        loop {
            let holder = self
                .attached()
                .into_iter()
                .filter(|other| other != id)
                .find(|other| self.read(other).is_some_and(|a| a.address.ip == address.ip));
            let Some(holder) = holder else {
                return Ok(());
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(NetworkError::AddressHeld {
                    ip: address.ip,
                    holder,
                    waited: ADDRESS_WAIT,
                });
            }
            tracing::debug!(instance = %id, address = %address.ip, holder = %holder, "waiting for the address to be released");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Make `id`'s namespace `netns`, attach it with `address`, and publish the `ports`
    /// that have a host port. On an error, what was attached stays on record for
    /// [`detach`](Self::detach).
    pub async fn attach(
        &self,
        id: &InstanceId,
        netns: &Path,
        address: &InstanceAddress,
        ports: &[ServicePort],
    ) -> Result<(), NetworkError> {
        self.wait_for_address(id, address).await?;
        let attachment = Attachment {
            address: *address,
            netns: netns.to_path_buf(),
            ports: ports
                .iter()
                .filter(|p| p.host_port.is_some())
                .cloned()
                .collect(),
        };
        let path = self.record_path(id);
        let record = |source| NetworkError::Record {
            step: "recording the attachment in",
            path: path.clone(),
            source,
        };
        let tmp = path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec(&attachment).expect("records serialize"),
        )
        .map_err(record)?;
        std::fs::rename(&tmp, &path).map_err(record)?;
        let token = id.token();
        self.bridge.attach(&token, netns, address).await?;
        if let (Some(domain), Some(path)) = (&self.dns_domain, resolv_conf(netns)) {
            let text = resolv_conf_text(address.gateway, &id.namespace, domain);
            let written = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&path, text));
            written.map_err(|source| NetworkError::Record {
                step: "writing the resolv.conf",
                path: path.clone(),
                source,
            })?;
        }
        if !attachment.ports.is_empty() {
            self.publisher
                .publish(&token, self.publish_address, address.ip, &attachment.ports)
                .await?;
        }
        Ok(())
    }

    /// Stop forwarding `id`'s published ports (before its workload stops, so a new
    /// replica does not find them taken by one that is going away).
    pub fn unpublish(&self, id: &InstanceId) {
        self.publisher.unpublish(&id.token());
    }

    /// Take down what `id` has attached and forget it (nothing to do without a record).
    pub async fn detach(&self, id: &InstanceId) -> Result<(), NetworkError> {
        let token = id.token();
        self.publisher.unpublish(&token);
        let Some(attachment) = self.read(id) else {
            return Ok(());
        };
        self.bridge
            .detach(&token, &attachment.netns, &attachment.address)
            .await?;
        if let Some(dir) =
            resolv_conf(&attachment.netns).and_then(|p| p.parent().map(PathBuf::from))
        {
            let _ = std::fs::remove_dir_all(dir);
        }
        let path = self.record_path(id);
        match std::fs::remove_file(&path) {
            Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
                Err(NetworkError::Record {
                    step: "removing the record",
                    path,
                    source,
                })
            }
            _ => Ok(()),
        }
    }

    /// Publish the ports of `id`, found running after an agent restart, again (nothing
    /// to do when they are published or it has none).
    pub async fn adopt(&self, id: &InstanceId) {
        let token = id.token();
        if self.publisher.has(&token) {
            return;
        }
        let Some(attachment) = self.read(id).filter(|a| !a.ports.is_empty()) else {
            return;
        };
        if let Err(e) = self
            .publisher
            .publish(
                &token,
                self.publish_address,
                attachment.address.ip,
                &attachment.ports,
            )
            .await
        {
            tracing::warn!(instance = %id, error = %e, "publishing ports again failed");
        }
    }
}
