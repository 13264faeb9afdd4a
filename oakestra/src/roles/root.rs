//! `oakestra root`: the root API server and the root controllers (services, placement
//! on clusters, subnets and service IPs, garbage collection), with the root's
//! certificate authority: clusters join it with a token.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use apiserver::{ServerConfig, StoreConfig};
use clap::Args;
use controllers::ipam::Cidr;
use controllers::RootConfig;
use pki::{Identity, Trust, Vouch};
use trust::dir::server_names;
use trust::join::Members;
use trust::shared::SharedTrust;
use trust::{Authority, TierPaths};

use crate::oakapi;
use crate::roles::logs::Hop;
use crate::roles::{
    admin_kubeconfig_after, admin_kubeconfig_before, data_dir, secure_tier, ApiFlags, LeaderFlags,
    Running, Served, SharedFlags, TlsFlags,
};

/// The common name of the root's certificate authority.
pub const ROOT_CA: &str = "oakestra root CA";

/// The flags of `oakestra root`.
#[derive(Args)]
pub struct RootArgs {
    /// Address to serve the API on.
    #[arg(long, default_value = "127.0.0.1:10000")]
    listen: SocketAddr,
    /// `embedded:DIR` or `etcd:http://HOST:PORT[,…]`.
    #[arg(long, default_value = "embedded:/var/lib/oakestra/root")]
    store: StoreConfig,
    /// Where the root keeps its CA, tokens and admin kubeconfig (default: the embedded
    /// store's directory, or /var/lib/oakestra/root).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsFlags,
    /// Join the roots already running on this etcd: the first join token of the first
    /// of them (its DATA/join-token). It pins their CA and opens the credentials they
    /// share. Needed only at this root's first start.
    #[arg(long)]
    token: Option<String>,
    #[command(flatten)]
    shared: SharedFlags,
    #[command(flatten)]
    leader: LeaderFlags,
    #[command(flatten)]
    api: ApiFlags,
    #[command(flatten)]
    root: RootFlags,
}

/// The files of the root's data directory that the roots on one etcd share: the
/// authority's, and the password of Oakestra's API login.
fn shared_files() -> Vec<trust::shared::SharedFile> {
    let mut files = trust::shared::AUTHORITY_FILES.to_vec();
    files.push((oakapi::auth::PASSWORD_FILE, trust::shared::Merge::StoreWins));
    files
}

/// The root's authority under `data`; on etcd, shared with the other roots there: taken
/// from the store when they are there already (`token` opens it), given to it when this
/// root is the first (its first join token seals it). Returns the sync that keeps the two
/// in step, to run beside the server.
pub async fn shared_authority(
    data: PathBuf,
    listen: SocketAddr,
    store: &StoreConfig,
    tls: &TlsFlags,
    token: Option<&str>,
    flags: &SharedFlags,
) -> anyhow::Result<(Arc<Authority>, Option<SharedTrust>)> {
    let StoreConfig::Etcd(endpoints) = store else {
        anyhow::ensure!(
            token.is_none() && flags.store_key_file.is_none(),
            "--token and --store-key-file are for roots that share an etcd (--store etcd:…); an embedded store has one root"
        );
        return Ok((authority(data, listen, tls)?, None));
    };
    let shared = flags
        .open(
            endpoints,
            TIER,
            &data,
            shared_files(),
            token,
            "pki/ca.crt",
            // The first root on this etcd: its first join token seals what it shares.
            || Ok(authority(data.clone(), listen, tls)?.join_token()?),
        )
        .await?;
    let authority = authority(data, listen, tls)?;
    shared.sync().await?;
    Ok((authority, Some(shared)))
}

/// The tier name of the root's shared credentials in the store.
const TIER: &str = "root";

/// Flags of the root controllers (also taken by `oakestra up`).
#[derive(Args)]
pub struct RootFlags {
    /// Pool the cluster subnets are taken from.
    #[arg(long, default_value = "10.128.0.0/9")]
    cluster_cidr: Cidr,
    /// Prefix length of each cluster's subnet (a /16 holds 1024 nodes of /26).
    #[arg(long, default_value_t = 16)]
    cluster_prefix: u8,
    /// Pool of service IPs (Oakestra's default, so its SLAs' `rr_ip` values fit).
    #[arg(long, default_value = "10.30.0.0/16")]
    service_cidr: Cidr,
    /// Seconds a cluster may stay `NotReady` before its Instances are placed elsewhere.
    #[arg(long, default_value_t = 60)]
    cluster_grace_seconds: u64,
    /// A cluster without a heartbeat for this many seconds becomes `NotReady`.
    #[arg(long, default_value_t = 20)]
    cluster_heartbeat_timeout_seconds: u64,
    /// Run the API server only, without controllers.
    #[arg(long)]
    no_controllers: bool,
}

/// How the root serves Oakestra's REST API (`/api/...`, `docs/oakestra.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OakestraApi {
    /// `false`: over TLS only, like every path, and the login takes the generated
    /// admin password only. `true` (`oakestra up`): also over plain HTTP from loopback
    /// peers, for Oakestra's paths only, where Oakestra's fixed Admin/Admin login is
    /// accepted too (its `oak` CLI speaks plain HTTP and cannot be given a password).
    pub plain_loopback: bool,
    /// The service range SLAs' `rr_ip` and `closest_ip` are checked against.
    pub service_cidr: Cidr,
}

impl RootFlags {
    /// The service range (where SLAs' `rr_ip` and `closest_ip` must be).
    pub fn service_cidr(&self) -> Cidr {
        self.service_cidr
    }

    /// The controllers' settings, or `None` with `--no-controllers`; a subnet prefix
    /// that does not fit the pool is refused.
    pub fn config(&self) -> anyhow::Result<Option<RootConfig>> {
        anyhow::ensure!(
            self.cluster_prefix >= self.cluster_cidr.prefix && self.cluster_prefix <= 30,
            "--cluster-prefix /{} must lie between the pool's /{} and /30",
            self.cluster_prefix,
            self.cluster_cidr.prefix
        );
        Ok((!self.no_controllers).then(|| RootConfig {
            cluster_cidr: self.cluster_cidr,
            cluster_prefix: self.cluster_prefix,
            service_cidr: self.service_cidr,
            cluster_grace: Duration::from_secs(self.cluster_grace_seconds),
            cluster_heartbeat_timeout: Duration::from_secs(self.cluster_heartbeat_timeout_seconds),
            ..RootConfig::default()
        }))
    }
}

/// The root's certificate authority under `data`, created at the first start, with a
/// serving certificate for the names clients dial on `listen` (and `tls`'s extra ones).
pub fn authority(
    data: PathBuf,
    listen: SocketAddr,
    tls: &TlsFlags,
) -> anyhow::Result<Arc<Authority>> {
    let sans = server_names(listen, &tls.tls_san);
    Ok(Arc::new(Authority::open(
        TierPaths::new(data),
        ROOT_CA,
        &Identity::Root,
        &sans,
    )?))
}

/// Run the root tier until Ctrl-C or SIGTERM.
pub async fn run(args: RootArgs) -> anyhow::Result<()> {
    let config = args.root.config()?;
    let leader = args
        .leader
        .config(&args.store, crds::ROOT_CONTROLLERS_LEASE, args.listen)?;
    let data = data_dir(
        args.data_dir.as_deref(),
        &args.store,
        "/var/lib/oakestra/root",
    );
    let (authority, shared) = shared_authority(
        data,
        args.listen,
        &args.store,
        &args.tls,
        args.token.as_deref(),
        &args.shared,
    )
    .await?;
    let kubeconfig = authority.paths.admin_kubeconfig();
    admin_kubeconfig_before(&authority, args.listen, "oakestra", &kubeconfig)?;
    let mut running = Running::new();
    let root = start(
        &mut running,
        args.listen,
        args.store,
        args.api.config(),
        config.map(|c| (c, leader)),
        authority.clone(),
        &args.tls,
        OakestraApi {
            plain_loopback: false,
            service_cidr: args.root.service_cidr(),
        },
    )
    .await?;
    if let Some(shared) = shared {
        running.spawn(shared.run(running.shutdown().clone()));
    }
    let url = admin_kubeconfig_after(&authority, root.addr, "oakestra", &kubeconfig)?;
    println!("oakestra root: API at {url}");
    println!("  admin kubeconfig:        {}", kubeconfig.display());
    println!(
        "  join token for clusters: {}",
        authority.paths.join_token().display()
    );
    println!(
        "  Oakestra's API (/api/...): log in as {} with the password in {}",
        oakapi::auth::ADMIN,
        password_file(&authority).display()
    );
    running.until_stopped().await
}

/// The file that holds the password of the administrator's login to Oakestra's API.
pub fn password_file(authority: &Authority) -> PathBuf {
    authority.paths.data().join(oakapi::auth::PASSWORD_FILE)
}

/// Start the root API server on `store`, serving TLS with the root's `authority` and
/// Oakestra's REST API as `oakestra_api` says, and, given a config, the root
/// controllers on it (with a leader election, only while this process leads); both are
/// added to `running`.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    running: &mut Running,
    listen: SocketAddr,
    store: StoreConfig,
    api: ServerConfig,
    controllers: Option<(RootConfig, Option<controllers::leader::LeaderConfig>)>,
    authority: Arc<Authority>,
    tls: &TlsFlags,
    oakestra_api: OakestraApi,
) -> anyhow::Result<Served> {
    // The root's CA vouches for administrators and clusters, nobody else.
    let trusted = vec![Trust {
        ca_pem: authority.ca.cert_pem().to_string(),
        allows: vec![Vouch::Admin, Vouch::Cluster],
    }];
    let hop = Hop::Root {
        paths: authority.paths.clone(),
    };
    let data = authority.paths.data().to_path_buf();
    let mut secured = secure_tier(
        authority,
        Members::Clusters,
        tls.member_lifetime(),
        trusted,
        hop,
    )?;
    oakapi::install(
        &mut secured.security,
        secured.local.clone(),
        oakapi::Settings {
            data_dir: data,
            plain_loopback: oakestra_api.plain_loopback,
            service_cidr: oakestra_api.service_cidr,
        },
    )?;
    // The web dashboard at /ui/ (docs/dashboard.md): it reaches the API as any client.
    let sla = sla::Options {
        service_cidr: oakestra_api.service_cidr,
        replicas: 1,
    };
    let ui = dashboard::routes(dashboard::Settings { sla });
    secured.security.routes = std::mem::take(&mut secured.security.routes).merge(ui);
    let served = running
        .serve_api("root", listen, store, api, secured)
        .await?;
    if let Some((config, leader)) = controllers {
        let client = served.client.clone();
        running.spawn_controllers(served.client.clone(), leader, move |stop| {
            controllers::run_root(client.clone(), config.clone(), stop)
        });
    }
    Ok(served)
}
