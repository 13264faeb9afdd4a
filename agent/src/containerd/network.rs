//! Container networking: each Instance gets a network namespace with its instance IP,
//! attached by the standard CNI `bridge` plugin (static IPAM) to a per-node bridge whose
//! address is the node subnet's gateway. The node reaches every Instance at its instance
//! IP; published ports are forwarded from the node's address by [`Publisher`].

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crds::{Protocol, ServicePort};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

use crate::runtime::InstanceAddress;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{step}: {message}")]
    Setup { step: String, message: String },
    #[error("host port {port}/{proto} on {address} is in use: {source}")]
    PortInUse {
        address: String,
        port: u16,
        proto: &'static str,
        source: std::io::Error,
    },
}

/// The node's bridge network, through the CNI plugins in `cni_path`.
#[derive(Debug, Clone)]
pub struct Bridge {
    pub cni_path: PathBuf,
    /// Interface name of the bridge (at most 15 bytes).
    pub bridge: String,
    /// CNI network name.
    pub name: String,
    /// Masquerade traffic leaving the node (needs `iptables`).
    pub masquerade: bool,
    /// Set once the masquerade rule of the node subnet is in place.
    masquerading: Arc<tokio::sync::OnceCell<()>>,
}

/// Where the Debian package puts the CNI plugins.
pub const DEFAULT_CNI_PATH: &str = "/usr/lib/cni";

impl Bridge {
    /// The bridge of `node`, if the CNI bridge plugin and `ip` are installed.
    pub fn for_node(node: &str, cni_path: &Path) -> Option<Bridge> {
        if !cni_path.join("bridge").exists() || !cni_path.join("static").exists() {
            return None;
        }
        let digest = super::sha256_digest(node.as_bytes());
        Some(Bridge {
            cni_path: cni_path.to_path_buf(),
            bridge: format!("oak{}", &digest[7..17]),
            name: format!("oakestra-{node}"),
            masquerade: which("iptables"),
            masquerading: Arc::default(),
        })
    }

    /// Masquerade what the node subnet sends beyond it: one `nat POSTROUTING` rule per
    /// bridge, checked for and added at the first attach. (The CNI plugin's `ipMasq`
    /// would add a chain per container and remove it again, about 100 ms each way.)
    async fn ensure_masquerade(&self, address: &InstanceAddress) -> Result<(), NetworkError> {
        if !self.masquerade {
            return Ok(());
        }
        let mask = u32::MAX
            .checked_shl(32 - u32::from(address.prefix))
            .unwrap_or(0);
        let subnet = format!(
            "{}/{}",
            Ipv4Addr::from(u32::from(address.ip) & mask),
            address.prefix
        );
        let comment = format!("oakestra {}", self.bridge);
        self.masquerading
            .get_or_try_init(|| async {
                let rule = |op: &'static str| {
                    [
                        "-w",
                        "-t",
                        "nat",
                        op,
                        "POSTROUTING",
                        "-s",
                        &subnet,
                        "!",
                        "-d",
                        &subnet,
                        "-m",
                        "comment",
                        "--comment",
                        &comment,
                        "-j",
                        "MASQUERADE",
                    ]
                    .map(str::to_string)
                };
                if run("iptables", &rule("-C")).await.is_err() {
                    run("iptables", &rule("-A")).await?;
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    fn netns(token: &str) -> String {
        format!("oak-{token}")
    }

    /// Path of the Instance's namespace, as the OCI spec names it.
    pub fn netns_path(token: &str) -> String {
        format!("/run/netns/{}", Self::netns(token))
    }

    fn conf(&self, address: &InstanceAddress) -> serde_json::Value {
        json!({
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
        })
    }

    async fn cni(
        &self,
        command: &str,
        token: &str,
        address: &InstanceAddress,
    ) -> Result<(), NetworkError> {
        let mut child = tokio::process::Command::new(self.cni_path.join("bridge"))
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", token)
            .env("CNI_NETNS", Self::netns_path(token))
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

    /// Create the Instance's namespace and attach it; returns the namespace's path.
    pub async fn attach(
        &self,
        token: &str,
        address: &InstanceAddress,
    ) -> Result<String, NetworkError> {
        let _ = self.detach(token, address).await;
        self.ensure_masquerade(address).await?;
        ip(&["netns", "add", &Self::netns(token)]).await?;
        ip(&["-n", &Self::netns(token), "link", "set", "lo", "up"]).await?;
        if let Err(e) = self.cni("ADD", token, address).await {
            let _ = self.detach(token, address).await;
            return Err(e);
        }
        Ok(Self::netns_path(token))
    }

    /// Detach and delete the namespace (nothing to do when it is gone).
    pub async fn detach(&self, token: &str, address: &InstanceAddress) -> Result<(), NetworkError> {
        if !Path::new(&Self::netns_path(token)).exists() {
            return Ok(());
        }
        let detached = self.cni("DEL", token, address).await;
        ip(&["netns", "delete", &Self::netns(token)]).await?;
        detached
    }
}

fn setup(step: impl Into<String>, e: std::io::Error) -> NetworkError {
    NetworkError::Setup {
        step: step.into(),
        message: e.to_string(),
    }
}

fn which(binary: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(binary).exists()))
        .unwrap_or(false)
        || Path::new("/usr/sbin").join(binary).exists()
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

/// Forwards published TCP ports from the node to Instances (a userspace proxy, so a taken
/// port is a clear error at start rather than a silently shadowed rule).
#[derive(Default)]
pub struct Publisher {
    published: Mutex<HashMap<String, Vec<JoinHandle<()>>>>,
}

impl Publisher {
    /// Whether `token` has its ports published by this agent.
    pub fn has(&self, token: &str) -> bool {
        self.published
            .lock()
            .expect("not poisoned")
            .contains_key(token)
    }

    /// Listen on `host:hostPort` for each port with a host port and forward to
    /// `target:containerPort`. All or nothing.
    pub async fn publish(
        &self,
        token: &str,
        host: Ipv4Addr,
        target: Ipv4Addr,
        ports: &[ServicePort],
    ) -> Result<(), NetworkError> {
        self.unpublish(token);
        // Bind every port before forwarding any: on an error, dropping them frees them all.
        let mut listeners = Vec::new();
        for p in ports {
            let Some(host_port) = p.host_port else {
                continue;
            };
            let in_use = |proto| {
                move |source| NetworkError::PortInUse {
                    address: host.to_string(),
                    port: host_port,
                    proto,
                    source,
                }
            };
            let listener = match p.protocol {
                Protocol::Tcp => Listener::Tcp(
                    tokio::net::TcpListener::bind((host, host_port))
                        .await
                        .map_err(in_use("tcp"))?,
                ),
                Protocol::Udp => Listener::Udp(
                    tokio::net::UdpSocket::bind((host, host_port))
                        .await
                        .map_err(in_use("udp"))?,
                ),
            };
            listeners.push((listener, SocketAddr::from((target, p.container_port))));
        }
        let tasks = listeners
            .into_iter()
            .map(|(listener, to)| match listener {
                Listener::Tcp(l) => tokio::spawn(forward(l, to)),
                Listener::Udp(socket) => tokio::spawn(relay(socket, to)),
            })
            .collect();
        self.published
            .lock()
            .expect("not poisoned")
            .insert(token.to_string(), tasks);
        Ok(())
    }

    pub fn unpublish(&self, token: &str) {
        if let Some(tasks) = self.published.lock().expect("not poisoned").remove(token) {
            tasks.iter().for_each(|t| t.abort());
        }
    }
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    Udp(tokio::net::UdpSocket),
}

/// A UDP flow without a datagram either way for this long is forgotten.
const UDP_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Relay datagrams between clients of `socket` and `to`: each client gets a socket of
/// its own towards the instance (so replies find their way back), dropped when idle.
/// Aborting the relay drops every flow with it.
async fn relay(socket: tokio::net::UdpSocket, to: SocketAddr) {
    let socket = Arc::new(socket);
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<tokio::net::UdpSocket>>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        while tasks.try_join_next().is_some() {}
        let known = flows.lock().expect("not poisoned").get(&client).cloned();
        let flow = match known {
            Some(flow) => flow,
            None => {
                let flow = match tokio::net::UdpSocket::bind("0.0.0.0:0").await {
                    Ok(f) if f.connect(to).await.is_ok() => Arc::new(f),
                    _ => continue,
                };
                flows
                    .lock()
                    .expect("not poisoned")
                    .insert(client, flow.clone());
                let (socket, flows, back) = (socket.clone(), flows.clone(), flow.clone());
                tasks.spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, back.recv(&mut buf)).await
                    {
                        let _ = socket.send_to(&buf[..n], client).await;
                    }
                    flows.lock().expect("not poisoned").remove(&client);
                });
                flow
            }
        };
        if let Err(e) = flow.send(&buf[..n]).await {
            tracing::debug!(%to, error = %e, "published udp port: instance unreachable");
        }
    }
}

async fn forward(listener: tokio::net::TcpListener, to: SocketAddr) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            match tokio::net::TcpStream::connect(to).await {
                Ok(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(e) => tracing::debug!(%to, error = %e, "published port: instance unreachable"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_host_port_is_a_clear_error_and_publishes_nothing() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let publisher = Publisher::default();
        let ports = vec![
            ServicePort {
                container_port: 80,
                host_port: Some(free),
                protocol: Protocol::Tcp,
            },
            ServicePort {
                container_port: 81,
                host_port: Some(port),
                protocol: Protocol::Tcp,
            },
        ];
        let err = publisher
            .publish("x", Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, &ports)
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("host port {port}/tcp on 127.0.0.1 is in use")),
            "{err}"
        );
        assert!(!publisher.has("x"));
        // The first port was released again.
        std::net::TcpListener::bind(("127.0.0.1", free)).expect("released");
    }

    /// A publisher with `token`'s one port published: a free host port of `protocol`
    /// on 127.0.0.1 to `backend_port` there. Returns the publisher, the host port and
    /// the ports published.
    async fn published(
        token: &str,
        backend_port: u16,
        protocol: Protocol,
    ) -> (Publisher, u16, Vec<ServicePort>) {
        let host_port = match protocol {
            Protocol::Tcp => std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr(),
            Protocol::Udp => std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr(),
        }
        .unwrap()
        .port();
        let publisher = Publisher::default();
        let ports = vec![ServicePort {
            container_port: backend_port,
            host_port: Some(host_port),
            protocol,
        }];
        publisher
            .publish(token, Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, &ports)
            .await
            .unwrap();
        (publisher, host_port, ports)
    }

    #[tokio::test]
    async fn published_ports_forward_to_the_instance() {
        let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend_port = backend.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = backend.accept().await.unwrap();
            s.write_all(b"hello").await.unwrap();
        });
        let (publisher, host_port, _) = published("x", backend_port, Protocol::Tcp).await;
        let mut client = tokio::net::TcpStream::connect(("127.0.0.1", host_port))
            .await
            .unwrap();
        let mut got = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut client, &mut got)
            .await
            .unwrap();
        assert_eq!(got, "hello");
        publisher.unpublish("x");
        assert!(!publisher.has("x"));
    }

    #[tokio::test]
    async fn published_udp_ports_relay_both_ways() {
        // An echo server that prefixes what it answers.
        let backend = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let backend_port = backend.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while let Ok((n, from)) = backend.recv_from(&mut buf).await {
                let reply = [b"echo ".as_slice(), &buf[..n]].concat();
                backend.send_to(&reply, from).await.unwrap();
            }
        });
        let (publisher, host_port, ports) = published("u", backend_port, Protocol::Udp).await;
        // Two clients, each gets its own answers.
        for word in ["one", "two"] {
            let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            client.connect(("127.0.0.1", host_port)).await.unwrap();
            client.send(word.as_bytes()).await.unwrap();
            let mut buf = [0u8; 64];
            let n = tokio::time::timeout(std::time::Duration::from_secs(10), client.recv(&mut buf))
                .await
                .expect("an answer")
                .unwrap();
            assert_eq!(&buf[..n], format!("echo {word}").as_bytes());
        }
        // A taken UDP port is a clear error too.
        let again = Publisher::default();
        let err = again
            .publish("v", Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, &ports)
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("host port {host_port}/udp")),
            "{err}"
        );
        publisher.unpublish("u");
        // The relay and its flows are aborted, which drops the socket soon after.
        let mut released = false;
        for _ in 0..50 {
            if std::net::UdpSocket::bind(("127.0.0.1", host_port)).is_ok() {
                released = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(released, "the host port is free again after unpublish");
    }
}
