//! `oakestra`: the server binary. `main` parses flags, starts tracing and hands over to
//! the role; each role wires the crates in its own module:
//!
//! - `roles::root`: the root API server and root controllers.
//! - `roles::cluster`: a cluster API server and the cluster controllers.
//! - `roles::worker`: a worker agent and the runtime its flags choose.
//! - `roles::hollow`: simulated nodes for scale tests.
//! - `roles::up`: root, cluster and worker on one device, composed from the above.
//! - `roles::down`: stop the workloads an `oakestra up` left running.
//! - `roles::credentials`: tokens, admin kubeconfigs and members of a tier.
//! - `roles::backup`: a root's objects to a file and back (`backup`, `restore`).
//! - `roles::logs`: the `instances/{name}/log` proxy the root and clusters serve.
//! - `roles` itself: what the roles share (API flags, in-process clients, running
//!   until Ctrl-C or SIGTERM).
//! - `oakapi`: Oakestra's root REST API (`/api/application/`, `/api/service/`, …), a
//!   facade the root serves beside the Kubernetes paths (`docs/oakestra.md`).

mod oakapi;
mod roles;

use anyhow::Context;
use clap::{Parser, Subcommand};

use roles::{backup, cluster, credentials, down, hollow, root, up, worker};

/// mimalloc instead of glibc's malloc: the servers allocate and free many small JSON
/// values per request from several threads, where glibc's malloc and free took 10–17 %
/// of a busy server's CPU (perf; `docs/benchmarks-history.md`, session 10, has the
/// before/after). Its arenas are committed on demand (`MI_DEFAULT_ARENA_EAGER_COMMIT=0`
/// in `.cargo/config.toml`): committed eagerly, as mimalloc does on Linux by default, an
/// idle root stayed at 45 MiB resident instead of 20.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "oakestra", version, about = "Hierarchical edge orchestrator")]
struct Cli {
    #[command(subcommand)]
    role: Role,
    /// Log filter (tracing env-filter syntax), e.g. `info,apiserver=debug`.
    #[arg(long, global = true, env = "OAKESTRA_LOG", default_value = "info")]
    log: String,
    /// Also log when each enabled span closes, with its busy and idle time (e.g. every
    /// reconcile with `--log info,client::runtime::controller=debug`): for profiling.
    #[arg(long, global = true, env = "OAKESTRA_LOG_SPANS")]
    log_spans: bool,
}

#[derive(Subcommand)]
enum Role {
    /// Run the root orchestrator: the root API server and the root controllers.
    Root(root::RootArgs),
    /// Run a cluster orchestrator: its own API server and the cluster controllers.
    Cluster(cluster::ClusterArgs),
    /// Run a worker agent: registers a Node at its cluster and runs the Instances bound to it.
    Worker(worker::WorkerArgs),
    /// Simulate many worker nodes for scale tests (like kubemark/KWOK): registers
    /// `PREFIX-0` … `PREFIX-{N-1}` at the cluster, heartbeats them, and reports every
    /// Instance bound to them `Running` without running anything.
    Hollow(hollow::HollowArgs),
    /// Run a node's userspace WireGuard device (the worker starts it; it outlives the
    /// worker's restarts).
    WireguardDevice(worker::WireguardDeviceArgs),
    /// Run everything on this one device (1-DOC): root, one cluster and one worker, with
    /// embedded stores. Stopping it leaves the workloads running (see `down`).
    Up(up::UpArgs),
    /// Stop the workloads that an `oakestra up` (stopped before) left running.
    Down(down::DownArgs),
    /// Manage a tier's join and admin tokens (in its data directory).
    Token(credentials::TokenArgs),
    /// Write a new administrator's kubeconfig of a tier (e.g. when the first is lost).
    AdminKubeconfig(credentials::AdminKubeconfigArgs),
    /// Manage the members (clusters, nodes) that joined a tier.
    Member(credentials::MemberArgs),
    /// Write every object of a root's store, as of one revision, to a file (while the
    /// root runs, through it).
    Backup(backup::BackupArgs),
    /// Bring a backup back into a new embedded store (no server running on it).
    Restore(backup::RestoreArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).context("invalid --log filter")?,
        )
        .with_writer(std::io::stderr)
        .with_span_events(if cli.log_spans {
            tracing_subscriber::fmt::format::FmtSpan::CLOSE
        } else {
            tracing_subscriber::fmt::format::FmtSpan::NONE
        })
        .init();
    match cli.role {
        Role::Root(args) => root::run(args).await,
        Role::Cluster(args) => cluster::run(args).await,
        Role::Worker(args) => worker::run(args).await,
        Role::Hollow(args) => hollow::run(args).await,
        Role::WireguardDevice(args) => worker::run_device(args).await,
        Role::Up(args) => up::run(args).await,
        Role::Down(args) => down::run(args).await,
        Role::Token(args) => credentials::token(args),
        Role::AdminKubeconfig(args) => credentials::admin_kubeconfig(args),
        Role::Member(args) => credentials::member(args),
        Role::Backup(args) => backup::backup(args).await,
        Role::Restore(args) => backup::restore(args),
    }
}
