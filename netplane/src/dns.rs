//! The node's DNS responder: containers resolve Service names at their bridge's gateway.
//!
//! The zone follows the `kubernetes` plugin of `CoreDNS`, minimally. For a Service
//! `<service>` in namespace `<namespace>` and the cluster domain `<domain>`
//! ([`DEFAULT_DOMAIN`] unless configured):
//! - `<service>.<namespace>.svc.<domain>` has an `A` record of the Service's round-robin
//!   IP, and `closest.<service>.<namespace>.svc.<domain>` one of its closest IP;
//! - names are case-insensitive (the answer repeats the name as asked) and every record
//!   lives [`TTL`] seconds;
//! - a name under `svc.<domain>` that the zone does not hold is `NXDOMAIN`, answered
//!   authoritatively with the zone's `SOA` (which caches the negative answer for
//!   [`TTL`] too); a name it holds asked for another type (`AAAA`, `MX`…), or one that
//!   only exists as a parent of others (`<namespace>.svc.<domain>`, a Service without
//!   that IP), is `NOERROR` with no answer;
//! - the short forms (`<service>`, `<service>.<namespace>`) are not served: there is
//!   no search path to expand them.
//!
//! Every other name is forwarded, the query's bytes unchanged, to the upstream
//! resolvers (the host's, see [`upstreams_from_resolv_conf`]) one after the other, each
//! given [`UPSTREAM_TIMEOUT`]; the first reply with the query's id is relayed as is. If
//! none replies, or there is no upstream at all, the client gets `SERVFAIL` (not
//! `REFUSED`: the client's resolver then tries its next nameserver, if it has one).
//!
//! What is not a query is treated as follows: bytes shorter than a DNS header, and
//! messages that are responses, are dropped without a reply (answering those could
//! bounce between two servers); a query whose header reads but whose body does not is
//! `FORMERR`, as is one with other than exactly one question; an opcode other than
//! `QUERY` is `NOTIMP`.
//!
//! The resolution is the pure [`answer`], over a [`Zone`]. [`serve`] listens on UDP and
//! TCP (2-byte length prefix, RFC 1035 4.2.2) at one address and reads the zone from a
//! [`ZoneHandle`], which the network controller replaces whole after every change.
//! Upstream queries are made from sockets created in the network namespace of the
//! thread that runs the server's tasks.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Header, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;

/// The cluster domain unless configured otherwise.
pub const DEFAULT_DOMAIN: &str = "oakestra.local";
/// Seconds every answer of the zone (and its negative answers) may be cached.
pub const TTL: u32 = 5;
/// How long one upstream resolver has to answer before the next one is asked.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// The port of the upstream resolvers read from `resolv.conf`.
pub const DNS_PORT: u16 = 53;

/// How long a TCP connection may wait for its next query.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Queries being forwarded plus TCP connections open, at most; more are dropped.
const MAX_TASKS: usize = 512;
/// The UDP payload size announced in replies to queries that carry EDNS (RFC 9715).
const EDNS_PAYLOAD: u16 = 1232;
/// The first label of a Service's closest-IP name.
const CLOSEST: &str = "closest";

/// Why the responder could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A listening socket could not be made or bound.
    #[error(
        "cannot listen for DNS over {proto} at {addr}: {source} (is another DNS server, \
         e.g. systemd-resolved or dnsmasq, already bound there? Port 53 needs root or \
         CAP_NET_BIND_SERVICE; pick another address or stop the other server)"
    )]
    Bind {
        /// `UDP` or `TCP`.
        proto: &'static str,
        /// The address asked for.
        addr: SocketAddrV4,
        /// What the kernel said.
        source: io::Error,
    },
    /// Bound sockets could not be handed to the runtime.
    #[error("handing the bound DNS sockets to the runtime: {0}")]
    Setup(#[source] io::Error),
    /// The cluster domain is not a DNS name.
    #[error("the DNS domain {domain:?} is not valid: {reason}")]
    Domain {
        /// The domain as given.
        domain: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The resolver configuration could not be read.
    #[error("reading the upstream resolvers from {path}: {source}")]
    ResolvConf {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
}

/// The names the responder answers for: the Services of one cluster domain.
#[derive(Debug, Clone)]
pub struct Zone {
    domain: String,
    /// `svc.<domain>.`: the names this zone is authoritative for are at or below it.
    apex: Name,
    /// Every name that exists in the zone (case-insensitive keys) and its `A` record
    /// if it has one: the apex and each namespace (none), each Service (its
    /// round-robin IP) and each Service's `closest.` name (its closest IP).
    names: HashMap<Name, Option<Ipv4Addr>>,
    services: usize,
    soa: Record,
}

impl Zone {
    /// The zone of `domain` (e.g. [`DEFAULT_DOMAIN`]; a trailing dot is ignored) with
    /// one Service per entry `(namespace, service, round-robin IP, closest IP)`.
    ///
    /// A later entry for the same Service replaces an earlier one. An entry whose
    /// namespace or service is not a DNS label (RFC 1123: letters, digits and `-`, at
    /// most 63) is left out with a warning, so that one bad object does not take
    /// name resolution away from all the others. Fails only on a bad `domain`.
    pub fn new<N, S, I>(domain: &str, entries: I) -> Result<Zone, DnsError>
    where
        N: AsRef<str>,
        S: AsRef<str>,
        I: IntoIterator<Item = (N, S, Option<Ipv4Addr>, Option<Ipv4Addr>)>,
    {
        let bad = |reason: String| DnsError::Domain {
            domain: domain.to_string(),
            reason,
        };
        let trimmed = domain
            .strip_suffix('.')
            .unwrap_or(domain)
            .to_ascii_lowercase();
        let labels: Vec<&str> = trimmed.split('.').collect();
        if let Some(label) = labels.iter().find(|l| !is_label(l)) {
            return Err(bad(format!(
                "{label:?} is not a DNS label (letters, digits and '-', 1 to 63)"
            )));
        }
        let base: Vec<&str> = std::iter::once("svc")
            .chain(labels.iter().copied())
            .collect();
        let apex = fqdn(base.iter().copied()).map_err(|e| bad(e.to_string()))?;
        let under = |parts: &[&str]| fqdn(parts.iter().chain(&base).copied());
        let soa = soa_record(&apex, &labels).map_err(|e| bad(e.to_string()))?;

        let mut names = HashMap::from([(apex.clone(), None)]);
        let mut services = HashSet::new();
        for (namespace, service, round_robin, closest) in entries {
            let (namespace, service) = (namespace.as_ref(), service.as_ref());
            if !is_label(namespace) || !is_label(service) {
                tracing::warn!(namespace, service, "not a DNS label: left out of the zone");
                continue;
            }
            let built = (
                under(&[namespace]),
                under(&[service, namespace]),
                under(&[CLOSEST, service, namespace]),
            );
            let (Ok(ns), Ok(svc), Ok(near)) = built else {
                tracing::warn!(namespace, service, "name too long: left out of the zone");
                continue;
            };
            names.insert(ns, None);
            services.insert(svc.clone());
            names.insert(svc, round_robin);
            names.insert(near, closest);
        }
        Ok(Zone {
            domain: trimmed,
            apex,
            names,
            services: services.len(),
            soa,
        })
    }

    /// The cluster domain (lower case, without the trailing dot).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// How many Services it holds.
    pub fn len(&self) -> usize {
        self.services
    }

    /// Whether it holds no Service.
    pub fn is_empty(&self) -> bool {
        self.services == 0
    }

    fn lookup(&self, name: &Name) -> Lookup {
        if !self.apex.zone_of(name) {
            return Lookup::Outside;
        }
        match self.names.get(name) {
            None => Lookup::Missing,
            Some(address) => Lookup::Found(*address),
        }
    }
}

/// Where a name stands in the zone.
enum Lookup {
    /// Not under `svc.<domain>`: someone else's.
    Outside,
    /// Under it, but no such name.
    Missing,
    /// An existing name, with its address if it has one.
    Found(Option<Ipv4Addr>),
}

/// A DNS label as Kubernetes names are (RFC 1123), any case.
fn is_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The fully qualified name of `labels`, lower case.
fn fqdn<'a>(labels: impl Iterator<Item = &'a str>) -> Result<Name, hickory_proto::ProtoError> {
    Name::from_labels(labels.map(str::to_ascii_lowercase))
}

/// The zone's `SOA`, whose minimum makes negative answers live [`TTL`] like the others.
fn soa_record(apex: &Name, domain: &[&str]) -> Result<Record, hickory_proto::ProtoError> {
    let mname = fqdn(["ns", "dns"].into_iter().chain(domain.iter().copied()))?;
    let rname = fqdn(std::iter::once("hostmaster").chain(domain.iter().copied()))?;
    let soa = SOA::new(mname, rname, 1, 7200, 1800, 86400, TTL);
    Ok(Record::from_rdata(apex.clone(), TTL, RData::SOA(soa)))
}

/// The zone the responder serves, shared with whoever changes it: cheap to clone;
/// [`replace`](ZoneHandle::replace) swaps the whole zone at once, and a query reads one
/// zone from start to end.
#[derive(Debug, Clone)]
pub struct ZoneHandle(Arc<RwLock<Arc<Zone>>>);

impl ZoneHandle {
    /// A handle serving `zone`.
    pub fn new(zone: Zone) -> ZoneHandle {
        ZoneHandle(Arc::new(RwLock::new(Arc::new(zone))))
    }

    /// Serve `zone` from now on, instead of the current one.
    pub fn replace(&self, zone: Zone) {
        let zone = Arc::new(zone);
        // The lock only guards swapping an `Arc`: a panic elsewhere cannot have left
        // it half-written, so a poisoned lock is as good as a clean one.
        let old = std::mem::replace(
            &mut *self.0.write().unwrap_or_else(PoisonError::into_inner),
            zone,
        );
        drop(old);
    }

    /// The zone being served now.
    pub fn current(&self) -> Arc<Zone> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// What to do with a message a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Not the zone's name: relay the query to the upstream resolvers; `failed` is the
    /// reply (`SERVFAIL`) for when none of them answers.
    Forward {
        /// The reply if no upstream answers.
        failed: Vec<u8>,
    },
    /// Not a query (too short to have a header, or a response): say nothing.
    Drop,
}

/// What the responder does with the message `query` given `zone`. Pure; the module's
/// documentation lists the cases.
pub fn answer(zone: &Zone, query: &[u8]) -> Answer {
    let request = match Message::from_vec(query) {
        Ok(request) => request,
        Err(_) => return malformed(query),
    };
    if request.metadata.message_type != MessageType::Query {
        return Answer::Drop;
    }
    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata = Metadata::response_from_request(&request.metadata);
    reply.metadata.recursion_available = true;
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        reply.edns = Some(edns);
    }
    if request.metadata.op_code != OpCode::Query {
        reply.metadata.response_code = ResponseCode::NotImp;
        return encode(&reply);
    }
    let [question] = request.queries.as_slice() else {
        reply.metadata.response_code = ResponseCode::FormErr;
        return encode(&reply);
    };
    reply.add_query(question.clone());
    let found = match zone.lookup(question.name()) {
        Lookup::Outside => {
            reply.metadata.response_code = ResponseCode::ServFail;
            return match encode(&reply) {
                Answer::Reply(failed) => Answer::Forward { failed },
                other => other,
            };
        }
        Lookup::Missing => {
            reply.metadata.response_code = ResponseCode::NXDomain;
            None
        }
        Lookup::Found(address) => address.filter(|_| {
            matches!(question.query_type(), RecordType::A | RecordType::ANY)
                && matches!(question.query_class(), DNSClass::IN | DNSClass::ANY)
        }),
    };
    reply.metadata.authoritative = true;
    match found {
        Some(ip) => {
            reply.add_answer(Record::from_rdata(
                question.name().clone(),
                TTL,
                RData::A(A(ip)),
            ));
        }
        None => {
            reply.add_authority(zone.soa.clone());
        }
    }
    encode(&reply)
}

/// The reply to bytes that do not decode as a message: `FORMERR` if at least the
/// header of a query is there, else nothing.
fn malformed(query: &[u8]) -> Answer {
    match header(query) {
        Some(header) if header.metadata.message_type == MessageType::Query => {
            let mut reply = Message::error_msg(
                header.metadata.id,
                header.metadata.op_code,
                ResponseCode::FormErr,
            );
            reply.metadata.recursion_desired = header.metadata.recursion_desired;
            encode(&reply)
        }
        _ => Answer::Drop,
    }
}

fn header(message: &[u8]) -> Option<Header> {
    Header::read(&mut BinDecoder::new(message)).ok()
}

fn encode(reply: &Message) -> Answer {
    match reply.to_vec() {
        Ok(bytes) => Answer::Reply(bytes),
        Err(error) => {
            tracing::warn!(%error, "could not encode a DNS reply");
            Answer::Drop
        }
    }
}

/// The nameservers of a `resolv.conf` text, at port 53, in order: its `nameserver`
/// lines whose address parses (IPv4 or IPv6; one with a `%zone` suffix does not).
/// Comments, `search`, `options` and other lines are ignored.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut upstreams = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        let upstream = SocketAddr::new(ip, DNS_PORT);
        if !upstreams.contains(&upstream) {
            upstreams.push(upstream);
        }
    }
    upstreams
}

/// [`upstreams_from_resolv_conf`] of the file at `path` (the host's is
/// `/etc/resolv.conf`).
pub fn upstreams_from_file(path: &Path) -> Result<Vec<SocketAddr>, DnsError> {
    std::fs::read_to_string(path)
        .map(|text| upstreams_from_resolv_conf(&text))
        .map_err(|source| DnsError::ResolvConf {
            path: path.display().to_string(),
            source,
        })
}

/// The responder's listening sockets, bound by [`bind`] (or by the caller, e.g. in
/// another network namespace) and served by [`serve_on`].
#[derive(Debug)]
pub struct Sockets {
    /// Where queries over UDP arrive.
    pub udp: std::net::UdpSocket,
    /// Where queries over TCP connect.
    pub tcp: std::net::TcpListener,
}

/// Binds UDP and TCP at `listen` with `IP_FREEBIND`, so the address need not exist yet
/// (the bridge holding the gateway appears with the first container); queries arrive
/// once it does. Port 0 binds TCP to the port UDP got.
pub fn bind(listen: SocketAddrV4) -> Result<Sockets, DnsError> {
    let udp = socket(listen, Type::DGRAM, Protocol::UDP)?;
    let port = udp
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map_or(listen.port(), |a| a.port());
    let tcp_at = SocketAddrV4::new(*listen.ip(), port);
    let tcp = socket(tcp_at, Type::STREAM, Protocol::TCP)?;
    tcp.listen(128).map_err(bind_failed("TCP", tcp_at))?;
    Ok(Sockets {
        udp: udp.into(),
        tcp: tcp.into(),
    })
}

fn bind_failed(proto: &'static str, addr: SocketAddrV4) -> impl Fn(io::Error) -> DnsError {
    move |source| DnsError::Bind {
        proto,
        addr,
        source,
    }
}

fn socket(at: SocketAddrV4, ty: Type, protocol: Protocol) -> Result<Socket, DnsError> {
    let tcp = ty == Type::STREAM;
    let fail = bind_failed(if tcp { "TCP" } else { "UDP" }, at);
    let socket = Socket::new(Domain::IPV4, ty, Some(protocol)).map_err(&fail)?;
    socket.set_freebind_v4(true).map_err(&fail)?;
    if tcp {
        socket.set_reuse_address(true).map_err(&fail)?;
    }
    socket.set_nonblocking(true).map_err(&fail)?;
    socket.bind(&SockAddr::from(at)).map_err(&fail)?;
    Ok(socket)
}

/// Answers DNS at `listen` over UDP and TCP from `zone`, forwarding other names to
/// `upstreams`, until `shutdown` completes. Fails only if it cannot listen.
pub async fn serve(
    listen: SocketAddrV4,
    zone: ZoneHandle,
    upstreams: Vec<SocketAddr>,
    shutdown: impl Future,
) -> Result<(), DnsError> {
    serve_on(bind(listen)?, zone, upstreams, shutdown).await
}

/// [`serve`] on sockets already bound. An upstream equal to the listening address is
/// left out (it would forward to itself). Queries being forwarded and open TCP
/// connections end with it.
pub async fn serve_on(
    sockets: Sockets,
    zone: ZoneHandle,
    upstreams: Vec<SocketAddr>,
    shutdown: impl Future,
) -> Result<(), DnsError> {
    let local = sockets.udp.local_addr().map_err(DnsError::Setup)?;
    let upstreams: Arc<[SocketAddr]> = upstreams.into_iter().filter(|u| *u != local).collect();
    if upstreams.is_empty() {
        tracing::warn!(%local, "no upstream resolver: names outside the zone get SERVFAIL");
    }
    sockets.udp.set_nonblocking(true).map_err(DnsError::Setup)?;
    sockets.tcp.set_nonblocking(true).map_err(DnsError::Setup)?;
    let udp = Arc::new(UdpSocket::from_std(sockets.udp).map_err(DnsError::Setup)?);
    let tcp = TcpListener::from_std(sockets.tcp).map_err(DnsError::Setup)?;
    tracing::info!(%local, domain = zone.current().domain(), ?upstreams, "DNS responder listening");

    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            received = udp.recv_from(&mut buf) => {
                let (len, peer) = match received {
                    Ok(received) => received,
                    Err(error) => {
                        tracing::debug!(%error, "receiving a DNS query");
                        continue;
                    }
                };
                let query = &buf[..len];
                match answer(&zone.current(), query) {
                    Answer::Reply(reply) => send(&udp, &reply, peer).await,
                    Answer::Drop => {}
                    Answer::Forward { failed } if tasks.len() < MAX_TASKS => {
                        let (udp, upstreams, query) = (udp.clone(), upstreams.clone(), query.to_vec());
                        tasks.spawn(async move {
                            let reply = forward(&upstreams, &query, Transport::Udp)
                                .await
                                .unwrap_or(failed);
                            send(&udp, &reply, peer).await;
                        });
                    }
                    Answer::Forward { .. } => {
                        tracing::debug!(%peer, "too many queries in flight: dropped one");
                    }
                }
            }
            accepted = tcp.accept() => match accepted {
                Ok((stream, _)) if tasks.len() < MAX_TASKS => {
                    tasks.spawn(serve_tcp(stream, zone.clone(), upstreams.clone()));
                }
                Ok((_, peer)) => {
                    tracing::debug!(%peer, "too many queries in flight: closed a connection");
                }
                Err(error) => {
                    // Out of file descriptors, typically: let some close.
                    tracing::warn!(%error, "accepting a DNS connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    tracing::info!(%local, "DNS responder stopped");
    Ok(())
}

async fn send(udp: &UdpSocket, reply: &[u8], peer: SocketAddr) {
    if let Err(error) = udp.send_to(reply, peer).await {
        tracing::debug!(%error, %peer, "sending a DNS reply");
    }
}

/// Queries of one TCP connection, answered in order, until the client closes it or
/// stays silent for [`TCP_IDLE`].
async fn serve_tcp(mut stream: TcpStream, zone: ZoneHandle, upstreams: Arc<[SocketAddr]>) {
    loop {
        let Ok(Ok(query)) = tokio::time::timeout(TCP_IDLE, read_framed(&mut stream)).await else {
            return;
        };
        let reply = match answer(&zone.current(), &query) {
            Answer::Reply(reply) => reply,
            Answer::Forward { failed } => forward(&upstreams, &query, Transport::Tcp)
                .await
                .unwrap_or(failed),
            Answer::Drop => return,
        };
        if write_framed(&mut stream, &reply).await.is_err() {
            return;
        }
    }
}

/// How a query travels to an upstream: as it came.
#[derive(Debug, Clone, Copy)]
enum Transport {
    Udp,
    Tcp,
}

/// The first reply to `query` from `upstreams`, each asked in turn and given
/// [`UPSTREAM_TIMEOUT`].
async fn forward(upstreams: &[SocketAddr], query: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let id = header(query)?.metadata.id;
    for &upstream in upstreams {
        let exchange = async {
            match transport {
                Transport::Udp => exchange_udp(upstream, query, id).await,
                Transport::Tcp => exchange_tcp(upstream, query, id).await,
            }
        };
        match tokio::time::timeout(UPSTREAM_TIMEOUT, exchange).await {
            Ok(Ok(reply)) => return Some(reply),
            Ok(Err(error)) => tracing::debug!(%upstream, ?transport, %error, "upstream failed"),
            Err(_) => tracing::debug!(%upstream, ?transport, "upstream timed out"),
        }
    }
    None
}

/// Whether `message` is a response with `id`.
fn is_reply_to(message: &[u8], id: u16) -> bool {
    header(message)
        .is_some_and(|h| h.metadata.id == id && h.metadata.message_type == MessageType::Response)
}

async fn exchange_udp(upstream: SocketAddr, query: &[u8], id: u16) -> io::Result<Vec<u8>> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        let len = socket.recv(&mut buf).await?;
        if is_reply_to(&buf[..len], id) {
            buf.truncate(len);
            return Ok(buf);
        }
    }
}

async fn exchange_tcp(upstream: SocketAddr, query: &[u8], id: u16) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    write_framed(&mut stream, query).await?;
    loop {
        let reply = read_framed(&mut stream).await?;
        if is_reply_to(&reply, id) {
            return Ok(reply);
        }
    }
}

/// One DNS message over TCP: its length in two bytes, then itself.
async fn read_framed(stream: &mut (impl AsyncRead + Unpin)) -> io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut message = vec![0u8; usize::from(len)];
    stream.read_exact(&mut message).await?;
    Ok(message)
}

async fn write_framed(stream: &mut (impl AsyncWrite + Unpin), message: &[u8]) -> io::Result<()> {
    let len = u16::try_from(message.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "DNS message over 64 KiB"))?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;

    const ID: u16 = 0x1234;

    fn zone() -> Zone {
        Zone::new(
            DEFAULT_DOMAIN,
            [
                (
                    "default",
                    "web",
                    Some(Ipv4Addr::new(10, 30, 0, 5)),
                    Some(Ipv4Addr::new(10, 30, 1, 5)),
                ),
                ("default", "db", Some(Ipv4Addr::new(10, 30, 0, 6)), None),
                ("prod", "api", None, Some(Ipv4Addr::new(10, 30, 1, 7))),
            ],
        )
        .expect("a valid zone")
    }

    fn message(name: &str, rtype: RecordType) -> Message {
        let mut m = Message::new(ID, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).expect("a name"), rtype));
        m
    }

    fn query(name: &str, rtype: RecordType) -> Vec<u8> {
        message(name, rtype).to_vec().expect("encode")
    }

    /// What a reply says, in short.
    #[derive(Debug, Clone, PartialEq)]
    enum Said {
        /// Response code, authoritative, the `A` addresses answered.
        Reply(ResponseCode, bool, Vec<Ipv4Addr>),
        Forward,
        Drop,
    }

    fn said(answer: &Answer) -> Said {
        let reply = match answer {
            Answer::Reply(bytes) => Message::from_vec(bytes).expect("a reply that decodes"),
            Answer::Forward { .. } => return Said::Forward,
            Answer::Drop => return Said::Drop,
        };
        assert_eq!(reply.metadata.id, ID);
        assert_eq!(reply.metadata.message_type, MessageType::Response);
        let ips = reply
            .answers
            .iter()
            .map(|r| match r.data {
                RData::A(A(ip)) => {
                    assert_eq!(r.ttl, TTL);
                    ip
                }
                ref other => panic!("not an A record: {other:?}"),
            })
            .collect();
        Said::Reply(
            reply.metadata.response_code,
            reply.metadata.authoritative,
            ips,
        )
    }

    fn ok(ips: &[[u8; 4]]) -> Said {
        Said::Reply(
            ResponseCode::NoError,
            true,
            ips.iter().map(|&o| Ipv4Addr::from(o)).collect(),
        )
    }

    #[test]
    fn answers() {
        let nx = Said::Reply(ResponseCode::NXDomain, true, vec![]);
        let header_only = {
            // A query header claiming one question, and no question.
            let mut bytes = query("web.default.svc.oakestra.local.", RecordType::A);
            bytes.truncate(12);
            bytes
        };
        let two_questions = {
            let mut m = message("web.default.svc.oakestra.local.", RecordType::A);
            m.add_query(Query::query(
                Name::from_ascii("db.default.svc.oakestra.local.").expect("a name"),
                RecordType::A,
            ));
            m.to_vec().expect("encode")
        };
        let response = {
            let mut m = message("web.default.svc.oakestra.local.", RecordType::A);
            m.metadata.message_type = MessageType::Response;
            m.to_vec().expect("encode")
        };
        let status = {
            let mut m = message("web.default.svc.oakestra.local.", RecordType::A);
            m.metadata.op_code = OpCode::Status;
            m.to_vec().expect("encode")
        };
        let table: Vec<(&str, Vec<u8>, Said)> = vec![
            (
                "round-robin name",
                query("web.default.svc.oakestra.local.", RecordType::A),
                ok(&[[10, 30, 0, 5]]),
            ),
            (
                "closest name",
                query("closest.web.default.svc.oakestra.local.", RecordType::A),
                ok(&[[10, 30, 1, 5]]),
            ),
            (
                "upper case",
                query("WEB.Default.SVC.oakestra.LOCAL.", RecordType::A),
                ok(&[[10, 30, 0, 5]]),
            ),
            (
                "ANY of a known name",
                query("db.default.svc.oakestra.local.", RecordType::ANY),
                ok(&[[10, 30, 0, 6]]),
            ),
            (
                "unknown service",
                query("nope.default.svc.oakestra.local.", RecordType::A),
                nx.clone(),
            ),
            (
                "service in another namespace",
                query("web.prod.svc.oakestra.local.", RecordType::A),
                nx.clone(),
            ),
            (
                "unknown namespace",
                query("nope.svc.oakestra.local.", RecordType::A),
                nx.clone(),
            ),
            (
                "below a closest name",
                query("x.closest.web.default.svc.oakestra.local.", RecordType::A),
                nx.clone(),
            ),
            (
                "a label other than closest",
                query("far.web.default.svc.oakestra.local.", RecordType::A),
                nx.clone(),
            ),
            (
                "AAAA of a known name",
                query("web.default.svc.oakestra.local.", RecordType::AAAA),
                ok(&[]),
            ),
            (
                "closest name of a service without a closest IP",
                query("closest.db.default.svc.oakestra.local.", RecordType::A),
                ok(&[]),
            ),
            (
                "service without a round-robin IP",
                query("api.prod.svc.oakestra.local.", RecordType::A),
                ok(&[]),
            ),
            (
                "a namespace",
                query("default.svc.oakestra.local.", RecordType::A),
                ok(&[]),
            ),
            (
                "the apex",
                query("svc.oakestra.local.", RecordType::A),
                ok(&[]),
            ),
            (
                "another domain",
                query("example.test.", RecordType::A),
                Said::Forward,
            ),
            (
                "the domain outside svc",
                query("web.default.oakestra.local.", RecordType::A),
                Said::Forward,
            ),
            (
                "a suffix that only looks alike",
                query("web.default.svc.oakestra.local.evil.", RecordType::A),
                Said::Forward,
            ),
            ("shorter than a header", vec![0x12, 0x34, 0x01], Said::Drop),
            ("nothing", vec![], Said::Drop),
            (
                "header without its question",
                header_only,
                Said::Reply(ResponseCode::FormErr, false, vec![]),
            ),
            (
                "two questions",
                two_questions,
                Said::Reply(ResponseCode::FormErr, false, vec![]),
            ),
            ("a response", response, Said::Drop),
            (
                "opcode STATUS",
                status,
                Said::Reply(ResponseCode::NotImp, false, vec![]),
            ),
        ];
        let zone = zone();
        for (what, bytes, want) in table {
            assert_eq!(said(&answer(&zone, &bytes)), want, "{what}");
        }
    }

    #[test]
    fn reply_details() {
        let zone = zone();
        let reply = |bytes: &[u8]| match answer(&zone, bytes) {
            Answer::Reply(b) => Message::from_vec(&b).expect("decodes"),
            other => panic!("not a reply: {other:?}"),
        };

        // The name as asked, the question echoed, recursion flags.
        let asked = "WEB.Default.svc.oakestra.local.";
        let got = reply(&query(asked, RecordType::A));
        assert_eq!(got.answers[0].name.to_string(), asked);
        assert_eq!(got.queries, message(asked, RecordType::A).queries);
        assert!(got.metadata.recursion_desired && got.metadata.recursion_available);
        assert!(got.edns.is_none());

        // Negative answers carry the SOA, whose minimum is the TTL.
        let got = reply(&query("nope.default.svc.oakestra.local.", RecordType::A));
        let [soa] = got.authorities.as_slice() else {
            panic!("one SOA: {:?}", got.authorities)
        };
        assert_eq!(
            soa.name,
            Name::from_ascii("svc.oakestra.local.").expect("a name")
        );
        assert!(matches!(&soa.data, RData::SOA(s) if s.minimum == TTL));

        // EDNS in, EDNS out.
        let mut m = message("web.default.svc.oakestra.local.", RecordType::A);
        m.edns = Some(Edns::new());
        let got = reply(&m.to_vec().expect("encode"));
        assert_eq!(got.edns.map(|e| e.max_payload()), Some(EDNS_PAYLOAD));

        // A forwarded query's fallback is SERVFAIL for the same question.
        let Answer::Forward { failed } = answer(&zone, &query("example.test.", RecordType::A))
        else {
            panic!("not forwarded")
        };
        let failed = Message::from_vec(&failed).expect("decodes");
        assert_eq!(failed.metadata.id, ID);
        assert_eq!(failed.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(
            failed.queries,
            message("example.test.", RecordType::A).queries
        );
    }

    #[test]
    fn zones() {
        // Another domain: its names answered, the default one's forwarded.
        let custom = Zone::new(
            "Cluster.Example.",
            [("default", "web", Some(Ipv4Addr::new(10, 1, 2, 3)), None)],
        )
        .expect("a valid zone");
        assert_eq!(custom.domain(), "cluster.example");
        let asked = query("web.default.svc.cluster.example.", RecordType::A);
        assert_eq!(said(&answer(&custom, &asked)), ok(&[[10, 1, 2, 3]]));
        let asked = query("web.default.svc.oakestra.local.", RecordType::A);
        assert_eq!(said(&answer(&custom, &asked)), Said::Forward);

        // Bad entries are left out, later entries win.
        let zone = Zone::new(
            DEFAULT_DOMAIN,
            [
                ("default", "web", Some(Ipv4Addr::new(10, 0, 0, 1)), None),
                ("default", "web", Some(Ipv4Addr::new(10, 0, 0, 2)), None),
                (
                    "default",
                    "bad.name",
                    Some(Ipv4Addr::new(10, 0, 0, 3)),
                    None,
                ),
                ("", "web", Some(Ipv4Addr::new(10, 0, 0, 4)), None),
                ("default", "-web", Some(Ipv4Addr::new(10, 0, 0, 5)), None),
            ],
        )
        .expect("a valid zone");
        assert_eq!(zone.len(), 1);
        let asked = query("web.default.svc.oakestra.local.", RecordType::A);
        assert_eq!(said(&answer(&zone, &asked)), ok(&[[10, 0, 0, 2]]));
        let asked = query("bad.name.default.svc.oakestra.local.", RecordType::A);
        assert_eq!(
            said(&answer(&zone, &asked)),
            Said::Reply(ResponseCode::NXDomain, true, vec![])
        );

        for bad in ["", ".", "a..b", "under_score.local", &"x".repeat(64)] {
            let got = Zone::new(bad, Vec::<(&str, &str, _, _)>::new());
            assert!(matches!(got, Err(DnsError::Domain { .. })), "{bad:?}");
        }
        assert!(Zone::new(DEFAULT_DOMAIN, Vec::<(&str, &str, _, _)>::new())
            .expect("valid")
            .is_empty());
    }

    #[test]
    fn handle_replaces_the_zone() {
        let handle = ZoneHandle::new(zone());
        let reader = handle.clone();
        let asked = query("web.default.svc.oakestra.local.", RecordType::A);
        assert_eq!(
            said(&answer(&reader.current(), &asked)),
            ok(&[[10, 30, 0, 5]])
        );
        handle.replace(
            Zone::new(
                DEFAULT_DOMAIN,
                [("default", "web", Some(Ipv4Addr::new(10, 30, 0, 9)), None)],
            )
            .expect("valid"),
        );
        assert_eq!(
            said(&answer(&reader.current(), &asked)),
            ok(&[[10, 30, 0, 9]])
        );
    }

    #[test]
    fn resolv_conf() {
        let v4 = |a: [u8; 4]| SocketAddr::new(IpAddr::from(a), 53);
        let table: Vec<(&str, &str, Vec<SocketAddr>)> = vec![
            ("empty", "", vec![]),
            (
                "plain",
                "nameserver 192.168.1.1\nnameserver 10.0.0.2\n",
                vec![v4([192, 168, 1, 1]), v4([10, 0, 0, 2])],
            ),
            (
                "comments, search and options",
                "# Generated\n; old style\n#nameserver 1.1.1.1\nsearch lan example.com\n\
                 options ndots:5 timeout:1\n  nameserver\t127.0.0.53  # resolved\ndomain lan\n",
                vec![v4([127, 0, 0, 53])],
            ),
            (
                "IPv6",
                "nameserver 2001:db8::53\nnameserver fe80::1%eth0\nnameserver ::1\n",
                vec![
                    SocketAddr::new("2001:db8::53".parse().expect("an address"), 53),
                    SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 53),
                ],
            ),
            (
                "junk and duplicates",
                "nameserver\nnameserver not-an-ip\nnameservers 10.0.0.9\nnameserver 10.0.0.1\n\
                 nameserver 10.0.0.1\n",
                vec![v4([10, 0, 0, 1])],
            ),
        ];
        for (what, text, want) in table {
            assert_eq!(upstreams_from_resolv_conf(text), want, "{what}");
        }
    }

    #[test]
    fn errors_name_the_address() {
        let error = DnsError::Bind {
            proto: "UDP",
            addr: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 53),
            source: io::Error::from(io::ErrorKind::AddrInUse),
        };
        let text = error.to_string();
        assert!(text.contains("UDP at 10.0.0.1:53"), "{text}");
        assert!(text.contains("another DNS server"), "{text}");
    }
}
