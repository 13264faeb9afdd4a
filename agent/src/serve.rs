//! The agent's HTTPS endpoint: `/healthz` (to anyone), and to its cluster only
//! `/metrics` and `/logs/{namespace}/{name}?tail=N` (the output of an Instance's
//! workload, which the cluster's log proxy reads for `oakctl logs`).
//!
//! It serves TLS with the serving certificate its cluster issued, and only a client
//! certificate of the cluster's CA naming the cluster itself gets past `/healthz`.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use pki::Identity;

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
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let text = match params.tail {
                Some(n) => {
                    let lines: Vec<&str> = text.lines().collect();
                    let mut out = lines[lines.len().saturating_sub(n)..].join("\n");
                    out.push('\n');
                    out
                }
                None => text,
            };
            text.into_response()
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
