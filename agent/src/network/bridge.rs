//! The node's bridge: an Instance's network namespace is made with `ip netns` and
//! attached by the standard CNI `bridge` plugin (static IPAM) to a per-node bridge whose
//! address is the node subnet's gateway, so the node reaches every Instance at its
//! instance IP. What leaves the instance range is masqueraded by the node's service
//! rules (`netplane`), not here: traffic to other nodes keeps the instance's address.

use std::path::{Path, PathBuf};

use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::{InstanceAddress, NetworkError};

/// The node's bridge network, through the CNI plugins in `cni_path`.
#[derive(Debug, Clone)]
pub struct Bridge {
    /// Where the CNI plugins are.
    pub cni_path: PathBuf,
    /// Interface name of the bridge (at most 15 bytes).
    pub bridge: String,
    /// CNI network name.
    pub name: String,
    /// The MTU of the bridge and the Instances' interfaces (the overlay's, when their
    /// traffic crosses one); `None`: the kernel's 1500.
    pub mtu: Option<u32>,
}

/// Where the Debian package puts the CNI plugins.
pub const DEFAULT_CNI_PATH: &str = "/usr/lib/cni";

/// Where `ip netns` keeps named network namespaces; the bridge attaches only these.
pub const NETNS_DIR: &str = "/run/netns/";

impl Bridge {
    /// The bridge of `node`, if the CNI bridge plugin and `ip` are installed.
    pub fn for_node(node: &str, cni_path: &Path) -> Option<Bridge> {
        if !cni_path.join("bridge").exists() || !cni_path.join("static").exists() {
            return None;
        }
        let digest = crate::digest::sha256_digest(node.as_bytes());
        Some(Bridge {
            cni_path: cni_path.to_path_buf(),
            bridge: format!("oak{}", &digest[7..17]),
            name: format!("oakestra-{node}"),
            mtu: None,
        })
    }

    /// The `ip netns` name of the namespace at `netns`, which must be in [`NETNS_DIR`].
    fn netns_name(netns: &Path) -> Result<&str, NetworkError> {
        netns
            .strip_prefix(NETNS_DIR)
            .ok()
            .and_then(|name| name.to_str())
            .filter(|name| !name.is_empty() && !name.contains('/'))
            .ok_or_else(|| NetworkError::Setup {
                step: format!("naming the network namespace {}", netns.display()),
                message: format!("the bridge makes namespaces with `ip netns`, in {NETNS_DIR}"),
            })
    }

    fn conf(&self, address: &InstanceAddress) -> serde_json::Value {
        let mut conf = json!({
            "cniVersion": "0.4.0",
            "name": self.name,
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "static",
                "addresses": [{"address": format!("{}/{}", address.ip, address.prefix), "gateway": address.gateway.to_string()}],
                "routes": [{"dst": "0.0.0.0/0"}]
            }
        });
        if let Some(mtu) = self.mtu {
            conf["mtu"] = mtu.into();
        }
        conf
    }

    async fn cni(
        &self,
        command: &str,
        token: &str,
        netns: &Path,
        address: &InstanceAddress,
    ) -> Result<(), NetworkError> {
        let mut child = tokio::process::Command::new(self.cni_path.join("bridge"))
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", token)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &self.cni_path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| {
                setup(
                    format!(
                        "running the CNI bridge plugin in {}",
                        self.cni_path.display()
                    ),
                    e,
                )
            })?;
        let conf = serde_json::to_vec(&self.conf(address)).expect("configs serialize");
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(&conf)
                .await
                .map_err(|e| setup("writing the CNI config", e))?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| setup("CNI bridge plugin", e))?;
        if out.status.success() {
            return Ok(());
        }
        // CNI reports errors as JSON on stdout: {"code":…,"msg":…,"details":…}.
        let text = String::from_utf8_lossy(&out.stdout);
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                Some(format!(
                    "{} {}",
                    v["msg"].as_str()?,
                    v["details"].as_str().unwrap_or("")
                ))
            })
            .unwrap_or_else(|| format!("{text}{}", String::from_utf8_lossy(&out.stderr)));
        Err(NetworkError::Setup {
            step: format!("CNI {command} for {token}"),
            message: message.trim().to_string(),
        })
    }

    /// Create the namespace `netns` of the Instance whose token is `token` and attach
    /// it with `address`.
    pub async fn attach(
        &self,
        token: &str,
        netns: &Path,
        address: &InstanceAddress,
    ) -> Result<(), NetworkError> {
        let name = Self::netns_name(netns)?;
        let _ = self.detach(token, netns, address).await;
        ip(&["netns", "add", name]).await?;
        ip(&["-n", name, "link", "set", "lo", "up"]).await?;
        if let Err(e) = self.cni("ADD", token, netns, address).await {
            let _ = self.detach(token, netns, address).await;
            return Err(e);
        }
        Ok(())
    }

    /// Detach and delete the namespace `netns` (nothing to do when it is gone).
    pub async fn detach(
        &self,
        token: &str,
        netns: &Path,
        address: &InstanceAddress,
    ) -> Result<(), NetworkError> {
        if !netns.exists() {
            return Ok(());
        }
        let name = Self::netns_name(netns)?;
        let detached = self.cni("DEL", token, netns, address).await;
        ip(&["netns", "delete", name]).await?;
        detached
    }
}

fn setup(step: impl Into<String>, e: std::io::Error) -> NetworkError {
    NetworkError::Setup {
        step: step.into(),
        message: e.to_string(),
    }
}

async fn ip(args: &[&str]) -> Result<(), NetworkError> {
    run("ip", args).await
}

/// Run `program args…`; a failure carries its stderr.
async fn run(program: &str, args: &[impl AsRef<std::ffi::OsStr>]) -> Result<(), NetworkError> {
    let step = || {
        let args: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
        format!("{program} {}", args.join(" "))
    };
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|e| setup(step(), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetworkError::Setup {
            step: step(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}
