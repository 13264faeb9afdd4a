//! The agent's HTTP endpoint: `/healthz` and `/logs/{namespace}/{name}?tail=N` (the
//! output of an Instance's workload), which `oakctl logs` reads.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::runtime::{InstanceId, Runtime};

#[derive(serde::Deserialize)]
struct LogParams {
    tail: Option<usize>,
}

async fn logs(
    State(runtime): State<Arc<dyn Runtime>>,
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
pub async fn serve(listener: tokio::net::TcpListener, runtime: Arc<dyn Runtime>) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/logs/{namespace}/{name}", get(logs))
        .with_state(runtime);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "agent endpoint stopped");
    }
}
