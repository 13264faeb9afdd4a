//! The overlay against the real kernel, in network namespaces the tests create (and
//! remove, with every process they start, when the test ends, passed or not).
//!
//! `mesh`: two nodes `ovt-<pid>-m-n1` and `-n2` on an underlay veth
//! (192.168.250.1/24 and .2/24), each with a bridge holding its subnet's gateway
//! (10.251.0.1/26 and 10.251.0.65/26) and one instance namespace (`-i1` .2, `-i2` .66)
//! serving its own name with `busybox httpd`. `sync_cost`: one node and 100 fake peers,
//! timed (printed, not asserted). Traffic goes only to addresses inside these
//! namespaces. Skipped with a message unless run as root with `ip` and `busybox`.

mod lab;

use std::net::Ipv4Addr;
use std::time::Instant;

use lab::{addr, ip, subnet, wget, Lab};

use netplane::exec::Host;
use netplane::overlay::{
    self, KernelState, NodeNet, OverlayError, Peer, SkipReason, Subnet, SyncReport, Vxlan,
};

macro_rules! skip_unless_able {
    () => {
        if let Some(why) =
            e2e::netns::unavailable(&["ip", "bridge", "busybox", "timeout", "nsenter"])
        {
            eprintln!("skipping: {why}");
            return;
        }
    };
}

/// The device on a node's `ul`, at `192.168.250.<i>`.
fn vxlan(i: u8) -> Vxlan {
    Vxlan {
        underlay_device: Some("ul".into()),
        ..Vxlan::new(Ipv4Addr::new(192, 168, 250, i))
    }
}

/// The kernel entries that exactly `peers` need.
fn entries_of(peers: &[&Peer]) -> KernelState {
    KernelState {
        routes: peers
            .iter()
            .map(|p| overlay::Route {
                dst: p.subnet,
                via: Some(p.subnet.base()),
                onlink: true,
                metric: 0,
            })
            .collect(),
        neighbours: peers
            .iter()
            .map(|p| overlay::Neighbour {
                ip: p.subnet.base(),
                mac: p.mac.clone(),
            })
            .collect(),
        fdb: peers
            .iter()
            .map(|p| overlay::Fdb {
                mac: p.mac.clone(),
                dst: p.underlay,
            })
            .collect(),
    }
}

/// `state` in a stable order (the kernel lists the fdb newest first).
fn sorted(mut state: KernelState) -> KernelState {
    state.routes.sort_by_key(|r| r.dst);
    state.neighbours.sort_by_key(|n| n.ip);
    state.fdb.sort_by(|a, b| a.mac.cmp(&b.mac));
    state
}

#[tokio::test]
async fn mesh() {
    skip_unless_able!();
    let mut lab = Lab::new("m");
    let n1 = lab.node("n1", "10.251.0.1/26");
    let n2 = lab.node("n2", "10.251.0.65/26");
    ip(
        &n1,
        &format!("link add ul type veth peer name ul netns {n2}"),
    );
    ip(&n1, "addr add 192.168.250.1/24 dev ul");
    ip(&n2, "addr add 192.168.250.2/24 dev ul");
    ip(&n1, "link set ul up");
    ip(&n2, "link set ul up");
    let i1 = lab.instance(&n1, "i1", "10.251.0.2/26", "10.251.0.1");
    let i2 = lab.instance(&n2, "i2", "10.251.0.66/26", "10.251.0.65");
    let (h1, h2) = (Host::netns(&n1), Host::netns(&n2));
    let (s1, s2) = (subnet("10.251.0.0/26"), subnet("10.251.0.64/26"));
    let (vx1, vx2) = (vxlan(1), vxlan(2));
    assert_eq!(wget(&i1, "10.251.0.66", "/"), None, "no overlay yet");

    // The devices; a second `ensure` keeps the device (and its MAC) and fixes strays.
    let mac1 = overlay::ensure(&h1, &vx1, s1).await.expect("ensure n1");
    let mac2 = overlay::ensure(&h2, &vx2, s2).await.expect("ensure n2");
    ip(&n1, "addr add 10.9.9.9/24 dev oakestra.1");
    ip(&n1, "link set oakestra.1 down");
    assert_eq!(overlay::ensure(&h1, &vx1, s1).await.expect("again"), mac1);
    let dev1 = overlay::read_device(&h1, "oakestra.1")
        .await
        .expect("read")
        .expect("device");
    assert_eq!(dev1.addresses, [(addr("10.251.0.0"), 32)]);
    assert!(dev1.up);
    assert_eq!(dev1.mtu, 1450, "the uplink's 1500 − 50");
    assert_eq!(
        (dev1.vni, dev1.port, dev1.learning),
        (Some(1), Some(8472), Some(false))
    );

    // The peers, from what the API would say.
    let nodes = [
        NodeNet {
            name: "n1".into(),
            subnet: Some(s1),
            underlay: Some(vx1.local),
            mac: Some(mac1.to_uppercase()),
        },
        NodeNet {
            name: "n2".into(),
            subnet: Some(s2),
            underlay: Some(vx2.local),
            mac: Some(mac2.clone()),
        },
        NodeNet {
            name: "n3".into(),
            subnet: Some(subnet("10.251.0.128/26")),
            ..NodeNet::default()
        },
    ];
    let plan1 = overlay::plan("n1", &nodes);
    let plan2 = overlay::plan("n2", &nodes);
    assert_eq!(
        plan1.skipped,
        [("n3".into(), SkipReason::Missing(vec!["underlay", "mac"]))]
    );
    assert_eq!(plan1.peers.len(), 1);
    assert_eq!(plan2.peers[0].mac, mac1, "lower-cased");
    let report = overlay::sync(&h1, &vx1, &plan1.peers)
        .await
        .expect("sync n1");
    assert_eq!((report.added, report.changed, report.removed), (3, 0, 0));
    overlay::sync(&h2, &vx2, &plan2.peers)
        .await
        .expect("sync n2");

    // (1) Both ways, without NAT.
    assert_eq!(wget(&i1, "10.251.0.66", "/").as_deref(), Some(i2.as_str()));
    assert_eq!(wget(&i2, "10.251.0.2", "/").as_deref(), Some(i1.as_str()));
    let seen = wget(&i1, "10.251.0.66", "/cgi-bin/ip");
    assert_eq!(
        seen.as_deref(),
        Some("10.251.0.2"),
        "i2 sees i1's own address"
    );
    let seen = wget(&i2, "10.251.0.2", "/cgi-bin/ip");
    assert_eq!(
        seen.as_deref(),
        Some("10.251.0.66"),
        "i1 sees i2's own address"
    );

    // (2) Idempotent.
    let again = overlay::sync(&h1, &vx1, &plan1.peers)
        .await
        .expect("resync");
    assert_eq!(again.total(), 0, "{again:?}");
    let n2_only = entries_of(&[&plan1.peers[0]]);
    let state = overlay::read_state(&h1, &vx1).await.expect("read");
    assert_eq!(sorted(state), n2_only);

    // (3) A third peer comes and goes and leaves nothing; no peers: nothing at all.
    let n3 = Peer {
        node: "n3".into(),
        subnet: subnet("10.251.0.128/26"),
        underlay: addr("192.168.250.3"),
        mac: "02:00:00:00:00:03".into(),
    };
    let with_n3 = [plan1.peers[0].clone(), n3.clone()];
    let report = overlay::sync(&h1, &vx1, &with_n3).await.expect("add n3");
    assert_eq!((report.added, report.changed, report.removed), (3, 0, 0));
    let state = overlay::read_state(&h1, &vx1).await.expect("read");
    assert_eq!(sorted(state), sorted(entries_of(&[&plan1.peers[0], &n3])));
    let report = overlay::sync(&h1, &vx1, &plan1.peers)
        .await
        .expect("drop n3");
    assert_eq!((report.added, report.changed, report.removed), (0, 0, 3));
    let state = overlay::read_state(&h1, &vx1).await.expect("read");
    assert_eq!(sorted(state), n2_only);
    let report = overlay::sync(&h1, &vx1, &[]).await.expect("no peers");
    assert_eq!((report.added, report.changed, report.removed), (0, 0, 3));
    assert!(overlay::read_state(&h1, &vx1)
        .await
        .expect("read")
        .is_empty());
    assert_eq!(
        wget(&i1, "10.251.0.66", "/"),
        None,
        "no route to n2 any more"
    );

    // A peer the kernel refuses does not keep the others out, and is named.
    let bad = Peer {
        node: "bad".into(),
        subnet: subnet("224.0.0.0/24"),
        underlay: addr("192.168.250.9"),
        mac: "02:00:00:00:00:09".into(),
    };
    let err = overlay::sync(&h1, &vx1, &[bad, plan1.peers[0].clone()])
        .await
        .expect_err("a multicast subnet is refused");
    let OverlayError::Apply { failures } = &err else {
        panic!("{err}");
    };
    assert!(
        failures.iter().all(|f| f.what.starts_with("peer bad: ")),
        "{err}"
    );
    println!("refused peer: {err}");
    assert_eq!(wget(&i1, "10.251.0.66", "/").as_deref(), Some(i2.as_str()));
    let state = overlay::read_state(&h1, &vx1).await.expect("read");
    assert!(state.routes.iter().all(|r| r.dst != subnet("224.0.0.0/24")));
    overlay::sync(&h1, &vx1, &plan1.peers)
        .await
        .expect("drop the bad peer");
    let state = overlay::read_state(&h1, &vx1).await.expect("read");
    assert_eq!(sorted(state), n2_only);

    // (4) Another port recreates the device; `remove` deletes it, and is fine twice.
    let other_port = Vxlan {
        port: 4789,
        ..vx1.clone()
    };
    overlay::ensure(&h1, &other_port, s1)
        .await
        .expect("recreate");
    let dev = overlay::read_device(&h1, "oakestra.1")
        .await
        .expect("read")
        .expect("device");
    assert_eq!(dev.port, Some(4789));
    let state = overlay::read_state(&h1, &vx1).await.expect("read");
    assert!(state.is_empty(), "a new device has no entries: {state:?}");
    assert!(overlay::remove(&h1, &vx1).await.expect("remove"));
    assert!(overlay::read_device(&h1, "oakestra.1")
        .await
        .expect("read")
        .is_none());
    assert!(!overlay::remove(&h1, &vx1).await.expect("remove again"));
    let err = overlay::sync(&h1, &vx1, &[]).await.expect_err("no device");
    assert!(matches!(err, OverlayError::Command(_)), "{err}");
}

fn took(what: &str, start: Instant, report: SyncReport) {
    let took = start.elapsed();
    println!("sync of 100 peers, {what}: {took:?} ({report:?})");
}

#[tokio::test]
async fn sync_cost() {
    skip_unless_able!();
    let mut lab = Lab::new("c");
    let n1 = lab.netns("n1");
    ip(&n1, "link add ul type veth peer name ul-peer");
    ip(&n1, "addr add 192.168.250.1/24 dev ul");
    ip(&n1, "link set ul up");
    ip(&n1, "link set ul-peer up");
    let host = Host::netns(&n1);
    let vx = vxlan(1);
    overlay::ensure(&host, &vx, subnet("10.251.0.0/26"))
        .await
        .expect("ensure");
    let peers: Vec<Peer> = (0..100u8)
        .map(|i| Peer {
            node: format!("fake-{i:03}"),
            subnet: Subnet::new(Ipv4Addr::new(10, 252, i, 0), 26).expect("subnet"),
            underlay: Ipv4Addr::new(192, 168, 250, 100 + i),
            mac: format!("02:00:00:00:01:{i:02x}"),
        })
        .collect();

    let start = Instant::now();
    let report = overlay::sync(&host, &vx, &peers).await.expect("add 100");
    took("add", start, report);
    assert_eq!(report.added, 300);

    let start = Instant::now();
    let report = overlay::sync(&host, &vx, &peers).await.expect("resync 100");
    took("in line", start, report);
    assert_eq!(report.total(), 0);

    let mut moved = peers.clone();
    moved[7].underlay = addr("192.168.250.250");
    let start = Instant::now();
    let report = overlay::sync(&host, &vx, &moved).await.expect("move one");
    took("one moved", start, report);
    assert_eq!(report.changed, 1);

    let start = Instant::now();
    let report = overlay::sync(&host, &vx, &[]).await.expect("remove 100");
    took("remove", start, report);
    assert_eq!(report.removed, 300);
    assert!(overlay::read_state(&host, &vx)
        .await
        .expect("read")
        .is_empty());

    let start = Instant::now();
    overlay::ensure(&host, &vx, subnet("10.251.0.0/26"))
        .await
        .expect("ensure");
    println!("ensure (in line): {:?}", start.elapsed());
}
