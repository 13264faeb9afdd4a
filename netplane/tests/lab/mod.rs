//! What the kernel tests share: namespaces with nodes, bridges and instances serving
//! HTTP, made by the test and removed (with every process it started) when it ends,
//! passed or not.

#![allow(dead_code)] // each test file uses a part

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netplane::overlay::Subnet;

/// Runs a command; panics with its output if it fails.
pub fn cmd(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Network namespaces and processes that go away on drop.
pub struct Lab {
    pub prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    pub dir: tempfile::TempDir,
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        Lab {
            prefix: format!("ovt-{}-{tag}", std::process::id()),
            namespaces: Vec::new(),
            children: Vec::new(),
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    /// Creates the namespace `<prefix>-<name>` with `lo` up; returns its name.
    pub fn netns(&mut self, name: &str) -> String {
        let ns = format!("{}-{name}", self.prefix);
        cmd("ip", &["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        cmd("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// A node: a namespace with forwarding on, `ul` at `underlay/24` (created by
    /// the caller), and bridge `br0` holding `gateway/prefix`.
    pub fn node(&mut self, name: &str, gateway: &str) -> String {
        let ns = self.netns(name);
        sh(&ns, "echo 1 > /proc/sys/net/ipv4/ip_forward");
        ip(&ns, "link add br0 type bridge");
        ip(&ns, &format!("addr add {gateway} dev br0"));
        ip(&ns, "link set br0 up");
        ns
    }

    /// An instance on `node`'s bridge at `address/prefix` with a default route via
    /// `gateway`, serving its own name at `/` and the client's address at
    /// `/cgi-bin/ip`.
    pub fn instance(&mut self, node: &str, name: &str, address: &str, gateway: &str) -> String {
        let ns = self.netns(name);
        let port = format!("v{name}");
        ip(
            node,
            &format!("link add {port} type veth peer name eth0 netns {ns}"),
        );
        ip(node, &format!("link set {port} master br0 up"));
        ip(&ns, &format!("addr add {address} dev eth0"));
        ip(&ns, "link set eth0 up");
        ip(&ns, &format!("route add default via {gateway}"));
        let root = self.dir.path().join(name);
        std::fs::create_dir_all(root.join("cgi-bin")).expect("web root");
        std::fs::write(root.join("index.html"), format!("{ns}\n")).expect("index");
        let cgi = root.join("cgi-bin/ip");
        let script = "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"$REMOTE_ADDR\"\n";
        std::fs::write(&cgi, script).expect("cgi");
        cmd("chmod", &["755", &cgi.to_string_lossy()]);
        let root = root.to_string_lossy().into_owned();
        let args = [
            "netns",
            "exec",
            &ns,
            "busybox",
            "httpd",
            "-f",
            "-p",
            "0.0.0.0:80",
            "-h",
            &root,
        ];
        let child = Command::new("ip")
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .expect("busybox httpd");
        self.children.push(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while wget(&ns, "127.0.0.1", "/").is_none() {
            assert!(Instant::now() < deadline, "httpd in {ns} did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        ns
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

pub fn ip(ns: &str, line: &str) -> String {
    let mut args = vec!["-n", ns];
    args.extend(line.split_whitespace());
    cmd("ip", &args)
}

pub fn sh(ns: &str, script: &str) -> String {
    cmd("ip", &["netns", "exec", ns, "sh", "-c", script])
}

/// `GET http://<address><path>` from namespace `ns`; `None` if it fails within 3 s.
/// (busybox 1.35's `wget -T` crashes, hence `timeout`.)
pub fn wget(ns: &str, address: &str, path: &str) -> Option<String> {
    let url = format!("http://{address}{path}");
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "timeout", "3", "busybox", "wget", "-q", "-O", "-", &url,
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn addr(s: &str) -> Ipv4Addr {
    s.parse().expect("test address")
}

pub fn subnet(s: &str) -> Subnet {
    s.parse().expect("test subnet")
}
