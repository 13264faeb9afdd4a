//! Real container infrastructure for tests: a private `containerd` (own root, state and
//! socket in a temporary directory), a `docker-registry` on a free loopback port, and
//! small OCI images built from `busybox-static` with `umoci` and pushed with `skopeo`.
//! Nothing is installed here: `.ci/run` (scripts/deps.sh) installs the packages.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{free_port, wait_for_port, Process};

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/deps.sh installs it)"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A containerd of the test's own. On drop, every task in every namespace is killed and
/// deleted before containerd itself is stopped, so no container outlives the test.
pub struct Containerd {
    /// Its gRPC socket, for `--containerd-socket`.
    pub socket: PathBuf,
    dir: tempfile::TempDir,
    process: Process,
}

impl Containerd {
    /// Start containerd (without its CRI plugin) in a new temporary directory under
    /// `/tmp` and wait for its socket.
    pub fn start() -> Containerd {
        remove_empty_bridges();
        let dir = tempfile::Builder::new()
            .prefix("ctd")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let socket = dir.path().join("c.sock");
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{sock}\"\n",
            root = dir.path().join("root").display(),
            state = dir.path().join("state").display(),
            sock = socket.display()
        );
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).expect("write containerd config");
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(&config_path);
        let process = Process::spawn("containerd", cmd, Some(&dir.path().join("containerd.log")));
        let start = std::time::Instant::now();
        while !socket.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "containerd did not create {}: {}",
                socket.display(),
                std::fs::read_to_string(dir.path().join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Containerd {
            socket,
            dir,
            process,
        }
    }

    /// `ctr -a SOCKET -n NAMESPACE ARGS…`, its stdout.
    pub fn ctr(&self, namespace: &str, args: &[&str]) -> String {
        let socket = self.socket.display().to_string();
        let mut all = vec!["-a", &socket, "-n", namespace];
        all.extend_from_slice(args);
        run("ctr", &all)
    }

    /// Containers in `namespace` (ids).
    pub fn containers(&self, namespace: &str) -> Vec<String> {
        self.ctr(namespace, &["containers", "ls", "-q"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Tasks in `namespace`: id → (pid, status).
    pub fn tasks(&self, namespace: &str) -> std::collections::BTreeMap<String, (u32, String)> {
        self.ctr(namespace, &["tasks", "ls"])
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let id = f.next()?.to_string();
                let pid = f.next()?.parse().ok()?;
                Some((id, (pid, f.next()?.to_string())))
            })
            .collect()
    }

    /// The temporary directory holding its root, state, socket and log.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let socket = self.socket.display().to_string();
        let ctr = |args: &[&str]| {
            Command::new("ctr")
                .args(["-a", &socket])
                .args(args)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        for ns in ctr(&["namespaces", "ls", "-q"]).lines() {
            for id in ctr(&["-n", ns, "containers", "ls", "-q"]).lines() {
                ctr(&["-n", ns, "tasks", "kill", "-s", "SIGKILL", id]);
                ctr(&["-n", ns, "tasks", "delete", "-f", id]);
                ctr(&["-n", ns, "containers", "delete", id]);
                let _ = Command::new("ip")
                    .args(["netns", "delete", &format!("oak-{id}")])
                    .output();
                let _ = std::fs::remove_dir_all(format!("/etc/netns/oak-{id}"));
            }
        }
        self.process.kill9();
        // Shims outlive containerd; theirs carry this socket on the command line.
        for pid in crate::processes_matching(&socket).keys() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        // Unmount what is left under the root before the directory goes.
        let root = self.dir.path().display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&root))
            .collect();
        under.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in under {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        remove_empty_bridges();
        remove_node_tables();
    }
}

/// Delete the agents' node bridges (`oak…`) that no longer have a container attached: on
/// one machine, a stale bridge of an earlier test would route the same subnet.
pub fn remove_empty_bridges() {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "type", "bridge"])
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for bridge in text
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .filter(|b| b.starts_with("oak"))
    {
        let ports = Command::new("ip")
            .args(["-o", "link", "show", "master", bridge])
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default();
        if ports.is_empty() {
            let _ = Command::new("ip").args(["link", "delete", bridge]).status();
        }
    }
}

/// Delete the agents' nftables tables (`oakestra-<node>`) of this network namespace.
pub fn remove_node_tables() {
    let listed = Command::new("nft")
        .args(["list", "tables", "ip"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for table in listed
        .lines()
        .filter_map(|l| l.strip_prefix("table ip "))
        .filter(|t| t.starts_with("oakestra-"))
    {
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", table])
            .status();
    }
}

/// Container tests share the machine's network (bridges, routes): one at a time.
static EXCLUSIVE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Wait for the machine's container networking to be this test's alone.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    EXCLUSIVE.lock().await
}

/// A `docker-registry` on a free loopback port, storing into a temporary directory.
pub struct Registry {
    /// `127.0.0.1:PORT`, the host part of its image references.
    pub host: String,
    _dir: tempfile::TempDir,
    _process: Process,
}

impl Registry {
    /// Start the registry and wait until it listens.
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        let path = dir.path().join("config.yml");
        std::fs::write(&path, config).expect("write registry config");
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(&path);
        let process = Process::spawn(
            "docker-registry",
            cmd,
            Some(&dir.path().join("registry.log")),
        );
        wait_for_port(port, "docker-registry", Duration::from_secs(30));
        Registry {
            host: format!("127.0.0.1:{port}"),
            _dir: dir,
            _process: process,
        }
    }

    /// Build an image of busybox-static whose default command is `cmd`, push it as
    /// `NAME:TAG` and return its reference. `marker` is written to `/marker` in the
    /// image, so two tags can be told apart.
    pub fn push_busybox(&self, name: &str, tag: &str, cmd: &[&str], marker: &str) -> String {
        let work = tempfile::tempdir().expect("temp dir");
        let layout = work.path().join("layout");
        let image = format!("{}:{tag}", layout.display());
        let bundle = work.path().join("bundle");
        run(
            "umoci",
            &["init", "--layout", &layout.display().to_string()],
        );
        run("umoci", &["new", "--image", &image]);
        run(
            "umoci",
            &["unpack", "--image", &image, &bundle.display().to_string()],
        );
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).expect("mkdir bin");
        std::fs::copy(busybox(), rootfs.join("bin/busybox")).expect("copy busybox");
        for applet in [
            "sh", "httpd", "sleep", "echo", "cat", "wget", "ls", "hostname", "ip", "nslookup",
        ] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))
                .expect("symlink applet");
        }
        std::fs::write(rootfs.join("marker"), marker).expect("write marker");
        run(
            "umoci",
            &["repack", "--image", &image, &bundle.display().to_string()],
        );
        let mut config = vec!["config", "--image", &image];
        let cmd_args: Vec<String> = cmd.iter().map(|c| format!("--config.cmd={c}")).collect();
        config.extend(cmd_args.iter().map(String::as_str));
        run("umoci", &config);
        let reference = format!("{}/{name}:{tag}", self.host);
        run(
            "skopeo",
            &[
                "copy",
                "--dest-tls-verify=false",
                &format!("oci:{image}"),
                &format!("docker://{reference}"),
            ],
        );
        reference
    }
}

impl Registry {
    /// A web server image tagged `web:TAG`: it writes `<instance> <marker>` (its
    /// Instance's name and `TAG`) as its index page, says so on stdout and serves port 80.
    pub fn push_web(&self, tag: &str) -> String {
        self.push_busybox(
            "web",
            tag,
            &[
                "/bin/sh",
                "-c",
                "echo \"$OAKESTRA_INSTANCE $(cat /marker)\" > /index.html; echo serving $OAKESTRA_INSTANCE; exec httpd -f -p 80 -h /",
            ],
            tag,
        )
    }
}

/// The static busybox of Debian's `busybox-static` (it runs in an empty image).
fn busybox() -> PathBuf {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("no busybox binary: install busybox-static (scripts/deps.sh)")
}
