//! Clients of the Oakestra API.
//!
//! [`Client`] holds the connection (and the runtime's shared informers beside it);
//! [`DynamicApi`] speaks to one kind, with JSON values by default (what `oakctl` needs for
//! arbitrary manifests) or with a typed kind; [`Api`] is the typed layer over it for
//! controllers; [`runtime`] is the reconcile runtime built on them. Errors are typed so
//! callers can tell a conflict from a missing object from a transport failure.
//!
//! A client reaches its server over HTTP ([`Client::new`]), over HTTPS with the CA,
//! client certificate and token of [`tls::TlsOptions`] ([`Client::with_tls`], or from a
//! kubeconfig file: [`kubeconfig`]) or, for controllers that run in the server's own
//! process, through a [`LocalServer`] ([`Client::in_process`]): the same requests and
//! answers, handed over in memory instead of through a socket.
//!
//! A client may be given several servers of one API (`https://a:10000,https://b:10000`,
//! as etcd's endpoints): it sends to one at a time and moves on to the next when that one
//! cannot be connected to, repeating the request there (it never reached the first).

pub mod kubeconfig;
pub mod runtime;
pub mod tls;

#[cfg(test)]
mod testing;

use std::marker::PhantomData;
use std::sync::Arc;

use crds::{KindInfo, Resource, Status};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// Why a request failed: the server said no ([`Api`](Self::Api), with its `Status`),
/// could not be reached, or answered with something this client cannot read.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a Kubernetes `Status` error.
    #[error("{}", .status.message)]
    Api {
        /// The server's answer (its `code` is the HTTP status).
        status: Box<Status>,
    },
    /// The request or its answer could not go over the connection.
    #[error("cannot reach the API server at {url}: {}", cause_chain(.source))]
    Transport {
        /// The URL of the request.
        url: String,
        /// What the HTTP client reported.
        source: reqwest::Error,
    },
    /// The answer arrived but is not what the request expects.
    #[error("unexpected answer from {url}: {message}")]
    Decode {
        /// The URL of the request.
        url: String,
        /// What could not be decoded, and why.
        message: String,
    },
    /// The server URL given to [`Client::new`] is not an `http://` or `https://` URL.
    #[error("invalid server URL {0:?}: expected http://HOST:PORT or https://HOST:PORT")]
    BadUrl(String),
    /// The TLS settings given to [`Client::with_tls`] cannot be used.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// The innermost cause of a transport error, e.g. "Connection refused (os error 111)"
/// or "invalid peer certificate: `UnknownIssuer`".
fn cause_chain(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let inner = cause.to_string();
    if e.is_timeout() {
        format!("timed out ({inner})")
    } else {
        inner
    }
}

impl ClientError {
    /// The server could not be reached at all (as opposed to answering with an error).
    pub fn is_transport(&self) -> bool {
        matches!(self, ClientError::Transport { .. })
    }

    /// HTTP code of an API error.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Api { status } => Some(status.code),
            _ => None,
        }
    }
    /// The object does not exist (404).
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }
    /// The write lost a race: the object exists already or changed since the
    /// resourceVersion the write was made at (409).
    pub fn is_conflict(&self) -> bool {
        self.code() == Some(409)
    }
    /// The resourceVersion asked for is too old to watch from: relist (410).
    pub fn is_gone(&self) -> bool {
        self.code() == Some(410)
    }
    /// The object was refused as invalid (422).
    pub fn is_invalid(&self) -> bool {
        self.code() == Some(422)
    }
}

/// The result of a request: a [`ClientError`] unless said otherwise.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// The body of a [`LocalServer`]'s answer: its bytes as the server produces them (a
/// watch's answer never ends on its own).
pub type LocalBody = BoxStream<'static, Result<bytes::Bytes, BoxError>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An API server in this process that takes a request and answers it without a socket
/// (`apiserver::Server::local` is one). The request's URI is the full URL the client
/// built; its body is the whole request body.
pub trait LocalServer: Send + Sync + 'static {
    /// Answer `request` (a watch's answer streams until the client drops it).
    fn call(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> BoxFuture<'static, http::Response<LocalBody>>;
}

impl<F> LocalServer for F
where
    F: Fn(http::Request<bytes::Bytes>) -> BoxFuture<'static, http::Response<LocalBody>>
        + Send
        + Sync
        + 'static,
{
    fn call(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> BoxFuture<'static, http::Response<LocalBody>> {
        self(request)
    }
}

/// A connection to one API server, and beside it the reconcile runtime's shared
/// informers of that server ([`Client::informers`]).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoints: Arc<Endpoints>,
    /// Set when the server runs in this process: requests go to it in memory.
    local: Option<Arc<dyn LocalServer>>,
    /// The shared informers of this client and its clones: one watch per kind and
    /// selectors, however many controllers follow it.
    informers: runtime::Informers,
    /// Sent with every request; the server records writes without a `fieldManager`
    /// under its product (`metadata.managedFields`).
    user_agent: reqwest::header::HeaderValue,
}

/// The User-Agent a client sends unless told otherwise: `oakestra/<version>`.
pub const USER_AGENT: &str = concat!("oakestra/", env!("CARGO_PKG_VERSION"));

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints.urls)
            .field("in_process", &self.local.is_some())
            .finish()
    }
}

/// The base URLs of the servers of one API, and which of them requests go to.
#[derive(Debug)]
struct Endpoints {
    urls: Vec<String>,
    current: std::sync::atomic::AtomicUsize,
}

impl Endpoints {
    /// The server requests go to now.
    fn current(&self) -> (usize, &str) {
        let i = self.current.load(std::sync::atomic::Ordering::Relaxed) % self.urls.len();
        (i, &self.urls[i])
    }

    /// The server after `failed` (unless another request moved on already): the one
    /// requests go to from now on.
    fn after(&self, failed: usize) -> (usize, &str) {
        let next = (failed + 1) % self.urls.len();
        let _ = self.current.compare_exchange(
            failed,
            next,
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.current()
    }
}

/// The servers of `server`: one base URL, or several separated by commas, each without
/// a trailing slash and `http://` or `https://`.
pub fn endpoints(server: &str) -> Result<Vec<String>> {
    let urls: Vec<String> = server
        .split(',')
        .map(|s| s.trim().trim_end_matches('/').to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if urls.is_empty()
        || urls
            .iter()
            .any(|u| !u.starts_with("http://") && !u.starts_with("https://"))
    {
        return Err(ClientError::BadUrl(server.into()));
    }
    Ok(urls)
}

/// `request` sent to `base` instead of the server its URL names (same path and query).
fn rebased(request: &reqwest::Request, base: &str) -> Option<reqwest::Request> {
    let mut request = request.try_clone()?;
    let old = request.url();
    let query = old.query().map(|q| format!("?{q}")).unwrap_or_default();
    let url = reqwest::Url::parse(&format!("{base}{}{query}", old.path())).ok()?;
    *request.url_mut() = url;
    Some(request)
}

impl Client {
    /// A client of the plain-HTTP server at `server`, the base URL, e.g.
    /// `http://127.0.0.1:10000`; it sends no credential. An `https://` URL needs a CA:
    /// see [`Client::with_tls`].
    pub fn new(server: &str) -> Result<Self> {
        Client::with_tls(server, tls::TlsOptions::default())
    }

    /// A client of `server` (`https://HOST:PORT`, or `http://` to send the token in
    /// the clear) that trusts only `tls.ca_pem`, presents `tls.identity` when asked
    /// and sends `tls.bearer` with every request. An `https://` URL without a CA is a
    /// [`tls::TlsError::NoCa`].
    ///
    /// `server` may name several servers of the same API, separated by commas: see the
    /// crate's docs.
    pub fn with_tls(server: &str, tls: tls::TlsOptions) -> Result<Self> {
        let urls = endpoints(server)?;
        if let Some(base) = urls.iter().find(|u| u.starts_with("https://")) {
            if tls.ca_pem.is_none() {
                return Err(tls::TlsError::NoCa {
                    server: base.clone(),
                }
                .into());
            }
        }
        Client::build(urls, &tls)
    }

    /// A client of the servers `urls` with `tls` (every client has a ring-based rustls
    /// config, so no process-wide crypto provider is ever needed).
    fn build(urls: Vec<String>, tls: &tls::TlsOptions) -> Result<Self> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &tls.bearer {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| tls::TlsError::BadToken)?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .default_headers(headers)
            .use_preconfigured_tls(tls::client_config(tls)?)
            .build()
            .map_err(|source| ClientError::Transport {
                url: urls.join(","),
                source,
            })?;
        Ok(Client {
            http,
            endpoints: Arc::new(Endpoints {
                urls,
                current: Default::default(),
            }),
            local: None,
            informers: runtime::Informers::default(),
            user_agent: reqwest::header::HeaderValue::from_static(USER_AGENT),
        })
    }

    /// A client of `server`, an API server in this process whose address is `url` (still
    /// what errors and [`Client::base`] name, `http://` or `https://`). Requests skip the
    /// socket, HTTP framing and the other half of the loopback connection; what the
    /// server does with them is the same as for a request over the network (routing,
    /// validation, metrics, tracing). It carries no credential: the server knows it as
    /// its own process.
    pub fn in_process(url: &str, server: Arc<dyn LocalServer>) -> Result<Self> {
        let mut client = Client::build(endpoints(url)?, &tls::TlsOptions::default())?;
        client.local = Some(server);
        Ok(client)
    }

    /// This client (sharing its connections and informers) sending the User-Agent
    /// `manager/<version>`: the server records its writes under `manager` in
    /// `metadata.managedFields`, so each controller's part of an object shows whose
    /// it is. `manager` must be a valid header value (it is one of our names).
    pub fn as_manager(&self, manager: &str) -> Client {
        let agent = format!("{manager}/{}", env!("CARGO_PKG_VERSION"));
        let mut client = self.clone();
        client.user_agent = reqwest::header::HeaderValue::from_str(&agent)
            .expect("a manager name is a valid header value");
        client
    }

    /// The field manager this client writes as: the product of its User-Agent
    /// (`manager` of [`Client::as_manager`], else `oakestra`).
    pub fn manager(&self) -> &str {
        let agent = self.user_agent.to_str().unwrap_or(USER_AGENT);
        agent.split_once('/').map_or(agent, |(product, _)| product)
    }

    /// The base URL of the server requests go to now (of several: the one that last
    /// answered).
    pub fn base(&self) -> &str {
        self.endpoints.current().1
    }

    /// The base URLs of every server this client may send to.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints.urls
    }

    /// The informers that the controllers built on this client (and its clones) share;
    /// a client made with [`Client::new`] starts with none.
    pub fn informers(&self) -> &runtime::Informers {
        &self.informers
    }

    /// An untyped API for `kind`, in namespace `ns` (ignored for cluster-scoped kinds;
    /// `None` for namespaced kinds means all namespaces on list and watch).
    pub fn dynamic(&self, kind: &'static KindInfo, ns: Option<&str>) -> DynamicApi {
        self.verbs(kind, ns)
    }

    /// A typed API for `K`.
    pub fn api<K: Resource>(&self, ns: Option<&str>) -> Api<K> {
        Api {
            inner: self.verbs(K::info(), ns),
        }
    }

    /// The verbs of `kind` in namespace `ns`, objects decoded as `T`.
    fn verbs<T>(&self, kind: &'static KindInfo, ns: Option<&str>) -> DynamicApi<T> {
        DynamicApi {
            client: self.clone(),
            kind,
            namespace: ns.filter(|_| kind.namespaced).map(String::from),
            dry_run: None,
            _object: PhantomData,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder, url: &str) -> Result<reqwest::Response> {
        // Set on the request itself: a client's default headers would not reach a
        // server in this process.
        let request = request.header(reqwest::header::USER_AGENT, self.user_agent.clone());
        let sent = match &self.local {
            None => match request.build() {
                Ok(request) => self.execute_failing_over(request).await,
                Err(e) => Err(e),
            },
            Some(server) => match request.build() {
                // A streamed body cannot be handed over whole: it goes over the network.
                Ok(request) if request.body().is_some_and(|b| b.as_bytes().is_none()) => {
                    self.http.execute(request).await
                }
                Ok(request) => Ok(send_local(server.as_ref(), request).await),
                Err(e) => Err(e),
            },
        };
        let response = sent.map_err(|source| ClientError::Transport {
            url: url.into(),
            source,
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let code = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.into(),
                source,
            })?;
        let status = serde_json::from_slice::<Status>(&body).unwrap_or_else(|_| {
            Status::failure(
                code,
                "Unknown",
                format!("HTTP {code}: {}", String::from_utf8_lossy(&body).trim()),
            )
        });
        Err(ClientError::Api {
            status: Box::new(status),
        })
    }

    /// Send `request` to the current server; when it cannot be connected to (so the
    /// request never reached it), to the next one, each at most once.
    async fn execute_failing_over(
        &self,
        request: reqwest::Request,
    ) -> reqwest::Result<reqwest::Response> {
        let servers = self.endpoints.urls.len();
        let (mut at, mut base) = self.endpoints.current();
        let mut tried = 1;
        loop {
            let attempt = match rebased(&request, base) {
                Some(rebased) if servers > 1 => rebased,
                // One server, or a streamed body that cannot be sent twice.
                _ => return self.http.execute(request).await,
            };
            match self.http.execute(attempt).await {
                Err(e) if e.is_connect() && tried < servers => {
                    let failed = base.to_string();
                    (at, base) = self.endpoints.after(at);
                    tried += 1;
                    tracing::warn!(%failed, next = %base, error = %cause_chain(&e), "API server unreachable; trying the next");
                }
                answer => return answer,
            }
        }
    }

    /// Send `request` and decode the answer as `T` (straight from the body's bytes: a
    /// typed caller gets no intermediate `Value`).
    async fn json<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<T> {
        let response = self.send(request, url).await?;
        response.json().await.map_err(|e| ClientError::Decode {
            url: url.into(),
            message: e.to_string(),
        })
    }

    /// GET any path as text (e.g. an agent's logs).
    pub async fn get_text(&self, path: &str) -> Result<String> {
        let url = format!("{}{path}", self.base());
        let response = self.send(self.http.get(&url), &url).await?;
        response
            .text()
            .await
            .map_err(|source| ClientError::Transport { url, source })
    }

    /// GET any path (discovery, health) as JSON.
    pub async fn get_json(&self, path: &str) -> Result<Value> {
        let url = format!("{}{path}", self.base());
        self.json(self.http.get(&url), &url).await
    }

    /// POST `body` as JSON to any path outside the resource API (a tier's join and
    /// renewal routes) and read the answer as JSON.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value> {
        let url = format!("{}{path}", self.base());
        self.json(self.http.post(&url).json(body), &url).await
    }

    /// GET any path (with its query, e.g. an Instance's `log?tailLines=10`) and stream
    /// the answer's bytes as they arrive; an error answer is an error before the stream.
    pub async fn get_stream(&self, path: &str) -> Result<BoxStream<'static, Result<bytes::Bytes>>> {
        let url = format!("{}{path}", self.base());
        let response = self.send(self.http.get(&url), &url).await?;
        Ok(body_stream(response, url).boxed())
    }
}

/// The body of `response` (to `url`) as it arrives.
fn body_stream(
    response: reqwest::Response,
    url: String,
) -> impl Stream<Item = Result<bytes::Bytes>> + Send + 'static {
    response
        .bytes_stream()
        .map_err(move |source| ClientError::Transport {
            url: url.clone(),
            source,
        })
}

/// Hand `request` (its body whole, if any) to the in-process `server` and wrap its answer
/// as if it had come over the network.
async fn send_local(server: &dyn LocalServer, request: reqwest::Request) -> reqwest::Response {
    let body = request
        .body()
        .and_then(reqwest::Body::as_bytes)
        .map(bytes::Bytes::copy_from_slice)
        .unwrap_or_default();
    let mut local = http::Request::new(body);
    *local.method_mut() = request.method().clone();
    *local.uri_mut() =
        http::Uri::try_from(request.url().as_str()).expect("a URL reqwest accepted is a valid URI");
    *local.headers_mut() = request.headers().clone();
    let response = server.call(local).await;
    reqwest::Response::from(response.map(reqwest::Body::wrap_stream))
}

/// A page of a list (or a watch bookmark: no items, its `resourceVersion`).
#[derive(serde::Deserialize)]
struct Page<T> {
    #[serde(default = "Vec::new")]
    items: Vec<T>,
    #[serde(default)]
    metadata: ListMeta,
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ListMeta {
    resource_version: Option<String>,
    #[serde(rename = "continue")]
    continue_token: Option<String>,
}

/// Options of a list or watch.
#[derive(Debug, Default, Clone)]
pub struct ListParams {
    /// Only objects whose labels match, e.g. `app=web,tier!=db`.
    pub label_selector: Option<String>,
    /// Only objects whose fields match, e.g. `spec.node=n1`.
    pub field_selector: Option<String>,
    /// At most this many objects per page (a list then continues with a token).
    pub limit: Option<usize>,
    /// The token of the page to read next, from the previous page.
    pub continue_token: Option<String>,
    /// A watch starts after this version; a list reads at it.
    pub resource_version: Option<String>,
    /// Ask a watch for bookmarks (progress notes carrying only a resourceVersion).
    pub bookmarks: bool,
    /// The server ends the list or watch after this many seconds.
    pub timeout_seconds: Option<u64>,
}

impl ListParams {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        let mut push = |k, v: &Option<String>| {
            if let Some(v) = v {
                q.push((k, v.clone()));
            }
        };
        push("labelSelector", &self.label_selector);
        push("fieldSelector", &self.field_selector);
        push("limit", &self.limit.map(|l| l.to_string()));
        push("continue", &self.continue_token);
        push("resourceVersion", &self.resource_version);
        push(
            "timeoutSeconds",
            &self.timeout_seconds.map(|t| t.to_string()),
        );
        if self.bookmarks {
            q.push(("allowWatchBookmarks", "true".into()));
        }
        q
    }
}

/// One event of a watch.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent<T> {
    /// The object was created (or existed when the watch began).
    Added(T),
    /// The object changed.
    Modified(T),
    /// The object was deleted (as it was last).
    Deleted(T),
    /// Progress: every change up to this resourceVersion has been delivered.
    Bookmark(String),
}

/// Access to one kind, its objects decoded as `T`: JSON values by default (what `oakctl`
/// needs for arbitrary manifests), or a typed kind (what [`Api`] is built on). Every verb
/// is written once, for any `T`.
pub struct DynamicApi<T = Value> {
    client: Client,
    kind: &'static KindInfo,
    namespace: Option<String>,
    /// The `dryRun` value sent with every write (`None`: a real write).
    dry_run: Option<String>,
    _object: PhantomData<fn() -> T>,
}

impl<T> Clone for DynamicApi<T> {
    fn clone(&self) -> Self {
        self.retype()
    }
}

impl<T> std::fmt::Debug for DynamicApi<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicApi")
            .field("client", &self.client)
            .field("kind", &self.kind.kind)
            .field("namespace", &self.namespace)
            .field("dry_run", &self.dry_run)
            .finish()
    }
}

impl<T> DynamicApi<T> {
    /// The kind this API speaks to.
    pub fn kind(&self) -> &'static KindInfo {
        self.kind
    }

    /// The client this API sends its requests through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The namespace of the requests (`None`: cluster-scoped, or all namespaces).
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The same API, its writes (create, replace, patch, bind, delete) sent as dry runs
    /// (`dryRun=All`): the server checks and answers them as it would the real write,
    /// and stores nothing.
    pub fn dry_run(&self) -> Self {
        self.with_dry_run("All")
    }

    /// The same API, its writes sent with `dryRun=value` as is (the server accepts only
    /// `All`: see [`dry_run`](Self::dry_run); other values are for testing its answer).
    pub fn with_dry_run(&self, value: &str) -> Self {
        let mut api = self.retype();
        api.dry_run = Some(value.to_string());
        api
    }

    /// `request` as a write: with the `dryRun` parameter, if this API sends one.
    fn write(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.dry_run {
            Some(value) => request.query(&[("dryRun", value)]),
            None => request,
        }
    }

    /// The same kind and namespace, its objects decoded as `U`.
    fn retype<U>(&self) -> DynamicApi<U> {
        DynamicApi {
            client: self.client.clone(),
            kind: self.kind,
            namespace: self.namespace.clone(),
            dry_run: self.dry_run.clone(),
            _object: PhantomData,
        }
    }

    fn collection_url(&self) -> String {
        let k = self.kind;
        let base = if k.group.is_empty() {
            format!("{}/api/{}", self.client.base(), k.version)
        } else {
            format!("{}/apis/{}/{}", self.client.base(), k.group, k.version)
        };
        match &self.namespace {
            Some(ns) => format!("{base}/namespaces/{ns}/{}", k.plural),
            None => format!("{base}/{}", k.plural),
        }
    }

    fn item_url(&self, name: &str) -> String {
        format!("{}/{name}", self.collection_url())
    }

    fn status_url(&self, name: &str) -> String {
        format!("{}/status", self.item_url(name))
    }

    /// One page of the list (the `<Kind>List` object, as JSON).
    pub async fn list(&self, params: &ListParams) -> Result<Value> {
        let url = self.collection_url();
        self.client
            .json(self.client.http.get(&url).query(&params.query()), &url)
            .await
    }

    /// Delete; returns the server's answer as JSON (the object, marked for deletion if
    /// finalizers remain).
    pub async fn delete(&self, name: &str, resource_version: Option<&str>) -> Result<Value> {
        let url = self.item_url(name);
        let mut request = self.write(self.client.http.delete(&url));
        if let Some(rv) = resource_version {
            request = request.json(&serde_json::json!({"preconditions": {"resourceVersion": rv}}));
        }
        self.client.json(request, &url).await
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> DynamicApi<T> {
    /// The object `name`.
    pub async fn get(&self, name: &str) -> Result<T> {
        let url = self.item_url(name);
        self.client.json(self.client.http.get(&url), &url).await
    }

    /// Like [`get`](Self::get), but `None` when the object does not exist.
    pub async fn get_opt(&self, name: &str) -> Result<Option<T>> {
        match self.get(name).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every page of the list: the items and the resourceVersion of the first page.
    pub async fn list_all(&self, params: &ListParams) -> Result<(Vec<T>, String)> {
        let url = self.collection_url();
        let mut params = params.clone();
        let mut items = Vec::new();
        let mut version = None;
        loop {
            let request = self.client.http.get(&url).query(&params.query());
            let mut page: Page<T> = self.client.json(request, &url).await?;
            version.get_or_insert_with(|| page.metadata.resource_version.unwrap_or_default());
            items.append(&mut page.items);
            match page.metadata.continue_token.filter(|c| !c.is_empty()) {
                Some(c) => params.continue_token = Some(c),
                None => return Ok((items, version.unwrap_or_default())),
            }
        }
    }

    /// Create `object`; returns it as stored.
    pub async fn create(&self, object: &T) -> Result<T> {
        let url = self.collection_url();
        self.client
            .json(self.write(self.client.http.post(&url)).json(object), &url)
            .await
    }

    /// Replace the object `name` with `object` (a PUT, at `object`'s resourceVersion if
    /// it has one).
    pub async fn replace(&self, name: &str, object: &T) -> Result<T> {
        self.put(self.item_url(name), object).await
    }

    /// Replace the status subresource of `name` with `object`'s status.
    pub async fn replace_status(&self, name: &str, object: &T) -> Result<T> {
        self.put(self.status_url(name), object).await
    }

    /// PUT `object` to `url`.
    async fn put(&self, url: String, object: &T) -> Result<T> {
        self.client
            .json(self.write(self.client.http.put(&url)).json(object), &url)
            .await
    }

    /// POST to the `binding` subresource (Instances): bind `name` to the target
    /// `target_kind` (`Cluster` or `Node`) named `target`, at `resource_version` if
    /// given; the server sets the target field and the `Scheduled` condition in one
    /// write and answers with the object.
    pub async fn bind(
        &self,
        name: &str,
        target_kind: &str,
        target: &str,
        resource_version: Option<&str>,
    ) -> Result<T> {
        let url = format!("{}/binding", self.item_url(name));
        let body = serde_json::json!({
            "apiVersion": crds::API_VERSION,
            "kind": "Binding",
            "metadata": {"name": name, "resourceVersion": resource_version},
            "target": {"kind": target_kind, "name": target},
        });
        self.client
            .json(self.write(self.client.http.post(&url)).json(&body), &url)
            .await
    }

    /// JSON merge patch of the object.
    pub async fn patch(&self, name: &str, patch: &Value) -> Result<T> {
        self.merge_patch(self.item_url(name), patch).await
    }

    /// JSON merge patch of the status subresource.
    pub async fn patch_status(&self, name: &str, patch: &Value) -> Result<T> {
        self.merge_patch(self.status_url(name), patch).await
    }

    /// RFC 6902 JSON patch (`operations`: a list of `add`, `remove`, `replace`, `move`,
    /// `copy`, `test`) of the object, or of its status subresource with `status`.
    pub async fn json_patch(&self, name: &str, operations: &Value, status: bool) -> Result<T> {
        let body = serde_json::to_vec(operations).expect("JSON serializes");
        self.patch_with(name, &body, "application/json-patch+json", &[], status)
            .await
    }

    /// PATCH the object (with `status`: its status subresource) with `body` as is, sent
    /// as `content_type` with the extra `query` parameters (server-side apply, for
    /// one: `application/apply-patch+yaml` with `fieldManager` and `force`). A dry-run
    /// API adds its `dryRun` as to every write.
    pub async fn patch_with(
        &self,
        name: &str,
        body: &[u8],
        content_type: &str,
        query: &[(&str, String)],
        status: bool,
    ) -> Result<T> {
        let url = if status {
            self.status_url(name)
        } else {
            self.item_url(name)
        };
        self.send_patch(url, body.to_vec(), content_type, query)
            .await
    }

    /// Server-side apply of `object` (a partial object with apiVersion, kind and
    /// metadata.name: the fields `field_manager` means to own) to `name`, creating it
    /// when absent; `force` takes fields other managers own instead of failing with a
    /// conflict (409, [`ClientError::is_conflict`]).
    pub async fn apply(
        &self,
        name: &str,
        object: &Value,
        field_manager: &str,
        force: bool,
    ) -> Result<T> {
        self.send_apply(name, object, field_manager, force, false)
            .await
    }

    /// Server-side apply of `object`'s status to the status subresource of `name`.
    pub async fn apply_status(
        &self,
        name: &str,
        object: &Value,
        field_manager: &str,
        force: bool,
    ) -> Result<T> {
        self.send_apply(name, object, field_manager, force, true)
            .await
    }

    async fn send_apply(
        &self,
        name: &str,
        object: &Value,
        field_manager: &str,
        force: bool,
        status: bool,
    ) -> Result<T> {
        let mut query = vec![("fieldManager", field_manager.to_string())];
        if force {
            query.push(("force", "true".into()));
        }
        let body = serde_json::to_vec(object).expect("JSON serializes");
        self.patch_with(name, &body, "application/apply-patch+yaml", &query, status)
            .await
    }

    async fn merge_patch(&self, url: String, patch: &Value) -> Result<T> {
        let body = serde_json::to_vec(patch).expect("JSON serializes");
        self.send_patch(url, body, "application/merge-patch+json", &[])
            .await
    }

    async fn send_patch(
        &self,
        url: String,
        body: Vec<u8>,
        content_type: &str,
        query: &[(&str, String)],
    ) -> Result<T> {
        let request = self
            .write(self.client.http.patch(&url))
            .query(query)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        self.client.json(request, &url).await
    }

    /// Watch from `params.resource_version`. The stream ends when the server closes it;
    /// a 410 (too old) arrives as an error whose [`ClientError::is_gone`] is true.
    pub async fn watch(
        &self,
        params: &ListParams,
    ) -> Result<BoxStream<'static, Result<WatchEvent<T>>>> {
        let url = self.collection_url();
        let mut query = params.query();
        query.push(("watch", "true".into()));
        let response = self
            .client
            .send(self.client.http.get(&url).query(&query), &url)
            .await?;
        Ok(lines(body_stream(response, url.clone()))
            .map(move |line| parse_event(&url, line?))
            .boxed())
    }
}

/// Split a byte stream into lines.
fn lines(
    bytes: impl Stream<Item = Result<bytes::Bytes>> + Send + 'static,
) -> impl Stream<Item = Result<Vec<u8>>> + Send + 'static {
    futures::stream::unfold(
        (Box::pin(bytes), Vec::<u8>::new(), false),
        |(mut bytes, mut buf, done)| async move {
            loop {
                if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    return Some((Ok(line), (bytes, buf, done)));
                }
                if done {
                    return None;
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    Some(Err(e)) => return Some((Err(e), (bytes, buf, true))),
                    None => {
                        if buf.iter().all(u8::is_ascii_whitespace) {
                            return None;
                        }
                        buf.push(b'\n');
                        return Some((Ok(std::mem::take(&mut buf)), (bytes, buf, true)));
                    }
                }
            }
        },
    )
}

/// One line of a watch stream; the object is decoded as `T` once its type is known (a
/// bookmark's or an error's object is not a `T`).
fn parse_event<T: DeserializeOwned>(url: &str, line: Vec<u8>) -> Result<WatchEvent<T>> {
    #[derive(serde::Deserialize)]
    struct Raw<'a> {
        #[serde(rename = "type")]
        type_: String,
        #[serde(borrow)]
        object: &'a serde_json::value::RawValue,
    }
    let bad = |what: &str, e: serde_json::Error| ClientError::Decode {
        url: url.into(),
        message: format!("bad {what}: {e}"),
    };
    let raw: Raw = serde_json::from_slice(&line).map_err(|e| bad("watch event", e))?;
    let object = |what: &str| serde_json::from_str::<T>(raw.object.get()).map_err(|e| bad(what, e));
    match raw.type_.as_str() {
        "ADDED" => Ok(WatchEvent::Added(object("ADDED object")?)),
        "MODIFIED" => Ok(WatchEvent::Modified(object("MODIFIED object")?)),
        "DELETED" => Ok(WatchEvent::Deleted(object("DELETED object")?)),
        "BOOKMARK" => {
            let b: Page<serde::de::IgnoredAny> =
                serde_json::from_str(raw.object.get()).map_err(|e| bad("BOOKMARK event", e))?;
            Ok(WatchEvent::Bookmark(
                b.metadata.resource_version.unwrap_or_default(),
            ))
        }
        "ERROR" => {
            let status: Status =
                serde_json::from_str(raw.object.get()).map_err(|e| bad("ERROR event", e))?;
            Err(ClientError::Api {
                status: Box::new(status),
            })
        }
        other => Err(ClientError::Decode {
            url: url.into(),
            message: format!("unknown watch event type {other:?}"),
        }),
    }
}

/// Typed access to one kind: the verbs of [`DynamicApi`] with `K` for the object, and
/// the object's own name where a verb takes the whole object.
pub struct Api<K> {
    inner: DynamicApi<K>,
}

impl<K> Clone for Api<K> {
    fn clone(&self) -> Self {
        Api {
            inner: self.inner.clone(),
        }
    }
}

impl<K> std::fmt::Debug for Api<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Api").field(&self.inner).finish()
    }
}

impl<K: Resource> Api<K> {
    /// The same kind and namespace with JSON values (for fields the type does not
    /// model, or an answer that is not a `K`).
    pub fn dynamic(&self) -> DynamicApi {
        self.inner.retype()
    }
    /// The client this API sends its requests through.
    pub fn client(&self) -> &Client {
        self.inner.client()
    }
    /// The namespace of the requests (`None`: cluster-scoped, or all namespaces).
    pub fn namespace(&self) -> Option<&str> {
        self.inner.namespace()
    }
    /// The object `name`.
    pub async fn get(&self, name: &str) -> Result<K> {
        self.inner.get(name).await
    }
    /// The object `name`, or `None` when it does not exist.
    pub async fn get_opt(&self, name: &str) -> Result<Option<K>> {
        self.inner.get_opt(name).await
    }
    /// Every object matching `params` (all pages) and the list's resourceVersion.
    pub async fn list(&self, params: &ListParams) -> Result<(Vec<K>, String)> {
        self.inner.list_all(params).await
    }
    /// Create `object`; returns it as stored.
    pub async fn create(&self, object: &K) -> Result<K> {
        self.inner.create(object).await
    }
    /// Replace the object of `object`'s name.
    pub async fn replace(&self, object: &K) -> Result<K> {
        self.inner.replace(&object.metadata().name, object).await
    }
    /// Replace the status of the object of `object`'s name.
    pub async fn replace_status(&self, object: &K) -> Result<K> {
        self.inner
            .replace_status(&object.metadata().name, object)
            .await
    }
    /// JSON merge patch of the object.
    pub async fn patch(&self, name: &str, patch: &Value) -> Result<K> {
        self.inner.patch(name, patch).await
    }
    /// See [`DynamicApi::bind`].
    pub async fn bind(
        &self,
        name: &str,
        target_kind: &str,
        target: &str,
        resource_version: Option<&str>,
    ) -> Result<K> {
        self.inner
            .bind(name, target_kind, target, resource_version)
            .await
    }
    /// JSON merge patch of the status subresource.
    pub async fn patch_status(&self, name: &str, patch: &Value) -> Result<K> {
        self.inner.patch_status(name, patch).await
    }
    /// See [`DynamicApi::json_patch`].
    pub async fn json_patch(&self, name: &str, operations: &Value, status: bool) -> Result<K> {
        self.inner.json_patch(name, operations, status).await
    }
    /// Server-side apply of `status` to the status of `name`, as this client's
    /// [`Client::manager`], forcing (as Kubernetes asks of controllers: the fields are
    /// theirs to set). `status` is everything of the status the manager owns: a field
    /// it applied before and leaves out now is removed unless another manager owns
    /// it; list-maps such as `conditions` merge by key, so a manager sends only its own
    /// entries. No version precondition: the write never fails because another
    /// manager wrote meanwhile.
    pub async fn apply_own_status(&self, name: &str, status: &impl serde::Serialize) -> Result<K> {
        let kind = self.inner.kind;
        let body = serde_json::json!({
            "apiVersion": kind.api_version(),
            "kind": kind.kind,
            "metadata": {"name": name},
            "status": status,
        });
        let manager = self.client().manager().to_string();
        self.inner.apply_status(name, &body, &manager, true).await
    }
    /// Delete the object `name` (unconditionally).
    pub async fn delete(&self, name: &str) -> Result<()> {
        self.inner.delete(name, None).await.map(|_| ())
    }
    /// See [`DynamicApi::watch`].
    pub async fn watch(
        &self,
        params: &ListParams,
    ) -> Result<BoxStream<'static, Result<WatchEvent<K>>>> {
        self.inner.watch(params).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::Cluster;

    const URL: &str = "http://api/apis/oakestra.io/v1/clusters";

    #[test]
    fn a_client_writes_as_its_manager() {
        let plain = Client::new("http://api").unwrap();
        assert_eq!(plain.manager(), "oakestra");
        assert_eq!(plain.as_manager("oakestra-ipam").manager(), "oakestra-ipam");
    }

    fn line(s: &str) -> Vec<u8> {
        format!("{s}\n").into_bytes()
    }

    #[test]
    fn watch_lines_decode_straight_to_the_kind() {
        let added = line(
            r#"{"type":"ADDED","object":{"apiVersion":"oakestra.io/v1","kind":"Cluster","metadata":{"name":"a","resourceVersion":"7"},"spec":{}}}"#,
        );
        match parse_event::<Cluster>(URL, added).unwrap() {
            WatchEvent::Added(c) => {
                assert_eq!(c.metadata.name, "a");
                assert_eq!(c.metadata.resource_version.as_deref(), Some("7"));
            }
            other => panic!("expected ADDED, got {other:?}"),
        }
        // A bookmark's object is not a Cluster (no spec): only its version is read.
        let bookmark = line(
            r#"{"type":"BOOKMARK","object":{"kind":"Cluster","metadata":{"resourceVersion":"42"}}}"#,
        );
        assert_eq!(
            parse_event::<Cluster>(URL, bookmark).unwrap(),
            WatchEvent::Bookmark("42".into())
        );
    }

    #[test]
    fn watch_errors_say_what_and_where() {
        let gone = line(
            r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old","reason":"Expired","code":410}}"#,
        );
        let e = parse_event::<Cluster>(URL, gone).unwrap_err();
        assert!(e.is_gone(), "{e}");

        let wrong = line(r#"{"type":"MODIFIED","object":{"metadata":{"name":7}}}"#);
        let e = parse_event::<Cluster>(URL, wrong).unwrap_err().to_string();
        assert!(e.contains(URL) && e.contains("bad MODIFIED object"), "{e}");

        let unknown = line(r#"{"type":"RENAMED","object":{}}"#);
        let e = parse_event::<Cluster>(URL, unknown)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown watch event type \"RENAMED\""), "{e}");
    }

    #[test]
    fn endpoints_are_one_url_or_several() {
        let cases: [(&str, Option<&[&str]>); 5] = [
            ("https://a:1", Some(&["https://a:1"])),
            (
                "https://a:1/,https://b:2",
                Some(&["https://a:1", "https://b:2"]),
            ),
            (
                " http://a:1 , https://b:2/ ",
                Some(&["http://a:1", "https://b:2"]),
            ),
            ("https://a:1,b:2", None),
            (",", None),
        ];
        for (input, want) in cases {
            match (endpoints(input), want) {
                (Ok(got), Some(want)) => assert_eq!(got, want, "{input}"),
                (Err(ClientError::BadUrl(_)), None) => {}
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    /// A plain-HTTP server on a free port that answers every request with `{"n": N}`, N
    /// counting its requests.
    async fn counting_server() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = count.clone();
        tokio::spawn(async move {
            loop {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let body = format!("{{\"n\": {n}}}");
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(answer.as_bytes()).await;
            }
        });
        (url, count)
    }

    #[tokio::test]
    async fn a_server_that_refuses_connections_is_skipped_and_stays_skipped() {
        // A port nothing listens on (bound, then closed).
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let (open, served) = counting_server().await;
        let client = Client::new(&format!("{closed},{open}")).unwrap();
        assert_eq!(client.base(), closed);
        let answer = client.get_json("/version").await.unwrap();
        assert_eq!(answer["n"], 1);
        assert_eq!(
            client.base(),
            open,
            "requests go to the server that answered"
        );
        // Clones share where requests go; the next request goes straight there.
        let clone = client.clone();
        assert_eq!(clone.get_json("/version").await.unwrap()["n"], 2);
        assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 2);

        // With every server down, the error names the request's server.
        let down = Client::new(&format!("{closed},{closed}")).unwrap();
        let e = down.get_json("/version").await.unwrap_err();
        assert!(e.is_transport(), "{e}");
    }
}
