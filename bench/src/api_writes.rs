//! Scenario `api-writes`: creates per second and latency of `Cluster` creates through
//! the API (HTTPS, an administrator's client certificate, as every tier serves it), on
//! the embedded store and on etcd, next to raw etcd writes of the same bytes as the
//! lower bound.
//!
//! For each concurrency level, in this order, each run on a fresh store or key prefix:
//!
//! 1. `api/embedded`: an in-process API server on a new embedded store (temp dir);
//!    `api/embedded-http`: the same over plain HTTP without authentication (what every
//!    server served before TLS), the baseline of the cost of TLS;
//! 2. `api/etcd`: an in-process API server on the shared etcd, under a new key root;
//! 3. `raw/etcd-put`: plain etcd-client puts of the bytes the server stored in run 2;
//! 4. `raw/etcd-txn`: the same bytes written with the create-if-absent transaction
//!    that `EtcdStore::create` sends (compare `create_revision == 0`, then put);
//! 5. `raw/etcd-txn+watch`: the same transactions while one etcd watch with `prev_kv`
//!    is open on the run's prefix and drained (not decoded), as the API server's watch
//!    hub keeps one on its root;
//! 6. `api/healthz`: `GET /healthz` to the server of run 2, on the same client, so over
//!    the same TLS connections: one request with no work, the hop a create pays on top
//!    of its transaction. [`floors`] turns it into the best ratio to the raw
//!    transaction a create could reach if the server did nothing else.
//!
//! After the runs, `handshakes`: new connections per second (a fresh client for each
//! `GET /healthz`, so each pays the TCP and, for TLS, the full handshake: clients that
//! present a certificate do not resume sessions) against a TLS and a plain server.
//!
//! Besides client-side latency, each run records the CPU time this process (load
//! generator, plus the in-process server for `api/*`) and the etcd process spent per
//! acknowledged write, and for `api/*` the server's own mean request and storage
//! times from its `/metrics`.
//!
//! Each in-process server runs on its own Tokio runtime (its own worker threads),
//! separate from the load generator's, and the whole runtime is shut down after the
//! run, so no task of an earlier run (the watch hub's storage watch, the embedded
//! writer) keeps running during a later one. Every run first writes `2 × concurrency`
//! unmeasured warm-up objects so connections are open before timing starts.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use apiserver::storage::{embedded, etcd, Storage};
use apiserver::{Server, ServerConfig};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use serde_json::{json, Value};

use crate::procfs;
use crate::prom::{mean_ms, scrape};
use crate::stats::{round3, Summary};

/// Labels of the server's request series for `Cluster` creates.
const CREATE_CLUSTERS: &str = "verb=\"create\",resource=\"clusters\"";
/// Bound on one request; a slower one counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Options {
    /// Measured objects per run.
    pub count: usize,
    pub concurrency: Vec<usize>,
    /// Bound on one run's measured phase; objects not started by then are not written.
    pub run_timeout: Duration,
}

/// What one run wrote to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    ApiEmbedded,
    ApiEmbeddedPlain,
    ApiEtcd,
    RawPut,
    RawTxn,
    RawTxnWatched,
    ApiHealthz,
}

impl Target {
    pub fn label(self) -> &'static str {
        match self {
            Target::ApiEmbedded => "api/embedded",
            Target::ApiEmbeddedPlain => "api/embedded-http",
            Target::ApiEtcd => "api/etcd",
            Target::RawPut => "raw/etcd-put",
            Target::RawTxn => "raw/etcd-txn",
            Target::RawTxnWatched => "raw/etcd-txn+watch",
            Target::ApiHealthz => "api/healthz",
        }
    }
}

/// Server-side means over a run's measured requests, from the server's `/metrics`.
#[derive(Debug, Clone, Copy)]
pub struct ServerSide {
    /// `request_duration_seconds` of creates: from the start of the handler (headers
    /// parsed, body not yet read) until the response is built, before it is sent.
    pub request_mean_ms: f64,
    /// `storage_duration_seconds` of `create`: the store call alone.
    pub storage_create_mean_ms: f64,
}

/// CPU time spent in a measured phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuPerWrite {
    /// µs per acknowledged write in this process's other threads: the load generator.
    pub client_us: Option<f64>,
    /// µs per acknowledged write in the in-process server's threads (`api/*` only).
    pub server_us: Option<f64>,
    /// µs per acknowledged write in etcd.
    pub etcd_us: Option<f64>,
    /// Everything else busy on the machine meanwhile, in cores: should be near 0, or
    /// another workload was competing for the CPUs.
    pub rest_cores: Option<f64>,
}

/// The figures of one (target, concurrency) run.
#[derive(Debug, Clone)]
pub struct Run {
    pub target: Target,
    pub concurrency: usize,
    /// Writes acknowledged.
    pub ok: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub latency: Summary,
    pub server: Option<ServerSide>,
    pub cpu: CpuPerWrite,
}

impl Run {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Run every target at every concurrency level against `etcd_url`.
pub async fn run(opts: &Options, etcd_url: &str) -> anyhow::Result<Vec<Run>> {
    let bench = Bench {
        opts,
        etcd_url,
        etcd_pid: procfs::find_pid_with_arg(&format!("--listen-client-urls={etcd_url}")),
    };
    if bench.etcd_pid.is_none() {
        eprintln!("api-writes: etcd's PID not found in /proc; its CPU time is not reported");
    }
    let mut runs = Vec::new();
    for &c in &opts.concurrency {
        for (target, secure) in [
            (Target::ApiEmbedded, true),
            (Target::ApiEmbeddedPlain, false),
        ] {
            let dir = tempfile::tempdir().context("temp dir for the embedded store")?;
            let store = ServerStore::Embedded(dir.path().join("store"));
            let server = InProcessServer::start(store, secure)
                .await
                .context("starting the API server on the embedded store")?;
            runs.push(bench.api_run(target, c, &server.client).await?);
        }

        let root = format!("/oakbench/api-c{c}");
        let server = InProcessServer::start(
            ServerStore::Etcd {
                url: etcd_url.to_string(),
                root: root.clone(),
            },
            true,
        )
        .await
        .context("starting the API server on etcd")?;
        runs.push(bench.api_run(Target::ApiEtcd, c, &server.client).await?);
        runs.push(bench.hop_run(c, &server.client).await?);
        drop(server);

        let template = stored_bytes(etcd_url, &format!("{root}{}", cluster_key(&name(0))))
            .await
            .context("reading an object the API server stored in etcd")?;
        for target in [Target::RawPut, Target::RawTxn, Target::RawTxnWatched] {
            runs.push(bench.raw_run(target, c, &template).await?);
        }
    }
    Ok(runs)
}

fn name(i: usize) -> String {
    format!("obj-{i:06}")
}

fn warm_name(i: usize) -> String {
    format!("warm-{i:06}")
}

/// The storage key of a `Cluster` (as `apiserver::object::key` makes it).
fn cluster_key(name: &str) -> String {
    format!("/oakestra.io/clusters/{name}")
}

fn cluster(name: &str) -> Value {
    json!({
        "apiVersion": "oakestra.io/v1",
        "kind": "Cluster",
        "metadata": {"name": name},
        "spec": {},
    })
}

struct Bench<'a> {
    opts: &'a Options,
    etcd_url: &'a str,
    etcd_pid: Option<u32>,
}

impl Bench<'_> {
    async fn api_run(
        &self,
        target: Target,
        concurrency: usize,
        server: &client::Client,
    ) -> anyhow::Result<Run> {
        let kind = crds::kind_by_name("Cluster").context("Cluster is a served kind")?;
        let api = server.dynamic(kind, None);
        let create = |name_of: fn(usize) -> String| {
            let api = api.clone();
            move |i: usize| {
                let api = api.clone();
                async move {
                    api.create(&cluster(&name_of(i)))
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string())
                }
            }
        };
        self.warm_up(target, concurrency, create(warm_name)).await?;
        let before = scrape(server).await?;
        let (outcome, cpu) = self.measure(concurrency, create(name)).await;
        let after = scrape(server).await?;
        let server = Some(ServerSide {
            request_mean_ms: mean_ms(&before, &after, "request_duration_seconds", CREATE_CLUSTERS),
            storage_create_mean_ms: mean_ms(
                &before,
                &after,
                "storage_duration_seconds",
                "operation=\"create\"",
            ),
        });
        Ok(outcome.into_run(target, concurrency, server, cpu))
    }

    /// `GET /healthz` on the client's connections: a request the server does nothing for.
    async fn hop_run(&self, concurrency: usize, server: &client::Client) -> anyhow::Result<Run> {
        let get = {
            let server = server.clone();
            move |_: usize| {
                let server = server.clone();
                async move {
                    server
                        .get_text("/healthz")
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string())
                }
            }
        };
        self.warm_up(Target::ApiHealthz, concurrency, get.clone())
            .await?;
        let (outcome, cpu) = self.measure(concurrency, get).await;
        Ok(outcome.into_run(Target::ApiHealthz, concurrency, None, cpu))
    }

    async fn raw_run(
        &self,
        target: Target,
        concurrency: usize,
        template: &[u8],
    ) -> anyhow::Result<Run> {
        let root = match target {
            Target::RawPut => format!("/oakbench/put-c{concurrency}"),
            Target::RawTxn => format!("/oakbench/txn-c{concurrency}"),
            _ => format!("/oakbench/txnw-c{concurrency}"),
        };
        // The values are made before timing starts: the object the server stored, renamed.
        let template: Value = serde_json::from_slice(template).context("stored object is JSON")?;
        let object = |name: &str| -> (String, Vec<u8>) {
            let mut o = template.clone();
            o["metadata"]["name"] = name.into();
            (
                format!("{root}{}", cluster_key(name)),
                serde_json::to_vec(&o).expect("JSON serializes"),
            )
        };
        let warm: Arc<Vec<_>> = Arc::new(
            (0..2 * concurrency)
                .map(|i| object(&warm_name(i)))
                .collect(),
        );
        let measured: Arc<Vec<_>> =
            Arc::new((0..self.opts.count).map(|i| object(&name(i))).collect());
        let mut etcd = etcd_client::Client::connect([self.etcd_url], None)
            .await
            .context("connecting to etcd")?;
        let watch = match target {
            Target::RawTxnWatched => Some(drain_watch(&mut etcd, &format!("{root}/")).await?),
            _ => None,
        };
        let kv = etcd.kv_client();
        let write = |objects: Arc<Vec<(String, Vec<u8>)>>| {
            let kv = kv.clone();
            move |i: usize| {
                let mut kv = kv.clone();
                let (key, value) = objects[i].clone();
                async move {
                    if target == Target::RawPut {
                        return kv
                            .put(key, value, None)
                            .await
                            .map(drop)
                            .map_err(|e| e.to_string());
                    }
                    let txn = Txn::new()
                        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(key.clone(), value, None)])
                        .or_else([TxnOp::get(key.clone(), None)]);
                    match kv.txn(txn).await {
                        Ok(r) if r.succeeded() => Ok(()),
                        Ok(_) => Err(format!("{key} already exists")),
                        Err(e) => Err(e.to_string()),
                    }
                }
            }
        };
        self.warm_up(target, concurrency, write(warm)).await?;
        let (outcome, cpu) = self.measure(concurrency, write(measured)).await;
        if let Some(watch) = watch {
            watch.abort();
        }
        Ok(outcome.into_run(target, concurrency, None, cpu))
    }

    /// `2 × concurrency` unmeasured writes, so every connection is open.
    async fn warm_up<F, Fut>(&self, target: Target, concurrency: usize, op: F) -> anyhow::Result<()>
    where
        F: Fn(usize) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send,
    {
        let warm = drive(2 * concurrency, concurrency, self.opts.run_timeout, op).await;
        anyhow::ensure!(
            warm.errors == 0,
            "{} warm-up failed: {}",
            target.label(),
            warm.first_error.unwrap_or_default()
        );
        Ok(())
    }

    /// The measured phase: `opts.count` calls of `op`, and the CPU time spent on them.
    async fn measure<F, Fut>(&self, concurrency: usize, op: F) -> (Outcome, CpuPerWrite)
    where
        F: Fn(usize) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send,
    {
        let server_threads = || procfs::own_threads_cpu_seconds(is_server_thread);
        let (before, server_before) = (procfs::CpuSample::take(self.etcd_pid), server_threads());
        let outcome = drive(self.opts.count, concurrency, self.opts.run_timeout, op).await;
        let (spent, server_after) = (
            procfs::CpuSample::take(self.etcd_pid).since(&before),
            server_threads(),
        );
        let writes = outcome.latencies.len().max(1) as f64;
        let server = server_after
            .zip(server_before)
            .map(|(a, b)| a - b)
            .filter(|s| *s > 0.0);
        let cpu = CpuPerWrite {
            client_us: spent
                .own
                .map(|s| (s - server.unwrap_or(0.0)) * 1e6 / writes),
            server_us: server.map(|s| s * 1e6 / writes),
            etcd_us: spent.other_process.map(|s| s * 1e6 / writes),
            rest_cores: spent.rest_cores,
        };
        (outcome, cpu)
    }
}

/// Threads of an [`InProcessServer`]: its runtime's and the embedded store's writer
/// (`comm` holds at most 15 bytes).
fn is_server_thread(comm: &str) -> bool {
    comm == SERVER_THREAD || comm.starts_with("embedded-store")
}

/// Name of the threads of an [`InProcessServer`]'s runtime.
const SERVER_THREAD: &str = "apiserver";

/// Open a watch of every key under `prefix` (with previous values, as `EtcdStore`
/// watches) and drain its events in a task.
async fn drain_watch(
    etcd: &mut etcd_client::Client,
    prefix: &str,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let options = etcd_client::WatchOptions::new()
        .with_prefix()
        .with_prev_key();
    let mut stream = etcd
        .watch(prefix, Some(options))
        .await
        .context("opening an etcd watch")?;
    Ok(tokio::spawn(async move {
        while let Ok(Some(_)) = stream.message().await {}
    }))
}

/// What [`drive`] observed.
pub(crate) struct Outcome {
    pub latencies: Vec<Duration>,
    pub errors: usize,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

impl Outcome {
    fn into_run(
        mut self,
        target: Target,
        concurrency: usize,
        server: Option<ServerSide>,
        cpu: CpuPerWrite,
    ) -> Run {
        Run {
            target,
            concurrency,
            ok: self.latencies.len(),
            errors: self.errors,
            first_error: self.first_error,
            elapsed: self.elapsed,
            latency: Summary::of(&mut self.latencies),
            server,
            cpu,
        }
    }
}

/// Call `op(i)` for `i` in `0..count` from `concurrency` tasks, each taking the next
/// index when its previous call is done. Stops taking indexes after `time_bound`; every
/// call is bounded by [`REQUEST_TIMEOUT`].
pub(crate) async fn drive<F, Fut>(
    count: usize,
    concurrency: usize,
    time_bound: Duration,
    op: F,
) -> Outcome
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, op, first_error) = (next.clone(), op.clone(), first_error.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(count / concurrency + 1);
                let mut errors = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count || start.elapsed() > time_bound {
                        break;
                    }
                    let t0 = Instant::now();
                    let error = match tokio::time::timeout(REQUEST_TIMEOUT, op(i)).await {
                        Ok(Ok(())) => {
                            latencies.push(t0.elapsed());
                            continue;
                        }
                        Ok(Err(e)) => e,
                        Err(_) => format!("no answer within {REQUEST_TIMEOUT:?}"),
                    };
                    errors += 1;
                    first_error.lock().expect("error lock").get_or_insert(error);
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut outcome = Outcome {
        latencies: Vec::with_capacity(count),
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
    };
    for task in futures::future::join_all(tasks).await {
        let (latencies, errors) = task.expect("load task panicked");
        outcome.latencies.extend(latencies);
        outcome.errors += errors;
    }
    outcome.elapsed = start.elapsed();
    outcome.first_error = first_error.lock().expect("error lock").take();
    outcome
}

/// The raw value etcd holds under `key`.
async fn stored_bytes(etcd_url: &str, key: &str) -> anyhow::Result<Vec<u8>> {
    let mut client = etcd_client::Client::connect([etcd_url], None).await?;
    let resp = client.get(key, None).await?;
    let kv = resp
        .kvs()
        .first()
        .with_context(|| format!("{key} is not in etcd"))?;
    Ok(kv.value().to_vec())
}

pub(crate) enum ServerStore {
    Embedded(PathBuf),
    Etcd { url: String, root: String },
}

/// An API server in this process, on its own runtime, on `127.0.0.1:0`, secured as
/// `oakestra root` serves: TLS with a certificate of a CA of its own, administrators'
/// client certificates of that CA only (or, for the baseline, plain HTTP).
pub(crate) struct InProcessServer {
    /// An administrator's client of it.
    pub(crate) client: client::Client,
    /// Its URL, and the admin kubeconfig when it serves TLS.
    url: String,
    kubeconfig: Option<PathBuf>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Its CA, certificates and admin kubeconfig.
    _credentials: tempfile::TempDir,
}

/// The security of an [`InProcessServer`] with its CA and certificates under `dir`,
/// and that CA.
fn security(dir: &Path) -> anyhow::Result<(apiserver::auth::Security, trust::Authority)> {
    let authority = trust::Authority::open(
        trust::TierPaths::new(dir),
        "oakbench CA",
        &pki::Identity::Root,
        &["127.0.0.1".to_string()],
    )?;
    let admins = pki::Trust {
        ca_pem: authority.ca.cert_pem().to_string(),
        allows: vec![pki::Vouch::Admin],
    };
    let authenticator = pki::Authenticator::new(vec![admins], None)?;
    let (security, _) =
        trust::authn::security(&authority.serving, authenticator, axum::Router::new())?;
    Ok((security, authority))
}

impl InProcessServer {
    pub(crate) async fn start(store: ServerStore, secure: bool) -> anyhow::Result<InProcessServer> {
        let credentials = tempfile::tempdir().context("temp dir for the server's CA")?;
        let (security, authority) = security(credentials.path())?;
        let config = ServerConfig {
            security: secure.then_some(security),
            ..ServerConfig::default()
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name(SERVER_THREAD)
            .build()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        runtime.spawn(async move {
            let store: Result<Arc<dyn Storage>, String> = match store {
                ServerStore::Embedded(dir) => {
                    embedded::EmbeddedStore::open(&dir, embedded::EmbeddedOptions::default())
                        .map(|s| Arc::new(s) as Arc<dyn Storage>)
                        .map_err(|e| e.to_string())
                }
                ServerStore::Etcd { url, root } => etcd::EtcdStore::connect(&[url], &root)
                    .await
                    .map(|s| Arc::new(s) as Arc<dyn Storage>)
                    .map_err(|e| e.to_string()),
            };
            let started = match store {
                Ok(store) => Server::start_with_store(([127, 0, 0, 1], 0).into(), store, config)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match started {
                Ok(server) => {
                    let _ = tx.send(Ok(server.addr));
                    server.wait().await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
        let addr = rx
            .await
            .context("the server task ended")?
            .map_err(anyhow::Error::msg)?;
        let (url, kubeconfig) = if secure {
            let kubeconfig = credentials.path().join("admin.kubeconfig");
            let url = format!("https://{addr}");
            authority.write_admin_kubeconfig(&url, "oakbench", &kubeconfig)?;
            (url, Some(kubeconfig))
        } else {
            (format!("http://{addr}"), None)
        };
        Ok(InProcessServer {
            client: connect(&url, kubeconfig.as_deref())?,
            url,
            kubeconfig,
            runtime: Some(runtime),
            _credentials: credentials,
        })
    }

    /// A new client of it, with a connection pool of its own.
    fn connect(&self) -> anyhow::Result<client::Client> {
        connect(&self.url, self.kubeconfig.as_deref())
    }
}

/// An administrator's client of the server at `url`: from its admin kubeconfig when
/// it serves TLS, else plain.
fn connect(url: &str, kubeconfig: Option<&Path>) -> anyhow::Result<client::Client> {
    Ok(match kubeconfig {
        Some(kubeconfig) => e2e::tier_client(kubeconfig),
        None => client::Client::new(url)?,
    })
}

impl Drop for InProcessServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

pub fn to_json(runs: &[Run]) -> Value {
    Value::Array(
        runs.iter()
            .map(|r| {
                let base = baseline_of(runs, r);
                json!({
                    "target": r.target.label(),
                    "concurrency": r.concurrency,
                    "ok": r.ok,
                    "errors": r.errors,
                    "first_error": r.first_error,
                    "elapsed_s": round3(r.elapsed.as_secs_f64()),
                    "creates_per_s": round3(r.per_second()),
                    "latency": r.latency.to_json(),
                    "server_request_mean_ms": r.server.map(|s| round3(s.request_mean_ms)),
                    "server_storage_create_mean_ms": r.server.map(|s| round3(s.storage_create_mean_ms)),
                    "cpu_us_per_write": {
                        "client": r.cpu.client_us.map(round3),
                        "server": r.cpu.server_us.map(round3),
                        "etcd": r.cpu.etcd_us.map(round3),
                    },
                    "other_load_cores": r.cpu.rest_cores.map(round3),
                    "baseline": base.map(|b| b.target.label()),
                    "over_baseline_throughput": base.map(|b| round3(r.per_second() / b.per_second())),
                    "over_baseline_p99": base.map(|b| round3(r.latency.p99_ms / b.latency.p99_ms)),
                    "p99_minus_baseline_ms": base.map(|b| round3(r.latency.p99_ms - b.latency.p99_ms)),
                })
            })
            .collect(),
    )
}

/// The run `run` is compared with, at the same concurrency: raw etcd puts for
/// `api/etcd`, plain HTTP for `api/embedded` (the cost of TLS).
pub fn baseline_of<'a>(runs: &'a [Run], run: &Run) -> Option<&'a Run> {
    let baseline = match run.target {
        Target::ApiEtcd => Target::RawPut,
        Target::ApiEmbedded => Target::ApiEmbeddedPlain,
        _ => return None,
    };
    runs.iter()
        .find(|p| p.target == baseline && p.concurrency == run.concurrency)
}

/// `api/etcd` against the raw create transaction at one concurrency, and what bounds it.
#[derive(Debug, Clone, Copy)]
pub struct Floor {
    pub concurrency: usize,
    /// api/etcd creates/s ÷ raw transactions/s (#20's target: ≥ 0.9×).
    pub over_txn: f64,
    /// p50s, in ms: the create, the transaction, and the hop (`GET /healthz`).
    pub api_p50_ms: f64,
    pub txn_p50_ms: f64,
    pub hop_p50_ms: f64,
    /// The best ratio a create could reach if the server did nothing but the hop and
    /// the transaction: txn ÷ (txn + hop) at p50. A bound only where the load is
    /// latency-bound (c = 1: one request at a time).
    pub bound: f64,
}

/// A [`Floor`] for each concurrency that has the three runs.
pub fn floors(runs: &[Run]) -> Vec<Floor> {
    let find = |target, c| {
        runs.iter()
            .find(|r| r.target == target && r.concurrency == c)
    };
    let mut out = Vec::new();
    for api in runs.iter().filter(|r| r.target == Target::ApiEtcd) {
        let c = api.concurrency;
        let (Some(txn), Some(hop)) = (find(Target::RawTxn, c), find(Target::ApiHealthz, c)) else {
            continue;
        };
        let (txn_p50, hop_p50) = (txn.latency.p50_ms, hop.latency.p50_ms);
        out.push(Floor {
            concurrency: c,
            over_txn: api.per_second() / txn.per_second().max(1e-9),
            api_p50_ms: api.latency.p50_ms,
            txn_p50_ms: txn_p50,
            hop_p50_ms: hop_p50,
            bound: txn_p50 / (txn_p50 + hop_p50).max(1e-9),
        });
    }
    out
}

/// [`floors`] as JSON.
pub fn floors_json(runs: &[Run]) -> Value {
    Value::Array(
        floors(runs)
            .iter()
            .map(|f| {
                json!({
                    "concurrency": f.concurrency,
                    "api_over_raw_txn": round3(f.over_txn),
                    "api_p50_ms": round3(f.api_p50_ms),
                    "txn_p50_ms": round3(f.txn_p50_ms),
                    "hop_p50_ms": round3(f.hop_p50_ms),
                    "bound_with_no_server_work": round3(f.bound),
                })
            })
            .collect(),
    )
}

pub fn print(runs: &[Run]) {
    println!(
        "\napi-writes: Cluster creates ({} per run; srv = the server's own mean times; \
         cpu = µs of CPU per write in the load generator, the server and etcd; \
         other = cores busy with anything else; base = raw etcd puts for api/etcd, plain \
         HTTP for api/embedded)",
        runs.first().map(|r| r.ok + r.errors).unwrap_or_default()
    );
    println!(
        "{:<18} {:>4} {:>5} {:>3} {:>9} {:>7} {:>7} {:>6} {:>9} {:>6} {:>6} {:>6} {:>5} {:>8} {:>8} {:>8}",
        "target",
        "conc",
        "ok",
        "err",
        "creates/s",
        "p50 ms",
        "p99 ms",
        "srv ms",
        "srv store",
        "client",
        "server",
        "etcd",
        "other",
        "thr/base",
        "p99/base",
        "p99-base"
    );
    let opt = |v: Option<f64>, prec: usize| match v {
        Some(v) => format!("{v:.prec$}"),
        None => "-".into(),
    };
    for r in runs {
        let base = baseline_of(runs, r);
        println!(
            "{:<18} {:>4} {:>5} {:>3} {:>9.0} {:>7.2} {:>7.2} {:>6} {:>9} {:>6} {:>6} {:>6} {:>5} {:>8} {:>8} {:>8}",
            r.target.label(),
            r.concurrency,
            r.ok,
            r.errors,
            r.per_second(),
            r.latency.p50_ms,
            r.latency.p99_ms,
            opt(r.server.map(|s| s.request_mean_ms), 2),
            opt(r.server.map(|s| s.storage_create_mean_ms), 2),
            opt(r.cpu.client_us, 0),
            opt(r.cpu.server_us, 0),
            opt(r.cpu.etcd_us, 0),
            opt(r.cpu.rest_cores, 2),
            opt(base.map(|b| r.per_second() / b.per_second()), 2),
            opt(base.map(|b| r.latency.p99_ms / b.latency.p99_ms), 2),
            opt(base.map(|b| r.latency.p99_ms - b.latency.p99_ms), 2),
        );
        if let Some(e) = &r.first_error {
            println!("    first error: {e}");
        }
    }
    println!(
        "api/etcd against the raw create transaction (target ≥ 0.9×); hop = a GET /healthz \
         on the same connections; bound = txn ÷ (txn + hop) at p50, what a create would reach \
         if the server did nothing else (a bound where one request runs at a time, c = 1)"
    );
    for f in floors(runs) {
        println!(
            "  c = {:<3} {:.2}× the txn; p50 {:.2} ms = txn {:.2} + hop {:.2} + {:.2} in the server; bound {:.2}×",
            f.concurrency,
            f.over_txn,
            f.api_p50_ms,
            f.txn_p50_ms,
            f.hop_p50_ms,
            f.api_p50_ms - f.txn_p50_ms - f.hop_p50_ms,
            f.bound,
        );
    }
}

/// New connections per second to one server: `count` `GET /healthz`, each through a
/// fresh client (a new TCP connection and, over TLS, a full handshake).
pub struct Handshakes {
    /// `tls` or `http`.
    pub transport: &'static str,
    pub per_second: f64,
    pub latency: Summary,
}

/// [`Handshakes`] against a TLS and a plain server on fresh embedded stores.
pub async fn handshakes(count: usize) -> anyhow::Result<Vec<Handshakes>> {
    let mut out = Vec::new();
    for (transport, secure) in [("tls", true), ("http", false)] {
        let dir = tempfile::tempdir().context("temp dir for the embedded store")?;
        let server =
            InProcessServer::start(ServerStore::Embedded(dir.path().join("store")), secure).await?;
        let mut latencies = Vec::with_capacity(count);
        for _ in 0..count {
            // Made before the clock starts: only the connection and the request count.
            let fresh = server.connect()?;
            let t0 = Instant::now();
            fresh.get_text("/healthz").await?;
            latencies.push(t0.elapsed());
        }
        let busy: Duration = latencies.iter().sum();
        out.push(Handshakes {
            transport,
            per_second: count as f64 / busy.as_secs_f64().max(1e-9),
            latency: Summary::of(&mut latencies),
        });
    }
    Ok(out)
}

pub fn handshakes_json(runs: &[Handshakes]) -> Value {
    Value::Array(
        runs.iter()
            .map(|h| {
                json!({
                    "transport": h.transport,
                    "connections_per_s": round3(h.per_second),
                    "latency": h.latency.to_json(),
                })
            })
            .collect(),
    )
}

pub fn print_handshakes(runs: &[Handshakes]) {
    println!(
        "\nhandshakes: a new connection per GET /healthz (TLS: full handshakes; clients \
         with a certificate do not resume sessions)"
    );
    println!("{:<6} {:>9} {:>7} {:>7}", "", "conn/s", "p50 ms", "p99 ms");
    for h in runs {
        println!(
            "{:<6} {:>9.0} {:>7.2} {:>7.2}",
            h.transport, h.per_second, h.latency.p50_ms, h.latency.p99_ms
        );
    }
}
