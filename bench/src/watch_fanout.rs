//! Scenario `watch-fanout`: delivery delay of one change to many watchers, and the
//! memory the server process spends per watcher.
//!
//! A real `oakestra root` process on an embedded store (temp dir) serves N watches of
//! `clusters`, each opened with `resourceVersion` = the list's version, each on its own
//! HTTP connection. Then M `Cluster` objects are created one at a time (the next create
//! is sent when the previous one is acknowledged). Each write's acknowledgement time
//! is taken when the client has the create's response; each watcher takes the receipt
//! time when the client yields the `ADDED` event. Delay = receipt − acknowledgement,
//! per watcher per event. The server's resident memory (`VmRSS`) is read from
//! `/proc/PID/status` before the watchers are opened, after, and after the writes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use client::{ListParams, WatchEvent};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::stats::{ms, round3, Summary};

/// Bound on one request (a create, or the answer to a watch request).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Watch requests in flight at once while opening.
const OPEN_PARALLELISM: usize = 32;
/// How long watchers may take to receive everything after the last write.
const DELIVERY_GRACE: Duration = Duration::from_secs(60);

pub struct Options {
    pub watchers: usize,
    pub events: usize,
    /// The `oakestra` binary to run; `None`: `e2e::RootServer`'s (the debug build).
    pub oakestra: Option<PathBuf>,
    /// Run the root controllers in the server process too (`oakestra root` without
    /// `--no-controllers`).
    pub controllers: bool,
    /// Bound on the writes phase; writes not started by then are not made.
    pub time_bound: Duration,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub binary: PathBuf,
    pub controllers: bool,
    pub watchers_requested: usize,
    pub watchers_opened: usize,
    pub open_errors: usize,
    pub first_error: Option<String>,
    pub open_elapsed: Duration,
    /// The server's own `watchers` gauge after opening.
    pub server_watchers: f64,
    pub writes_ok: usize,
    pub write_errors: usize,
    pub write_latency: Summary,
    /// Events expected: watchers opened × writes acknowledged.
    pub expected: usize,
    /// Distinct (watcher, object) events received.
    pub received: usize,
    pub watch_errors: usize,
    /// Events a watcher had before the writer had the acknowledgement (delay 0).
    pub before_ack: usize,
    /// Receipt − acknowledgement.
    pub delay: Summary,
    /// Receipt − the time the create was sent (includes the create's own latency).
    pub delay_from_send: Summary,
    /// From the first write sent to the last event received.
    pub delivery_elapsed: Duration,
    /// CPU spent from the first write until every watcher was done (or stopped):
    /// `own` = this process (writer and watchers), `other_process` = the server.
    pub cpu: crate::procfs::CpuSpent,
    pub rss_before_kib: u64,
    pub rss_after_open_kib: u64,
    pub rss_after_writes_kib: u64,
}

impl Report {
    pub fn rss_per_watcher_kib(&self) -> f64 {
        (self.rss_after_open_kib as f64 - self.rss_before_kib as f64)
            / self.watchers_opened.max(1) as f64
    }
}

fn name(i: usize) -> String {
    format!("fan-{i:06}")
}

fn index(object: &Value) -> Option<usize> {
    object["metadata"]["name"]
        .as_str()?
        .strip_prefix("fan-")?
        .parse()
        .ok()
}

pub async fn run(opts: &Options) -> anyhow::Result<Report> {
    let dir = tempfile::tempdir().context("temp dir for the server's store")?;
    let server = start_server(opts.oakestra.clone(), opts.controllers, dir.path()).await?;
    let pid = server.pid().context("the server process has no PID")?;
    let admin = server.client();
    let kind = crds::kind_by_name("Cluster").context("Cluster is a served kind")?;
    let api = admin.dynamic(kind, None);

    let list = tokio::time::timeout(REQUEST_TIMEOUT, api.list(&ListParams::default()))
        .await
        .context("listing clusters timed out")??;
    let version = list["metadata"]["resourceVersion"]
        .as_str()
        .context("the list has a resourceVersion")?
        .to_string();
    settle().await;
    let rss_before_kib = crate::procfs::rss_kib(pid)?;

    // Open the watchers. All share one reqwest client; each stream holds a connection.
    let params = ListParams {
        resource_version: Some(version),
        ..ListParams::default()
    };
    let open_started = Instant::now();
    let opened: Vec<_> = futures::stream::iter(0..opts.watchers)
        .map(|_| {
            let (api, params) = (api.clone(), params.clone());
            async move { tokio::time::timeout(REQUEST_TIMEOUT, api.watch(&params)).await }
        })
        .buffer_unordered(OPEN_PARALLELISM)
        .collect()
        .await;
    let open_elapsed = open_started.elapsed();
    let mut first_error = None;
    let mut open_errors = 0;
    let watch_errors = Arc::new(AtomicUsize::new(0));
    let mut receipts = Vec::new();
    let mut tasks = Vec::new();
    for result in opened {
        let stream = match result {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                open_errors += 1;
                first_error.get_or_insert(format!("opening a watch: {e}"));
                continue;
            }
            Err(_) => {
                open_errors += 1;
                first_error
                    .get_or_insert(format!("opening a watch: no answer in {REQUEST_TIMEOUT:?}"));
                continue;
            }
        };
        let got = Arc::new(Mutex::new(Vec::with_capacity(opts.events)));
        receipts.push(got.clone());
        tasks.push(tokio::spawn(follow(
            stream,
            got,
            opts.events,
            watch_errors.clone(),
        )));
    }
    let watchers_opened = tasks.len();
    settle().await;
    let rss_after_open_kib = crate::procfs::rss_kib(pid)?;
    let metrics = crate::prom::scrape(&admin).await?;
    let server_watchers =
        crate::prom::sample(&metrics, &format!("{}watchers", crate::prom::PREFIX), "");

    // The writes, one at a time: (sent, acknowledged) per object.
    let mut acks: Vec<Option<(Instant, Instant)>> = vec![None; opts.events];
    let mut write_latencies = Vec::with_capacity(opts.events);
    let mut write_errors = 0;
    let writes_started = Instant::now();
    let cpu_before = crate::procfs::CpuSample::take(Some(pid));
    for (i, ack) in acks.iter_mut().enumerate() {
        if writes_started.elapsed() > opts.time_bound {
            break;
        }
        let object = json!({
            "apiVersion": "oakestra.io/v1",
            "kind": "Cluster",
            "metadata": {"name": name(i)},
            "spec": {},
        });
        let sent = Instant::now();
        match tokio::time::timeout(REQUEST_TIMEOUT, api.create(&object)).await {
            Ok(Ok(_)) => {
                let at = Instant::now();
                *ack = Some((sent, at));
                write_latencies.push(at - sent);
            }
            Ok(Err(e)) => {
                write_errors += 1;
                first_error.get_or_insert(format!("create: {e}"));
            }
            Err(_) => {
                write_errors += 1;
                first_error.get_or_insert(format!("create: no answer in {REQUEST_TIMEOUT:?}"));
            }
        }
    }
    let writes_ok = acks.iter().flatten().count();

    // Wait for delivery, bounded; watchers still waiting then are stopped.
    let all = futures::future::join_all(tasks.iter_mut());
    let _ = tokio::time::timeout(DELIVERY_GRACE, all).await;
    for task in &tasks {
        task.abort();
    }
    let cpu = crate::procfs::CpuSample::take(Some(pid)).since(&cpu_before);
    settle().await;
    let rss_after_writes_kib = crate::procfs::rss_kib(pid)?;

    let mut delays = Vec::with_capacity(watchers_opened * writes_ok);
    let mut delays_from_send = Vec::with_capacity(watchers_opened * writes_ok);
    let (mut received, mut before_ack) = (0, 0);
    let mut last_receipt = writes_started;
    for got in &receipts {
        let got = got.lock().expect("receipts lock");
        let mut seen = vec![false; opts.events];
        for &(i, at) in got.iter() {
            let Some((sent, ack)) = acks.get(i).copied().flatten() else {
                continue;
            };
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            received += 1;
            last_receipt = last_receipt.max(at);
            if at < ack {
                before_ack += 1;
            }
            delays.push(at.saturating_duration_since(ack));
            delays_from_send.push(at.saturating_duration_since(sent));
        }
    }
    drop(tasks);
    let binary = server.binary.clone();
    drop(server);
    Ok(Report {
        binary,
        controllers: opts.controllers,
        watchers_requested: opts.watchers,
        watchers_opened,
        open_errors,
        first_error,
        open_elapsed,
        server_watchers,
        writes_ok,
        write_errors,
        write_latency: Summary::of(&mut write_latencies),
        expected: watchers_opened * writes_ok,
        received,
        watch_errors: watch_errors.load(Ordering::Relaxed),
        before_ack,
        delay: Summary::of(&mut delays),
        delay_from_send: Summary::of(&mut delays_from_send),
        delivery_elapsed: last_receipt - writes_started,
        cpu,
        rss_before_kib,
        rss_after_open_kib,
        rss_after_writes_kib,
    })
}

/// Record `(object index, receipt time)` of each `ADDED` event until `want` arrived.
async fn follow(
    mut stream: futures::stream::BoxStream<'static, client::Result<WatchEvent<Value>>>,
    got: Arc<Mutex<Vec<(usize, Instant)>>>,
    want: usize,
    errors: Arc<AtomicUsize>,
) {
    while let Some(event) = stream.next().await {
        match event {
            Ok(WatchEvent::Added(object)) => {
                let at = Instant::now();
                if let Some(i) = index(&object) {
                    let mut got = got.lock().expect("receipts lock");
                    got.push((i, at));
                    if got.len() >= want {
                        return;
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!("watch-fanout: a watch failed: {e}");
                }
                return;
            }
        }
    }
}

/// Let the server and the allocator finish what they were doing before reading RSS.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// Start the `oakestra root` under test on a free loopback port, with an embedded store
/// in `dir`: `binary` (default: the debug build `e2e::binary` makes), with or without
/// the root controllers.
pub async fn start_server(
    binary: Option<PathBuf>,
    controllers: bool,
    dir: &Path,
) -> anyhow::Result<e2e::RootServer> {
    let store = format!("embedded:{}", dir.join("store").display());
    if let Some(binary) = &binary {
        anyhow::ensure!(binary.is_file(), "{} does not exist", binary.display());
    }
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let binary = crate::oakestra_binary(binary);
        let extra: &[&str] = if controllers {
            &[]
        } else {
            &["--no-controllers"]
        };
        e2e::RootServer::start_binary(&binary, &store, &dir, extra)
    })
    .await
    .context("starting oakestra root")
}

pub fn to_json(r: &Report) -> Value {
    json!({
        "binary": r.binary.display().to_string(),
        "controllers": r.controllers,
        "watchers_requested": r.watchers_requested,
        "watchers_opened": r.watchers_opened,
        "open_errors": r.open_errors,
        "first_error": r.first_error,
        "open_elapsed_s": round3(r.open_elapsed.as_secs_f64()),
        "server_watchers_gauge": r.server_watchers,
        "writes_ok": r.writes_ok,
        "write_errors": r.write_errors,
        "write_latency": r.write_latency.to_json(),
        "events_expected": r.expected,
        "events_received": r.received,
        "watch_errors": r.watch_errors,
        "events_before_ack": r.before_ack,
        "delivery_delay_after_ack": r.delay.to_json(),
        "delivery_delay_after_send": r.delay_from_send.to_json(),
        "delivery_elapsed_s": round3(r.delivery_elapsed.as_secs_f64()),
        "cpu_s_writes_and_delivery": {
            "server": r.cpu.other_process.map(round3),
            "oakbench": r.cpu.own.map(round3),
        },
        "other_load_cores": r.cpu.rest_cores.map(round3),
        "rss_kib": {
            "before_watchers": r.rss_before_kib,
            "after_watchers": r.rss_after_open_kib,
            "after_writes": r.rss_after_writes_kib,
            "per_watcher": round3(r.rss_per_watcher_kib()),
        },
    })
}

pub fn print(r: &Report) {
    println!(
        "\nwatch-fanout: {} watchers × {} creates, server {} ({})",
        r.watchers_opened,
        r.writes_ok,
        r.binary.display(),
        if r.controllers {
            "with the root controllers"
        } else {
            "--no-controllers"
        }
    );
    let rows: Vec<(&str, String)> = vec![
        (
            "watchers opened",
            format!(
                "{} of {} in {:.2} s ({} errors; server gauge {})",
                r.watchers_opened,
                r.watchers_requested,
                r.open_elapsed.as_secs_f64(),
                r.open_errors,
                r.server_watchers
            ),
        ),
        (
            "creates",
            format!(
                "{} ok, {} errors; latency p50 {:.2} ms, p99 {:.2} ms",
                r.writes_ok, r.write_errors, r.write_latency.p50_ms, r.write_latency.p99_ms
            ),
        ),
        (
            "events received",
            format!(
                "{} of {} expected ({} watch errors)",
                r.received, r.expected, r.watch_errors
            ),
        ),
        (
            "delay after ack",
            format!(
                "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} events before the ack)",
                r.delay.p50_ms, r.delay.p99_ms, r.delay.max_ms, r.before_ack
            ),
        ),
        (
            "delay after send",
            format!(
                "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                r.delay_from_send.p50_ms, r.delay_from_send.p99_ms, r.delay_from_send.max_ms
            ),
        ),
        (
            "delivery",
            format!(
                "{:.2} s from the first create to the last event",
                ms(r.delivery_elapsed) / 1e3
            ),
        ),
        (
            "CPU meanwhile",
            format!(
                "server {} s, oakbench (writer + watchers) {} s; other load {} cores",
                fmt_opt(r.cpu.other_process),
                fmt_opt(r.cpu.own),
                fmt_opt(r.cpu.rest_cores)
            ),
        ),
        (
            "server RSS",
            format!(
                "{} KiB before, {} KiB with watchers, {} KiB after writes",
                r.rss_before_kib, r.rss_after_open_kib, r.rss_after_writes_kib
            ),
        ),
        (
            "RSS per watcher",
            format!("{:.1} KiB", r.rss_per_watcher_kib()),
        ),
    ];
    for (k, v) in rows {
        println!("  {k:<17} {v}");
    }
    if let Some(e) = &r.first_error {
        println!("  first error       {e}");
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}
