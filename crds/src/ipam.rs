//! Address pools: blocks of a CIDR (a subnet per Cluster) and single addresses (a
//! service IP per Service). Pure arithmetic; the controllers own the bookkeeping.

use std::collections::HashSet;
use std::net::Ipv4Addr;

/// An IPv4 prefix, e.g. `10.30.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The first address (host bits are zero).
    pub base: Ipv4Addr,
    /// Length of the network part in bits, 0..=32.
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an IPv4 CIDR like 10.30.0.0/16");
        let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        let mask = mask(prefix);
        if u32::from(ip) & !mask != 0 {
            return Err(format!(
                "{s:?} has host bits set; did you mean {}/{prefix}?",
                Ipv4Addr::from(u32::from(ip) & mask)
            ));
        }
        Ok(Cidr { base: ip, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

impl Cidr {
    /// Whether `ip` is inside this prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.base)
    }

    /// Number of `/block` subnets in this prefix.
    pub fn blocks(&self, block: u8) -> u64 {
        if block < self.prefix || block > 32 {
            0
        } else {
            1u64 << (block - self.prefix)
        }
    }

    /// The `index`th `/block` subnet.
    pub fn block(&self, block: u8, index: u64) -> Cidr {
        let base = u32::from(self.base) + (index as u32).wrapping_shl(32 - block as u32);
        Cidr {
            base: Ipv4Addr::from(base),
            prefix: block,
        }
    }

    /// The lowest `/block` subnet not in `used`.
    pub fn first_free_block(&self, block: u8, used: &HashSet<String>) -> Option<Cidr> {
        (0..self.blocks(block))
            .map(|i| self.block(block, i))
            .find(|c| !used.contains(&c.to_string()))
    }

    /// The first host address: a node's bridge (the Instances' gateway) in a node subnet.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1)
    }

    /// The host addresses that may be handed out, lowest first: not the network or
    /// broadcast address, and not the [`gateway`](Self::gateway) when the prefix has room
    /// for more than two hosts.
    fn host_addresses(&self) -> impl DoubleEndedIterator<Item = Ipv4Addr> + Clone + '_ {
        let size = 1u64 << (32 - self.prefix);
        let (first, last) = match size {
            0..=2 => (0, size - 1),
            3..=4 => (1, size - 2),
            _ => (2, size - 2),
        };
        (first..=last).map(|i| Ipv4Addr::from(u32::from(self.base) + i as u32))
    }

    /// The lowest host address not in `used`.
    pub fn first_free_address(&self, used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        self.host_addresses().find(|ip| !used.contains(ip))
    }

    /// The first free host address after `after` (the last one handed out), wrapping
    /// around at the top; without `after` (say, after a restart), after the highest used
    /// one. Addresses go round the pool, so one that was just released is not handed out
    /// again at once: a replacement does not get the address of what it replaces while
    /// that may still be stopping (and hosts still cache its MAC).
    pub fn next_free_address(
        &self,
        used: &HashSet<Ipv4Addr>,
        after: Option<Ipv4Addr>,
    ) -> Option<Ipv4Addr> {
        let after = after
            .filter(|a| self.contains(*a))
            .or_else(|| used.iter().filter(|a| self.contains(**a)).max().copied());
        self.host_addresses()
            .skip_while(|ip| after.is_some_and(|a| *ip <= a))
            .find(|ip| !used.contains(ip))
            .or_else(|| self.first_free_address(used))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_addresses() {
        let pool: Cidr = "10.128.0.0/9".parse().unwrap();
        assert_eq!(pool.blocks(16), 128);
        assert_eq!(pool.block(16, 0).to_string(), "10.128.0.0/16");
        assert_eq!(pool.block(16, 3).to_string(), "10.131.0.0/16");
        let used: HashSet<String> =
            ["10.128.0.0/16".to_string(), "10.129.0.0/16".to_string()].into();
        assert_eq!(
            pool.first_free_block(16, &used).unwrap().to_string(),
            "10.130.0.0/16"
        );
        let tiny: Cidr = "10.0.0.0/31".parse().unwrap();
        let all: HashSet<String> = ["10.0.0.0/32".to_string(), "10.0.0.1/32".to_string()].into();
        assert_eq!(tiny.first_free_block(32, &all), None, "exhausted");

        let svc: Cidr = "10.30.0.0/16".parse().unwrap();
        assert!(svc.contains("10.30.30.30".parse().unwrap()));
        assert!(!svc.contains("192.168.178.4".parse().unwrap()));
        assert_eq!(svc.gateway(), "10.30.0.1".parse::<Ipv4Addr>().unwrap());
        let used: HashSet<Ipv4Addr> = ["10.30.0.2".parse().unwrap()].into();
        assert_eq!(
            svc.first_free_address(&used),
            Some("10.30.0.3".parse().unwrap()),
            "the gateway is never handed out"
        );
        let node: Cidr = "10.128.0.0/29".parse().unwrap();
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let set = |list: &[&str]| list.iter().map(|a| ip(a)).collect::<HashSet<_>>();
        assert_eq!(
            node.next_free_address(&set(&[]), None),
            Some(ip("10.128.0.2"))
        );
        assert_eq!(
            node.next_free_address(&set(&["10.128.0.3"]), None),
            Some(ip("10.128.0.4")),
            "after a restart: above the highest in use, not .2"
        );
        assert_eq!(
            node.next_free_address(&set(&[]), Some(ip("10.128.0.2"))),
            Some(ip("10.128.0.3")),
            "the pool is empty again, but .2 was the last handed out"
        );
        assert_eq!(
            node.next_free_address(&set(&["10.128.0.3"]), Some(ip("10.128.0.6"))),
            Some(ip("10.128.0.2")),
            "past the top (.7 is broadcast): round from the bottom"
        );
        let full = set(&[
            "10.128.0.2",
            "10.128.0.3",
            "10.128.0.4",
            "10.128.0.5",
            "10.128.0.6",
        ]);
        assert_eq!(node.next_free_address(&full, Some(ip("10.128.0.4"))), None);
        assert!("10.30.0.1/16"
            .parse::<Cidr>()
            .unwrap_err()
            .contains("did you mean 10.30.0.0/16"));
    }
}
