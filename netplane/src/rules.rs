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
//! [`udp_removed`] lists the UDP flows whose conntrack entries go stale when a table
//! replaces another, and [`delete_script`] removes the table.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4};

/// The bit of the packet mark that asks `nat-postrouting` to masquerade a packet.
///
/// Bit 12: kube-proxy uses 0x4000 (masquerade) and kubelet 0x8000 (drop), Calico the
/// upper 16 bits, Cilium 0x0F00 and Tailscale 0xFF0000, so 0x1000 stays clear of
/// the data planes most likely to share a node with us.
pub const MASQUERADE_MARK: u32 = 0x1000;

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
    write_map(
        &mut out,
        "service-ips",
        plan.frontends
            .iter()
            .filter(|f| !f.backends.is_empty())
            .map(|f| (f.key(), f.chain.clone())),
    );
    write_map(
        &mut out,
        "no-endpoint-services",
        plan.frontends
            .iter()
            .filter(|f| f.backends.is_empty())
            .map(|f| (f.key(), "reject-chain".to_string())),
    );
    write_set(
        &mut out,
        "service-addresses",
        plan.frontends
            .iter()
            .map(|f| f.ip)
            .collect::<BTreeSet<_>>()
            .into_iter(),
    );
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
    for f in plan.frontends.iter().filter(|f| !f.backends.is_empty()) {
        let picks = f
            .backends
            .iter()
            .enumerate()
            .map(|(i, (_, chain))| format!("{i} : goto {chain}"))
            .collect::<Vec<_>>()
            .join(", ");
        let pick = format!("numgen inc mod {} vmap {{ {picks} }}", f.backends.len());
        write_chain(&mut out, &f.chain, None, &[pick]);
        for (backend, chain) in &f.backends {
            let body = [
                format!("ip saddr {} jump mark-for-masquerade", backend.ip()),
                format!("meta l4proto {} dnat to {backend}", f.proto),
            ];
            write_chain(&mut out, chain, None, &body);
        }
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
                let chain = format!("svc-{owner}-{}-{}-{}", f.ip, f.proto, f.port);
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
}

/// The longest suffix a chain name adds to a service's identifier:
/// `ep-` + `-255.255.255.255-udp-65535-255.255.255.255-65535`.
const LONGEST_SUFFIX: usize =
    "ep-".len() + "-255.255.255.255-udp-65535-255.255.255.255-65535".len();

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

    fn golden_path(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(format!("{name}.nft"))
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
        let bless = std::env::var_os("NETPLANE_BLESS").is_some_and(|v| v == "1");
        let mut failures = Vec::new();
        for (name, rules) in golden_cases() {
            let path = golden_path(name);
            let actual = render(&rules);
            if bless {
                std::fs::create_dir_all(path.parent().expect("golden dir"))
                    .expect("create tests/golden");
                std::fs::write(&path, &actual).expect("write golden file");
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(expected) if expected == actual => {}
                Ok(expected) => failures.push(format!(
                    "{}: differs at {}",
                    path.display(),
                    first_difference(&expected, &actual)
                )),
                Err(e) => failures.push(format!("{}: {e}", path.display())),
            }
        }
        assert!(
            failures.is_empty(),
            "golden files out of date (rerun with NETPLANE_BLESS=1 to rewrite them, \
             then review the diff):\n{}",
            failures.join("\n")
        );
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
