//! The worker's network data plane (Oakestra's `NetManager`, declaratively).
//!
//! The agent runs this beside its container runtime. It owns three things on its node
//! and nothing else:
//! - [`rules`]: the node's nftables table, rendered by a pure function from the
//!   services and endpoints the node should reach (kube-proxy's nftables layout: a
//!   verdict map from service IP, protocol and port to a chain per service that picks
//!   an endpoint), and [`nft`], which applies a rendered table in one transaction;
//! - [`closest`]: which endpoints a node's `closestIP` goes to (same node, else same
//!   cluster, else the nearest cluster);
//! - [`overlay`]: the vxlan device and the per-peer routes, neighbours and forwarding
//!   entries that carry instance traffic between the nodes of a cluster;
//! - [`wireguard`]: the encrypted backend of the overlay (userspace WireGuard over a tun
//!   device), which also reaches nodes behind NAT, and [`wgdevice`], the process that
//!   runs that device so that it outlives the agent;
//! - [`dns`]: the responder on the node's bridge gateway: Service names
//!   (`<service>.<namespace>.svc.<domain>`, `closest.…`) from the zone the controller
//!   keeps, other names forwarded to the host's resolvers;
//! - [`controller`]: the loop that follows the cluster API (`Endpoints`, `Node`s, its
//!   `Cluster`) and keeps the others in line with it, reporting the Node's
//!   `NetworkReady` condition and its end of the overlay.
//!
//! Every command runs in the network namespace an [`exec::Host`] names (the current
//! one for the agent; a test's own namespace in tests).

pub mod closest;
pub mod controller;
pub mod dns;
pub mod exec;
pub mod nft;
pub mod overlay;
pub mod rules;
pub mod wgdevice;
pub mod wireguard;
