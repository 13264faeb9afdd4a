//! Test harness for tests over real processes: free ports, an `etcd` server owned by
//! the test (or a cluster of members to kill and restart, [`EtcdCluster`]), [`eventually`] to wait on observable state instead of sleeping, and
//! [`stays`] to check that something holds for a while instead of sleeping and looking
//! once.
//!
//! Every tier serves TLS and admits nothing without a credential, as in production:
//! the harness reads what each tier writes in its data directory (its admin
//! kubeconfig, its join token) and hands it to the next tier and to the clients
//! ([`tier_client`], [`oakctl`]).
//!
//! Every process started here is killed when its guard is dropped, also when a test
//! panics. Each `oakestra` process logs to a file of its own in the test's temporary
//! directory, and a failing test prints the end of each. The end-to-end scenarios
//! themselves are in `tests/`.
//!
//! Modules:
//! - [`containers`]: a private `containerd`, a local registry and busybox images.
//! - [`netns`]: machines made of network namespaces on a LAN of veth pairs, reaching
//!   the control plane on the machine's loopback through relays.

pub mod containers;
pub mod netns;

use std::fmt::Debug;
use std::future::Future;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The API server's count of open watches (`oakestra_apiserver_watchers`) in the text
/// of its `/metrics`.
pub fn open_watches(metrics: &str) -> i64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("oakestra_apiserver_watchers "))
        .expect("the watchers metric")
        .trim()
        .parse()
        .expect("a number of watchers")
}

/// Inputs per fuzz target in a bounded run (`OAKESTRA_FUZZ_ITERATIONS`, default 500):
/// `cargo test` runs the default, a longer run sets more.
pub fn fuzz_iterations() -> usize {
    std::env::var("OAKESTRA_FUZZ_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(500)
}

/// A TCP port on 127.0.0.1 that was free a moment ago, from the 10,000 ports below the
/// kernel's ephemeral range (`ip_local_port_range`, 32768–60999 by default). A port the
/// kernel picks (`bind :0`) is in that range, where any outgoing connection's source
/// port can take it before the server it is for binds it (CI saw a cluster fail so).
/// Each call of one process gets another port.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    const SPAN: u32 = 10_000;
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    if low > SPAN + 1024 {
        let offset = std::process::id().wrapping_mul(7919) % SPAN;
        for _ in 0..SPAN {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let port = (low - SPAN + (offset + n) % SPAN) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
        .port()
}

/// Wait until something accepts TCP connections on `port`.
pub fn wait_for_port(port: u16, what: &str, deadline: Duration) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < deadline,
            "{what} did not listen on port {port} within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How often [`eventually`] polls its check.
const EVENTUALLY_PACE: Duration = Duration::from_millis(25);

/// How often [`stays`] polls its check: each poll of the tests' checks lists processes
/// or runs `ctr`, so a little less often than [`eventually`].
const STAYS_PACE: Duration = Duration::from_millis(50);

/// Poll `check` until it returns `Some`, failing with `what` after `deadline`; returns
/// what `check` returned.
///
/// The clock is tokio's ([`tokio::time::Instant`]), so on a runtime with paused time the
/// deadline passes with the paused clock.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(EVENTUALLY_PACE).await;
    }
}

/// The Instances of `service` that are not being deleted, as `api` lists them (none
/// when it cannot be reached).
pub async fn instances_of(api: &client::Api<crds::Instance>, service: &str) -> Vec<crds::Instance> {
    let (items, _) = api
        .list(&client::ListParams::default())
        .await
        .unwrap_or_default();
    items
        .into_iter()
        .filter(|i| i.spec.service == service && i.metadata.deletion_timestamp.is_none())
        .collect()
}

/// Wait up to `deadline` until exactly `n` Instances of `service` exist and all are
/// `Running`; returns them.
pub async fn running_instances(
    api: &client::Api<crds::Instance>,
    service: &str,
    n: usize,
    deadline: Duration,
) -> Vec<crds::Instance> {
    let what = format!("{n} Running instances of {service}");
    eventually(&what, deadline, || async {
        let items = instances_of(api, service).await;
        let running = items.iter().all(|i| {
            i.status
                .as_ref()
                .is_some_and(|s| s.phase == crds::Phase::Running)
        });
        (items.len() == n && running).then_some(items)
    })
    .await
}

/// Check that `what` holds for the whole of `duration`: poll `check` from now until
/// `duration` has passed (every 50 ms, the last poll at or after its end). `check`
/// returns `Ok(value)` while it holds and `Err(observed)` once it does not; the first
/// `Err` fails the test at once, naming `what` and the observed value. Returns the value
/// of the last poll.
///
/// This is the assertion "nothing changes", which a fixed sleep followed by one look
/// would only sample at its end. The clock is tokio's, as in [`eventually`]. [`equals`]
/// makes the usual check.
pub async fn stays<T, E, F, Fut>(what: &str, duration: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Debug,
{
    let start = tokio::time::Instant::now();
    loop {
        let value = match check().await {
            Ok(value) => value,
            Err(observed) => panic!(
                "{what} stopped holding after {:?} of {duration:?}: observed {observed:?}",
                start.elapsed()
            ),
        };
        let elapsed = start.elapsed();
        if elapsed >= duration {
            return value;
        }
        tokio::time::sleep(STAYS_PACE.min(duration - elapsed)).await;
    }
}

/// A check for [`stays`]: `Ok(observed)` when it equals `expected`, else `Err(observed)`.
pub fn equals<T: PartialEq>(expected: &T, observed: T) -> Result<T, T> {
    if observed == *expected {
        Ok(observed)
    } else {
        Err(observed)
    }
}

/// A child process killed (SIGKILL) on drop.
pub struct Process {
    child: Option<Child>,
    name: String,
}

impl Process {
    /// Spawn `command`, with its output going to `log` (a file) when given.
    pub fn spawn(name: &str, command: Command, log: Option<&Path>) -> Process {
        let file = log.map(|log| std::fs::File::create(log).expect("create log file"));
        Self::start(name, command, file)
    }

    /// Spawn `command` with its output appended to `log`.
    pub fn spawn_appending(name: &str, command: Command, log: &Path) -> Process {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open log file");
        Self::start(name, command, Some(file))
    }

    /// Start `command` with stdout and stderr going to `output` (or nowhere).
    fn start(name: &str, mut command: Command, output: Option<std::fs::File>) -> Process {
        match output {
            Some(file) => command
                .stdout(file.try_clone().expect("clone log file"))
                .stderr(file),
            None => command.stdout(Stdio::null()).stderr(Stdio::null()),
        };
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Process {
            child: Some(child),
            name: name.to_string(),
        }
    }

    /// `kill -9` the process and wait for it to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id, unless it has been killed.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The name it was started with, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A real `etcd` (Debian's `etcd-server`) on free loopback ports, with its data in a
/// temporary directory.
pub struct Etcd {
    /// The port clients connect to (it changes with [`crash_and_restart`](Self::crash_and_restart)).
    pub client_port: u16,
    process: Process,
    data: tempfile::TempDir,
}

impl Etcd {
    /// Start etcd on fresh data and wait until it accepts connections.
    pub fn start() -> Etcd {
        let data = tempfile::tempdir().expect("tempdir");
        let (process, client_port) = Self::launch(data.path());
        Etcd {
            client_port,
            process,
            data,
        }
    }

    fn launch(dir: &Path) -> (Process, u16) {
        let client = free_port();
        let peer = free_port();
        let cmd = etcd_command(
            "test",
            &dir.join("etcd"),
            client,
            peer,
            &format!("test=http://127.0.0.1:{peer}"),
        );
        let process = Process::spawn("etcd", cmd, Some(&dir.join("etcd.log")));
        wait_for_port(client, "etcd", Duration::from_secs(30));
        (process, client)
    }

    /// The client URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// `kill -9` etcd and start it again on the same data (new ports).
    pub fn crash_and_restart(&mut self) {
        self.process.kill9();
        let (process, port) = Self::launch(self.data.path());
        self.process = process;
        self.client_port = port;
    }

    /// The temporary directory holding etcd's data and log.
    pub fn data_dir(&self) -> PathBuf {
        self.data.path().to_path_buf()
    }
}

/// The command that runs etcd member `name` on `data`, serving clients on loopback port
/// `client` and its peers on `peer`, in the cluster `initial_cluster`
/// (`NAME=http://127.0.0.1:PEER,…`).
pub fn etcd_command(
    name: &str,
    data: &Path,
    client: u16,
    peer: u16,
    initial_cluster: &str,
) -> Command {
    let mut cmd = Command::new(etcd_binary());
    cmd.arg(format!("--name={name}"))
        .arg(format!("--data-dir={}", data.display()))
        .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!(
            "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
        ))
        .arg(format!("--initial-cluster={initial_cluster}"));
    cmd
}

/// Path of the etcd server binary (`ETCD_BIN` overrides).
pub fn etcd_binary() -> String {
    std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".to_string())
}

/// A cluster of `n` real `etcd` members (Debian's `etcd-server`), each on free loopback
/// client and peer ports with its own data directory and log (`m<i>` and `m<i>.log` in
/// a temporary directory). Members can be killed and restarted one by one; every one
/// still running is killed when the cluster is dropped, and a failing test prints the
/// end of each member's log.
pub struct EtcdCluster {
    members: Vec<EtcdMember>,
    /// `--initial-cluster`: every member's name and peer URL.
    initial_cluster: String,
    /// `--initial-cluster-token`, unique to this cluster.
    token: String,
    dir: tempfile::TempDir,
}

/// One member of an [`EtcdCluster`]: its ports stay the same across restarts.
struct EtcdMember {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// `None` while killed.
    process: Option<Process>,
}

/// What `etcdctl endpoint status` says of one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdMemberStatus {
    /// The member's client URL.
    pub endpoint: String,
    /// Its member id (hex).
    pub id: String,
    /// Whether it is the leader.
    pub leader: bool,
    /// The raft term it is in.
    pub term: u64,
}

impl EtcdCluster {
    /// Start `n` members as one new cluster and wait (up to 60 s) until every member
    /// serves and the cluster has a leader.
    pub fn start(n: usize) -> EtcdCluster {
        assert!(n > 0, "a cluster has at least one member");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ports = std::collections::BTreeSet::new();
        while ports.len() < 2 * n {
            ports.insert(free_port());
        }
        let mut ports = ports.into_iter();
        let members: Vec<EtcdMember> = (0..n)
            .map(|i| EtcdMember {
                name: format!("m{i}"),
                client_port: ports.next().expect("a port"),
                peer_port: ports.next().expect("a port"),
                process: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!(
            "oakestra-e2e-{}-{}",
            std::process::id(),
            members[0].client_port
        );
        let mut cluster = EtcdCluster {
            members,
            initial_cluster,
            token,
            dir,
        };
        // Start every member before waiting for any: a member does not serve clients
        // until the cluster it was told of has a quorum.
        for i in 0..n {
            cluster.launch(i);
        }
        for m in &cluster.members {
            wait_for_port(m.client_port, "etcd member", Duration::from_secs(30));
        }
        cluster.wait_healthy(Duration::from_secs(60));
        cluster
    }

    /// Start member `i` on its data directory and ports, its output appended to its log.
    fn launch(&mut self, i: usize) {
        let m = &self.members[i];
        let data = self.dir.path().join(&m.name);
        let (client, peer) = (m.client_port, m.peer_port);
        let mut cmd = etcd_command(&m.name, &data, client, peer, &self.initial_cluster);
        // Ignored once the data directory exists, as on a restart.
        cmd.arg("--initial-cluster-state=new")
            .arg(format!("--initial-cluster-token={}", self.token));
        let log = self.dir.path().join(format!("{}.log", m.name));
        let process = Process::spawn_appending(&format!("etcd {}", m.name), cmd, &log);
        self.members[i].process = Some(process);
    }

    /// Number of members, running or not.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no members (never: [`start`](Self::start) needs one).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Every member's client URL, comma-joined, as `--store etcd:URL,URL,URL` takes them.
    pub fn urls(&self) -> String {
        (0..self.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Member `i`'s client URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    /// The indices of the members that run (not killed).
    pub fn running(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| self.members[i].process.is_some())
            .collect()
    }

    /// `kill -9` member `i` and wait for it to be gone; its data stays.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut process) = self.members[i].process.take() {
            process.kill9();
        }
    }

    /// Start member `i` again (killing it first if it runs) on the same data directory
    /// and the same ports, so the other members and every client find it again; waits
    /// until it accepts connections, not until it has caught up (see
    /// [`wait_healthy`](Self::wait_healthy)).
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.launch(i);
        let port = self.members[i].client_port;
        wait_for_port(port, "restarted etcd member", Duration::from_secs(30));
    }

    /// `etcdctl` (`ETCDCTL_BIN` overrides) on the running members, with short timeouts
    /// (with none running it would fall back to its default endpoint: check first).
    pub fn etcdctl(&self) -> Command {
        let endpoints: Vec<String> = self.running().into_iter().map(|i| self.url(i)).collect();
        let mut cmd = Command::new(etcdctl_binary());
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .arg("--dial-timeout=2s")
            .arg("--command-timeout=3s");
        cmd
    }

    /// Whether every running member answers a quorum read (`etcdctl endpoint health`);
    /// false when none runs.
    pub fn healthy(&self) -> bool {
        !self.running().is_empty()
            && self
                .etcdctl()
                .args(["endpoint", "health"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    }

    /// What each running member says of itself (`etcdctl endpoint status`); a member
    /// that does not answer is left out.
    pub fn status(&self) -> Vec<EtcdMemberStatus> {
        if self.running().is_empty() {
            return Vec::new();
        }
        let output = self
            .etcdctl()
            .args(["endpoint", "status", "--write-out=simple"])
            .stderr(Stdio::null())
            .output()
            .expect("running etcdctl");
        // ENDPOINT, ID, VERSION, DB SIZE, IS LEADER, IS LEARNER, RAFT TERM, …
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(", ").collect();
                Some(EtcdMemberStatus {
                    endpoint: fields.first()?.to_string(),
                    id: fields.get(1)?.to_string(),
                    leader: *fields.get(4)? == "true",
                    term: fields.get(6)?.parse().ok()?,
                })
            })
            .collect()
    }

    /// The index of the member that leads, if a running one says it does.
    pub fn leader(&self) -> Option<usize> {
        let leader = self.status().into_iter().find(|s| s.leader)?;
        (0..self.len()).find(|&i| self.url(i) == leader.endpoint)
    }

    /// Wait until every running member answers a quorum read and one of them leads;
    /// panics after `deadline`.
    pub fn wait_healthy(&self, deadline: Duration) {
        let start = Instant::now();
        while !(self.healthy() && self.leader().is_some()) {
            assert!(
                start.elapsed() < deadline,
                "etcd members {:?} not healthy with a leader within {deadline:?}",
                self.running()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The temporary directory holding every member's data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A failing test shows the end of each member's log
/// (`OAKESTRA_E2E_LOG_LINES` lines, 40 unless set).
impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.len() {
            self.kill(i);
        }
        if !std::thread::panicking() {
            return;
        }
        for m in &self.members {
            let path = self.dir.path().join(format!("{}.log", m.name));
            print_log_tail(&format!("etcd member {}", m.name), &path);
        }
    }
}

/// Path of the `etcdctl` binary (`ETCDCTL_BIN` overrides).
pub fn etcdctl_binary() -> String {
    std::env::var("ETCDCTL_BIN").unwrap_or_else(|_| "etcdctl".to_string())
}

/// Variables `cargo test` sets for the test it runs, which the build below must not see.
const TEST_ONLY_CARGO_VARS: &[&str] = &[
    "CARGO_MANIFEST_",
    "CARGO_PKG_",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
];

/// Path of a binary of this workspace (`oakestra`, `oakctl`), built on first use so
/// the tests always run the current code.
///
/// The build runs without the variables `cargo test` set for the test: build scripts
/// that watch one (`ring`'s watches `CARGO_MANIFEST_DIR`) would otherwise run again, and
/// everything after them be rebuilt, each time a plain `cargo build` and a test take
/// turns.
pub fn binary(name: &str) -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    let root = workspace_root();
    BUILD.call_once(|| {
        let mut build = Command::new(env!("CARGO"));
        for (var, _) in std::env::vars_os() {
            let test_only = var
                .to_str()
                .is_some_and(|v| TEST_ONLY_CARGO_VARS.iter().any(|p| v.starts_with(p)));
            if test_only {
                build.env_remove(var);
            }
        }
        let status = build
            .args(["build", "--quiet", "-p", "oakestra", "-p", "oakctl"])
            .current_dir(&root)
            .status()
            .expect("running cargo build");
        assert!(
            status.success(),
            "building the oakestra and oakctl binaries failed"
        );
    });
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target.join("debug").join(name)
}

/// The Python of the virtual environment `scripts/deps.sh` makes (the Kubernetes
/// client, Selenium): `OAKESTRA_PYTHON_ENV`, else `~/.cache/oakestra/python`. Fails the
/// test, naming the script, when it is not there.
pub fn python() -> PathBuf {
    let env = deps_env("OAKESTRA_PYTHON_ENV", "python").expect("HOME or XDG_CACHE_HOME is set");
    let python = env.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/deps.sh makes that Python environment",
        python.display()
    );
    python
}

/// Where `scripts/deps.sh` makes the virtual environment `name`: the variable
/// `override_var` when set, else `$XDG_CACHE_HOME/oakestra/NAME` (`~/.cache/…`); `None`
/// without a home.
pub fn deps_env(override_var: &str, name: &str) -> Option<PathBuf> {
    std::env::var_os(override_var)
        .map(PathBuf::from)
        .or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            Some(cache.join("oakestra").join(name))
        })
}

/// The workspace root (where `manifests/` is).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// An `oakestra` process (any role), restartable with the same arguments.
pub struct Oakestra {
    /// The port it serves on, if it serves.
    pub port: Option<u16>,
    /// The `oakestra` binary it runs.
    pub binary: PathBuf,
    /// The network namespace it runs in (`None`: the machine's).
    netns: Option<String>,
    args: Vec<String>,
    process: Process,
    log: PathBuf,
}

impl Oakestra {
    /// Start `oakestra ARGS…`; with `port`, wait until it listens there. Output is
    /// appended to `log_dir/oakestra-<name>.log`.
    pub fn start(name: &str, args: &[String], port: Option<u16>, log_dir: &Path) -> Oakestra {
        Self::start_binary(&binary("oakestra"), name, args, port, log_dir)
    }

    /// Like [`start`](Self::start), with a given `oakestra` binary (e.g. a release build).
    pub fn start_binary(
        binary: &Path,
        name: &str,
        args: &[String],
        port: Option<u16>,
        log_dir: &Path,
    ) -> Oakestra {
        let log = log_dir.join(format!("oakestra-{name}.log"));
        let process = Self::launch(binary, None, args, port, &log);
        Oakestra {
            port,
            binary: binary.to_path_buf(),
            netns: None,
            args: args.to_vec(),
            process,
            log,
        }
    }

    /// Start `oakestra ARGS…` (a role that serves no port, e.g. a worker) inside the
    /// network namespace `netns` ([`netns::Netns`]).
    pub fn start_in(netns: &netns::Netns, name: &str, args: &[String], log_dir: &Path) -> Oakestra {
        Self::start_binary_in(&binary("oakestra"), netns, name, args, log_dir)
    }

    /// [`Oakestra::start_in`] with the given `oakestra` binary.
    pub fn start_binary_in(
        binary: &Path,
        netns: &netns::Netns,
        name: &str,
        args: &[String],
        log_dir: &Path,
    ) -> Oakestra {
        let log = log_dir.join(format!("oakestra-{name}.log"));
        let process = Self::launch(binary, Some(netns.name()), args, None, &log);
        Oakestra {
            port: None,
            binary: binary.to_path_buf(),
            netns: Some(netns.name().to_string()),
            args: args.to_vec(),
            process,
            log,
        }
    }

    fn launch(
        binary: &Path,
        netns: Option<&str>,
        args: &[String],
        port: Option<u16>,
        log: &Path,
    ) -> Process {
        let mut cmd = match netns {
            // nsenter enters the namespace and executes the binary: same process.
            Some(ns) => {
                let mut cmd = Command::new("nsenter");
                cmd.arg(format!("--net=/run/netns/{ns}"))
                    .arg("--")
                    .arg(binary);
                cmd
            }
            None => Command::new(binary),
        };
        cmd.args(args);
        // Append, so a restart keeps what the first run logged.
        let process = Process::spawn_appending("oakestra", cmd, log);
        if let Some(port) = port {
            wait_for_port(
                port,
                &format!("oakestra {}", args.join(" ")),
                Duration::from_secs(30),
            );
        }
        process
    }

    /// Its URL, e.g. `https://127.0.0.1:41234`; panics if it serves no port.
    pub fn url(&self) -> String {
        format!(
            "https://127.0.0.1:{}",
            self.port.expect("this process serves no port")
        )
    }

    /// The process id, unless it has been killed.
    pub fn pid(&self) -> Option<u32> {
        self.process.id()
    }

    /// `kill -9` the process.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// Start it again with the same arguments.
    pub fn restart(&mut self) {
        self.process.kill9();
        self.process = Self::launch(
            &self.binary,
            self.netns.as_deref(),
            &self.args,
            self.port,
            &self.log,
        );
    }

    /// What it logged so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A failing test shows the end of what each of its `oakestra` processes logged
/// (`OAKESTRA_E2E_LOG_LINES` lines, 40 unless set), since the log files go with the
/// test's temporary directory.
impl Drop for Oakestra {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        print_log_tail("oakestra", &self.log);
    }
}

/// Print the end of the log of `what` at `path` (`OAKESTRA_E2E_LOG_LINES` lines, 40
/// unless set), for a failing test.
fn print_log_tail(what: &str, path: &Path) {
    let lines: usize = std::env::var("OAKESTRA_E2E_LOG_LINES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(40);
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let (tail, frames) = log_tail(&log, lines);
    let left_out = match frames {
        0 => String::new(),
        n => format!(", {n} lines of stack backtraces left out"),
    };
    eprintln!(
        "--- last {} lines of {what} ({}{left_out}) ---\n{}",
        tail.len(),
        path.display(),
        tail.join("\n")
    );
}

/// The last `lines` lines of `log` that are not frames of a stack backtrace (`  12:
/// symbol` and `at file:line` lines), and how many frame lines were left out: with
/// `RUST_BACKTRACE` set, a process's last words are a backtrace of dozens of lines that
/// would push its error message out of the tail.
fn log_tail(log: &str, lines: usize) -> (Vec<&str>, usize) {
    let is_frame = |line: &str| {
        let line = line.trim_start();
        line.starts_with("at ")
            || line
                .split_once(": ")
                .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let kept: Vec<&str> = log.lines().filter(|l| !is_frame(l)).collect();
    let frames = log.lines().count() - kept.len();
    (kept[kept.len().saturating_sub(lines)..].to_vec(), frames)
}

/// The admin kubeconfig `oakestra up` writes with its data under `data_dir`.
pub fn up_kubeconfig(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.kubeconfig")
}

/// Arguments of `oakestra up` serving the root API on `api_port` and the cluster API on
/// `cluster_port`, with its data under `data_dir`, then `extra`. A test that never dials
/// the cluster passes 0, so the kernel picks the port when `up` binds it: a port
/// [`free_port`] picked earlier may be taken by a test running beside it in between.
pub fn up_args(api_port: u16, cluster_port: u16, data_dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "up".into(),
        "--listen".into(),
        format!("127.0.0.1:{api_port}"),
        "--cluster-listen".into(),
        format!("127.0.0.1:{cluster_port}"),
        "--data-dir".into(),
        data_dir.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The admin kubeconfig a root or cluster with data directory `data_dir` writes.
pub fn tier_kubeconfig(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.kubeconfig")
}

/// The first join token a root or cluster with data directory `data_dir` wrote.
pub fn join_token(data_dir: &Path) -> String {
    let path = data_dir.join("join-token");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading the join token {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// An administrator's client of the API whose admin kubeconfig is `kubeconfig`.
pub fn tier_client(kubeconfig: &Path) -> client::Client {
    client::kubeconfig::Kubeconfig::load(kubeconfig)
        .and_then(|k| k.client(None))
        .unwrap_or_else(|e| panic!("a client from {}: {e}", kubeconfig.display()))
        .0
}

/// Where `oakestra cluster --name NAME` started by [`cluster_args`] keeps its data.
pub fn cluster_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(name)
}

/// The URL of an upstream tier and its join token, as the tier below joins it.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The tier's API URL.
    pub url: String,
    /// Its join token.
    pub token: String,
}

impl Upstream {
    /// The cluster started by [`cluster_args`] with `data_dir` and `name`, at `url`.
    pub fn cluster(url: &str, data_dir: &Path, name: &str) -> Upstream {
        Upstream {
            url: url.to_string(),
            token: join_token(&cluster_dir(data_dir, name)),
        }
    }
}

/// Cluster flags for tests: 1 s heartbeats, a node lost after 3 s without one, its
/// Instances moved 2 s later, and what finds no room handed back after 1 s.
pub const QUICK_CLUSTER: &[&str] = &[
    "--heartbeat-seconds",
    "1",
    "--node-heartbeat-timeout-seconds",
    "3",
    "--eviction-seconds",
    "2",
    "--handback-seconds",
    "1",
];

/// Arguments of `oakestra cluster --name NAME` joining `root`, serving on `port`, its
/// embedded store and credentials in `data_dir/NAME` ([`cluster_dir`]), then `extra`.
pub fn cluster_args(
    name: &str,
    root: &Upstream,
    port: u16,
    data_dir: &Path,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "cluster".into(),
        "--name".into(),
        name.into(),
        "--root".into(),
        root.url.clone(),
        "--token".into(),
        root.token.clone(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--store".into(),
        format!("embedded:{}", data_dir.join(name).display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Arguments of `oakestra worker --name NAME` joining `cluster`, its data under
/// `data_dir/workers`, allowed to run the process runtime (what most tests run), then
/// `extra`.
pub fn worker_args(name: &str, cluster: &Upstream, data_dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "worker".into(),
        "--cluster".into(),
        cluster.url.clone(),
        "--token".into(),
        cluster.token.clone(),
        "--name".into(),
        name.into(),
        "--data-dir".into(),
        data_dir.join("workers").display().to_string(),
        "--allow-process-runtime".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// An `oakestra root` process on a free port.
pub struct RootServer {
    /// The port it serves the API on.
    pub port: u16,
    /// Its `--store` argument, e.g. `embedded:/tmp/x/store` or `etcd:http://…`.
    pub store: String,
    /// Its data directory (CA, tokens, admin kubeconfig): the embedded store's
    /// directory, or `LOG_DIR/root-PORT` for etcd.
    pub data_dir: PathBuf,
    inner: Oakestra,
}

impl RootServer {
    /// Start `oakestra root --store STORE`; logs go to `log_dir`.
    pub fn start(store: &str, log_dir: &Path) -> RootServer {
        Self::start_with(store, log_dir, &[])
    }

    /// Start `oakestra root --store STORE EXTRA…`.
    pub fn start_with(store: &str, log_dir: &Path, extra: &[&str]) -> RootServer {
        Self::start_binary(&binary("oakestra"), store, log_dir, extra)
    }

    /// Like [`start_with`](Self::start_with), with a given `oakestra` binary.
    pub fn start_binary(binary: &Path, store: &str, log_dir: &Path, extra: &[&str]) -> RootServer {
        let port = free_port();
        let data_dir = match store.strip_prefix("embedded:") {
            Some(dir) => PathBuf::from(dir),
            None => log_dir.join(format!("root-{port}")),
        };
        let mut args: Vec<String> = [
            "root",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--store",
            store,
            "--data-dir",
            &data_dir.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let inner =
            Oakestra::start_binary(binary, &format!("root-{port}"), &args, Some(port), log_dir);
        RootServer {
            port,
            store: store.to_string(),
            data_dir,
            inner,
        }
    }

    /// Its admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        tier_kubeconfig(&self.data_dir)
    }

    /// An administrator's client of it.
    pub fn client(&self) -> client::Client {
        tier_client(&self.kubeconfig())
    }

    /// Its URL and join token, for clusters to join it.
    pub fn upstream(&self) -> Upstream {
        Upstream {
            url: self.url(),
            token: join_token(&self.data_dir),
        }
    }
}

/// `url`, `pid`, `kill9`, `restart` and `log` are those of the process.
impl std::ops::Deref for RootServer {
    type Target = Oakestra;
    fn deref(&self) -> &Oakestra {
        &self.inner
    }
}

impl std::ops::DerefMut for RootServer {
    fn deref_mut(&mut self) -> &mut Oakestra {
        &mut self.inner
    }
}

/// Processes (not zombies) whose command line contains `marker`, as pid → command line.
pub fn processes_matching(marker: &str) -> std::collections::BTreeMap<u32, String> {
    let mut found = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'));
        if cmdline.contains(marker) && !zombie {
            found.insert(pid, cmdline);
        }
    }
    found
}

/// Kills, on drop, every process whose command line contains one of the markers: the
/// workloads a test started through the agent outlive a killed agent.
pub struct KillMatching(pub Vec<String>);

impl Drop for KillMatching {
    fn drop(&mut self) {
        for marker in &self.0 {
            for pid in processes_matching(marker).keys() {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }
}

/// Run the `oakctl` binary with the admin kubeconfig `kubeconfig` and `args`, and wait
/// for it.
pub fn oakctl(kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    Command::new(binary("oakctl"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("run oakctl")
}

/// Write `manifest` to `dir/file` and `oakctl apply -f` it with `kubeconfig`, failing
/// the test with oakctl's stderr if the apply does not succeed.
pub fn apply_manifest(
    kubeconfig: &Path,
    dir: &Path,
    file: &str,
    manifest: &str,
) -> std::process::Output {
    let path = dir.join(file);
    std::fs::write(&path, manifest).expect("write the manifest");
    let out = oakctl(
        kubeconfig,
        &["apply", "-f", path.to_str().expect("a UTF-8 path")],
    );
    assert!(
        out.status.success(),
        "oakctl apply -f {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// One plain-HTTP/1.1 request (`Connection: close`) to `addr`: `method path`, with a
/// bearer `token` and a JSON `body` if given; the answer's status code and body.
/// `None` when the server closes the connection without an answer (as a TLS-only
/// listener does with plain HTTP). For Oakestra's REST API, which `oakestra up` also
/// serves as plain HTTP to loopback clients.
pub fn plain_http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = Vec::new();
    // A server that closes the connection (a reset included) has given what it gives.
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// A loopback address (`127.X.Y.Z`) where `port` is free, for a server that must listen
/// on a fixed port (Oakestra's CLI dials port 10000) without meeting one already there.
pub fn loopback_with_free_port(port: u16) -> std::net::Ipv4Addr {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let seed = std::process::id() as u64 ^ now;
    for i in 0..200u64 {
        let n = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(i * 1442695040888963407);
        let ip = std::net::Ipv4Addr::new(
            127,
            (n >> 8) as u8,
            (n >> 16) as u8,
            ((n >> 24) as u8).max(2),
        );
        if TcpListener::bind((ip, port)).is_ok() {
            return ip;
        }
    }
    panic!("no loopback address with port {port} free");
}

#[cfg(test)]
mod tests {
    //! [`eventually`] and [`stays`] on paused time: each case's check turns at a given
    //! moment of tokio's clock, so the outcome and the moment it comes are exact.

    use super::*;
    use tokio::time::Instant;

    #[test]
    fn a_log_tail_keeps_the_error_above_a_backtrace() {
        let log = "started\nError: binding 127.0.0.1:4000: address in use\n\nStack backtrace:\n   0: anyhow::error::new\n             at /src/error.rs:1:2\n  12: oakestra::main\n             at ./src/main.rs:93:20\n";
        let (tail, frames) = log_tail(log, 3);
        assert_eq!(
            tail,
            [
                "Error: binding 127.0.0.1:4000: address in use",
                "",
                "Stack backtrace:"
            ]
        );
        assert_eq!(frames, 4);
        // Log lines with colons are no frames.
        let line = "2026-12-02T13:44:01.5Z  INFO agent: at start: ready";
        assert_eq!(log_tail(line, 5), (vec![line], 0));
    }

    /// Milliseconds.
    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// A case: its name (also the `what` given), when its check turns (ms after the
    /// start, never if `None`), the time given (ms), and `Ok(returned at)` or
    /// `Err(failed at)` (ms).
    type Case = (&'static str, Option<u64>, u64, Result<u64, u64>);

    /// Run `under_test` for each case on a task of its own (it gets the case and the
    /// start, and returns what the helper returned), and check when and how it ended; a
    /// failure's message must contain the case's name and `failure`.
    async fn check<Fut>(cases: &[Case], under_test: impl Fn(Case, Instant) -> Fut, failure: &str)
    where
        Fut: Future<Output = Duration> + Send + 'static,
    {
        for &case in cases {
            let (name, _, _, expected) = case;
            let start = Instant::now();
            let outcome = tokio::spawn(under_test(case, start)).await;
            let at = start.elapsed();
            match (expected, outcome) {
                (Ok(when), Ok(returned)) => {
                    assert_eq!((returned, at), (MS(when), MS(when)), "{name}")
                }
                (Err(when), Err(e)) => {
                    let payload = e.into_panic();
                    let message = payload
                        .downcast_ref::<String>()
                        .cloned()
                        .unwrap_or_default();
                    assert!(
                        message.contains(name) && message.contains(failure),
                        "{name}: {message}"
                    );
                    assert_eq!(at, MS(when), "{name}: failed when expected");
                }
                (expected, outcome) => panic!("{name}: expected {expected:?}, got {outcome:?}"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn eventually_returns_when_ready_and_fails_at_its_deadline() {
        // The check turns ready; Ok is when it returned, Err when it failed.
        let cases: [Case; 4] = [
            ("ready at once", Some(0), 1000, Ok(0)),
            ("ready midway", Some(410), 1000, Ok(425)),
            ("ready at the last poll", Some(1000), 1000, Ok(1000)),
            ("never ready", None, 1000, Err(1000)),
        ];
        let under_test = |(what, ready_from, deadline, _): Case, start: Instant| async move {
            eventually(what, MS(deadline), || async move {
                let now = start.elapsed();
                ready_from.filter(|r| now >= MS(*r)).map(|_| now)
            })
            .await
        };
        check(&cases, under_test, "timed out after 1s").await;
    }

    #[tokio::test(start_paused = true)]
    async fn stays_polls_for_the_whole_duration_and_fails_at_the_first_miss() {
        // The check turns false; Ok is when it returned, Err when it failed.
        let cases: [Case; 5] = [
            ("always holds", None, 1000, Ok(1000)),
            ("a duration off the poll grid", None, 1020, Ok(1020)),
            ("fails at once", Some(0), 1000, Err(0)),
            ("fails midway", Some(420), 1000, Err(450)),
            ("fails at the end", Some(1000), 1000, Err(1000)),
        ];
        let under_test = |(what, fails_from, duration, _): Case, start: Instant| async move {
            stays(what, MS(duration), || async move {
                let now = start.elapsed();
                match fails_from {
                    Some(f) if now >= MS(f) => Err(format!("changed at {now:?}")),
                    _ => Ok(now),
                }
            })
            .await
        };
        check(&cases, under_test, "observed \"changed at").await;
    }

    #[test]
    fn equals_passes_the_observed_value_on() {
        assert_eq!(equals(&3, 3), Ok(3));
        assert_eq!(equals(&3, 4), Err(4));
    }
}
