//! Test harness for tests over real processes: free ports, an `etcd` server owned by
//! the test, and [`eventually`] to wait on observable state instead of sleeping.
//!
//! Every process started here is killed when its guard is dropped, also when a test
//! panics. The end-to-end scenarios themselves are in `tests/`.

pub mod containers;

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

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
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

/// Poll `check` until it returns `Some`, failing with `what` after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
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

    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

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
    pub client_port: u16,
    process: Process,
    data: tempfile::TempDir,
}

impl Etcd {
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
        let mut cmd = Command::new(etcd_binary());
        cmd.arg("--name=test")
            .arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!("--initial-cluster=test=http://127.0.0.1:{peer}"));
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

    pub fn data_dir(&self) -> PathBuf {
        self.data.path().to_path_buf()
    }
}

/// Path of the etcd server binary (`ETCD_BIN` overrides).
pub fn etcd_binary() -> String {
    std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".to_string())
}

/// Path of a binary of this workspace (`oakestra`, `oakctl`), built on first use so
/// the tests always run the current code.
pub fn binary(name: &str) -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    BUILD.call_once(|| {
        let status = Command::new(env!("CARGO"))
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
        let process = Self::launch(binary, args, port, &log);
        Oakestra {
            port,
            binary: binary.to_path_buf(),
            args: args.to_vec(),
            process,
            log,
        }
    }

    fn launch(binary: &Path, args: &[String], port: Option<u16>, log: &Path) -> Process {
        let mut cmd = Command::new(binary);
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

    pub fn url(&self) -> String {
        format!(
            "http://127.0.0.1:{}",
            self.port.expect("this process serves no port")
        )
    }

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
        self.process = Self::launch(&self.binary, &self.args, self.port, &self.log);
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
        let lines: usize = std::env::var("OAKESTRA_E2E_LOG_LINES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(40);
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        let tail = &all[all.len().saturating_sub(lines)..];
        eprintln!(
            "--- last {} lines of {} ---\n{}",
            tail.len(),
            self.log.display(),
            tail.join("\n")
        );
    }
}

/// Arguments of `oakestra up` serving the root API on `api_port` and the cluster API on
/// `cluster_port`, with its data under `data_dir`, then `extra`.
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

/// Arguments of `oakestra cluster --name NAME` reporting to `root`, serving on `port`,
/// its embedded store in `data_dir/NAME`, then `extra`.
pub fn cluster_args(
    name: &str,
    root: &str,
    port: u16,
    data_dir: &Path,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "cluster".into(),
        "--name".into(),
        name.into(),
        "--root".into(),
        root.into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--store".into(),
        format!("embedded:{}", data_dir.join(name).display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Arguments of `oakestra worker --name NAME` in `cluster`, its data under
/// `data_dir/workers`, then `extra`.
pub fn worker_args(name: &str, cluster: &str, data_dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "worker".into(),
        "--cluster".into(),
        cluster.into(),
        "--name".into(),
        name.into(),
        "--data-dir".into(),
        data_dir.join("workers").display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// An `oakestra root` process on a free port.
pub struct RootServer {
    pub port: u16,
    pub store: String,
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
        let mut args: Vec<String> = [
            "root",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--store",
            store,
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
            inner,
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

/// Run the `oakctl` binary against `server` with `args` and wait for it.
pub fn oakctl(server: &str, args: &[&str]) -> std::process::Output {
    Command::new(binary("oakctl"))
        .arg("--server")
        .arg(server)
        .args(args)
        .output()
        .expect("run oakctl")
}
