//! The DNS responder on real sockets, in network namespaces the test creates (and
//! removes, with everything left in them, when it ends, passed or not).
//!
//! A "node" namespace `dnst-<pid>-node` holds the responder at 10.252.0.1:53 on the
//! veth to a "client" namespace `dnst-<pid>-cl` (10.252.0.2/24), and a fake upstream
//! resolver at 10.252.0.1:5353 (UDP and TCP) that knows `example.test` only. Two more
//! responders check the upstream failover: 10.252.0.3:53 asks a refusing port and a
//! silent one before the fake upstream, 10.252.0.4:53 only the silent one. The
//! responders are bound before their addresses exist (`IP_FREEBIND`). Queries go only
//! to addresses inside these namespaces. Skipped with a message unless run as root
//! with `ip`, `nsenter` and `busybox`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use e2e::netns::Netns;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use netplane::dns::{self, DnsError, Zone, ZoneHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const NODE: Ipv4Addr = Ipv4Addr::new(10, 252, 0, 1);
const FAILOVER: Ipv4Addr = Ipv4Addr::new(10, 252, 0, 3);
const DEAD_END: Ipv4Addr = Ipv4Addr::new(10, 252, 0, 4);
const FAKE_UPSTREAM: SocketAddrV4 = SocketAddrV4::new(NODE, 5353);
const SILENT_UPSTREAM: SocketAddrV4 = SocketAddrV4::new(NODE, 5354);
/// Nothing listens there: the kernel answers "port unreachable".
const REFUSING_UPSTREAM: SocketAddrV4 = SocketAddrV4::new(NODE, 5355);

fn zone(web: Ipv4Addr) -> Zone {
    Zone::new(
        dns::DEFAULT_DOMAIN,
        [(
            "default",
            "web",
            Some(web),
            Some(Ipv4Addr::new(10, 30, 1, 5)),
        )],
    )
    .expect("a valid zone")
}

/// What runs in the node's namespace: the responders and the upstreams they ask, on a
/// thread of their own (entered into the namespace, so the responders' upstream
/// sockets are made there too). Stopped and joined on drop.
struct Node {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), DnsError>>>,
}

impl Node {
    /// Binds the responders now (their addresses need not exist yet); the fake and
    /// silent upstreams once `start` is called, after the addresses are there.
    fn bind(ns: &Netns) -> Vec<dns::Sockets> {
        ns.within(|| {
            [NODE, FAILOVER, DEAD_END]
                .into_iter()
                .map(|ip| dns::bind(SocketAddrV4::new(ip, 53)).expect("bind with IP_FREEBIND"))
                .collect()
        })
    }

    fn start(ns: &Netns, sockets: Vec<dns::Sockets>, zone: ZoneHandle) -> Node {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = ns.within(move || {
            // A thread started here stays in the namespace.
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                runtime.block_on(run_node(sockets, zone, stopped))
            })
        });
        Node {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("a responder failed: {e}"),
                Err(_) => eprintln!("the node's thread panicked"),
            }
        }
    }
}

async fn run_node(
    sockets: Vec<dns::Sockets>,
    zone: ZoneHandle,
    stopped: tokio::sync::oneshot::Receiver<()>,
) -> Result<(), DnsError> {
    let udp = tokio::net::UdpSocket::bind(FAKE_UPSTREAM)
        .await
        .expect("bind the fake upstream (UDP)");
    let tcp = tokio::net::TcpListener::bind(FAKE_UPSTREAM)
        .await
        .expect("bind the fake upstream (TCP)");
    let _silent = std::net::UdpSocket::bind(SILENT_UPSTREAM).expect("bind the silent upstream");
    tokio::spawn(fake_upstream_udp(udp));
    tokio::spawn(fake_upstream_tcp(tcp));

    let [main, failover, dead_end]: [dns::Sockets; 3] =
        sockets.try_into().expect("three responders");
    let upstreams = |list: &[SocketAddrV4]| -> Vec<SocketAddr> {
        list.iter().map(|&a| SocketAddr::V4(a)).collect()
    };
    let stop = CancellationToken::new();
    let served = tokio::try_join!(
        dns::serve_on(
            main,
            zone.clone(),
            upstreams(&[FAKE_UPSTREAM]),
            stop.cancelled()
        ),
        dns::serve_on(
            failover,
            zone.clone(),
            upstreams(&[REFUSING_UPSTREAM, SILENT_UPSTREAM, FAKE_UPSTREAM]),
            stop.cancelled(),
        ),
        dns::serve_on(
            dead_end,
            zone,
            upstreams(&[SILENT_UPSTREAM]),
            stop.cancelled()
        ),
        async {
            let _ = stopped.await;
            stop.cancel();
            Ok(())
        },
    );
    served.map(|_| ())
}

/// The fake upstream's answer: `example.test` is 10.99.0.1, nothing else exists.
fn upstream_reply(query: &[u8]) -> Option<Vec<u8>> {
    let query = Message::from_vec(query).ok()?;
    let mut reply = Message::response(query.metadata.id, OpCode::Query);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    let question = query.queries.first()?.clone();
    let known = question.name() == &Name::from_ascii("example.test.").ok()?;
    if !known {
        reply.metadata.response_code = ResponseCode::NXDomain;
    } else if question.query_type() == RecordType::A {
        reply.add_answer(Record::from_rdata(
            question.name().clone(),
            60,
            RData::A(A(Ipv4Addr::new(10, 99, 0, 1))),
        ));
    }
    reply.add_query(question);
    reply.to_vec().ok()
}

async fn fake_upstream_udp(udp: tokio::net::UdpSocket) {
    let mut buf = vec![0u8; 4096];
    while let Ok((len, peer)) = udp.recv_from(&mut buf).await {
        if let Some(reply) = upstream_reply(&buf[..len]) {
            let _ = udp.send_to(&reply, peer).await;
        }
    }
}

async fn fake_upstream_tcp(tcp: tokio::net::TcpListener) {
    while let Ok((mut stream, _)) = tcp.accept().await {
        tokio::spawn(async move {
            let Ok(len) = stream.read_u16().await else {
                return;
            };
            let mut query = vec![0u8; usize::from(len)];
            if stream.read_exact(&mut query).await.is_err() {
                return;
            }
            if let Some(reply) = upstream_reply(&query) {
                let Ok(len) = u16::try_from(reply.len()) else {
                    return;
                };
                let _ = stream.write_all(&len.to_be_bytes()).await;
                let _ = stream.write_all(&reply).await;
            }
        });
    }
}

/// `busybox nslookup name server` from `client`: whether it succeeded, and its output.
fn nslookup(client: &Netns, name: &str, server: Ipv4Addr) -> (bool, String) {
    let out = client.run("busybox", &["nslookup", name, &server.to_string()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn query_bytes(id: u16, name: &str) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(
        Name::from_ascii(name).expect("a name"),
        RecordType::A,
    ));
    m.to_vec().expect("encode")
}

/// The response code and `A` addresses of a reply.
fn summary(reply: &[u8]) -> (ResponseCode, Vec<Ipv4Addr>) {
    let reply = Message::from_vec(reply).expect("a reply that decodes");
    let ips = reply
        .answers
        .iter()
        .filter_map(|r| match r.data {
            RData::A(A(ip)) => Some(ip),
            _ => None,
        })
        .collect();
    (reply.metadata.response_code, ips)
}

/// An `A` query for `name` to `server` over UDP from `client`; the reply's summary and
/// how long it took.
fn udp_query(
    client: &Netns,
    server: Ipv4Addr,
    name: &str,
) -> ((ResponseCode, Vec<Ipv4Addr>), Duration) {
    let query = query_bytes(0x4242, name);
    let (reply, took) = client.within(move || {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("a client socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(8)))
            .expect("a timeout");
        let start = Instant::now();
        socket
            .send_to(&query, SocketAddrV4::new(server, 53))
            .expect("send");
        let mut buf = vec![0u8; 4096];
        let len = socket.recv(&mut buf).expect("a reply over UDP");
        buf.truncate(len);
        (buf, start.elapsed())
    });
    (summary(&reply), took)
}

/// Several `A` queries over one TCP connection to `server:53` from `client`.
fn tcp_queries(
    client: &Netns,
    server: Ipv4Addr,
    names: &[&str],
) -> Vec<(ResponseCode, Vec<Ipv4Addr>)> {
    use std::io::{Read, Write};
    let queries: Vec<Vec<u8>> = names
        .iter()
        .zip(1u16..)
        .map(|(name, id)| query_bytes(id, name))
        .collect();
    let replies = client.within(move || {
        let mut stream = std::net::TcpStream::connect_timeout(
            &SocketAddr::V4(SocketAddrV4::new(server, 53)),
            Duration::from_secs(5),
        )
        .expect("connect over TCP");
        stream
            .set_read_timeout(Some(Duration::from_secs(8)))
            .expect("a timeout");
        let mut replies = Vec::new();
        for query in queries {
            let len = u16::try_from(query.len()).expect("a short query");
            stream.write_all(&len.to_be_bytes()).expect("write");
            stream.write_all(&query).expect("write");
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).expect("a reply's length");
            let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut reply).expect("a reply");
            replies.push(reply);
        }
        replies
    });
    replies.iter().map(|r| summary(r)).collect()
}

#[test]
fn responder_in_namespaces() {
    if let Some(why) = e2e::netns::unavailable(&["ip", "busybox", "nsenter"]) {
        eprintln!("skipping: {why}");
        return;
    }
    let prefix = format!("dnst-{}", std::process::id());
    let node = Netns::create(&format!("{prefix}-node"));
    let client = Netns::create(&format!("{prefix}-cl"));

    // Bound before the addresses exist, as the agent does before the bridge is made.
    let sockets = Node::bind(&node);

    node.veth_to("veth-cl", &client);
    for ip in [NODE, FAILOVER, DEAD_END] {
        node.ip(&["addr", "add", &format!("{ip}/24"), "dev", "veth-cl"]);
    }
    node.ip(&["link", "set", "veth-cl", "up"]);
    client.ip(&["addr", "add", "10.252.0.2/24", "dev", "eth0"]);
    client.ip(&["link", "set", "eth0", "up"]);

    let zone = ZoneHandle::new(zone(Ipv4Addr::new(10, 30, 0, 5)));
    let _node = Node::start(&node, sockets, zone.clone());

    let resolves = |name: &str, want: &str| {
        let (ok, out) = nslookup(&client, name, NODE);
        assert!(ok, "nslookup {name}: {out}");
        assert!(
            out.lines()
                .any(|l| l.starts_with("Address") && l.contains(want) && !l.contains(":53")),
            "nslookup {name} should show {want}: {out}"
        );
    };
    resolves("web.default.svc.oakestra.local", "10.30.0.5");
    resolves("closest.web.default.svc.oakestra.local", "10.30.1.5");
    resolves("WEB.default.svc.Oakestra.Local", "10.30.0.5");
    resolves("example.test", "10.99.0.1");

    let (ok, out) = nslookup(&client, "nope.default.svc.oakestra.local", NODE);
    assert!(
        !ok && out.contains("NXDOMAIN"),
        "nope should be NXDOMAIN: {out}"
    );
    let (ok, out) = nslookup(&client, "elsewhere.test", NODE);
    assert!(
        !ok && out.contains("NXDOMAIN"),
        "the upstream's NXDOMAIN relayed: {out}"
    );

    // A new zone is answered from the next query on.
    zone.replace(self::zone(Ipv4Addr::new(10, 30, 0, 6)));
    resolves("web.default.svc.oakestra.local", "10.30.0.6");

    // TCP: the zone, and forwarding over TCP, on one connection.
    let got = tcp_queries(
        &client,
        NODE,
        &[
            "closest.web.default.svc.oakestra.local.",
            "example.test.",
            "nope.default.svc.oakestra.local.",
        ],
    );
    assert_eq!(
        got,
        vec![
            (ResponseCode::NoError, vec![Ipv4Addr::new(10, 30, 1, 5)]),
            (ResponseCode::NoError, vec![Ipv4Addr::new(10, 99, 0, 1)]),
            (ResponseCode::NXDomain, vec![]),
        ]
    );

    // Failover: a refusing upstream is skipped at once, a silent one after its timeout.
    let (got, took) = udp_query(&client, FAILOVER, "example.test.");
    assert_eq!(
        got,
        (ResponseCode::NoError, vec![Ipv4Addr::new(10, 99, 0, 1)])
    );
    assert!(
        took >= dns::UPSTREAM_TIMEOUT && took < 2 * dns::UPSTREAM_TIMEOUT,
        "one upstream timeout expected, took {took:?}"
    );
    // No upstream answers: SERVFAIL, while the zone is still answered.
    let (got, _) = udp_query(&client, DEAD_END, "example.test.");
    assert_eq!(got, (ResponseCode::ServFail, vec![]));
    let (got, _) = udp_query(&client, DEAD_END, "web.default.svc.oakestra.local.");
    assert_eq!(
        got,
        (ResponseCode::NoError, vec![Ipv4Addr::new(10, 30, 0, 6)])
    );
}
