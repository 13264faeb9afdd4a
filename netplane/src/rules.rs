//! The node's nftables table, rendered from the services it should reach (no IO).
//!
//! [`render`] turns a [`Ruleset`] into one `nft -f` script that replaces the whole
//! table in a single transaction (`add table`, `delete table`, then the table), so the
//! kernel holds either the old table or the new one, never a mix. The layout is
//! kube-proxy's nftables mode:
//!
//! - `service-ips`, a verdict map from `ip . proto . port` to the chain of each
//!   frontend that has backends; the `services` chain looks packets up in it from the
//!   `nat` hooks `prerouting` (priority `dstnat`) and `output` (priority `-100`: nft
//!   1.0.6 refuses `dstnat` there);
//! - a chain per frontend that picks a backend per new connection by round robin
//!   (`numgen inc mod N vmap { … }`), and a chain per backend that marks hairpin
//!   traffic (an instance reaching itself through its service) for masquerade and then
//!   DNATs to the backend;
//! - `no-endpoint-services`, the same key for frontends without backends, checked by
//!   the `filter` hooks `forward` and `output` for new connections: those are refused
//!   at once (TCP reset, else ICMP port unreachable), never left to time out; so are
//!   new connections to a port a service IP does not serve (`service-addresses`, the
//!   set of every service IP: what still goes to one after the `nat` hooks was not
//!   translated);
//! - `nat-postrouting` (priority `srcnat`): masquerade packets carrying
//!   [`MASQUERADE_MARK`], and packets from the instance range to anywhere outside it
//!   (instance addresses survive between nodes).
//!
//! [`render_update`] turns one rendered table into another in place, rewriting only the
//! elements and chains of frontends that changed (kube-proxy's partial sync): at
//! thousands of services, replacing the whole table costs seconds of kernel time.
//!
//! [`udp_removed`] lists the UDP flows whose conntrack entries go stale when a table
//! replaces another, and [`delete_script`] removes the table.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4};

/// The bit of the packet mark that asks `nat-postrouting` to masquerade a packet.
///
/// Bit 12: kube-proxy uses 0x4000 (masquerade) and kubelet 0x8000 (drop), Calico the
/// upper 16 bits, Cilium 0x0F00 and Tailscale 0xFF0000, so 0x1000 stays clear of
/// the data planes most likely to share a node with us.
pub const MASQUERADE_MARK: u32 = 0x1000;

/// The verdict map of frontends with backends.
const SERVICE_IPS: &str = "service-ips";
/// The verdict map of frontends without backends.
const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
/// The set of every service IP.
const SERVICE_ADDRESSES: &str = "service-addresses";

/// The longest chain name the kernel accepts (`NFT_CHAIN_MAXNAMELEN` less the NUL).
const MAX_CHAIN_NAME: usize = 255;

/// A transport protocol a frontend serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// One service address (IP, port, protocol) and the backends it spreads over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontend {
    /// The service IP.
    pub ip: Ipv4Addr,
    /// The service port.
    pub port: u16,
    /// The protocol.
    pub proto: Proto,
    /// Where connections go; empty: the frontend has no endpoint and is refused.
    pub backends: Vec<SocketAddrV4>,
}

/// A service's frontends (its round-robin and closest IPs are both frontends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRules {
    /// The service's namespace.
    pub namespace: String,
    /// The service's name.
    pub name: String,
    /// Its frontends.
    pub frontends: Vec<Frontend>,
}

/// Everything one node's table holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    /// The nftables table (family `ip`); a plain identifier such as `oakestra`.
    pub table: String,
    /// The whole instance address range (every cluster's subnets), e.g.
    /// `10.128.0.0/9`: traffic leaving it is masqueraded, traffic inside it is not.
    pub instance_range: (Ipv4Addr, u8),
    /// The services the node reaches.
    pub services: Vec<ServiceRules>,
}

/// A UDP flow whose conntrack entries must be deleted: packets to `frontend` were
/// sent on to `backend` by DNAT, and the frontend no longer has that backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UdpFlow {
    /// The service IP and port.
    pub frontend: SocketAddrV4,
    /// The backend that left.
    pub backend: SocketAddrV4,
}

/// The script that removes `table` (harmless when it is absent).
pub fn delete_script(table: &str) -> String {
    format!("add table ip {table}\ndelete table ip {table}\n")
}

/// The `nft -f` script that atomically replaces `rules.table` with the table for
/// `rules`. Deterministic: services, frontends and backends are sorted (duplicate
/// backends dropped), so the same input gives byte-identical output. A frontend key
/// (IP, protocol, port) claimed twice goes to the first service in sorted order.
pub fn render(rules: &Ruleset) -> String {
    let plan = Plan::new(rules);
    let mut out = delete_script(&rules.table);
    let _ = writeln!(out, "table ip {} {{", rules.table);
    for map in [SERVICE_IPS, NO_ENDPOINT_SERVICES] {
        write_map(
            &mut out,
            map,
            plan.frontends
                .iter()
                .filter(|f| f.verdict().0 == map)
                .map(|f| (f.key(), f.verdict().1.to_string())),
        );
    }
    write_set(&mut out, SERVICE_ADDRESSES, plan.addresses().into_iter());
    let no_endpoint = "ct state new ip daddr . meta l4proto . th dport vmap @no-endpoint-services";
    // What is still addressed to a service IP here was not DNATed: a port the Service
    // does not have.
    let unknown_port = "ct state new ip daddr @service-addresses goto reject-chain";
    let range = cidr(rules.instance_range);
    let mark = format!("0x{MASQUERADE_MARK:08x}");
    let fixed: [(&str, Option<&str>, Vec<String>); 9] = [
        (
            "reject-chain",
            None,
            vec![
                "meta l4proto tcp reject with tcp reset".into(),
                "reject".into(),
            ],
        ),
        (
            "filter-forward",
            Some("filter hook forward priority filter"),
            vec![no_endpoint.into(), unknown_port.into()],
        ),
        (
            "filter-output",
            Some("filter hook output priority filter"),
            vec![no_endpoint.into(), unknown_port.into()],
        ),
        (
            "nat-prerouting",
            Some("nat hook prerouting priority dstnat"),
            vec!["jump services".into()],
        ),
        (
            "nat-output",
            Some("nat hook output priority -100"),
            vec!["jump services".into()],
        ),
        (
            "nat-postrouting",
            Some("nat hook postrouting priority srcnat"),
            vec![
                "jump masquerading".into(),
                format!("ip saddr {range} ip daddr != {range} masquerade"),
            ],
        ),
        (
            "masquerading",
            None,
            vec![
                format!("meta mark & {mark} == 0 return"),
                format!("meta mark set meta mark ^ {mark}"),
                "masquerade fully-random".into(),
            ],
        ),
        (
            "mark-for-masquerade",
            None,
            vec![format!("meta mark set meta mark | {mark}")],
        ),
        (
            "services",
            None,
            vec!["ip daddr . meta l4proto . th dport vmap @service-ips".into()],
        ),
    ];
    for (name, hook, body) in &fixed {
        write_chain(&mut out, name, *hook, body);
    }
    for (name, body) in plan.frontends.iter().flat_map(PlannedFrontend::chains) {
        write_chain(&mut out, name, None, &body);
    }
    out.push_str("}\n");
    out
}

/// UDP backends that `old` sends a frontend to and `new` no longer does (for that
/// frontend, in any service): their conntrack entries would keep steering packets
/// to the old backend, so they are deleted after `new` is applied. Sorted, no
/// duplicates.
pub fn udp_removed(old: &Ruleset, new: &Ruleset) -> Vec<UdpFlow> {
    let udp_flows = |rules: &Ruleset| -> BTreeSet<UdpFlow> {
        rules
            .services
            .iter()
            .flat_map(|s| &s.frontends)
            .filter(|f| f.proto == Proto::Udp)
            .flat_map(|f| {
                f.backends.iter().map(|&backend| UdpFlow {
                    frontend: SocketAddrV4::new(f.ip, f.port),
                    backend,
                })
            })
            .collect()
    };
    let kept = udp_flows(new);
    udp_flows(old).difference(&kept).copied().collect()
}

/// The `nft -f` script that turns the table [`render`] made for `old` into the one it
/// makes for `new`, in one transaction, touching only what differs (kube-proxy's
/// partial sync): the map and set elements whose value changed, and the chains of
/// frontends whose backends changed. Chains and elements of unchanged frontends are
/// left alone. Empty when both render the same table.
///
/// `None` when the table cannot be updated in place: another table name or instance
/// range (the fixed chains differ); the caller then applies `render(new)`.
///
/// The order within the transaction keeps every reference valid at each step:
///
/// 1. map and set elements that go or change value are deleted (nothing refers to a
///    frontend chain any more);
/// 2. chains that go or change are flushed (nothing refers to a backend chain), then
///    the ones that go are deleted;
/// 3. new chains are added empty, then every new or changed chain gets its rules
///    (so a `goto` finds its target however the chains are ordered);
/// 4. map and set elements that are new or changed value are added.
///
/// An element changing value is deleted and added again: nft 1.0.6's `add element`
/// on a key that is present with another verdict fails ("File exists"), it never
/// replaces; deleting and adding the same key in one transaction is accepted.
pub fn render_update(old: &Ruleset, new: &Ruleset) -> Option<String> {
    if old.table != new.table || old.instance_range != new.instance_range {
        return None;
    }
    let table = &new.table;
    let (old, new) = (Plan::new(old), Plan::new(new));
    let (old_verdicts, new_verdicts) = (old.verdicts(), new.verdicts());
    let (old_chains, new_chains) = (old.chains(), new.chains());
    let (old_ips, new_ips) = (old.addresses(), new.addresses());
    let mut out = String::new();

    // 1. Elements out.
    for (key, &(map, _)) in &old_verdicts {
        if new_verdicts.get(key) != old_verdicts.get(key) {
            let _ = writeln!(out, "delete element ip {table} {map} {{ {key} }}");
        }
    }
    for ip in old_ips.difference(&new_ips) {
        let _ = writeln!(
            out,
            "delete element ip {table} {SERVICE_ADDRESSES} {{ {ip} }}"
        );
    }
    // 2. Chains emptied, then the ones that go deleted.
    for (name, body) in &old_chains {
        if new_chains.get(name) != Some(body) {
            let _ = writeln!(out, "flush chain ip {table} {name}");
        }
    }
    for name in old_chains.keys().filter(|n| !new_chains.contains_key(*n)) {
        let _ = writeln!(out, "delete chain ip {table} {name}");
    }
    // 3. Chains in, then their rules.
    for name in new_chains.keys().filter(|n| !old_chains.contains_key(*n)) {
        let _ = writeln!(out, "add chain ip {table} {name}");
    }
    for (name, body) in &new_chains {
        if old_chains.get(name) != Some(body) {
            for rule in body {
                let _ = writeln!(out, "add rule ip {table} {name} {rule}");
            }
        }
    }
    // 4. Elements in.
    for (key, &(map, chain)) in &new_verdicts {
        if old_verdicts.get(key) != new_verdicts.get(key) {
            let _ = writeln!(
                out,
                "add element ip {table} {map} {{ {key} : goto {chain} }}"
            );
        }
    }
    for ip in new_ips.difference(&old_ips) {
        let _ = writeln!(out, "add element ip {table} {SERVICE_ADDRESSES} {{ {ip} }}");
    }
    Some(out)
}

/// A frontend as rendered: its chain and its backends' chains, sorted.
struct PlannedFrontend {
    ip: Ipv4Addr,
    port: u16,
    proto: Proto,
    chain: String,
    backends: Vec<(SocketAddrV4, String)>,
}

impl PlannedFrontend {
    fn key(&self) -> String {
        format!("{} . {} . {}", self.ip, self.proto, self.port)
    }

    /// The map holding this frontend's key and the chain it sends packets to.
    fn verdict(&self) -> (&'static str, &str) {
        if self.backends.is_empty() {
            (NO_ENDPOINT_SERVICES, "reject-chain")
        } else {
            (SERVICE_IPS, &self.chain)
        }
    }

    /// The chains of this frontend and their rules: its own chain (round robin) and
    /// one per backend, in that order; none without backends.
    fn chains(&self) -> Vec<(&str, Vec<String>)> {
        if self.backends.is_empty() {
            return Vec::new();
        }
        let picks = self
            .backends
            .iter()
            .enumerate()
            .map(|(i, (_, chain))| format!("{i} : goto {chain}"))
            .collect::<Vec<_>>()
            .join(", ");
        let pick = format!("numgen inc mod {} vmap {{ {picks} }}", self.backends.len());
        let mut chains = vec![(self.chain.as_str(), vec![pick])];
        for (backend, chain) in &self.backends {
            let body = vec![
                format!("ip saddr {} jump mark-for-masquerade", backend.ip()),
                format!("meta l4proto {} dnat to {backend}", self.proto),
            ];
            chains.push((chain.as_str(), body));
        }
        chains
    }
}

/// The sorted, de-duplicated frontends of a ruleset with their chain names.
struct Plan {
    frontends: Vec<PlannedFrontend>,
}

impl Plan {
    fn new(rules: &Ruleset) -> Plan {
        let mut services: Vec<&ServiceRules> = rules.services.iter().collect();
        services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut claimed = BTreeSet::new();
        let mut frontends = Vec::new();
        for service in services {
            let owner = service_ident(&service.namespace, &service.name);
            let mut own: Vec<&Frontend> = service.frontends.iter().collect();
            own.sort_by_key(|f| (f.ip, f.proto, f.port));
            for f in own {
                if !claimed.insert((f.ip, f.proto, f.port)) {
                    continue;
                }
                let chain = owned_frontend_chain(&owner, f.ip, f.proto, f.port);
                let backends: BTreeSet<SocketAddrV4> = f.backends.iter().copied().collect();
                let backends = backends
                    .into_iter()
                    .map(|b| {
                        let ep = format!(
                            "ep-{owner}-{}-{}-{}-{}-{}",
                            f.ip,
                            f.proto,
                            f.port,
                            b.ip(),
                            b.port()
                        );
                        (b, ep)
                    })
                    .collect();
                frontends.push(PlannedFrontend {
                    ip: f.ip,
                    port: f.port,
                    proto: f.proto,
                    chain,
                    backends,
                });
            }
        }
        Plan { frontends }
    }

    /// Every service IP (the `service-addresses` set).
    fn addresses(&self) -> BTreeSet<Ipv4Addr> {
        self.frontends.iter().map(|f| f.ip).collect()
    }

    /// Each frontend's map entry, by key: (key, (map, chain)).
    fn verdicts(&self) -> BTreeMap<String, (&'static str, &str)> {
        self.frontends
            .iter()
            .map(|f| (f.key(), f.verdict()))
            .collect()
    }

    /// Every frontend chain and its rules, by name.
    fn chains(&self) -> BTreeMap<&str, Vec<String>> {
        self.frontends
            .iter()
            .flat_map(PlannedFrontend::chains)
            .collect()
    }
}

/// The longest suffix a chain name adds to a service's identifier:
/// `ep-` + `-255.255.255.255-udp-65535-255.255.255.255-65535`.
const LONGEST_SUFFIX: usize =
    "ep-".len() + "-255.255.255.255-udp-65535-255.255.255.255-65535".len();

/// The chain of the frontend `ip`, `proto`, `port` of Service `namespace/name` in the
/// table (`nft list chain ip TABLE NAME` shows the backends it picks from; a frontend
/// without backends has none).
pub fn frontend_chain(
    namespace: &str,
    name: &str,
    ip: Ipv4Addr,
    proto: Proto,
    port: u16,
) -> String {
    owned_frontend_chain(&service_ident(namespace, name), ip, proto, port)
}

fn owned_frontend_chain(owner: &str, ip: Ipv4Addr, proto: Proto, port: u16) -> String {
    format!("svc-{owner}-{ip}-{proto}-{port}")
}

/// The part of chain names that names a service: `<namespace>/<name>`, each escaped.
///
/// Escaping keeps ASCII letters, digits, `.` and `-` and writes every other byte as
/// `_xx` (lowercase hex), so it is injective and the result is an nft identifier
/// without `/`; the single `/` then splits namespace from name, and the fields after
/// the name (address, protocol, port) contain no `-`, so distinct frontends and
/// backends always get distinct chain names. An identifier that would push a chain
/// name past the kernel's 255 bytes becomes `_h<128-bit FNV-1a of namespace and
/// name>/<truncated identifier>`; `_h` is never produced by escaping, so such names
/// cannot collide with the ordinary ones (two over-long ones only by a hash collision).
fn service_ident(namespace: &str, name: &str) -> String {
    let full = format!("{}/{}", escape(namespace), escape(name));
    let room = MAX_CHAIN_NAME - LONGEST_SUFFIX;
    if full.len() <= room {
        return full;
    }
    let mut key = Vec::with_capacity(namespace.len() + name.len() + 1);
    key.extend_from_slice(namespace.as_bytes());
    key.push(0);
    key.extend_from_slice(name.as_bytes());
    let hashed = format!("_h{:032x}/", fnv1a_128(&key));
    // `full` is ASCII, so any byte index is a character boundary.
    let keep = room - hashed.len();
    format!("{hashed}{}", &full[..keep])
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "_{b:02x}");
        }
    }
    out
}

fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u128::from(b)).wrapping_mul(PRIME))
}

/// `addr/prefix` with the host bits cleared (nft wants a network address).
fn cidr((addr, prefix): (Ipv4Addr, u8)) -> String {
    let prefix = prefix.min(32);
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    format!("{}/{prefix}", Ipv4Addr::from(u32::from(addr) & mask))
}

fn write_map(out: &mut String, name: &str, elements: impl Iterator<Item = (String, String)>) {
    let _ = writeln!(out, "\tmap {name} {{");
    out.push_str("\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n");
    let mut elements = elements.peekable();
    if elements.peek().is_some() {
        out.push_str("\t\telements = {\n");
        for (key, chain) in elements {
            let _ = writeln!(out, "\t\t\t{key} : goto {chain},");
        }
        out.push_str("\t\t}\n");
    }
    out.push_str("\t}\n");
}

fn write_set(out: &mut String, name: &str, elements: impl Iterator<Item = Ipv4Addr>) {
    let _ = writeln!(out, "\tset {name} {{");
    out.push_str("\t\ttype ipv4_addr\n");
    let mut elements = elements.peekable();
    if elements.peek().is_some() {
        out.push_str("\t\telements = {\n");
        for ip in elements {
            let _ = writeln!(out, "\t\t\t{ip},");
        }
        out.push_str("\t\t}\n");
    }
    out.push_str("\t}\n");
}

fn write_chain(out: &mut String, name: &str, hook: Option<&str>, body: &[String]) {
    let _ = writeln!(out, "\tchain {name} {{");
    if let Some(hook) = hook {
        let _ = writeln!(out, "\t\ttype {hook}; policy accept;");
    }
    for line in body {
        let _ = writeln!(out, "\t\t{line}");
    }
    out.push_str("\t}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddrV4 {
        s.parse().expect("socket address")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    fn fe(ip_: &str, port: u16, proto: Proto, backends: &[&str]) -> Frontend {
        Frontend {
            ip: ip(ip_),
            port,
            proto,
            backends: backends.iter().map(|b| sa(b)).collect(),
        }
    }

    fn svc(namespace: &str, name: &str, frontends: Vec<Frontend>) -> ServiceRules {
        ServiceRules {
            namespace: namespace.into(),
            name: name.into(),
            frontends,
        }
    }

    fn ruleset(services: Vec<ServiceRules>) -> Ruleset {
        Ruleset {
            table: "oakestra".into(),
            instance_range: (ip("10.128.0.0"), 9),
            services,
        }
    }

    /// The representative rulesets kept as golden files in `tests/golden/`.
    fn golden_cases() -> Vec<(&'static str, Ruleset)> {
        use Proto::{Tcp, Udp};
        vec![
            ("empty", ruleset(vec![])),
            (
                // 253-character namespace and name: hashed chain names within 255 bytes.
                "long_names",
                ruleset(vec![svc(
                    &"n".repeat(253),
                    &"s".repeat(253),
                    vec![fe("10.96.0.12", 65535, Udp, &["255.255.255.254:65535"])],
                )]),
            ),
            (
                "three_tcp_backends",
                ruleset(vec![svc(
                    "default",
                    "web",
                    vec![fe(
                        "10.96.0.10",
                        80,
                        Tcp,
                        &["10.128.0.3:8080", "10.128.0.2:8080", "10.128.1.2:8080"],
                    )],
                )]),
            ),
            (
                "no_endpoints",
                ruleset(vec![svc(
                    "default",
                    "idle",
                    vec![fe("10.96.0.11", 80, Tcp, &[])],
                )]),
            ),
            (
                "tcp_and_udp",
                ruleset(vec![svc(
                    "kube-system",
                    "dns",
                    vec![
                        fe("10.96.0.53", 53, Udp, &["10.128.0.5:53", "10.128.0.6:53"]),
                        fe("10.96.0.53", 53, Tcp, &["10.128.0.5:53", "10.128.0.6:53"]),
                    ],
                )]),
            ),
            (
                "two_services_rr_and_closest",
                ruleset(vec![
                    svc(
                        "shop",
                        "web",
                        vec![
                            // Round-robin IP: every instance.
                            fe(
                                "10.30.0.1",
                                80,
                                Tcp,
                                &["10.128.0.2:80", "10.128.64.2:80", "10.129.0.2:80"],
                            ),
                            // Closest IP: this node's instance only.
                            fe("10.31.0.1", 80, Tcp, &["10.128.0.2:80"]),
                        ],
                    ),
                    svc(
                        "shop",
                        "cache",
                        vec![
                            fe("10.30.0.2", 6379, Tcp, &["10.128.64.3:6379"]),
                            fe("10.31.0.2", 6379, Tcp, &[]),
                        ],
                    ),
                ]),
            ),
        ]
    }

    /// Updates kept as golden files in `tests/golden/updates/` (old, new).
    fn golden_update_cases() -> Vec<(&'static str, Ruleset, Ruleset)> {
        use Proto::Tcp;
        let web =
            |backends: &[&str]| svc("default", "web", vec![fe("10.96.0.10", 80, Tcp, backends)]);
        let cache =
            |backends: &[&str]| svc("shop", "cache", vec![fe("10.30.0.2", 6379, Tcp, backends)]);
        vec![
            (
                // One backend leaves, one joins; the other service stays untouched.
                "backends_changed",
                ruleset(vec![
                    web(&["10.128.0.2:8080", "10.128.0.3:8080"]),
                    cache(&["10.128.64.3:6379"]),
                ]),
                ruleset(vec![
                    web(&["10.128.0.2:8080", "10.128.1.2:8080"]),
                    cache(&["10.128.64.3:6379"]),
                ]),
            ),
            (
                "to_no_endpoints_and_service_added",
                ruleset(vec![web(&["10.128.0.2:8080"])]),
                ruleset(vec![web(&[]), cache(&["10.128.64.3:6379"])]),
            ),
        ]
    }

    fn golden_path(dir: &str, name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(dir)
            .join(format!("{name}.nft"))
    }

    /// Compare `actual` with the golden file at `path` (or rewrite it when blessing);
    /// a difference goes to `failures`.
    fn check_golden(path: &std::path::Path, actual: &str, failures: &mut Vec<String>) {
        if std::env::var_os("NETPLANE_BLESS").is_some_and(|v| v == "1") {
            std::fs::create_dir_all(path.parent().expect("golden dir"))
                .expect("create the golden directory");
            std::fs::write(path, actual).expect("write golden file");
            return;
        }
        match std::fs::read_to_string(path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{}: differs at {}",
                path.display(),
                first_difference(&expected, actual)
            )),
            Err(e) => failures.push(format!("{}: {e}", path.display())),
        }
    }

    /// Where `actual` first differs from `expected`, for a readable failure.
    fn first_difference(expected: &str, actual: &str) -> String {
        let (mut e, mut a) = (expected.lines(), actual.lines());
        for line in 1.. {
            match (e.next(), a.next()) {
                (None, None) => break,
                (x, y) if x == y => continue,
                (x, y) => {
                    return format!(
                        "line {line}:\n  expected: {}\n  actual:   {}",
                        x.unwrap_or("<end of file>"),
                        y.unwrap_or("<end of file>")
                    );
                }
            }
        }
        "only in trailing whitespace".into()
    }

    #[test]
    fn golden_files() {
        let mut failures = Vec::new();
        for (name, rules) in golden_cases() {
            check_golden(
                &golden_path("tests/golden", name),
                &render(&rules),
                &mut failures,
            );
        }
        for (name, old, new) in golden_update_cases() {
            let update = render_update(&old, &new).expect("an update");
            check_golden(
                &golden_path("tests/golden/updates", name),
                &update,
                &mut failures,
            );
        }
        assert!(
            failures.is_empty(),
            "golden files out of date (rerun with NETPLANE_BLESS=1 to rewrite them, \
             then review the diff):\n{}",
            failures.join("\n")
        );
    }

    /// (case, old, new, lines that must appear, substrings that must not).
    type UpdateCase = (
        &'static str,
        Ruleset,
        Ruleset,
        Vec<&'static str>,
        Vec<&'static str>,
    );

    #[test]
    fn render_update_shapes() {
        use Proto::{Tcp, Udp};
        let web = |backends: &[&str]| svc("a", "web", vec![fe("10.96.0.1", 80, Tcp, backends)]);
        let other = svc(
            "a",
            "other",
            vec![fe("10.96.0.9", 53, Udp, &["10.0.0.9:53"])],
        );
        let two = ["10.0.0.1:80", "10.0.0.2:80"];
        let cases: Vec<UpdateCase> = vec![
            (
                "a frontend is added",
                ruleset(vec![other.clone()]),
                ruleset(vec![other.clone(), web(&two)]),
                vec![
                    "add chain ip oakestra svc-a/web-10.96.0.1-tcp-80",
                    "add chain ip oakestra ep-a/web-10.96.0.1-tcp-80-10.0.0.2-80",
                    "add rule ip oakestra svc-a/web-10.96.0.1-tcp-80 numgen inc mod 2 vmap { 0 : goto ep-a/web-10.96.0.1-tcp-80-10.0.0.1-80, 1 : goto ep-a/web-10.96.0.1-tcp-80-10.0.0.2-80 }",
                    "add rule ip oakestra ep-a/web-10.96.0.1-tcp-80-10.0.0.1-80 meta l4proto tcp dnat to 10.0.0.1:80",
                    "add element ip oakestra service-ips { 10.96.0.1 . tcp . 80 : goto svc-a/web-10.96.0.1-tcp-80 }",
                    "add element ip oakestra service-addresses { 10.96.0.1 }",
                ],
                vec!["a/other", "delete", "flush"],
            ),
            (
                "a frontend is removed",
                ruleset(vec![other.clone(), web(&two)]),
                ruleset(vec![other.clone()]),
                vec![
                    "delete element ip oakestra service-ips { 10.96.0.1 . tcp . 80 }",
                    "delete element ip oakestra service-addresses { 10.96.0.1 }",
                    "flush chain ip oakestra svc-a/web-10.96.0.1-tcp-80",
                    "flush chain ip oakestra ep-a/web-10.96.0.1-tcp-80-10.0.0.1-80",
                    "delete chain ip oakestra svc-a/web-10.96.0.1-tcp-80",
                    "delete chain ip oakestra ep-a/web-10.96.0.1-tcp-80-10.0.0.2-80",
                ],
                vec!["a/other", "add "],
            ),
            (
                "a backend is replaced",
                ruleset(vec![other.clone(), web(&two)]),
                ruleset(vec![other.clone(), web(&["10.0.0.1:80", "10.0.0.3:80"])]),
                vec![
                    "flush chain ip oakestra svc-a/web-10.96.0.1-tcp-80",
                    "flush chain ip oakestra ep-a/web-10.96.0.1-tcp-80-10.0.0.2-80",
                    "delete chain ip oakestra ep-a/web-10.96.0.1-tcp-80-10.0.0.2-80",
                    "add chain ip oakestra ep-a/web-10.96.0.1-tcp-80-10.0.0.3-80",
                    "add rule ip oakestra svc-a/web-10.96.0.1-tcp-80 numgen inc mod 2 vmap { 0 : goto ep-a/web-10.96.0.1-tcp-80-10.0.0.1-80, 1 : goto ep-a/web-10.96.0.1-tcp-80-10.0.0.3-80 }",
                ],
                vec![
                    "a/other",
                    "element",
                    "add chain ip oakestra svc-",
                    "ep-a/web-10.96.0.1-tcp-80-10.0.0.1-80 ",
                    "chain ip oakestra ep-a/web-10.96.0.1-tcp-80-10.0.0.1-80",
                ],
            ),
            (
                "the last backend leaves",
                ruleset(vec![web(&two)]),
                ruleset(vec![web(&[])]),
                vec![
                    "delete element ip oakestra service-ips { 10.96.0.1 . tcp . 80 }",
                    "add element ip oakestra no-endpoint-services { 10.96.0.1 . tcp . 80 : goto reject-chain }",
                    "delete chain ip oakestra svc-a/web-10.96.0.1-tcp-80",
                    "delete chain ip oakestra ep-a/web-10.96.0.1-tcp-80-10.0.0.1-80",
                ],
                vec!["service-addresses", "add chain", "add rule"],
            ),
            (
                "a backend comes back",
                ruleset(vec![web(&[])]),
                ruleset(vec![web(&["10.0.0.1:80"])]),
                vec![
                    "delete element ip oakestra no-endpoint-services { 10.96.0.1 . tcp . 80 }",
                    "add chain ip oakestra svc-a/web-10.96.0.1-tcp-80",
                    "add chain ip oakestra ep-a/web-10.96.0.1-tcp-80-10.0.0.1-80",
                    "add element ip oakestra service-ips { 10.96.0.1 . tcp . 80 : goto svc-a/web-10.96.0.1-tcp-80 }",
                ],
                vec!["service-addresses", "flush", "delete chain"],
            ),
            (
                "a service IP another frontend still uses stays in the set",
                ruleset(vec![svc(
                    "a",
                    "dns",
                    vec![fe("10.96.0.53", 53, Udp, &[]), fe("10.96.0.53", 53, Tcp, &[])],
                )]),
                ruleset(vec![svc("a", "dns", vec![fe("10.96.0.53", 53, Udp, &[])])]),
                vec!["delete element ip oakestra no-endpoint-services { 10.96.0.53 . tcp . 53 }"],
                vec!["service-addresses", "udp", "chain"],
            ),
            (
                "a frontend moving to another service changes chain",
                ruleset(vec![web(&["10.0.0.1:80"])]),
                ruleset(vec![svc("b", "web", vec![fe("10.96.0.1", 80, Tcp, &["10.0.0.1:80"])])]),
                vec![
                    "delete element ip oakestra service-ips { 10.96.0.1 . tcp . 80 }",
                    "delete chain ip oakestra svc-a/web-10.96.0.1-tcp-80",
                    "add chain ip oakestra svc-b/web-10.96.0.1-tcp-80",
                    "add element ip oakestra service-ips { 10.96.0.1 . tcp . 80 : goto svc-b/web-10.96.0.1-tcp-80 }",
                ],
                vec!["service-addresses"],
            ),
        ];
        // The phase of each command: they must come in this order (see `render_update`).
        let phases = [
            "delete element ",
            "flush chain ",
            "delete chain ",
            "add chain ",
            "add rule ",
            "add element ",
        ];
        for (case, old, new, present, absent) in cases {
            let out = render_update(&old, &new).unwrap_or_else(|| panic!("{case}: no update"));
            let lines: Vec<&str> = out.lines().collect();
            for want in present {
                assert!(lines.contains(&want), "{case}: missing {want:?} in\n{out}");
            }
            for unwanted in absent {
                assert!(
                    !out.contains(unwanted),
                    "{case}: unexpected {unwanted:?} in\n{out}"
                );
            }
            let order: Vec<usize> = lines
                .iter()
                .map(|l| {
                    phases
                        .iter()
                        .position(|p| l.starts_with(p))
                        .unwrap_or_else(|| panic!("{case}: unknown command {l:?}"))
                })
                .collect();
            assert!(
                order.windows(2).all(|w| w[0] <= w[1]),
                "{case}: out of order:\n{out}"
            );
        }
    }

    #[test]
    fn render_update_of_nothing_is_empty_and_of_another_table_none() {
        let (_, rules) = golden_cases().remove(5);
        assert_eq!(render_update(&rules, &rules).as_deref(), Some(""));
        let renamed = Ruleset {
            table: "other".into(),
            ..rules.clone()
        };
        assert_eq!(render_update(&rules, &renamed), None);
        let moved = Ruleset {
            instance_range: (ip("10.0.0.0"), 8),
            ..rules.clone()
        };
        assert_eq!(render_update(&rules, &moved), None);
    }

    #[test]
    fn render_is_deterministic_and_order_independent() {
        let (_, rules) = golden_cases().remove(4);
        let mut shuffled = rules.clone();
        shuffled.services.reverse();
        for s in &mut shuffled.services {
            s.frontends.reverse();
            for f in &mut s.frontends {
                f.backends.reverse();
            }
        }
        assert_eq!(render(&rules), render(&rules));
        assert_eq!(render(&rules), render(&shuffled));
    }

    #[test]
    fn render_shapes() {
        use Proto::{Tcp, Udp};
        // (case, ruleset, lines that must appear, lines that must not)
        let dup = sa("10.128.0.2:80");
        let cases: Vec<(&str, Ruleset, Vec<&str>, Vec<&str>)> = vec![
            (
                "duplicate backends collapse into one endpoint",
                ruleset(vec![svc(
                    "a",
                    "b",
                    vec![Frontend {
                        ip: ip("10.96.0.1"),
                        port: 80,
                        proto: Tcp,
                        backends: vec![dup, dup],
                    }],
                )]),
                vec!["numgen inc mod 1 vmap { 0 : goto ep-a/b-10.96.0.1-tcp-80-10.128.0.2-80 }"],
                vec![],
            ),
            (
                "a key claimed twice goes to the first service",
                ruleset(vec![
                    svc(
                        "z",
                        "late",
                        vec![fe("10.96.0.1", 80, Tcp, &["10.128.0.9:80"])],
                    ),
                    svc("a", "early", vec![fe("10.96.0.1", 80, Tcp, &[])]),
                ]),
                vec!["10.96.0.1 . tcp . 80 : goto reject-chain,"],
                vec!["chain svc-z/late-10.96.0.1-tcp-80 {"],
            ),
            (
                "udp dnat names udp",
                ruleset(vec![svc(
                    "a",
                    "b",
                    vec![fe("10.96.0.1", 53, Udp, &["10.128.0.2:53"])],
                )]),
                vec!["meta l4proto udp dnat to 10.128.0.2:53"],
                vec!["meta l4proto tcp dnat"],
            ),
            (
                "instance range host bits are cleared",
                Ruleset {
                    instance_range: (ip("10.129.7.1"), 9),
                    ..ruleset(vec![])
                },
                vec!["ip saddr 10.128.0.0/9 ip daddr != 10.128.0.0/9 masquerade"],
                vec![],
            ),
            (
                "odd characters are escaped",
                ruleset(vec![svc(
                    "n s",
                    "a_b",
                    vec![fe("10.96.0.1", 80, Tcp, &["10.0.0.1:1"])],
                )]),
                vec!["chain svc-n_20s/a_5fb-10.96.0.1-tcp-80 {"],
                vec![],
            ),
        ];
        for (case, rules, present, absent) in cases {
            let out = render(&rules);
            let lines: Vec<&str> = out.lines().map(str::trim).collect();
            for want in present {
                assert!(lines.contains(&want), "{case}: missing {want:?} in\n{out}");
            }
            for unwanted in absent {
                assert!(
                    !lines.contains(&unwanted),
                    "{case}: unexpected {unwanted:?} in\n{out}"
                );
            }
        }
    }

    #[test]
    fn chain_names_fit_and_stay_distinct() {
        let long = "x".repeat(253);
        let longer = format!("{long}y");
        let idents = [
            service_ident("default", "web"),
            service_ident("default/web", ""),
            service_ident("default", "web-10.0.0.1"),
            service_ident(&long, &long),
            service_ident(&long, &longer),
            service_ident("_h00", "x"),
        ];
        for ident in &idents {
            assert!(
                ident.len() + LONGEST_SUFFIX <= MAX_CHAIN_NAME,
                "{ident} too long"
            );
            assert!(
                ident
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b)),
                "{ident} is not an nft identifier"
            );
        }
        let distinct: BTreeSet<&String> = idents.iter().collect();
        assert_eq!(distinct.len(), idents.len(), "{idents:?}");
        assert_eq!(service_ident("default", "web"), "default/web");
        assert_eq!(service_ident("default/web", ""), "default_2fweb/");
    }

    #[test]
    fn cidr_table() {
        let cases = [
            (("10.128.0.0", 9), "10.128.0.0/9"),
            (("10.250.3.7", 16), "10.250.0.0/16"),
            (("1.2.3.4", 0), "0.0.0.0/0"),
            (("1.2.3.4", 32), "1.2.3.4/32"),
            (("1.2.3.4", 40), "1.2.3.4/32"),
        ];
        for ((addr, prefix), want) in cases {
            assert_eq!(cidr((ip(addr), prefix)), want);
        }
    }

    #[test]
    fn delete_script_adds_then_deletes() {
        assert_eq!(
            delete_script("oakestra"),
            "add table ip oakestra\ndelete table ip oakestra\n"
        );
    }

    #[test]
    fn udp_removed_table() {
        use Proto::{Tcp, Udp};
        let dns = |backends: &[&str]| {
            ruleset(vec![svc(
                "k",
                "dns",
                vec![fe("10.96.0.53", 53, Udp, backends)],
            )])
        };
        let flow = |backend: &str| UdpFlow {
            frontend: sa("10.96.0.53:53"),
            backend: sa(backend),
        };
        let cases: Vec<(&str, Ruleset, Ruleset, Vec<UdpFlow>)> = vec![
            (
                "nothing changes",
                dns(&["10.0.0.1:53"]),
                dns(&["10.0.0.1:53"]),
                vec![],
            ),
            (
                "one backend of two leaves",
                dns(&["10.0.0.1:53", "10.0.0.2:53"]),
                dns(&["10.0.0.1:53"]),
                vec![flow("10.0.0.2:53")],
            ),
            (
                "a backend joins",
                dns(&["10.0.0.1:53"]),
                dns(&["10.0.0.1:53", "10.0.0.2:53"]),
                vec![],
            ),
            (
                "the service goes away",
                dns(&["10.0.0.2:53", "10.0.0.1:53"]),
                ruleset(vec![]),
                vec![flow("10.0.0.1:53"), flow("10.0.0.2:53")],
            ),
            (
                "backend port changes",
                dns(&["10.0.0.1:53"]),
                dns(&["10.0.0.1:5353"]),
                vec![flow("10.0.0.1:53")],
            ),
            (
                "the frontend moves to another service with the same backend",
                dns(&["10.0.0.1:53"]),
                ruleset(vec![svc(
                    "k",
                    "dns2",
                    vec![fe("10.96.0.53", 53, Udp, &["10.0.0.1:53"])],
                )]),
                vec![],
            ),
            (
                "tcp backends never count",
                ruleset(vec![svc(
                    "k",
                    "web",
                    vec![fe("10.96.0.1", 80, Tcp, &["10.0.0.1:80"])],
                )]),
                ruleset(vec![]),
                vec![],
            ),
            (
                "the same backend under another frontend does not keep it",
                dns(&["10.0.0.1:53"]),
                ruleset(vec![svc(
                    "k",
                    "dns",
                    vec![fe("10.96.0.54", 53, Udp, &["10.0.0.1:53"])],
                )]),
                vec![flow("10.0.0.1:53")],
            ),
        ];
        for (case, old, new, want) in cases {
            assert_eq!(udp_removed(&old, &new), want, "{case}");
        }
    }

    #[test]
    fn proto_display() {
        assert_eq!(Proto::Tcp.to_string(), "tcp");
        assert_eq!(Proto::Udp.to_string(), "udp");
    }
}
