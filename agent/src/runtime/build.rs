//! Putting a worker's runtime together from its settings: which runtime (`--runtime`),
//! how containers are networked (`--network`), and what they need (the containerd
//! socket, cgroups, the CNI plugins).

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::containerd::{ContainerdConfig, ContainerdRuntime, CtrError};
use super::process::ProcessRuntime;
use super::{Combined, InstanceId, Runtime};
use crate::cgroup::Cgroups;
use crate::network::{Bridge, Network, NetworkMode};
use crate::AgentConfig;

/// Which runtime a worker runs its Instances with (the `--runtime` flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum RuntimeChoice {
    /// containerd when its socket is there, else native processes.
    #[default]
    Auto,
    /// Containers through containerd, and native processes beside them.
    Containerd,
    /// Native processes only.
    Process,
}

impl RuntimeChoice {
    /// The spelling the flag takes.
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeChoice::Auto => "auto",
            RuntimeChoice::Containerd => "containerd",
            RuntimeChoice::Process => "process",
        }
    }
}

impl std::fmt::Display for RuntimeChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--runtime` value that is not one of [`RuntimeChoice`]'s.
#[derive(Debug, thiserror::Error)]
#[error("{0:?}: expected auto, process or containerd")]
pub struct UnknownRuntime(pub String);

impl std::str::FromStr for RuntimeChoice {
    type Err = UnknownRuntime;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(RuntimeChoice::Auto),
            "containerd" => Ok(RuntimeChoice::Containerd),
            "process" => Ok(RuntimeChoice::Process),
            other => Err(UnknownRuntime(other.to_string())),
        }
    }
}

/// How a worker runs its Instances, as its flags say.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    /// Which runtime.
    pub choice: RuntimeChoice,
    /// containerd's gRPC socket (also what `auto` looks for).
    pub containerd_socket: PathBuf,
    /// Registries (`host[:port]`) pulled from over plain HTTP; loopback ones always are.
    pub insecure_registries: Vec<String>,
    /// The cgroup file system's root, for Instance limits.
    pub cgroup_root: PathBuf,
    /// How containers are networked.
    pub network: NetworkMode,
    /// Where the CNI plugins are (for [`NetworkMode::Bridge`]).
    pub cni_path: PathBuf,
    /// Whether `runtime: process` Instances run (arbitrary commands, unisolated, as
    /// the agent's user): only when the operator asked for it.
    pub allow_process: bool,
}

/// What [`crate::run`] runs a worker with.
pub struct Assembly {
    /// The runtime.
    pub runtime: Arc<dyn Runtime>,
    /// The ids of Instances whose workload exited, as the runtime reports them.
    pub exits: mpsc::UnboundedReceiver<InstanceId>,
    /// The node's Instance networking; `None` when workloads share the node's network.
    pub network: Option<Network>,
}

impl Assembly {
    /// Every workload the node holds (what the runtime runs and what is attached),
    /// e.g. to stop what a stopped agent left running.
    pub async fn held(&self) -> Result<Vec<InstanceId>, crate::AgentError> {
        crate::instances::held_workloads(self.runtime.as_ref(), self.network.as_ref()).await
    }

    /// Stop `id`'s workload and take its network down, as the agent does.
    pub async fn remove(&self, id: &InstanceId) -> Result<(), crate::AgentError> {
        crate::instances::remove_workload(self.runtime.as_ref(), self.network.as_ref(), id).await
    }
}

/// Why a worker's runtime could not be put together.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The data directory cannot be made.
    #[error("preparing {}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// Bridge networking was asked for, but the CNI plugins are not installed.
    #[error("--network bridge needs the CNI bridge and static plugins in {} (Debian: containernetworking-plugins), or use --network host", cni_path.display())]
    NoCniPlugins {
        /// Where they were looked for.
        cni_path: PathBuf,
    },
    /// containerd does not answer.
    #[error("--runtime containerd (is containerd running? see --containerd-socket)")]
    Containerd(#[source] CtrError),
    /// Only the process runtime is left, and it was not allowed.
    #[error("the {choice} runtime comes to native processes here ({why}), which run arbitrary commands unisolated as this agent's user: pass --allow-process-runtime to allow them, or run containerd")]
    ProcessNotAllowed {
        /// The `--runtime` asked for.
        choice: RuntimeChoice,
        /// Why it comes to processes.
        why: &'static str,
    },
}

impl RuntimeSettings {
    /// What `choice` comes to on this machine: `Auto` becomes `Containerd` when the
    /// socket is there and `Process` otherwise.
    pub fn resolve(&self) -> RuntimeChoice {
        match self.choice {
            RuntimeChoice::Auto if self.containerd_socket.exists() => RuntimeChoice::Containerd,
            RuntimeChoice::Auto => RuntimeChoice::Process,
            other => other,
        }
    }
}

/// Put together the runtime (and, for containers on a bridge, the networking) of the
/// worker `config` describes.
pub async fn build(
    config: &AgentConfig,
    settings: &RuntimeSettings,
) -> Result<Assembly, BuildError> {
    let (exits_tx, exits) = mpsc::unbounded_channel();
    let cgroups = Cgroups::detect(&settings.cgroup_root, &config.node);
    let data_dir = |source| BuildError::DataDir {
        path: config.data_dir.clone(),
        source,
    };
    let processes = || ProcessRuntime::new(&config.data_dir, cgroups.clone(), exits_tx.clone());
    match settings.resolve() {
        RuntimeChoice::Containerd => {
            let network = match settings.network {
                NetworkMode::Host => None,
                NetworkMode::Bridge => {
                    let mut bridge = Bridge::for_node(&config.node, &settings.cni_path)
                        .ok_or_else(|| BuildError::NoCniPlugins {
                            cni_path: settings.cni_path.clone(),
                        })?;
                    // Instances' packets must fit the overlay they may cross.
                    bridge.mtu = config
                        .dataplane
                        .as_ref()
                        .and_then(|d| d.overlay.as_ref())
                        .map(netplane::controller::Overlay::instance_mtu);
                    let publish_address = config
                        .address
                        .parse()
                        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
                    // Containers resolve Service names at the node's responder.
                    let dns_domain = config
                        .dataplane
                        .as_ref()
                        .and_then(|d| d.dns.as_ref())
                        .map(|d| d.domain.clone());
                    Some(
                        Network::new(bridge, publish_address, &config.data_dir, dns_domain)
                            .map_err(data_dir)?,
                    )
                }
            };
            let containerd = ContainerdConfig {
                socket: settings.containerd_socket.clone(),
                node: config.node.clone(),
                data_dir: config.data_dir.clone(),
                insecure_registries: settings.insecure_registries.clone(),
                own_network: network.is_some(),
            };
            let containers = ContainerdRuntime::new(containerd, cgroups.clone(), exits_tx.clone())
                .await
                .map_err(BuildError::Containerd)?;
            // A containerd node runs native executables too, when allowed.
            let runtime: Arc<dyn Runtime> = if settings.allow_process {
                Arc::new(Combined {
                    containers: Arc::new(containers),
                    processes: Arc::new(processes().map_err(data_dir)?),
                })
            } else {
                Arc::new(containers)
            };
            Ok(Assembly {
                runtime,
                exits,
                network,
            })
        }
        _ if !settings.allow_process => Err(BuildError::ProcessNotAllowed {
            choice: settings.choice,
            why: if settings.choice == RuntimeChoice::Auto {
                "containerd's socket is not there"
            } else {
                "as asked"
            },
        }),
        _ => Ok(Assembly {
            runtime: Arc::new(processes().map_err(data_dir)?),
            exits,
            network: None,
        }),
    }
}
