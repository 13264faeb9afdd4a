//! Hosts made of network namespaces, for tests of what crosses a network: each
//! [`Netns`] is one the test creates (and deletes on drop, with every process left in
//! it, also when the test fails); [`Underlay`] joins several with veth pairs to a bridge
//! in a namespace of its own, like machines on a LAN.
//!
//! The control plane stays on the machine's loopback: [`Netns::relay_loopback`] makes a
//! port of the host's loopback reachable at the same port of a namespace's loopback,
//! so traffic only ever goes to loopback or to addresses inside the test's namespaces.

use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Why tests that make namespaces cannot run here, if they cannot: they need root and
/// each of `tools` on the `PATH`.
pub fn unavailable(tools: &[&str]) -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(str::to_string))
        });
    if uid.as_deref() != Some("0") {
        return Some("not root".into());
    }
    tools
        .iter()
        .find(|tool| !on_path(tool))
        .map(|tool| format!("`{tool}` is not installed (scripts/deps.sh installs it)"))
}

/// Whether `program` is on the `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// A network namespace (`ip netns`) this test made; deleted on drop.
pub struct Netns {
    name: String,
}

fn must(what: &str, out: std::io::Result<Output>) -> Output {
    let out = out.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}

impl Netns {
    /// Create the namespace `name` (gone first if an earlier run left it) with its
    /// loopback up.
    pub fn create(name: &str) -> Netns {
        let _ = Command::new("ip").args(["netns", "delete", name]).output();
        must(
            &format!("ip netns add {name}"),
            Command::new("ip").args(["netns", "add", name]).output(),
        );
        let ns = Netns {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `program` to be run inside the namespace (only the network namespace changes:
    /// files, mounts and `/run/netns` are the machine's).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Run `ip ARGS…` in the namespace; panics on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = must(
            &format!("ip -n {} {}", self.name, args.join(" ")),
            Command::new("ip")
                .arg("-n")
                .arg(&self.name)
                .args(args)
                .output(),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run `program ARGS…` in the namespace and return its output, whatever it is.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {program} in {}: {e}", self.name))
    }

    /// A veth pair: `port` in this namespace, its other end `eth0` in `peer`.
    pub fn veth_to(&self, port: &str, peer: &Netns) {
        self.ip(&[
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            peer.name(),
        ]);
    }

    /// Set a sysctl in the namespace (e.g. `net.ipv4.ip_forward=1`).
    pub fn sysctl(&self, setting: &str) {
        must(
            &format!("sysctl -w {setting} in {}", self.name),
            self.command("sysctl").args(["-qw", setting]).output(),
        );
    }

    /// Run `f` on a thread of its own that has entered this namespace, and return what
    /// it returns. A socket belongs to the namespace it was made in, so one made by
    /// `f` (a listener, a connected stream) stays in this namespace whichever thread
    /// uses it afterwards.
    pub fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        within(&self.name, f)
    }

    /// Forward connections to `127.0.0.1:port` inside this namespace to the same port
    /// of the machine's loopback, until the returned relay is dropped.
    pub fn relay_loopback(&self, port: u16) -> Relay {
        let listener = self
            .within(move || TcpListener::bind(("127.0.0.1", port)).expect("bind in the namespace"));
        listener.set_nonblocking(true).expect("non-blocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((inner, _)) => {
                        let _ = inner.set_nonblocking(false);
                        if let Ok(outer) = TcpStream::connect(("127.0.0.1", port)) {
                            pipe(inner, outer);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Relay { stop }
    }

    /// Kill every process still in the namespace.
    pub fn kill_all(&self) {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for pid in out.split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
}

/// Make the namespace `ip netns` calls `name` a NAT router: what leaves by `oif` is
/// masqueraded (nftables table `ip nat`), so nothing beyond it can reach what is behind.
pub fn masquerade(name: &str, oif: &str) {
    let rules = format!(
        "add table ip nat; add chain ip nat post {{ type nat hook postrouting priority 100; }}; \
         add rule ip nat post oifname \"{oif}\" masquerade"
    );
    must(
        &format!("masquerading out of {oif} in {name}"),
        Command::new("ip")
            .args(["netns", "exec", name, "nft", &rules])
            .output(),
    );
}

/// [`Netns::within`] for the namespace `ip netns` calls `name`. Threads `f` starts
/// are in the namespace too.
pub fn within<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).expect("open the namespace");
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("enter the namespace");
        f()
    })
    .join()
    .expect("the thread in the namespace")
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_all();
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
    }
}

/// Copy bytes both ways between two connections, each way on a thread of its own.
fn pipe(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let one_way = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    };
    one_way(a, b2);
    one_way(b, a2);
}

/// A relay made by [`Netns::relay_loopback`]; stops accepting when dropped.
pub struct Relay {
    stop: Arc<AtomicBool>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Namespaces joined by veth pairs to one bridge, like machines on a LAN: the bridge
/// lives in a namespace of its own; each host gets `eth0` with its address.
pub struct Underlay {
    /// The namespace holding the bridge.
    pub wan: Netns,
    prefix: String,
}

impl Underlay {
    /// A LAN `prefix.0/24` (e.g. `192.168.77`) in the namespace `name`, whose bridge is
    /// its router at `prefix.1` (the hosts' default route, as machines have one).
    pub fn new(name: &str, prefix: &str) -> Underlay {
        let wan = Netns::create(name);
        wan.ip(&["link", "add", "lan", "type", "bridge"]);
        wan.ip(&["addr", "add", &format!("{prefix}.1/24"), "dev", "lan"]);
        wan.ip(&["link", "set", "lan", "up"]);
        Underlay {
            wan,
            prefix: prefix.to_string(),
        }
    }

    /// Attach `host` as `prefix.<last>` with `eth0` and its default route via the
    /// router; returns the address.
    pub fn attach(&self, host: &Netns, last: u8) -> String {
        let outside = format!("v{}", last);
        let address = format!("{}.{last}", self.prefix);
        self.wan.veth_to(&outside, host);
        self.wan
            .ip(&["link", "set", &outside, "master", "lan", "up"]);
        host.ip(&["addr", "add", &format!("{address}/24"), "dev", "eth0"]);
        host.ip(&["link", "set", "eth0", "up"]);
        host.ip(&[
            "route",
            "add",
            "default",
            "via",
            &format!("{}.1", self.prefix),
        ]);
        address
    }
}
