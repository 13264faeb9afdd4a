//! Published ports: [`Publisher`] forwards a host port on the node's address to an
//! Instance's port at its instance IP (TCP connections and UDP flows), in user space.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use crds::{Protocol, ServicePort};
use tokio::task::JoinHandle;

use super::NetworkError;

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

    /// Stop forwarding `token`'s ports (nothing to do when none are published).
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
    use tokio::io::AsyncWriteExt;

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
