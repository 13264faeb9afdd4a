//! The verbs of the API over storage: get, list, create, replace, patch, delete.
//!
//! Everything the server guarantees about an object lives here: server-owned metadata
//! (uid, timestamps, generation), schema validation before any write, immutable
//! fields, optimistic concurrency, the `status` subresource, the `binding` subresource
//! of Instances, and finalizers.

use std::sync::Arc;

use base64::Engine;
use chrono::Utc;
use crds::{FieldError, KindInfo};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::object::{self, FieldSelector, LabelSelector};
use crate::storage::{KeyValue, ListRequest, Storage, StorageError};
use crate::watch::WatchHub;

/// Options of a list (and of the initial state of a watch).
#[derive(Debug, Default, Clone)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    /// List as of exactly this revision.
    pub revision: Option<i64>,
}

/// How a delete treats the object's dependents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Propagation {
    /// Delete the object now; garbage collection deletes its dependents afterwards.
    #[default]
    Background,
    /// Keep the object (with `foregroundDeletion`) until its dependents are gone.
    Foreground,
}

/// Options of a delete.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// Delete only at this resourceVersion.
    pub precondition: Option<i64>,
    pub propagation: Propagation,
}

/// Which part of an object a write changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Everything but `status`.
    Main,
    /// Only `status` (the `/status` subresource).
    Status,
}

#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn Storage>,
    hub: WatchHub,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: i64,
    start: String,
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

fn decode(kv: &KeyValue) -> Result<Value, ApiError> {
    object::decode(kv).map_err(|e| internal(format!("stored object {} is not JSON: {e}", kv.key)))
}

impl Registry {
    pub fn new(store: Arc<dyn Storage>, hub: WatchHub) -> Self {
        Registry { store, hub }
    }

    pub fn store(&self) -> &Arc<dyn Storage> {
        &self.store
    }

    pub fn hub(&self) -> &WatchHub {
        &self.hub
    }

    async fn current(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<KeyValue, ApiError> {
        let key = object::key(kind, ns, name);
        self.store
            .get(&key)
            .await
            .map_err(|e| ApiError::from_storage(e, kind.plural, name))?
            .ok_or_else(|| ApiError::NotFound {
                plural: kind.plural.into(),
                name: name.into(),
            })
    }

    /// The stored object, which must be at `precondition` when one is given (else 409).
    async fn current_at(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
        precondition: Option<i64>,
    ) -> Result<KeyValue, ApiError> {
        let kv = self.current(kind, ns, name).await?;
        match precondition {
            Some(expected) if expected != kv.mod_revision => Err(ApiError::from_storage(
                StorageError::Conflict {
                    key: kv.key,
                    expected,
                    actual: kv.mod_revision,
                },
                kind.plural,
                name,
            )),
            _ => Ok(kv),
        }
    }

    pub async fn get(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        decode(&self.current(kind, ns, name).await?)
    }

    /// Fail with 404 when a namespaced request names a namespace that does not exist.
    pub async fn require_namespace(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
    ) -> Result<(), ApiError> {
        if let (true, Some(ns)) = (kind.namespaced, ns) {
            let ns_kind = crds::kind_by_name("namespaces").expect("namespaces are served");
            self.current(ns_kind, None, ns).await?;
        }
        Ok(())
    }

    /// A `<Kind>List` of the matching objects.
    pub async fn list(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Value, ApiError> {
        let prefix = object::key(kind, ns, "");
        let (mut start_after, mut revision) = (None, opts.revision);
        if let Some(token) = &opts.continue_token {
            let t: ContinueToken = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "continue: {token:?} is not a valid continue token"
                    ))
                })?;
            start_after = Some(t.start);
            revision = Some(t.rv);
        }
        let limit = opts.limit.filter(|l| *l > 0);
        let filtered = !opts.labels.is_empty() || !opts.fields.is_empty();
        let mut items = Vec::new();
        let mut more;
        let mut last_key;
        loop {
            let page = self
                .store
                .list(ListRequest {
                    prefix: prefix.clone(),
                    start_after: start_after.clone(),
                    limit: if filtered { limit.map(|l| l.max(256)) } else { limit },
                    revision,
                })
                .await
                .map_err(|e| match e {
                    StorageError::TooOld { requested, .. } if opts.continue_token.is_some() => ApiError::Gone(format!(
                        "the continue token's resourceVersion {requested} is no longer available; list again from the start"
                    )),
                    e => ApiError::from_storage(e, kind.plural, ""),
                })?;
            revision = Some(page.revision);
            more = page.more;
            last_key = page.items.last().map(|kv| kv.key.clone());
            for kv in &page.items {
                let o = decode(kv)?;
                if opts.labels.matches(&o) && opts.fields.matches(&o) {
                    items.push((kv.key.clone(), o));
                }
            }
            if !more || limit.is_some_and(|l| items.len() > l) || !filtered {
                break;
            }
            start_after = last_key.clone();
        }
        let revision = revision.unwrap_or_default();
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if let Some(l) = limit {
            if items.len() > l {
                items.truncate(l);
                more = true;
                last_key = items.last().map(|(k, _)| k.clone());
            }
            if more {
                if let Some(start) = last_key {
                    let token = serde_json::to_vec(&ContinueToken {
                        rv: revision,
                        start,
                    })
                    .expect("token serializes");
                    metadata["continue"] = base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .encode(token)
                        .into();
                }
            }
        }
        Ok(json!({
            "apiVersion": kind.api_version(),
            "kind": format!("{}List", kind.kind),
            "metadata": metadata,
            "items": items.into_iter().map(|(_, o)| o).collect::<Vec<_>>(),
        }))
    }

    pub async fn create(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        mut body: Value,
    ) -> Result<Value, ApiError> {
        check_type(kind, &body)?;
        let meta = object::meta_mut(&mut body);
        let mut name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => {
                    let suffix: String = uuid::Uuid::new_v4()
                        .simple()
                        .to_string()
                        .chars()
                        .take(5)
                        .collect();
                    name = format!("{prefix}{suffix}");
                    meta.insert("name".into(), name.clone().into());
                }
                _ => {
                    return Err(invalid(
                        kind,
                        "",
                        "metadata.name",
                        "name or generateName is required",
                    ))
                }
            }
        }
        crds::validate::name(&name).map_err(|m| invalid(kind, &name, "metadata.name", &m))?;
        let ns = if kind.namespaced {
            Some(ns.unwrap_or("default"))
        } else {
            None
        };
        match (meta.get("namespace").and_then(Value::as_str), ns) {
            (Some(body_ns), Some(ns)) if body_ns != ns => {
                return Err(ApiError::BadRequest(format!(
                    "the namespace of the object ({body_ns}) does not match the namespace of the request ({ns})"
                )))
            }
            (Some(_), None) => {
                meta.remove("namespace");
            }
            _ => {}
        }
        if let Some(ns) = ns {
            meta.insert("namespace".into(), ns.into());
        }
        meta.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
        meta.insert("creationTimestamp".into(), now().into());
        meta.insert("generation".into(), 1.into());
        for server_owned in ["resourceVersion", "deletionTimestamp", "managedFields"] {
            meta.remove(server_owned);
        }
        if kind.has_status {
            // As in Kubernetes, status is written through the status subresource only.
            if let Some(o) = body.as_object_mut() {
                o.remove("status");
            }
        }
        validate(kind, &name, &mut body)?;
        self.require_namespace(kind, ns).await?;
        let key = object::key(kind, ns, &name);
        let kv = self
            .store
            .create(&key, object::encode(&body))
            .await
            .map_err(|e| ApiError::from_storage(e, kind.plural, &name))?;
        set_version(&mut body, kv.mod_revision);
        Ok(body)
    }

    /// Replace the `part` of an object with the same part of `body` (PUT).
    pub async fn replace(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
        body: Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        check_type(kind, &body)?;
        if let Some(body_name) =
            object::meta_str(&body, "name").filter(|n| !n.is_empty() && *n != name)
        {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({body_name}) does not match the name in the URL ({name})"
            )));
        }
        let precondition = object::resource_version(&body).map_err(ApiError::BadRequest)?;
        self.write(kind, ns, name, precondition, |current| {
            Ok(take_part(kind, current, &body, part))
        })
        .await
    }

    /// Apply a JSON merge patch to the `part` of an object (PATCH).
    pub async fn patch(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
        patch: Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        if !patch.is_object() {
            return Err(ApiError::BadRequest(
                "a merge patch must be a JSON object".into(),
            ));
        }
        let precondition = object::resource_version(&patch).map_err(ApiError::BadRequest)?;
        self.write(kind, ns, name, precondition, |current| {
            let mut patched = current.clone();
            object::merge_patch(&mut patched, &patch);
            check_type(kind, &patched)?;
            Ok(take_part(kind, current, &patched, part))
        })
        .await
    }

    /// The `binding` subresource of Instances (as Kubernetes' `pods/binding`): bind
    /// Instance `name` to the target in `body` (`{"target": {"kind": "Cluster" | "Node",
    /// "name": …}}`, optionally `metadata.resourceVersion`) — `spec.cluster` or
    /// `spec.node`, phase `Scheduled` and the `Scheduled=True` condition — in one write.
    /// An Instance already bound to another target is a 409.
    pub async fn bind(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
        body: Value,
    ) -> Result<Value, ApiError> {
        let precondition = object::resource_version(&body).map_err(ApiError::BadRequest)?;
        let target_name = body
            .pointer("/target/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::BadRequest("a binding needs target.name".into()))?;
        // The spec field, also the noun of messages.
        let field = match body.pointer("/target/kind").and_then(Value::as_str) {
            Some("Cluster") => "cluster",
            Some("Node") => "node",
            other => {
                return Err(ApiError::BadRequest(format!(
                    "target.kind: {:?} is not one of Cluster, Node",
                    other.unwrap_or_default()
                )))
            }
        };
        self.write(kind, ns, name, precondition, |current| {
            let mut instance =
                <crds::Instance as serde::Deserialize>::deserialize(current).map_err(internal)?;
            let bound = match field {
                "cluster" => &mut instance.spec.cluster,
                _ => &mut instance.spec.node,
            };
            match bound.as_deref() {
                Some(b) if b != target_name => {
                    return Err(ApiError::Conflict {
                        plural: kind.plural.into(),
                        name: name.into(),
                        message: format!("the instance is already bound to {field} {b}"),
                    })
                }
                _ => *bound = Some(target_name.to_string()),
            }
            let status = instance.status.get_or_insert_with(Default::default);
            status.phase = crds::Phase::Scheduled;
            status.reason.clear();
            status.message.clear();
            crds::set_condition(
                &mut status.conditions,
                "Scheduled",
                crds::ConditionStatus::True,
                "Placed",
                &format!("placed on {field} {target_name}"),
                Utc::now(),
            );
            serde_json::to_value(&instance).map_err(internal)
        })
        .await
    }

    /// Read-modify-write with compare-and-swap. With a precondition, a concurrent change
    /// is a 409; without, the write is retried on the fresh object.
    async fn write(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
        precondition: Option<i64>,
        mutate: impl Fn(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let key = object::key(kind, ns, name);
        // The first attempt starts from the watch hub's copy when it has one at the
        // precondition (no store read, no decoding); if the store has moved on, the
        // compare-and-swap fails and the retry reads the store.
        let mut first = true;
        loop {
            let cached = if first {
                self.hub
                    .latest_of(&key)
                    .filter(|c| precondition.is_none_or(|p| p == c.revision))
            } else {
                None
            };
            first = false;
            let stored: Value;
            let (current, revision) = match &cached {
                Some(change) => (change.object.as_ref(), change.revision),
                None => {
                    let kv = self.current_at(kind, ns, name, precondition).await?;
                    stored = decode(&kv)?;
                    (&stored, kv.mod_revision)
                }
            };
            let next = mutate(current).and_then(|mut next| {
                validate(kind, name, &mut next)?;
                keep_server_fields(kind, current, &mut next);
                if next != *current {
                    check_immutable(kind, name, current, &next)?;
                }
                Ok(next)
            });
            // A rejection, or nothing to write, is answered from the stored object,
            // not from the hub's copy, which may be older.
            let mut next = match next {
                Ok(next) if next == *current => match cached {
                    Some(_) => continue,
                    None => return Ok(next),
                },
                Ok(next) => next,
                Err(_) if cached.is_some() => continue,
                Err(e) => return Err(e),
            };
            let result = if finalized(&next) {
                self.store.delete(&key, Some(revision)).await.map(|_| ())
            } else {
                self.store
                    .update(&key, object::encode(&next), revision)
                    .await
                    .map(|kv| set_version(&mut next, kv.mod_revision))
            };
            match result {
                Ok(()) => return Ok(next),
                Err(StorageError::Conflict { .. } | StorageError::NotFound { .. })
                    if precondition.is_none() =>
                {
                    continue
                }
                // The hub's copy was older than the store's: decide on the stored one.
                Err(StorageError::Conflict { .. }) if cached.is_some() => continue,
                Err(e) => return Err(ApiError::from_storage(e, kind.plural, name)),
            }
        }
    }

    /// Delete an object; with finalizers it is only marked (`deletionTimestamp`) and
    /// goes once the last finalizer is removed. Foreground propagation adds the
    /// `foregroundDeletion` finalizer, which garbage collection removes once the
    /// object's dependents are gone.
    pub async fn delete(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let precondition = options.precondition;
        if kind.kind == "Namespace" {
            self.check_namespace_deletable(name).await?;
        }
        let key = object::key(kind, ns, name);
        loop {
            let kv = self.current_at(kind, ns, name, precondition).await?;
            let mut current = decode(&kv)?;
            if options.propagation == Propagation::Foreground
                && current["metadata"].get("deletionTimestamp").is_none()
            {
                let meta = object::meta_mut(&mut current);
                let finalizers = meta.entry("finalizers").or_insert_with(|| json!([]));
                if let Some(list) = finalizers
                    .as_array_mut()
                    .filter(|l| !l.contains(&json!(crds::FOREGROUND_DELETION)))
                {
                    list.push(json!(crds::FOREGROUND_DELETION));
                }
            }
            let has_finalizers = current["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| !f.is_empty());
            let result = if !has_finalizers {
                self.store
                    .delete(&key, Some(kv.mod_revision))
                    .await
                    .map(|_| ())
            } else if current["metadata"].get("deletionTimestamp").is_some() {
                return Ok(current);
            } else {
                object::meta_mut(&mut current).insert("deletionTimestamp".into(), now().into());
                self.store
                    .update(&key, object::encode(&current), kv.mod_revision)
                    .await
                    .map(|kv| set_version(&mut current, kv.mod_revision))
            };
            match result {
                Ok(()) => return Ok(current),
                Err(StorageError::Conflict { .. }) if precondition.is_none() => continue,
                Err(e) => return Err(ApiError::from_storage(e, kind.plural, name)),
            }
        }
    }

    async fn check_namespace_deletable(&self, name: &str) -> Result<(), ApiError> {
        if name == "default" {
            return Err(ApiError::Conflict {
                plural: "namespaces".into(),
                name: name.into(),
                message: "the default namespace cannot be deleted".into(),
            });
        }
        for kind in crds::KINDS.iter().filter(|k| k.namespaced) {
            let request = ListRequest {
                prefix: object::key(kind, Some(name), ""),
                limit: Some(1),
                ..Default::default()
            };
            let page = self
                .store
                .list(request)
                .await
                .map_err(|e| ApiError::from_storage(e, "namespaces", name))?;
            if let Some(kv) = page.items.first() {
                let held = kv.key.rsplit('/').next().unwrap_or_default();
                return Err(ApiError::Conflict {
                    plural: "namespaces".into(),
                    name: name.into(),
                    message: format!(
                        "the namespace still holds {} {held:?} (and maybe more); delete them first",
                        kind.singular
                    ),
                });
            }
        }
        Ok(())
    }

    /// Create the namespace `name` if it does not exist.
    pub async fn ensure_namespace(&self, name: &str) -> Result<(), ApiError> {
        let kind = crds::kind_by_name("namespaces").expect("namespaces are served");
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match self.create(kind, None, body).await {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn set_version(object: &mut Value, revision: i64) {
    object::meta_mut(object).insert("resourceVersion".into(), revision.to_string().into());
}

fn invalid(kind: &KindInfo, name: &str, field: &str, message: &str) -> ApiError {
    ApiError::Invalid {
        kind: kind.kind.into(),
        name: name.into(),
        errors: vec![FieldError::new(field, message)],
    }
}

/// Validate an object and fill in its defaults.
fn validate(kind: &KindInfo, name: &str, object: &mut Value) -> Result<(), ApiError> {
    *object = kind.validate(object).map_err(|e| ApiError::Invalid {
        kind: kind.kind.into(),
        name: name.into(),
        errors: e.errors,
    })?;
    Ok(())
}

/// The body's `apiVersion` and `kind` must be those of the URL.
fn check_type(kind: &KindInfo, body: &Value) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::BadRequest(
            "the request body must be a JSON object".into(),
        ));
    }
    let (api_version, k) = (
        body.get("apiVersion").and_then(Value::as_str),
        body.get("kind").and_then(Value::as_str),
    );
    if api_version != Some(&kind.api_version()) || k != Some(kind.kind) {
        return Err(ApiError::BadRequest(format!(
            "the object is {}/{}, but this URL serves {}/{}",
            api_version.unwrap_or("<no apiVersion>"),
            k.unwrap_or("<no kind>"),
            kind.api_version(),
            kind.kind
        )));
    }
    Ok(())
}

/// `current` with its `part` taken from `incoming`: a main write keeps the current
/// status of kinds with a status subresource; a status write changes only status.
fn take_part(kind: &KindInfo, current: &Value, incoming: &Value, part: Part) -> Value {
    let (mut next, source) = match part {
        Part::Main if !kind.has_status => return incoming.clone(),
        Part::Main => (incoming.clone(), current),
        Part::Status => (current.clone(), incoming),
    };
    if let Some(o) = next.as_object_mut() {
        match source.get("status") {
            Some(s) => o.insert("status".into(), s.clone()),
            None => o.remove("status"),
        };
    }
    next
}

/// Carry over what only the server writes; bump `generation` when `spec` changed.
fn keep_server_fields(kind: &KindInfo, current: &Value, next: &mut Value) {
    let cur = current.get("metadata").cloned().unwrap_or_default();
    let spec_changed = current.get("spec") != next.get("spec");
    let meta = object::meta_mut(next);
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "resourceVersion",
    ] {
        match cur.get(field) {
            Some(v) => meta.insert(field.into(), v.clone()),
            None => meta.remove(field),
        };
    }
    meta.remove("managedFields");
    let generation = cur.get("generation").and_then(Value::as_i64).unwrap_or(1);
    let generation = if spec_changed && kind.kind != "Namespace" {
        generation + 1
    } else {
        generation
    };
    meta.insert("generation".into(), generation.into());
}

fn check_immutable(
    kind: &KindInfo,
    name: &str,
    current: &Value,
    next: &Value,
) -> Result<(), ApiError> {
    let errors: Vec<FieldError> = kind
        .immutable
        .iter()
        .filter(|ptr| current.pointer(ptr) != next.pointer(ptr))
        .map(|ptr| {
            FieldError::new(
                ptr.trim_start_matches('/').replace('/', "."),
                "field is immutable",
            )
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid {
            kind: kind.kind.into(),
            name: name.into(),
            errors,
        })
    }
}

/// Marked for deletion and no finalizer left: the object can go.
fn finalized(object: &Value) -> bool {
    let meta = &object["metadata"];
    meta.get("deletionTimestamp").is_some()
        && meta["finalizers"].as_array().is_none_or(|f| f.is_empty())
}
