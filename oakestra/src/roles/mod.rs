//! The roles of the `oakestra` binary, one file each, and what they share: the API
//! server flags, in-process clients, and running until Ctrl-C or SIGTERM.
//!
//! Each role has an `Args` (its flags) and a `run`; the roles that `up` combines also
//! have a `start` that leaves them running in this process, so that `up` composes
//! them instead of wiring the crates again.

pub mod backup;
pub mod cluster;
pub mod credentials;
pub mod down;
pub mod hollow;
pub mod logs;
pub mod root;
pub mod up;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use apiserver::{Server, ServerConfig, StoreConfig};
use clap::Args;
use crds::Location;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Flags of every API server (root and cluster).
#[derive(Args)]
pub struct ApiFlags {
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = 3 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Recent changes kept for watches that resume in the past (older: 410 Gone).
    #[arg(long, default_value_t = 10_000)]
    watch_cache_events: usize,
}

impl ApiFlags {
    /// The server settings these flags give.
    pub fn config(&self) -> ServerConfig {
        ServerConfig {
            max_body_bytes: self.max_body_bytes,
            watch_cache_events: self.watch_cache_events,
            ..ServerConfig::default()
        }
    }
}

/// Leader election of a tier's controllers on etcd (root and cluster), with
/// kube-controller-manager's flags and defaults. On etcd every process of a tier
/// serves the API, and the controllers run in the one that holds the tier's Lease
/// (`crds::LEADER_LEASES`); the embedded store has one process, which always runs them.
#[derive(Args)]
pub struct LeaderFlags {
    /// How long standbys wait, from the last renewal of the controllers' Lease they
    /// saw, before one of them takes the controllers over.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    leader_elect_lease_duration: Duration,
    /// How long the leader keeps its controllers running while it cannot renew the
    /// Lease (shorter than the lease duration: the difference is the time they get to
    /// stop before a standby may start its own).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    leader_elect_renew_deadline: Duration,
    /// How often standbys try to take the Lease and the leader renews it.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    leader_elect_retry_period: Duration,
}

impl LeaderFlags {
    /// The election of Lease `lease` by this process, serving on `listen`, when `store`
    /// is etcd; `None` on the embedded store. Settings that cannot work are refused
    /// with the flag's name.
    pub fn config(
        &self,
        store: &StoreConfig,
        lease: &str,
        listen: SocketAddr,
    ) -> anyhow::Result<Option<controllers::leader::LeaderConfig>> {
        if !matches!(store, StoreConfig::Etcd(_)) {
            return Ok(None);
        }
        let config = controllers::leader::LeaderConfig {
            // The host, a random part, and the port it serves on: unique among the
            // candidates, and telling an operator which process leads.
            identity: format!(
                "{}_{}",
                controllers::leader::default_identity(),
                listen.port()
            ),
            lease_duration: self.leader_elect_lease_duration,
            renew_deadline: self.leader_elect_renew_deadline,
            retry_period: self.leader_elect_retry_period,
            ..controllers::leader::LeaderConfig::new(lease, "")
        };
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("--leader-elect-*: {e}"))?;
        Ok(Some(config))
    }
}

/// How the processes of a tier on one etcd (several roots; a cluster's standbys) share
/// its credentials (`trust::shared`).
#[derive(Args)]
pub struct SharedFlags {
    /// A file whose content seals the credentials the processes of this tier on its etcd
    /// share (default: the token the first of them was started with); every process
    /// of the tier must be given the same.
    #[arg(long)]
    pub store_key_file: Option<std::path::PathBuf>,
}

/// Where a process keeps the passphrase that opened its tier's shared credentials, so
/// that it restarts without `--token` (private, never shared).
const STORE_KEY: &str = "pki/store-key";

impl SharedFlags {
    /// The shared credentials of `tier` in the etcd at `endpoints`, synced once with the
    /// `files` under `data`. Their passphrase is `--store-key-file`'s, else the one this
    /// process used before, else `token`; when none is known and the store holds none
    /// yet, this process is the tier's first and `first` makes it. A `token` pins the CA
    /// in `pinned` (a path under `data`): the shared one must be it.
    #[allow(clippy::too_many_arguments)]
    pub async fn open(
        &self,
        endpoints: &[String],
        tier: &str,
        data: &std::path::Path,
        files: Vec<trust::shared::SharedFile>,
        token: Option<&str>,
        pinned: &str,
        first: impl FnOnce() -> anyhow::Result<String>,
    ) -> anyhow::Result<trust::shared::SharedTrust> {
        let store = trust::shared::connect(endpoints)
            .await
            .with_context(|| format!("connecting to etcd at {}", endpoints.join(",")))?;
        let saved = data.join(STORE_KEY);
        let given = match &self.store_key_file {
            Some(file) => Some(
                std::fs::read_to_string(file)
                    .with_context(|| format!("--store-key-file {}", file.display()))?,
            ),
            None => std::fs::read_to_string(&saved)
                .ok()
                .or(token.map(String::from)),
        };
        let passphrase = match given.map(|p| p.trim().to_string()) {
            Some(p) if !p.is_empty() => p,
            _ if trust::shared::SharedTrust::stored(&*store, tier).await? => anyhow::bail!(
                "the etcd at {} holds the credentials of the {tier} processes already running on it: start this one with --token and the token the first of them was started with (for roots: the first root's DATA/join-token), or with their --store-key-file",
                endpoints.join(",")
            ),
            _ => first()?,
        };
        let shared = trust::shared::SharedTrust::new(
            store,
            tier,
            data.to_path_buf(),
            files,
            pki::Sealer::new(&passphrase),
        );
        // Take what the others share before this process makes anything of its own.
        shared.sync().await?;
        if let Some(token) = token {
            let pin: pki::JoinToken = token.parse().context("--token")?;
            let path = data.join(pinned);
            if let Ok(ca) = std::fs::read_to_string(&path) {
                anyhow::ensure!(
                    pki::ca_hash(&ca)? == pin.ca_hash,
                    "--token pins another CA than the one the {tier} processes on this etcd share ({})",
                    path.display()
                );
            }
        }
        if self.store_key_file.is_none() {
            pki::write_private(&saved, format!("{passphrase}\n").as_bytes())?;
        }
        Ok(shared)
    }
}

/// TLS flags of a tier that serves an API and admits members (root and cluster).
#[derive(Args)]
pub struct TlsFlags {
    /// More names or addresses for the API's serving certificate: every name clients
    /// dial this server by (loopback, the host name and the listen address are in).
    #[arg(long = "tls-san", value_delimiter = ',')]
    pub tls_san: Vec<String>,
    /// Lifetime, in seconds, of the client certificates issued to members that join
    /// (they renew at two thirds of it).
    #[arg(long, default_value_t = trust::dir::MEMBER_LIFETIME.as_secs())]
    pub member_cert_seconds: u64,
}

impl TlsFlags {
    /// The lifetime of members' certificates.
    pub fn member_lifetime(&self) -> Duration {
        Duration::from_secs(self.member_cert_seconds.max(1))
    }
}

/// The in-process client of an API server this process starts, for the routes served
/// beside the API (the log proxy, Oakestra's facade). The server accepts connections
/// before it can hand its client over, so a request in that window waits for it
/// (up to [`LocalClient::WAIT`]) instead of failing.
#[derive(Clone, Default)]
pub struct LocalClient(Arc<tokio::sync::watch::Sender<Option<client::Client>>>);

impl LocalClient {
    /// How long a request waits for a server that is starting.
    pub const WAIT: Duration = Duration::from_secs(10);

    /// The server runs: hand its client over.
    pub fn set(&self, client: client::Client) {
        self.0.send_replace(Some(client));
    }

    /// The client, once the server hands it over; `None` if it did not within
    /// [`LocalClient::WAIT`].
    pub async fn get(&self) -> Option<client::Client> {
        let mut ready = self.0.subscribe();
        let client = tokio::time::timeout(Self::WAIT, ready.wait_for(Option::is_some))
            .await
            .ok()?
            .ok()?;
        client.clone()
    }
}

/// What a tier's API server serves with: TLS and authentication from its authority,
/// beside the API its join, renewal and log routes; `local` is where the log proxy
/// finds the server's in-process client once the server runs.
pub struct Secured {
    security: apiserver::auth::Security,
    local: LocalClient,
}

/// The security of a tier whose CA is `authority`'s, admitting `members` (certificates
/// of `lifetime`), trusting the CAs in `trusted` for the identities each may vouch
/// for, and proxying logs on as `hop` says.
pub fn secure_tier(
    authority: Arc<trust::Authority>,
    members: trust::join::Members,
    lifetime: Duration,
    trusted: Vec<pki::Trust>,
    hop: logs::Hop,
) -> anyhow::Result<Secured> {
    let local = LocalClient::default();
    let proxy = logs::LogProxy {
        hop,
        proxy: authority.proxy.clone(),
        local: local.clone(),
    };
    let tokens = pki::TokenStore::open(&authority.paths.tokens())?;
    let serving = authority.serving.clone();
    let join = trust::join::JoinService {
        authority,
        members,
        lifetime,
    };
    let routes = trust::join::routes(Arc::new(join)).merge(logs::routes(Arc::new(proxy)));
    let authenticator = pki::Authenticator::new(trusted, Some(tokens))?;
    let (security, _) = trust::authn::security(&serving, authenticator, routes)?;
    Ok(Secured { security, local })
}

/// A duration as flags take it: a whole number and a unit, `500ms`, `30s`, `15m`, `24h`
/// or `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit, e.g. 24h"))?;
    let millis = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?}: the unit must be ms, s, m, h or d")),
    };
    n.checked_mul(millis)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?}: too long"))
}

/// `LAT,LON` in degrees, as `--location` takes it.
pub fn parse_location(s: &str) -> Result<Location, String> {
    let (lat, lon) = s
        .split_once(',')
        .ok_or_else(|| format!("{s:?}: expected LAT,LON"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<f64>()
            .map_err(|_| format!("{s:?}: {v:?} is not a number"))
    };
    Ok(Location {
        latitude: parse(lat)?,
        longitude: parse(lon)?,
        place: None,
    })
}

/// An API server started in this process: the address it listens on, and a client
/// that reaches it in memory.
pub struct Served {
    /// The address it listens on, as bound (e.g. `0.0.0.0:10000`).
    pub addr: SocketAddr,
    /// Its in-process client, for controllers and agents in this process.
    pub client: client::Client,
}

/// The `https://` URL of a server listening on `addr`, as a client on this machine
/// dials it (a wildcard address becomes loopback).
pub fn url_of(addr: SocketAddr) -> String {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("https://{addr}")
}

/// A client of a server in this process: the controllers' requests reach it in memory
/// (see `client::Client::in_process`) with the identity of the server's own
/// controllers; the URL is the one it listens on.
pub fn local_client(server: &Server) -> anyhow::Result<client::Client> {
    Ok(client::Client::in_process(
        &url_of(server.addr),
        Arc::new(server.local()),
    )?)
}

/// Write the admin kubeconfig of `authority`'s API, listening on `listen`, to `path`
/// before the API serves, so a client that sees the port open finds the file (with
/// port 0 the port is not known yet: [`admin_kubeconfig_after`] writes it).
pub fn admin_kubeconfig_before(
    authority: &trust::Authority,
    listen: SocketAddr,
    name: &str,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    if listen.port() != 0 {
        authority.ensure_admin_kubeconfig(&url_of(listen), name, path)?;
    }
    Ok(())
}

/// The admin kubeconfig for the API now listening on `addr` (nothing to do when
/// [`admin_kubeconfig_before`] wrote it); returns the API's URL.
pub fn admin_kubeconfig_after(
    authority: &trust::Authority,
    addr: SocketAddr,
    name: &str,
    path: &std::path::Path,
) -> anyhow::Result<String> {
    let url = url_of(addr);
    authority.ensure_admin_kubeconfig(&url, name, path)?;
    Ok(url)
}

/// Where a tier keeps its credentials: `--data-dir`, else the embedded store's
/// directory, else `default`.
pub fn data_dir(
    flag: Option<&std::path::Path>,
    store: &StoreConfig,
    default: &str,
) -> std::path::PathBuf {
    match (flag, store) {
        (Some(dir), _) => dir.to_path_buf(),
        (None, StoreConfig::Embedded(dir)) => dir.clone(),
        (None, _) => default.into(),
    }
}

/// What roles left running in this process: API servers and background tasks, all
/// stopped through one cancellation token.
pub struct Running {
    servers: Vec<Server>,
    tasks: Vec<JoinHandle<()>>,
    shutdown: CancellationToken,
}

impl Running {
    /// How long a stopping server waits for the requests in flight.
    pub const DRAIN: Duration = Duration::from_secs(10);

    /// Nothing running yet, with a fresh token for the tasks added later.
    pub fn new() -> Running {
        Running {
            servers: Vec::new(),
            tasks: Vec::new(),
            shutdown: CancellationToken::new(),
        }
    }

    /// The token every task of this set stops on.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Start the API server of `tier` (`root`, `cluster`) on `listen` and `store`,
    /// serving TLS as `secured` says, serve it until the end, and hand back its address
    /// and in-process client.
    pub async fn serve_api(
        &mut self,
        tier: &str,
        listen: SocketAddr,
        store: StoreConfig,
        mut api: ServerConfig,
        secured: Secured,
    ) -> anyhow::Result<Served> {
        api.security = Some(secured.security);
        let server = Server::start(listen, store.clone(), api)
            .await
            .with_context(|| {
                format!("starting the {tier} API server on {listen} with store {store:?}")
            })?;
        let client = local_client(&server)?;
        secured.local.set(client.clone());
        let addr = server.addr;
        self.servers.push(server);
        Ok(Served { addr, client })
    }

    /// Run a tier's controllers, `work`, on the API `client` reaches: with `leader`, only
    /// while this process holds the Lease (started again each time it is won, stopped
    /// when it is lost); without, until the end.
    pub fn spawn_controllers<F, Fut>(
        &mut self,
        client: client::Client,
        leader: Option<controllers::leader::LeaderConfig>,
        mut work: F,
    ) where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let shutdown = self.shutdown.clone();
        match leader {
            Some(leader) => self.spawn(controllers::leader::run_elected(
                client, leader, shutdown, work,
            )),
            None => self.spawn(work(shutdown)),
        }
    }

    /// Also wait (a little) for `task` when stopping.
    pub fn spawn(&mut self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(task));
    }

    /// Serve until Ctrl-C or SIGTERM (or a server stops), then stop: the servers stop
    /// accepting and answer what is in flight (at most [`Running::DRAIN`]), then the
    /// tasks stop.
    pub async fn until_stopped(self) -> anyhow::Result<()> {
        let drains: Vec<_> = self.servers.iter().map(Server::drainer).collect();
        let stopped =
            futures::future::select_all(self.servers.into_iter().map(|s| Box::pin(s.wait())));
        let result = tokio::select! {
            _ = stopped => Err(anyhow::anyhow!("an API server stopped")),
            signal = stop_signal() => {
                tracing::info!(signal, "shutting down");
                Ok(())
            }
        };
        for drain in &drains {
            let left = drain.drain(Self::DRAIN).await;
            if left > 0 {
                tracing::warn!(requests = left, "stopping with requests still in flight");
            }
        }
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        result
    }
}

/// Wait until the process is asked to stop: Ctrl-C (SIGINT) or SIGTERM, the signal
/// `kill`, systemd and `scripts/up.sh` stop it with. Returns the signal's name.
pub async fn stop_signal() -> &'static str {
    let mut term = signal(SignalKind::terminate()).expect("install a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_number_and_a_unit() {
        let cases: [(&str, Result<u64, &str>); 8] = [
            ("500ms", Ok(500)),
            ("30s", Ok(30_000)),
            ("15m", Ok(900_000)),
            ("24h", Ok(86_400_000)),
            ("7d", Ok(604_800_000)),
            ("24", Err("the unit must be")),
            ("h", Err("expected a number")),
            ("99999999999999999d", Err("too long")),
        ];
        for (input, expected) in cases {
            match (parse_duration(input), expected) {
                (Ok(d), Ok(ms)) => assert_eq!(d.as_millis(), u128::from(ms), "{input}"),
                (Err(e), Err(part)) => assert!(e.contains(part), "{input}: {e}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_request_before_the_server_hands_its_client_over_waits_for_it() {
        let local = LocalClient::default();
        let asking = tokio::spawn({
            let local = local.clone();
            async move { local.get().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !asking.is_finished(),
            "answered before the client was there"
        );
        local.set(client::Client::new("http://127.0.0.1:1").unwrap());
        let got = asking.await.unwrap().expect("the client, once set");
        assert!(
            got.base().starts_with("http://127.0.0.1:1"),
            "{}",
            got.base()
        );
    }
}
