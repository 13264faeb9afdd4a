//! Clients of the Oakestra API.
//!
//! [`Client`] holds the connection; [`DynamicApi`] speaks to one kind with JSON values
//! (what `oakctl` needs for arbitrary manifests); [`Api`] is the typed layer over it
//! for controllers; [`runtime`] is the reconcile runtime built on them. Errors are typed so callers can tell a conflict from a missing
//! object from a transport failure.

pub mod runtime;

use std::marker::PhantomData;
use std::sync::Arc;

use crds::{KindInfo, Resource, Status};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a Kubernetes `Status` error.
    #[error("{}", .status.message)]
    Api { status: Box<Status> },
    #[error("cannot reach the API server at {url}: {}", cause_chain(.source))]
    Transport { url: String, source: reqwest::Error },
    #[error("unexpected answer from {url}: {message}")]
    Decode { url: String, message: String },
    #[error("invalid server URL {0:?}: expected http://HOST:PORT")]
    BadUrl(String),
}

/// The innermost cause of a transport error, e.g. "Connection refused (os error 111)".
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
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }
    pub fn is_conflict(&self) -> bool {
        self.code() == Some(409)
    }
    pub fn is_gone(&self) -> bool {
        self.code() == Some(410)
    }
    pub fn is_invalid(&self) -> bool {
        self.code() == Some(422)
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A connection to one API server.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    /// The shared informers of this client and its clones.
    informers: Arc<runtime::informer::Registry>,
}

impl Client {
    /// `server` is the base URL, e.g. `http://127.0.0.1:10000`.
    pub fn new(server: &str) -> Result<Self> {
        let base = server.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(ClientError::BadUrl(server.into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|source| ClientError::Transport {
                url: base.clone(),
                source,
            })?;
        Ok(Client {
            http,
            base,
            informers: Arc::default(),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// An untyped API for `kind`, in namespace `ns` (ignored for cluster-scoped kinds;
    /// `None` for namespaced kinds means all namespaces on list and watch).
    pub fn dynamic(&self, kind: &'static KindInfo, ns: Option<&str>) -> DynamicApi {
        DynamicApi {
            client: self.clone(),
            kind,
            namespace: ns.filter(|_| kind.namespaced).map(String::from),
        }
    }

    /// A typed API for `K`.
    pub fn api<K: Resource>(&self, ns: Option<&str>) -> Api<K> {
        Api {
            inner: self.dynamic(K::info(), ns),
            _kind: PhantomData,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder, url: &str) -> Result<reqwest::Response> {
        let response = request
            .send()
            .await
            .map_err(|source| ClientError::Transport {
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

    async fn json(&self, request: reqwest::RequestBuilder, url: &str) -> Result<Value> {
        let response = self.send(request, url).await?;
        response.json().await.map_err(|e| ClientError::Decode {
            url: url.into(),
            message: e.to_string(),
        })
    }

    /// GET any path as text (e.g. an agent's logs).
    pub async fn get_text(&self, path: &str) -> Result<String> {
        let url = format!("{}{path}", self.base);
        let response = self.send(self.http.get(&url), &url).await?;
        response
            .text()
            .await
            .map_err(|source| ClientError::Transport { url, source })
    }

    /// GET any path (discovery, health) as JSON.
    pub async fn get_json(&self, path: &str) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        self.json(self.http.get(&url), &url).await
    }
}

/// Options of a list or watch.
#[derive(Debug, Default, Clone)]
pub struct ListParams {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub bookmarks: bool,
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
    Added(T),
    Modified(T),
    Deleted(T),
    /// Progress: every change up to this resourceVersion has been delivered.
    Bookmark(String),
}

/// Untyped access to one kind.
#[derive(Clone, Debug)]
pub struct DynamicApi {
    client: Client,
    kind: &'static KindInfo,
    namespace: Option<String>,
}

impl DynamicApi {
    pub fn kind(&self) -> &'static KindInfo {
        self.kind
    }

    fn collection_url(&self) -> String {
        let k = self.kind;
        let base = if k.group.is_empty() {
            format!("{}/api/{}", self.client.base, k.version)
        } else {
            format!("{}/apis/{}/{}", self.client.base, k.group, k.version)
        };
        match &self.namespace {
            Some(ns) => format!("{base}/namespaces/{ns}/{}", k.plural),
            None => format!("{base}/{}", k.plural),
        }
    }

    fn item_url(&self, name: &str) -> String {
        format!("{}/{name}", self.collection_url())
    }

    pub async fn get(&self, name: &str) -> Result<Value> {
        let url = self.item_url(name);
        self.client.json(self.client.http.get(&url), &url).await
    }

    /// Like [`get`](Self::get), but `None` when the object does not exist.
    pub async fn get_opt(&self, name: &str) -> Result<Option<Value>> {
        match self.get(name).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One page of the list (the `<Kind>List` object).
    pub async fn list(&self, params: &ListParams) -> Result<Value> {
        let url = self.collection_url();
        self.client
            .json(self.client.http.get(&url).query(&params.query()), &url)
            .await
    }

    /// Every page of the list: the items and the resourceVersion of the first page.
    pub async fn list_all(&self, params: &ListParams) -> Result<(Vec<Value>, String)> {
        let mut params = params.clone();
        let mut items = Vec::new();
        let mut version = None;
        loop {
            let mut page = self.list(&params).await?;
            version.get_or_insert_with(|| {
                page["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            });
            if let Some(a) = page["items"].as_array_mut() {
                items.append(a);
            }
            match page["metadata"]["continue"]
                .as_str()
                .filter(|c| !c.is_empty())
            {
                Some(c) => params.continue_token = Some(c.to_string()),
                None => return Ok((items, version.unwrap_or_default())),
            }
        }
    }

    pub async fn create(&self, object: &Value) -> Result<Value> {
        let url = self.collection_url();
        self.client
            .json(self.client.http.post(&url).json(object), &url)
            .await
    }

    pub async fn replace(&self, name: &str, object: &Value) -> Result<Value> {
        let url = self.item_url(name);
        self.client
            .json(self.client.http.put(&url).json(object), &url)
            .await
    }

    pub async fn replace_status(&self, name: &str, object: &Value) -> Result<Value> {
        let url = format!("{}/status", self.item_url(name));
        self.client
            .json(self.client.http.put(&url).json(object), &url)
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
    ) -> Result<Value> {
        let url = format!("{}/binding", self.item_url(name));
        let body = serde_json::json!({
            "apiVersion": crds::API_VERSION,
            "kind": "Binding",
            "metadata": {"name": name, "resourceVersion": resource_version},
            "target": {"kind": target_kind, "name": target},
        });
        self.client
            .json(self.client.http.post(&url).json(&body), &url)
            .await
    }

    async fn merge_patch_url(&self, url: String, patch: &Value) -> Result<Value> {
        let request = self
            .client
            .http
            .patch(&url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/merge-patch+json",
            )
            .body(serde_json::to_vec(patch).expect("JSON serializes"));
        self.client.json(request, &url).await
    }

    /// JSON merge patch of the object.
    pub async fn patch(&self, name: &str, patch: &Value) -> Result<Value> {
        self.merge_patch_url(self.item_url(name), patch).await
    }

    /// JSON merge patch of the status subresource.
    pub async fn patch_status(&self, name: &str, patch: &Value) -> Result<Value> {
        self.merge_patch_url(format!("{}/status", self.item_url(name)), patch)
            .await
    }

    /// Delete; returns the object (marked for deletion if finalizers remain).
    pub async fn delete(&self, name: &str, resource_version: Option<&str>) -> Result<Value> {
        let url = self.item_url(name);
        let mut request = self.client.http.delete(&url);
        if let Some(rv) = resource_version {
            request = request.json(&serde_json::json!({"preconditions": {"resourceVersion": rv}}));
        }
        self.client.json(request, &url).await
    }

    /// Watch from `params.resource_version`. The stream ends when the server closes it;
    /// a 410 (too old) arrives as an error whose [`ClientError::is_gone`] is true.
    pub async fn watch(
        &self,
        params: &ListParams,
    ) -> Result<BoxStream<'static, Result<WatchEvent<Value>>>> {
        let url = self.collection_url();
        let mut query = params.query();
        query.push(("watch", "true".into()));
        let response = self
            .client
            .send(self.client.http.get(&url).query(&query), &url)
            .await?;
        let bytes = response.bytes_stream().map_err({
            let url = url.clone();
            move |source| ClientError::Transport {
                url: url.clone(),
                source,
            }
        });
        Ok(lines(bytes)
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

fn parse_event(url: &str, line: Vec<u8>) -> Result<WatchEvent<Value>> {
    #[derive(serde::Deserialize)]
    struct Raw {
        #[serde(rename = "type")]
        type_: String,
        object: Value,
    }
    let raw: Raw = serde_json::from_slice(&line).map_err(|e| ClientError::Decode {
        url: url.into(),
        message: format!("bad watch event: {e}"),
    })?;
    match raw.type_.as_str() {
        "ADDED" => Ok(WatchEvent::Added(raw.object)),
        "MODIFIED" => Ok(WatchEvent::Modified(raw.object)),
        "DELETED" => Ok(WatchEvent::Deleted(raw.object)),
        "BOOKMARK" => Ok(WatchEvent::Bookmark(
            raw.object["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )),
        "ERROR" => {
            let status: Status =
                serde_json::from_value(raw.object).map_err(|e| ClientError::Decode {
                    url: url.into(),
                    message: format!("bad ERROR event: {e}"),
                })?;
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

/// Typed access to one kind.
#[derive(Clone, Debug)]
pub struct Api<K> {
    inner: DynamicApi,
    _kind: PhantomData<fn() -> K>,
}

fn typed<K: Resource>(url: &str, v: Value) -> Result<K> {
    serde_json::from_value(v).map_err(|e| ClientError::Decode {
        url: url.into(),
        message: e.to_string(),
    })
}

fn untyped<K: Resource>(k: &K) -> Value {
    serde_json::to_value(k).expect("resources serialize")
}

impl<K: Resource> Api<K> {
    pub fn dynamic(&self) -> &DynamicApi {
        &self.inner
    }
    pub async fn get(&self, name: &str) -> Result<K> {
        typed(&self.inner.item_url(name), self.inner.get(name).await?)
    }
    pub async fn list(&self, params: &ListParams) -> Result<(Vec<K>, String)> {
        let (items, version) = self.inner.list_all(params).await?;
        let url = self.inner.collection_url();
        Ok((
            items
                .into_iter()
                .map(|v| typed(&url, v))
                .collect::<Result<_>>()?,
            version,
        ))
    }
    pub async fn create(&self, object: &K) -> Result<K> {
        typed(
            &self.inner.collection_url(),
            self.inner.create(&untyped(object)).await?,
        )
    }
    pub async fn replace(&self, object: &K) -> Result<K> {
        let name = object.metadata().name.clone();
        typed(
            &self.inner.item_url(&name),
            self.inner.replace(&name, &untyped(object)).await?,
        )
    }
    pub async fn replace_status(&self, object: &K) -> Result<K> {
        let name = object.metadata().name.clone();
        typed(
            &self.inner.item_url(&name),
            self.inner.replace_status(&name, &untyped(object)).await?,
        )
    }
    pub async fn patch(&self, name: &str, patch: &Value) -> Result<K> {
        typed(
            &self.inner.item_url(name),
            self.inner.patch(name, patch).await?,
        )
    }
    /// See [`DynamicApi::bind`].
    pub async fn bind(
        &self,
        name: &str,
        target_kind: &str,
        target: &str,
        resource_version: Option<&str>,
    ) -> Result<K> {
        typed(
            &self.inner.item_url(name),
            self.inner
                .bind(name, target_kind, target, resource_version)
                .await?,
        )
    }
    pub async fn patch_status(&self, name: &str, patch: &Value) -> Result<K> {
        typed(
            &self.inner.item_url(name),
            self.inner.patch_status(name, patch).await?,
        )
    }
    pub async fn delete(&self, name: &str) -> Result<()> {
        self.inner.delete(name, None).await.map(|_| ())
    }
    pub async fn watch(
        &self,
        params: &ListParams,
    ) -> Result<BoxStream<'static, Result<WatchEvent<K>>>> {
        let url = self.inner.collection_url();
        Ok(self
            .inner
            .watch(params)
            .await?
            .map(move |e| {
                Ok(match e? {
                    WatchEvent::Added(v) => WatchEvent::Added(typed(&url, v)?),
                    WatchEvent::Modified(v) => WatchEvent::Modified(typed(&url, v)?),
                    WatchEvent::Deleted(v) => WatchEvent::Deleted(typed(&url, v)?),
                    WatchEvent::Bookmark(rv) => WatchEvent::Bookmark(rv),
                })
            })
            .boxed())
    }
}
