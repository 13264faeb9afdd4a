//! `oakestra cluster`: a cluster's own API server and the cluster controllers (sync
//! with the root, scheduling onto nodes, node lifecycle, reports to the root), with the
//! cluster's own certificate authority: it joins the root with a token, and its nodes
//! join it the same way (also while the root is unreachable).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use apiserver::{ServerConfig, StoreConfig};
use clap::Args;
use controllers::cluster::ClusterConfig;
use crds::Location;
use pki::{Identity, Trust, Vouch};
use trust::join::{Joining, Members};
use trust::{Authority, TierPaths};

use crate::roles::logs::Hop;
use crate::roles::{
    admin_kubeconfig_after, admin_kubeconfig_before, data_dir, parse_location, secure_tier,
    ApiFlags, LeaderFlags, Running, Served, SharedFlags, TlsFlags,
};

/// The flags of `oakestra cluster`.
#[derive(Args)]
pub struct ClusterArgs {
    /// Name of the cluster at the root.
    #[arg(long)]
    name: String,
    /// URL of the root API, e.g. `https://10.0.0.1:10000`; several roots separated by
    /// commas (requests move to the next when one cannot be reached).
    #[arg(long)]
    root: String,
    /// The root's join token for clusters (`K10…`, from the root's `join-token` file or
    /// `oakestra token create`); needed the first time only.
    #[arg(long, env = "OAKESTRA_TOKEN")]
    token: Option<String>,
    /// Address to serve the cluster API on (workers connect here).
    #[arg(long, default_value = "127.0.0.1:10100")]
    listen: SocketAddr,
    /// `embedded:DIR` or `etcd:http://HOST:PORT[,…]`.
    #[arg(long, default_value = "embedded:/var/lib/oakestra/cluster")]
    store: StoreConfig,
    /// Where the cluster keeps its CA, tokens, its certificate at the root and its admin
    /// kubeconfig (default: the embedded store's directory, or /var/lib/oakestra/cluster).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsFlags,
    #[command(flatten)]
    shared: SharedFlags,
    #[command(flatten)]
    leader: LeaderFlags,
    #[command(flatten)]
    api: ApiFlags,
    #[command(flatten)]
    cluster: ClusterFlags,
}

/// Flags of the cluster controllers.
#[derive(Args)]
struct ClusterFlags {
    /// Where the cluster is, as LAT,LON in degrees.
    #[arg(long, value_parser = parse_location)]
    location: Option<Location>,
    /// Seconds between reports to the root.
    #[arg(long, default_value_t = 5)]
    heartbeat_seconds: u64,
    /// A node without a heartbeat for this long becomes `NotReady`.
    #[arg(long, default_value_t = 20)]
    node_heartbeat_timeout_seconds: u64,
    /// A node `NotReady` for this long loses its Instances to other nodes.
    #[arg(long, default_value_t = 30)]
    eviction_seconds: u64,
    /// Seconds an Instance may find no node with room before it goes back to the root.
    #[arg(long, default_value_t = 30)]
    handback_seconds: u64,
    /// URL of this cluster's API as clients reach it (default: from --listen).
    #[arg(long)]
    advertise_url: Option<String>,
    /// Run the API server only, without controllers (no sync with the root, no
    /// scheduling): for tests and debugging.
    #[arg(long)]
    no_controllers: bool,
}

impl ClusterFlags {
    /// The controllers' settings for cluster `name`, whose API `local` reaches.
    fn config(&self, name: &str, local: &client::Client) -> ClusterConfig {
        ClusterConfig {
            api_endpoint: Some(
                self.advertise_url
                    .clone()
                    .unwrap_or_else(|| local.base().to_string()),
            ),
            location: self.location.clone(),
            heartbeat: Duration::from_secs(self.heartbeat_seconds.max(1)),
            node_heartbeat_timeout: Duration::from_secs(self.node_heartbeat_timeout_seconds),
            eviction: Duration::from_secs(self.eviction_seconds),
            handback: Duration::from_secs(self.handback_seconds),
            ..ClusterConfig::new(name)
        }
    }
}

/// Cluster `name`'s certificate authority under `data`, created at the first start,
/// with a serving certificate for the names clients dial on `listen` (and `extra`).
pub fn authority(
    name: &str,
    data: PathBuf,
    listen: SocketAddr,
    extra: &[String],
) -> anyhow::Result<Arc<Authority>> {
    let sans = trust::dir::server_names(listen, extra);
    Ok(Arc::new(Authority::open(
        TierPaths::new(data),
        &format!("oakestra cluster {name} CA"),
        &Identity::Cluster { name: name.into() },
        &sans,
    )?))
}

/// The files of a cluster's data directory its processes on one etcd share: its
/// authority's, and what joining the root gave it (its certificate there, the root's CA
/// and the secret that holds its name).
fn shared_files() -> Vec<trust::shared::SharedFile> {
    let mut files = trust::shared::AUTHORITY_FILES.to_vec();
    files.push(("pki/upstream/", trust::shared::Merge::StoreWins));
    files
}

/// The host part of `url` (`https://HOST:PORT/…`), for the serving certificate.
fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    Some(host.to_string())
}

/// Run a cluster orchestrator until Ctrl-C or SIGTERM.
pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let name = &args.name;
    crds::validate::name(name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    let leader = args
        .leader
        .config(&args.store, crds::CLUSTER_CONTROLLERS_LEASE, args.listen)?;
    let data = data_dir(
        args.data_dir.as_deref(),
        &args.store,
        "/var/lib/oakestra/cluster",
    );
    let mut sans = args.tls.tls_san.clone();
    sans.extend(args.cluster.advertise_url.as_deref().and_then(host_of));
    // On etcd, the cluster's processes (a leader and its standbys) are one cluster: one
    // CA, one set of node tokens, one identity at the root.
    let shared = match &args.store {
        StoreConfig::Etcd(endpoints) => Some(
            args.shared
                .open(
                    endpoints,
                    &format!("cluster/{name}"),
                    &data,
                    shared_files(),
                    args.token.as_deref(),
                    "pki/upstream/ca.crt",
                    || {
                        anyhow::bail!(
                            "a cluster on etcd seals what its processes share with the root's join token it joins with: start it with --token (or --store-key-file)"
                        )
                    },
                )
                .await?,
        ),
        StoreConfig::Embedded(_) => None,
    };
    let authority = authority(name, data, args.listen, &sans)?;
    let context = format!("oakestra-{name}");
    let kubeconfig = authority.paths.admin_kubeconfig();
    admin_kubeconfig_before(&authority, args.listen, &context, &kubeconfig)?;
    let upstream = trust::join::credentials(
        &authority.paths,
        Joining {
            url: &args.root,
            token: args.token.as_deref(),
            name,
            members: Members::Clusters,
            own_ca: Some(authority.ca.cert_pem()),
        },
    )
    .await
    .with_context(|| format!("joining the root at {}", args.root))?;
    let mut running = Running::new();
    if let Some(shared) = shared {
        shared.sync().await?;
        running.spawn(shared.run(running.shutdown().clone()));
    }
    let (tls, identity) = upstream.tls()?;
    let root = client::Client::with_tls(&args.root, tls).context("--root")?;
    running.spawn(trust::join::keep_renewed(
        authority.paths.clone(),
        root.clone(),
        identity,
        None,
        running.shutdown().clone(),
    ));
    let cluster = start(
        &mut running,
        args.listen,
        args.store,
        args.api.config(),
        root.clone(),
        Secure {
            authority: authority.clone(),
            root_ca_pem: upstream.ca_pem.clone(),
            tls: &args.tls,
        },
        |local| (!args.cluster.no_controllers).then(|| (args.cluster.config(name, local), leader)),
    )
    .await?;
    let url = admin_kubeconfig_after(&authority, cluster.addr, &context, &kubeconfig)?;
    println!(
        "oakestra cluster {name}: API at {url}, root at {}",
        root.base()
    );
    println!("  admin kubeconfig:     {}", kubeconfig.display());
    println!(
        "  join token for nodes: {}",
        authority.paths.join_token().display()
    );
    running.until_stopped().await
}

/// The security of a cluster's API: its authority, and the root's CA, which vouches
/// for the root's proxy (and the root's administrators) here.
pub struct Secure<'a> {
    /// The cluster's own CA and certificates.
    pub authority: Arc<Authority>,
    /// The root's CA.
    pub root_ca_pem: String,
    /// The lifetime of the certificates it issues its nodes.
    pub tls: &'a TlsFlags,
}

/// Start the cluster API server on `store`, serving TLS as `secure` says, and the
/// cluster controllers on it, reporting to `root`, with the settings `config` gives for
/// the server's in-process client (none: no controllers) and, with a leader election
/// beside them, only while this process leads; both are added to `running`.
pub async fn start(
    running: &mut Running,
    listen: SocketAddr,
    store: StoreConfig,
    api: ServerConfig,
    root: client::Client,
    secure: Secure<'_>,
    config: impl FnOnce(
        &client::Client,
    ) -> Option<(ClusterConfig, Option<controllers::leader::LeaderConfig>)>,
) -> anyhow::Result<Served> {
    let own_ca = secure.authority.ca.cert_pem().to_string();
    let trusted = vec![
        // Its own CA vouches for its administrators and its nodes …
        Trust {
            ca_pem: own_ca.clone(),
            allows: vec![Vouch::Admin, Vouch::Node],
        },
        // … the root's for the root's proxy and administrators.
        Trust {
            ca_pem: secure.root_ca_pem,
            allows: vec![Vouch::Root, Vouch::Admin],
        },
    ];
    let hop = Hop::Cluster { ca_pem: own_ca };
    let secured = secure_tier(
        secure.authority,
        Members::Nodes,
        secure.tls.member_lifetime(),
        trusted,
        hop,
    )?;
    let served = running
        .serve_api("cluster", listen, store, api, secured)
        .await?;
    if let Some((config, leader)) = config(&served.client) {
        let local = served.client.clone();
        running.spawn_controllers(served.client.clone(), leader, move |stop| {
            controllers::cluster::run_cluster(local.clone(), root.clone(), config.clone(), stop)
        });
    }
    Ok(served)
}
