//! The Oakestra API server.
//!
//! Owns the HTTP API (Kubernetes conventions, so `kubectl` works unchanged), the
//! validation of every write, the shared watch fan-out, metrics, and the storage
//! backends behind one [`storage::Storage`] contract. [`Server::start`] wires them.
//!
//! With [`ServerConfig::security`] (the binaries always set it) the server serves TLS
//! and every request has an identity ([`pki::Identity`]): a client certificate, a
//! bearer token, or none (anonymous, which reaches only health and version). The
//! in-process path ([`Server::local`]) is the server's own controllers,
//! [`pki::Identity::System`].
//!
//! Modules:
//! - [`auth`]: authentication (TLS, client certificates, bearer tokens) and the
//!   authorizer, the fixed rules of who may do what.
//! - [`http`]: the router: Kubernetes paths and verbs, watch streams, tables, health.
//! - [`registry`]: the verbs over storage and the write path; per-kind rules in
//!   [`registry::strategy`], lists and continue tokens in [`registry::list`].
//! - [`object`]: objects as JSON: storage keys, the stored encoding, metadata access,
//!   label and field selectors.
//! - [`watch`]: the watch hub, one storage watch fanned out to every watcher.
//! - [`discovery`]: discovery and `OpenAPI` documents, `/version`.
//! - [`error`]: [`error::ApiError`], every rejection as a Kubernetes `Status`.
//! - [`metrics`]: Prometheus metrics and the storage decorator that times operations.
//! - [`storage`]: the [`storage::Storage`] trait, the embedded (redb) and etcd backends,
//!   and the conformance suite both pass.
//! - [`backup`]: the snapshot of a store as a backup file (the one writer, served to
//!   administrators at [`backup::SNAPSHOT_PATH`]), and reading one back, checked.

pub mod auth;
pub mod backup;
pub mod discovery;
pub mod error;
pub mod http;
pub mod metrics;
pub mod object;
pub mod registry;
pub mod storage;
pub mod watch;

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};

pub use http::ServerConfig;

/// Where objects are stored.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreConfig {
    /// The embedded store in a directory.
    Embedded(PathBuf),
    /// etcd endpoints, e.g. `http://127.0.0.1:2379`.
    Etcd(Vec<String>),
}

impl std::str::FromStr for StoreConfig {
    type Err = String;
    /// `embedded:DIR` or `etcd:http://HOST:PORT[,http://…]`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("embedded", dir)) if !dir.is_empty() => Ok(StoreConfig::Embedded(dir.into())),
            Some(("etcd", endpoints)) if !endpoints.is_empty() => Ok(StoreConfig::Etcd(
                endpoints.split(',').map(String::from).collect(),
            )),
            _ => Err(format!(
                "{s:?}: expected embedded:DIR or etcd:http://HOST:PORT[,http://HOST:PORT…]"
            )),
        }
    }
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The storage backend could not be opened or connected to.
    #[error("opening the store: {0}")]
    Store(#[from] storage::StorageError),
    /// The listen address could not be bound.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The socket's error.
        source: std::io::Error,
    },
    /// The TLS configuration could not be built from the certificates given.
    #[error("configuring TLS: {0}")]
    Tls(#[from] auth::TlsError),
    /// The `default` namespace could not be created.
    #[error("creating the default namespace: {0}")]
    Bootstrap(#[from] error::ApiError),
}

/// Storage key prefixes of the best-effort kinds (`KindInfo::best_effort`), which the
/// embedded store may commit lazily.
pub fn best_effort_prefixes() -> Vec<String> {
    crds::KINDS
        .iter()
        .filter(|k| k.best_effort)
        .map(|k| object::key(k, None, ""))
        .collect()
}

/// A running API server.
pub struct Server {
    /// The address it listens on (the real port when asked for port 0).
    pub addr: SocketAddr,
    /// Its verbs, for callers in the same process that skip HTTP.
    pub registry: registry::Registry,
    /// The routes the listener serves, also what [`Server::local`] calls.
    app: axum::Router,
    task: tokio::task::JoinHandle<()>,
    /// Stops it for a restart without failing requests in flight.
    drain: auth::tls::Drain,
}

/// The answer of [`Server::local`]: status, headers and the body's bytes as they are
/// produced (a watch's body streams until the caller drops it).
pub type LocalResponse = axum::http::Response<BoxStream<'static, Result<bytes::Bytes, BoxError>>>;

impl Server {
    /// Open the store, start the watch hub, create `default`, and serve on `listen`.
    pub async fn start(
        listen: SocketAddr,
        store: StoreConfig,
        config: ServerConfig,
    ) -> Result<Server, ServerError> {
        let store: Arc<dyn storage::Storage> = match &store {
            StoreConfig::Embedded(dir) => Arc::new(storage::embedded::EmbeddedStore::open(
                dir,
                storage::embedded::EmbeddedOptions {
                    lazy_prefixes: best_effort_prefixes(),
                    ..Default::default()
                },
            )?),
            StoreConfig::Etcd(endpoints) => {
                Arc::new(storage::etcd::EtcdStore::connect(endpoints, "/oakestra").await?)
            }
        };
        Self::start_with_store(listen, store, config).await
    }

    /// Like [`Server::start`], over a storage the caller opened. With
    /// [`ServerConfig::security`], the listener serves TLS (see [`auth`]); without, plain
    /// HTTP where every request is the administrator.
    pub async fn start_with_store(
        listen: SocketAddr,
        store: Arc<dyn storage::Storage>,
        config: ServerConfig,
    ) -> Result<Server, ServerError> {
        let metrics = metrics::Metrics::new();
        let store = metrics::MeteredStore::wrap(store, metrics.clone());
        let hub = watch::WatchHub::start(store.clone(), config.watch_cache_events).await?;
        let registry = registry::Registry::new(store, hub);
        registry.ensure_namespace("default").await?;
        let security = config.security.clone();
        let tls = security
            .as_ref()
            .map(auth::tls::server_config)
            .transpose()?;
        let state = http::AppState {
            registry: registry.clone(),
            metrics,
            config: Arc::new(config),
        };
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| ServerError::Listen {
                addr: listen,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServerError::Listen {
                addr: listen,
                source,
            })?;
        let drain = auth::tls::Drain::new();
        let (app, task) = match (security, tls) {
            (Some(security), Some(tls)) => {
                let app = http::router(state, security.routes).layer(
                    axum::middleware::from_fn_with_state(
                        security.authenticator.clone(),
                        auth::bearer,
                    ),
                );
                let serving = app.clone();
                tracing::info!(%addr, "API server listening (TLS)");
                let accept = auth::tls::serve(
                    listener,
                    tls,
                    security.authenticator,
                    serving,
                    drain.clone(),
                );
                (app, tokio::spawn(accept))
            }
            _ => {
                let app = http::router(state, axum::Router::new());
                // No authentication: every request from the network is the administrator.
                let serving = app.clone().layer(axum::Extension(pki::Identity::admin()));
                // Watch events are small writes that follow each other: without
                // TCP_NODELAY, Nagle holds one back until the previous is acknowledged,
                // which a delayed ACK makes 40 ms on Linux (seen as 40 ms on every hop
                // of a start).
                let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "TCP_NODELAY not set");
                    }
                });
                tracing::info!(%addr, "API server listening (plain HTTP, no authentication)");
                let stopped = drain.stopped();
                let serve = async move {
                    if let Err(e) = axum::serve(listener, serving)
                        .with_graceful_shutdown(stopped)
                        .await
                    {
                        tracing::error!(error = %e, "API server stopped");
                    }
                };
                (app, tokio::spawn(serve))
            }
        };
        Ok(Server {
            addr,
            registry,
            app,
            task,
            drain,
        })
    }

    /// This server for clients in the same process (its controllers, as
    /// [`pki::Identity::System`]): a request goes
    /// through the same routes, handlers, metrics and tracing as one from the network,
    /// handed over in memory, so neither side pays for a socket, HTTP framing or a
    /// second task per connection. A watch ends when the caller drops the body.
    ///
    /// The handler runs in the caller's task. A panic in it (a bug) is caught and
    /// answered as a 500, and one while a body streams ends that body with an error, as
    /// a connection would fail over the network: it does not unwind into the caller.
    pub fn local(
        &self,
    ) -> impl Fn(axum::http::Request<bytes::Bytes>) -> BoxFuture<'static, LocalResponse>
           + Send
           + Sync
           + 'static {
        let app = self.app.clone();
        move |request| Box::pin(call_in_memory(app.clone(), request))
    }

    /// What stops this server for a restart (see [`auth::tls::Drain`]): no new
    /// connections, the requests in flight answered, watches cut when the process ends.
    pub fn drainer(&self) -> auth::tls::Drain {
        self.drain.clone()
    }

    /// Serve until the process ends (or a [`Server::drainer`] stops it).
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Answer `request` with `app` in this task (see [`Server::local`]).
async fn call_in_memory(
    app: axum::Router,
    request: axum::http::Request<bytes::Bytes>,
) -> LocalResponse {
    let mut request = request.map(axum::body::Body::from);
    request.extensions_mut().insert(pki::Identity::System);
    let answer = AssertUnwindSafe(tower::ServiceExt::oneshot(app, request))
        .catch_unwind()
        .await;
    let response = match answer {
        Ok(Ok(response)) => response,
        Ok(Err(never)) => match never {},
        Err(panic) => {
            axum::response::IntoResponse::into_response(error::ApiError::Internal(format!(
                "the request's handler panicked: {}",
                panic_message(panic.as_ref())
            )))
        }
    };
    response.map(unwind_safe_body)
}

/// `body` as a stream of bytes that ends with an error where producing it panicked.
fn unwind_safe_body(body: axum::body::Body) -> BoxStream<'static, Result<bytes::Bytes, BoxError>> {
    AssertUnwindSafe(body.into_data_stream())
        .catch_unwind()
        .map(|item| match item {
            Ok(chunk) => chunk.map_err(|e| Box::new(e) as BoxError),
            Err(panic) => Err(format!(
                "the server panicked while sending the body: {}",
                panic_message(panic.as_ref())
            )
            .into()),
        })
        .boxed()
}

/// The message a panic was raised with.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> axum::http::Request<bytes::Bytes> {
        axum::http::Request::get(path)
            .body(bytes::Bytes::new())
            .unwrap()
    }

    async fn body_of(response: LocalResponse) -> Vec<Result<bytes::Bytes, String>> {
        response
            .into_body()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
            .await
    }

    #[tokio::test]
    async fn a_panicking_handler_is_a_500_not_a_panic_in_the_caller() {
        let app = axum::Router::new()
            .route("/ok", axum::routing::get(|| async { "fine" }))
            .route(
                "/boom",
                axum::routing::get(|| async { panic!("boom") as &str }),
            );
        let ok = call_in_memory(app.clone(), get("/ok")).await;
        assert_eq!(ok.status(), 200);
        assert_eq!(body_of(ok).await, vec![Ok(bytes::Bytes::from("fine"))]);

        let boom = call_in_memory(app, get("/boom")).await;
        assert_eq!(boom.status(), 500);
        let body = body_of(boom).await;
        let text = String::from_utf8(body[0].clone().unwrap().to_vec()).unwrap();
        assert!(text.contains("handler panicked: boom"), "{text}");
    }

    #[tokio::test]
    async fn a_panic_while_streaming_ends_the_body_with_an_error() {
        let app = axum::Router::new().route(
            "/stream",
            axum::routing::get(|| async {
                let chunks = futures::stream::iter(0..3).map(|i| {
                    if i == 2 {
                        panic!("stream broke");
                    }
                    Ok::<_, std::convert::Infallible>(format!("{i}\n"))
                });
                axum::body::Body::from_stream(chunks)
            }),
        );
        let body = body_of(call_in_memory(app, get("/stream")).await).await;
        assert_eq!(body.len(), 3, "{body:?}");
        assert_eq!(body[0], Ok(bytes::Bytes::from("0\n")));
        assert_eq!(body[1], Ok(bytes::Bytes::from("1\n")));
        let error = body[2].clone().unwrap_err();
        assert!(
            error.contains("panicked while sending the body: stream broke"),
            "{error}"
        );
    }
}
