//! Per-kind rules of the generic verbs, as Kubernetes' `RESTStrategy`.
//!
//! The verbs in [`super`] are the same for every kind; what differs between kinds is
//! asked of the kind's [`Strategy`] ([`for_kind`]): which subresources it serves, how
//! a new object and an update are prepared, how they are validated, whether a delete
//! may go ahead, and what a POST to a subresource such as `binding` changes. Kinds
//! without rules of their own use [`DefaultStrategy`]; Instances ([`InstanceStrategy`])
//! own the `binding` subresource, Namespaces ([`NamespaceStrategy`]) their deletion
//! rules and a generation that does not follow `spec`, `ConfigMap`s and Secrets
//! ([`ConfigStrategy`], [`SecretStrategy`]) their `immutable` flag and Secrets
//! `stringData`.
//!
//! The methods are pure except [`Strategy::check_delete`], which reads storage.
//! Admission (mutating and validating plugins) and server-side apply's field ownership
//! are not per-kind rules: field ownership runs in the write path around these calls
//! (`metadata.managedFields`, see [`super::fields`]), and admission will.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crds::{FieldError, KindInfo};
use serde_json::Value;

use crate::error::ApiError;
use crate::object;
use crate::storage::{ListRequest, Storage};

/// A subresource: a path under an object (`<plural>/<name>/<subresource>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// `status`: reads and writes of the status alone (kinds with `has_status`).
    Status,
    /// `binding`: a POST binds an Instance to a cluster or node (as `pods/binding`).
    Binding,
}

impl Subresource {
    /// Every subresource, in the order discovery lists them.
    pub const ALL: [Subresource; 2] = [Subresource::Status, Subresource::Binding];

    /// The path segment.
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Binding => "binding",
        }
    }

    /// The subresource a path segment names.
    pub fn parse(segment: &str) -> Option<Subresource> {
        Subresource::ALL.into_iter().find(|s| s.name() == segment)
    }

    /// The verbs discovery lists for it.
    pub fn verbs(self) -> &'static [&'static str] {
        match self {
            Subresource::Status => &["get", "patch", "update"],
            Subresource::Binding => &["create"],
        }
    }

    /// The kind of the objects it reads and writes, as discovery names it.
    pub fn object_kind(self, kind: &KindInfo) -> &'static str {
        match self {
            Subresource::Status => kind.kind,
            Subresource::Binding => "Binding",
        }
    }
}

/// A change of an object: the next version computed from the current one.
pub type Change = Box<dyn Fn(&Value) -> Result<Value, ApiError> + Send + Sync>;

/// A write asked for by a POST to a subresource: the change it makes to the stored
/// object, at the precondition it names. The registry runs it through the same write
/// path as a patch (validation, immutable fields, compare-and-swap).
pub struct SubresourceWrite {
    /// Write only at this resourceVersion (the body's `metadata.resourceVersion`).
    pub precondition: Option<i64>,
    /// The object after the change, computed from the current one.
    pub change: Change,
}

/// The rules of one kind, consulted by every verb of the registry.
///
/// Every method has the default behaviour of a kind with no special rules.
#[async_trait]
pub trait Strategy: Send + Sync {
    /// Whether `kind` serves `sub` (the HTTP layer routes, and discovery lists, only
    /// these). By default: `status` for kinds with a status.
    fn serves(&self, kind: &KindInfo, sub: Subresource) -> bool {
        sub == Subresource::Status && kind.has_status
    }

    /// Prepare a new object before it is validated (`PrepareForCreate`). By default, a
    /// kind with a status subresource starts without one: as in Kubernetes, status is
    /// written through the status subresource only.
    fn prepare_for_create(&self, kind: &KindInfo, object: &mut Value) {
        if kind.has_status {
            if let Some(o) = object.as_object_mut() {
                o.remove("status");
            }
        }
    }

    /// Validate an object about to be written and fill in its defaults (`Validate`).
    /// By default: the kind's schema and semantic rules.
    fn validate(&self, kind: &KindInfo, name: &str, object: &mut Value) -> Result<(), ApiError> {
        *object = kind.validate(object).map_err(|e| ApiError::Invalid {
            kind: kind.kind.into(),
            name: name.into(),
            errors: e.errors,
        })?;
        Ok(())
    }

    /// Prepare a validated update of `current` (`PrepareForUpdate`): carry over what
    /// only the server writes, and bump `generation` when `spec` changed (unless
    /// [`Strategy::generation_follows_spec`] says otherwise). It runs after
    /// [`Strategy::validate`], which sees the object as the client sent it.
    fn prepare_for_update(&self, current: &Value, next: &mut Value) {
        keep_server_fields(current, next, self.generation_follows_spec());
    }

    /// Whether a change of `spec` bumps `metadata.generation`. By default it does.
    fn generation_follows_spec(&self) -> bool {
        true
    }

    /// Validate an update against the stored object (`ValidateUpdate`); called only
    /// when the update changes something. By default: the kind's immutable fields.
    fn validate_update(
        &self,
        kind: &KindInfo,
        name: &str,
        current: &Value,
        next: &Value,
    ) -> Result<(), ApiError> {
        check_immutable(kind, name, current, next)
    }

    /// Refuse to delete object `name` before anything is written. By default every
    /// delete may go ahead.
    async fn check_delete(
        &self,
        _storage: &dyn Storage,
        _kind: &KindInfo,
        _name: &str,
    ) -> Result<(), ApiError> {
        Ok(())
    }

    /// The write a POST of `body` to subresource `sub` of object `name` asks for.
    /// Only called for subresources the kind [serves](Strategy::serves) other than
    /// `status`; by default there are none.
    fn subresource_write(
        &self,
        _kind: &KindInfo,
        _name: &str,
        sub: Subresource,
        _body: &Value,
    ) -> Result<SubresourceWrite, ApiError> {
        Err(ApiError::MethodNotAllowed(format!(
            "POST is not supported on {}",
            sub.name()
        )))
    }
}

/// The rules of kinds with no rules of their own.
pub struct DefaultStrategy;

impl Strategy for DefaultStrategy {}

/// Instances: they serve the `binding` subresource.
pub struct InstanceStrategy;

impl Strategy for InstanceStrategy {
    fn serves(&self, kind: &KindInfo, sub: Subresource) -> bool {
        sub == Subresource::Binding || DefaultStrategy.serves(kind, sub)
    }

    fn subresource_write(
        &self,
        kind: &KindInfo,
        name: &str,
        sub: Subresource,
        body: &Value,
    ) -> Result<SubresourceWrite, ApiError> {
        if sub != Subresource::Binding {
            return DefaultStrategy.subresource_write(kind, name, sub, body);
        }
        let precondition = object::resource_version(body).map_err(ApiError::BadRequest)?;
        let binding = Binding::parse(body)?;
        let (plural, name) = (kind.plural, name.to_string());
        Ok(SubresourceWrite {
            precondition,
            change: Box::new(move |current| binding.apply(plural, &name, current, Utc::now())),
        })
    }
}

/// Namespaces: `default` and namespaces that still hold objects cannot be deleted,
/// and their generation does not follow `spec`.
pub struct NamespaceStrategy;

#[async_trait]
impl Strategy for NamespaceStrategy {
    fn generation_follows_spec(&self) -> bool {
        false
    }

    async fn check_delete(
        &self,
        storage: &dyn Storage,
        _kind: &KindInfo,
        name: &str,
    ) -> Result<(), ApiError> {
        let refuse = |message: String| ApiError::Conflict {
            plural: "namespaces".into(),
            name: name.into(),
            message,
        };
        if name == "default" {
            return Err(refuse("the default namespace cannot be deleted".into()));
        }
        for kind in crds::KINDS.iter().filter(|k| k.namespaced) {
            let request = ListRequest {
                prefix: object::key(kind, Some(name), ""),
                limit: Some(1),
                ..Default::default()
            };
            let page = storage
                .list(request)
                .await
                .map_err(|e| ApiError::from_storage(e, "namespaces", name))?;
            if let Some(kv) = page.items.first() {
                let held = kv.key.rsplit('/').next().unwrap_or_default();
                return Err(refuse(format!(
                    "the namespace still holds {} {held:?} (and maybe more); delete them first",
                    kind.singular
                )));
            }
        }
        Ok(())
    }
}

/// `ConfigMap`s and Secrets: once `immutable` is set, their data cannot change and the
/// flag cannot be unset. Secrets also take `stringData` ([`SecretStrategy`]).
pub struct ConfigStrategy;

impl Strategy for ConfigStrategy {
    fn validate_update(
        &self,
        kind: &KindInfo,
        name: &str,
        current: &Value,
        next: &Value,
    ) -> Result<(), ApiError> {
        check_immutable(kind, name, current, next)?;
        if current.get("immutable") != Some(&Value::Bool(true)) {
            return Ok(());
        }
        let errors: Vec<FieldError> = ["data", "binaryData", "immutable"]
            .into_iter()
            .filter(|field| current.get(*field) != next.get(*field))
            .map(|field| FieldError::new(field, "field is immutable when `immutable` is set"))
            .collect();
        match errors.is_empty() {
            true => Ok(()),
            false => Err(ApiError::Invalid {
                kind: kind.kind.into(),
                name: name.into(),
                errors,
            }),
        }
    }
}

/// Secrets: the rules of [`ConfigStrategy`]; `stringData` is merged into `data`
/// (base64-encoded, its keys winning) and never stored; `type` defaults to `Opaque`
/// (also when sent empty, as kubectl does).
pub struct SecretStrategy;

impl Strategy for SecretStrategy {
    fn validate(&self, kind: &KindInfo, name: &str, object: &mut Value) -> Result<(), ApiError> {
        DefaultStrategy.validate(kind, name, object)?;
        let Some(o) = object.as_object_mut() else {
            return Ok(());
        };
        if let Some(Value::Object(plain)) = o.remove("stringData") {
            use base64::Engine as _;
            let data = o
                .entry("data")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(data) = data.as_object_mut() {
                for (key, value) in plain {
                    let text = value.as_str().unwrap_or_default();
                    let encoded = base64::engine::general_purpose::STANDARD.encode(text);
                    data.insert(key, Value::String(encoded));
                }
            }
        }
        let typed = o
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty());
        if !typed {
            o.insert("type".into(), Value::String("Opaque".into()));
        }
        Ok(())
    }

    fn validate_update(
        &self,
        kind: &KindInfo,
        name: &str,
        current: &Value,
        next: &Value,
    ) -> Result<(), ApiError> {
        ConfigStrategy.validate_update(kind, name, current, next)
    }
}

/// The strategy of `kind`.
pub fn for_kind(kind: &KindInfo) -> &'static dyn Strategy {
    match kind.kind {
        "Instance" => &InstanceStrategy,
        "Namespace" => &NamespaceStrategy,
        "ConfigMap" => &ConfigStrategy,
        "Secret" => &SecretStrategy,
        _ => &DefaultStrategy,
    }
}

/// The body of a POST to `instances/<name>/binding`:
/// `{"target": {"kind": "Cluster" | "Node", "name": …}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Binding {
    /// The tier bound to.
    target: BindTarget,
    /// The cluster's or node's name.
    name: String,
}

/// What an Instance is bound to: a cluster (by the root) or a node (by its cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BindTarget {
    Cluster,
    Node,
}

impl BindTarget {
    /// The `spec` field it sets, also the noun of messages.
    fn field(self) -> &'static str {
        match self {
            BindTarget::Cluster => "cluster",
            BindTarget::Node => "node",
        }
    }
}

impl Binding {
    /// Read a binding from a request body (400 if it is not one).
    fn parse(body: &Value) -> Result<Binding, ApiError> {
        let name = body
            .pointer("/target/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::BadRequest("a binding needs target.name".into()))?;
        let target = match body.pointer("/target/kind").and_then(Value::as_str) {
            Some("Cluster") => BindTarget::Cluster,
            Some("Node") => BindTarget::Node,
            other => {
                return Err(ApiError::BadRequest(format!(
                    "target.kind: {:?} is not one of Cluster, Node",
                    other.unwrap_or_default()
                )))
            }
        };
        Ok(Binding {
            target,
            name: name.into(),
        })
    }

    /// The Instance `current` bound: `spec.cluster` or `spec.node` set, phase
    /// `Scheduled` and the `Scheduled=True` condition (its transition at `now`). An
    /// Instance already bound to another target is a 409.
    fn apply(
        &self,
        plural: &str,
        name: &str,
        current: &Value,
        now: DateTime<Utc>,
    ) -> Result<Value, ApiError> {
        let mut instance =
            <crds::Instance as serde::Deserialize>::deserialize(current).map_err(internal)?;
        let field = self.target.field();
        let bound = match self.target {
            BindTarget::Cluster => &mut instance.spec.cluster,
            BindTarget::Node => &mut instance.spec.node,
        };
        match bound.as_deref() {
            Some(b) if b != self.name => {
                return Err(ApiError::Conflict {
                    plural: plural.into(),
                    name: name.into(),
                    message: format!("the instance is already bound to {field} {b}"),
                })
            }
            _ => *bound = Some(self.name.clone()),
        }
        let status = instance.status.get_or_insert_with(Default::default);
        status.phase = crds::Phase::Scheduled;
        status.reason.clear();
        status.message.clear();
        crds::set_condition(
            &mut status.conditions,
            crds::conditions::SCHEDULED,
            crds::ConditionStatus::True,
            crds::conditions::reason::PLACED,
            &format!("placed on {field} {}", self.name),
            now,
        );
        // Ready follows the phase in the same write, as every other writer keeps it.
        let (ready, reason, message) = crds::conditions::instance_readiness(status.phase, "");
        crds::set_condition(
            &mut status.conditions,
            crds::conditions::READY,
            ready,
            reason,
            &message,
            now,
        );
        serde_json::to_value(&instance).map_err(internal)
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// Carry over what only the server writes; bump `generation` when `spec` changed and
/// `bump_on_spec` says so.
fn keep_server_fields(current: &Value, next: &mut Value, bump_on_spec: bool) {
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
    let generation = if spec_changed && bump_on_spec {
        generation + 1
    } else {
        generation
    };
    meta.insert("generation".into(), generation.into());
}

/// A 422 naming every immutable field of `kind` that differs between the two.
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kind(name: &str) -> &'static KindInfo {
        crds::kind_by_name(name).unwrap()
    }

    #[test]
    fn each_kind_serves_its_subresources() {
        use Subresource::{Binding as B, Status as S};
        for (name, sub, want) in [
            ("instances", S, true),
            ("instances", B, true),
            ("services", S, true),
            ("services", B, false),
            ("clusters", S, true),
            ("nodes", B, false),
            ("namespaces", S, false),
            ("namespaces", B, false),
            ("events", S, false),
            ("leases", S, false),
        ] {
            let k = kind(name);
            assert_eq!(for_kind(k).serves(k, sub), want, "{name}/{}", sub.name());
        }
    }

    #[test]
    fn subresources_are_named_by_their_path_segment() {
        for sub in Subresource::ALL {
            assert_eq!(Subresource::parse(sub.name()), Some(sub));
        }
        for segment in ["", "Status", "scale", "bindings"] {
            assert_eq!(Subresource::parse(segment), None, "{segment:?}");
        }
        let instance = kind("instances");
        assert_eq!(Subresource::Status.object_kind(instance), "Instance");
        assert_eq!(Subresource::Binding.object_kind(instance), "Binding");
    }

    #[test]
    fn a_new_object_starts_without_status_where_status_is_a_subresource() {
        for (name, keeps_status) in [
            ("services", false),
            ("clusters", false),
            ("namespaces", true),
        ] {
            let k = kind(name);
            let mut object = json!({"metadata": {"name": "x"}, "status": {"phase": "Active"}});
            for_kind(k).prepare_for_create(k, &mut object);
            assert_eq!(object.get("status").is_some(), keeps_status, "{name}");
        }
    }

    #[test]
    fn updates_keep_server_fields_and_bump_generation_on_spec_changes() {
        let current = json!({
            "metadata": {"name": "a", "namespace": "default", "uid": "u1",
                         "creationTimestamp": "t0", "resourceVersion": "5", "generation": 3},
            "spec": {"replicas": 1},
        });
        let forged = json!({"name": "b", "uid": "u2", "generation": 9, "managedFields": [],
                            "deletionTimestamp": "t1", "labels": {"x": "y"}});
        for (name, spec, want_generation) in [
            ("services", json!({"replicas": 1}), 3),
            ("services", json!({"replicas": 2}), 4),
            ("namespaces", json!({"replicas": 2}), 3),
        ] {
            let mut next = json!({"metadata": forged, "spec": spec});
            for_kind(kind(name)).prepare_for_update(&current, &mut next);
            assert_eq!(
                next["metadata"],
                json!({"name": "a", "namespace": "default", "uid": "u1",
                       "creationTimestamp": "t0", "resourceVersion": "5",
                       "generation": want_generation, "labels": {"x": "y"}}),
                "{name} with spec {spec}"
            );
        }
    }

    #[test]
    fn immutable_fields_cannot_change() {
        let k = kind("instances");
        let current = json!({"spec": {"service": "web", "ordinal": 0, "cluster": null}});
        for (next, want) in [
            (
                json!({"spec": {"service": "web", "ordinal": 0, "cluster": "c1"}}),
                vec![],
            ),
            (
                json!({"spec": {"service": "other", "ordinal": 0}}),
                vec!["spec.service"],
            ),
        ] {
            let fields: Vec<String> = match for_kind(k).validate_update(k, "i", &current, &next) {
                Ok(()) => vec![],
                Err(ApiError::Invalid { errors, .. }) => {
                    errors.into_iter().map(|e| e.field).collect()
                }
                Err(e) => panic!("{e}"),
            };
            assert_eq!(fields, want, "{next}");
        }
    }

    /// The fields a `validate_update` of `kind` from `current` to `next` refuses.
    fn refused(kind: &KindInfo, current: &Value, next: &Value) -> Vec<String> {
        match for_kind(kind).validate_update(kind, "x", current, next) {
            Ok(()) => vec![],
            Err(ApiError::Invalid { errors, .. }) => errors.into_iter().map(|e| e.field).collect(),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn immutable_configmaps_and_secrets_keep_their_data() {
        for plural in ["configmaps", "secrets"] {
            let k = kind(plural);
            let frozen = json!({"data": {"a": "YQ=="}, "immutable": true, "type": "Opaque"});
            let open = json!({"data": {"a": "YQ=="}, "type": "Opaque"});
            let changed = json!({"data": {"a": "Yg=="}, "type": "Opaque"});
            for (current, next, want) in [
                (&open, &changed, vec![]),
                (&open, &frozen, vec![]),
                (&frozen, &frozen, vec![]),
                (
                    &frozen,
                    &json!({"data": {"a": "Yg=="}, "immutable": true, "type": "Opaque"}),
                    vec!["data"],
                ),
                (&frozen, &open, vec!["immutable"]),
                (&frozen, &changed, vec!["data", "immutable"]),
            ] {
                assert_eq!(
                    refused(k, current, next),
                    want,
                    "{plural}: {current} -> {next}"
                );
            }
        }
        let secrets = kind("secrets");
        let typed = |t: &str| json!({"type": t});
        assert_eq!(
            refused(secrets, &typed("Opaque"), &typed("kubernetes.io/tls")),
            vec!["type"]
        );
    }

    #[test]
    fn secret_string_data_is_merged_into_data_and_never_kept() {
        let k = kind("secrets");
        let mut secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "default"},
            "data": {"user": "YWRtaW4=", "password": "b2xk"},
            "stringData": {"password": "s3cret", "host": "db.local"}});
        for_kind(k).validate(k, "db", &mut secret).unwrap();
        assert_eq!(secret.get("stringData"), None, "{secret}");
        assert_eq!(
            secret["data"],
            json!({"user": "YWRtaW4=", "password": "czNjcmV0", "host": "ZGIubG9jYWw="})
        );
        assert_eq!(secret["type"], "Opaque");

        let mut bad = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "default"},
            "data": {"password": "not base64!"}, "stringData": {"bad key": "x"}});
        let Err(ApiError::Invalid { errors, .. }) = for_kind(k).validate(k, "db", &mut bad) else {
            panic!("accepted {bad}");
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["stringData[bad key]", "data[password]"],
            "{errors:?}"
        );
        assert!(
            errors.iter().all(|e| !e.message.contains("not base64!")),
            "an error repeats the secret value: {errors:?}"
        );
    }

    #[test]
    fn binding_bodies() {
        let ok = |target, name: &str| {
            Ok(Binding {
                target,
                name: name.into(),
            })
        };
        for (body, want) in [
            (
                json!({"target": {"kind": "Cluster", "name": "c1"}}),
                ok(BindTarget::Cluster, "c1"),
            ),
            (
                json!({"target": {"kind": "Node", "name": "n1"}, "metadata": {"resourceVersion": "4"}}),
                ok(BindTarget::Node, "n1"),
            ),
            (
                json!({"target": {"kind": "Node"}}),
                Err("a binding needs target.name"),
            ),
            (
                json!({"target": {"kind": "Node", "name": ""}}),
                Err("a binding needs target.name"),
            ),
            (
                json!({"target": {"kind": "Widget", "name": "w"}}),
                Err("target.kind: \"Widget\" is not one of Cluster, Node"),
            ),
            (
                json!({"target": {"name": "w"}}),
                Err("target.kind: \"\" is not one of Cluster, Node"),
            ),
        ] {
            let got = Binding::parse(&body).map_err(|e| match e {
                ApiError::BadRequest(m) => m,
                other => panic!("{body}: expected a bad request, got {other}"),
            });
            assert_eq!(got, want.map_err(String::from), "{body}");
        }
    }

    #[test]
    fn binding_an_instance() {
        let instance = |cluster: Option<&str>, node: Option<&str>| {
            json!({
                "apiVersion": "oakestra.io/v1", "kind": "Instance",
                "metadata": {"name": "i", "namespace": "default"},
                "spec": {"service": "web", "ordinal": 0, "template": {"image": "x"},
                         "cluster": cluster, "node": node},
            })
        };
        let now = DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let to = |target, name: &str| Binding {
            target,
            name: name.into(),
        };
        use BindTarget::{Cluster, Node};
        for (current, binding, want) in [
            (
                instance(None, None),
                to(Cluster, "c1"),
                Ok((Some("c1"), None)),
            ),
            (
                instance(Some("c1"), None),
                to(Cluster, "c1"),
                Ok((Some("c1"), None)),
            ),
            (
                instance(Some("c1"), None),
                to(Node, "n1"),
                Ok((Some("c1"), Some("n1"))),
            ),
            (
                instance(Some("c1"), None),
                to(Cluster, "c2"),
                Err("the instance is already bound to cluster c1"),
            ),
            (
                instance(Some("c1"), Some("n1")),
                to(Node, "n2"),
                Err("the instance is already bound to node n1"),
            ),
        ] {
            let case = format!("{binding:?} on {}", current["spec"]);
            match (binding.apply("instances", "i", &current, now), want) {
                (Ok(bound), Ok((cluster, node))) => {
                    assert_eq!(bound["spec"]["cluster"].as_str(), cluster, "{case}");
                    assert_eq!(bound["spec"]["node"].as_str(), node, "{case}");
                    assert_eq!(bound["status"]["phase"], "Scheduled", "{case}");
                    let condition = &bound["status"]["conditions"][0];
                    let message = format!("placed on {} {}", binding.target.field(), binding.name);
                    assert_eq!(
                        (
                            &condition["type"],
                            &condition["status"],
                            &condition["reason"]
                        ),
                        (&json!("Scheduled"), &json!("True"), &json!("Placed")),
                        "{case}"
                    );
                    assert_eq!(condition["message"], message, "{case}");
                    assert_eq!(condition["lastTransitionTime"], "2024-05-01T10:00:00Z");
                }
                (Err(ApiError::Conflict { message, .. }), Err(want)) => {
                    assert_eq!(message, want, "{case}")
                }
                (got, want) => panic!("{case}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[tokio::test]
    async fn namespaces_that_hold_objects_or_are_default_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            crate::storage::embedded::EmbeddedStore::open(dir.path(), Default::default()).unwrap();
        let service = kind("services");
        store
            .create(&object::key(service, Some("busy"), "web"), b"{}".to_vec())
            .await
            .unwrap();
        let ns = kind("namespaces");
        for (name, refused) in [
            ("default", Some("the default namespace cannot be deleted")),
            ("busy", Some("the namespace still holds service \"web\"")),
            ("empty", None),
        ] {
            let got = for_kind(ns).check_delete(&store, ns, name).await;
            match (got, refused) {
                (Ok(()), None) => {}
                (Err(ApiError::Conflict { message, .. }), Some(want)) => {
                    assert!(message.starts_with(want), "{name}: {message}")
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
        // Other kinds have no such rule.
        let cluster = kind("clusters");
        assert!(for_kind(cluster)
            .check_delete(&store, cluster, "default")
            .await
            .is_ok());
    }
}
