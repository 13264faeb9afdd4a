//! The vxlan overlay: an L3 mesh that carries instance traffic between the nodes of a
//! cluster (flannel's vxlan backend, done declaratively).
//!
//! Every node owns a subnet (say `10.128.0.64/26`); its bridge holds the subnet's
//! gateway and its instances live on the bridge. One vxlan device per node ([`Vxlan`],
//! default `oakestra.1`, VNI 1, UDP 8472, learning off) carries the traffic for the
//! other nodes' subnets. The device's own address is `<own subnet base>/32` (the
//! network address, never an instance's nor the gateway's). For every remote node
//! ([`Peer`]) the device holds three static entries, all of them keyed so that a
//! replace is idempotent:
//!
//! - a route `<subnet> via <subnet base> dev <device> onlink`;
//! - a permanent neighbour `<subnet base> lladdr <peer's device MAC>`;
//! - a forwarding entry `<peer's device MAC> dst <peer's underlay address>`.
//!
//! The pieces, in the order the agent uses them:
//! - [`plan`] (pure) turns what the API says about the nodes into the peers, and says
//!   why a node was left out;
//! - [`ensure`] creates (or recreates) the device and returns its MAC, which the agent
//!   publishes for the other nodes;
//! - [`sync`] reads the device's routes, neighbours and forwarding entries
//!   ([`read_state`], parsed by [`parse_routes`], [`parse_neighbours`] and
//!   [`parse_fdb`]), computes the changes ([`diff`], pure) and applies them;
//! - [`remove`] deletes the device, and everything on it with it.
//!
//! Entries the kernel makes on its own (learned neighbours, the all-zero or multicast
//! forwarding entries, connected routes) are not ours: the parsers drop them, so `sync`
//! never fights the kernel over them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::Deserialize;

use crate::exec::{CommandError, Host};

/// The kernel's limit on an interface name, in bytes (`IFNAMSIZ - 1`).
const IFNAME_MAX: usize = 15;
/// The largest VNI (24 bits).
const VNI_MAX: u32 = (1 << 24) - 1;

/// An error of the overlay.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// The [`Vxlan`] settings cannot work (bad device name, VNI out of range, …).
    #[error("invalid overlay configuration: {0}")]
    Config(String),
    /// A command that reads or sets up the device failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// `ip` or `bridge` printed something this module cannot read.
    #[error("unparsable output of `{command}`: {message}")]
    Parse {
        /// The command line.
        command: String,
        /// What was wrong with it.
        message: String,
    },
    /// Some changes of a [`sync`] failed (the others were applied).
    #[error("{} overlay change(s) failed; first: {}", failures.len(), first_failure(failures))]
    Apply {
        /// Every change that failed, with its error.
        failures: Vec<ApplyFailure>,
    },
}

fn first_failure(failures: &[ApplyFailure]) -> String {
    failures
        .first()
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// One change of a [`sync`] that the kernel refused.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct ApplyFailure {
    /// The peer the change was for (`peer n2: route 10.0.0.64/26 via …`) or, for a
    /// stale entry, the entry.
    pub what: String,
    /// The failed command (its line and error output).
    #[source]
    pub source: CommandError,
}

/// A string that is not a [`Subnet`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid subnet {input:?}: {reason}")]
pub struct InvalidSubnet {
    /// What was parsed.
    pub input: String,
    /// Why it is not a subnet.
    pub reason: &'static str,
}

/// An IPv4 subnet: its network address and prefix length (`10.128.0.64/26`). The base
/// has no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subnet {
    base: Ipv4Addr,
    prefix: u8,
}

impl Subnet {
    /// The subnet `base/prefix`; fails if `prefix > 32` or `base` has host bits set.
    pub fn new(base: Ipv4Addr, prefix: u8) -> Result<Subnet, InvalidSubnet> {
        let invalid = |reason| InvalidSubnet {
            input: format!("{base}/{prefix}"),
            reason,
        };
        if prefix > 32 {
            return Err(invalid("the prefix length is above 32"));
        }
        if u32::from(base) & !mask(prefix) != 0 {
            return Err(invalid("the address has host bits set"));
        }
        Ok(Subnet { base, prefix })
    }

    /// The network address (the vxlan device's address and the peer's next hop).
    pub fn base(&self) -> Ipv4Addr {
        self.base
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside the subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.base)
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Subnet {
    type Err = InvalidSubnet;

    fn from_str(s: &str) -> Result<Subnet, InvalidSubnet> {
        let invalid = |reason| InvalidSubnet {
            input: s.to_string(),
            reason,
        };
        let (base, prefix) = s.split_once('/').ok_or(invalid("no `/prefix`"))?;
        let base = base
            .parse()
            .map_err(|_| invalid("not an IPv4 address before `/`"))?;
        let prefix = prefix
            .parse()
            .map_err(|_| invalid("not a prefix length after `/`"))?;
        Subnet::new(base, prefix).map_err(|e| InvalidSubnet {
            input: s.to_string(),
            reason: e.reason,
        })
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// The vxlan device of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vxlan {
    /// The device's name, at most 15 bytes ([`Vxlan::DEFAULT_DEVICE`]).
    pub device: String,
    /// The VXLAN network identifier, below 2^24 ([`Vxlan::DEFAULT_VNI`]).
    pub vni: u32,
    /// The UDP port on both ends ([`Vxlan::DEFAULT_PORT`], the Linux default, as flannel).
    pub port: u16,
    /// This node's underlay address: the source of the encapsulated packets, and what
    /// the other nodes have as this node's forwarding destination.
    pub local: Ipv4Addr,
    /// The uplink the encapsulated packets leave by; `None`: whichever the routing
    /// table picks.
    pub underlay_device: Option<String>,
    /// The device's MTU; `None` leaves the kernel's choice at creation: the
    /// underlay device's MTU − 50 when `underlay_device` is set, else 1450.
    pub mtu: Option<u32>,
}

impl Vxlan {
    /// The default device name (flannel's `flannel.<VNI>`, ours).
    pub const DEFAULT_DEVICE: &'static str = "oakestra.1";
    /// The default VNI.
    pub const DEFAULT_VNI: u32 = 1;
    /// The default UDP port (the Linux vxlan default, flannel's and Cilium's).
    pub const DEFAULT_PORT: u16 = 8472;
    /// The bytes vxlan adds to each packet (outer IPv4, UDP, vxlan and Ethernet
    /// headers): the device's MTU is the uplink's minus this.
    pub const OVERHEAD: u32 = 50;

    /// The MTU of the device once made: [`Vxlan::mtu`] if set, else the uplink's
    /// (`uplink_mtu`, when [`Vxlan::underlay_device`] is set and its MTU known) minus
    /// [`Vxlan::OVERHEAD`], else the kernel's 1450. Instances whose traffic may cross it
    /// get this MTU, as flannel gives its pods, so their packets fit without relying on
    /// path-MTU discovery.
    pub fn effective_mtu(&self, uplink_mtu: Option<u32>) -> u32 {
        const ETHERNET: u32 = 1500;
        self.mtu
            .unwrap_or_else(|| match (&self.underlay_device, uplink_mtu) {
                (Some(_), Some(uplink)) => uplink.saturating_sub(Self::OVERHEAD),
                _ => ETHERNET - Self::OVERHEAD,
            })
    }

    /// [`Vxlan::effective_mtu`], the uplink's MTU read from `/sys/class/net`.
    pub fn instance_mtu(&self) -> u32 {
        let uplink = self.underlay_device.as_ref().and_then(|dev| {
            std::fs::read_to_string(format!("/sys/class/net/{dev}/mtu"))
                .ok()?
                .trim()
                .parse()
                .ok()
        });
        self.effective_mtu(uplink)
    }

    /// The default device for a node whose underlay address is `local`: device
    /// [`Vxlan::DEFAULT_DEVICE`], VNI [`Vxlan::DEFAULT_VNI`], port
    /// [`Vxlan::DEFAULT_PORT`], no fixed uplink, the kernel's MTU.
    pub fn new(local: Ipv4Addr) -> Vxlan {
        Vxlan {
            device: Vxlan::DEFAULT_DEVICE.to_string(),
            vni: Vxlan::DEFAULT_VNI,
            port: Vxlan::DEFAULT_PORT,
            local,
            underlay_device: None,
            mtu: None,
        }
    }

    /// Checks what the kernel would refuse, or what would make the device unusable.
    pub fn validate(&self) -> Result<(), OverlayError> {
        valid_ifname(&self.device)?;
        if let Some(dev) = &self.underlay_device {
            valid_ifname(dev)?;
        }
        if self.vni > VNI_MAX {
            return Err(OverlayError::Config(format!(
                "VNI {} is above {VNI_MAX}",
                self.vni
            )));
        }
        if self.port == 0 {
            return Err(OverlayError::Config("UDP port 0".into()));
        }
        if self.local.is_unspecified() || self.local.is_multicast() {
            return Err(OverlayError::Config(format!(
                "{} is not a unicast underlay address",
                self.local
            )));
        }
        if let Some(mtu) = self.mtu {
            valid_mtu(mtu)?;
        }
        Ok(())
    }
}

/// Whether the kernel takes `mtu` for a device.
pub(crate) fn valid_mtu(mtu: u32) -> Result<(), OverlayError> {
    if !(68..=65535).contains(&mtu) {
        return Err(OverlayError::Config(format!(
            "MTU {mtu} is not in 68..=65535"
        )));
    }
    Ok(())
}

/// Whether the kernel takes `name` for an interface.
pub(crate) fn valid_ifname(name: &str) -> Result<(), OverlayError> {
    let bad = name.is_empty()
        || name.len() > IFNAME_MAX
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if bad {
        return Err(OverlayError::Config(format!(
            "{name:?} is not an interface name (1 to {IFNAME_MAX} bytes, no `/`, `:` or spaces)"
        )));
    }
    Ok(())
}

/// Another node of the cluster, as this node's overlay needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The node's name (for logs and errors).
    pub node: String,
    /// The node's instance subnet.
    pub subnet: Subnet,
    /// The node's underlay address (where its vxlan packets go).
    pub underlay: Ipv4Addr,
    /// The MAC of the node's vxlan device, lower case (`aa:bb:cc:dd:ee:ff`).
    pub mac: String,
}

/// What the API says about a node's networking; any of it may not be known yet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeNet {
    /// The node's name.
    pub name: String,
    /// Its instance subnet.
    pub subnet: Option<Subnet>,
    /// Its underlay address.
    pub underlay: Option<Ipv4Addr>,
    /// The MAC of its vxlan device, as published (any case).
    pub mac: Option<String>,
}

/// Why [`plan`] left a node out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// These fields are not known yet (`subnet`, `underlay`, `mac`).
    Missing(Vec<&'static str>),
    /// A value the overlay cannot use: a MAC that is not unicast, a subnet or underlay
    /// address that is not unicast (loopback, multicast, link-local, `0.0.0.0`, …).
    Unusable(String),
    /// Another node (first by name, or this node) already has this subnet base or MAC.
    Conflict {
        /// The other node.
        with: String,
        /// What they share (`subnet base 10.0.0.64` or `MAC aa:…`).
        what: String,
    },
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Missing(fields) => write!(f, "no {} yet", fields.join(", ")),
            SkipReason::Unusable(what) => write!(f, "{what}"),
            SkipReason::Conflict { with, what } => write!(f, "{what} is also node {with}'s"),
        }
    }
}

/// The peers of a node and the nodes that are not (yet) peers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Every other node with a subnet, an underlay address and a MAC, sorted by name.
    pub peers: Vec<Peer>,
    /// The other nodes left out, sorted by name, with why (for the caller to log).
    pub skipped: Vec<(String, SkipReason)>,
}

/// The peers of node `me` among `nodes` (pure): every other node whose subnet,
/// underlay address and MAC are known, sorted by name. A node that claims the subnet
/// base or MAC of a node before it (this node first, then by name) is skipped, since
/// the kernel entries are keyed by them.
pub fn plan(me: &str, nodes: &[NodeNet]) -> Plan {
    let mut sorted: Vec<&NodeNet> = nodes.iter().collect();
    sorted.sort_by(|a, b| (a.name != me, &a.name).cmp(&(b.name != me, &b.name)));
    let mut bases: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
    let mut macs: BTreeMap<String, &str> = BTreeMap::new();
    let mut out = Plan::default();
    for node in sorted {
        let mac = node.mac.as_deref().map(|m| (m, normalize_mac(m)));
        if node.name == me {
            if let Some(subnet) = node.subnet {
                bases.insert(subnet.base(), me);
            }
            if let Some((_, Some(mac))) = mac {
                macs.insert(mac, me);
            }
            continue;
        }
        let skip = |reason| (node.name.clone(), reason);
        let (Some(subnet), Some(underlay), Some((raw, mac))) = (node.subnet, node.underlay, mac)
        else {
            let missing = [
                ("subnet", node.subnet.is_none()),
                ("underlay", node.underlay.is_none()),
                ("mac", node.mac.is_none()),
            ];
            let missing = missing.iter().filter(|m| m.1).map(|m| m.0).collect();
            out.skipped.push(skip(SkipReason::Missing(missing)));
            continue;
        };
        let mac = match usable(subnet, underlay, raw, mac) {
            Ok(mac) => mac,
            Err(why) => {
                out.skipped.push(skip(SkipReason::Unusable(why)));
                continue;
            }
        };
        let conflict = if let Some(with) = bases.get(&subnet.base()) {
            Some((*with, format!("subnet base {}", subnet.base())))
        } else {
            macs.get(&mac).map(|with| (*with, format!("MAC {mac}")))
        };
        if let Some((with, what)) = conflict {
            let with = with.to_string();
            out.skipped.push(skip(SkipReason::Conflict { with, what }));
            continue;
        }
        bases.insert(subnet.base(), &node.name);
        macs.insert(mac.clone(), &node.name);
        out.peers.push(Peer {
            node: node.name.clone(),
            subnet,
            underlay,
            mac,
        });
    }
    out
}

/// A peer's normalized MAC, or why its subnet, underlay address or MAC (`raw`,
/// normalized: `mac`) cannot be used.
fn usable(
    subnet: Subnet,
    underlay: Ipv4Addr,
    raw: &str,
    mac: Option<String>,
) -> Result<String, String> {
    if !is_unicast(subnet.base()) {
        return Err(format!("subnet {subnet} is not unicast"));
    }
    if !is_unicast(underlay) {
        return Err(format!("underlay address {underlay} is not unicast"));
    }
    mac.filter(|m| is_unicast_mac(m))
        .ok_or_else(|| format!("MAC {raw:?} is not a unicast MAC"))
}

/// `mac` in lower case if it is six colon-separated hex octets.
fn normalize_mac(mac: &str) -> Option<String> {
    let octets: Vec<&str> = mac.split(':').collect();
    let ok = octets.len() == 6
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.chars().all(|c| c.is_ascii_hexdigit()));
    ok.then(|| mac.to_ascii_lowercase())
}

/// Whether `ip` can be a peer's subnet base or underlay address.
fn is_unicast(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_link_local())
}

/// Whether a normalized MAC is a unicast, non-zero address.
fn is_unicast_mac(mac: &str) -> bool {
    let first = u8::from_str_radix(mac.get(..2).unwrap_or("01"), 16).unwrap_or(1);
    first & 1 == 0 && mac != "00:00:00:00:00:00"
}

// ---------------------------------------------------------------------------------
// The device

/// The vxlan device as `ip -d -j addr show dev <device>` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceState {
    /// The link kind (`vxlan`, or whatever took the name).
    pub kind: Option<String>,
    /// The VNI.
    pub vni: Option<u32>,
    /// The UDP port.
    pub port: Option<u16>,
    /// The local (source) address.
    pub local: Option<Ipv4Addr>,
    /// The underlay device, if one is fixed.
    pub link: Option<String>,
    /// Whether the device learns forwarding entries from received packets.
    pub learning: Option<bool>,
    /// Whether it is administratively up.
    pub up: bool,
    /// Its MTU.
    pub mtu: u32,
    /// Its MAC.
    pub mac: String,
    /// Its IPv4 addresses.
    pub addresses: Vec<(Ipv4Addr, u8)>,
}

#[derive(Deserialize)]
struct LinkJson {
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    address: String,
    linkinfo: Option<LinkInfoJson>,
    #[serde(default)]
    addr_info: Vec<AddrJson>,
}

#[derive(Deserialize)]
struct LinkInfoJson {
    info_kind: Option<String>,
    info_data: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct VxlanJson {
    id: Option<u32>,
    port: Option<u16>,
    local: Option<Ipv4Addr>,
    link: Option<String>,
    learning: Option<bool>,
}

#[derive(Deserialize)]
struct AddrJson {
    family: String,
    local: String,
    prefixlen: u8,
}

/// Parses `ip -d -j addr show dev <device>` (one device).
pub fn parse_device(json: &str) -> Result<DeviceState, String> {
    let links: Vec<LinkJson> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let [link] = <[LinkJson; 1]>::try_from(links)
        .map_err(|l| format!("{} devices where one was expected", l.len()))?;
    let (kind, data) = match link.linkinfo {
        Some(info) => {
            let data = match (info.info_kind.as_deref(), info.info_data) {
                (Some("vxlan"), Some(data)) => {
                    serde_json::from_value(data).map_err(|e| format!("vxlan info_data: {e}"))?
                }
                _ => VxlanJson::default(),
            };
            (info.info_kind, data)
        }
        None => (None, VxlanJson::default()),
    };
    let addresses = link
        .addr_info
        .iter()
        .filter(|a| a.family == "inet")
        .map(|a| {
            a.local
                .parse()
                .map(|ip| (ip, a.prefixlen))
                .map_err(|_| format!("address {:?}", a.local))
        })
        .collect::<Result<_, _>>()?;
    Ok(DeviceState {
        kind,
        vni: data.id,
        port: data.port,
        local: data.local,
        link: data.link,
        learning: data.learning,
        up: link.flags.iter().any(|f| f == "UP"),
        mtu: link.mtu,
        mac: link.address.to_ascii_lowercase(),
        addresses,
    })
}

/// Whether an existing device is not the one `vx` describes and must be recreated
/// (its kind, VNI, port, local address, uplink or learning differ; those cannot be
/// changed in place).
pub fn needs_recreate(current: &DeviceState, vx: &Vxlan) -> bool {
    current.kind.as_deref() != Some("vxlan")
        || current.vni != Some(vx.vni)
        || current.port != Some(vx.port)
        || current.local != Some(vx.local)
        || current.link != vx.underlay_device
        || current.learning != Some(false)
}

/// The `ip` commands (arguments) that make a device of the right kind have the
/// address `<own base>/32` only, the MTU `vx` asks for, and be up.
pub fn tune(current: &DeviceState, vx: &Vxlan, own: Subnet) -> Vec<Vec<String>> {
    tune_device(current, &vx.device, vx.mtu, own)
}

/// [`tune`] for any overlay device (`dev`, to have MTU `mtu` if given).
pub(crate) fn tune_device(
    current: &DeviceState,
    dev: &str,
    mtu: Option<u32>,
    own: Subnet,
) -> Vec<Vec<String>> {
    let want = (own.base(), 32);
    let mut commands = Vec::new();
    if !current.addresses.contains(&want) {
        commands.push(args([
            "addr",
            "replace",
            &format!("{}/32", own.base()),
            "dev",
            dev,
        ]));
    }
    for (ip, prefix) in current.addresses.iter().filter(|a| **a != want) {
        commands.push(args(["addr", "del", &format!("{ip}/{prefix}"), "dev", dev]));
    }
    let mtu = mtu.filter(|m| *m != current.mtu);
    if mtu.is_some() || !current.up {
        let mut set = args(["link", "set", "dev", dev]);
        if let Some(mtu) = mtu {
            set.extend(args(["mtu", &mtu.to_string()]));
        }
        set.push("up".into());
        commands.push(set);
    }
    commands
}

pub(crate) fn args<const N: usize>(a: [&str; N]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

pub(crate) async fn run(
    host: &Host,
    program: &str,
    args: &[String],
) -> Result<String, CommandError> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    host.run(program, &args).await
}

/// Whether a failed `ip` command failed because the device does not exist.
pub(crate) fn is_absent(e: &CommandError) -> bool {
    e.message.contains("does not exist") || e.message.contains("Cannot find device")
}

/// Reads the device; `None` if there is none of that name.
pub async fn read_device(host: &Host, device: &str) -> Result<Option<DeviceState>, OverlayError> {
    let cmd = args(["-d", "-j", "addr", "show", "dev", device]);
    match read_with(host, "ip", cmd, parse_device).await {
        Ok(state) => Ok(Some(state)),
        Err(OverlayError::Command(e)) if is_absent(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Makes the vxlan device `vx` exist with the address `<own base>/32`, up, and
/// returns its MAC. Creates it if missing, recreates it if its VNI, port, local
/// address, uplink or learning differ (its MAC then changes), sets the MTU if given,
/// and removes other IPv4 addresses. Idempotent: a second call runs only one command.
pub async fn ensure(host: &Host, vx: &Vxlan, own: Subnet) -> Result<String, OverlayError> {
    vx.validate()?;
    let dev = vx.device.as_str();
    let mut current = read_device(host, dev).await?;
    if let Some(existing) = current.as_ref().filter(|c| needs_recreate(c, vx)) {
        tracing::info!(device = dev, ?existing, "recreating the vxlan device");
        run(host, "ip", &args(["link", "del", "dev", dev])).await?;
        current = None;
    }
    let current = match current {
        Some(current) => current,
        None => {
            let mut add = args(["link", "add", dev, "type", "vxlan"]);
            add.extend(args([
                "id",
                &vx.vni.to_string(),
                "dstport",
                &vx.port.to_string(),
            ]));
            add.extend(args(["local", &vx.local.to_string(), "nolearning"]));
            if let Some(uplink) = &vx.underlay_device {
                add.extend(args(["dev", uplink]));
            }
            run(host, "ip", &add).await?;
            tracing::info!(device = dev, vni = vx.vni, "created the vxlan device");
            read_device(host, dev)
                .await?
                .ok_or_else(|| OverlayError::Parse {
                    command: format!("ip -d -j addr show dev {dev}"),
                    message: "the device just created is not there".into(),
                })?
        }
    };
    for command in tune(&current, vx, own) {
        run(host, "ip", &command).await?;
    }
    Ok(current.mac)
}

/// Deletes the device and with it its routes, neighbours and forwarding entries.
/// Returns whether there was one.
pub async fn remove(host: &Host, vx: &Vxlan) -> Result<bool, OverlayError> {
    match run(host, "ip", &args(["link", "del", "dev", &vx.device])).await {
        Ok(_) => Ok(true),
        Err(e) if is_absent(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

// ---------------------------------------------------------------------------------
// The entries

/// A route on the device (`ip -j route show dev <device>`), kernel routes left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The destination.
    pub dst: Subnet,
    /// The next hop, if any.
    pub via: Option<Ipv4Addr>,
    /// Whether the next hop is taken as on the link (`onlink`).
    pub onlink: bool,
    /// The route's metric (0 when `ip` prints none).
    pub metric: u32,
}

/// A permanent IPv4 neighbour on the device (`ip -j neigh show dev <device>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its MAC, lower case.
    pub mac: String,
}

/// A unicast forwarding entry of the device (`bridge -j fdb show dev <device>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fdb {
    /// The remote device's MAC, lower case.
    pub mac: String,
    /// Where its packets are sent.
    pub dst: Ipv4Addr,
}

/// The entries of the device that [`sync`] manages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelState {
    /// The routes.
    pub routes: Vec<Route>,
    /// The permanent neighbours.
    pub neighbours: Vec<Neighbour>,
    /// The unicast forwarding entries.
    pub fdb: Vec<Fdb>,
}

impl KernelState {
    /// Whether the device holds none of our entries.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.neighbours.is_empty() && self.fdb.is_empty()
    }
}

#[derive(Deserialize)]
struct RouteJson {
    dst: String,
    gateway: Option<String>,
    protocol: Option<String>,
    metric: Option<u32>,
    #[serde(default)]
    flags: Vec<String>,
}

#[derive(Deserialize)]
struct NeighJson {
    dst: String,
    lladdr: Option<String>,
    #[serde(default)]
    state: Vec<String>,
}

#[derive(Deserialize)]
struct FdbJson {
    mac: String,
    dst: Option<String>,
    master: Option<String>,
}

fn parse_json<T: for<'de> Deserialize<'de>>(json: &str) -> Result<Vec<T>, String> {
    // `ip` prints nothing at all (not `[]`) for some empty dumps.
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(json).map_err(|e| e.to_string())
}

/// Parses `ip -4 -j route show dev <device>`; leaves out the kernel's own routes.
pub fn parse_routes(json: &str) -> Result<Vec<Route>, String> {
    let mut routes = Vec::new();
    for r in parse_json::<RouteJson>(json)? {
        if r.protocol.as_deref() == Some("kernel") {
            continue;
        }
        let dst = if r.dst == "default" {
            Ok(Subnet {
                base: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
            })
        } else if r.dst.contains('/') {
            r.dst.parse()
        } else {
            format!("{}/32", r.dst).parse()
        };
        let dst = dst.map_err(|e| format!("route: {e}"))?;
        let via = r
            .gateway
            .map(|g| g.parse().map_err(|_| format!("route gateway {g:?}")))
            .transpose()?;
        routes.push(Route {
            dst,
            via,
            onlink: r.flags.iter().any(|f| f == "onlink"),
            metric: r.metric.unwrap_or(0),
        });
    }
    Ok(routes)
}

/// Parses `ip -4 -j neigh show dev <device>`; keeps the permanent IPv4 neighbours with
/// a MAC (the kernel's own, learned or `NOARP` multicast ones, are not ours).
pub fn parse_neighbours(json: &str) -> Result<Vec<Neighbour>, String> {
    let mut neighbours = Vec::new();
    for n in parse_json::<NeighJson>(json)? {
        let Ok(ip) = n.dst.parse::<Ipv4Addr>() else {
            continue; // IPv6
        };
        let permanent = n.state.iter().any(|s| s == "PERMANENT");
        let mac = n.lladdr.as_deref().and_then(normalize_mac);
        if let (true, Some(mac)) = (permanent, mac) {
            neighbours.push(Neighbour { ip, mac });
        }
    }
    Ok(neighbours)
}

/// Parses `bridge -j fdb show dev <device>`; keeps the unicast entries with an IPv4
/// destination (not the all-zero default destination, multicast or bridge entries).
pub fn parse_fdb(json: &str) -> Result<Vec<Fdb>, String> {
    let mut entries = Vec::new();
    for e in parse_json::<FdbJson>(json)? {
        let mac = normalize_mac(&e.mac).ok_or_else(|| format!("fdb MAC {:?}", e.mac))?;
        let dst = e.dst.as_deref().and_then(|d| d.parse::<Ipv4Addr>().ok());
        if let (Some(dst), None, true) = (dst, &e.master, is_unicast_mac(&mac)) {
            entries.push(Fdb { mac, dst });
        }
    }
    Ok(entries)
}

/// Runs a read-only `program args` and parses its output.
pub(crate) async fn read_with<T>(
    host: &Host,
    program: &str,
    cmd: Vec<String>,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, OverlayError> {
    let out = run(host, program, &cmd).await?;
    parse(&out).map_err(|message| OverlayError::Parse {
        command: format!("{program} {}", cmd.join(" ")),
        message,
    })
}

/// Reads the routes of device `dev` (ours: the kernel's own are left out).
pub async fn read_routes(host: &Host, dev: &str) -> Result<Vec<Route>, OverlayError> {
    let routes = args(["-4", "-j", "route", "show", "dev", dev]);
    read_with(host, "ip", routes, parse_routes).await
}

/// Reads the device's routes, neighbours and forwarding entries (three commands).
pub async fn read_state(host: &Host, vx: &Vxlan) -> Result<KernelState, OverlayError> {
    let dev = vx.device.as_str();
    let neighbours = args(["-4", "-j", "neigh", "show", "dev", dev]);
    let fdb = args(["-j", "fdb", "show", "dev", dev]);
    Ok(KernelState {
        routes: read_routes(host, dev).await?,
        neighbours: read_with(host, "ip", neighbours, parse_neighbours).await?,
        fdb: read_with(host, "bridge", fdb, parse_fdb).await?,
    })
}

/// What a [`Change`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// The entry is missing.
    Add,
    /// The entry exists with other values.
    Replace,
    /// The entry is stale (no peer wants it).
    Delete,
}

/// A kernel entry of the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// `<dst> via <via> onlink` (a stale route may have no next hop or a metric).
    Route {
        /// The destination.
        dst: Subnet,
        /// The next hop.
        via: Option<Ipv4Addr>,
        /// The metric.
        metric: u32,
    },
    /// `<ip> lladdr <mac> nud permanent`.
    Neighbour {
        /// The neighbour's address (a peer subnet's base).
        ip: Ipv4Addr,
        /// Its MAC (the peer's device).
        mac: String,
    },
    /// `<mac> dst <dst> self permanent`.
    Fdb {
        /// The peer device's MAC.
        mac: String,
        /// The peer's underlay address.
        dst: Ipv4Addr,
    },
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Route { dst, via, metric } => {
                write!(f, "route {dst}")?;
                if let Some(via) = via {
                    write!(f, " via {via}")?;
                }
                if *metric != 0 {
                    write!(f, " metric {metric}")?;
                }
                Ok(())
            }
            Entry::Neighbour { ip, mac } => write!(f, "neighbour {ip} lladdr {mac}"),
            Entry::Fdb { mac, dst } => write!(f, "fdb {mac} dst {dst}"),
        }
    }
}

/// One change of the device's entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Add, replace or delete.
    pub op: Op,
    /// The entry as it should be (add, replace) or as it is (delete).
    pub entry: Entry,
    /// The peer that wants the entry; `None` for a delete.
    pub node: Option<String>,
}

/// The two tools the entries are set with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Ip,
    Bridge,
}

impl Tool {
    fn program(self) -> &'static str {
        match self {
            Tool::Ip => "ip",
            Tool::Bridge => "bridge",
        }
    }
}

impl Change {
    /// The tool and its arguments that make the change on `device`.
    fn command(&self, device: &str) -> (Tool, Vec<String>) {
        let delete = self.op == Op::Delete;
        match &self.entry {
            Entry::Route { dst, metric, .. } if delete => {
                let mut a = args(["route", "del", &dst.to_string(), "dev", device]);
                if *metric != 0 {
                    a.extend(args(["metric", &metric.to_string()]));
                }
                (Tool::Ip, a)
            }
            Entry::Route { dst, via, .. } => {
                let mut a = args(["route", "replace", &dst.to_string()]);
                match via {
                    // vxlan: through the peer's end, taken as on the link.
                    Some(via) => a.extend(args(["via", &via.to_string(), "dev", device, "onlink"])),
                    // A layer-3 device (WireGuard): straight into it.
                    None => a.extend(args(["dev", device])),
                }
                (Tool::Ip, a)
            }
            Entry::Neighbour { ip, .. } if delete => (
                Tool::Ip,
                args(["neigh", "del", &ip.to_string(), "dev", device]),
            ),
            Entry::Neighbour { ip, mac } => {
                let a = [
                    "neigh",
                    "replace",
                    &ip.to_string(),
                    "lladdr",
                    mac,
                    "dev",
                    device,
                ];
                (
                    Tool::Ip,
                    args(a)
                        .into_iter()
                        .chain(args(["nud", "permanent"]))
                        .collect(),
                )
            }
            Entry::Fdb { mac, .. } if delete => (
                Tool::Bridge,
                args(["fdb", "del", mac, "dev", device, "self"]),
            ),
            Entry::Fdb { mac, dst } => {
                let a = [
                    "fdb",
                    "replace",
                    mac,
                    "dev",
                    device,
                    "dst",
                    &dst.to_string(),
                ];
                (
                    Tool::Bridge,
                    args(a)
                        .into_iter()
                        .chain(args(["self", "permanent"]))
                        .collect(),
                )
            }
        }
    }

    /// For errors: the peer and the entry.
    fn describe(&self) -> String {
        match &self.node {
            Some(node) => format!("peer {node}: {}", self.entry),
            None => format!("stale {}", self.entry),
        }
    }

    /// Where the change goes in the order changes are applied: stale entries first
    /// (routes, then neighbours, then forwarding entries), then wanted ones in the
    /// reverse order, so a route is never there before its neighbour and forwarding
    /// entry.
    fn rank(&self) -> u8 {
        let kind = match self.entry {
            Entry::Route { .. } => 0,
            Entry::Neighbour { .. } => 1,
            Entry::Fdb { .. } => 2,
        };
        if self.op == Op::Delete {
            kind
        } else {
            5 - kind
        }
    }
}

/// Adds, replaces or deletes entries of one kind, keyed by `K`.
pub(crate) fn diff_keyed<K: Ord + Clone, V: PartialEq>(
    current: BTreeMap<K, V>,
    desired: BTreeMap<K, (V, &str)>,
    entry: impl Fn(&K, &V) -> Entry,
    out: &mut Vec<Change>,
) {
    for (key, (want, node)) in &desired {
        let op = match current.get(key) {
            None => Op::Add,
            Some(have) if have == want => continue,
            Some(_) => Op::Replace,
        };
        out.push(Change {
            op,
            entry: entry(key, want),
            node: Some(node.to_string()),
        });
    }
    for (key, have) in current.iter().filter(|(k, _)| !desired.contains_key(k)) {
        out.push(Change {
            op: Op::Delete,
            entry: entry(key, have),
            node: None,
        });
    }
}

/// The changes (pure) that turn the device's entries `current` into the ones `peers`
/// need, in the order they must be applied. Empty when the device is in line.
pub fn diff(current: &KernelState, peers: &[Peer]) -> Vec<Change> {
    let mut out = Vec::new();
    let want: Vec<(Subnet, Option<Ipv4Addr>, &str)> = peers
        .iter()
        .map(|p| (p.subnet, Some(p.subnet.base()), p.node.as_str()))
        .collect();
    diff_routes(&current.routes, &want, &mut out);
    // Neighbours, keyed by address.
    let neighbours = current
        .neighbours
        .iter()
        .map(|n| (n.ip, n.mac.clone()))
        .collect();
    let want = peers
        .iter()
        .map(|p| (p.subnet.base(), (p.mac.clone(), p.node.as_str())))
        .collect();
    let neighbour = |ip: &Ipv4Addr, mac: &String| Entry::Neighbour {
        ip: *ip,
        mac: mac.clone(),
    };
    diff_keyed(neighbours, want, neighbour, &mut out);
    // Forwarding entries, keyed by MAC (a unicast MAC has one destination).
    let fdb = current.fdb.iter().map(|f| (f.mac.clone(), f.dst)).collect();
    let want = peers
        .iter()
        .map(|p| (p.mac.clone(), (p.underlay, p.node.as_str())))
        .collect();
    let fdb_entry = |mac: &String, dst: &Ipv4Addr| Entry::Fdb {
        mac: mac.clone(),
        dst: *dst,
    };
    diff_keyed(fdb, want, fdb_entry, &mut out);
    out.sort_by_key(Change::rank); // stable: keeps the key order within a rank
    out
}

/// The route changes (pure) that turn the device's routes `current` into `want`
/// (destination, next hop, the node that wants it), keyed by destination and metric:
/// ours have metric 0, so a route of another metric is stale. Shared by both backends.
pub(crate) fn diff_routes(
    current: &[Route],
    want: &[(Subnet, Option<Ipv4Addr>, &str)],
    out: &mut Vec<Change>,
) {
    let routes = current
        .iter()
        .map(|r| ((r.dst, r.metric), (r.via, r.onlink)))
        .collect();
    let want = want
        .iter()
        .map(|&(dst, via, node)| ((dst, 0), ((via, via.is_some()), node)))
        .collect();
    let route = |&(dst, metric): &(Subnet, u32), &(via, _): &(Option<Ipv4Addr>, bool)| {
        Entry::Route { dst, via, metric }
    };
    diff_keyed(routes, want, route, out);
}

/// What a [`sync`] changed, in kernel entries (a new peer is three).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncReport {
    /// Entries added.
    pub added: usize,
    /// Entries replaced (another MAC, destination or next hop).
    pub changed: usize,
    /// Stale entries deleted.
    pub removed: usize,
}

impl SyncReport {
    /// Counts the changes by operation.
    pub fn of(changes: &[Change]) -> SyncReport {
        let count = |op| changes.iter().filter(|c| c.op == op).count();
        SyncReport {
            added: count(Op::Add),
            changed: count(Op::Replace),
            removed: count(Op::Delete),
        }
    }

    /// All changes.
    pub fn total(&self) -> usize {
        self.added + self.changed + self.removed
    }
}

/// Makes the device's routes, neighbours and forwarding entries those `peers` need
/// (the device must exist: [`ensure`]). Reads the three tables, computes the
/// [`diff`], and applies it in at most three `ip`/`bridge` batches. If a batch fails,
/// reads again and applies what is still missing one command at a time, so every
/// failure is named and one bad peer does not keep the others out.
pub async fn sync(host: &Host, vx: &Vxlan, peers: &[Peer]) -> Result<SyncReport, OverlayError> {
    let changes = diff(&read_state(host, vx).await?, peers);
    let again = || async { Ok(diff(&read_state(host, vx).await?, peers)) };
    let report = apply_changes(host, &vx.device, changes, again).await?;
    tracing::debug!(?report, "overlay in sync");
    Ok(report)
}

/// Applies `changes` to `device` in batches; if a batch fails, computes the changes
/// still needed (`again`: the kernel may hold part of the batch) and applies them one
/// at a time, so every failure is named and one bad peer does not keep the others out.
pub(crate) async fn apply_changes<F, Fut>(
    host: &Host,
    device: &str,
    changes: Vec<Change>,
    again: F,
) -> Result<SyncReport, OverlayError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Change>, OverlayError>>,
{
    let report = SyncReport::of(&changes);
    if changes.is_empty() {
        return Ok(report);
    }
    if let Err(e) = apply_batched(host, device, &changes).await {
        tracing::warn!(%device, error = %e, "overlay batch failed; applying one change at a time");
        let mut failures = Vec::new();
        for change in &again().await? {
            let (tool, cmd) = change.command(device);
            if let Err(source) = run(host, tool.program(), &cmd).await {
                failures.push(ApplyFailure {
                    what: change.describe(),
                    source,
                });
            }
        }
        if !failures.is_empty() {
            return Err(OverlayError::Apply { failures });
        }
    }
    Ok(report)
}

/// Applies `changes` (in their order) with one `-batch` run per stretch of the same
/// tool: at most `ip` (stale routes, neighbours), `bridge` (forwarding entries), `ip`
/// (new neighbours, routes).
async fn apply_batched(host: &Host, device: &str, changes: &[Change]) -> Result<(), CommandError> {
    let mut batches: Vec<(Tool, String)> = Vec::new();
    for change in changes {
        let (tool, cmd) = change.command(device);
        let line = cmd.join(" ") + "\n";
        match batches.last_mut() {
            Some((last, text)) if *last == tool => text.push_str(&line),
            _ => batches.push((tool, line)),
        }
    }
    for (tool, text) in batches {
        host.run_with_input(tool.program(), &["-batch", "-"], text.as_bytes())
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(s: &str) -> Subnet {
        s.parse().expect("test subnet")
    }

    #[test]
    fn instances_get_the_mtu_the_overlay_leaves() {
        let local = Ipv4Addr::new(192, 0, 2, 1);
        let on = |dev: Option<&str>, mtu: Option<u32>| Vxlan {
            underlay_device: dev.map(String::from),
            mtu,
            ..Vxlan::new(local)
        };
        for (vx, uplink, want) in [
            (on(None, None), None, 1450),
            // Without a fixed uplink the kernel makes the device 1450 whatever the route.
            (on(None, None), Some(9000), 1450),
            (on(Some("eth1"), None), Some(9000), 8950),
            (on(Some("eth1"), None), None, 1450),
            (on(Some("eth1"), Some(1400)), Some(9000), 1400),
        ] {
            assert_eq!(vx.effective_mtu(uplink), want, "{vx:?} over {uplink:?}");
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("test address")
    }

    #[test]
    fn subnets_parse_and_print() {
        type Row<'a> = (&'a str, Result<(&'a str, u8), &'a str>);
        let cases: &[Row] = &[
            ("10.128.0.64/26", Ok(("10.128.0.64", 26))),
            ("0.0.0.0/0", Ok(("0.0.0.0", 0))),
            ("10.1.2.3/32", Ok(("10.1.2.3", 32))),
            ("10.128.0.65/26", Err("the address has host bits set")),
            ("10.128.0.0/33", Err("the prefix length is above 32")),
            ("10.128.0.0", Err("no `/prefix`")),
            ("10.128.0/24", Err("not an IPv4 address before `/`")),
            ("10.128.0.0/x", Err("not a prefix length after `/`")),
        ];
        for (input, want) in cases {
            let got = input.parse::<Subnet>();
            match (got, want) {
                (Ok(s), Ok((base, prefix))) => {
                    assert_eq!((s.base(), s.prefix()), (ip(base), *prefix), "{input}");
                    assert_eq!(s.to_string(), *input);
                }
                (Err(e), Err(reason)) => assert_eq!(e.reason, *reason, "{input}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
        let s = subnet("10.128.0.64/26");
        assert!(s.contains(ip("10.128.0.64")) && s.contains(ip("10.128.0.127")));
        assert!(!s.contains(ip("10.128.0.128")) && !s.contains(ip("10.128.0.63")));
        assert!(subnet("0.0.0.0/0").contains(ip("1.2.3.4")));
    }

    #[test]
    fn vxlan_settings_are_checked() {
        let ok = Vxlan::new(ip("192.168.1.1"));
        assert_eq!(ok.device, "oakestra.1");
        assert_eq!((ok.vni, ok.port), (1, 8472));
        assert!(ok.validate().is_ok());
        type Spoil = fn(&mut Vxlan);
        let bad: &[(&str, Spoil)] = &[
            ("long name", |v| v.device = "oakestra.vxlan.1".into()),
            ("empty name", |v| v.device = String::new()),
            ("slash", |v| v.device = "oak/1".into()),
            ("space", |v| v.device = "oak 1".into()),
            ("bad uplink", |v| v.underlay_device = Some("a:b".into())),
            ("vni", |v| v.vni = 1 << 24),
            ("port", |v| v.port = 0),
            ("local", |v| v.local = Ipv4Addr::UNSPECIFIED),
            ("mtu", |v| v.mtu = Some(20)),
        ];
        for (name, spoil) in bad {
            let mut vx = ok.clone();
            spoil(&mut vx);
            assert!(
                matches!(vx.validate(), Err(OverlayError::Config(_))),
                "{name}"
            );
        }
        let mut fine = ok.clone();
        fine.device = "abcdefghijklmno".into(); // 15 bytes
        fine.mtu = Some(1450);
        assert!(fine.validate().is_ok());
    }

    fn node(
        name: &str,
        subnet_: Option<&str>,
        underlay: Option<&str>,
        mac: Option<&str>,
    ) -> NodeNet {
        NodeNet {
            name: name.into(),
            subnet: subnet_.map(subnet),
            underlay: underlay.map(ip),
            mac: mac.map(Into::into),
        }
    }

    #[test]
    fn plan_picks_complete_other_nodes() {
        let nodes = [
            node(
                "n3",
                Some("10.0.0.128/26"),
                Some("192.168.0.3"),
                Some("02:00:00:00:00:03"),
            ),
            node(
                "n1",
                Some("10.0.0.0/26"),
                Some("192.168.0.1"),
                Some("02:00:00:00:00:01"),
            ),
            node(
                "n2",
                Some("10.0.0.64/26"),
                Some("192.168.0.2"),
                Some("02:00:00:00:00:02"),
            ),
            node("n4", None, Some("192.168.0.4"), None),
            node(
                "n5",
                Some("10.0.1.0/26"),
                Some("192.168.0.5"),
                Some("02:00:00:00:00:0"),
            ),
            node(
                "n6",
                Some("10.0.1.64/26"),
                Some("192.168.0.6"),
                Some("01:00:5e:00:00:01"),
            ),
            // n0 sorts first but claims n1's (this node's) subnet base, n7 n2's MAC.
            node(
                "n0",
                Some("10.0.0.0/24"),
                Some("192.168.0.9"),
                Some("02:00:00:00:00:09"),
            ),
            node(
                "n7",
                Some("10.0.2.0/26"),
                Some("192.168.0.7"),
                Some("02:00:00:00:00:02"),
            ),
            node(
                "n8",
                Some("10.0.3.0/26"),
                Some("192.168.0.8"),
                Some("02:AB:00:00:00:08"),
            ),
            node(
                "na",
                Some("224.0.0.0/24"),
                Some("192.168.0.10"),
                Some("02:00:00:00:00:0a"),
            ),
            node(
                "nb",
                Some("10.0.4.0/26"),
                Some("127.0.0.1"),
                Some("02:00:00:00:00:0b"),
            ),
        ];
        let got = plan("n1", &nodes);
        let names: Vec<&str> = got.peers.iter().map(|p| p.node.as_str()).collect();
        assert_eq!(names, ["n2", "n3", "n8"]);
        assert_eq!(
            got.peers[0],
            Peer {
                node: "n2".into(),
                subnet: subnet("10.0.0.64/26"),
                underlay: ip("192.168.0.2"),
                mac: "02:00:00:00:00:02".into(),
            }
        );
        assert_eq!(got.peers[2].mac, "02:ab:00:00:00:08", "lower-cased");
        let skipped: Vec<String> = got
            .skipped
            .iter()
            .map(|(node, reason)| format!("{node}: {reason}"))
            .collect();
        assert_eq!(
            skipped,
            [
                "n0: subnet base 10.0.0.0 is also node n1's",
                "n4: no subnet, mac yet",
                "n5: MAC \"02:00:00:00:00:0\" is not a unicast MAC",
                "n6: MAC \"01:00:5e:00:00:01\" is not a unicast MAC",
                "n7: MAC 02:00:00:00:00:02 is also node n2's",
                "na: subnet 224.0.0.0/24 is not unicast",
                "nb: underlay address 127.0.0.1 is not unicast",
            ]
        );
        // Alone, or only with incomplete nodes: no peers.
        assert!(plan("n1", &nodes[1..2]).peers.is_empty());
        assert!(plan("n9", &[node("n9", None, None, None)]) == Plan::default());
    }

    // Captured with iproute2 6.1 from a vxlan device in a test namespace.
    const DEVICE: &str = r#"[{"ifindex":4,"ifname":"oakestra.1","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1450,"qdisc":"noqueue","operstate":"UNKNOWN","group":"default","txqlen":1000,"link_type":"ether","address":"d6:81:15:ee:cd:6e","broadcast":"ff:ff:ff:ff:ff:ff","promiscuity":0,"allmulti":0,"min_mtu":68,"max_mtu":65535,"linkinfo":{"info_kind":"vxlan","info_data":{"id":1,"local":"192.168.249.1","link":"u0","port_range":{"low":0,"high":0},"port":8472,"learning":false,"ttl":0,"df":"unset","ageing":300,"udp_csum":true,"udp_zero_csum6_tx":false,"udp_zero_csum6_rx":false}},"num_tx_queues":1,"num_rx_queues":1,"gso_max_size":65536,"gso_max_segs":65535,"tso_max_size":524280,"tso_max_segs":65535,"gro_max_size":65536,"addr_info":[{"family":"inet","local":"10.251.0.0","prefixlen":32,"scope":"global","label":"oakestra.1","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet6","local":"fe80::d481:15ff:feee:cd6e","prefixlen":64,"scope":"link","valid_life_time":4294967295,"preferred_life_time":4294967295}]}]"#;
    const VETH: &str = r#"[{"ifindex":3,"link":"u1","ifname":"u0","flags":["BROADCAST","MULTICAST"],"mtu":1500,"qdisc":"noqueue","operstate":"DOWN","linkmode":"DEFAULT","group":"default","txqlen":1000,"link_type":"ether","address":"46:21:13:73:25:0d","broadcast":"ff:ff:ff:ff:ff:ff","promiscuity":0,"allmulti":0,"min_mtu":68,"max_mtu":65535,"linkinfo":{"info_kind":"veth"},"num_tx_queues":2,"num_rx_queues":2,"gso_max_size":65536,"gso_max_segs":65535,"tso_max_size":524280,"tso_max_segs":65535,"gro_max_size":65536,"addr_info":[]}]"#;

    fn vx_u0() -> Vxlan {
        Vxlan {
            underlay_device: Some("u0".into()),
            ..Vxlan::new(ip("192.168.249.1"))
        }
    }

    #[test]
    fn device_is_parsed() {
        let got = parse_device(DEVICE).expect("parses");
        assert_eq!(
            got,
            DeviceState {
                kind: Some("vxlan".into()),
                vni: Some(1),
                port: Some(8472),
                local: Some(ip("192.168.249.1")),
                link: Some("u0".into()),
                learning: Some(false),
                up: true,
                mtu: 1450,
                mac: "d6:81:15:ee:cd:6e".into(),
                addresses: vec![(ip("10.251.0.0"), 32)],
            }
        );
        let veth = parse_device(VETH).expect("parses");
        assert_eq!(
            (veth.kind.as_deref(), veth.vni, veth.up),
            (Some("veth"), None, false)
        );
        assert!(parse_device("[]").is_err());
        assert!(parse_device("not json").is_err());
    }

    #[test]
    fn device_is_recreated_when_its_identity_differs() {
        let current = parse_device(DEVICE).expect("parses");
        let veth = parse_device(VETH).expect("parses");
        type Row<'a> = (&'a str, &'a DeviceState, fn(&mut Vxlan), bool);
        let cases: &[Row] = &[
            ("same", &current, |_| {}, false),
            ("mtu only", &current, |v| v.mtu = Some(1400), false),
            ("vni", &current, |v| v.vni = 2, true),
            ("port", &current, |v| v.port = 4789, true),
            ("local", &current, |v| v.local = ip("192.168.249.7"), true),
            ("uplink", &current, |v| v.underlay_device = None, true),
            ("kind", &veth, |_| {}, true),
        ];
        for (name, state, change, want) in cases {
            let mut vx = vx_u0();
            change(&mut vx);
            assert_eq!(needs_recreate(state, &vx), *want, "{name}");
        }
        let learning = DeviceState {
            learning: Some(true),
            ..current
        };
        assert!(needs_recreate(&learning, &vx_u0()));
    }

    #[test]
    fn device_is_tuned() {
        let current = parse_device(DEVICE).expect("parses");
        let own = subnet("10.251.0.0/26");
        let other = subnet("10.251.0.64/26");
        let fresh = DeviceState {
            up: false,
            addresses: vec![],
            ..current.clone()
        };
        let stray = DeviceState {
            addresses: vec![(ip("10.1.1.1"), 24), (ip("10.251.0.0"), 32)],
            ..current.clone()
        };
        type Row<'a> = (&'a str, &'a DeviceState, Option<u32>, Subnet, &'a [&'a str]);
        let cases: &[Row] = &[
            ("in line", &current, None, own, &[]),
            ("same mtu", &current, Some(1450), own, &[]),
            (
                "mtu",
                &current,
                Some(1400),
                own,
                &["link set dev oakestra.1 mtu 1400 up"],
            ),
            (
                "fresh",
                &fresh,
                None,
                own,
                &[
                    "addr replace 10.251.0.0/32 dev oakestra.1",
                    "link set dev oakestra.1 up",
                ],
            ),
            (
                "stray address",
                &stray,
                None,
                own,
                &["addr del 10.1.1.1/24 dev oakestra.1"],
            ),
            (
                "other subnet",
                &current,
                None,
                other,
                &[
                    "addr replace 10.251.0.64/32 dev oakestra.1",
                    "addr del 10.251.0.0/32 dev oakestra.1",
                ],
            ),
        ];
        for (name, state, mtu, own, want) in cases {
            let vx = Vxlan {
                mtu: *mtu,
                ..vx_u0()
            };
            let got: Vec<String> = tune(state, &vx, *own).iter().map(|c| c.join(" ")).collect();
            assert_eq!(got, *want, "{name}");
        }
    }

    // Captured from a vxlan device with an extra /24 address (a kernel route), a
    // route with a metric, a host route, four peers' routes, a learned neighbour, and
    // the all-zero forwarding entry; the IPv6 and multicast lines are hand-made.
    const ROUTES: &str = r#"[{"dst":"10.77.0.0/24","protocol":"kernel","scope":"link","prefsrc":"10.77.0.1","flags":[]},{"dst":"10.88.0.0/26","gateway":"10.88.0.0","metric":7,"flags":["onlink"]},{"dst":"10.89.0.5","scope":"link","flags":[]},{"dst":"10.251.0.64/26","gateway":"10.251.0.64","flags":["onlink"]},{"dst":"default","gateway":"10.251.1.0","flags":["onlink"]}]"#;
    const NEIGHBOURS: &str = r#"[{"dst":"10.77.0.9","lladdr":"02:00:00:00:00:09","state":["STALE"]},{"dst":"10.251.0.64","lladdr":"aa:bb:cc:dd:ee:01","state":["PERMANENT"]},{"dst":"10.77.0.20","state":["FAILED"]},{"dst":"224.0.0.5","lladdr":"01:00:5e:00:00:05","state":["NOARP"]},{"dst":"fe80::1","lladdr":"02:00:00:00:00:01","state":["PERMANENT"]}]"#;
    const FDB: &str = r#"[{"mac":"aa:bb:cc:dd:ee:03","dst":"192.168.249.3","flags":["self"],"state":"permanent"},{"mac":"00:00:00:00:00:00","dst":"192.168.249.9","flags":["self"],"state":"permanent"},{"mac":"aa:bb:cc:dd:ee:01","dst":"192.168.249.2","flags":["self"],"state":"permanent"},{"mac":"33:33:00:00:00:01","flags":["self"],"state":"permanent"},{"mac":"02:00:00:00:00:07","master":"br0","state":"permanent"}]"#;

    fn route(dst: &str, via: Option<&str>, onlink: bool, metric: u32) -> Route {
        Route {
            dst: subnet(dst),
            via: via.map(ip),
            onlink,
            metric,
        }
    }

    #[test]
    fn kernel_state_is_parsed_without_the_kernels_own_entries() {
        assert_eq!(
            parse_routes(ROUTES).expect("parses"),
            [
                route("10.88.0.0/26", Some("10.88.0.0"), true, 7),
                route("10.89.0.5/32", None, false, 0),
                route("10.251.0.64/26", Some("10.251.0.64"), true, 0),
                route("0.0.0.0/0", Some("10.251.1.0"), true, 0),
            ]
        );
        assert_eq!(
            parse_neighbours(NEIGHBOURS).expect("parses"),
            [Neighbour {
                ip: ip("10.251.0.64"),
                mac: "aa:bb:cc:dd:ee:01".into()
            }]
        );
        let fdb = |mac: &str, dst: &str| Fdb {
            mac: mac.into(),
            dst: ip(dst),
        };
        assert_eq!(
            parse_fdb(FDB).expect("parses"),
            [
                fdb("aa:bb:cc:dd:ee:03", "192.168.249.3"),
                fdb("aa:bb:cc:dd:ee:01", "192.168.249.2"),
            ]
        );
        assert_eq!(parse_routes("").expect("empty"), []);
        assert_eq!(parse_routes("[]").expect("empty"), []);
        assert!(parse_routes(r#"[{"dst":"nonsense"}]"#).is_err());
        assert!(parse_neighbours("{").is_err());
        assert!(parse_fdb(r#"[{"mac":"zz"}]"#).is_err());
    }

    fn peer(node: &str, subnet_: &str, underlay: &str, mac: &str) -> Peer {
        Peer {
            node: node.into(),
            subnet: subnet(subnet_),
            underlay: ip(underlay),
            mac: mac.into(),
        }
    }

    /// The kernel entries of `peers`, as `read_state` would return them.
    fn state_of(peers: &[Peer]) -> KernelState {
        KernelState {
            routes: peers
                .iter()
                .map(|p| Route {
                    dst: p.subnet,
                    via: Some(p.subnet.base()),
                    onlink: true,
                    metric: 0,
                })
                .collect(),
            neighbours: peers
                .iter()
                .map(|p| Neighbour {
                    ip: p.subnet.base(),
                    mac: p.mac.clone(),
                })
                .collect(),
            fdb: peers
                .iter()
                .map(|p| Fdb {
                    mac: p.mac.clone(),
                    dst: p.underlay,
                })
                .collect(),
        }
    }

    #[test]
    fn diff_adds_replaces_and_deletes_in_order() {
        let n2 = peer("n2", "10.0.0.64/26", "192.168.0.2", "02:00:00:00:00:02");
        let n3 = peer("n3", "10.0.0.128/26", "192.168.0.3", "02:00:00:00:00:03");
        let n3_moved = peer("n3", "10.0.0.128/26", "192.168.0.33", "02:00:00:00:00:03");
        let n3_new_mac = peer("n3", "10.0.0.128/26", "192.168.0.3", "02:00:00:00:00:33");
        let mut stray = state_of(std::slice::from_ref(&n2));
        stray
            .routes
            .push(route("10.0.0.64/26", Some("10.0.0.64"), true, 7));
        stray.routes[0].onlink = false;
        let render = |changes: Vec<Change>| -> Vec<String> {
            changes
                .iter()
                .map(|c| {
                    let (tool, cmd) = c.command("vx");
                    format!("{} {}", tool.program(), cmd.join(" "))
                })
                .collect()
        };
        type Row<'a> = (&'a str, KernelState, Vec<Peer>, Vec<&'a str>, SyncReport);
        let cases: Vec<Row> = vec![
            (
                "nothing",
                KernelState::default(),
                vec![],
                vec![],
                SyncReport::default(),
            ),
            (
                "in line",
                state_of(&[n2.clone(), n3.clone()]),
                vec![n2.clone(), n3.clone()],
                vec![],
                SyncReport::default(),
            ),
            (
                "new peer",
                state_of(std::slice::from_ref(&n2)),
                vec![n2.clone(), n3.clone()],
                vec![
                    "bridge fdb replace 02:00:00:00:00:03 dev vx dst 192.168.0.3 self permanent",
                    "ip neigh replace 10.0.0.128 lladdr 02:00:00:00:00:03 dev vx nud permanent",
                    "ip route replace 10.0.0.128/26 via 10.0.0.128 dev vx onlink",
                ],
                SyncReport {
                    added: 3,
                    changed: 0,
                    removed: 0,
                },
            ),
            (
                "peer gone",
                state_of(&[n2.clone(), n3.clone()]),
                vec![n2.clone()],
                vec![
                    "ip route del 10.0.0.128/26 dev vx",
                    "ip neigh del 10.0.0.128 dev vx",
                    "bridge fdb del 02:00:00:00:00:03 dev vx self",
                ],
                SyncReport {
                    added: 0,
                    changed: 0,
                    removed: 3,
                },
            ),
            (
                "peer moved",
                state_of(std::slice::from_ref(&n3)),
                vec![n3_moved],
                vec!["bridge fdb replace 02:00:00:00:00:03 dev vx dst 192.168.0.33 self permanent"],
                SyncReport {
                    added: 0,
                    changed: 1,
                    removed: 0,
                },
            ),
            (
                "peer's device recreated",
                state_of(std::slice::from_ref(&n3)),
                vec![n3_new_mac],
                vec![
                    "bridge fdb del 02:00:00:00:00:03 dev vx self",
                    "bridge fdb replace 02:00:00:00:00:33 dev vx dst 192.168.0.3 self permanent",
                    "ip neigh replace 10.0.0.128 lladdr 02:00:00:00:00:33 dev vx nud permanent",
                ],
                SyncReport {
                    added: 1,
                    changed: 1,
                    removed: 1,
                },
            ),
            (
                "stray routes",
                stray,
                vec![n2.clone()],
                vec![
                    "ip route del 10.0.0.64/26 dev vx metric 7",
                    "ip route replace 10.0.0.64/26 via 10.0.0.64 dev vx onlink",
                ],
                SyncReport {
                    added: 0,
                    changed: 1,
                    removed: 1,
                },
            ),
        ];
        for (name, current, peers, want, report) in cases {
            let changes = diff(&current, &peers);
            assert_eq!(SyncReport::of(&changes), report, "{name}");
            assert_eq!(render(changes), want, "{name}");
        }
    }

    #[test]
    fn diff_names_the_peer_or_the_stale_entry() {
        let n2 = peer("n2", "10.0.0.64/26", "192.168.0.2", "02:00:00:00:00:02");
        let add = diff(&KernelState::default(), std::slice::from_ref(&n2));
        assert_eq!(
            add[0].describe(),
            "peer n2: fdb 02:00:00:00:00:02 dst 192.168.0.2"
        );
        let delete = diff(&state_of(&[n2]), &[]);
        assert_eq!(
            delete[0].describe(),
            "stale route 10.0.0.64/26 via 10.0.0.64"
        );
    }

    #[test]
    fn parsed_state_of_the_fixture_diffs_as_expected() {
        // The fixtures hold n2 (10.251.0.64/26, aa:..:01 at .2) and strays.
        let current = KernelState {
            routes: parse_routes(ROUTES).expect("parses"),
            neighbours: parse_neighbours(NEIGHBOURS).expect("parses"),
            fdb: parse_fdb(FDB).expect("parses"),
        };
        let n2 = peer("n2", "10.251.0.64/26", "192.168.249.2", "aa:bb:cc:dd:ee:01");
        let changes = diff(&current, &[n2]);
        let deleted: Vec<String> = changes.iter().map(|c| c.entry.to_string()).collect();
        assert_eq!(
            deleted,
            [
                "route 0.0.0.0/0 via 10.251.1.0",
                "route 10.88.0.0/26 via 10.88.0.0 metric 7",
                "route 10.89.0.5/32",
                "fdb aa:bb:cc:dd:ee:03 dst 192.168.249.3",
            ]
        );
        assert!(changes.iter().all(|c| c.op == Op::Delete));
    }
}
