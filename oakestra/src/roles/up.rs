//! `oakestra up`: everything on this one device (1-DOC): the root, one cluster called
//! `local` and one worker called `local`, with embedded stores under one data dir,
//! composed from the root, cluster and worker roles.
//!
//! Stopping `up` leaves the workloads of its worker running, so that the next `up`
//! adopts them; [`super::down`] stops them.
//!
//! Unlike `oakestra root`, `up` also serves Oakestra's REST API as plain HTTP to
//! loopback clients (with Oakestra's fixed Admin/Admin login), for Oakestra's `oak`
//! CLI; `docs/security.md`, *Oakestra's API*.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use apiserver::StoreConfig;
use clap::Args;
use controllers::cluster::ClusterConfig;
use pki::Identity;
use trust::dir::{MEMBER_LIFETIME, SERVING_LIFETIME};

use crate::roles::root::RootFlags;
use crate::roles::worker::{NetworkFlags, RuntimeFlags, WorkerFlags};
use crate::roles::{
    admin_kubeconfig_after, admin_kubeconfig_before, cluster, root, worker, ApiFlags, Running,
    TlsFlags,
};

/// The name of the one cluster and of the one worker node of `oakestra up`.
pub const LOCAL: &str = "local";

/// The flags of `oakestra up`.
#[derive(Args)]
pub struct UpArgs {
    /// Address to serve the root API on.
    #[arg(long, default_value = "127.0.0.1:10000")]
    listen: SocketAddr,
    /// Address to serve the cluster API on.
    #[arg(long, default_value = "127.0.0.1:10100")]
    cluster_listen: SocketAddr,
    /// Where the stores and the worker keep their data.
    #[arg(long, env = "OAKESTRA_DATA", default_value_os_t = default_data_dir())]
    data_dir: PathBuf,
    #[command(flatten)]
    api: ApiFlags,
    #[command(flatten)]
    tls: TlsFlags,
    #[command(flatten)]
    root: RootFlags,
    #[command(flatten)]
    runtime: RuntimeFlags,
    /// Where this device is, `LAT,LON` in degrees: the cluster's location (geo
    /// constraints, the dashboard's map).
    #[arg(long, value_parser = crate::roles::parse_location)]
    location: Option<crds::Location>,
}

/// Where `up` writes the administrator's kubeconfig of the root API.
pub fn admin_kubeconfig(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.kubeconfig")
}

/// `~/.local/share/oakestra`, or `.oakestra` without a home directory.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".local/share/oakestra"))
        .unwrap_or_else(|| PathBuf::from(".oakestra"))
}

/// The flags of the one worker of `up` with its data under `data_dir` (`down` finds
/// its workloads through the same flags). On one device with one user, the process
/// runtime is allowed: it is what runs without containerd.
pub fn local_worker(data_dir: &Path, mut runtime: RuntimeFlags) -> WorkerFlags {
    runtime.allow_process_runtime = true;
    WorkerFlags {
        name: Some(LOCAL.into()),
        runtime,
        address: "127.0.0.1".into(),
        data_dir: Some(worker_dir(data_dir)),
        heartbeat_seconds: 2,
        location: None,
        labels: BTreeMap::new(),
        listen: "127.0.0.1:0".parse().expect("valid address"),
        net: NetworkFlags::defaults(),
    }
}

/// Where the worker of `up` keeps its data (under its node's name).
pub fn worker_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("worker")
}

/// Run root, cluster and worker in this process until Ctrl-C or SIGTERM; then say that the
/// workloads keep running and how to stop them.
///
/// Security is as in separate processes (every listener serves TLS, the root's and
/// the cluster's CAs, the agent's endpoint answers the cluster only), but nothing has
/// to join: the certificates a join would give are issued here directly. The cluster
/// and the worker reach their tier above in memory.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let data_dir = &args.data_dir;
    let controllers = args.root.config()?;
    let service_cidr = args.root.service_cidr();
    let worker = local_worker(data_dir, args.runtime);
    let worker_config = worker.config(worker_dir(data_dir))?;
    let root_authority = root::authority(data_dir.join("root"), args.listen, &args.tls)?;
    let cluster_authority = cluster::authority(
        LOCAL,
        data_dir.join("cluster"),
        args.cluster_listen,
        &args.tls.tls_san,
    )?;
    // What the cluster's join would have left at the root: its CA, for log proxying.
    pki::write_private(
        &root_authority.paths.member_ca(LOCAL),
        cluster_authority.ca.cert_pem().as_bytes(),
    )?;
    let kubeconfig = admin_kubeconfig(data_dir);
    admin_kubeconfig_before(&root_authority, args.listen, "oakestra", &kubeconfig)?;
    // The cluster's own, as `oakestra cluster` writes it (its nodes, its Instances).
    let cluster_kubeconfig = cluster_authority.paths.admin_kubeconfig();
    let cluster_context = format!("oakestra-{LOCAL}");
    admin_kubeconfig_before(
        &cluster_authority,
        args.cluster_listen,
        &cluster_context,
        &cluster_kubeconfig,
    )?;
    let mut running = Running::new();
    let root = root::start(
        &mut running,
        args.listen,
        StoreConfig::Embedded(data_dir.join("root")),
        args.api.config(),
        controllers.map(|c| (c, None)),
        root_authority.clone(),
        &args.tls,
        root::OakestraApi {
            plain_loopback: true,
            service_cidr,
        },
    )
    .await?;
    let node = trust::Upstream {
        ca_pem: cluster_authority.ca.cert_pem().to_string(),
        client: cluster_authority
            .ca
            .issue_client(&Identity::Node { name: LOCAL.into() }, MEMBER_LIFETIME)?,
        serving: Some(
            cluster_authority
                .ca
                .issue_server(&[trust::join::agent_server_name(LOCAL)], SERVING_LIFETIME)?,
        ),
    };
    let cluster = cluster::start(
        &mut running,
        args.cluster_listen,
        StoreConfig::Embedded(data_dir.join("cluster")),
        args.api.config(),
        root.client.clone(),
        cluster::Secure {
            authority: cluster_authority.clone(),
            root_ca_pem: root_authority.ca.cert_pem().to_string(),
            tls: &args.tls,
        },
        |local| {
            let config = ClusterConfig {
                heartbeat: Duration::from_secs(2),
                api_endpoint: Some(local.base().to_string()),
                location: args.location.clone(),
                ..ClusterConfig::new(LOCAL)
            };
            Some((config, None))
        },
    )
    .await?;
    let runtime = worker.runtime.settings().resolve();
    let (endpoint, _) = worker::endpoint(&node)?;
    worker::start(
        &mut running,
        cluster.client,
        worker_config,
        worker.runtime,
        endpoint,
    );
    let url = admin_kubeconfig_after(&root_authority, root.addr, "oakestra", &kubeconfig)?;
    admin_kubeconfig_after(
        &cluster_authority,
        cluster.addr,
        &cluster_context,
        &cluster_kubeconfig,
    )?;
    println!("oakestra up (one device: root, cluster \"{LOCAL}\", worker \"{LOCAL}\" with the {runtime} runtime)");
    println!("  API:   {url}");
    println!("  data:  {}", data_dir.display());
    println!("  admin: export KUBECONFIG={}", kubeconfig.display());
    println!(
        "  web:   {url}/ui/ (log in as {} with the password in {}; the browser warns of the \
         root's own CA, {}: docs/dashboard.md)",
        crate::oakapi::auth::ADMIN,
        root::password_file(&root_authority).display(),
        root_authority.paths.data().join("pki/ca.crt").display()
    );
    println!("  try:   oakctl apply -f manifests/   (oakctl finds this kubeconfig by itself)");
    println!("         kubectl get services        (with KUBECONFIG exported)");
    println!(
        "  oak:   Oakestra's API (/api/...) is also served as plain HTTP at {}, for \
         Oakestra's oak CLI: to clients on this machine only (loopback), for Oakestra's paths \
         only; there, and only there, Oakestra's fixed login Admin/Admin is accepted",
        crate::roles::url_of(root.addr).replacen("https://", "http://", 1)
    );
    println!(
        "         (over TLS: log in as {} with the password in {})",
        crate::oakapi::auth::ADMIN,
        root::password_file(&root_authority).display()
    );
    let result = running.until_stopped().await;
    eprintln!(
        "oakestra up stopped; the workloads of worker \"{LOCAL}\" keep running (the next \
         `oakestra up` adopts them, and their ports stay taken). To stop them: \
         oakestra down --data-dir {}",
        data_dir.display()
    );
    result
}
