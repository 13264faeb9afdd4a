//! The HTTP API: Kubernetes paths and verbs over the [`Registry`], watch streams,
//! discovery, health and metrics.
//!
//! Every request carries its caller's [`Identity`] as an extension (set by the TLS
//! connection, a bearer token, or the in-process path; see [`crate::auth`]). Lists and
//! watches are authorized here, before they start; gets and writes by the registry, on
//! the object they read.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use crds::KindInfo;
use futures::{Stream, StreamExt, TryStreamExt};
use pki::Identity;
use serde_json::{json, Value};

use crate::auth::{self, RequestAttributes, Security, Verb};
use crate::discovery;
use crate::error::ApiError;
use crate::metrics::{Metrics, RequestLabels, VerbLabels};
use crate::object::{self, FieldSelector, LabelSelector};
use crate::registry::{
    strategy, DeleteOptions, ListOptions, Part, PatchType, Propagation, Registry, Subresource,
    WriteOptions,
};
use crate::watch::WatchError;

/// Limits and intervals of the HTTP API.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest accepted request body (larger: 413).
    pub max_body_bytes: usize,
    /// How often watchers that asked for bookmarks get one.
    pub bookmark_interval: Duration,
    /// Recent changes kept for watches that start in the past (older: 410).
    pub watch_cache_events: usize,
    /// TLS and authentication. The binaries always set it. `None` serves plain HTTP
    /// where every request is the administrator: only for tests of the API itself.
    pub security: Option<Security>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 3 * 1024 * 1024,
            bookmark_interval: Duration::from_secs(10),
            watch_cache_events: 10_000,
            security: None,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The verbs over storage.
    pub registry: Registry,
    /// Request and storage metrics.
    pub metrics: Arc<Metrics>,
    /// Limits and intervals.
    pub config: Arc<ServerConfig>,
}

/// The whole HTTP surface of the API server: its own routes, which anonymous callers
/// reach only for health and version (else 401), and `extra`, the binary's routes,
/// which do their own checks. The caller's [`Identity`] must be a request extension
/// (a request without one is anonymous).
pub fn router(state: AppState, extra: Router) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/version", get(|| async { Json(discovery::version()) }))
        .route(crate::backup::SNAPSHOT_PATH, get(snapshot))
        .fallback(api)
        .with_state(state)
        .layer(axum::middleware::from_fn(auth::require_identity))
        .merge(extra)
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.registry.store().revision().await {
        Ok(_) => "ok".into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("storage: {e}")).into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    state.metrics.watchers.set(state.registry.hub().watchers());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// Every key of the store at one revision, as a backup file (`oakestra backup`),
/// streamed as it is read; administrators only. A storage failure while streaming ends
/// the body with an error, and the file it makes lacks its end line.
async fn snapshot(
    State(state): State<AppState>,
    Extension(caller): Extension<Identity>,
) -> Response {
    if let Err(f) = auth::authorize::authorize_snapshot(&caller) {
        return ApiError::from(f).into_response();
    }
    tracing::info!(user = %caller.user(), "streaming a snapshot of the store");
    let lines = crate::backup::snapshot(state.registry.store().clone()).inspect_err(|e| {
        tracing::error!(error = %e, "the snapshot broke off");
    });
    (
        [(header::CONTENT_TYPE, "application/jsonl")],
        Body::from_stream(lines),
    )
        .into_response()
}

/// What a resource path names.
#[derive(Debug)]
struct Target {
    kind: &'static KindInfo,
    namespace: Option<String>,
    name: Option<String>,
    /// The subresource, one the kind's strategy serves.
    sub: Option<Subresource>,
}

enum Route {
    Document(Value),
    Resource(Target),
}

fn not_found(path: &str) -> ApiError {
    ApiError::NotFound {
        plural: "the server could not find the requested resource".into(),
        name: path.into(),
    }
}

fn parse_path(path: &str) -> Result<Route, ApiError> {
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let missing = || not_found(path);
    let doc = |v: Option<Value>| v.map(Route::Document).ok_or_else(missing);
    let (group, version, rest) = match segments.as_slice() {
        ["api"] => return Ok(Route::Document(discovery::core_versions())),
        ["apis"] => return Ok(Route::Document(discovery::groups())),
        ["apis", g] => return doc(discovery::group(g)),
        ["api", v] => return doc(discovery::resources("", v)),
        ["apis", g, v] => return doc(discovery::resources(g, v)),
        ["openapi", "v3"] => return Ok(Route::Document(discovery::openapi_index())),
        ["openapi", "v3", "api", v] => return doc(discovery::openapi("", v)),
        ["openapi", "v3", "apis", g, v] => return doc(discovery::openapi(g, v)),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(missing()),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(*s)),
        _ => return Err(missing()),
    };
    let kind = crds::KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
        .ok_or_else(missing)?;
    if namespace.is_some() && !kind.namespaced {
        return Err(missing());
    }
    let sub = match sub {
        None => None,
        Some(s) => Some(
            Subresource::parse(s)
                .filter(|sub| strategy::for_kind(kind).serves(kind, *sub))
                .ok_or_else(missing)?,
        ),
    };
    Ok(Route::Resource(Target {
        kind,
        namespace,
        name,
        sub,
    }))
}

fn verb(method: &Method, target: &Target, query: &HashMap<String, String>) -> Option<Verb> {
    match *method {
        Method::GET if is_true(query.get("watch")) => Some(Verb::Watch),
        Method::GET if target.name.is_none() => Some(Verb::List),
        Method::GET => Some(Verb::Get),
        Method::POST => Some(Verb::Create),
        Method::PUT => Some(Verb::Update),
        Method::PATCH => Some(Verb::Patch),
        Method::DELETE => Some(Verb::Delete),
        _ => None,
    }
}

/// The `dryRun` parameter of a write (a query parameter, or a field of a delete's
/// `DeleteOptions` body): absent or empty for a real write, `All` for a dry run.
fn dry_run(value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "dryRun: Unsupported value: {other:?}: supported values: \"All\""
        ))),
    }
}

/// The options every write verb takes, from the query (reads ignore `dryRun`) and the
/// headers, for `caller`.
fn write_options(
    method: &Method,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    caller: Identity,
) -> Result<WriteOptions, ApiError> {
    let dry_run = match *method {
        Method::GET | Method::HEAD => false,
        _ => dry_run(query.get("dryRun").map(String::as_str))?,
    };
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|u| u.to_str().ok());
    Ok(WriteOptions {
        dry_run,
        caller,
        field_manager: field_manager(query.get("fieldManager").map(String::as_str), user_agent),
    })
}

/// The manager a write is recorded under: `fieldManager`, else the User-Agent's
/// product (before the first `/`: `kubectl` of `kubectl/v1.32.0 (linux/amd64) …`),
/// else `unknown`, as kube-apiserver names it.
fn field_manager(query: Option<&str>, user_agent: Option<&str>) -> String {
    query
        .filter(|m| !m.is_empty())
        .or_else(|| {
            user_agent
                .and_then(|u| u.split('/').next())
                .map(str::trim)
                .filter(|p| !p.is_empty())
        })
        .unwrap_or("unknown")
        .to_string()
}

/// A boolean query parameter as Kubernetes reads one (Go's `strconv.ParseBool`): the
/// Python client sends `watch=True`.
pub(crate) fn is_true(v: Option<&String>) -> bool {
    v.is_some_and(|v| parse_bool(v))
}

/// Whether `v` is true as Go's `strconv.ParseBool` reads it.
pub(crate) fn parse_bool(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "true" | "True" | "TRUE")
}

async fn api(
    State(state): State<AppState>,
    Extension(caller): Extension<Identity>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let target = match parse_path(uri.path()) {
        Ok(Route::Document(doc)) if method == Method::GET => return Json(doc).into_response(),
        Ok(Route::Document(_)) => {
            return ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
                .into_response()
        }
        Ok(Route::Resource(t)) => t,
        Err(e) => return e.into_response(),
    };
    let verb = verb(&method, &target, &query);
    let verb_name = verb.map_or("other", Verb::name);
    let resource = match target.sub {
        None => target.kind.plural.to_string(),
        Some(sub) => format!("{}/{}", target.kind.plural, sub.name()),
    };
    let options = write_options(&method, &query, &headers, caller);
    let span = tracing::info_span!("request", verb = verb_name, user = %options.as_ref().map(|o| o.caller.user()).unwrap_or_default(), resource = %resource, namespace = target.namespace.as_deref(), name = target.name.as_deref(), dry_run = options.as_ref().is_ok_and(|o| o.dry_run));
    let handled = async {
        let options = options?;
        handle(&state, &method, &target, &query, &headers, body, options).await
    };
    let response = match tracing::Instrument::instrument(handled, span.clone()).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(parent: &span, error = %e, "rejected");
            e.into_response()
        }
    };
    let code = response.status().as_u16();
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            verb: verb_name.into(),
            resource: resource.clone(),
            code,
        })
        .inc();
    if verb != Some(Verb::Watch) {
        state
            .metrics
            .request_seconds
            .get_or_create(&VerbLabels {
                verb: verb_name.into(),
                resource,
            })
            .observe(started.elapsed().as_secs_f64());
    }
    tracing::debug!(parent: &span, code, elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "served");
    response
}

/// The body's bytes, up to the configured limit.
async fn read_bytes(state: &AppState, body: Body) -> Result<Bytes, ApiError> {
    let limit = state.config.max_body_bytes;
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::TooLarge { limit })
}

/// A JSON body, or a protobuf one for the core kinds (kubectl's typed commands send
/// `kubectl create secret` so: [`object::protobuf`]). Another media type is a 415.
async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .and_then(|c| c.split(';').next())
        .unwrap_or_default()
        .trim();
    if media == object::protobuf::MEDIA_TYPE {
        let bytes = read_bytes(state, body).await?;
        return object::protobuf::decode(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("the protobuf request body: {e}")));
    }
    if !(media.is_empty() || media.ends_with("json")) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format ({media:?}) - accepted media types include: application/json, {}",
            object::protobuf::MEDIA_TYPE
        )));
    }
    let bytes = read_bytes(state, body).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("the request body is not valid JSON: {e}")))
}

/// An apply's body: YAML (JSON is YAML too).
async fn read_yaml_body(state: &AppState, body: Body) -> Result<Value, ApiError> {
    let bytes = read_bytes(state, body).await?;
    yaml_serde::from_slice(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("the apply body is not valid YAML: {e}")))
}

fn list_options(query: &HashMap<String, String>) -> Result<ListOptions, ApiError> {
    let labels = LabelSelector::parse(
        query
            .get("labelSelector")
            .map(String::as_str)
            .unwrap_or_default(),
    )
    .map_err(ApiError::BadRequest)?;
    let fields = FieldSelector::parse(
        query
            .get("fieldSelector")
            .map(String::as_str)
            .unwrap_or_default(),
    )
    .map_err(ApiError::BadRequest)?;
    let limit = match query.get("limit") {
        Some(l) => Some(
            l.parse()
                .map_err(|_| ApiError::BadRequest(format!("limit: {l:?} is not a number")))?,
        ),
        None => None,
    };
    let exact = query.get("resourceVersionMatch").map(String::as_str) == Some("Exact");
    let revision = match query.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(v) => {
            let v: i64 = v.parse().map_err(|_| {
                ApiError::BadRequest(format!(
                    "resourceVersion: {v:?} is not a valid resource version"
                ))
            })?;
            exact.then_some(v)
        }
    };
    Ok(ListOptions {
        labels,
        fields,
        limit,
        continue_token: query.get("continue").filter(|c| !c.is_empty()).cloned(),
        revision,
    })
}

async fn handle(
    state: &AppState,
    method: &Method,
    target: &Target,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
    options: WriteOptions,
) -> Result<Response, ApiError> {
    let registry = &state.registry;
    let kind = target.kind;
    let ns = target.namespace.as_deref();
    let table = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"));
    let include = IncludeObject::from_query(query)?;
    let part = match target.sub {
        None => Part::Main,
        Some(Subresource::Status) => Part::Status,
        // Any other subresource is written by POSTing to it (a binding).
        Some(sub) => {
            return match (method, target.name.as_deref()) {
                (&Method::POST, Some(name)) => {
                    let body = read_body(state, headers, body).await?;
                    let written = registry
                        .post_subresource(kind, ns, name, sub, body, options)
                        .await?;
                    Ok((StatusCode::CREATED, Json(written)).into_response())
                }
                _ => Err(ApiError::MethodNotAllowed(format!(
                    "{method} is not supported on a {}; POST one",
                    sub.name()
                ))),
            }
        }
    };
    match (method.clone(), target.name.as_deref()) {
        (Method::GET, None) if is_true(query.get("watch")) => {
            authorize_collection(Verb::Watch, target, query, &options.caller)?;
            watch(state, target, query, table.then_some(include)).await
        }
        (Method::GET, None) => {
            authorize_collection(Verb::List, target, query, &options.caller)?;
            let list = registry.list(kind, ns, &list_options(query)?).await?;
            Ok(Json(if table {
                to_table(kind, &list, &list["items"], true, include)
            } else {
                list
            })
            .into_response())
        }
        (Method::GET, Some(name)) => {
            let object = registry.get(kind, ns, name, part, &options.caller).await?;
            Ok(Json(if table {
                to_table(kind, &object, &json!([object]), true, include)
            } else {
                object
            })
            .into_response())
        }
        (Method::POST, None) => {
            let body = read_body(state, headers, body).await?;
            let created = registry.create(kind, ns, body, options).await?;
            Ok((StatusCode::CREATED, Json(created)).into_response())
        }
        (Method::PUT, Some(name)) => {
            let body = read_body(state, headers, body).await?;
            Ok(Json(
                registry
                    .replace(kind, ns, name, body, part, options)
                    .await?,
            )
            .into_response())
        }
        (Method::PATCH, Some(name)) => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|c| c.to_str().ok())
                .unwrap_or_default();
            let patch_type = patch_type(kind, content_type, is_true(query.get("force")))?;
            let patch = match patch_type {
                PatchType::Apply { .. } => {
                    if query.get("fieldManager").is_none_or(|m| m.is_empty()) {
                        return Err(ApiError::BadRequest(
                            "fieldManager: Required value: is required for apply patch".into(),
                        ));
                    }
                    read_yaml_body(state, body).await?
                }
                _ => read_body(state, headers, body).await?,
            };
            Ok(Json(
                registry
                    .patch(kind, ns, name, patch, patch_type, part, options)
                    .await?,
            )
            .into_response())
        }
        (Method::DELETE, Some(name)) if target.sub.is_none() => {
            let body = axum::body::to_bytes(body, state.config.max_body_bytes)
                .await
                .map_err(|_| ApiError::TooLarge {
                    limit: state.config.max_body_bytes,
                })?;
            let options = delete_options(&body, query, options)?;
            if options.write.dry_run {
                tracing::Span::current().record("dry_run", true);
            }
            Ok(Json(registry.delete(kind, ns, name, &options).await?).into_response())
        }
        _ => Err(ApiError::MethodNotAllowed(format!(
            "{method} is not supported on this path"
        ))),
    }
}

/// A list or watch of `target` by `caller`, authorized on its field selector.
fn authorize_collection(
    verb: Verb,
    target: &Target,
    query: &HashMap<String, String>,
    caller: &Identity,
) -> Result<(), ApiError> {
    let request = RequestAttributes {
        verb,
        kind: target.kind,
        subresource: target.sub,
        namespace: target.namespace.as_deref(),
        name: None,
        field_selector: query
            .get("fieldSelector")
            .map(String::as_str)
            .unwrap_or_default(),
        users: &[],
    };
    Ok(auth::authorize(caller, &request, None, None)?)
}

/// The patch type a PATCH's `Content-Type` names. Strategic merge patch is taken as a
/// merge patch for the core kinds (kubectl sends it for `label` and `annotate` on a
/// Namespace; ours have no lists it could merge by key) and refused for `oakestra.io`
/// kinds as kube-apiserver refuses it for custom resources. An apply
/// (`application/apply-patch+yaml`) is forced with `force`.
fn patch_type(kind: &KindInfo, content_type: &str, force: bool) -> Result<PatchType, ApiError> {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    match media {
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/json-patch+json" => Ok(PatchType::Json),
        "application/apply-patch+yaml" => Ok(PatchType::Apply { force }),
        "application/strategic-merge-patch+json" if kind.group.is_empty() => {
            Ok(PatchType::Merge)
        }
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format ({media:?}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
        ))),
    }
}

/// The `DeleteOptions` of a delete: `preconditions.resourceVersion`,
/// `propagationPolicy` and `dryRun` from the body, the query overriding the policy
/// (`write`: the options from the query; a dry run asked for in either is one).
fn delete_options(
    body: &Bytes,
    query: &HashMap<String, String>,
    write: WriteOptions,
) -> Result<DeleteOptions, ApiError> {
    let options: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::BadRequest(format!("the DeleteOptions body is not valid JSON: {e}"))
        })?
    };
    let precondition = match options
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
    {
        Some(v) => Some(v.parse().map_err(|_| {
            ApiError::BadRequest(format!("preconditions.resourceVersion: {v:?} is not valid"))
        })?),
        None => None,
    };
    let policy = query
        .get("propagationPolicy")
        .map(String::as_str)
        .or_else(|| options.get("propagationPolicy").and_then(Value::as_str));
    let propagation = match policy {
        None | Some("Background") => Propagation::Background,
        Some("Foreground") => Propagation::Foreground,
        Some("Orphan") => {
            return Err(ApiError::BadRequest(
                "propagationPolicy Orphan is not supported; use Background or Foreground".into(),
            ))
        }
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "propagationPolicy: {other:?} is not one of Background, Foreground"
            )))
        }
    };
    // In the body, `dryRun` is a list (`["All"]`), as kubectl sends it.
    let mut body_dry_run = false;
    for value in options
        .get("dryRun")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        body_dry_run |= dry_run(Some(value.as_str().unwrap_or("<not a string>")))?;
    }
    Ok(DeleteOptions {
        precondition,
        propagation,
        write: WriteOptions {
            dry_run: write.dry_run || body_dry_run,
            ..write
        },
    })
}

/// A `meta.k8s.io/v1` Table of `items` (kubectl asks for tables to print `get`).
/// What each row of a Table carries besides its cells (`includeObject`, as
/// kube-apiserver reads it): nothing, the object's metadata (the default, as a
/// `PartialObjectMetadata`), or the whole object. A Secret's data is in a table only
/// when the client asks for the objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    fn from_query(query: &HashMap<String, String>) -> Result<Self, ApiError> {
        match query.get("includeObject").map(String::as_str) {
            None | Some("") | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(ApiError::BadRequest(format!(
                "includeObject: {other:?} is not one of None, Metadata, Object"
            ))),
        }
    }

    fn row_object(self, object: &Value) -> Option<Value> {
        match self {
            IncludeObject::None => None,
            IncludeObject::Metadata => Some(json!({
                "apiVersion": "meta.k8s.io/v1",
                "kind": "PartialObjectMetadata",
                "metadata": object.get("metadata").cloned().unwrap_or_default(),
            })),
            IncludeObject::Object => Some(object.clone()),
        }
    }
}

fn to_table(
    kind: &KindInfo,
    source: &Value,
    items: &Value,
    with_columns: bool,
    include: IncludeObject,
) -> Value {
    let now = chrono::Utc::now();
    let mut columns = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}),
    ];
    for (priority, cols) in [(0, kind.columns), (1, kind.wide_columns)] {
        for (header, _) in cols {
            columns.push(json!({"name": header, "type": "string", "format": "", "description": header, "priority": priority}));
        }
    }
    columns.push(
        json!({"name": "Age", "type": "string", "format": "", "description": "Age", "priority": 0}),
    );
    let rows: Vec<Value> = items
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            let mut cells = vec![json!(object::meta_str(o, "name").unwrap_or_default())];
            for (_, ptr) in kind.columns.iter().chain(kind.wide_columns) {
                cells.push(json!(crds::column_value(o, ptr)));
            }
            cells.push(json!(crds::age(o, now)));
            let mut row = json!({"cells": cells});
            if let Some(object) = include.row_object(o) {
                row["object"] = object;
            }
            row
        })
        .collect();
    let mut table = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": source.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""))},
        "rows": rows,
    });
    if with_columns {
        table["columnDefinitions"] = json!(columns);
    }
    table
}

/// The event a selective watcher gets for a change: a modified object that starts
/// matching is `ADDED`, one that stops matching is `DELETED`, as in Kubernetes.
/// `matched_before` is `None` when the previous object is unknown.
fn selected_type(
    kind: &'static str,
    matched_before: Option<bool>,
    matches_now: bool,
) -> Option<&'static str> {
    match (kind, matched_before, matches_now) {
        ("MODIFIED", Some(false), true) => Some("ADDED"),
        ("MODIFIED", Some(true), false) => Some("DELETED"),
        (_, _, true) => Some(kind),
        _ => None,
    }
}

fn event_line(type_: &str, object: &[u8]) -> Bytes {
    let mut line = Vec::with_capacity(object.len() + 32);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(type_.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(object);
    line.extend_from_slice(b"}\n");
    line.into()
}

fn error_line(e: &ApiError) -> Bytes {
    event_line(
        "ERROR",
        &serde_json::to_vec(&e.status()).expect("status serializes"),
    )
}

/// `?watch=true`: newline-delimited watch events.
async fn watch(
    state: &AppState,
    target: &Target,
    query: &HashMap<String, String>,
    table: Option<IncludeObject>,
) -> Result<Response, ApiError> {
    let kind = target.kind;
    let ns = target.namespace.as_deref();
    let opts = list_options(query)?;
    let prefix = object::key(kind, ns, "");
    // Without a resourceVersion the watch starts with the current objects (as ADDED).
    let (initial, after) = match query.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => {
            let list = state
                .registry
                .list(
                    kind,
                    ns,
                    &ListOptions {
                        limit: None,
                        continue_token: None,
                        revision: None,
                        ..opts.clone()
                    },
                )
                .await?;
            let rv = list["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or_default();
            let items = list["items"].as_array().cloned().unwrap_or_default();
            (items, rv)
        }
        Some(v) => (
            vec![],
            v.parse().map_err(|_| {
                ApiError::BadRequest(format!(
                    "resourceVersion: {v:?} is not a valid resource version"
                ))
            })?,
        ),
    };
    // A version past every one the store has reached comes from another history (a
    // store restored from a backup, or replaced): watching on from it would skip every
    // change up to it, so the watcher lists again instead. Past the hub's latest only,
    // the store is asked (the hub may lag a write the caller has seen).
    if after > state.registry.hub().latest() {
        let store = state
            .registry
            .store()
            .revision()
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        if after > store {
            return Err(ApiError::Gone(format!(
                "resourceVersion {after} is newer than the store's latest ({store}): the store was restored or replaced; list again"
            )));
        }
    }
    let live = state
        .registry
        .hub()
        .subscribe(&prefix, after)
        .map_err(|e| ApiError::Gone(e.to_string()))?;
    let encode = move |type_: &str, object: &Value| -> Bytes {
        if let Some(include) = table {
            let t = to_table(kind, object, &json!([object]), true, include);
            event_line(type_, &serde_json::to_vec(&t).expect("table serializes"))
        } else {
            event_line(
                type_,
                &serde_json::to_vec(object).expect("object serializes"),
            )
        }
    };
    let first = futures::stream::iter(
        initial
            .into_iter()
            .map(move |o| encode("ADDED", &o))
            .collect::<Vec<_>>(),
    );
    let (labels, fields) = (opts.labels, opts.fields);
    let selective = !(labels.is_empty() && fields.is_empty());
    let changes = live.filter_map(move |change| {
        let out = match change {
            // Without selectors or a table, the change's JSON is sent as it is: nothing
            // is decoded.
            Ok(c) if !selective && table.is_none() => {
                c.json().map(|json| event_line(c.kind, &json))
            }
            // Selectors read the change's view (shared by the watchers of a live
            // change); what is sent is its JSON, or its table.
            Ok(c) => c.view().and_then(|view| {
                let matches = |o: &Value| labels.matches(o) && fields.matches(o);
                let before = selective.then(|| c.previous_view()).flatten();
                let type_ = selected_type(c.kind, before.as_deref().map(matches), matches(&view))?;
                match table {
                    Some(_) => c.object().map(|object| encode(type_, &object)),
                    None => c.json().map(|json| event_line(type_, &json)),
                }
            }),
            Err(WatchError::TooOld { .. } | WatchError::Expired) => {
                Some(error_line(&ApiError::Gone(
                    "the watch expired: list again and watch from the new resourceVersion".into(),
                )))
            }
        };
        futures::future::ready(out)
    });
    let events = first.chain(changes);
    let events: std::pin::Pin<Box<dyn Stream<Item = Bytes> + Send>> = if is_true(
        query.get("allowWatchBookmarks"),
    ) {
        let hub = state.registry.hub().clone();
        let api_version = kind.api_version();
        let kind_name = kind.kind;
        let mut ticker = tokio::time::interval(state.config.bookmark_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let bookmarks = tokio_stream::wrappers::IntervalStream::new(ticker).skip(1).map(move |_| {
            let object = json!({"apiVersion": api_version, "kind": kind_name, "metadata": {"resourceVersion": hub.latest().to_string()}});
            event_line("BOOKMARK", &serde_json::to_vec(&object).expect("bookmark serializes"))
        });
        Box::pin(futures::stream::select(events, bookmarks))
    } else {
        Box::pin(events)
    };
    let events = match query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
    {
        Some(secs) => events
            .take_until(tokio::time::sleep(Duration::from_secs(secs)))
            .boxed(),
        None => events,
    };
    let body = Body::from_stream(events.map(Ok::<_, Infallible>));
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows_carry_what_include_object_asks_for() {
        let kind = crds::kind_by_name("secrets").unwrap();
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "db", "namespace": "default", "labels": {"app": "shop"}},
            "data": {"password": "czNjcmV0", "user": "YWRtaW4="}});
        let query = |v: Option<&str>| {
            let mut q = HashMap::new();
            if let Some(v) = v {
                q.insert("includeObject".to_string(), v.to_string());
            }
            IncludeObject::from_query(&q)
        };
        let row =
            |include| to_table(kind, &secret, &json!([secret]), true, include)["rows"][0].clone();
        let metadata = row(query(None).unwrap());
        assert_eq!(
            metadata["cells"],
            json!(["db", "Opaque", "2", row(IncludeObject::None)["cells"][3]])
        );
        assert_eq!(metadata["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(metadata["object"]["metadata"]["labels"]["app"], "shop");
        assert!(!metadata.to_string().contains("czNjcmV0"), "{metadata}");
        assert_eq!(row(query(Some("None")).unwrap()).get("object"), None);
        assert_eq!(row(query(Some("Object")).unwrap())["object"], secret);
        assert!(query(Some("All")).is_err());
    }

    #[test]
    fn the_field_manager_of_a_write() {
        for (query, user_agent, want) in [
            (Some("a"), Some("kubectl/v1.32.0 (linux/amd64)"), "a"),
            (
                None,
                Some("kubectl/v1.32.0 (linux/amd64) kubernetes/abc"),
                "kubectl",
            ),
            (Some(""), Some("oakctl"), "oakctl"),
            (None, Some("/v1"), "unknown"),
            (None, None, "unknown"),
        ] {
            assert_eq!(
                field_manager(query, user_agent),
                want,
                "{query:?} {user_agent:?}"
            );
        }
    }

    #[test]
    fn patch_types_by_content_type() {
        let service = crds::kind_by_name("services").unwrap();
        for (content_type, want) in [
            ("application/merge-patch+json", Some(PatchType::Merge)),
            (
                "application/json-patch+json; charset=utf-8",
                Some(PatchType::Json),
            ),
            (
                "application/apply-patch+yaml",
                Some(PatchType::Apply { force: true }),
            ),
            ("application/strategic-merge-patch+json", None),
        ] {
            match (patch_type(service, content_type, true), want) {
                (Ok(got), Some(want)) => assert_eq!(got, want, "{content_type}"),
                (Err(e), None) => assert!(
                    e.to_string()
                        .ends_with("application/merge-patch+json, application/apply-patch+yaml"),
                    "{e}"
                ),
                (got, want) => panic!("{content_type}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn query_booleans_read_as_kubernetes_reads_them() {
        for (value, expected) in [
            ("true", true),
            ("True", true),
            ("TRUE", true),
            ("1", true),
            ("t", true),
            ("false", false),
            ("False", false),
            ("0", false),
            ("yes", false),
            ("", false),
        ] {
            assert_eq!(is_true(Some(&value.to_string())), expected, "{value:?}");
        }
        assert!(!is_true(None));
    }
}
