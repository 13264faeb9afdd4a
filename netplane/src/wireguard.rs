//! The WireGuard overlay: an encrypted layer-3 mesh between the nodes of a cluster, in
//! userspace ([boringtun]'s device over a tun interface), for nodes that are not on one
//! trusted LAN and for nodes behind NAT.
//!
//! Every node has a key pair ([`load_or_create_key`]: the private key stays in a 0600
//! file on the node; the public key goes into its Node's `status.network`), one device
//! ([`WireGuard`], default `oakestra.wg`, UDP `--public-port`) with its subnet's
//! `.0/32`, and one WireGuard peer per other node of the cluster. A peer's *allowed
//! IPs* are the subnets whose packets go to it and may come from it (cryptokey
//! routing); the kernel has one route per such subnet into the device.
//!
//! Who can reach whom ([`plan`], pure):
//! - a node announces an endpoint (public address and port) unless it is behind NAT;
//! - a node behind NAT dials every peer that has an endpoint and keeps the path open
//!   with a keepalive every [`WireGuard::keepalive`] seconds, so those peers learn where
//!   it is (WireGuard follows a peer's latest source address);
//! - two nodes both behind NAT cannot dial each other: each sends the other's subnet to
//!   the same reachable node (the first by name), which forwards it.
//!
//! The device runs in a process of its own ([`crate::wgdevice`], `oakestra
//! wireguard-device`), which the agent starts and then configures through WireGuard's
//! cross-platform configuration protocol on a socket beside the node's key
//! ([`Tunnel`]). [`uapi_set`] (pure) turns the change from the peers the device has to
//! the peers it should have into `set` transactions; [`Tunnel::set_peers`] applies them
//! and [`sync_routes`] the routes. Like the kernel's device, it outlives the agent: a
//! restarting agent finds it running, adopts the peers it has ([`adopt`]) and changes
//! only what changed, so traffic to the other nodes goes on meanwhile. Once no agent
//! holds the node's lock for [`WireGuard::linger`], the device stops.
//!
//! [boringtun]: https://github.com/cloudflare/boringtun

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use boringtun::x25519;

use crate::exec::Host;
use crate::overlay::{self, Change, OverlayError, Subnet, SyncReport};
use crate::wgdevice::DeviceSpec;

/// The length of a WireGuard key, in bytes.
const KEY_LEN: usize = 32;

/// An error of the WireGuard overlay.
#[derive(Debug, thiserror::Error)]
pub enum WireguardError {
    /// The key file exists but does not hold a key.
    #[error("the WireGuard key file {path} is not a key ({reason}); the node's identity is in it, so it is left as it is: delete it to make a new key (the other nodes learn the new public key from the Node's status)")]
    CorruptKey {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key file cannot be read or written.
    #[error("the WireGuard key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The tun device could not be made (no `/dev/net/tun`, no permission, a name in use
    /// by a device of another kind).
    #[error("creating the WireGuard device {device}: {message} (is /dev/net/tun there, and the agent root?)")]
    Device {
        /// The device name.
        device: String,
        /// boringtun's error.
        message: String,
    },
    /// The device refused a configuration (an `errno` other than 0) or did not answer.
    #[error("configuring the WireGuard device {device}: {message}")]
    Configure {
        /// The device name.
        device: String,
        /// What went wrong.
        message: String,
    },
    /// The settings cannot work.
    #[error("invalid WireGuard settings: {0}")]
    Config(String),
    /// Setting the device's address, MTU or routes failed.
    #[error(transparent)]
    Overlay(#[from] OverlayError),
}

// ---------------------------------------------------------------------------------
// Keys

/// A node's private key. Never printed, never sent: only its [`PublicKey`] leaves it.
#[derive(Clone)]
pub struct PrivateKey([u8; KEY_LEN]);

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(…)")
    }
}

impl PrivateKey {
    /// A new random key (the system's random source; X25519 clamps it where it is used).
    pub fn generate() -> PrivateKey {
        let mut bytes = [0u8; KEY_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .expect("the system's random source");
        PrivateKey(bytes)
    }

    /// Its public key.
    pub fn public(&self) -> PublicKey {
        let secret = x25519::StaticSecret::from(self.0);
        PublicKey(x25519::PublicKey::from(&secret).to_bytes())
    }

    fn hex(&self) -> String {
        hex(&self.0)
    }
}

/// A node's public key; printed and parsed as WireGuard prints it (base64).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// The key as the configuration protocol takes it (hex).
    fn hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base64::engine::general_purpose::STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// A string that is not a WireGuard key (32 bytes in base64).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a WireGuard key (32 bytes in base64): {0}")]
pub struct InvalidKey(String);

fn decode_key(s: &str) -> Result<[u8; KEY_LEN], InvalidKey> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| InvalidKey(e.to_string()))?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice())
        .map_err(|_| InvalidKey(format!("{} bytes", bytes.len())))
}

impl FromStr for PublicKey {
    type Err = InvalidKey;

    fn from_str(s: &str) -> Result<PublicKey, InvalidKey> {
        decode_key(s).map(PublicKey)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; KEY_LEN]> {
    if s.len() != 2 * KEY_LEN {
        return None;
    }
    let mut out = [0u8; KEY_LEN];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The node's private key from `path` (base64, as `wg genkey` writes it), made there
/// first if the file does not exist: created with mode 0600 and synced before use, so
/// a crash never leaves a half-written identity. A file that holds anything but a key
/// is an error, never replaced: the node's identity is in it. A key file others can
/// read is made private again (with a warning).
pub fn load_or_create_key(path: &Path) -> Result<PrivateKey, WireguardError> {
    let file_error = |source| WireguardError::KeyFile {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = decode_key(&text).map_err(|e| WireguardError::CorruptKey {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
            let mode = std::fs::metadata(path)
                .map_err(file_error)?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the WireGuard key file was readable by others; made it 0600");
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(file_error)?;
            }
            Ok(PrivateKey(key))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = PrivateKey::generate();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(file_error)?;
            }
            // Written under another name and renamed: the key file is whole or absent.
            let partial = path.with_extension("partial");
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&partial)
                .map_err(file_error)?;
            let encoded = base64::engine::general_purpose::STANDARD.encode(key.0);
            file.write_all(format!("{encoded}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(file_error)?;
            std::fs::rename(&partial, path).map_err(file_error)?;
            tracing::info!(path = %path.display(), public_key = %key.public(), "made the node's WireGuard key");
            Ok(key)
        }
        Err(e) => Err(file_error(e)),
    }
}

// ---------------------------------------------------------------------------------
// Settings

/// A node's WireGuard device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireGuard {
    /// The device's name, at most 15 bytes ([`WireGuard::DEFAULT_DEVICE`]).
    pub device: String,
    /// The UDP port it listens on (Oakestra's tunnel port by default, 50103).
    pub port: u16,
    /// Where the other nodes reach it (public address and port); `None`: behind NAT,
    /// it dials them.
    pub endpoint: Option<SocketAddrV4>,
    /// The private key's file.
    pub key_file: PathBuf,
    /// Seconds between keepalives to peers a node behind NAT dials (25: NAT mappings
    /// of UDP last 30 s or more).
    pub keepalive: u16,
    /// The device's MTU ([`WireGuard::DEFAULT_MTU`]).
    pub mtu: u32,
    /// The `oakestra` binary that runs the device (`PROGRAM wireguard-device …`;
    /// default `/proc/self/exe`, the agent's own).
    pub program: PathBuf,
    /// How long the device goes on once no agent holds it
    /// ([`WireGuard::DEFAULT_LINGER`]): long enough for an agent to restart.
    pub linger: Duration,
}

impl WireGuard {
    /// The default device name.
    pub const DEFAULT_DEVICE: &'static str = "oakestra.wg";
    /// The bytes WireGuard adds to a packet over IPv4 (outer IPv4 and UDP headers,
    /// WireGuard's header and tag): 60, rounded up to 80 as `wg-quick` does so that an
    /// IPv6 underlay fits too.
    pub const OVERHEAD: u32 = 80;
    /// The default MTU: an Ethernet uplink's 1500 minus [`WireGuard::OVERHEAD`].
    pub const DEFAULT_MTU: u32 = 1500 - Self::OVERHEAD;
    /// The default keepalive interval, in seconds.
    pub const DEFAULT_KEEPALIVE: u16 = 25;
    /// The default [`WireGuard::linger`].
    pub const DEFAULT_LINGER: Duration = Duration::from_secs(60);

    /// The defaults for a node listening on `port`, reached at `endpoint` (`None`:
    /// behind NAT), with its key in `key_file` (the device's socket, lock and log go
    /// beside it: [`WireGuard::device_spec`]).
    pub fn new(port: u16, endpoint: Option<SocketAddrV4>, key_file: PathBuf) -> WireGuard {
        WireGuard {
            device: WireGuard::DEFAULT_DEVICE.to_string(),
            port,
            endpoint,
            key_file,
            keepalive: WireGuard::DEFAULT_KEEPALIVE,
            mtu: WireGuard::DEFAULT_MTU,
            program: PathBuf::from("/proc/self/exe"),
            linger: WireGuard::DEFAULT_LINGER,
        }
    }

    /// What the device process is told: the device, and its socket and lock in the
    /// key file's directory (one node's, so several nodes on one machine never meet).
    pub fn device_spec(&self) -> DeviceSpec {
        let beside = |name: &str| self.key_file.with_file_name(name);
        DeviceSpec {
            device: self.device.clone(),
            socket: beside("wireguard.sock"),
            lock: beside("wireguard.lock"),
            linger: self.linger,
        }
    }

    /// Checks what the kernel or boringtun would refuse.
    pub fn validate(&self) -> Result<(), WireguardError> {
        overlay::valid_ifname(&self.device)
            .and_then(|()| overlay::valid_mtu(self.mtu))
            .map_err(|e| WireguardError::Config(e.to_string()))?;
        if self.port == 0 {
            return Err(WireguardError::Config("UDP port 0".into()));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// The plan

/// What the API says about a node's WireGuard end; any of it may not be known yet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WgNode {
    /// The node's name.
    pub name: String,
    /// Its instance subnet.
    pub subnet: Option<Subnet>,
    /// Its public key, as published (base64); checked by [`plan`].
    pub public_key: Option<String>,
    /// Where it can be reached; `None` when it is behind NAT.
    pub endpoint: Option<SocketAddrV4>,
    /// Whether it is Ready (heartbeating): only a Ready node relays.
    pub ready: bool,
}

/// One WireGuard peer of a node: another node, or (on a gateway) another cluster's
/// gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgPeer {
    /// The peer's name (a node, `cluster/node` for a remote gateway), for logs.
    pub node: String,
    /// Its public key.
    pub public_key: PublicKey,
    /// Where to send to it first; `None`: wait for it to call (it is behind NAT).
    pub endpoint: Option<SocketAddrV4>,
    /// The subnets sent to it and accepted from it: its own first, then those it
    /// relays or (a gateway) routes to.
    pub allowed: Vec<Subnet>,
    /// Seconds between keepalives, when this node is behind NAT and dials it.
    pub keepalive: Option<u16>,
}

/// The peers of a node and the nodes that are not (yet) peers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WgPlan {
    /// The peers, sorted by name.
    pub peers: Vec<WgPeer>,
    /// The nodes left out, sorted by name, with why (for the caller to log).
    pub skipped: Vec<(String, String)>,
}

impl WgPlan {
    /// The routes into the device: every allowed subnet of every peer.
    pub fn routes(&self) -> Vec<(Subnet, &str)> {
        self.peers
            .iter()
            .flat_map(|p| p.allowed.iter().map(move |s| (*s, p.node.as_str())))
            .collect()
    }

    /// Sends `subnet` through the peer named `via` as well (a relay, a gateway);
    /// `false` if there is no such peer.
    pub fn route_through(&mut self, via: &str, subnet: Subnet) -> bool {
        match self.peers.iter_mut().find(|p| p.node == via) {
            Some(peer) => {
                if !peer.allowed.contains(&subnet) {
                    peer.allowed.push(subnet);
                }
                true
            }
            None => false,
        }
    }

    /// Adds a peer that is no node of this cluster (another cluster's gateway, with
    /// that cluster's subnet); refused, with why, if its key is one a peer has.
    pub fn add_remote(&mut self, peer: WgPeer) -> Result<(), String> {
        if let Some(other) = self.peers.iter().find(|p| p.public_key == peer.public_key) {
            return Err(format!("its public key is also {}'s", other.node));
        }
        self.peers.push(peer);
        Ok(())
    }
}

/// The peers of node `me` among `nodes` (pure). `me_behind_nat`: this node announces no
/// endpoint. Every other node with a subnet and a valid public key is a peer, reached:
/// - directly, if it has an endpoint (with a keepalive of `keepalive` seconds when this
///   node is behind NAT) or this node has one (it will call);
/// - else (both behind NAT) through the first Ready node by name that has an endpoint:
///   its subnet is added to that peer's allowed subnets (when the relay stops
///   heartbeating, the next pass picks the next one).
///
/// A node that claims the subnet or the public key of a node before it (this node
/// first, then by name) is skipped, as is one both behind NAT when no node relays.
pub fn plan(me: &str, me_behind_nat: bool, nodes: &[WgNode], keepalive: u16) -> WgPlan {
    let mut sorted: Vec<&WgNode> = nodes.iter().collect();
    sorted.sort_by(|a, b| (a.name != me, &a.name).cmp(&(b.name != me, &b.name)));
    let mut subnets: BTreeMap<Subnet, &str> = BTreeMap::new();
    let mut keys: BTreeMap<PublicKey, &str> = BTreeMap::new();
    let mut out = WgPlan::default();
    let mut unreachable: Vec<(&str, Subnet)> = Vec::new();
    let mut relay: Option<String> = None;
    for node in sorted {
        let key = node.public_key.as_deref().map(PublicKey::from_str);
        if node.name == me {
            if let Some(subnet) = node.subnet {
                subnets.insert(subnet, me);
            }
            if let Some(Ok(key)) = key {
                keys.insert(key, me);
            }
            continue;
        }
        let skip = |why: String| (node.name.clone(), why);
        let (Some(subnet), Some(key)) = (node.subnet, key) else {
            let missing: Vec<&str> = [
                ("subnet", node.subnet.is_none()),
                ("publicKey", node.public_key.is_none()),
            ]
            .iter()
            .filter(|m| m.1)
            .map(|m| m.0)
            .collect();
            out.skipped
                .push(skip(format!("no {} yet", missing.join(", "))));
            continue;
        };
        let key = match key {
            Ok(key) => key,
            Err(e) => {
                out.skipped.push(skip(format!("publicKey: {e}")));
                continue;
            }
        };
        let conflict = match (subnets.get(&subnet), keys.get(&key)) {
            (Some(with), _) => Some(format!("subnet {subnet} is also node {with}'s")),
            (None, Some(with)) => Some(format!("its public key is also node {with}'s")),
            (None, None) => None,
        };
        if let Some(why) = conflict {
            out.skipped.push(skip(why));
            continue;
        }
        subnets.insert(subnet, &node.name);
        keys.insert(key, &node.name);
        if node.endpoint.is_none() && me_behind_nat {
            unreachable.push((&node.name, subnet));
            continue;
        }
        if relay.is_none() && node.ready && node.endpoint.is_some() {
            relay = Some(node.name.clone());
        }
        out.peers.push(WgPeer {
            node: node.name.clone(),
            public_key: key,
            endpoint: node.endpoint,
            allowed: vec![subnet],
            keepalive: (me_behind_nat && node.endpoint.is_some()).then_some(keepalive),
        });
    }
    // Both behind NAT: through the first Ready reachable peer (every node picks the
    // same one, and every node behind NAT keeps a path to it open).
    for (node, subnet) in unreachable {
        match &relay {
            Some(relay) => {
                out.route_through(relay, subnet);
            }
            None => out.skipped.push((
                node.to_string(),
                "both nodes are behind NAT and no Ready node with a public address relays".into(),
            )),
        }
    }
    out.skipped.sort();
    out
}

// ---------------------------------------------------------------------------------
// The configuration protocol

/// A peer as the device reports it (`get=1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerState {
    /// Its public key.
    pub public_key: PublicKey,
    /// Where its packets go now: configured, or learned from what it sent.
    pub endpoint: Option<SocketAddrV4>,
    /// Seconds since the last handshake; `None` if there was none.
    pub since_handshake: Option<u64>,
    /// Bytes received from it.
    pub rx_bytes: u64,
    /// Bytes sent to it.
    pub tx_bytes: u64,
    /// Its allowed IPs (IPv4; others are none of ours).
    pub allowed: Vec<Subnet>,
    /// Its persistent keepalive, in seconds.
    pub keepalive: Option<u16>,
}

/// Parses the answer to `get=1` (WireGuard's cross-platform configuration protocol):
/// one section per peer, each starting with its `public_key` (hex).
pub fn parse_get(text: &str) -> Result<Vec<PeerState>, String> {
    let mut peers: Vec<PeerState> = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {line:?} is not key=value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{key}={value:?} is not a number"))
        };
        if key == "public_key" {
            let bytes = unhex(value).ok_or_else(|| format!("public_key={value:?}"))?;
            peers.push(PeerState {
                public_key: PublicKey(bytes),
                endpoint: None,
                since_handshake: None,
                rx_bytes: 0,
                tx_bytes: 0,
                allowed: Vec::new(),
                keepalive: None,
            });
            continue;
        }
        let Some(peer) = peers.last_mut() else {
            continue; // the device's own lines (own_public_key, listen_port, …)
        };
        match key {
            // An IPv6 endpoint is none of ours: left out.
            "endpoint" => peer.endpoint = value.parse().ok(),
            "last_handshake_time_sec" => peer.since_handshake = Some(number()?),
            "rx_bytes" => peer.rx_bytes = number()?,
            "tx_bytes" => peer.tx_bytes = number()?,
            "allowed_ip" => peer.allowed.extend(value.parse::<Subnet>().ok()),
            "persistent_keepalive_interval" => {
                peer.keepalive = Some(number()?).filter(|&s| s > 0).map(|s| s as u16)
            }
            _ => {}
        }
    }
    Ok(peers)
}

/// The device's own lines of an answer to `get=1`: its public key and listen port.
fn own_settings(text: &str) -> (Option<PublicKey>, Option<u16>) {
    let (mut key, mut port) = (None, None);
    for (name, value) in text.lines().filter_map(|l| l.split_once('=')) {
        match name {
            "own_public_key" => key = unhex(value).map(PublicKey),
            "listen_port" => port = value.parse().ok(),
            // The peers follow the device's own lines.
            "public_key" => break,
            _ => {}
        }
    }
    (key, port)
}

/// The peers a device that ran before this agent has (`state`), as [`uapi_set`] needs
/// them to change only what differs from `wanted` (pure). A device peer that matches a
/// wanted one (key, allowed IPs, keepalive, and its endpoint where one is wanted) is
/// taken as that one, so it is left alone with its session; any other becomes a peer
/// of its own that [`uapi_set`] removes or replaces.
pub fn adopt(state: &[PeerState], wanted: &[WgPeer]) -> Vec<WgPeer> {
    let sorted = |subnets: &[Subnet]| {
        let mut v = subnets.to_vec();
        v.sort();
        v
    };
    state
        .iter()
        .map(|s| {
            let same = |w: &&WgPeer| {
                w.public_key == s.public_key
                    && sorted(&w.allowed) == sorted(&s.allowed)
                    && w.keepalive == s.keepalive
                    && (w.endpoint.is_none() || w.endpoint == s.endpoint)
            };
            match wanted.iter().find(same) {
                Some(w) => w.clone(),
                None => WgPeer {
                    node: "(a peer the device had)".into(),
                    public_key: s.public_key,
                    endpoint: s.endpoint,
                    allowed: s.allowed.clone(),
                    keepalive: s.keepalive,
                },
            }
        })
        .collect()
}

/// The `set=1` transactions (pure) that turn the device's peers `current` into
/// `wanted`, one peer each, removals first; none when they are the same. A peer that
/// goes, or whose settings change, is removed (boringtun cannot change a peer in
/// place); a new or changed one is added with its settings. One peer per transaction:
/// boringtun 0.7 carries `remove`, `endpoint` and the keepalive of one peer section over
/// into the next of the same transaction. A re-added peer without a configured endpoint
/// keeps the one the device learned (`learned`): a node behind NAT is reached where it
/// last called from, not only after its next keepalive.
pub fn uapi_set(
    current: &[WgPeer],
    wanted: &[WgPeer],
    learned: &BTreeMap<PublicKey, SocketAddrV4>,
) -> Vec<String> {
    let now: BTreeMap<PublicKey, &WgPeer> = current.iter().map(|p| (p.public_key, p)).collect();
    let want: BTreeMap<PublicKey, &WgPeer> = wanted.iter().map(|p| (p.public_key, p)).collect();
    let mut out = Vec::new();
    for (key, peer) in &now {
        if want.get(key) != Some(peer) {
            out.push(format!("public_key={}\nremove=true\n", key.hex()));
        }
    }
    for (key, peer) in &want {
        if now.get(key) == Some(peer) {
            continue;
        }
        let mut section = format!("public_key={}\n", key.hex());
        if let Some(endpoint) = peer.endpoint.or_else(|| learned.get(key).copied()) {
            section.push_str(&format!("endpoint={endpoint}\n"));
        }
        if let Some(seconds) = peer.keepalive {
            section.push_str(&format!("persistent_keepalive_interval={seconds}\n"));
        }
        for subnet in &peer.allowed {
            section.push_str(&format!("allowed_ip={subnet}\n"));
        }
        out.push(section);
    }
    out
}

// ---------------------------------------------------------------------------------
// The device, as the agent uses it

/// This agent's use of the node's WireGuard device (a process of its own:
/// [`crate::wgdevice`]). Holding it holds the node's lock, which keeps the device
/// running; dropping it lets the device go [`WireGuard::linger`] later, unless an agent
/// opens it again.
pub struct Tunnel {
    name: String,
    socket: PathBuf,
    /// The peers the device was last given; `None` while not known (a device that ran
    /// before this agent, or one whose last change failed half-way).
    peers: Option<Vec<WgPeer>>,
    /// The node's lock, held while this agent uses the device.
    _presence: std::fs::File,
}

impl fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tunnel")
            .field("name", &self.name)
            .field("socket", &self.socket)
            .field("peers", &self.peers.as_ref().map(Vec::len))
            .finish()
    }
}

/// How long [`Tunnel::open`] waits for a device it started to answer.
const DEVICE_START: Duration = Duration::from_secs(10);

/// How long [`Tunnel::open`] tries to take the node's lock (the device takes it for a
/// moment each time it looks whether an agent holds it).
const LOCK_WAIT: Duration = Duration::from_secs(2);

impl Tunnel {
    /// Opens the node's device `wg.device` in the calling thread's network namespace,
    /// with the key `key`, listening on `wg.port`: the one still running from an
    /// earlier agent if its socket answers (its peers are adopted at the first
    /// [`Tunnel::set_peers`]), else a new one (`wg.program wireguard-device …`, whose
    /// log is `wireguard-device.log` beside the key). Fails if another agent of this
    /// node holds it, or a new device does not answer (the device's own error is in the
    /// message).
    pub fn open(wg: &WireGuard, key: &PrivateKey) -> Result<Tunnel, WireguardError> {
        wg.validate()?;
        let spec = wg.device_spec();
        let fail = |message: String| WireguardError::Device {
            device: wg.device.clone(),
            message,
        };
        if let Some(dir) = spec.socket.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(format!("making {}: {e}", dir.display())))?;
        }
        let presence = hold(&spec.lock).map_err(fail)?;
        let (answer, started) = match request_at(&spec.socket, &wg.device, "get=1\n\n") {
            Ok(answer) => {
                tracing::info!(device = %wg.device, socket = %spec.socket.display(), "WireGuard device still running: using it");
                (answer, false)
            }
            Err(_) => (start_device(wg, &spec).map_err(fail)?, true),
        };
        let tunnel = Tunnel {
            name: wg.device.clone(),
            socket: spec.socket,
            peers: started.then(Vec::new),
            _presence: presence,
        };
        let (own_key, own_port) = own_settings(&answer);
        let mut set = String::new();
        if own_key != Some(key.public()) {
            set.push_str(&format!("private_key={}\n", key.hex()));
        }
        if own_port != Some(wg.port) {
            set.push_str(&format!("listen_port={}\n", wg.port));
        }
        if !set.is_empty() {
            tunnel.call_blocking(&format!("set=1\n{set}\n"))?;
        }
        tracing::info!(device = %wg.device, port = wg.port, public_key = %key.public(), started, "WireGuard device up");
        Ok(tunnel)
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The peers it was last given (none while they are not known).
    pub fn peers(&self) -> &[WgPeer] {
        self.peers.as_deref().unwrap_or_default()
    }

    /// One request of the configuration protocol; the answer's lines before `errno`.
    fn call_blocking(&self, request: &str) -> Result<String, WireguardError> {
        request_at(&self.socket, &self.name, request)
    }

    async fn call(&self, request: String) -> Result<String, WireguardError> {
        let (socket, name) = (self.socket.clone(), self.name.clone());
        tokio::task::spawn_blocking(move || request_at(&socket, &name, &request))
            .await
            .map_err(|e| WireguardError::Configure {
                device: self.name.clone(),
                message: e.to_string(),
            })?
    }

    /// The peers as the device has them now (endpoints learned, handshakes, bytes).
    pub async fn state(&self) -> Result<Vec<PeerState>, WireguardError> {
        let text = self.call("get=1\n\n".into()).await?;
        parse_get(&text).map_err(|message| WireguardError::Configure {
            device: self.name.clone(),
            message: format!("unreadable answer to get: {message}"),
        })
    }

    /// Gives the device the peers `wanted` (only what changed, a transaction per peer;
    /// against what the device has when that is not known).
    pub async fn set_peers(&mut self, wanted: &[WgPeer]) -> Result<(), WireguardError> {
        let same = |given: &[WgPeer]| {
            wanted.iter().all(|p| given.contains(p)) && given.iter().all(|p| wanted.contains(p))
        };
        if self.peers.as_deref().is_some_and(same) {
            return Ok(());
        }
        let state = self.state().await?;
        let current = match self.peers.take() {
            Some(given) => given,
            None => adopt(&state, wanted),
        };
        let learned = state
            .into_iter()
            .filter_map(|p| Some((p.public_key, p.endpoint?)))
            .collect();
        for section in uapi_set(&current, wanted, &learned) {
            // On an error what the device holds is not known (`peers` stays `None`):
            // the next call adopts it again.
            self.call(format!("set=1\n{section}\n")).await?;
        }
        self.peers = Some(wanted.to_vec());
        Ok(())
    }
}

/// Takes the node's lock at `path`, made if missing (`Err`: why not).
fn hold(path: &Path) -> Result<std::fs::File, String> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("opening the lock {}: {e}", path.display()))?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(format!(
                    "another agent of this node holds the device (its lock {} is taken)",
                    path.display()
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("locking {}: {e}", path.display()))
            }
        }
    }
}

/// Starts the device process of `spec` and waits until it answers `get=1`; its answer,
/// or why it did not (the device's last log line when it exited).
fn start_device(wg: &WireGuard, spec: &DeviceSpec) -> Result<String, String> {
    let log_path = spec.socket.with_file_name("wireguard-device.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
    let logged_before = log.metadata().map_or(0, |m| m.len());
    let stderr = log
        .try_clone()
        .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
    let _ = std::fs::remove_file(&spec.socket);
    let mut child = std::process::Command::new(&wg.program)
        .args(spec.args())
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(stderr)
        // Its own process group: a signal to the agent's group (a terminal's Ctrl-C,
        // a service manager stopping the agent) leaves the tunnels up.
        .process_group(0)
        .spawn()
        .map_err(|e| {
            format!(
                "starting {} {}: {e}",
                wg.program.display(),
                crate::wgdevice::COMMAND
            )
        })?;
    let pid = child.id();
    let deadline = Instant::now() + DEVICE_START;
    loop {
        if let Ok(answer) = request_at(&spec.socket, &wg.device, "get=1\n\n") {
            tracing::info!(device = %wg.device, pid, log = %log_path.display(), "started the WireGuard device");
            // Reaped when it ends (it outlives this agent only if the agent goes first).
            std::thread::spawn(move || {
                let status = child.wait();
                tracing::info!(pid, ?status, "the WireGuard device process ended");
            });
            return Ok(answer);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let logged = std::fs::read(&log_path).unwrap_or_default();
            let tail =
                String::from_utf8_lossy(logged.get(logged_before as usize..).unwrap_or_default());
            let last = tail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("(nothing logged)");
            return Err(format!(
                "the device process ended ({status}): {}",
                last.trim()
            ));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "the device process did not answer on {} within {DEVICE_START:?} (its log: {})",
                spec.socket.display(),
                log_path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One request of the configuration protocol to the device serving `socket`; the
/// answer's lines before `errno`.
fn request_at(socket: &Path, device: &str, request: &str) -> Result<String, WireguardError> {
    let fail = |message: String| WireguardError::Configure {
        device: device.to_string(),
        message,
    };
    let stream = UnixStream::connect(socket)
        .map_err(|e| fail(format!("connecting to {}: {e}", socket.display())))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| fail(e.to_string()))?;
    match exchange(&stream, request) {
        Ok((answer, 0)) => Ok(answer),
        Ok((_, errno)) => Err(fail(format!(
            "refused with errno {errno} ({})",
            std::io::Error::from_raw_os_error(errno)
        ))),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// Sends one request of the configuration protocol on `stream` and reads the answer:
/// its lines before `errno=`, and the errno.
pub(crate) fn exchange(stream: &UnixStream, request: &str) -> std::io::Result<(String, i32)> {
    let io = |kind, message: &str| std::io::Error::new(kind, message.to_string());
    let mut writer = stream;
    writer.write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io(
                std::io::ErrorKind::UnexpectedEof,
                "the device closed its configuration socket",
            ));
        }
        if let Some(errno) = line.trim_end().strip_prefix("errno=") {
            // The blank line that ends the answer.
            let _ = reader.read_line(&mut String::new());
            let errno = errno.parse().map_err(|_| {
                io(
                    std::io::ErrorKind::InvalidData,
                    "an errno that is no number",
                )
            })?;
            return Ok((answer, errno));
        }
        answer.push_str(&line);
    }
}

/// Makes the device hold `<own base>/32` only, have `wg.mtu`, and be up.
pub async fn tune(host: &Host, wg: &WireGuard, own: Subnet) -> Result<(), WireguardError> {
    let current = overlay::read_device(host, &wg.device)
        .await?
        .ok_or_else(|| WireguardError::Device {
            device: wg.device.clone(),
            message: "the device is not there (did the process that made it stop?)".into(),
        })?;
    for command in overlay::tune_device(&current, &wg.device, Some(wg.mtu), own) {
        overlay::run(host, "ip", &command)
            .await
            .map_err(OverlayError::from)?;
    }
    Ok(())
}

/// Makes the device's routes the plan's: one per allowed subnet of every peer,
/// straight into the device; stale ones go.
pub async fn sync_routes(
    host: &Host,
    wg: &WireGuard,
    plan: &WgPlan,
) -> Result<SyncReport, WireguardError> {
    let want: Vec<(Subnet, Option<Ipv4Addr>, &str)> = plan
        .routes()
        .into_iter()
        .map(|(subnet, node)| (subnet, None, node))
        .collect();
    let changes = |routes: &[overlay::Route]| {
        let mut out: Vec<Change> = Vec::new();
        overlay::diff_routes(routes, &want, &mut out);
        out
    };
    let read = || overlay::read_routes(host, &wg.device);
    let now = changes(&read().await?);
    let again = || async { Ok(changes(&read().await?)) };
    Ok(overlay::apply_changes(host, &wg.device, now, again).await?)
}

/// The discard port: what [`call_peers`] sends to, so nothing answers but WireGuard.
const DISCARD_PORT: u16 = 9;

/// Makes this node (behind NAT) call the peers it dials now rather than at its first
/// keepalive, [`WireGuard::keepalive`] seconds from now: one empty UDP datagram to each
/// such peer's overlay address (its subnet's `.0`, the discard port) makes the device
/// start the handshake, after which the peer knows where this node is. The routes must
/// be in place ([`sync_routes`]). Returns how many were called.
pub fn call_peers(plan: &WgPlan) -> usize {
    let Ok(socket) = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) else {
        return 0;
    };
    plan.peers
        .iter()
        .filter(|p| p.keepalive.is_some())
        .filter_map(|p| p.allowed.first())
        .filter(|own| socket.send_to(&[], (own.base(), DISCARD_PORT)).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> PublicKey {
        PrivateKey([n; KEY_LEN]).public()
    }

    fn node(name: &str, subnet: &str, key_of: u8, endpoint: Option<&str>) -> WgNode {
        WgNode {
            name: name.into(),
            subnet: Some(subnet.parse().unwrap()),
            public_key: Some(key(key_of).to_string()),
            endpoint: endpoint.map(|e| e.parse().unwrap()),
            ready: true,
        }
    }

    fn show(plan: &WgPlan) -> Vec<String> {
        plan.peers
            .iter()
            .map(|p| {
                let allowed: Vec<String> = p.allowed.iter().map(|s| s.to_string()).collect();
                format!(
                    "{} {} [{}]{}",
                    p.node,
                    p.endpoint.map_or("-".to_string(), |e| e.to_string()),
                    allowed.join(" "),
                    p.keepalive
                        .map_or(String::new(), |k| format!(" keepalive {k}")),
                )
            })
            .collect()
    }

    #[test]
    fn keys_print_as_wireguard_prints_them_and_parse_back() {
        // RFC 7748's test vector: Alice's private key and the public key it gives.
        let alice =
            unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a").expect("hex");
        let public = PrivateKey(alice).public();
        assert_eq!(
            public.hex(),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
        assert_eq!(public.to_string().parse::<PublicKey>(), Ok(public));
        assert_eq!(public.to_string().len(), 44);
        assert!("c2hvcnQ=".parse::<PublicKey>().is_err());
        assert!("not base64!".parse::<PublicKey>().is_err());
        assert_eq!(format!("{:?}", PrivateKey(alice)), "PrivateKey(…)");
    }

    #[test]
    fn the_key_file_is_made_private_once_and_a_corrupt_one_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net").join("wireguard.key");
        let made = load_or_create_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // The same key the next time.
        assert_eq!(load_or_create_key(&path).unwrap().public(), made.public());
        // Readable by others: made private again, same key.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load_or_create_key(&path).unwrap().public(), made.public());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Corrupt: an error that names the file, and the file stays as it was.
        std::fs::write(&path, "garbage\n").unwrap();
        let err = load_or_create_key(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("delete it"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "garbage\n");
    }

    #[test]
    fn reachable_nodes_peer_directly_and_wait_for_the_ones_behind_nat() {
        let nodes = [
            node("a", "10.128.0.0/26", 1, Some("192.168.1.1:50103")),
            node("b", "10.128.0.64/26", 2, Some("192.168.1.2:50103")),
            node("c", "10.128.0.128/26", 3, None),
            // Not announced yet.
            WgNode {
                name: "d".into(),
                ..Default::default()
            },
        ];
        let plan = plan("a", false, &nodes, 25);
        assert_eq!(
            show(&plan),
            [
                "b 192.168.1.2:50103 [10.128.0.64/26]",
                // It calls us: no endpoint, no keepalive from this side.
                "c - [10.128.0.128/26]",
            ]
        );
        assert_eq!(
            plan.skipped,
            [("d".to_string(), "no subnet, publicKey yet".to_string())]
        );
        assert_eq!(
            plan.routes()
                .iter()
                .map(|(s, n)| format!("{s} {n}"))
                .collect::<Vec<_>>(),
            ["10.128.0.64/26 b", "10.128.0.128/26 c"]
        );
    }

    #[test]
    fn nodes_behind_nat_keep_paths_open_and_reach_each_other_through_a_relay() {
        let nodes = [
            node("c", "10.128.0.128/26", 3, None),
            node("a", "10.128.0.0/26", 1, Some("192.168.1.1:50103")),
            node("d", "10.128.0.192/26", 4, None),
            node("b", "10.128.0.64/26", 2, Some("192.168.1.2:50103")),
        ];
        // c: keepalives to a and b; d through a, the first reachable node.
        assert_eq!(
            show(&plan("c", true, &nodes, 25)),
            [
                "a 192.168.1.1:50103 [10.128.0.0/26 10.128.0.192/26] keepalive 25",
                "b 192.168.1.2:50103 [10.128.0.64/26] keepalive 25",
            ]
        );
        // a: both are plain peers that call it; it forwards between them.
        assert_eq!(
            show(&plan("a", false, &nodes, 25)),
            [
                "b 192.168.1.2:50103 [10.128.0.64/26]",
                "c - [10.128.0.128/26]",
                "d - [10.128.0.192/26]",
            ]
        );
        // The relay stops heartbeating: the next reachable node relays.
        let mut a_lost = nodes.clone();
        a_lost[1].ready = false;
        assert_eq!(
            show(&plan("c", true, &a_lost, 25)),
            [
                "a 192.168.1.1:50103 [10.128.0.0/26] keepalive 25",
                "b 192.168.1.2:50103 [10.128.0.64/26 10.128.0.192/26] keepalive 25",
            ]
        );
        // No node to relay: said, not guessed.
        let alone = [nodes[0].clone(), nodes[2].clone()];
        let plan = plan("c", true, &alone, 25);
        assert!(plan.peers.is_empty());
        assert_eq!(plan.skipped[0].0, "d");
        assert!(plan.skipped[0]
            .1
            .contains("no Ready node with a public address relays"));
    }

    #[test]
    fn conflicting_and_invalid_keys_are_skipped_with_the_reason() {
        let mut bad = node("e", "10.128.1.0/26", 9, None);
        bad.public_key = Some("not-a-key".into());
        let nodes = [
            node("a", "10.128.0.0/26", 1, Some("192.168.1.1:50103")),
            node("b", "10.128.0.64/26", 1, Some("192.168.1.2:50103")),
            node("c", "10.128.0.0/26", 3, Some("192.168.1.3:50103")),
            bad,
        ];
        let plan = plan("a", false, &nodes, 25);
        assert!(plan.peers.is_empty(), "{:?}", plan.peers);
        let why: Vec<String> = plan
            .skipped
            .iter()
            .map(|(n, w)| format!("{n}: {w}"))
            .collect();
        assert_eq!(why.len(), 3);
        assert!(
            why[0].starts_with("b: its public key is also node a's"),
            "{why:?}"
        );
        assert!(
            why[1].starts_with("c: subnet 10.128.0.0/26 is also node a's"),
            "{why:?}"
        );
        assert!(
            why[2].starts_with("e: publicKey: not a WireGuard key"),
            "{why:?}"
        );
    }

    #[test]
    fn set_transactions_hold_only_what_changed() {
        let peer = |n: u8, endpoint: Option<&str>, allowed: &[&str]| WgPeer {
            node: format!("n{n}"),
            public_key: key(n),
            endpoint: endpoint.map(|e| e.parse().unwrap()),
            allowed: allowed.iter().map(|s| s.parse().unwrap()).collect(),
            keepalive: None,
        };
        let one = peer(1, Some("192.168.1.1:50103"), &["10.128.0.0/26"]);
        let two = peer(2, None, &["10.128.0.64/26"]);
        let three = peer(3, Some("192.168.1.3:50103"), &["10.128.0.128/26"]);
        let none = BTreeMap::new();
        let same = std::slice::from_ref(&one);
        assert!(uapi_set(same, same, &none).is_empty());
        let learned: BTreeMap<PublicKey, SocketAddrV4> =
            [(key(2), "192.168.9.9:40000".parse().unwrap())].into();
        // two changes (it relays now): removed and added again where it last called
        // from; one goes; three is new. Removals first, each peer on its own.
        let mut two_relays = two.clone();
        two_relays.allowed.push("10.128.0.192/26".parse().unwrap());
        let got = uapi_set(
            &[one.clone(), two.clone()],
            &[two_relays, three.clone()],
            &learned,
        );
        let (k1, k2, k3) = (key(1).hex(), key(2).hex(), key(3).hex());
        let by_key = |sections: &[String]| -> BTreeMap<PublicKey, String> {
            sections
                .iter()
                .map(|s| {
                    let hex = s.lines().next().unwrap().trim_start_matches("public_key=");
                    (PublicKey(unhex(hex).unwrap()), s.clone())
                })
                .collect()
        };
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(
            by_key(&got[..2]),
            BTreeMap::from([
                (key(1), format!("public_key={k1}\nremove=true\n")),
                (key(2), format!("public_key={k2}\nremove=true\n")),
            ])
        );
        assert_eq!(
            by_key(&got[2..]),
            BTreeMap::from([
                (key(2), format!("public_key={k2}\nendpoint=192.168.9.9:40000\nallowed_ip=10.128.0.64/26\nallowed_ip=10.128.0.192/26\n")),
                (key(3), format!("public_key={k3}\nendpoint=192.168.1.3:50103\nallowed_ip=10.128.0.128/26\n")),
            ])
        );
    }

    #[test]
    fn the_devices_answer_is_parsed() {
        let k = key(7);
        let text = format!(
            "own_public_key={}\nlisten_port=50103\npublic_key={}\npersistent_keepalive_interval=25\nendpoint=192.168.1.2:41000\nallowed_ip=10.128.0.64/26\nallowed_ip=fd00::/64\nlast_handshake_time_sec=3\nlast_handshake_time_nsec=12\nrx_bytes=1200\ntx_bytes=800\n",
            key(1).hex(),
            k.hex()
        );
        assert_eq!(
            parse_get(&text).unwrap(),
            [PeerState {
                public_key: k,
                endpoint: Some("192.168.1.2:41000".parse().unwrap()),
                since_handshake: Some(3),
                rx_bytes: 1200,
                tx_bytes: 800,
                allowed: vec!["10.128.0.64/26".parse().unwrap()],
                keepalive: Some(25),
            }]
        );
        assert_eq!(own_settings(&text), (Some(key(1)), Some(50103)));
        assert_eq!(own_settings(""), (None, None), "a device not set up yet");
        assert!(parse_get("public_key=zz\n").is_err());
        assert!(parse_get(&format!("public_key={}\nrx_bytes=many\n", k.hex())).is_err());
    }

    #[test]
    fn a_running_devices_peers_are_adopted_where_they_match() {
        let subnet = |s: &str| -> Subnet { s.parse().unwrap() };
        let state = |k: u8, endpoint: &str, allowed: &[&str], keepalive: Option<u16>| PeerState {
            public_key: key(k),
            endpoint: Some(endpoint.parse().unwrap()),
            since_handshake: Some(1),
            rx_bytes: 10,
            tx_bytes: 10,
            allowed: allowed.iter().map(|s| subnet(s)).collect(),
            keepalive,
        };
        let peer = |node: &str, k: u8, endpoint: Option<&str>, allowed: &[&str]| WgPeer {
            node: node.into(),
            public_key: key(k),
            endpoint: endpoint.map(|e| e.parse().unwrap()),
            allowed: allowed.iter().map(|s| subnet(s)).collect(),
            keepalive: None,
        };
        let device = [
            // n2 as wanted, its allowed IPs in another order.
            state(
                2,
                "192.168.1.2:50103",
                &["10.128.0.128/26", "10.128.0.64/26"],
                None,
            ),
            // n3 behind NAT: no endpoint wanted, the learned one is fine.
            state(3, "192.168.1.7:40001", &["10.128.0.192/26"], None),
            // n4 now relays one subnet more: not as wanted.
            state(4, "192.168.1.4:50103", &["10.128.1.0/26"], None),
            // n5 is no peer any more.
            state(5, "192.168.1.5:50103", &["10.128.1.64/26"], None),
        ];
        let wanted = [
            peer(
                "n2",
                2,
                Some("192.168.1.2:50103"),
                &["10.128.0.64/26", "10.128.0.128/26"],
            ),
            peer("n3", 3, None, &["10.128.0.192/26"]),
            peer(
                "n4",
                4,
                Some("192.168.1.4:50103"),
                &["10.128.1.0/26", "10.128.1.128/26"],
            ),
        ];
        let adopted = adopt(&device, &wanted);
        assert_eq!(adopted[..2], wanted[..2], "taken as the wanted ones");
        assert_eq!(
            adopted[2].allowed,
            [subnet("10.128.1.0/26")],
            "as the device has it"
        );
        assert_eq!(adopted[3].public_key, key(5));
        // Only n4 (changed) and n5 (gone) are touched: n2's and n3's sessions stay.
        let learned = BTreeMap::new();
        let sections = uapi_set(&adopted, &wanted, &learned);
        let line = |k: u8| format!("public_key={}", key(k).hex());
        let mut removed: Vec<&str> = sections
            .iter()
            .filter(|s| s.contains("remove=true"))
            .map(|s| s.lines().next().unwrap())
            .collect();
        removed.sort();
        let mut expected = [line(4), line(5)];
        expected.sort();
        assert_eq!(removed, expected, "{sections:?}");
        assert_eq!(sections.len(), 3, "{sections:?}");
        assert!(
            sections[2].starts_with(&line(4)),
            "n4 added again: {sections:?}"
        );
    }
}
