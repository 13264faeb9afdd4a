//! The `instances/{name}/log` subresource of the root and cluster APIs: a proxy,
//! root → the Instance's cluster → the Instance's node's agent, each hop over TLS with
//! the hop's own identity, so one kubeconfig of the root is enough to read any log.
//! Beside it, at the root, `clusters/{name}/nodes`: the Nodes of a cluster (list or
//! watch, the query passed on), read from the cluster's API as the root's proxy, for
//! the root's administrators (the dashboard shows them).
//!
//! - At the root, an administrator's request goes to the cluster the Instance is placed
//!   on: the root dials the cluster's `status.apiEndpoint`, trusts the CA that cluster
//!   brought when it joined, and presents its proxy identity (`oakestra:root`).
//! - At a cluster, an administrator's or the root's request goes to the agent of the
//!   Instance's node: the cluster dials the Node's `status.agentEndpoint`, checks the
//!   agent's certificate by the node's name, and presents its own identity.

use std::sync::Arc;

use axum::extract::{Path, Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use client::tls::{ClientCertificate, TlsOptions};
use client::{Client, ClientError};
use crds::{Cluster, Instance, Node};
use pki::Identity;
use serde::Deserialize;

/// The path of the subresource.
const LOG_PATH: &str = "/apis/oakestra.io/v1/namespaces/{namespace}/instances/{name}/log";
/// The path of a cluster's Nodes, at the root.
const NODES_PATH: &str = "/apis/oakestra.io/v1/clusters/{name}/nodes";

/// Which tier's hop this is.
pub enum Hop {
    /// The root: on to the Instance's cluster.
    Root {
        /// Where the CAs the member clusters brought are.
        paths: trust::TierPaths,
    },
    /// A cluster: on to the Instance's node's agent.
    Cluster {
        /// This cluster's CA, which issued the agents' serving certificates.
        ca_pem: String,
    },
}

/// What the proxy needs: its tier's hop, the identity it presents to the next hop, and
/// an in-process client of its own API (set once the server runs).
pub struct LogProxy {
    /// This tier's hop.
    pub hop: Hop,
    /// The client certificate presented to the next hop.
    pub proxy: pki::CertifiedKey,
    /// The tier's own API, in process.
    pub local: super::LocalClient,
}

/// The query of the log subresource, as kube's `pods/log` takes it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogQuery {
    /// Only the last N lines.
    tail_lines: Option<usize>,
    /// Go on with what the workload writes next, until the client goes away.
    #[serde(default)]
    follow: bool,
}

/// The routes of the proxy: the log subresource, and (at the root) a cluster's Nodes.
pub fn routes(proxy: Arc<LogProxy>) -> Router {
    Router::new()
        .route(LOG_PATH, get(log))
        .route(NODES_PATH, get(cluster_nodes))
        .with_state(proxy)
}

/// Why a log cannot be read: the Kubernetes `Status` answered.
struct Refusal(Box<crds::Status>);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.0.code).unwrap_or(StatusCode::BAD_GATEWAY);
        (code, Json(*self.0)).into_response()
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> Refusal {
    Refusal(Box::new(crds::Status::failure(
        code.as_u16(),
        reason,
        message,
    )))
}

fn unavailable(message: String) -> Refusal {
    status(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        message,
    )
}

/// A failure of the next hop, passed on: its own `Status` when it answered with one.
fn from_next_hop(what: &str, e: ClientError) -> Refusal {
    match e {
        ClientError::Api { status: answer } => Refusal(answer),
        other => unavailable(format!("{what}: {other}")),
    }
}

async fn log(
    State(proxy): State<Arc<LogProxy>>,
    Extension(identity): Extension<Identity>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> Response {
    match read_log(&proxy, &identity, &namespace, &name, &query).await {
        Ok(body) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            axum::body::Body::from_stream(body),
        )
            .into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

/// `GET clusters/NAME/nodes[?watch=1&…]` at the root: the answer of cluster `NAME`'s
/// `GET /apis/oakestra.io/v1/nodes` with the same query, streamed as it comes (a
/// watch stays open), for administrators.
async fn cluster_nodes(
    State(proxy): State<Arc<LogProxy>>,
    Extension(identity): Extension<Identity>,
    Path(cluster): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(refusal) = admitted(
        &identity,
        identity.is_privileged(),
        "clusters/nodes",
        "",
        &cluster,
    ) {
        return refusal.into_response();
    }
    let Hop::Root { paths } = &proxy.hop else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "a cluster's nodes are served at the root; here, list nodes".into(),
        )
        .into_response();
    };
    let Some(local) = proxy.local.get().await else {
        return unavailable("the server is starting".into()).into_response();
    };
    let next = match to_cluster(&local, paths, &cluster, &proxy.proxy).await {
        Ok(next) => next,
        Err(refusal) => return refusal.into_response(),
    };
    let path = match query {
        Some(q) => format!("/apis/oakestra.io/v1/nodes?{q}"),
        None => "/apis/oakestra.io/v1/nodes".to_string(),
    };
    match next.get_stream(&path).await {
        Ok(body) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            axum::body::Body::from_stream(body),
        )
            .into_response(),
        Err(e) => {
            from_next_hop(&format!("reading the nodes of cluster {cluster}"), e).into_response()
        }
    }
}

/// `Ok` when `allowed`; else the 401 (anonymous) or 403 of a request by `identity` for
/// `resource` (in `namespace`, of `name`).
fn admitted(
    identity: &Identity,
    allowed: bool,
    resource: &str,
    namespace: &str,
    name: &str,
) -> Result<(), Refusal> {
    if allowed {
        return Ok(());
    }
    if *identity == Identity::Anonymous {
        return Err(status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized".into(),
        ));
    }
    let scope = if namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{namespace}\"")
    };
    let (plural, sub) = resource.split_once('/').unwrap_or((resource, ""));
    Err(status(
        StatusCode::FORBIDDEN,
        "Forbidden",
        format!(
            "{plural}.oakestra.io \"{name}\" is forbidden: User \"{}\" cannot get resource \"{plural}/{sub}\" in API group \"oakestra.io\" {scope}",
            identity.user()
        ),
    ))
}

/// The log of Instance `namespace/name` as `query` asks (its last lines; followed), from
/// the next hop, passed on as it arrives.
async fn read_log(
    proxy: &LogProxy,
    identity: &Identity,
    namespace: &str,
    name: &str,
    query: &LogQuery,
) -> Result<futures::stream::BoxStream<'static, client::Result<axum::body::Bytes>>, Refusal> {
    let allowed = match proxy.hop {
        Hop::Root { .. } => identity.is_privileged(),
        Hop::Cluster { .. } => identity.is_privileged() || *identity == Identity::Root,
    };
    admitted(identity, allowed, "instances/log", namespace, name)?;
    let Some(local) = proxy.local.get().await else {
        return Err(unavailable("the server is starting".into()));
    };
    let instance: Instance = local
        .api(Some(namespace))
        .get(name)
        .await
        .map_err(|e| from_next_hop("reading the instance", e))?;
    let phase = instance
        .status
        .as_ref()
        .map(|s| format!("{:?}", s.phase))
        .unwrap_or_else(|| "Pending".into());
    let not_yet = |what: &str| {
        status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("instance {name} is not {what} yet (phase {phase})"),
        )
    };
    let (next, path) = match &proxy.hop {
        Hop::Root { paths } => {
            let cluster = instance
                .spec
                .cluster
                .as_deref()
                .ok_or_else(|| not_yet("placed on a cluster"))?;
            let asked = next_query(query, "tailLines");
            (
                to_cluster(&local, paths, cluster, &proxy.proxy).await?,
                format!("/apis/oakestra.io/v1/namespaces/{namespace}/instances/{name}/log{asked}"),
            )
        }
        Hop::Cluster { ca_pem } => {
            let node = instance
                .spec
                .node
                .as_deref()
                .ok_or_else(|| not_yet("bound to a node"))?;
            let asked = next_query(query, "tail");
            (
                to_agent(&local, ca_pem, node, &proxy.proxy).await?,
                format!("/logs/{namespace}/{name}{asked}"),
            )
        }
    };
    next.get_stream(&path)
        .await
        .map_err(|e| from_next_hop(&format!("reading the log at {}", next.base()), e))
}

/// `query` as the next hop takes it (`tail`: its name for the number of lines).
fn next_query(query: &LogQuery, tail: &str) -> String {
    let mut pairs = Vec::new();
    if let Some(n) = query.tail_lines {
        pairs.push(format!("{tail}={n}"));
    }
    if query.follow {
        pairs.push("follow=true".to_string());
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

/// A client of cluster `name`'s API, as the root's proxy.
async fn to_cluster(
    local: &Client,
    paths: &trust::TierPaths,
    name: &str,
    proxy: &pki::CertifiedKey,
) -> Result<Client, Refusal> {
    let cluster: Cluster = local
        .api(None)
        .get(name)
        .await
        .map_err(|e| from_next_hop("reading the cluster", e))?;
    let Some(url) = cluster.status.as_ref().and_then(|s| s.api_endpoint.clone()) else {
        return Err(status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!("cluster {name} has not reported its API endpoint"),
        ));
    };
    let ca_pem = std::fs::read_to_string(paths.member_ca(name)).map_err(|e| {
        status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!(
                "the CA of cluster {name} is not known here ({e}): it has not joined this root"
            ),
        )
    })?;
    next_hop(&url, ca_pem, proxy, None)
}

/// A client of node `name`'s agent, as its cluster.
async fn to_agent(
    local: &Client,
    ca_pem: &str,
    name: &str,
    proxy: &pki::CertifiedKey,
) -> Result<Client, Refusal> {
    let node: Node = local
        .api(None)
        .get(name)
        .await
        .map_err(|e| from_next_hop("reading the node", e))?;
    let Some(url) = node.status.as_ref().and_then(|s| s.agent_endpoint.clone()) else {
        return Err(status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!("node {name} has not reported an agent endpoint"),
        ));
    };
    next_hop(
        &url,
        ca_pem.to_string(),
        proxy,
        Some(trust::join::agent_server_name(name)),
    )
}

fn next_hop(
    url: &str,
    ca_pem: String,
    proxy: &pki::CertifiedKey,
    server_name: Option<String>,
) -> Result<Client, Refusal> {
    let identity = ClientCertificate::new(&proxy.cert_pem, &proxy.key_pem)
        .map_err(|e| unavailable(format!("the proxy certificate: {e}")))?;
    Client::with_tls(
        url,
        TlsOptions {
            ca_pem: Some(ca_pem),
            identity: Some(identity),
            bearer: None,
            server_name,
        },
    )
    .map_err(|e| unavailable(format!("{url}: {e}")))
}
