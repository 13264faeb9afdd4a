//! The worker's network over real kernel pieces: two nodes, each a network namespace
//! the test makes, on a LAN of veth pairs and a bridge; one containerd shared by both;
//! root and cluster on the machine's loopback (each node reaches the cluster API and
//! the registry through a relay on its own loopback). Every request goes to an address
//! inside the test's namespaces.
//!
//! What a user of service IPs would check: a round-robin IP answered by the instances
//! on both nodes (from a container, and from the node itself), the closest IP
//! answered on the caller's own node (also by the caller itself: hairpin), a port the
//! Service does not have refused at once, a deleted instance out of the rotation, a
//! node whose agent died out of its peers' rules once its heartbeat lapsed, and the
//! service IPs still working while the root is down (over vxlan); a Service of another
//! cluster answered through the gateways, also after a gateway died (over WireGuard,
//! the default); nodes behind masquerading routers reached over WireGuard, and two of
//! them reaching each other through a third.

use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant};

use client::{Api, ListParams};
use crds::{Endpoints, Instance};
use e2e::containers::{Containerd, Registry};
use e2e::netns::{Netns, Underlay};
use e2e::{eventually, free_port, Oakestra, RootServer};

const WAIT: Duration = Duration::from_secs(120);
const RR_IP: &str = "10.30.30.30";
const CLOSEST_IP: &str = "10.30.30.31";

/// One HTTP GET of `url` with busybox's wget from inside the network namespace at
/// `/run/netns/NETNS` (a container's, or a node's), bounded at 3 s: the body, or why not.
fn get_from(netns: &str, url: &str) -> Result<String, String> {
    let out: Output = std::process::Command::new("timeout")
        .args(["3", "nsenter", &format!("--net=/run/netns/{netns}"), "--"])
        .args(["busybox", "wget", "-q", "-O", "-", url])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The Instance that answered and its node, `instance@node` (the page says
/// `<instance> <node> <container id>`).
fn answered_by(body: &str) -> String {
    let mut words = body.split_whitespace();
    let instance = words.next().unwrap_or_default();
    format!("{instance}@{}", words.next().unwrap_or_default())
}

/// The container that answered: the page's last word, a random id each container
/// draws at start (a replacement has its Instance's name, but not its id).
fn container_of(body: &str) -> String {
    body.split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string()
}

/// A web server image whose page names the Instance, its node and the container.
fn web_image(registry: &Registry) -> String {
    registry.push_busybox(
        "netweb",
        "v1",
        &[
            "/bin/sh",
            "-c",
            "echo \"$OAKESTRA_INSTANCE $OAKESTRA_NODE $(cat /proc/sys/kernel/random/uuid)\" > /index.html; exec httpd -f -p 80 -h /",
        ],
        "v1",
    )
}

/// `n` requests of `url` from `netns`: how many each Instance answered; an error at the
/// first request that fails.
fn tally(netns: &str, url: &str, n: usize) -> Result<BTreeMap<String, usize>, String> {
    let mut counts = BTreeMap::new();
    for i in 0..n {
        let body = get_from(netns, url).map_err(|e| format!("request {i} of {url}: {e}"))?;
        *counts.entry(answered_by(&body)).or_default() += 1;
    }
    Ok(counts)
}

/// The network namespace of Instance `name` (in `default`).
fn container_netns(name: &str) -> String {
    format!("oak-default_{name}")
}

/// Wait until `n` Instances of `service` are Running; returns them.
async fn running(api: &Api<Instance>, service: &str, n: usize) -> Vec<Instance> {
    e2e::running_instances(api, service, n, WAIT).await
}

/// Whether the kernel pieces these tests use are here (and root).
fn kernel_pieces() -> bool {
    match e2e::netns::unavailable(&["nft", "ip", "nsenter", "busybox"]) {
        Some(why) => {
            eprintln!("skipped: {why}");
            false
        }
        None => true,
    }
}

/// One worker: a network namespace on the LAN, with relays to the cluster API and the
/// registry on its loopback, running `oakestra worker`. Dropped in this order: the
/// worker, the relays, the namespace (with what is left in it).
struct Machine {
    name: &'static str,
    worker: Oakestra,
    _relays: Vec<e2e::netns::Relay>,
    ns: Netns,
    /// The router a machine behind NAT is behind.
    _router: Option<Netns>,
}

/// How a lab's machines are networked.
struct Options {
    /// `--overlay` of every worker.
    overlay: &'static str,
    /// The machines behind NAT: each behind a router of its own that masquerades its
    /// private network onto the LAN, and run with `--behind-nat`.
    behind_nat: &'static [&'static str],
}

/// Put `host` behind a router namespace `router` on the LAN: the router is
/// `lan_address` there, `172.31.<k>.1/24` on its side of the host's `eth0` (the host is
/// `.2`, with its default route through the router), and masquerades what leaves for
/// the LAN, so nothing on the LAN can reach the host first. Returns the host's address.
fn behind_router(lan: &Underlay, router: &Netns, host: &Netns, k: u8, lan_last: u8) -> String {
    lan.attach(router, lan_last);
    router.sysctl("net.ipv4.ip_forward=1");
    router.veth_to("inside", host);
    router.ip(&["addr", "add", &format!("172.31.{k}.1/24"), "dev", "inside"]);
    router.ip(&["link", "set", "inside", "up"]);
    e2e::netns::masquerade(router.name(), "eth0");
    let address = format!("172.31.{k}.2");
    host.ip(&["addr", "add", &format!("{address}/24"), "dev", "eth0"]);
    host.ip(&["link", "set", "eth0", "up"]);
    host.ip(&["route", "add", "default", "via", &format!("172.31.{k}.1")]);
    address
}

/// Root, clusters and their machines on one LAN, one containerd, one registry.
/// Fields drop in order: machines first, containerd last.
struct Lab {
    machines: Vec<Machine>,
    _clusters: Vec<(&'static str, Oakestra)>,
    root: RootServer,
    image: String,
    _lan: Underlay,
    _registry: Registry,
    containerd: Containerd,
    dir: tempfile::TempDir,
}

impl Lab {
    /// Start the root, then each cluster with its machines (named, in order), and wait
    /// until every node is Ready with its data plane. Clusters heartbeat every second
    /// and lose a node after 3 s, but evict only after a minute: a lost node's
    /// endpoints must leave the rules long before its Instances move.
    async fn start(topology: &[(&'static str, &[&'static str])], options: Options) -> Lab {
        let containerd = Containerd::start();
        let registry = Registry::start();
        let image = web_image(&registry);
        let registry_port: u16 = registry
            .host
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("registry port");
        let dir = tempfile::tempdir().unwrap();
        let root = RootServer::start(
            &format!("embedded:{}", dir.path().join("root").display()),
            dir.path(),
        );
        let tag = std::process::id();
        let lan = Underlay::new(&format!("oakt{tag}-lan"), "192.168.77");
        let socket = containerd.socket.display().to_string();
        let (mut clusters, mut machines) = (Vec::new(), Vec::new());
        for &(cluster, names) in topology {
            let port = free_port();
            let flags = [
                "--heartbeat-seconds",
                "1",
                "--node-heartbeat-timeout-seconds",
                "3",
                "--eviction-seconds",
                "60",
            ];
            let args = e2e::cluster_args(cluster, &root.upstream(), port, dir.path(), &flags);
            clusters.push((
                cluster,
                Oakestra::start(cluster, &args, Some(port), dir.path()),
            ));
            let upstream =
                e2e::Upstream::cluster(&format!("https://127.0.0.1:{port}"), dir.path(), cluster);
            for &name in names {
                let ns = Netns::create(&format!("oakt{tag}-{name}"));
                let last = 11 + machines.len() as u8;
                let natted = options.behind_nat.contains(&name);
                let router = natted.then(|| Netns::create(&format!("oakt{tag}-r{last}")));
                let address = match &router {
                    Some(router) => behind_router(&lan, router, &ns, last, last),
                    None => lan.attach(&ns, last),
                };
                let relays = vec![ns.relay_loopback(port), ns.relay_loopback(registry_port)];
                let mut extra = vec![
                    "--address",
                    &address,
                    "--runtime",
                    "containerd",
                    "--containerd-socket",
                    &socket,
                    "--heartbeat-seconds",
                    "1",
                    "--overlay",
                    options.overlay,
                ];
                if natted {
                    extra.push("--behind-nat");
                }
                let args = e2e::worker_args(name, &upstream, dir.path(), &extra);
                let worker = Oakestra::start_in(&ns, name, &args, dir.path());
                machines.push(Machine {
                    name,
                    worker,
                    _relays: relays,
                    ns,
                    _router: router,
                });
            }
        }
        let lab = Lab {
            machines,
            _clusters: clusters,
            root,
            image,
            _lan: lan,
            _registry: registry,
            containerd,
            dir,
        };
        for &(cluster, names) in topology {
            let nodes: Api<crds::Node> = lab.cluster(cluster).api(None);
            eventually(
                &format!("the nodes of {cluster} Ready with their network"),
                WAIT,
                || async {
                    let (items, _) = nodes.list(&ListParams::default()).await.ok()?;
                    let ready = items.iter().filter(|n| {
                        let s = n.status.clone().unwrap_or_default();
                        crds::is_true(&s.conditions, "Ready")
                            && crds::is_true(&s.conditions, "NetworkReady")
                            && s.network
                                .as_ref()
                                .is_some_and(|n| n.vtep_mac.is_some() || n.public_key.is_some())
                    });
                    (ready.count() == names.len()).then_some(())
                },
            )
            .await;
        }
        lab
    }

    /// The machine `name`.
    fn machine(&mut self, name: &str) -> &mut Machine {
        self.machines
            .iter_mut()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no machine {name}"))
    }

    /// An administrator's client of cluster `name`'s own API.
    fn cluster(&self, name: &str) -> client::Client {
        e2e::tier_client(&e2e::tier_kubeconfig(&e2e::cluster_dir(
            self.dir.path(),
            name,
        )))
    }

    /// Apply a Service `name` of the web image (port 80) with these addressing and
    /// placement lines.
    fn apply_web(&self, name: &str, replicas: u32, addressing: &str, placement: &str) {
        let manifest = format!(
            "apiVersion: oakestra.io/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  addressing: {{{addressing}}}\n  template:\n    runtime: container\n    image: {image}\n    ports: [{{containerPort: 80}}]\n    resources: {{cpuMillicores: 100, memoryMiB: 32}}\n    placement: {{{placement}}}\n",
            image = self.image
        );
        e2e::apply_manifest(
            &self.root.kubeconfig(),
            self.dir.path(),
            &format!("{name}.yaml"),
            &manifest,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_ips_balance_across_nodes() {
    if !kernel_pieces() {
        return;
    }
    let _one_at_a_time = e2e::containers::exclusive().await;
    let vxlan = Options {
        overlay: "vxlan",
        behind_nat: &[],
    };
    let mut lab = Lab::start(&[("a", &["n1", "n2"])], vxlan).await;
    let cluster = lab.cluster("a");
    let kubeconfig = lab.root.kubeconfig();
    lab.apply_web(
        "web",
        2,
        &format!("roundRobinIP: {RR_IP}, closestIP: {CLOSEST_IP}"),
        "",
    );
    let root_client = lab.root.client();
    let instances: Api<Instance> = root_client.api(Some("default"));
    let web = running(&instances, "web", 2).await;
    let on = |node: &str| -> String {
        web.iter()
            .find(|i| i.spec.node.as_deref() == Some(node))
            .unwrap_or_else(|| panic!("no web instance on {node}: spread over the nodes"))
            .metadata
            .name
            .clone()
    };
    let (web1, web2) = (on("n1"), on("n2"));
    // How their answers are tallied.
    let (at1, at2) = (format!("{web1}@n1"), format!("{web2}@n2"));

    // The Endpoints the root keeps, and the cluster's copy, list both as ready.
    let endpoints: Api<Endpoints> = root_client.api(Some("default"));
    eventually("the root's endpoints of web: both ready", WAIT, || async {
        let e = endpoints.get("web").await.ok()?;
        (e.ready().count() == 2).then_some(())
    })
    .await;

    // What a user reads: the endpoints, in `get` and in `describe svc`.
    let listed = e2e::oakctl(&kubeconfig, &["get", "endpoints"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains(RR_IP) && listed.contains(CLOSEST_IP),
        "{listed}"
    );
    let described = e2e::oakctl(&kubeconfig, &["describe", "svc", "web"]);
    let described = String::from_utf8_lossy(&described.stdout);
    let section = described
        .split("\nEndpoints:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no Endpoints section: {described}"));
    for name in [&web1, &web2] {
        assert!(section.contains(name.as_str()), "{described}");
    }
    eventually("the Service counts 2 ready endpoints", WAIT, || async {
        let svc: Api<crds::Service> = root_client.api(Some("default"));
        (svc.get("web").await.ok()?.status?.ready_endpoints == Some(2)).then_some(())
    })
    .await;

    // (a) the round-robin IP, from the container on n1: both instances answer.
    let rr = format!("http://{RR_IP}/");
    let from_n1 = container_netns(&web1);
    let counts = eventually(
        "web1 reaches both instances through the RR IP",
        WAIT,
        || async {
            let counts = tally(&from_n1, &rr, 6).ok()?;
            (counts.len() == 2).then_some(counts)
        },
    )
    .await;
    eprintln!("round robin, warm-up: {counts:?}");
    let counts = tally(&from_n1, &rr, 30).expect("30 requests through the RR IP");
    eprintln!("round robin from a container on n1, 30 requests: {counts:?}");
    assert_eq!(counts.keys().cloned().collect::<Vec<_>>(), {
        let mut both = vec![at1.clone(), at2.clone()];
        both.sort();
        both
    });
    assert!(counts.values().all(|&c| c >= 10), "balanced: {counts:?}");
    // From the node itself (a host process, e.g. a process-runtime Instance).
    let n1_ns = lab.machines[0].ns.name().to_string();
    let counts = tally(&n1_ns, &rr, 10).expect("the RR IP from node n1 itself");
    assert_eq!(counts.len(), 2, "from the node: {counts:?}");

    // (f) a container resolves the Service's names at its node's responder (its
    // resolv.conf names it), from inside the container.
    for (name, ip) in [
        ("web.default.svc.oakestra.local", RR_IP),
        ("closest.web.default.svc.oakestra.local", CLOSEST_IP),
        // The search path of its resolv.conf, as in Kubernetes.
        ("web", RR_IP),
    ] {
        let answer = eventually(&format!("{name} resolves in web1"), WAIT, || async {
            let out = std::process::Command::new("ctr")
                .args(["-a", &lab.containerd.socket.display().to_string()])
                .args(["-n", "oakestra-n1", "tasks", "exec", "--exec-id"])
                .arg(format!("dns{}", free_port()))
                .arg(format!("default_{web1}"))
                .args(["nslookup", name])
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.contains(ip).then_some(text)
        })
        .await;
        assert!(answer.contains(ip), "{answer}");
    }

    // Instances' packets fit the overlay (vxlan's 1450 bytes) without path-MTU
    // discovery, as flannel sizes its pods' interfaces.
    let link = std::process::Command::new("ip")
        .args(["-n", &container_netns(&web1), "-o", "link", "show", "eth0"])
        .output()
        .unwrap();
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(
        link.contains(" mtu 1450 "),
        "the instance's interface: {link}"
    );

    // (c) the closest IP answers on the caller's node, also to the instance there
    // (which reaches itself through its own service: hairpin).
    let closest = format!("http://{CLOSEST_IP}/");
    let counts = tally(&from_n1, &closest, 10).expect("the closest IP from n1");
    assert_eq!(counts, BTreeMap::from([(at1.clone(), 10)]));
    let counts = tally(&container_netns(&web2), &closest, 10).expect("the closest IP from n2");
    assert_eq!(counts, BTreeMap::from([(at2.clone(), 10)]));

    // A port the Service does not have is refused at once, not left to time out.
    let started = Instant::now();
    let refused = get_from(&from_n1, &format!("http://{RR_IP}:81/"));
    assert!(refused.is_err(), "port 81 answered: {refused:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused, not timed out: took {:?}",
        started.elapsed()
    );

    // (d) n2's agent dies: once its heartbeat lapsed, the instance there (still
    // running) leaves n1's rules, long before its eviction (a minute here).
    lab.machine("n2").worker.kill9();
    let killed = Instant::now();
    let lapsed = eventually("n2's endpoints out of n1's rules", WAIT, || async {
        let counts = tally(&from_n1, &rr, 10).ok()?;
        (counts.keys().all(|k| *k == at1)).then(|| killed.elapsed())
    })
    .await;
    eprintln!("n2's agent killed: its instance left n1's rules {lapsed:?} later");
    let bound: Api<Instance> = cluster.api(Some("default"));
    let still = bound.get(&web2).await.expect("web2 in the cluster");
    assert_eq!(
        still.spec.node.as_deref(),
        Some("n2"),
        "not evicted yet: the rules followed the node's readiness"
    );
    assert!(
        get_from(&container_netns(&web2), &format!("http://{CLOSEST_IP}/")).is_ok(),
        "web2 itself still runs (only its agent died)"
    );

    // (b) web1, the one instance left in the rotation, is deleted: its replacement
    // (same name, a new container; n2 is NotReady, so on n1) takes over, and once it
    // answered no request goes to the old one or fails.
    let before = get_from(&from_n1, &rr).expect("web1 answers");
    let old_container = container_of(&before);
    let deleted_at = Instant::now();
    instances.delete(&web1).await.expect("delete web1");
    let took = eventually("web1's replacement answers the RR IP", WAIT, || async {
        let body = get_from(&container_netns(&web1), &rr).ok()?;
        (container_of(&body) != old_container).then(|| deleted_at.elapsed())
    })
    .await;
    eprintln!("a deleted instance was replaced in the rotation {took:?} after its delete");
    let replacement = container_netns(&web1);
    for i in 0..20 {
        let body = get_from(&replacement, &rr)
            .unwrap_or_else(|e| panic!("request {i} after the replacement: {e}"));
        assert_ne!(container_of(&body), old_container, "request {i}: {body}");
        assert_eq!(answered_by(&body), at1, "request {i}: n2 is still out");
    }

    // (h) the root stops: the service IPs keep working.
    lab.root.kill9();
    let counts = tally(&replacement, &rr, 10).expect("the RR IP with the root down");
    assert_eq!(counts, BTreeMap::from([(at1.clone(), 10)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_ips_reach_across_clusters() {
    if !kernel_pieces() {
        return;
    }
    let _one_at_a_time = e2e::containers::exclusive().await;
    // Over WireGuard, the default: the gateways carry their public keys.
    let wireguard = Options {
        overlay: "wireguard",
        behind_nat: &[],
    };
    let mut lab = Lab::start(&[("a", &["n1", "n2"]), ("b", &["n3"])], wireguard).await;
    let root_client = lab.root.client();

    // Each cluster names its gateway to the root (the first node by name).
    let clusters: Api<crds::Cluster> = root_client.api(None);
    for (cluster, gateway) in [("a", "n1"), ("b", "n3")] {
        eventually(&format!("{cluster}'s gateway {gateway}"), WAIT, || async {
            let c = clusters.get(cluster).await.ok()?;
            let gws = c.status?.network?.gateways;
            (gws.first()?.node == gateway).then_some(())
        })
        .await;
    }

    // A Service that runs only in cluster b, and clients on both nodes of cluster a.
    let far_ip = "10.30.40.40";
    lab.apply_web(
        "far",
        1,
        &format!("roundRobinIP: {far_ip}"),
        "clusters: [b]",
    );
    lab.apply_web("near", 2, "", "clusters: [a]");
    let instances: Api<Instance> = root_client.api(Some("default"));
    let far = running(&instances, "far", 1).await;
    assert_eq!(far[0].spec.cluster.as_deref(), Some("b"));
    let far_at = format!("{}@n3", far[0].metadata.name);
    let near = running(&instances, "near", 2).await;
    let url = format!("http://{far_ip}/");
    for client in &near {
        let node = client.spec.node.clone().unwrap_or_default();
        // n1 is a's gateway: it sends to b's gateway; n2 goes through n1.
        let from = container_netns(&client.metadata.name);
        let started = Instant::now();
        let counts = eventually(
            &format!("{far_ip} answered from cluster a's node {node}"),
            WAIT,
            || async { tally(&from, &url, 5).ok() },
        )
        .await;
        eprintln!(
            "from {node} in cluster a: {counts:?} (first answer after {:?})",
            started.elapsed()
        );
        assert_eq!(counts, BTreeMap::from([(far_at.clone(), 5)]));
        let counts = tally(&from, &url, 20).expect("20 requests across the clusters");
        assert_eq!(counts, BTreeMap::from([(far_at.clone(), 20)]));
    }

    // Gateway failover: n1's agent dies (its tunnels with it). Once its heartbeat
    // lapsed, cluster a names n2 its gateway, cluster b's gateway peers with n2, and
    // n2 reaches cluster b again, now straight.
    let on_n2 = near
        .iter()
        .find(|i| i.spec.node.as_deref() == Some("n2"))
        .expect("a near instance on n2");
    let from = container_netns(&on_n2.metadata.name);
    lab.machine("n1").worker.kill9();
    let killed = Instant::now();
    eventually("a's gateway fails over to n2", WAIT, || async {
        let c = clusters.get("a").await.ok()?;
        (c.status?.network?.gateways.first()?.node == "n2").then_some(())
    })
    .await;
    let took = eventually("n2 reaches cluster b through itself", WAIT, || async {
        let counts = tally(&from, &url, 5).ok()?;
        (counts == BTreeMap::from([(far_at.clone(), 5)])).then(|| killed.elapsed())
    })
    .await;
    eprintln!("a's gateway n1 killed: n2 reached cluster b again {took:?} later");

    // n3's agent dies: cluster b marks its instance not ready, the root's endpoints
    // follow, and cluster a stops sending there (the instance still runs, and is not
    // evicted yet): connections are refused at once instead of going to a lost node.
    lab.machine("n3").worker.kill9();
    let killed = Instant::now();
    let took = eventually("cluster a stops sending to n3", WAIT, || async {
        let started = Instant::now();
        let refused = get_from(&from, &url).is_err() && started.elapsed() < Duration::from_secs(1);
        refused.then(|| killed.elapsed())
    })
    .await;
    eprintln!("n3's agent killed: cluster a's rules dropped its endpoint {took:?} later");
    let far_now = instances.get(&far[0].metadata.name).await.expect("far");
    assert_eq!(far_now.spec.node.as_deref(), Some("n3"), "not evicted yet");
}

/// (e) Nodes behind NAT, over WireGuard: n2 and n3 each sit behind a router that
/// masquerades them onto the LAN, so only n1 can be dialled. They call n1 and keep the
/// paths open; n2 and n3 reach each other through n1. n2's tunnels outlive its agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_behind_nat_are_reached_over_wireguard() {
    if !kernel_pieces() {
        return;
    }
    let _one_at_a_time = e2e::containers::exclusive().await;
    let options = Options {
        overlay: "wireguard",
        behind_nat: &["n2", "n3"],
    };
    let mut lab = Lab::start(&[("a", &["n1", "n2", "n3"])], options).await;
    let cluster = lab.cluster("a");

    // What each node announces: n1 an address, the others only their keys; the
    // private key stays in a file only root reads.
    let nodes: Api<crds::Node> = cluster.api(None);
    for (node, address) in [("n1", Some("192.168.77.11")), ("n2", None), ("n3", None)] {
        let n = nodes.get(node).await.expect("node");
        let network = n.status.and_then(|s| s.network).expect("network status");
        assert_eq!(network.backend, "wireguard");
        assert_eq!(network.public_address.as_deref(), address, "{node}");
        let public_key = network.public_key.expect("a public key");
        let key_file = lab
            .dir
            .path()
            .join("workers")
            .join(node)
            .join("wireguard.key");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&key_file)
                .expect("key file")
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{}", key_file.display());
        let private = std::fs::read_to_string(&key_file).unwrap();
        assert_ne!(
            private.trim(),
            public_key,
            "the status holds the public key only"
        );
    }

    lab.apply_web("web", 3, &format!("roundRobinIP: {RR_IP}"), "");
    let instances: Api<Instance> = lab.root.client().api(Some("default"));
    let web = running(&instances, "web", 3).await;
    let on = |node: &str| -> &Instance {
        web.iter()
            .find(|i| i.spec.node.as_deref() == Some(node))
            .unwrap_or_else(|| panic!("no web instance on {node}: spread over the nodes"))
    };
    // In node order; the tally's keys come sorted by instance name.
    let answerers: Vec<String> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| format!("{}@{n}", on(n).metadata.name))
        .collect();
    let mut sorted = answerers.clone();
    sorted.sort();

    // From n1's container, the round-robin IP is answered on all three nodes.
    let rr = format!("http://{RR_IP}/");
    let from_n1 = container_netns(&on("n1").metadata.name);
    let started = Instant::now();
    eventually("n1 reaches the instances behind NAT", WAIT, || async {
        let counts = tally(&from_n1, &rr, 9).ok()?;
        (counts.len() == 3).then_some(())
    })
    .await;
    eprintln!(
        "behind NAT: all three answer {:?} after the Instances ran",
        started.elapsed()
    );
    let counts = tally(&from_n1, &rr, 30).expect("30 requests from n1");
    eprintln!("round robin from n1 over WireGuard, 30 requests: {counts:?}");
    assert_eq!(counts.keys().cloned().collect::<Vec<_>>(), sorted);

    // n2 reaches n3's instance at its own address, through n1.
    let n3_ip = on("n3")
        .status
        .as_ref()
        .and_then(|s| s.instance_ip)
        .expect("n3's instance IP");
    let from_n2 = container_netns(&on("n2").metadata.name);
    let body = eventually("n2 → n3 through n1", WAIT, || async {
        get_from(&from_n2, &format!("http://{n3_ip}/")).ok()
    })
    .await;
    assert_eq!(answered_by(&body), answerers[2]);

    // The tunnels outlive the agent, as the kernel's device would: with n2's agent
    // killed, n1 still reaches n2's instance at its own address (n2's WireGuard device
    // is a process of its own, and keeps calling n1); the agent started again uses the
    // same device, and the path stays.
    let n2_url = format!(
        "http://{}/",
        on("n2")
            .status
            .as_ref()
            .and_then(|s| s.instance_ip)
            .expect("n2's instance IP")
    );
    lab.machine("n2").worker.kill9();
    for _ in 0..5 {
        let body =
            get_from(&from_n1, &n2_url).expect("n1 → n2's instance while n2's agent is down");
        assert_eq!(answered_by(&body), answerers[1]);
        std::thread::sleep(Duration::from_millis(200));
    }
    lab.machine("n2").worker.restart();
    let deadline = Instant::now() + WAIT;
    while !lab
        .machine("n2")
        .worker
        .log()
        .contains("WireGuard device still running")
    {
        assert!(
            Instant::now() < deadline,
            "n2's agent did not take its running device up again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let nodes: Api<crds::Node> = cluster.api(None);
    eventually("n2 Ready with its network again", WAIT, || async {
        let s = nodes.get("n2").await.ok()?.status?;
        (crds::is_true(&s.conditions, "Ready") && crds::is_true(&s.conditions, "NetworkReady"))
            .then_some(())
    })
    .await;
    let body = get_from(&from_n1, &n2_url).expect("n1 → n2's instance after n2's agent is back");
    assert_eq!(answered_by(&body), answerers[1]);
}
