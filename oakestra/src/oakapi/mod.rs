//! Oakestra's root REST API (the paths its `oak` CLI and dashboard use), served by the
//! root beside the Kubernetes paths on the same port, as a facade over the same API:
//! every read and write goes through the root's own routes in process, so validation,
//! storage and watches stay in one place.
//!
//! - [`auth`]: the login (`POST /api/auth/login`, `/api/auth/refresh`), its sessions,
//!   and the [`auth::Gate`] authenticator that serves them and confines plain HTTP.
//! - [`shape`]: our objects in Oakestra's JSON shapes (pure, with tables).
//! - Here: the routes and their handlers.
//!
//! An application is the Services of one `oakestra.io/application` in one Namespace
//! (the SLA import's mapping, `sla` crate) plus the record of it on the Namespace; its
//! id is derived from the Namespace's uid and its name, a service's id is the Service's
//! uid: both survive restarts. Only administrators may use these routes (a session of
//! the login is one); the handlers then read and write with the server's in-process
//! client, which the authorizer lets do what an administrator may.

pub mod auth;
pub mod shape;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use client::{Client, ClientError, ListParams};
use crds::ipam::Cidr;
use crds::{Cluster, Instance, Namespace, Service};
use pki::Identity;
use serde_json::{json, Map, Value};

use self::auth::{Grant, Sessions, Transport};
use self::shape::App;

/// The field manager of the facade's server-side applies.
pub const FIELD_MANAGER: &str = "oakestra-api";

/// Why a request to Oakestra's API failed; answered as `{"message": …}` with the
/// status [`OakApiError::status`] says.
#[derive(Debug, thiserror::Error)]
pub enum OakApiError {
    /// The request itself is malformed (not JSON, a field of the wrong type).
    #[error("{0}")]
    BadRequest(String),
    /// No session, or a wrong login.
    #[error("{0}")]
    Unauthorized(String),
    /// An identity that may not use this API.
    #[error("{0}")]
    Forbidden(String),
    /// The application, service, instance or user does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It exists already.
    #[error("{0}")]
    Conflict(String),
    /// The SLA (or an update) is refused, with every reason.
    #[error("{0}")]
    Invalid(String),
    /// The server's in-process client is not there yet (the API is starting).
    #[error("the API server is starting; try again")]
    NotReady,
    /// The root's API refused or failed a request.
    #[error("{what}: {source}")]
    Api {
        /// What the facade was doing.
        what: String,
        /// The API's answer.
        #[source]
        source: ClientError,
    },
    /// Issuing a session failed.
    #[error(transparent)]
    Session(#[from] auth::AuthError),
}

impl OakApiError {
    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            OakApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            OakApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            OakApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            OakApiError::NotFound(_) => StatusCode::NOT_FOUND,
            OakApiError::Conflict(_) => StatusCode::CONFLICT,
            OakApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            OakApiError::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            OakApiError::Api { source, .. } => match source.code() {
                Some(400 | 422) => StatusCode::UNPROCESSABLE_ENTITY,
                Some(403) => StatusCode::FORBIDDEN,
                Some(404) => StatusCode::NOT_FOUND,
                Some(409) => StatusCode::CONFLICT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            OakApiError::Session(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for OakApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "Oakestra API request failed");
        } else {
            tracing::debug!(error = %self, %status, "Oakestra API request refused");
        }
        (status, Json(json!({"message": self.to_string()}))).into_response()
    }
}

type Answer = Result<Json<Value>, OakApiError>;

/// The facade's shared state.
pub struct OakApi {
    /// The server's in-process client, set once the server runs.
    pub local: crate::roles::LocalClient,
    /// The login's sessions (shared with the [`auth::Gate`]).
    pub sessions: Arc<Sessions>,
    /// The administrator's password.
    pub password: String,
    /// Whether Oakestra's fixed Admin/Admin login is accepted over plain HTTP from
    /// loopback (`oakestra up` only).
    pub default_pair: bool,
    /// The root's service range, where SLAs' `rr_ip` must be.
    pub service_cidr: Cidr,
}

/// How a root serves Oakestra's API.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the administrator's password is kept (the root's data directory).
    pub data_dir: PathBuf,
    /// Serve plain HTTP to loopback peers for Oakestra's paths, and accept Oakestra's
    /// fixed Admin/Admin login there (`oakestra up`).
    pub plain_loopback: bool,
    /// The root's service range.
    pub service_cidr: Cidr,
}

/// Serve Oakestra's API with `security`: its routes join the tier's, its sessions and
/// plain-HTTP rules wrap the tier's authenticator ([`auth::Gate`]); `local` is where
/// the server's in-process client appears once it runs. Returns the password file.
pub fn install(
    security: &mut apiserver::auth::Security,
    local: crate::roles::LocalClient,
    settings: Settings,
) -> Result<PathBuf, auth::AuthError> {
    let (path, password) = auth::admin_password(&settings.data_dir)?;
    let sessions = Arc::new(Sessions::default());
    security.authenticator = Arc::new(auth::Gate {
        inner: security.authenticator.clone(),
        sessions: sessions.clone(),
        plain: settings.plain_loopback,
    });
    let api = Arc::new(OakApi {
        local,
        sessions,
        password,
        default_pair: settings.plain_loopback,
        service_cidr: settings.service_cidr,
    });
    security.routes = std::mem::take(&mut security.routes).merge(routes(api));
    Ok(path)
}

/// Oakestra's paths (with and without the trailing slash Oakestra's CLI sometimes
/// leaves out).
pub fn routes(api: Arc<OakApi>) -> Router {
    Router::new()
        .route("/api/auth/login", post(login))
        .route("/api/auth/refresh", post(refresh))
        .route("/api/application", post(create_application))
        .route("/api/application/", post(create_application))
        .route(
            "/api/application/{id}",
            get(get_application)
                .put(update_application)
                .delete(delete_application),
        )
        .route("/api/applications", get(list_applications))
        .route("/api/applications/", get(list_applications))
        .route("/api/applications/{user}", get(list_user_applications))
        .route("/api/service", post(create_service))
        .route("/api/service/", post(create_service))
        .route(
            "/api/service/{id}",
            get(get_service).put(update_service).delete(delete_service),
        )
        .route("/api/service/{id}/instance", post(scale_up))
        .route(
            "/api/service/{id}/instance/{n}",
            axum::routing::delete(scale_down),
        )
        .route("/api/services", get(list_services))
        .route("/api/services/", get(list_services))
        .route("/api/services/{app}", get(list_app_services))
        .route("/api/clusters", get(list_clusters))
        .route("/api/clusters/", get(list_clusters))
        .route("/api/clusters/active", get(list_active_clusters))
        .with_state(api)
}

/// An administrator's request (a session of the login, an admin certificate or
/// token); anyone else is refused.
struct Admin;

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = OakApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Identity>() {
            Some(Identity::Admin { .. }) => Ok(Admin),
            Some(Identity::Anonymous) | None => Err(OakApiError::Unauthorized(
                "log in first (POST /api/auth/login) and send Authorization: Bearer TOKEN".into(),
            )),
            Some(other) => Err(OakApiError::Forbidden(format!(
                "{} may not use Oakestra's API: administrators only",
                other.user()
            ))),
        }
    }
}

/// How the request came: plain HTTP (marked by the listener) or TLS.
fn transport(parts: &Parts) -> Transport {
    if parts
        .extensions
        .get::<apiserver::auth::PlainHttp>()
        .is_some()
    {
        Transport::Plain
    } else {
        Transport::Tls
    }
}

/// The request's transport, as an extractor.
struct Via(Transport);

impl<S: Send + Sync> FromRequestParts<S> for Via {
    type Rejection = OakApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Via(transport(parts)))
    }
}

/// The body as a JSON value.
fn json_body(body: &Bytes) -> Result<Value, OakApiError> {
    if body.is_empty() {
        return Err(OakApiError::BadRequest(
            "the request has no JSON body".into(),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| OakApiError::BadRequest(format!("the body is not JSON: {e}")))
}

/// A string field of `body`, required.
fn string_field<'a>(body: &'a Value, field: &str) -> Result<&'a str, OakApiError> {
    match body.get(field) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(OakApiError::BadRequest(format!("{field}: required"))),
        Some(_) => Err(OakApiError::BadRequest(format!(
            "{field}: must be a string"
        ))),
    }
}

async fn login(State(api): State<Arc<OakApi>>, Via(via): Via, body: Bytes) -> Answer {
    let body = json_body(&body)?;
    let user = string_field(&body, "username")?;
    let password = string_field(&body, "password")?;
    let grant = auth::login(user, password, &api.password, api.default_pair, via)
        .ok_or_else(|| OakApiError::Unauthorized("invalid username or password".into()))?;
    let tokens = api.sessions.login(grant)?;
    tracing::info!(user, transport = ?via, plain_only = grant == Grant::PlainOnly, "Oakestra API login");
    Ok(Json(
        json!({"token": tokens.access, "refresh_token": tokens.refresh}),
    ))
}

async fn refresh(State(api): State<Arc<OakApi>>, Via(via): Via, body: Bytes) -> Answer {
    let body = json_body(&body)?;
    let refresh = string_field(&body, "refresh_token")?;
    match api.sessions.refresh(refresh, via)? {
        Some(token) => Ok(Json(json!({"token": token}))),
        None => Err(OakApiError::Unauthorized(
            "the refresh token is unknown or expired: log in again".into(),
        )),
    }
}

/// What the facade reads to answer: the Namespaces, the Services, and the
/// applications they make up.
struct View {
    namespaces: Vec<Namespace>,
    services: Vec<Service>,
    apps: Vec<App>,
}

impl View {
    fn app(&self, id: &str) -> Result<&App, OakApiError> {
        self.apps
            .iter()
            .find(|a| a.id == id)
            .ok_or_else(|| OakApiError::NotFound(format!("Application {id} not found")))
    }

    fn service(&self, id: &str) -> Result<&Service, OakApiError> {
        self.services
            .iter()
            .find(|s| {
                s.metadata.uid.as_deref() == Some(id)
                    && s.metadata.labels.contains_key(sla::LABEL_APPLICATION)
            })
            .ok_or_else(|| OakApiError::NotFound(format!("service {id} not found")))
    }

    /// The application of `service`.
    fn app_of(&self, service: &Service) -> Option<&App> {
        let ns = service.metadata.namespace.as_deref().unwrap_or_default();
        self.apps
            .iter()
            .find(|a| a.kube_namespace == ns && a.services.contains(&service.metadata.name))
    }

    /// The Services of `app`.
    fn services_of<'a>(&'a self, app: &'a App) -> impl Iterator<Item = &'a Service> + 'a {
        self.services.iter().filter(move |s| {
            s.metadata.namespace.as_deref() == Some(app.kube_namespace.as_str())
                && app.services.contains(&s.metadata.name)
        })
    }

    fn app_json(&self, app: &App) -> Value {
        let ids: Vec<String> = self.services_of(app).map(shape::service_id).collect();
        shape::application_json(app, &ids)
    }
}

async fn client(api: &OakApi) -> Result<Client, OakApiError> {
    api.local.get().await.ok_or(OakApiError::NotReady)
}

/// The server's client and what the facade reads through it first: the [`View`].
async fn read(api: &OakApi) -> Result<(Client, View), OakApiError> {
    let client = client(api).await?;
    let view = view(&client).await?;
    Ok((client, view))
}

fn failed(what: impl Into<String>) -> impl FnOnce(ClientError) -> OakApiError {
    let what = what.into();
    move |source| OakApiError::Api { what, source }
}

async fn view(client: &Client) -> Result<View, OakApiError> {
    let (namespaces, _) = client
        .api::<Namespace>(None)
        .list(&ListParams::default())
        .await
        .map_err(failed("listing Namespaces"))?;
    let (services, _) = client
        .api::<Service>(None)
        .list(&ListParams::default())
        .await
        .map_err(failed("listing Services"))?;
    let apps = shape::applications(&namespaces, &services);
    Ok(View {
        namespaces,
        services,
        apps,
    })
}

/// The Instances of every Service, by namespace and Service.
async fn instances(
    client: &Client,
    only: Option<&Service>,
) -> Result<BTreeMap<(String, String), Vec<Instance>>, OakApiError> {
    let (api, params) = match only {
        Some(s) => (
            client.api::<Instance>(s.metadata.namespace.as_deref()),
            ListParams {
                field_selector: Some(format!("spec.service={}", s.metadata.name)),
                ..Default::default()
            },
        ),
        None => (client.api::<Instance>(None), ListParams::default()),
    };
    let (items, _) = api
        .list(&params)
        .await
        .map_err(failed("listing Instances"))?;
    let mut by_service: BTreeMap<(String, String), Vec<Instance>> = BTreeMap::new();
    for i in items {
        let key = (
            i.metadata.namespace.clone().unwrap_or_default(),
            i.spec.service.clone(),
        );
        by_service.entry(key).or_default().push(i);
    }
    Ok(by_service)
}

fn service_value(
    view: &View,
    service: &Service,
    instances: &BTreeMap<(String, String), Vec<Instance>>,
) -> Value {
    let key = (
        service.metadata.namespace.clone().unwrap_or_default(),
        service.metadata.name.clone(),
    );
    let mine: Vec<&Instance> = instances.get(&key).into_iter().flatten().collect();
    let app_id = view
        .app_of(service)
        .map(|a| a.id.as_str())
        .unwrap_or_default();
    shape::service_json(service, app_id, &mine)
}

/// The SLA mapped with the root's service range; every problem in one 422.
fn convert(api: &OakApi, sla: &Value, replicas: i32) -> Result<sla::Converted, OakApiError> {
    let options = sla::Options {
        service_cidr: api.service_cidr,
        replicas,
    };
    sla::convert(sla, &options).map_err(|errors| {
        let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
        OakApiError::Invalid(all.join("; "))
    })
}

async fn apply_services(
    client: &Client,
    services: &[Service],
    force: bool,
) -> Result<(), OakApiError> {
    for service in services {
        let ns = service.metadata.namespace.as_deref();
        let value = serde_json::to_value(service).expect("a Service serializes");
        client
            .api::<Service>(ns)
            .dynamic()
            .apply(&service.metadata.name, &value, FIELD_MANAGER, force)
            .await
            .map_err(failed(format!(
                "applying Service {}/{}",
                ns.unwrap_or_default(),
                service.metadata.name
            )))?;
    }
    Ok(())
}

/// Refuse Services that exist already (nothing is written then).
fn refuse_existing(view: &View, services: &[Service]) -> Result<(), OakApiError> {
    for s in services {
        if view.services.iter().any(|e| {
            e.metadata.namespace == s.metadata.namespace && e.metadata.name == s.metadata.name
        }) {
            return Err(OakApiError::Conflict(format!(
                "a Service {}/{} exists already (microservice {:?})",
                s.metadata.namespace.as_deref().unwrap_or_default(),
                s.metadata.name,
                s.metadata
                    .labels
                    .get(sla::LABEL_MICROSERVICE)
                    .cloned()
                    .unwrap_or_default()
            )));
        }
    }
    Ok(())
}

async fn create_application(_: Admin, State(api): State<Arc<OakApi>>, body: Bytes) -> Answer {
    let sla = json_body(&body)?;
    let converted = convert(&api, &sla, 0)?;
    let (ref client, current) = read(&api).await?;
    for ns in &converted.namespaces {
        for name in shape::records(ns).keys() {
            if current
                .apps
                .iter()
                .any(|a| a.kube_namespace == ns.metadata.name && &a.name == name)
            {
                return Err(OakApiError::Conflict(format!(
                    "An application with the same name and namespace exists already: {name:?} in {:?}",
                    ns.metadata.name
                )));
            }
        }
    }
    refuse_existing(&current, &converted.services)?;
    for ns in &converted.namespaces {
        let mut records = current
            .namespaces
            .iter()
            .find(|e| e.metadata.name == ns.metadata.name)
            .map(shape::records)
            .unwrap_or_default();
        records.extend(shape::records(ns));
        let mut object = ns.clone();
        object.metadata.annotations.insert(
            sla::ANNOTATION_EXTRA.into(),
            shape::with_records(ns, records),
        );
        let value = serde_json::to_value(&object).expect("a Namespace serializes");
        client
            .api::<Namespace>(None)
            .dynamic()
            .apply(&ns.metadata.name, &value, FIELD_MANAGER, true)
            .await
            .map_err(failed(format!("applying Namespace {}", ns.metadata.name)))?;
    }
    apply_services(client, &converted.services, false).await?;
    tracing::info!(
        namespaces = converted.namespaces.len(),
        services = converted.services.len(),
        "Oakestra API: applications created"
    );
    let after = view(client).await?;
    let all: Vec<Value> = after.apps.iter().map(|a| after.app_json(a)).collect();
    Ok(Json(Value::Array(all)))
}

async fn get_application(
    _: Admin,
    State(api): State<Arc<OakApi>>,
    Path(id): Path<String>,
) -> Answer {
    let (_, view) = read(&api).await?;
    Ok(Json(view.app_json(view.app(&id)?)))
}

async fn list_applications(_: Admin, State(api): State<Arc<OakApi>>) -> Answer {
    let (_, view) = read(&api).await?;
    Ok(Json(Value::Array(
        view.apps.iter().map(|a| view.app_json(a)).collect(),
    )))
}

async fn list_user_applications(
    admin: Admin,
    state: State<Arc<OakApi>>,
    Path(user): Path<String>,
) -> Answer {
    if user != shape::USER {
        return Err(OakApiError::NotFound(format!(
            "no user {user:?} here: the one user is {:?}",
            shape::USER
        )));
    }
    list_applications(admin, state).await
}

/// Write `records` as the application records of Namespace `ns`.
async fn write_records(
    client: &Client,
    ns: &Namespace,
    records: Map<String, Value>,
) -> Result<(), OakApiError> {
    let patch = json!({"metadata": {
        "resourceVersion": ns.metadata.resource_version,
        "annotations": {sla::ANNOTATION_EXTRA: shape::with_records(ns, records)}}});
    client
        .api::<Namespace>(None)
        .patch(&ns.metadata.name, &patch)
        .await
        .map_err(failed(format!("updating Namespace {}", ns.metadata.name)))?;
    Ok(())
}

fn namespace_of<'a>(view: &'a View, app: &App) -> Result<&'a Namespace, OakApiError> {
    view.namespaces
        .iter()
        .find(|n| n.metadata.name == app.kube_namespace)
        .ok_or_else(|| OakApiError::NotFound(format!("Namespace {} not found", app.kube_namespace)))
}

async fn update_application(
    _: Admin,
    State(api): State<Arc<OakApi>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer {
    let body = json_body(&body)?;
    let (ref client, view) = read(&api).await?;
    let app = view.app(&id)?;
    for (field, now) in [
        ("application_name", &app.name),
        ("application_namespace", &app.namespace),
    ] {
        match body.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == now => {}
            Some(other) => {
                return Err(OakApiError::Invalid(format!(
                    "{field}: {other} differs from {now:?}: an application's name and namespace \
                     are its Namespace and labels here and cannot change (create a new one)"
                )))
            }
        }
    }
    if let Some(listed) = body.get("microservices").filter(|v| !v.is_null()) {
        let mut want: Vec<String> = serde_json::from_value(listed.clone()).map_err(|_| {
            OakApiError::BadRequest("microservices: must be a list of service ids".into())
        })?;
        let mut have: Vec<String> = view.services_of(app).map(shape::service_id).collect();
        want.sort();
        have.sort();
        if want != have {
            return Err(OakApiError::Invalid(
                "microservices: an application's services change with POST /api/service/ and \
                 DELETE /api/service/{id}, not here"
                    .into(),
            ));
        }
    }
    let desc = match body.get("application_desc") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(OakApiError::BadRequest(
                "application_desc: must be a string".into(),
            ))
        }
    };
    if let Some(desc) = desc {
        let ns = namespace_of(&view, app)?;
        let mut records = shape::records(ns);
        let record = records
            .entry(app.name.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(r) = record.as_object_mut() {
            r.insert("application_desc".into(), Value::String(desc));
        }
        write_records(client, ns, records).await?;
    }
    Ok(Json(json!({"message": "Application is updated"})))
}

/// Delete `service` (gone already is fine).
async fn delete_one(client: &Client, service: &Service) -> Result<(), OakApiError> {
    let ns = service.metadata.namespace.as_deref();
    match client
        .api::<Service>(ns)
        .delete(&service.metadata.name)
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(failed(format!(
            "deleting Service {}",
            service.metadata.name
        ))(e)),
    }
}

async fn delete_application(
    _: Admin,
    State(api): State<Arc<OakApi>>,
    Path(id): Path<String>,
) -> Answer {
    let (ref client, view) = read(&api).await?;
    let app = view.app(&id)?;
    for service in view.services_of(app) {
        delete_one(client, service).await?;
    }
    let ns = namespace_of(&view, app)?;
    let mut records = shape::records(ns);
    records.remove(&app.name);
    let others = view
        .apps
        .iter()
        .any(|a| a.kube_namespace == app.kube_namespace && a.id != app.id);
    write_records(client, ns, records).await?;
    if !others {
        // The Namespace goes with its last application, once nothing is left in it
        // (its Instances are still being removed now: then it stays, empty).
        if let Err(e) = client
            .api::<Namespace>(None)
            .delete(&ns.metadata.name)
            .await
        {
            tracing::debug!(namespace = %ns.metadata.name, error = %e, "Namespace kept");
        }
    }
    tracing::info!(application = %app.name, namespace = %app.kube_namespace, "Oakestra API: application deleted");
    Ok(Json(json!({"message": "Application Deleted"})))
}

async fn list_services(_: Admin, State(api): State<Arc<OakApi>>) -> Answer {
    let (ref client, view) = read(&api).await?;
    let instances = instances(client, None).await?;
    let all = view
        .services
        .iter()
        .filter(|s| view.app_of(s).is_some())
        .map(|s| service_value(&view, s, &instances))
        .collect();
    Ok(Json(Value::Array(all)))
}

async fn list_app_services(
    _: Admin,
    State(api): State<Arc<OakApi>>,
    Path(app): Path<String>,
) -> Answer {
    let (ref client, view) = read(&api).await?;
    let app = view.app(&app)?;
    let instances = instances(client, None).await?;
    let all = view
        .services_of(app)
        .map(|s| service_value(&view, s, &instances))
        .collect();
    Ok(Json(Value::Array(all)))
}

async fn get_service(_: Admin, State(api): State<Arc<OakApi>>, Path(id): Path<String>) -> Answer {
    let (ref client, view) = read(&api).await?;
    let service = view.service(&id)?;
    let instances = instances(client, Some(service)).await?;
    Ok(Json(service_value(&view, service, &instances)))
}

/// The SLA of `POST`/`PUT /api/service/…` with its (first) application's names taken
/// from `app`, as Oakestra takes them from the stored application.
fn for_app(mut sla: Value, app: &App) -> Result<Value, OakApiError> {
    let first = sla
        .get_mut("applications")
        .and_then(Value::as_array_mut)
        .and_then(|a| a.first_mut())
        .and_then(Value::as_object_mut)
        .ok_or_else(|| OakApiError::Invalid("applications[0]: required".into()))?;
    first.insert("application_name".into(), app.name.clone().into());
    first.insert("application_namespace".into(), app.namespace.clone().into());
    Ok(sla)
}

/// The application `applications[0].applicationID` of an SLA names.
fn app_named<'a>(view: &'a View, sla: &Value) -> Result<&'a App, OakApiError> {
    let id = sla
        .pointer("/applications/0/applicationID")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            OakApiError::Invalid(
                "applications[0].applicationID: required (the application the services join)"
                    .into(),
            )
        })?;
    view.app(id)
}

async fn create_service(_: Admin, State(api): State<Arc<OakApi>>, body: Bytes) -> Answer {
    let sla = json_body(&body)?;
    let (ref client, view) = read(&api).await?;
    let app = app_named(&view, &sla)?.clone();
    let converted = convert(&api, &for_app(sla, &app)?, 0)?;
    refuse_existing(&view, &converted.services)?;
    apply_services(client, &converted.services, false).await?;
    let after = self::view(client).await?;
    let ids: Vec<Value> = converted
        .services
        .iter()
        .filter_map(|s| {
            after.services.iter().find(|e| {
                e.metadata.namespace == s.metadata.namespace && e.metadata.name == s.metadata.name
            })
        })
        .map(|s| {
            json!({"service_name": s.metadata.labels.get(sla::LABEL_MICROSERVICE),
                   "microserviceID": shape::service_id(s), "status": 200})
        })
        .collect();
    let last = ids
        .last()
        .and_then(|v| v.get("microserviceID"))
        .cloned()
        .unwrap_or_default();
    Ok(Json(
        json!({"job_id": last, "deployed_services": ids, "failed_services": []}),
    ))
}

async fn update_service(
    _: Admin,
    State(api): State<Arc<OakApi>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer {
    let sla = json_body(&body)?;
    let (ref client, view) = read(&api).await?;
    let service = view.service(&id)?;
    let app = view
        .app_of(service)
        .ok_or_else(|| OakApiError::NotFound(format!("the application of service {id}")))?
        .clone();
    let converted = convert(&api, &for_app(sla, &app)?, service.spec.replicas)?;
    let [new] = converted.services.as_slice() else {
        return Err(OakApiError::Invalid(format!(
            "the SLA has {} microservices: an update takes exactly one",
            converted.services.len()
        )));
    };
    if new.metadata.name != service.metadata.name {
        return Err(OakApiError::Invalid(format!(
            "the SLA's microservice is {:?}, the service's is {:?}: a service keeps its name",
            new.metadata
                .labels
                .get(sla::LABEL_MICROSERVICE)
                .cloned()
                .unwrap_or_default(),
            service
                .metadata
                .labels
                .get(sla::LABEL_MICROSERVICE)
                .cloned()
                .unwrap_or_default()
        )));
    }
    // The replicas stay; the rest is what the SLA says now (the rollout follows).
    apply_services(client, std::slice::from_ref(new), true).await?;
    Ok(Json(json!({"message": "Service is updated"})))
}

async fn delete_service(
    _: Admin,
    State(api): State<Arc<OakApi>>,
    Path(id): Path<String>,
) -> Answer {
    let (ref client, view) = read(&api).await?;
    delete_one(client, view.service(&id)?).await?;
    Ok(Json(json!({"message": "Job deleted"})))
}

/// Change `service`'s replicas by `delta`, compare-and-swap on the value read (a
/// concurrent change: read again, at most a few times).
async fn scale(client: &Client, service: &Service, delta: i32) -> Result<i32, OakApiError> {
    let api = client.api::<Service>(service.metadata.namespace.as_deref());
    let mut current = service.spec.replicas;
    for _ in 0..5 {
        let next = (current + delta).max(0);
        let ops = json!([
            {"op": "test", "path": "/spec/replicas", "value": current},
            {"op": "replace", "path": "/spec/replicas", "value": next},
        ]);
        match api
            .dynamic()
            .json_patch(&service.metadata.name, &ops, false)
            .await
        {
            Ok(_) => return Ok(next),
            Err(e) if matches!(e.code(), Some(409 | 422)) => {
                current = api
                    .get(&service.metadata.name)
                    .await
                    .map_err(failed("reading the Service"))?
                    .spec
                    .replicas;
            }
            Err(e) => return Err(failed("scaling the Service")(e)),
        }
    }
    Err(OakApiError::Conflict(format!(
        "the replicas of {} kept changing; try again",
        service.metadata.name
    )))
}

async fn scale_up(_: Admin, State(api): State<Arc<OakApi>>, Path(id): Path<String>) -> Answer {
    let (ref client, view) = read(&api).await?;
    let service = view.service(&id)?;
    let replicas = scale(client, service, 1).await?;
    tracing::info!(service = %service.metadata.name, replicas, "Oakestra API: one more instance");
    Ok(Json(json!({"message": "ok", "replicas": replicas})))
}

async fn scale_down(
    _: Admin,
    State(api): State<Arc<OakApi>>,
    Path((id, n)): Path<(String, String)>,
) -> Answer {
    let n: u32 = n
        .parse()
        .map_err(|_| OakApiError::BadRequest(format!("instance number {n:?} is not a number")))?;
    let (ref client, view) = read(&api).await?;
    let service = view.service(&id)?;
    let instances = instances(client, Some(service)).await?;
    let live = instances
        .values()
        .flatten()
        .any(|i| i.spec.ordinal == n && i.metadata.deletion_timestamp.is_none());
    if !live {
        return Err(OakApiError::NotFound(format!(
            "service {id} has no instance {n}"
        )));
    }
    if service.spec.replicas == 0 {
        // Going already: the service controller removes the rest.
        return Ok(Json(json!({"message": "ok", "replicas": 0})));
    }
    let replicas = scale(client, service, -1).await?;
    tracing::info!(service = %service.metadata.name, replicas, "Oakestra API: one instance less");
    Ok(Json(json!({"message": "ok", "replicas": replicas})))
}

async fn clusters(api: &OakApi, active_only: bool) -> Answer {
    let (clusters, _) = client(api)
        .await?
        .api::<Cluster>(None)
        .list(&ListParams::default())
        .await
        .map_err(failed("listing Clusters"))?;
    let all = clusters
        .iter()
        .map(shape::cluster_json)
        .filter(|c| !active_only || c["active"] == Value::Bool(true))
        .collect();
    Ok(Json(Value::Array(all)))
}

async fn list_clusters(_: Admin, State(api): State<Arc<OakApi>>) -> Answer {
    clusters(&api, false).await
}

async fn list_active_clusters(_: Admin, State(api): State<Arc<OakApi>>) -> Answer {
    clusters(&api, true).await
}
