//! `rules::render` and `nft` against the real kernel, inside network namespaces this
//! test creates (and removes on drop, with the processes it started). Traffic goes
//! only to addresses inside those namespaces. Skipped, with a message, unless run as
//! root with `nft` and `busybox` installed.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netplane::exec::Host;
use netplane::nft;
use netplane::rules::{self, Frontend, Proto, Ruleset, ServiceRules};

const TABLE: &str = "oakestra";
const SERVICE: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const NO_ENDPOINT: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
const HAIRPIN: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 12);
const UDP_SERVICE: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);

macro_rules! skip_unless_able {
    () => {
        if let Some(reason) =
            e2e::netns::unavailable(&["nft", "ip", "busybox", "nsenter", "sysctl", "bash"])
        {
            eprintln!("skipping kernel test: {reason}");
            return;
        }
    };
}

/// Network namespaces and processes this test made; all removed on drop.
struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    processes: Vec<Child>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        Lab {
            prefix: format!("npt-{}-{tag}", std::process::id()),
            namespaces: Vec::new(),
            processes: Vec::new(),
            _dirs: Vec::new(),
        }
    }

    /// Create namespace `<prefix>-<suffix>` with `lo` up; returns its name.
    async fn netns(&mut self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.prefix);
        run(&Host::current(), "ip", &["netns", "add", &name]).await;
        self.namespaces.push(name.clone());
        run(&Host::netns(&name), "ip", &["link", "set", "lo", "up"]).await;
        name
    }

    /// Start `busybox httpd` on port 80 in `netns`, serving an index naming `who`.
    fn httpd(&mut self, netns: &str, who: &str) {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join("index.html"), format!("{who}\n")).expect("index");
        let child = Command::new("ip")
            .args([
                "netns", "exec", netns, "busybox", "httpd", "-f", "-p", "80", "-h",
            ])
            .arg(dir.path())
            .stdin(Stdio::null())
            .spawn()
            .expect("start busybox httpd");
        self.processes.push(child);
        self._dirs.push(dir);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

async fn run(host: &Host, program: &str, args: &[&str]) -> String {
    match host.run(program, args).await {
        Ok(out) => out,
        Err(e) => panic!("{e}"),
    }
}

/// `busybox wget` of `http://<ip>/` from `netns`: the body, or the error. Given up
/// (and killed) after 2 s: Debian's busybox 1.35 `wget -T` crashes with SIGSEGV.
async fn wget(netns: &str, ip: Ipv4Addr) -> Result<String, String> {
    let url = format!("http://{ip}/");
    let host = Host::netns(netns);
    let args = ["wget", "-q", "-O", "-", &url];
    let request = host.run("busybox", &args);
    match tokio::time::timeout(Duration::from_secs(2), request).await {
        Ok(Ok(body)) => Ok(body.trim().to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("{url}: no answer within 2 s")),
    }
}

/// Wait until `wget` from `netns` to `ip` answers (httpd starting up).
async fn until_answers(netns: &str, ip: Ipv4Addr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match wget(netns, ip).await {
            Ok(_) => return,
            Err(e) if Instant::now() > deadline => panic!("{ip} never answered: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn frontend(ip: Ipv4Addr, port: u16, proto: Proto, backends: &[Ipv4Addr]) -> Frontend {
    Frontend {
        ip,
        port,
        proto,
        backends: backends
            .iter()
            .map(|&b| SocketAddrV4::new(b, port))
            .collect(),
    }
}

fn ruleset(web_backends: &[Ipv4Addr], a: Ipv4Addr) -> Ruleset {
    Ruleset {
        table: TABLE.into(),
        instance_range: (Ipv4Addr::new(10, 250, 0, 0), 16),
        services: vec![
            ServiceRules {
                namespace: "default".into(),
                name: "web".into(),
                frontends: vec![frontend(SERVICE, 80, Proto::Tcp, web_backends)],
            },
            ServiceRules {
                namespace: "default".into(),
                name: "idle".into(),
                frontends: vec![frontend(NO_ENDPOINT, 80, Proto::Tcp, &[])],
            },
            ServiceRules {
                namespace: "default".into(),
                name: "self".into(),
                frontends: vec![
                    frontend(HAIRPIN, 80, Proto::Tcp, &[a]),
                    frontend(UDP_SERVICE, 5353, Proto::Udp, &[a]),
                ],
            },
        ],
    }
}

/// Count the answers of `n` requests from `netns` to `ip`, by body.
async fn tally(netns: &str, ip: Ipv4Addr, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for i in 0..n {
        match wget(netns, ip).await {
            Ok(body) => *counts.entry(body).or_insert(0) += 1,
            Err(e) => panic!("request {i} to {ip} failed: {e}"),
        }
    }
    counts
}

async fn udp_entries(node: &Host) -> String {
    run(
        node,
        "conntrack",
        &["-L", "-p", "udp", "--orig-dst", &UDP_SERVICE.to_string()],
    )
    .await
}

#[tokio::test]
async fn services_through_a_bridge() {
    skip_unless_able!();
    let mut lab = Lab::new("svc");
    let node_ns = lab.netns("node").await;
    let node = Host::netns(&node_ns);
    for args in [
        &["link", "add", "br0", "type", "bridge"][..],
        &["addr", "add", "10.250.0.1/24", "dev", "br0"],
        &["link", "set", "br0", "up"],
        // A default route into nothing (a veth whose peer answers no ARP): without
        // the reject chain, a connection to a service with no endpoint would be
        // forwarded here and hang.
        &[
            "link", "add", "void0", "type", "veth", "peer", "name", "void1",
        ],
        &["link", "set", "void1", "up"],
        &["link", "set", "void0", "up"],
        &["route", "add", "default", "dev", "void0"],
    ] {
        run(&node, "ip", args).await;
    }
    run(&node, "sysctl", &["-w", "net.ipv4.ip_forward=1"]).await;
    // New namespaces start with bridge netfilter on; turn it off so that
    // `ensure_bridge_netfilter` has something to do.
    run(
        &node,
        "sysctl",
        &["-w", "net.bridge.bridge-nf-call-iptables=0"],
    )
    .await;
    nft::ensure_bridge_netfilter(&node)
        .await
        .expect("bridge netfilter");
    assert_eq!(
        run(
            &node,
            "sysctl",
            &["-n", "net.bridge.bridge-nf-call-iptables"]
        )
        .await
        .trim(),
        "1"
    );

    let mut inst = Vec::new();
    for (i, who) in ["a", "b", "c"].into_iter().enumerate() {
        let ns = lab.netns(who).await;
        let addr = Ipv4Addr::new(10, 250, 0, 2 + u8::try_from(i).expect("small"));
        let port = format!("v{who}");
        run(
            &node,
            "ip",
            &[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        )
        .await;
        run(&node, "ip", &["link", "set", &port, "master", "br0", "up"]).await;
        let host = Host::netns(&ns);
        run(
            &host,
            "ip",
            &["addr", "add", &format!("{addr}/24"), "dev", "eth0"],
        )
        .await;
        run(&host, "ip", &["link", "set", "eth0", "up"]).await;
        run(
            &host,
            "ip",
            &["route", "add", "default", "via", "10.250.0.1"],
        )
        .await;
        inst.push((ns, addr));
    }
    let [(a_ns, a), (b_ns, b), (c_ns, _)] = <[_; 3]>::try_from(inst).expect("three");
    // An instance reaching itself through its service leaves and re-enters by the
    // same bridge port.
    run(
        &node,
        "ip",
        &["link", "set", "va", "type", "bridge_slave", "hairpin", "on"],
    )
    .await;
    lab.httpd(&a_ns, "instance-a");
    lab.httpd(&b_ns, "instance-b");
    until_answers(&c_ns, a).await;
    until_answers(&c_ns, b).await;

    let both = ruleset(&[a, b], a);
    let script = rules::render(&both);
    nft::check(&node, &script)
        .await
        .expect("nft -c accepts the table");
    nft::apply(&node, &script).await.expect("apply");
    assert_eq!(nft::tables(&node).await.expect("tables"), vec![TABLE]);

    // (1) Round robin from a client on the bridge.
    let counts = tally(&c_ns, SERVICE, 20).await;
    println!("round robin over a and b, 20 requests: {counts:?}");
    assert_eq!(
        counts.keys().collect::<Vec<_>>(),
        ["instance-a", "instance-b"]
    );
    // And from the node itself (the `output` nat hook).
    let from_node = tally(&node_ns, SERVICE, 4).await;
    println!("from the node, 4 requests: {from_node:?}");
    assert_eq!(from_node.values().sum::<usize>(), 4);

    // (2) No endpoint: refused at once, not a 2 s timeout.
    let started = Instant::now();
    let refused = wget(&c_ns, NO_ENDPOINT).await;
    let took = started.elapsed();
    println!("no endpoint: {refused:?} after {took:?}");
    assert!(refused.is_err(), "{refused:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");

    // (3) Hairpin: a reaches itself through its service.
    assert_eq!(wget(&a_ns, HAIRPIN).await.as_deref(), Ok("instance-a"));

    // UDP: a flow DNATed to a, forgotten when asked.
    let c_host = Host::netns(&c_ns);
    let send = format!("echo hi > /dev/udp/{UDP_SERVICE}/5353");
    let _ = c_host.run("bash", &["-c", &send]).await;
    if e2e::netns::on_path("conntrack") {
        assert!(
            udp_entries(&node).await.contains("src=10.250.0.2 dst="),
            "no UDP entry"
        );
        let backend = SocketAddrV4::new(a, 5353);
        nft::forget_udp_flows(&node, UDP_SERVICE, 5353, backend)
            .await
            .expect("forget");
        assert!(
            !udp_entries(&node).await.contains("src=10.250.0.2 dst="),
            "UDP entry left"
        );
        // Nothing left to delete is not an error.
        nft::forget_udp_flows(&node, UDP_SERVICE, 5353, backend)
            .await
            .expect("forget again");
    } else {
        eprintln!("`conntrack` is not installed: UDP flow deletion not tested");
    }

    // (4) b leaves: everything goes to a.
    let only_a = ruleset(&[a], a);
    nft::apply(&node, &rules::render(&only_a))
        .await
        .expect("re-apply");
    let counts = tally(&c_ns, SERVICE, 6).await;
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [("instance-a".to_string(), 6)]
    );

    // (5) A broken script changes nothing.
    let before = run(&node, "nft", &["list", "table", "ip", TABLE]).await;
    let broken = rules::render(&only_a).replace("jump services", "jump no-such-chain");
    let err = nft::apply(&node, &broken).await.expect_err("broken script");
    println!("broken script refused: {err}");
    assert_eq!(nft::tables(&node).await.expect("tables"), vec![TABLE]);
    assert_eq!(
        run(&node, "nft", &["list", "table", "ip", TABLE]).await,
        before
    );
    assert_eq!(wget(&c_ns, SERVICE).await.as_deref(), Ok("instance-a"));

    // Removing the table.
    nft::apply(&node, &rules::delete_script(TABLE))
        .await
        .expect("delete");
    assert_eq!(
        nft::tables(&node).await.expect("tables"),
        Vec::<String>::new()
    );
    nft::apply(&node, &rules::delete_script(TABLE))
        .await
        .expect("delete when absent");
}

#[tokio::test]
async fn golden_files_load_into_the_kernel() {
    skip_unless_able!();
    let mut lab = Lab::new("golden");
    let host = Host::netns(lab.netns("x").await);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/golden")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "nft"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no golden files in {}", dir.display());
    for file in files {
        let script = std::fs::read_to_string(&file).expect("golden file");
        // `-c` checks syntax; applying also checks what only the kernel does (name
        // lengths, hooks), and applying twice checks that the script replaces.
        nft::check(&host, &script)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for _ in 0..2 {
            nft::apply(&host, &script)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
        println!("{}: accepted", file.display());
    }
}

/// `nft list table` output in a form two equal tables share whatever the order the
/// kernel keeps chains and elements in: one line per rule (prefixed with its chain and
/// its place in it) and per map or set element (prefixed with its map or set), sorted.
fn normalized(listing: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut container = String::new();
    let mut place = 0;
    let mut elements: Option<String> = None;
    for line in listing
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "}")
    {
        if let Some(acc) = elements.as_mut() {
            acc.push_str(line);
        } else if let Some(rest) = line.strip_prefix("elements = {") {
            elements = Some(rest.to_string());
        } else if line.ends_with('{') {
            container = line.to_string();
            place = 0;
            continue;
        } else {
            place += 1;
            out.push(format!("{container} {place}: {line}"));
            continue;
        }
        if let Some(acc) = elements.take_if(|acc| acc.ends_with('}')) {
            let items = acc.trim_end_matches('}');
            out.extend(
                items
                    .split(',')
                    .map(str::trim)
                    .filter(|i| !i.is_empty())
                    .map(|i| format!("{container} element {i}")),
            );
        }
    }
    out.sort();
    out
}

async fn listing(host: &Host) -> Vec<String> {
    normalized(&run(host, "nft", &["list", "table", "ip", TABLE]).await)
}

fn service(name: &str, frontends: Vec<Frontend>) -> ServiceRules {
    ServiceRules {
        namespace: "default".into(),
        name: name.into(),
        frontends,
    }
}

#[tokio::test]
async fn partial_updates_reach_the_table_a_full_render_makes() {
    skip_unless_able!();
    let mut lab = Lab::new("upd");
    let updated = Host::netns(lab.netns("updated").await);
    let fresh = Host::netns(lab.netns("fresh").await);
    let [a, b, c] = [2, 3, 4].map(|i| Ipv4Addr::new(10, 250, 0, i));
    let extra = Ipv4Addr::new(10, 96, 0, 30);
    let dns = Ipv4Addr::new(10, 96, 0, 53);
    let start = ruleset(&[a, b], a);
    let with = |mut rules: Ruleset, f: &dyn Fn(&mut Vec<ServiceRules>)| {
        f(&mut rules.services);
        rules
    };
    let web =
        |backends: &[Ipv4Addr]| service("web", vec![frontend(SERVICE, 80, Proto::Tcp, backends)]);
    let steps: Vec<(&str, Ruleset)> = vec![
        (
            "a service is added",
            with(start.clone(), &|s| {
                s.push(service(
                    "extra",
                    vec![frontend(extra, 80, Proto::Tcp, &[c])],
                ));
            }),
        ),
        (
            "backends change",
            with(start.clone(), &|s| s[0] = web(&[a, c])),
        ),
        (
            "the last backend leaves",
            with(start.clone(), &|s| s[0] = web(&[])),
        ),
        (
            "a backend comes back",
            with(start.clone(), &|s| s[0] = web(&[b])),
        ),
        ("back to the start", start.clone()),
        (
            "one of two frontends of a service goes",
            with(start.clone(), &|s| s[2].frontends.truncate(1)),
        ),
        (
            "a frontend changes service",
            with(start.clone(), &|s| s[0].name = "web2".into()),
        ),
        (
            "two frontends share an IP",
            with(start.clone(), &|s| {
                s.push(service(
                    "dns",
                    vec![
                        frontend(dns, 53, Proto::Udp, &[c]),
                        frontend(dns, 53, Proto::Tcp, &[c]),
                    ],
                ));
            }),
        ),
        (
            "one of them goes",
            with(start.clone(), &|s| {
                s.push(service("dns", vec![frontend(dns, 53, Proto::Udp, &[c])]));
            }),
        ),
        ("every service goes", with(start.clone(), &|s| s.clear())),
        ("all come back", start.clone()),
    ];
    nft::apply(&updated, &rules::render(&start))
        .await
        .expect("first table");
    let mut prev = start;
    for (step, next) in steps {
        let update = rules::render_update(&prev, &next).expect("an update");
        nft::apply(&updated, &update)
            .await
            .unwrap_or_else(|e| panic!("{step}: {e}\n{update}"));
        nft::apply(&fresh, &rules::render(&next))
            .await
            .unwrap_or_else(|e| panic!("{step}: full render: {e}"));
        let (got, want) = (listing(&updated).await, listing(&fresh).await);
        assert_eq!(got, want, "{step}: the updated table differs\n{update}");
        println!("{step}: {} commands, same table", update.lines().count());
        prev = next;
    }
}

/// 2000 services of 3 endpoints each: how long one changed service takes to apply
/// in place, against replacing the table. Prints, asserts nothing about speed (speed
/// is `oakbench`'s business); ignored by default: `cargo test -p netplane --test
/// rules_kernel -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "takes seconds; a measurement"]
async fn partial_update_at_scale() {
    skip_unless_able!();
    let mut lab = Lab::new("scale");
    let host = Host::netns(lab.netns("x").await);
    let services = |changed: u8| -> Ruleset {
        let services = (0..2000u16)
            .map(|i| {
                let [hi, lo] = i.to_be_bytes();
                let backends: Vec<Ipv4Addr> = (0..3u8)
                    .map(|k| {
                        let k = if i == 0 { k + changed } else { k };
                        Ipv4Addr::new(10, 250 + k, hi, lo)
                    })
                    .collect();
                service(
                    &format!("svc-{i}"),
                    vec![frontend(
                        Ipv4Addr::new(10, 96, hi, lo),
                        80,
                        Proto::Tcp,
                        &backends,
                    )],
                )
            })
            .collect();
        Ruleset {
            table: TABLE.into(),
            instance_range: (Ipv4Addr::new(10, 250, 0, 0), 14),
            services,
        }
    };
    let (before, after) = (services(0), services(1));
    let timed = |script: String| {
        let host = host.clone();
        async move {
            let started = Instant::now();
            nft::apply(&host, &script).await.expect("apply");
            started.elapsed()
        }
    };
    let first = timed(rules::render(&before)).await;
    let full = timed(rules::render(&after)).await;
    let back = timed(rules::render(&before)).await;
    let update = rules::render_update(&before, &after).expect("an update");
    let commands = update.lines().count();
    let partial = timed(update).await;
    println!(
        "2000 services x 3 endpoints: first load {first:?}, full replacement {full:?} \
         and {back:?}, partial update of one service ({commands} commands) {partial:?}"
    );
}
