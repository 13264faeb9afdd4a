//! The agent's HTTPS endpoint: `/healthz` (to anyone), and to its cluster only
//! `/metrics` and `/logs/{namespace}/{name}?tail=N&follow=true` (the output of an
//! Instance's workload, which the cluster's log proxy reads for `oakctl logs`; with
//! `follow`, the answer goes on with what the workload writes next, as `kubectl logs -f`).
//!
//! It serves TLS with the serving certificate its cluster issued, and only a client
//! certificate of the cluster's CA naming the cluster itself gets past `/healthz`.

use std::io::SeekFrom;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::{Stream, StreamExt};
use pki::Identity;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::metrics::Metrics;
use crate::runtime::{InstanceId, Runtime};

#[derive(Clone)]
struct AppState {
    runtime: Arc<dyn Runtime>,
    metrics: Arc<Metrics>,
}

#[derive(serde::Deserialize)]
struct LogParams {
    tail: Option<usize>,
    #[serde(default)]
    follow: bool,
}

/// How often a followed log is looked at for new output.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);
/// The most a followed log sends in one piece.
const FOLLOW_CHUNK: u64 = 256 * 1024;

/// The last `tail` lines of `text` (all of it without `tail`).
fn tail_of(text: &str, tail: Option<usize>) -> String {
    match tail {
        Some(n) => {
            let lines: Vec<&str> = text.lines().collect();
            let mut out = lines[lines.len().saturating_sub(n)..].join("\n");
            out.push('\n');
            out
        }
        None => text.to_string(),
    }
}

/// What is written to the log at `path` after its first `from` bytes, as it comes: the
/// file is looked at every [`FOLLOW_EVERY`]; one that shrank (a new run's log) is read
/// from its start; the stream ends when the file is gone (the Instance was removed).
/// A client that goes away drops the stream, and with it the loop; a read that fails
/// ends it.
fn follow(path: PathBuf, from: u64) -> impl Stream<Item = std::io::Result<Bytes>> {
    futures::stream::unfold((path, from), |(path, mut at)| async move {
        loop {
            tokio::time::sleep(FOLLOW_EVERY).await;
            let len = tokio::fs::metadata(&path).await.ok()?.len();
            if len < at {
                at = 0;
            }
            if len == at {
                continue;
            }
            let read = async {
                let mut file = tokio::fs::File::open(&path).await?;
                file.seek(SeekFrom::Start(at)).await?;
                let mut buf = Vec::new();
                file.take((len - at).min(FOLLOW_CHUNK))
                    .read_to_end(&mut buf)
                    .await?;
                Ok::<_, std::io::Error>(buf)
            };
            return match read.await {
                Ok(buf) => {
                    let next = at + buf.len() as u64;
                    Some((Ok(Bytes::from(buf)), (path, next)))
                }
                Err(e) => {
                    tracing::debug!(log = %path.display(), error = %e, "following the log stopped");
                    None
                }
            };
        }
    })
}

async fn metrics(State(state): State<AppState>) -> Response {
    if let Ok(ids) = state.runtime.list().await {
        state.metrics.instances.set(ids.len() as i64);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn logs(
    State(AppState { runtime, .. }): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    Query(params): Query<LogParams>,
) -> Response {
    let id = InstanceId { namespace, name };
    let path = runtime.log_path(&id);
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let head = tail_of(&String::from_utf8_lossy(&bytes), params.tail);
            if !params.follow {
                return head.into_response();
            }
            let first = futures::stream::once(async move { Ok(Bytes::from(head)) });
            let rest = follow(path, bytes.len() as u64);
            Body::from_stream(first.chain(rest)).into_response()
        }
        Err(_) => (
            StatusCode::NOT_FOUND,
            format!("no logs for instance {id} on this node\n"),
        )
            .into_response(),
    }
}

/// Only the cluster (a client certificate of its CA, for the cluster itself) passes.
async fn cluster_only(request: Request, next: Next) -> Response {
    match request.extensions().get::<Identity>() {
        Some(Identity::Cluster { .. }) => next.run(request).await,
        Some(Identity::Anonymous) | None => apiserver::auth::unauthorized(),
        Some(other) => (
            StatusCode::FORBIDDEN,
            format!(
                "User {:?} cannot read this agent: only its cluster can\n",
                other.user()
            ),
        )
            .into_response(),
    }
}

/// Serve on `listener` with `security` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    runtime: Arc<dyn Runtime>,
    metrics: Arc<Metrics>,
    security: apiserver::auth::Security,
) {
    let app = Router::new()
        .route("/metrics", get(self::metrics))
        .route("/logs/{namespace}/{name}", get(logs))
        .route_layer(axum::middleware::from_fn(cluster_only))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(AppState { runtime, metrics });
    if let Err(e) = apiserver::auth::tls::serve_app(listener, app, security).await {
        tracing::error!(error = %e, "agent endpoint stopped");
    }
}
