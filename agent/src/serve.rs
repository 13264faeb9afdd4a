//! The agent's HTTP endpoint: `/healthz`, `/metrics`, and
//! `/logs/{namespace}/{name}?tail=N` (the output of an Instance's workload), which
//! `oakctl logs` reads.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

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

/// Serve until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    runtime: Arc<dyn Runtime>,
    metrics: Arc<Metrics>,
) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(self::metrics))
        .route("/logs/{namespace}/{name}", get(logs))
        .with_state(AppState { runtime, metrics });
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "agent endpoint stopped");
    }
}
