//! Instance IPs, handed out by the node from its own subnet, as Oakestra's `NetManager`
//! and Kubernetes' host-local IPAM do. The node is the only one to give out addresses
//! of its subnet, so no allocator in the cluster races the agent for the Instance's
//! status, and an address costs no write of its own: it goes into the status with the
//! agent's first report.
//!
//! An address is taken while an Instance bound to the node shows it in its status, or
//! while it was handed out here and the cache does not show it yet (pending, for
//! [`PENDING_FOR`] at most: an Instance deleted before its first report must not hold
//! its address for ever). Addresses
//! go round the subnet ([`Cidr::next_free_address`]), so one just released (say by the
//! Instance a rollout replaces, whose container may still be stopping) is not handed
//! out again at once; the network's attach waits for such an address to be let go.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use client::runtime::ObjectRef;
use crds::ipam::Cidr;

/// The addresses one node has handed out (see the module docs).
#[derive(Default)]
pub struct NodeAddresses {
    state: Mutex<State>,
}

/// How long an address handed out stays reserved while no status shows it: the first
/// report follows the start within moments; one that never came (the Instance was
/// deleted, the write failed) frees the address after this.
pub const PENDING_FOR: Duration = Duration::from_secs(60);

#[derive(Default)]
struct State {
    /// The last address handed out (since this process started).
    last: Option<Ipv4Addr>,
    /// Handed out, not yet shown by the cache: Instance → address, and when.
    pending: HashMap<ObjectRef, (Ipv4Addr, Instant)>,
}

/// The address of an Instance in `subnet`: `own` (what its status or the node's network
/// shows) when it is of the subnet, else `handed` (what was handed out to it before)
/// unless another holds it now, else a free one after `last`; `None` when the subnet
/// is full. `taken`: the addresses of the node's other Instances.
pub fn choose(
    subnet: Cidr,
    own: Option<Ipv4Addr>,
    handed: Option<Ipv4Addr>,
    taken: &HashSet<Ipv4Addr>,
    last: Option<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    let usable = |ip: &Ipv4Addr| subnet.contains(*ip) && *ip != subnet.gateway();
    if let Some(ip) = own.filter(usable) {
        return Some(ip);
    }
    if let Some(ip) = handed.filter(|ip| usable(ip) && !taken.contains(ip)) {
        return Some(ip);
    }
    subnet.next_free_address(taken, last)
}

impl NodeAddresses {
    /// The address Instance `key` has or gets in `subnet` ([`choose`]); `own` is what
    /// its status (or the node's network) shows, `others` the addresses the node's other
    /// Instances' statuses show. A new one stays reserved for `key` until the cache
    /// shows it or [`NodeAddresses::forget`].
    pub fn address_for(
        &self,
        key: &ObjectRef,
        subnet: Cidr,
        own: Option<Ipv4Addr>,
        others: impl IntoIterator<Item = Ipv4Addr>,
    ) -> Option<Ipv4Addr> {
        self.address_at(key, subnet, own, others, Instant::now())
    }

    /// [`NodeAddresses::address_for`] at `now`.
    fn address_at(
        &self,
        key: &ObjectRef,
        subnet: Cidr,
        own: Option<Ipv4Addr>,
        others: impl IntoIterator<Item = Ipv4Addr>,
        now: Instant,
    ) -> Option<Ipv4Addr> {
        let mut state = self.state.lock().expect("addresses lock");
        // What the cache shows has an address is no longer pending; nor is what has
        // waited too long.
        state.pending.retain(|k, (_, at)| {
            (k != key || own.is_none()) && now.duration_since(*at) < PENDING_FOR
        });
        let mut taken: HashSet<Ipv4Addr> = others.into_iter().collect();
        taken.extend(
            state
                .pending
                .iter()
                .filter(|(k, _)| *k != key)
                .map(|(_, (ip, _))| *ip),
        );
        let handed = state.pending.get(key).map(|(ip, _)| *ip);
        let ip = choose(subnet, own, handed, &taken, state.last)?;
        if own != Some(ip) && handed != Some(ip) {
            state.last = Some(ip);
            state.pending.insert(key.clone(), (ip, now));
        }
        Some(ip)
    }

    /// Forget what was handed out to `key` (it is gone, or bound elsewhere).
    pub fn forget(&self, key: &ObjectRef) {
        self.state
            .lock()
            .expect("addresses lock")
            .pending
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn choosing_an_address() {
        let subnet: Cidr = "10.0.0.0/29".parse().unwrap();
        let none = HashSet::new();
        let taken: HashSet<Ipv4Addr> = [ip("10.0.0.2"), ip("10.0.0.3")].into();
        #[rustfmt::skip]
        let cases = [
            ("its own address stays", Some("10.0.0.5"), None, &none, None, Some("10.0.0.5")),
            ("an address of another subnet is replaced", Some("10.0.1.5"), None, &none, None, Some("10.0.0.2")),
            ("the gateway is never an Instance's", Some("10.0.0.1"), None, &none, None, Some("10.0.0.2")),
            ("what was handed out before, while free", None, Some("10.0.0.6"), &taken, None, Some("10.0.0.6")),
            ("handed out before but taken since", None, Some("10.0.0.3"), &taken, None, Some("10.0.0.4")),
            ("the next free one after the last", None, None, &none, Some("10.0.0.4"), Some("10.0.0.5")),
            ("going round at the top", None, None, &taken, Some("10.0.0.6"), Some("10.0.0.4")),
        ];
        for (what, own, handed, taken, last, expected) in cases {
            assert_eq!(
                choose(subnet, own.map(ip), handed.map(ip), taken, last.map(ip)),
                expected.map(ip),
                "{what}"
            );
        }
        let full: HashSet<Ipv4Addr> = (2..=6).map(|i| ip(&format!("10.0.0.{i}"))).collect();
        assert_eq!(choose(subnet, None, None, &full, None), None, "full");
    }

    #[test]
    fn an_address_stays_reserved_until_the_cache_shows_it() {
        let subnet: Cidr = "10.0.0.0/29".parse().unwrap();
        let addresses = NodeAddresses::default();
        let (a, b) = (
            ObjectRef::new(Some("default"), "a"),
            ObjectRef::new(Some("default"), "b"),
        );
        let first = addresses.address_for(&a, subnet, None, []).unwrap();
        assert_eq!(
            addresses.address_for(&a, subnet, None, []),
            Some(first),
            "asked again"
        );
        let second = addresses.address_for(&b, subnet, None, []).unwrap();
        assert_ne!(first, second, "a's is pending: not b's");
        // The cache shows a's: no longer pending, but taken through `others`.
        assert_eq!(
            addresses.address_for(&a, subnet, Some(first), [second]),
            Some(first)
        );
        assert_eq!(
            addresses.address_for(&b, subnet, None, [first]),
            Some(second)
        );
        addresses.forget(&b);
        let third = addresses.address_for(&b, subnet, None, [first]).unwrap();
        assert_ne!(
            third, second,
            "addresses go round: a released one is not the next"
        );
        // One handed out that no status ever showed is free again after a while.
        let (c, e) = (
            ObjectRef::new(Some("default"), "c"),
            ObjectRef::new(Some("default"), "e"),
        );
        let others: Vec<Ipv4Addr> = (2..=5).map(|i| ip(&format!("10.0.0.{i}"))).collect();
        let t0 = Instant::now();
        let last_one = addresses.address_at(&c, subnet, None, others.clone(), t0);
        assert_eq!(last_one, Some(ip("10.0.0.6")));
        let soon = t0 + Duration::from_secs(1);
        assert_eq!(
            addresses.address_at(&e, subnet, None, others.clone(), soon),
            None,
            "c holds it"
        );
        let later = t0 + PENDING_FOR;
        assert_eq!(
            addresses.address_at(&e, subnet, None, others, later),
            last_one
        );
    }
}
