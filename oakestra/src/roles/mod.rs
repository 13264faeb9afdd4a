//! The roles of the `oakestra` binary, one file each, and what they share: the API
//! server flags, in-process clients, and running until Ctrl-C or SIGTERM.
//!
//! Each role has an `Args` (its flags) and a `run`; the roles that `up` combines also
//! have a `start` that leaves them running in this process, so that `up` composes
//! them instead of wiring the crates again.

pub mod cluster;
pub mod down;
pub mod hollow;
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

/// A client of a server in this process: the controllers' requests reach it in memory
/// (see `client::Client::in_process`); the URL is the one it listens on.
pub fn local_client(server: &Server) -> anyhow::Result<client::Client> {
    let mut addr = server.addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok(client::Client::in_process(
        &format!("http://{addr}"),
        Arc::new(server.local()),
    )?)
}

/// What roles left running in this process: API servers and background tasks, all
/// stopped through one cancellation token.
pub struct Running {
    servers: Vec<Server>,
    tasks: Vec<JoinHandle<()>>,
    shutdown: CancellationToken,
}

impl Running {
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
    /// serve it until the end, and hand back its address and in-process client.
    pub async fn serve_api(
        &mut self,
        tier: &str,
        listen: SocketAddr,
        store: StoreConfig,
        api: ServerConfig,
    ) -> anyhow::Result<Served> {
        let server = Server::start(listen, store.clone(), api)
            .await
            .with_context(|| {
                format!("starting the {tier} API server on {listen} with store {store:?}")
            })?;
        let client = local_client(&server)?;
        let addr = server.addr;
        self.servers.push(server);
        Ok(Served { addr, client })
    }

    /// Also wait (a little) for `task` when stopping.
    pub fn spawn(&mut self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(task));
    }

    /// Serve until Ctrl-C or SIGTERM (or a server stops), then stop the tasks.
    pub async fn until_stopped(self) -> anyhow::Result<()> {
        let stopped =
            futures::future::select_all(self.servers.into_iter().map(|s| Box::pin(s.wait())));
        let result = tokio::select! {
            _ = stopped => Err(anyhow::anyhow!("an API server stopped")),
            signal = stop_signal() => {
                tracing::info!(signal, "shutting down");
                Ok(())
            }
        };
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
