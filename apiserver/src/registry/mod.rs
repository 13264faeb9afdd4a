//! The verbs of the API over storage: get, list, create, replace, patch, delete, and
//! writes to subresources.
//!
//! Everything the server guarantees about an object of any kind lives here:
//! server-owned metadata (uid, timestamps, generation), validation before any write,
//! optimistic concurrency, the `status` subresource, and finalizers. What differs
//! between kinds is asked of the kind's [`Strategy`]; lists and their paging are in
//! [`list`].
//!
//! An update goes through one path, `Registry::write`: read the current object, let
//! the verb compute the next one (PUT: the body; PATCH: the merge patch; a subresource:
//! its change), then `next_version` (the strategy validates it, carries over
//! server-owned fields, checks it against the current object), then compare-and-swap.
//! Authorization is part of that path: the caller ([`WriteOptions::caller`]) is
//! checked by [`crate::auth::authorize()`] against the object the attempt read, first
//! before the verb computes the next object, then with it (before the server records
//! the writer in `metadata.managedFields`); the compare-and-swap that
//! commits is at that object's revision, so a concurrent change cannot slip past the
//! check (the retry checks again). A get checks the object it read ([`Registry::get`]);
//! a missing object is a 403 for a caller whose rules depend on the object. Future
//! steps have their place in the path too: admission after `next_version`.
//!
//! Every write keeps `metadata.managedFields` in one place, `manage_fields` (the
//! decisions are in [`fields`]): the writer's manager ([`WriteOptions::field_manager`])
//! gets an `Update` entry owning what it changed, which leaves every other entry. A
//! server-side apply ([`Registry::apply`]) is one more way to compute the next object
//! ([`fields::merge_apply`]), its `Apply` entry owning what it sent, refused with a
//! conflict when it would change what another manager owns. A write that sets
//! `managedFields` itself (kubectl's migration from client-side apply) stores them as
//! given; an empty list clears them.
//!
//! A dry run ([`WriteOptions::dry_run`]) takes every step of the real write, create
//! and delete included, up to the storage call: that one place, `Registry::commit`,
//! then only checks that the call would succeed (the key absent for a create, at the
//! expected revision otherwise) and stores nothing, so no watch event follows.

pub mod fields;
pub mod list;
pub mod strategy;

use std::sync::Arc;

use chrono::Utc;
use crds::{FieldError, KindInfo};
use pki::Identity;
use serde_json::{json, Value};

use crate::auth::{authorize, RequestAttributes, Verb};
use crate::error::ApiError;
use crate::object;
use crate::storage::{KeyValue, ListRequest, Storage, StorageError};
use crate::watch::WatchHub;
use fields::{FieldSet, ListTypes, ManagedEntry, Operation, Scope, Writer};

pub use list::ListOptions;
pub use strategy::{Strategy, Subresource};

/// How a delete treats the object's dependents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Propagation {
    /// Delete the object now; garbage collection deletes its dependents afterwards.
    #[default]
    Background,
    /// Keep the object (with `foregroundDeletion`) until its dependents are gone.
    Foreground,
}

/// Options of every write (create, update, patch, delete, subresource writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOptions {
    /// `dryRun=All`: validate, default, authorize and check the write as a real one,
    /// answer with the object as it would be stored, persist nothing.
    pub dry_run: bool,
    /// Who writes: the write is authorized for this identity. The HTTP layer sets the
    /// request's; the default, [`Identity::System`], is for callers of the registry in
    /// the server's own process.
    pub caller: Identity,
    /// The field manager `metadata.managedFields` records the write under (the HTTP
    /// layer: the `fieldManager` parameter, else the User-Agent's product, else
    /// `unknown`).
    pub field_manager: String,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            dry_run: false,
            caller: Identity::System,
            field_manager: "unknown".into(),
        }
    }
}

/// Options of a delete.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// Delete only at this resourceVersion.
    pub precondition: Option<i64>,
    /// Whether dependents go before (foreground) or after (background) the object.
    pub propagation: Propagation,
    /// Options every write has.
    pub write: WriteOptions,
}

/// What a write asks of storage (see `Registry::commit`).
enum Change<'a> {
    /// Create the key with this object.
    Create(&'a Value),
    /// Replace the object, the key being at this revision.
    Update(&'a Value, i64),
    /// Delete the key, it being at this revision.
    Delete(i64),
}

/// How a PATCH body says what changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// RFC 7386 JSON merge patch (`application/merge-patch+json`): an object merged in,
    /// `null` removes.
    Merge,
    /// RFC 6902 JSON patch (`application/json-patch+json`): a list of operations
    /// (`add`, `remove`, `replace`, `move`, `copy`, `test`), applied in order, all or
    /// nothing.
    Json,
    /// Server-side apply (`application/apply-patch+yaml`): see [`Registry::apply`].
    Apply {
        /// `force=true`: take conflicting fields from their managers.
        force: bool,
    },
}

/// Which part of an object a write changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Everything but `status`.
    Main,
    /// Only `status` (the `/status` subresource).
    Status,
}

impl Part {
    /// The subresource a write of this part goes to, as the authorizer names it.
    pub fn subresource(self) -> Option<Subresource> {
        match self {
            Part::Main => None,
            Part::Status => Some(Subresource::Status),
        }
    }
}

/// The verbs over one storage, sharing the watch hub's copies of recent objects.
#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn Storage>,
    hub: WatchHub,
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

fn decode(kv: &KeyValue) -> Result<Value, ApiError> {
    object::decode(kv).map_err(|e| internal(format!("stored object {} is not JSON: {e}", kv.key)))
}

impl Registry {
    /// The registry over `store`; `hub` must follow the same store.
    pub fn new(store: Arc<dyn Storage>, hub: WatchHub) -> Self {
        Registry { store, hub }
    }

    /// The storage the registry writes to.
    pub fn store(&self) -> &Arc<dyn Storage> {
        &self.store
    }

    /// The watch hub that fans out the storage's changes.
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

    /// The stored object `request` names, decoded, with its revision, once `caller`
    /// may do `request` to it: a missing object is a 404 only when the caller's rules
    /// do not depend on the object (else a 403), and the object must be at
    /// `precondition` when one is given (else 409), checked only once the caller may
    /// see it.
    async fn stored_for(
        &self,
        request: &RequestAttributes<'_>,
        caller: &Identity,
        precondition: Option<i64>,
    ) -> Result<(Value, i64), ApiError> {
        let (kind, name) = (request.kind, request.name.unwrap_or_default());
        let users = match request.needs_users(caller) {
            true => self.users(request.namespace, caller).await?,
            false => Vec::new(),
        };
        let request = &RequestAttributes {
            users: &users,
            ..*request
        };
        let kv = match self.current(kind, request.namespace, name).await {
            Ok(kv) => kv,
            Err(missing @ ApiError::NotFound { .. }) => {
                authorize(caller, request, None, None)?;
                return Err(missing);
            }
            Err(e) => return Err(e),
        };
        let object = decode(&kv)?;
        authorize(caller, request, Some(&object), None)?;
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
            _ => Ok((object, kv.mod_revision)),
        }
    }

    /// The Instances of namespace `ns` assigned to `caller` (a cluster or node), for
    /// the rule of its gets of `ConfigMap`s and Secrets ([`RequestAttributes::users`]).
    async fn users(&self, ns: Option<&str>, caller: &Identity) -> Result<Vec<Value>, ApiError> {
        let (pointer, own) = match caller {
            Identity::Cluster { name } => ("/spec/cluster", name),
            Identity::Node { name } => ("/spec/node", name),
            _ => return Ok(Vec::new()),
        };
        let instances = crds::kind_by_name("instances").expect("instances are served");
        let request = ListRequest {
            prefix: object::key(instances, ns, ""),
            ..Default::default()
        };
        let page = self
            .store
            .list(request)
            .await
            .map_err(|e| ApiError::from_storage(e, instances.plural, ""))?;
        let mut users = Vec::new();
        for kv in &page.items {
            let instance = decode(kv)?;
            if instance.pointer(pointer).and_then(Value::as_str) == Some(own.as_str()) {
                users.push(instance);
            }
        }
        Ok(users)
    }

    /// The object `name` (404 if there is none), as `caller` may read it (the `part`
    /// asked for: a GET of `/status` is authorized as the status subresource).
    pub async fn get(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
        part: Part,
        caller: &Identity,
    ) -> Result<Value, ApiError> {
        let request =
            RequestAttributes::on_object(Verb::Get, kind, part.subresource(), ns, Some(name));
        Ok(self.stored_for(&request, caller, None).await?.0)
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

    /// Create an object (POST to the collection): server-owned metadata set, the
    /// name generated from `generateName` if needed, validated, in an existing namespace.
    pub async fn create(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        body: Value,
        options: WriteOptions,
    ) -> Result<Value, ApiError> {
        let writer = writer(kind, &options, Operation::Update, None);
        self.create_with(kind, ns, body, options, &writer).await
    }

    /// [`Registry::create`], its managedFields entry for `writer`.
    async fn create_with(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        mut body: Value,
        options: WriteOptions,
        writer: &Writer,
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
        for server_owned in ["resourceVersion", "deletionTimestamp"] {
            meta.remove(server_owned);
        }
        let given = meta
            .remove("managedFields")
            .filter(|m| m.as_array().is_none_or(|list| !list.is_empty()));
        let strategy = strategy::for_kind(kind);
        strategy.prepare_for_create(kind, &mut body);
        strategy.validate(kind, &name, &mut body)?;
        // The caller is authorized for what it sent; recording its manager is the
        // server's bookkeeping after that.
        let request = RequestAttributes::on_object(Verb::Create, kind, None, ns, Some(&name));
        authorize(&options.caller, &request, None, Some(&body))?;
        manage_fields(kind, None, &mut body, given, writer)?;
        self.require_namespace(kind, ns).await?;
        let key = object::key(kind, ns, &name);
        // A dry-run create has no resourceVersion yet, as in Kubernetes.
        if let Some(revision) = self
            .commit(&key, Change::Create(&body), options.dry_run)
            .await
            .map_err(|e| ApiError::from_storage(e, kind.plural, &name))?
        {
            set_version(&mut body, revision);
        }
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
        options: WriteOptions,
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
        let request =
            RequestAttributes::on_object(Verb::Update, kind, part.subresource(), ns, Some(name));
        let writer = writer(kind, &options, Operation::Update, part.subresource());
        self.write(request, precondition, options, &writer, |current| {
            Ok(take_part(kind, current, &body, part))
        })
        .await
    }

    /// Apply a patch of `patch_type` to the `part` of an object (PATCH).
    ///
    /// A merge patch's `metadata.resourceVersion` is a precondition. A JSON patch that
    /// leaves `metadata.resourceVersion` other than the stored one (kubectl replaces it
    /// when it migrates client-side apply) is one too: a 409 unless they agree. An apply
    /// is [`Registry::apply`].
    #[allow(clippy::too_many_arguments)]
    pub async fn patch(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
        patch: Value,
        patch_type: PatchType,
        part: Part,
        options: WriteOptions,
    ) -> Result<Value, ApiError> {
        let request =
            RequestAttributes::on_object(Verb::Patch, kind, part.subresource(), ns, Some(name));
        let writer = &writer(kind, &options, Operation::Update, part.subresource());
        match patch_type {
            PatchType::Apply { force } => {
                self.apply(kind, ns, name, patch, part, force, options)
                    .await
            }
            PatchType::Merge => {
                if !patch.is_object() {
                    return Err(ApiError::BadRequest(
                        "a merge patch must be a JSON object".into(),
                    ));
                }
                let precondition =
                    object::resource_version(&patch).map_err(ApiError::BadRequest)?;
                self.write(request, precondition, options, writer, |current| {
                    let mut patched = current.clone();
                    json_patch::merge(&mut patched, &patch);
                    check_type(kind, &patched)?;
                    Ok(take_part(kind, current, &patched, part))
                })
                .await
            }
            PatchType::Json => {
                let operations: json_patch::Patch = serde_json::from_value(patch).map_err(|e| {
                    ApiError::BadRequest(format!(
                        "a JSON patch must be a list of operations (RFC 6902): {e}"
                    ))
                })?;
                self.write(request, None, options, writer, |current| {
                    let mut patched = current.clone();
                    json_patch::patch(&mut patched, &operations).map_err(|e| {
                        ApiError::Invalid {
                            kind: kind.kind.into(),
                            name: name.into(),
                            errors: vec![FieldError {
                                field: e.path.to_string(),
                                message: format!("the JSON patch cannot be applied: {}", e.kind),
                            }],
                        }
                    })?;
                    if object::meta_str(&patched, "resourceVersion")
                        != object::meta_str(current, "resourceVersion")
                    {
                        return Err(ApiError::stale(kind.plural, name));
                    }
                    check_type(kind, &patched)?;
                    Ok(take_part(kind, current, &patched, part))
                })
                .await
            }
        }
    }

    /// Server-side apply of `body` (a partial object: apiVersion, kind, metadata.name
    /// and the fields its manager, [`WriteOptions::field_manager`], owns) to the `part`
    /// of object `name`: the object is created when absent (authorized as a create;
    /// not for `status`), else merged ([`fields::merge_apply`], authorized as a patch).
    /// A field another manager owns whose value would change is a conflict (409)
    /// unless `force`, which takes it over. Nothing changes: nothing is written. A
    /// `metadata.resourceVersion` in `body` is a precondition (409 when stale; an
    /// absent object is then not created).
    #[allow(clippy::too_many_arguments)]
    pub async fn apply(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
        body: Value,
        part: Part,
        force: bool,
        options: WriteOptions,
    ) -> Result<Value, ApiError> {
        check_type(kind, &body)?;
        match object::meta_str(&body, "name") {
            Some(n) if n == name => {}
            other => {
                return Err(ApiError::BadRequest(format!(
                "the name of the applied object ({}) does not match the name in the URL ({name})",
                other.unwrap_or("<none>")
            )))
            }
        }
        if body.pointer("/metadata/managedFields").is_some() {
            return Err(ApiError::BadRequest(
                "metadata.managedFields must be nil in an apply".into(),
            ));
        }
        // As kube: a resourceVersion in the applied object is a precondition.
        let precondition = object::resource_version(&body).map_err(ApiError::BadRequest)?;
        let types = ListTypes::for_kind(kind);
        let mut writer = writer(kind, &options, Operation::Apply, part.subresource());
        writer.applied = Some(FieldSet::of(&body, types));
        writer.force = force;
        let request =
            RequestAttributes::on_object(Verb::Patch, kind, part.subresource(), ns, Some(name));
        loop {
            let updated = self
                .write(request, precondition, options.clone(), &writer, |current| {
                    let entries = fields::entries_of(current).map_err(internal)?;
                    let (mut mine, mut others) = (FieldSet::default(), FieldSet::default());
                    for entry in &entries {
                        if entry.is_by(&writer) {
                            mine = entry.fields.clone();
                        } else {
                            others = others.union(&entry.fields);
                        }
                    }
                    let merged = fields::merge_apply(current, &body, &mine, &others, types);
                    check_type(kind, &merged)?;
                    Ok(take_part(kind, current, &merged, part))
                })
                .await;
            match updated {
                Err(ApiError::NotFound { .. }) if part == Part::Main && precondition.is_none() => {}
                other => return other,
            }
            let empty = FieldSet::default();
            let new = fields::merge_apply(&Value::Null, &body, &empty, &empty, types);
            match self
                .create_with(kind, ns, new, options.clone(), &writer)
                .await
            {
                // Created meanwhile: apply to it.
                Err(ApiError::AlreadyExists { .. }) => continue,
                other => return other,
            }
        }
    }

    /// POST `body` to subresource `sub` of object `name` (`instances/NAME/binding`):
    /// the kind's strategy says what the write changes, and it goes through the same
    /// write path as a patch.
    pub async fn post_subresource(
        &self,
        kind: &KindInfo,
        ns: Option<&str>,
        name: &str,
        sub: Subresource,
        body: Value,
        options: WriteOptions,
    ) -> Result<Value, ApiError> {
        let write = strategy::for_kind(kind).subresource_write(kind, name, sub, &body)?;
        let request = RequestAttributes::on_object(Verb::Create, kind, Some(sub), ns, Some(name));
        let writer = writer(kind, &options, Operation::Update, Some(sub));
        self.write(request, write.precondition, options, &writer, |current| {
            (write.change)(current)
        })
        .await
    }

    /// Read-modify-write with compare-and-swap, authorized for the caller on the object
    /// each attempt starts from. With a precondition, a concurrent change is a 409;
    /// without, the write is retried on the fresh object.
    async fn write(
        &self,
        request: RequestAttributes<'_>,
        precondition: Option<i64>,
        options: WriteOptions,
        writer: &Writer,
        mutate: impl Fn(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let (kind, ns, name) = (
            request.kind,
            request.namespace,
            request.name.unwrap_or_default(),
        );
        let caller = &options.caller;
        let key = object::key(kind, ns, name);
        // The first attempt starts from the watch hub's copy when it has one at the
        // precondition (no store read: the hub's bytes decoded); if the store has moved
        // on, the compare-and-swap fails and the retry reads the store.
        let mut first = true;
        loop {
            let cached = if first {
                self.hub
                    .latest_of(&key)
                    .filter(|c| precondition.is_none_or(|p| p == c.revision))
                    .and_then(|c| Some((c.object()?, c.revision)))
            } else {
                None
            };
            first = false;
            let stored: Value;
            let (current, revision) = match &cached {
                Some((object, revision)) => (object, *revision),
                None => {
                    let revision;
                    (stored, revision) = self.stored_for(&request, caller, precondition).await?;
                    (&stored, revision)
                }
            };
            // Whether the caller may write this object at all, before the verb's errors
            // can tell it anything about it (`stored_for` checked a stored one).
            if cached.is_some() && authorize(caller, &request, Some(current), None).is_err() {
                continue;
            }
            // The caller is authorized for the change it asked for; the managedFields
            // the server then records are its own bookkeeping.
            let next = mutate(current).and_then(|next| {
                let given = given_managed_fields(current, &next);
                let mut next = next_version(kind, name, current, next)?;
                authorize(caller, &request, Some(current), Some(&next))?;
                manage_fields(kind, Some(current), &mut next, given, writer)?;
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
            let change = if finalized(&next) {
                Change::Delete(revision)
            } else {
                Change::Update(&next, revision)
            };
            let result = self
                .commit(&key, change, options.dry_run)
                .await
                .map(|revision| {
                    if let Some(revision) = revision {
                        set_version(&mut next, revision);
                    }
                });
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
        let request = RequestAttributes::on_object(Verb::Delete, kind, None, ns, Some(name));
        let key = object::key(kind, ns, name);
        loop {
            let (mut current, revision) = self
                .stored_for(&request, &options.write.caller, precondition)
                .await?;
            strategy::for_kind(kind)
                .check_delete(self.store.as_ref(), kind, name)
                .await?;
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
            let change = if !has_finalizers {
                Change::Delete(revision)
            } else if current["metadata"].get("deletionTimestamp").is_some() {
                return Ok(current);
            } else {
                object::meta_mut(&mut current).insert("deletionTimestamp".into(), now().into());
                Change::Update(&current, revision)
            };
            let result = self
                .commit(&key, change, options.write.dry_run)
                .await
                .map(|revision| {
                    if let Some(revision) = revision {
                        set_version(&mut current, revision);
                    }
                });
            match result {
                Ok(()) => return Ok(current),
                Err(StorageError::Conflict { .. }) if precondition.is_none() => continue,
                Err(e) => return Err(ApiError::from_storage(e, kind.plural, name)),
            }
        }
    }

    /// Carry out `change` on `key`: the one place a write reaches storage, and so the
    /// one place that decides whether it persists. A dry run stores nothing; it reads
    /// the key to fail as the real write would (a create: the key exists; an update or
    /// delete: the key is gone or at another revision), so the callers' conflict and
    /// retry handling is the same for both. Returns the object's resourceVersion
    /// afterwards: the new one for a write, the current one for a dry-run update, none
    /// after a delete and for a dry-run create.
    async fn commit(
        &self,
        key: &str,
        change: Change<'_>,
        dry_run: bool,
    ) -> Result<Option<i64>, StorageError> {
        if !dry_run {
            return match change {
                Change::Create(o) => self
                    .store
                    .create(key, object::encode(o))
                    .await
                    .map(|kv| Some(kv.mod_revision)),
                Change::Update(o, revision) => self
                    .store
                    .update(key, object::encode(o), revision)
                    .await
                    .map(|kv| Some(kv.mod_revision)),
                Change::Delete(revision) => {
                    self.store.delete(key, Some(revision)).await.map(|_| None)
                }
            };
        }
        let stored = self.store.get(key).await?.map(|kv| kv.mod_revision);
        let key = key.to_string();
        match (change, stored) {
            (Change::Create(_), None) => Ok(None),
            (Change::Create(_), Some(_)) => Err(StorageError::AlreadyExists { key }),
            (Change::Update(..) | Change::Delete(_), None) => Err(StorageError::NotFound { key }),
            (Change::Update(_, expected) | Change::Delete(expected), Some(actual))
                if actual != expected =>
            {
                Err(StorageError::Conflict {
                    key,
                    expected,
                    actual,
                })
            }
            (Change::Update(_, revision), Some(_)) => Ok(Some(revision)),
            (Change::Delete(_), Some(_)) => Ok(None),
        }
    }

    /// Create the namespace `name` if it does not exist.
    pub async fn ensure_namespace(&self, name: &str) -> Result<(), ApiError> {
        let kind = crds::kind_by_name("namespaces").expect("namespaces are served");
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match self.create(kind, None, body, WriteOptions::default()).await {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The managedFields writer of a write of `operation` with `options` to `sub`.
fn writer(
    kind: &KindInfo,
    options: &WriteOptions,
    operation: Operation,
    sub: Option<Subresource>,
) -> Writer {
    Writer {
        manager: options.field_manager.clone(),
        operation,
        subresource: sub.map(|s| s.name().to_string()),
        scope: match sub {
            Some(Subresource::Status) => Scope::OnlyStatus,
            None if kind.has_status => Scope::WithoutStatus,
            _ => Scope::Whole,
        },
        api_version: kind.api_version(),
        applied: None,
        force: false,
    }
}

/// The managedFields the verb's `next` object sets itself: those it has when they
/// differ from the `current` ones.
fn given_managed_fields(current: &Value, next: &Value) -> Option<Value> {
    let pointer = "/metadata/managedFields";
    next.pointer(pointer)
        .filter(|given| current.pointer(pointer) != Some(*given))
        .cloned()
}

/// Set `next`'s `metadata.managedFields` for a write by `writer` of `current` (none
/// for a create): the `given` ones as they are (an empty list: none), else as
/// [`fields::record`] decides. An apply's conflicts are a 409.
fn manage_fields(
    kind: &KindInfo,
    current: Option<&Value>,
    next: &mut Value,
    given: Option<Value>,
    writer: &Writer,
) -> Result<(), ApiError> {
    let entries: Vec<Value> = match given {
        Some(given) => {
            let list = given.as_array().cloned().ok_or_else(|| {
                ApiError::BadRequest("metadata.managedFields must be a list".into())
            })?;
            for entry in &list {
                ManagedEntry::from_value(entry)
                    .map_err(|e| ApiError::BadRequest(format!("metadata.managedFields: {e}")))?;
            }
            list
        }
        None => {
            let before = match current {
                Some(c) => fields::entries_of(c).map_err(internal)?,
                None => vec![],
            };
            let types = ListTypes::for_kind(kind);
            fields::record(current, next, &before, writer, types, &now())
                .map_err(|conflicts| ApiError::ApplyConflict {
                    message: fields::conflict_message(&conflicts, &writer.api_version),
                    conflicts: conflicts
                        .into_iter()
                        .map(|c| (c.manager, c.field))
                        .collect(),
                    api_version: writer.api_version.clone(),
                })?
                .iter()
                .map(ManagedEntry::to_value)
                .collect()
        }
    };
    let meta = object::meta_mut(next);
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), entries.into());
    }
    Ok(())
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

/// The object an update stores, from the `current` one and the verb's `next` one:
/// the kind's strategy validates it (and fills in defaults), carries over what only
/// the server writes, and, if anything changed, checks it against `current`.
fn next_version(
    kind: &KindInfo,
    name: &str,
    current: &Value,
    mut next: Value,
) -> Result<Value, ApiError> {
    let strategy = strategy::for_kind(kind);
    strategy.validate(kind, name, &mut next)?;
    strategy.prepare_for_update(current, &mut next);
    if next != *current {
        strategy.validate_update(kind, name, current, &next)?;
    }
    Ok(next)
}

/// Marked for deletion and no finalizer left: the object can go.
fn finalized(object: &Value) -> bool {
    let meta = &object["metadata"];
    meta.get("deletionTimestamp").is_some()
        && meta["finalizers"].as_array().is_none_or(|f| f.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        json_patch::merge(&mut t, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(t, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }

    #[test]
    fn a_write_changes_only_its_part() {
        let service = crds::kind_by_name("services").unwrap();
        let event = crds::kind_by_name("events").unwrap();
        let current = json!({"spec": 1, "status": "old"});
        let incoming = json!({"spec": 2, "status": "new"});
        let without_status = json!({"spec": 2});
        for (kind, incoming, part, want) in [
            (
                service,
                &incoming,
                Part::Main,
                json!({"spec": 2, "status": "old"}),
            ),
            (
                service,
                &incoming,
                Part::Status,
                json!({"spec": 1, "status": "new"}),
            ),
            (service, &without_status, Part::Status, json!({"spec": 1})),
            (
                event,
                &incoming,
                Part::Main,
                json!({"spec": 2, "status": "new"}),
            ),
        ] {
            assert_eq!(
                take_part(kind, &current, incoming, part),
                want,
                "{} {part:?} {incoming}",
                kind.plural
            );
        }
    }

    #[test]
    fn an_object_goes_once_marked_and_without_finalizers() {
        for (metadata, want) in [
            (json!({}), false),
            (json!({"finalizers": []}), false),
            (json!({"deletionTimestamp": "t"}), true),
            (json!({"deletionTimestamp": "t", "finalizers": []}), true),
            (
                json!({"deletionTimestamp": "t", "finalizers": ["x"]}),
                false,
            ),
        ] {
            assert_eq!(
                finalized(&json!({"metadata": metadata})),
                want,
                "{metadata}"
            );
        }
    }
}
