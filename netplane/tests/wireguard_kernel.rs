//! The WireGuard overlay against the real kernel and boringtun, in network namespaces
//! the test creates (and removes, with every process it starts, when it ends, passed
//! or not).
//!
//! `through_nat`: node `n1` on a LAN (192.168.251.1/24); nodes `n3` and `n4` each
//! behind a router namespace (`r3` 192.168.251.3, `r4` .4) that masquerades their
//! private 172.31.3.0/24 and 172.31.4.0/24 onto the LAN, so nothing on the LAN can dial
//! them. Each node has a bridge with its subnet's gateway and one instance serving its
//! own name with `busybox httpd`. Traffic goes only to addresses inside these
//! namespaces. Skipped with a message unless run as root with `ip`, `nft`, `busybox`
//! and `/dev/net/tun`.

mod lab;

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use lab::{ip, sh, subnet, wget, Lab};
use netplane::exec::Host;
use netplane::wireguard::{self, PrivateKey, Tunnel, WgNode, WireGuard};

macro_rules! skip_unless_able {
    () => {
        if let Some(why) = e2e::netns::unavailable(&["ip", "nft", "busybox", "timeout", "nsenter"])
        {
            eprintln!("skipping: {why}");
            return;
        }
        if !std::path::Path::new("/dev/net/tun").exists() {
            eprintln!("skipping: no /dev/net/tun");
            return;
        }
    };
}

/// `f` until it gives something, for at most `within`.
fn eventually<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A router namespace `r<i>`: `lan` at 192.168.251.<i>/24, `in` at 172.31.<i>.1/24,
/// masquerading what leaves by `lan`; and node `n<i>` behind it at 172.31.<i>.2.
fn behind_router(lab: &mut Lab, lan: &str, i: u8, gateway: &str) -> String {
    let router = lab.netns(&format!("r{i}"));
    let node = lab.node(&format!("n{i}"), gateway);
    ip(
        lan,
        &format!("link add p{i} type veth peer name lan netns {router}"),
    );
    ip(lan, &format!("link set p{i} master br0 up"));
    ip(&router, &format!("addr add 192.168.251.{i}/24 dev lan"));
    ip(&router, "link set lan up");
    ip(
        &router,
        &format!("link add in type veth peer name ul netns {node}"),
    );
    ip(&router, &format!("addr add 172.31.{i}.1/24 dev in"));
    ip(&router, "link set in up");
    ip(&node, &format!("addr add 172.31.{i}.2/24 dev ul"));
    ip(&node, "link set ul up");
    ip(&node, &format!("route add default via 172.31.{i}.1"));
    sh(&router, "echo 1 > /proc/sys/net/ipv4/ip_forward");
    e2e::netns::masquerade(&router, "lan");
    node
}

/// Opens node `ns`'s WireGuard device in its namespace.
fn open(ns: &str, wg: &WireGuard, key: &PrivateKey) -> Tunnel {
    let (wg, key) = (wg.clone(), key.clone());
    e2e::netns::within(ns, move || Tunnel::open(&wg, &key)).expect("open the device")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_nat() {
    skip_unless_able!();
    let mut lab = Lab::new("w");
    let lan = lab.netns("lan");
    ip(&lan, "link add br0 type bridge");
    ip(&lan, "link set br0 up");
    let n1 = lab.node("n1", "10.252.0.1/26");
    ip(
        &lan,
        &format!("link add p1 type veth peer name ul netns {n1}"),
    );
    ip(&lan, "link set p1 master br0 up");
    ip(&n1, "addr add 192.168.251.1/24 dev ul");
    ip(&n1, "link set ul up");
    let n3 = behind_router(&mut lab, &lan, 3, "10.252.0.129/26");
    let n4 = behind_router(&mut lab, &lan, 4, "10.252.0.193/26");
    let i1 = lab.instance(&n1, "i1", "10.252.0.2/26", "10.252.0.1");
    let i3 = lab.instance(&n3, "i3", "10.252.0.130/26", "10.252.0.129");
    let i4 = lab.instance(&n4, "i4", "10.252.0.194/26", "10.252.0.193");
    let (s1, s3, s4) = (
        subnet("10.252.0.0/26"),
        subnet("10.252.0.128/26"),
        subnet("10.252.0.192/26"),
    );
    let public: SocketAddrV4 = "192.168.251.1:50103".parse().unwrap();
    // The default keepalive (25 s): the first call is made at once by `call_peers`.
    // Each node's device runs in a process of its own (the debug `oakestra`), with its
    // socket and lock beside the node's key.
    let program = e2e::binary("oakestra");
    let settings = |node: &str, endpoint: Option<SocketAddrV4>| WireGuard {
        program: program.clone(),
        linger: Duration::from_secs(2),
        ..WireGuard::new(
            50103,
            endpoint,
            lab.dir.path().join(node).join("unused.key"),
        )
    };
    let (wg1, wg3, wg4) = (
        settings("n1", Some(public)),
        settings("n3", None),
        settings("n4", None),
    );
    let (k1, k3, k4) = (
        PrivateKey::generate(),
        PrivateKey::generate(),
        PrivateKey::generate(),
    );
    let nodes = [
        WgNode {
            name: "n1".into(),
            subnet: Some(s1),
            public_key: Some(k1.public().to_string()),
            endpoint: Some(public),
            ready: true,
        },
        WgNode {
            name: "n3".into(),
            subnet: Some(s3),
            public_key: Some(k3.public().to_string()),
            endpoint: None,
            ready: true,
        },
        WgNode {
            name: "n4".into(),
            subnet: Some(s4),
            public_key: Some(k4.public().to_string()),
            endpoint: None,
            ready: true,
        },
    ];
    let mut tunnels = Vec::new();
    for (ns, name, wg, key, own, nat) in [
        (&n1, "n1", &wg1, &k1, s1, false),
        (&n3, "n3", &wg3, &k3, s3, true),
        (&n4, "n4", &wg4, &k4, s4, true),
    ] {
        let mut tunnel = open(ns, wg, key);
        let host = Host::netns(ns.as_str());
        wireguard::tune(&host, wg, own).await.expect("tune");
        let plan = wireguard::plan(name, nat, &nodes, wg.keepalive);
        tunnel.set_peers(&plan.peers).await.expect("peers");
        let report = wireguard::sync_routes(&host, wg, &plan)
            .await
            .expect("routes");
        assert_eq!(report.added, 2, "{name}: a route per other subnet");
        let calling = plan.clone();
        let called = e2e::netns::within(ns, move || wireguard::call_peers(&calling));
        assert_eq!(called, usize::from(nat), "{name}: those behind NAT call n1");
        tunnels.push((ns.clone(), host, plan, tunnel));
    }
    let device = netplane::overlay::read_device(&Host::netns(n3.as_str()), "oakestra.wg")
        .await
        .expect("read")
        .expect("the device");
    assert_eq!(device.addresses, [(s3.base(), 32)]);
    assert_eq!(device.mtu, 1420);
    assert!(device.up);

    // (1) n1 reaches n3 once n3 has called: n3 dials out through its router.
    let from_n3 = eventually(
        "i1 → i3 through n3's NAT",
        Duration::from_secs(10),
        || wget(&i1, "10.252.0.130", "/"),
    );
    assert_eq!(from_n3, i3);
    // The overlay keeps instance addresses: i3 sees i1's own.
    assert_eq!(
        wget(&i1, "10.252.0.130", "/cgi-bin/ip").as_deref(),
        Some("10.252.0.2")
    );
    // n1 knows n3 only by where the router's mapping is.
    let state = tunnels[0].3.state().await.expect("state");
    let n3_seen = state
        .iter()
        .find(|p| p.public_key == k3.public())
        .expect("n3 is a peer");
    assert_eq!(
        n3_seen.endpoint.map(|e| e.ip().to_string()).as_deref(),
        Some("192.168.251.3"),
        "{state:?}"
    );
    assert!(n3_seen.since_handshake.is_some());

    // (2) Both behind NAT: n3 and n4 through n1, addresses kept.
    let relayed = eventually("i3 → i4 through n1", Duration::from_secs(10), || {
        wget(&i3, "10.252.0.194", "/")
    });
    assert_eq!(relayed, i4);
    assert_eq!(
        wget(&i4, "10.252.0.130", "/cgi-bin/ip").as_deref(),
        Some("10.252.0.194")
    );

    // (3) The underlay carries no instance traffic in the clear: n3's router forwards
    // only WireGuard's UDP, nothing to or from the instance range.
    let r3 = format!("{}-r3", lab.prefix);
    let watch = "add table ip watch; add chain ip watch through { type filter hook forward priority 0; }; add rule ip watch through ip daddr 10.252.0.0/24 counter; add rule ip watch through ip saddr 10.252.0.0/24 counter; add rule ip watch through udp dport 50103 counter";
    lab::cmd("ip", &["netns", "exec", &r3, "nft", watch]);
    assert_eq!(wget(&i1, "10.252.0.130", "/").as_deref(), Some(i3.as_str()));
    let listed = lab::cmd(
        "ip",
        &["netns", "exec", &r3, "nft", "list", "table", "ip", "watch"],
    );
    let packets: Vec<u64> = listed
        .split("packets ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(packets.len(), 3, "{listed}");
    assert_eq!(
        &packets[..2],
        [0, 0],
        "instance addresses crossed the router: {listed}"
    );
    assert!(
        packets[2] > 0,
        "no WireGuard packets through the router: {listed}"
    );

    // (4) A peer whose settings change (boringtun removes and adds it again) is still
    // reached where it last called from, without waiting for its next keepalive (25 s);
    // a peer that goes loses its routes and its tunnel.
    let (_, host1, plan1, tunnel1) = &mut tunnels[0];
    let n3_peer = plan1.peers.iter_mut().find(|p| p.node == "n3").unwrap();
    n3_peer.allowed.push(subnet("10.252.1.0/26"));
    tunnel1.set_peers(&plan1.peers).await.expect("peers");
    wireguard::sync_routes(host1, &wg1, plan1)
        .await
        .expect("routes");
    let started = Instant::now();
    let again = eventually(
        "i1 → i3 after n3's peer changed",
        Duration::from_secs(10),
        || wget(&i1, "10.252.0.130", "/"),
    );
    assert_eq!(again, i3);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    plan1.peers.retain(|p| p.node != "n4");
    tunnel1.set_peers(&plan1.peers).await.expect("peers");
    let report = wireguard::sync_routes(host1, &wg1, plan1)
        .await
        .expect("routes");
    assert_eq!((report.added, report.removed), (0, 1));
    assert_eq!(wget(&i1, "10.252.0.194", "/"), None, "n4 is gone from n1");
    assert_eq!(wget(&i1, "10.252.0.130", "/").as_deref(), Some(i3.as_str()));

    // (5) The device outlives its agent: with n1's agent gone (its `Tunnel` dropped),
    // i1 still reaches i3; an agent that comes back finds the device running and adopts
    // its peers, sessions and counters kept.
    let before = tunnels[0].3.state().await.expect("state");
    let rx_before = before
        .iter()
        .find(|p| p.public_key == k3.public())
        .unwrap()
        .rx_bytes;
    let (n1_ns, n1_host, n1_plan, n1_tunnel) = tunnels.remove(0);
    drop(n1_tunnel);
    assert_eq!(
        wget(&i1, "10.252.0.130", "/").as_deref(),
        Some(i3.as_str()),
        "n1's tunnels went with its agent"
    );
    let mut back = open(&n1_ns, &wg1, &k1);
    back.set_peers(&n1_plan.peers).await.expect("peers");
    let report = wireguard::sync_routes(&n1_host, &wg1, &n1_plan)
        .await
        .expect("routes");
    assert_eq!(
        (report.added, report.removed),
        (0, 0),
        "the routes were kept"
    );
    let after = back.state().await.expect("state");
    let n3_after = after.iter().find(|p| p.public_key == k3.public()).unwrap();
    assert!(
        n3_after.rx_bytes > rx_before,
        "n3's peer was replaced, not adopted: {rx_before} bytes before, {after:?}"
    );
    assert_eq!(after.len(), before.len(), "{after:?}");
    assert_eq!(wget(&i1, "10.252.0.130", "/").as_deref(), Some(i3.as_str()));

    // (6) No agent for longer than the linger time (2 s here): the device goes.
    drop(back);
    drop(tunnels);
    let device_there = |ns: &str| {
        std::process::Command::new("ip")
            .args(["-n", ns, "link", "show", "oakestra.wg"])
            .output()
            .is_ok_and(|out| out.status.success())
    };
    assert!(device_there(&n1), "still there within the linger time");
    for ns in [&n1, &n3, &n4] {
        eventually("the device gone", Duration::from_secs(10), || {
            (!device_there(ns)).then_some(())
        });
    }
    assert!(
        !lab.dir.path().join("n1").join("wireguard.sock").exists(),
        "its socket went with it"
    );
}
