//! The authorizer: which identity may do what to which object, as fixed rules in the
//! spirit of Kubernetes' Node authorizer and `NodeRestriction` admission.
//!
//! [`authorize`] is a pure decision over the request's attributes and the objects
//! involved: the one as stored (what a get reads, what a write starts from) and the one
//! a write would store. The registry calls it inside the read-modify-write that commits,
//! so the object checked is the object replaced; lists and watches, which have no
//! object, are checked by the HTTP layer before they start.
//!
//! The rules (`SECURITY-DESIGN.md`):
//! - System and administrators: everything.
//! - A cluster (at the root): instances assigned to it (list/watch with the field
//!   selector `spec.cluster=C`, get, `status`, main writes that change only `spec.node`
//!   or hand the instance back); its own Cluster object; creating events; getting a
//!   `ConfigMap` or Secret that an instance assigned to it takes values from.
//! - A node (at its cluster): instances bound to it (list/watch with `spec.node=N`,
//!   get, `status`); its own Node object and Lease; creating events; getting a
//!   `ConfigMap` or Secret that an instance bound to it takes values from (Kubernetes'
//!   Node authorizer follows the same graph).
//! - Neither a cluster nor a node reaches the controllers' leader-election Leases
//!   (`crds::LEADER_LEASES`), whatever its name.
//! - The root's proxy identity (at a cluster): reading Nodes (get, list, watch), which
//!   the root shows its administrators; anonymous callers: nothing.
//! - The store's snapshot (`oakestra backup`, a path outside the resource API):
//!   administrators only ([`authorize_snapshot`]).
//!
//! A rule that depends on the stored object fails when there is none, with the message
//! it gives for an object of someone else: a restricted identity cannot tell a missing
//! object from one it may not see. Rules that depend only on the name (a node's own
//! Node and Lease, a cluster's own Cluster) let a missing object be a 404, which tells
//! the caller nothing about anyone else.

use std::fmt;

use crds::KindInfo;
use pki::Identity;
use serde_json::Value;

use crate::object::FieldSelector;
use crate::registry::Subresource;

/// The annotation a cluster adds its name to when it hands an Instance back to the root.
pub const REJECTED_BY: &str = "oakestra.io/rejected-by";

/// A verb of the resource API, as Kubernetes names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Read one object.
    Get,
    /// Read a collection.
    List,
    /// Follow a collection's changes.
    Watch,
    /// Create an object (or POST to a subresource such as `binding`).
    Create,
    /// Replace an object (PUT).
    Update,
    /// Merge-patch an object.
    Patch,
    /// Delete an object.
    Delete,
}

impl Verb {
    /// The verb as Kubernetes writes it (`get`, `list`, …).
    pub fn name(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }
}

/// What a request asks to do, as the authorizer reads it.
#[derive(Debug, Clone, Copy)]
pub struct RequestAttributes<'a> {
    /// The verb.
    pub verb: Verb,
    /// The resource (its plural and API group).
    pub kind: &'a KindInfo,
    /// The subresource (`status`, `binding`), if the request names one.
    pub subresource: Option<Subresource>,
    /// The namespace, for namespaced resources.
    pub namespace: Option<&'a str>,
    /// The object's name; `None` for lists, watches and creates (a create's name is
    /// read from the new object).
    pub name: Option<&'a str>,
    /// The `fieldSelector` of a list or watch, as sent (empty otherwise).
    pub field_selector: &'a str,
    /// For a get of a `ConfigMap` or Secret by a cluster or node: the Instances of the
    /// namespace assigned to it, which the rule searches for one whose environment
    /// takes values from the object (the registry reads them; empty otherwise).
    pub users: &'a [Value],
}

impl<'a> RequestAttributes<'a> {
    /// A request on one object, or a create (`name: None`), without a field selector.
    pub fn on_object(
        verb: Verb,
        kind: &'a KindInfo,
        subresource: Option<Subresource>,
        namespace: Option<&'a str>,
        name: Option<&'a str>,
    ) -> Self {
        RequestAttributes {
            verb,
            kind,
            subresource,
            namespace,
            name,
            field_selector: "",
            users: &[],
        }
    }

    /// Whether the rule of this request reads [`RequestAttributes::users`].
    pub fn needs_users(&self, identity: &Identity) -> bool {
        matches!(identity, Identity::Cluster { .. } | Identity::Node { .. })
            && matches!(self.kind.plural, "configmaps" | "secrets")
            && self.verb == Verb::Get
            && self.subresource.is_none()
    }
}

/// A request the authorizer refused: Kubernetes' 403 `Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden {
    /// The whole message, e.g. `instances.oakestra.io "x" is forbidden: User
    /// "oakestra:node:n1" cannot get resource "instances" in API group "oakestra.io" in
    /// the namespace "default": <why>`.
    pub message: String,
    /// The object's name (empty for a collection).
    pub name: String,
    /// The resource's API group.
    pub group: String,
    /// The resource's plural.
    pub plural: String,
}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Forbidden {}

impl Forbidden {
    fn new(identity: &Identity, request: &RequestAttributes, name: &str, why: &str) -> Self {
        let kind = request.kind;
        let qualified = if kind.group.is_empty() {
            kind.plural.to_string()
        } else {
            format!("{}.{}", kind.plural, kind.group)
        };
        let object = if name.is_empty() {
            qualified
        } else {
            format!("{qualified} {name:?}")
        };
        let resource = match request.subresource {
            Some(sub) => format!("{}/{}", kind.plural, sub.name()),
            None => kind.plural.to_string(),
        };
        let scope = match request.namespace {
            Some(ns) if kind.namespaced => format!("in the namespace {ns:?}"),
            _ => "at the cluster scope".to_string(),
        };
        Forbidden {
            message: format!(
                "{object} is forbidden: User {:?} cannot {} resource {resource:?} in API group {:?} {scope}: {why}",
                identity.user(),
                request.verb.name(),
                kind.group,
            ),
            name: name.to_string(),
            group: kind.group.to_string(),
            plural: kind.plural.to_string(),
        }
    }
}

/// Whether `identity` may do `request`. `stored` is the object as stored (a get's, a
/// write's starting point; `None` when there is none, and for lists, watches and
/// creates); `new` the object a write would store (`None` for reads and deletes).
///
/// A write may be checked twice in one attempt: first with `new: None`, before the
/// change is computed, so that a caller who may not write the object learns nothing
/// from the change's errors; then with the object the change produced. With
/// `new: None` only the rules on the stored object are checked.
pub fn authorize(
    identity: &Identity,
    request: &RequestAttributes,
    stored: Option<&Value>,
    new: Option<&Value>,
) -> Result<(), Forbidden> {
    let name = request
        .name
        .map(str::to_string)
        .or_else(|| {
            new.and_then(|n| str_at(n, "/metadata/name"))
                .map(String::from)
        })
        .unwrap_or_default();
    rule(identity, request, &name, stored, new)
        .map_err(|why| Forbidden::new(identity, request, &name, &why))
}

/// The rule that applies, as `Err(why)` when it refuses.
fn rule(
    identity: &Identity,
    request: &RequestAttributes,
    name: &str,
    stored: Option<&Value>,
    new: Option<&Value>,
) -> Result<(), String> {
    use Subresource::Status;
    use Verb::*;
    let plural = request.kind.plural;
    let sub = request.subresource;
    let verb = request.verb;
    match identity {
        Identity::System | Identity::Admin { .. } => Ok(()),
        Identity::Anonymous => Err("anonymous requests may reach only health and version".into()),
        // The root shows its administrators a cluster's nodes (the dashboard), as it
        // proxies their logs; nothing else.
        Identity::Root => match (plural, sub, verb) {
            ("nodes", None, Get | List | Watch) => Ok(()),
            _ => Err("the root's proxy identity may only read Nodes".into()),
        },
        Identity::Cluster { .. } | Identity::Node { .. }
            if plural == "leases" && crds::is_leader_lease(name) =>
        {
            Err(format!(
                "{name:?} is the controllers' leader-election Lease; only they and administrators may reach it"
            ))
        }
        Identity::Cluster { name: cluster } => match (plural, sub, verb) {
            ("instances", None, List | Watch) => {
                selects(request.field_selector, "spec.cluster", cluster)
            }
            ("instances", None, Get) | ("instances", Some(Status), Get | Update | Patch) => {
                assigned(stored, "spec.cluster", cluster, "assigned to cluster")
            }
            ("instances", None, Update | Patch) => {
                assigned(stored, "spec.cluster", cluster, "assigned to cluster")?;
                match (stored, new) {
                    (Some(stored), Some(new))
                        if !changes_only_node(stored, new) && !hands_back(stored, new, cluster) =>
                    {
                        Err(format!(
                            "a cluster may change only spec.node of its instances, or hand one back (spec.cluster and spec.node unset, the annotation {REJECTED_BY} gaining {cluster:?})"
                        ))
                    }
                    _ => Ok(()),
                }
            }
            // The other clusters' subnets and gateways route its nodes' traffic to them.
            ("clusters", None, Get | List | Watch) => Ok(()),
            ("clusters", None, Create | Update | Patch)
            | ("clusters", Some(Status), Get | Update | Patch) => {
                own_object(name, cluster, "a cluster may write only its own Cluster")
            }
            ("events", None, Create) => Ok(()),
            // Every Service's endpoints: the cluster keeps a copy for its nodes.
            ("endpoints", None, Get | List | Watch) => Ok(()),
            // The configuration its instances' environment takes (copied for its nodes).
            ("configmaps" | "secrets", None, Get) => used(
                request,
                name,
                "spec.cluster",
                cluster,
                "assigned to cluster",
            ),
            _ => Err(format!(
                "a cluster may not {} {}",
                verb.name(),
                resource(request)
            )),
        },
        Identity::Node { name: node } => match (plural, sub, verb) {
            ("instances", None, List | Watch) => selects(request.field_selector, "spec.node", node),
            ("instances", None, Get) | ("instances", Some(Status), Get | Update | Patch) => {
                assigned(stored, "spec.node", node, "bound to node")
            }
            // The other nodes are its overlay peers; their clusters' locations and every
            // Service's endpoints make its service rules (as kube-proxy reads them).
            ("nodes" | "clusters" | "endpoints", None, Get | List | Watch) => Ok(()),
            ("nodes", None, Create | Update | Patch)
            | ("nodes", Some(Status), Get | Update | Patch) => {
                own_object(name, node, "a node may reach only its own Node")
            }
            ("leases", None, Create | Get | Update | Patch) => {
                own_object(name, node, "a node may reach only its own Lease")
            }
            ("events", None, Create) => Ok(()),
            // What its instances' environment takes, read when they start.
            ("configmaps" | "secrets", None, Get) => {
                used(request, name, "spec.node", node, "bound to node")
            }
            _ => Err(format!(
                "a node may not {} {}",
                verb.name(),
                resource(request)
            )),
        },
    }
}

/// Whether `identity` may read the store's snapshot (`GET`
/// [`SNAPSHOT_PATH`](crate::backup::SNAPSHOT_PATH), `oakestra backup`): every object,
/// Secrets included, so administrators and the server itself only. A path outside the
/// resource API, refused as Kubernetes refuses a non-resource URL.
pub fn authorize_snapshot(identity: &Identity) -> Result<(), Forbidden> {
    match identity {
        Identity::System | Identity::Admin { .. } => Ok(()),
        _ => Err(Forbidden {
            message: format!(
                "forbidden: User {:?} cannot get path {:?}: only administrators may read a snapshot of the store",
                identity.user(),
                crate::backup::SNAPSHOT_PATH
            ),
            name: String::new(),
            group: String::new(),
            plural: String::new(),
        }),
    }
}

fn resource(request: &RequestAttributes) -> String {
    match request.subresource {
        Some(sub) => format!("{}/{}", request.kind.plural, sub.name()),
        None => request.kind.plural.to_string(),
    }
}

fn str_at<'v>(object: &'v Value, pointer: &str) -> Option<&'v str> {
    object.pointer(pointer).and_then(Value::as_str)
}

/// A list or watch must select `field=value` (other requirements may narrow it more).
fn selects(selector: &str, field: &str, value: &str) -> Result<(), String> {
    let requires = FieldSelector::parse(selector).is_ok_and(|s| s.requires(field, value));
    match requires {
        true => Ok(()),
        false => Err(format!(
            "the request must select {field}={value} (fieldSelector)"
        )),
    }
}

/// The stored object's `field` (a dotted path) is `value`. The message does not tell a
/// missing object from someone else's.
fn assigned(stored: Option<&Value>, field: &str, value: &str, what: &str) -> Result<(), String> {
    let pointer = format!("/{}", field.replace('.', "/"));
    match stored.and_then(|s| str_at(s, &pointer)) {
        Some(v) if v == value => Ok(()),
        _ => Err(format!("only instances {what} {value:?} are visible to it")),
    }
}

/// One of `request.users` is assigned to the caller (`field` is `value`) and takes
/// values from `ConfigMap` or Secret `name` (as [`references`] reads it).
fn used(
    request: &RequestAttributes,
    name: &str,
    field: &str,
    value: &str,
    what: &str,
) -> Result<(), String> {
    let pointer = format!("/{}", field.replace('.', "/"));
    let kind = request.kind.kind;
    let used = request
        .users
        .iter()
        .filter(|i| str_at(i, &pointer) == Some(value))
        .any(|i| references(i, kind, name));
    match used {
        true => Ok(()),
        false => Err(format!(
            "only {}s used by instances {what} {value:?} are visible to it",
            request.kind.singular
        )),
    }
}

/// Whether Instance `instance` (as JSON) takes an environment variable from the
/// `ConfigMap` or Secret (`kind`) `name`.
pub fn references(instance: &Value, kind: &str, name: &str) -> bool {
    let field = match kind {
        "ConfigMap" => "configMapKeyRef",
        "Secret" => "secretKeyRef",
        _ => return false,
    };
    instance
        .pointer("/spec/template/env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("valueFrom")?.get(field)?.get("name")?.as_str())
        .any(|n| n == name)
}

fn own_object(name: &str, own: &str, what: &str) -> Result<(), String> {
    match name == own {
        true => Ok(()),
        false => Err(format!("{what}, {own:?}")),
    }
}

/// `object` without what a write by a cluster may change and what the server itself
/// sets on every write: the fields named, then `resourceVersion` and `generation`.
fn without(object: &Value, spec_fields: &[&str], annotation: Option<&str>) -> Value {
    let mut o = object.clone();
    if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
        for field in spec_fields {
            spec.remove(*field);
        }
    }
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        // Server-kept metadata: every write moves the version and records its manager.
        meta.remove("resourceVersion");
        meta.remove("generation");
        meta.remove("managedFields");
        if let Some(annotation) = annotation {
            let empty = match meta.get_mut("annotations").and_then(Value::as_object_mut) {
                Some(annotations) => {
                    annotations.remove(annotation);
                    annotations.is_empty()
                }
                None => false,
            };
            if empty {
                meta.remove("annotations");
            }
        }
    }
    o
}

/// The write changes nothing but `spec.node` (the cluster placed it on one of its nodes).
fn changes_only_node(stored: &Value, new: &Value) -> bool {
    without(stored, &["node"], None) == without(new, &["node"], None)
}

/// The write hands the instance back to the root: `spec.cluster` and `spec.node` unset,
/// the cluster added to the rejected-by list, nothing else changed.
fn hands_back(stored: &Value, new: &Value, cluster: &str) -> bool {
    let unset = |field: &str| str_at(new, field).is_none_or(str::is_empty);
    let rejected = |o: &Value| -> Vec<String> {
        o.pointer("/metadata/annotations")
            .and_then(|a| a.get(REJECTED_BY))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect()
    };
    let mut gained = rejected(stored);
    if !gained.iter().any(|c| c == cluster) {
        gained.push(cluster.to_string());
    }
    let mut after = rejected(new);
    gained.sort();
    after.sort();
    unset("/spec/cluster")
        && unset("/spec/node")
        && after == gained
        && without(stored, &["cluster", "node"], Some(REJECTED_BY))
            == without(new, &["cluster", "node"], Some(REJECTED_BY))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kind(plural: &str) -> &'static KindInfo {
        crds::kind_by_name(plural).unwrap()
    }

    fn instance(name: &str, cluster: Option<&str>, node: Option<&str>) -> Value {
        let mut spec = json!({"service": "web", "ordinal": 0, "image": "img"});
        if let Some(c) = cluster {
            spec["cluster"] = json!(c);
        }
        if let Some(n) = node {
            spec["node"] = json!(n);
        }
        json!({"apiVersion": "oakestra.io/v1", "kind": "Instance",
               "metadata": {"name": name, "namespace": "default", "resourceVersion": "5", "generation": 1},
               "spec": spec})
    }

    fn named(kind: &str, name: &str) -> Value {
        json!({"apiVersion": "oakestra.io/v1", "kind": kind, "metadata": {"name": name}})
    }

    /// One row: who, what, on which objects, and the answer (`None`: allowed; `Some`:
    /// the end of the 403 message, after the identity and verb).
    struct Row {
        who: Identity,
        verb: Verb,
        plural: &'static str,
        sub: Option<Subresource>,
        name: Option<&'static str>,
        selector: &'static str,
        stored: Option<Value>,
        new: Option<Value>,
        users: Vec<Value>,
        want: Result<(), &'static str>,
    }

    fn row(who: &Identity, verb: Verb, plural: &'static str) -> Row {
        Row {
            who: who.clone(),
            verb,
            plural,
            sub: None,
            name: None,
            selector: "",
            stored: None,
            new: None,
            users: vec![],
            want: Ok(()),
        }
    }

    impl Row {
        fn users(mut self, users: &[&Value]) -> Self {
            self.users = users.iter().map(|u| (*u).clone()).collect();
            self
        }
        fn sub(mut self, s: Subresource) -> Self {
            self.sub = Some(s);
            self
        }
        fn name(mut self, n: &'static str) -> Self {
            self.name = Some(n);
            self
        }
        fn selector(mut self, s: &'static str) -> Self {
            self.selector = s;
            self
        }
        fn stored(mut self, o: Value) -> Self {
            self.stored = Some(o);
            self
        }
        fn writes(mut self, o: Value) -> Self {
            self.new = Some(o);
            self
        }
        fn denied(mut self, message: &'static str) -> Self {
            self.want = Err(message);
            self
        }
    }

    #[test]
    fn the_rules_of_the_design() {
        use Subresource::{Binding, Status};
        use Verb::*;
        let admin = Identity::admin();
        let system = Identity::System;
        let anonymous = Identity::Anonymous;
        let root = Identity::Root;
        let a = Identity::Cluster { name: "a".into() };
        let b = Identity::Cluster { name: "b".into() };
        let n1 = Identity::Node { name: "n1".into() };
        let n2 = Identity::Node { name: "n2".into() };
        // Identities whose names are those of the leader-election Leases.
        use crds::{CLUSTER_CONTROLLERS_LEASE, ROOT_CONTROLLERS_LEASE};
        let leader = Identity::Node {
            name: ROOT_CONTROLLERS_LEASE.into(),
        };
        let leader_cluster = Identity::Cluster {
            name: CLUSTER_CONTROLLERS_LEASE.into(),
        };

        let on_a = instance("x", Some("a"), None);
        let on_a_n1 = instance("x", Some("a"), Some("n1"));
        let on_a_n2 = instance("x", Some("a"), Some("n2"));
        let unbound = instance("x", None, None);
        let mut handed_back = instance("x", None, None);
        handed_back["metadata"]["annotations"] = json!({REJECTED_BY: "a"});
        let mut handed_back_twice = instance("x", None, None);
        handed_back_twice["metadata"]["annotations"] = json!({REJECTED_BY: "c,a"});
        let mut on_a_rejected_by_c = instance("x", Some("a"), None);
        on_a_rejected_by_c["metadata"]["annotations"] = json!({REJECTED_BY: "c"});
        let mut on_a_new_image = on_a_n1.clone();
        on_a_new_image["spec"]["image"] = json!("other");
        let mut handed_back_with_image = handed_back.clone();
        handed_back_with_image["spec"]["image"] = json!("other");
        // The server records the writer in managedFields on every write.
        let mut on_a_n1_recorded = on_a_n1.clone();
        on_a_n1_recorded["metadata"]["managedFields"] = json!([{"manager": "unknown", "operation": "Update", "fieldsV1": {"f:spec": {"f:node": {}}}}]);
        let mut moved_to_b = on_a.clone();
        moved_to_b["spec"]["cluster"] = json!("b");
        let mut on_a_n1_generation_2 = on_a_n1.clone();
        on_a_n1_generation_2["metadata"]["generation"] = json!(2);
        on_a_n1_generation_2["metadata"]["resourceVersion"] = json!("6");

        // Instances whose environment takes values from ConfigMap `conf` and Secret `db`.
        let mut configured_on_a_n1 = on_a_n1.clone();
        configured_on_a_n1["spec"]["template"] = json!({"env": [
            {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "conf", "key": "a"}}},
            {"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
        ]});
        let mut configured_on_b = configured_on_a_n1.clone();
        configured_on_b["spec"]["cluster"] = json!("b");
        configured_on_b["spec"]["node"] = Value::Null;

        let rows = vec![
            // ConfigMaps and Secrets: admins; a cluster or node only what its instances use.
            row(&admin, Get, "secrets").name("db"),
            row(&admin, List, "secrets"),
            row(&a, Get, "secrets").name("db").users(&[&configured_on_a_n1]),
            row(&a, Get, "configmaps").name("conf").users(&[&configured_on_b, &configured_on_a_n1]),
            row(&n1, Get, "secrets").name("db").users(&[&configured_on_a_n1]),
            row(&n1, Get, "configmaps").name("conf").users(&[&configured_on_a_n1]),
            row(&a, Get, "secrets").name("db").users(&[&configured_on_b]).denied(
                r#"secrets "db" is forbidden: User "oakestra:cluster:a" cannot get resource "secrets" in API group "" in the namespace "default": only secrets used by instances assigned to cluster "a" are visible to it"#,
            ),
            row(&a, Get, "secrets").name("other").users(&[&configured_on_a_n1]).denied(
                r#"secrets "other" is forbidden: User "oakestra:cluster:a" cannot get resource "secrets" in API group "" in the namespace "default": only secrets used by instances assigned to cluster "a" are visible to it"#,
            ),
            // A ConfigMap of the same name as a used Secret is not used.
            row(&n1, Get, "configmaps").name("db").users(&[&configured_on_a_n1]).denied(
                r#"configmaps "db" is forbidden: User "oakestra:node:n1" cannot get resource "configmaps" in API group "" in the namespace "default": only configmaps used by instances bound to node "n1" are visible to it"#,
            ),
            row(&n2, Get, "secrets").name("db").users(&[&configured_on_a_n1]).denied(
                r#"secrets "db" is forbidden: User "oakestra:node:n2" cannot get resource "secrets" in API group "" in the namespace "default": only secrets used by instances bound to node "n2" are visible to it"#,
            ),
            row(&n1, List, "secrets").denied(
                r#"secrets is forbidden: User "oakestra:node:n1" cannot list resource "secrets" in API group "" in the namespace "default": a node may not list secrets"#,
            ),
            row(&a, Watch, "configmaps").denied(
                r#"configmaps is forbidden: User "oakestra:cluster:a" cannot watch resource "configmaps" in API group "" in the namespace "default": a cluster may not watch configmaps"#,
            ),
            row(&a, Create, "secrets").writes(named("Secret", "db")).denied(
                r#"secrets "db" is forbidden: User "oakestra:cluster:a" cannot create resource "secrets" in API group "" in the namespace "default": a cluster may not create secrets"#,
            ),
            row(&anonymous, Get, "secrets").name("db").users(&[&configured_on_a_n1]).denied(
                r#"secrets "db" is forbidden: User "system:anonymous" cannot get resource "secrets" in API group "" in the namespace "default": anonymous requests may reach only health and version"#,
            ),
            // Privileged identities: everything, with or without a stored object.
            row(&admin, Delete, "instances").name("x").stored(on_a.clone()),
            row(&admin, Get, "instances").name("x"),
            row(&admin, List, "services"),
            row(&admin, Create, "instances").sub(Binding).name("x").stored(unbound.clone()),
            row(&system, Patch, "clusters").name("b"),
            row(&system, Delete, "nodes").name("n1"),
            row(&system, Watch, "instances"),
            // Anonymous and the root's proxy: nothing.
            row(&anonymous, Get, "instances").name("x").stored(on_a.clone()).denied(
                r#"instances.oakestra.io "x" is forbidden: User "system:anonymous" cannot get resource "instances" in API group "oakestra.io" in the namespace "default": anonymous requests may reach only health and version"#,
            ),
            row(&anonymous, List, "namespaces").denied(
                r#"namespaces is forbidden: User "system:anonymous" cannot list resource "namespaces" in API group "" at the cluster scope: anonymous requests may reach only health and version"#,
            ),
            row(&root, List, "instances").selector("spec.cluster=a").denied(
                r#"instances.oakestra.io is forbidden: User "oakestra:root" cannot list resource "instances" in API group "oakestra.io" in the namespace "default": the root's proxy identity may only read Nodes"#,
            ),
            // The root's proxy reads a cluster's Nodes (for the dashboard), never writes.
            row(&root, Get, "nodes").name("n1"),
            row(&root, List, "nodes"),
            row(&root, Watch, "nodes"),
            row(&root, Patch, "nodes").name("n1").denied(
                r#"nodes.oakestra.io "n1" is forbidden: User "oakestra:root" cannot patch resource "nodes" in API group "oakestra.io" at the cluster scope: the root's proxy identity may only read Nodes"#,
            ),
            row(&root, Get, "nodes").sub(Status).name("n1").denied(
                r#"nodes.oakestra.io "n1" is forbidden: User "oakestra:root" cannot get resource "nodes/status" in API group "oakestra.io" at the cluster scope: the root's proxy identity may only read Nodes"#,
            ),
            // Cluster a: instances assigned to it.
            row(&a, List, "instances").selector("spec.cluster=a"),
            row(&a, Watch, "instances").selector("spec.cluster==a,spec.node!=n1"),
            row(&a, List, "instances").denied(
                r#"instances.oakestra.io is forbidden: User "oakestra:cluster:a" cannot list resource "instances" in API group "oakestra.io" in the namespace "default": the request must select spec.cluster=a (fieldSelector)"#,
            ),
            row(&a, Watch, "instances").selector("spec.cluster=b").denied(
                r#"instances.oakestra.io is forbidden: User "oakestra:cluster:a" cannot watch resource "instances" in API group "oakestra.io" in the namespace "default": the request must select spec.cluster=a (fieldSelector)"#,
            ),
            row(&a, Watch, "instances").selector("spec.cluster!=a").denied(
                r#"instances.oakestra.io is forbidden: User "oakestra:cluster:a" cannot watch resource "instances" in API group "oakestra.io" in the namespace "default": the request must select spec.cluster=a (fieldSelector)"#,
            ),
            row(&a, Get, "instances").name("x").stored(on_a.clone()),
            row(&b, Get, "instances").name("x").stored(on_a.clone()).denied(
                r#"instances.oakestra.io "x" is forbidden: User "oakestra:cluster:b" cannot get resource "instances" in API group "oakestra.io" in the namespace "default": only instances assigned to cluster "b" are visible to it"#,
            ),
            row(&a, Get, "instances").name("x").denied(
                r#"instances.oakestra.io "x" is forbidden: User "oakestra:cluster:a" cannot get resource "instances" in API group "oakestra.io" in the namespace "default": only instances assigned to cluster "a" are visible to it"#,
            ),
            row(&a, Get, "instances").name("x").stored(unbound.clone()).denied(
                r#"instances.oakestra.io "x" is forbidden: User "oakestra:cluster:a" cannot get resource "instances" in API group "oakestra.io" in the namespace "default": only instances assigned to cluster "a" are visible to it"#,
            ),
            row(&a, Patch, "instances").sub(Status).name("x").stored(on_a.clone()).writes(on_a.clone()),
            row(&a, Update, "instances").sub(Status).name("x").stored(on_a.clone()),
            row(&b, Patch, "instances").sub(Status).name("x").stored(on_a.clone()).denied(
                r#"instances.oakestra.io "x" is forbidden: User "oakestra:cluster:b" cannot patch resource "instances/status" in API group "oakestra.io" in the namespace "default": only instances assigned to cluster "b" are visible to it"#,
            ),
            // ... main writes: place on a node, or hand back; nothing else.
            row(&a, Patch, "instances").name("x").stored(on_a.clone()).writes(on_a_n1_generation_2.clone()),
            row(&a, Patch, "instances").name("x").stored(on_a.clone()).writes(on_a_n1_recorded.clone()),
            row(&a, Update, "instances").name("x").stored(on_a_n1.clone()).writes(on_a_n2.clone()),
            row(&a, Patch, "instances").name("x").stored(on_a.clone()),
            row(&a, Patch, "instances").name("x").stored(on_a_n1.clone()).writes(handed_back.clone()),
            row(&a, Patch, "instances").name("x").stored(on_a_rejected_by_c.clone()).writes(handed_back_twice.clone()),
            row(&a, Patch, "instances").name("x").stored(on_a_n1.clone()).writes(on_a_new_image.clone()).denied(
                r#"instances.oakestra.io "x" is forbidden: User "oakestra:cluster:a" cannot patch resource "instances" in API group "oakestra.io" in the namespace "default": a cluster may change only spec.node of its instances, or hand one back (spec.cluster and spec.node unset, the annotation oakestra.io/rejected-by gaining "a")"#,
            ),
            row(&a, Patch, "instances").name("x").stored(on_a.clone()).writes(moved_to_b.clone()).denied(
                r#"instances.oakestra.io "x" is forbidden: User "oakestra:cluster:a" cannot patch resource "instances" in API group "oakestra.io" in the namespace "default": a cluster may change only spec.node of its instances, or hand one back (spec.cluster and spec.node unset, the annotation oakestra.io/rejected-by gaining "a")"#,
            ),
            row(&a, Patch, "instances").name("x").stored(on_a.clone()).writes(unbound.clone()).denied(
                r#"instances.oakestra.io "x" is forbidden: User "oakestra:cluster:a" cannot patch resource "instances" in API group "oakestra.io" in the namespace "default": a cluster may change only spec.node of its instances, or hand one back (spec.cluster and spec.node unset, the annotation oakestra.io/rejected-by gaining "a")"#,
            ),
            row(&a, Patch, "instances").name("x").stored(on_a.clone()).writes(handed_back_with_image.clone()).denied(
                r#"instances.oakestra.io "x" is forbidden: User "oakestra:cluster:a" cannot patch resource "instances" in API group "oakestra.io" in the namespace "default": a cluster may change only spec.node of its instances, or hand one back (spec.cluster and spec.node unset, the annotation oakestra.io/rejected-by gaining "a")"#,
            ),
            row(&b, Patch, "instances").name("x").stored(on_a.clone()).writes(handed_back.clone()).denied(
                r#"instances.oakestra.io "x" is forbidden: User "oakestra:cluster:b" cannot patch resource "instances" in API group "oakestra.io" in the namespace "default": only instances assigned to cluster "b" are visible to it"#,
            ),
            row(&a, Update, "instances").name("x").stored(unbound.clone()).writes(on_a.clone()).denied(
                r#"instances.oakestra.io "x" is forbidden: User "oakestra:cluster:a" cannot update resource "instances" in API group "oakestra.io" in the namespace "default": only instances assigned to cluster "a" are visible to it"#,
            ),
            row(&a, Create, "instances").writes(on_a.clone()).denied(
                r#"instances.oakestra.io "x" is forbidden: User "oakestra:cluster:a" cannot create resource "instances" in API group "oakestra.io" in the namespace "default": a cluster may not create instances"#,
            ),
            row(&a, Delete, "instances").name("x").stored(on_a.clone()).denied(
                r#"instances.oakestra.io "x" is forbidden: User "oakestra:cluster:a" cannot delete resource "instances" in API group "oakestra.io" in the namespace "default": a cluster may not delete instances"#,
            ),
            row(&a, Create, "instances").sub(Binding).name("x").stored(on_a.clone()).denied(
                r#"instances.oakestra.io "x" is forbidden: User "oakestra:cluster:a" cannot create resource "instances/binding" in API group "oakestra.io" in the namespace "default": a cluster may not create instances/binding"#,
            ),
            // ... its own Cluster object.
            row(&a, Create, "clusters").writes(named("Cluster", "a")),
            row(&a, Get, "clusters").name("a"),
            row(&a, Update, "clusters").name("a").stored(named("Cluster", "a")),
            row(&a, Patch, "clusters").sub(Status).name("a").stored(named("Cluster", "a")),
            row(&a, Create, "clusters").writes(named("Cluster", "b")).denied(
                r#"clusters.oakestra.io "b" is forbidden: User "oakestra:cluster:a" cannot create resource "clusters" in API group "oakestra.io" at the cluster scope: a cluster may write only its own Cluster, "a""#,
            ),
            // ... reads the other Clusters (their subnets and gateways).
            row(&a, Get, "clusters").name("b").stored(named("Cluster", "b")),
            row(&a, Patch, "clusters").sub(Status).name("b").denied(
                r#"clusters.oakestra.io "b" is forbidden: User "oakestra:cluster:a" cannot patch resource "clusters/status" in API group "oakestra.io" at the cluster scope: a cluster may write only its own Cluster, "a""#,
            ),
            row(&a, Delete, "clusters").name("a").denied(
                r#"clusters.oakestra.io "a" is forbidden: User "oakestra:cluster:a" cannot delete resource "clusters" in API group "oakestra.io" at the cluster scope: a cluster may not delete clusters"#,
            ),
            row(&a, List, "clusters"),
            // ... events: create only; nothing of services, nodes, leases.
            row(&a, Create, "events").writes(named("Event", "e")),
            // ... reads every Service's endpoints (its nodes route to other clusters).
            row(&a, List, "endpoints"),
            row(&a, Watch, "endpoints"),
            row(&a, Update, "endpoints").name("web").denied(
                r#"endpoints.oakestra.io "web" is forbidden: User "oakestra:cluster:a" cannot update resource "endpoints" in API group "oakestra.io" in the namespace "default": a cluster may not update endpoints"#,
            ),
            row(&a, List, "events").denied(
                r#"events.oakestra.io is forbidden: User "oakestra:cluster:a" cannot list resource "events" in API group "oakestra.io" in the namespace "default": a cluster may not list events"#,
            ),
            row(&a, Get, "services").name("web").denied(
                r#"services.oakestra.io "web" is forbidden: User "oakestra:cluster:a" cannot get resource "services" in API group "oakestra.io" in the namespace "default": a cluster may not get services"#,
            ),
            row(&a, Get, "nodes").name("n1").denied(
                r#"nodes.oakestra.io "n1" is forbidden: User "oakestra:cluster:a" cannot get resource "nodes" in API group "oakestra.io" at the cluster scope: a cluster may not get nodes"#,
            ),
            // Node n1: instances bound to it.
            row(&n1, List, "instances").selector("spec.node=n1"),
            row(&n1, Watch, "instances").selector("metadata.name=x,spec.node=n1"),
            row(&n1, List, "instances").denied(
                r#"instances.oakestra.io is forbidden: User "oakestra:node:n1" cannot list resource "instances" in API group "oakestra.io" in the namespace "default": the request must select spec.node=n1 (fieldSelector)"#,
            ),
            row(&n1, Watch, "instances").selector("spec.node=n2").denied(
                r#"instances.oakestra.io is forbidden: User "oakestra:node:n1" cannot watch resource "instances" in API group "oakestra.io" in the namespace "default": the request must select spec.node=n1 (fieldSelector)"#,
            ),
            row(&n1, Get, "instances").name("x").stored(on_a_n1.clone()),
            row(&n1, Get, "instances").sub(Status).name("x").stored(on_a_n1.clone()),
            row(&n1, Patch, "instances").sub(Status).name("x").stored(on_a_n1.clone()).writes(on_a_n1.clone()),
            row(&n1, Update, "instances").sub(Status).name("x").stored(on_a_n1.clone()),
            row(&n2, Get, "instances").name("x").stored(on_a_n1.clone()).denied(
                r#"instances.oakestra.io "x" is forbidden: User "oakestra:node:n2" cannot get resource "instances" in API group "oakestra.io" in the namespace "default": only instances bound to node "n2" are visible to it"#,
            ),
            row(&n1, Get, "instances").name("x").denied(
                r#"instances.oakestra.io "x" is forbidden: User "oakestra:node:n1" cannot get resource "instances" in API group "oakestra.io" in the namespace "default": only instances bound to node "n1" are visible to it"#,
            ),
            row(&n1, Get, "instances").name("x").stored(on_a.clone()).denied(
                r#"instances.oakestra.io "x" is forbidden: User "oakestra:node:n1" cannot get resource "instances" in API group "oakestra.io" in the namespace "default": only instances bound to node "n1" are visible to it"#,
            ),
            row(&n1, Patch, "instances").sub(Status).name("x").stored(on_a_n2.clone()).denied(
                r#"instances.oakestra.io "x" is forbidden: User "oakestra:node:n1" cannot patch resource "instances/status" in API group "oakestra.io" in the namespace "default": only instances bound to node "n1" are visible to it"#,
            ),
            row(&n1, Patch, "instances").name("x").stored(on_a_n1.clone()).writes(on_a_n1.clone()).denied(
                r#"instances.oakestra.io "x" is forbidden: User "oakestra:node:n1" cannot patch resource "instances" in API group "oakestra.io" in the namespace "default": a node may not patch instances"#,
            ),
            row(&n1, Create, "instances").writes(on_a_n1.clone()).denied(
                r#"instances.oakestra.io "x" is forbidden: User "oakestra:node:n1" cannot create resource "instances" in API group "oakestra.io" in the namespace "default": a node may not create instances"#,
            ),
            row(&n1, Create, "instances").sub(Binding).name("x").stored(unbound.clone()).denied(
                r#"instances.oakestra.io "x" is forbidden: User "oakestra:node:n1" cannot create resource "instances/binding" in API group "oakestra.io" in the namespace "default": a node may not create instances/binding"#,
            ),
            row(&n1, Delete, "instances").name("x").stored(on_a_n1.clone()).denied(
                r#"instances.oakestra.io "x" is forbidden: User "oakestra:node:n1" cannot delete resource "instances" in API group "oakestra.io" in the namespace "default": a node may not delete instances"#,
            ),
            // ... its own Node and Lease.
            row(&n1, Create, "nodes").writes(named("Node", "n1")),
            row(&n1, Get, "nodes").name("n1"),
            row(&n1, Patch, "nodes").name("n1").stored(named("Node", "n1")),
            row(&n1, Update, "nodes").sub(Status).name("n1").stored(named("Node", "n1")),
            // ... reads the other Nodes (its overlay peers), writes only its own.
            row(&n1, Get, "nodes").name("n2").stored(named("Node", "n2")),
            row(&n1, Patch, "nodes").name("n2").stored(named("Node", "n2")).denied(
                r#"nodes.oakestra.io "n2" is forbidden: User "oakestra:node:n1" cannot patch resource "nodes" in API group "oakestra.io" at the cluster scope: a node may reach only its own Node, "n1""#,
            ),
            row(&n1, Create, "nodes").writes(named("Node", "n2")).denied(
                r#"nodes.oakestra.io "n2" is forbidden: User "oakestra:node:n1" cannot create resource "nodes" in API group "oakestra.io" at the cluster scope: a node may reach only its own Node, "n1""#,
            ),
            row(&n1, Patch, "nodes").sub(Status).name("n2").denied(
                r#"nodes.oakestra.io "n2" is forbidden: User "oakestra:node:n1" cannot patch resource "nodes/status" in API group "oakestra.io" at the cluster scope: a node may reach only its own Node, "n1""#,
            ),
            row(&n1, Delete, "nodes").name("n1").denied(
                r#"nodes.oakestra.io "n1" is forbidden: User "oakestra:node:n1" cannot delete resource "nodes" in API group "oakestra.io" at the cluster scope: a node may not delete nodes"#,
            ),
            row(&n1, List, "nodes"),
            row(&n1, Watch, "nodes"),
            // ... every Service's endpoints, and the clusters' locations, for its rules.
            row(&n1, List, "endpoints"),
            row(&n1, Watch, "endpoints"),
            row(&n1, Patch, "endpoints").name("web").denied(
                r#"endpoints.oakestra.io "web" is forbidden: User "oakestra:node:n1" cannot patch resource "endpoints" in API group "oakestra.io" in the namespace "default": a node may not patch endpoints"#,
            ),
            row(&n1, Watch, "clusters"),
            row(&n1, Create, "leases").writes(named("Lease", "n1")),
            row(&n1, Get, "leases").name("n1"),
            row(&n1, Update, "leases").name("n1").stored(named("Lease", "n1")),
            row(&n1, Patch, "leases").name("n1").stored(named("Lease", "n1")),
            row(&n1, Patch, "leases").name("n2").stored(named("Lease", "n2")).denied(
                r#"leases.oakestra.io "n2" is forbidden: User "oakestra:node:n1" cannot patch resource "leases" in API group "oakestra.io" at the cluster scope: a node may reach only its own Lease, "n1""#,
            ),
            // ... never a leader-election Lease, even one of its own name.
            row(&leader, Create, "leases").writes(named("Lease", ROOT_CONTROLLERS_LEASE)).denied(
                r#"leases.oakestra.io "oakestra-root-controllers" is forbidden: User "oakestra:node:oakestra-root-controllers" cannot create resource "leases" in API group "oakestra.io" at the cluster scope: "oakestra-root-controllers" is the controllers' leader-election Lease; only they and administrators may reach it"#,
            ),
            row(&leader, Update, "leases").name(ROOT_CONTROLLERS_LEASE).stored(named("Lease", ROOT_CONTROLLERS_LEASE)).denied(
                r#"leases.oakestra.io "oakestra-root-controllers" is forbidden: User "oakestra:node:oakestra-root-controllers" cannot update resource "leases" in API group "oakestra.io" at the cluster scope: "oakestra-root-controllers" is the controllers' leader-election Lease; only they and administrators may reach it"#,
            ),
            row(&leader, Patch, "leases").name(ROOT_CONTROLLERS_LEASE).stored(named("Lease", ROOT_CONTROLLERS_LEASE)).denied(
                r#"leases.oakestra.io "oakestra-root-controllers" is forbidden: User "oakestra:node:oakestra-root-controllers" cannot patch resource "leases" in API group "oakestra.io" at the cluster scope: "oakestra-root-controllers" is the controllers' leader-election Lease; only they and administrators may reach it"#,
            ),
            row(&leader, Delete, "leases").name(ROOT_CONTROLLERS_LEASE).stored(named("Lease", ROOT_CONTROLLERS_LEASE)).denied(
                r#"leases.oakestra.io "oakestra-root-controllers" is forbidden: User "oakestra:node:oakestra-root-controllers" cannot delete resource "leases" in API group "oakestra.io" at the cluster scope: "oakestra-root-controllers" is the controllers' leader-election Lease; only they and administrators may reach it"#,
            ),
            row(&n1, Update, "leases").name(CLUSTER_CONTROLLERS_LEASE).stored(named("Lease", CLUSTER_CONTROLLERS_LEASE)).denied(
                r#"leases.oakestra.io "oakestra-cluster-controllers" is forbidden: User "oakestra:node:n1" cannot update resource "leases" in API group "oakestra.io" at the cluster scope: "oakestra-cluster-controllers" is the controllers' leader-election Lease; only they and administrators may reach it"#,
            ),
            row(&n1, Get, "leases").name(CLUSTER_CONTROLLERS_LEASE).denied(
                r#"leases.oakestra.io "oakestra-cluster-controllers" is forbidden: User "oakestra:node:n1" cannot get resource "leases" in API group "oakestra.io" at the cluster scope: "oakestra-cluster-controllers" is the controllers' leader-election Lease; only they and administrators may reach it"#,
            ),
            row(&leader_cluster, Create, "leases").writes(named("Lease", CLUSTER_CONTROLLERS_LEASE)).denied(
                r#"leases.oakestra.io "oakestra-cluster-controllers" is forbidden: User "oakestra:cluster:oakestra-cluster-controllers" cannot create resource "leases" in API group "oakestra.io" at the cluster scope: "oakestra-cluster-controllers" is the controllers' leader-election Lease; only they and administrators may reach it"#,
            ),
            row(&leader_cluster, Delete, "leases").name(CLUSTER_CONTROLLERS_LEASE).denied(
                r#"leases.oakestra.io "oakestra-cluster-controllers" is forbidden: User "oakestra:cluster:oakestra-cluster-controllers" cannot delete resource "leases" in API group "oakestra.io" at the cluster scope: "oakestra-cluster-controllers" is the controllers' leader-election Lease; only they and administrators may reach it"#,
            ),
            row(&a, Update, "leases").name("a").denied(
                r#"leases.oakestra.io "a" is forbidden: User "oakestra:cluster:a" cannot update resource "leases" in API group "oakestra.io" at the cluster scope: a cluster may not update leases"#,
            ),
            row(&admin, Update, "leases").name(ROOT_CONTROLLERS_LEASE).stored(named("Lease", ROOT_CONTROLLERS_LEASE)),
            row(&system, Create, "leases").writes(named("Lease", CLUSTER_CONTROLLERS_LEASE)),
            row(&n1, Delete, "leases").name("n1").denied(
                r#"leases.oakestra.io "n1" is forbidden: User "oakestra:node:n1" cannot delete resource "leases" in API group "oakestra.io" at the cluster scope: a node may not delete leases"#,
            ),
            // ... events: create only; nothing of services or clusters.
            row(&n1, Create, "events").writes(named("Event", "e")),
            row(&n1, Delete, "events").name("e").denied(
                r#"events.oakestra.io "e" is forbidden: User "oakestra:node:n1" cannot delete resource "events" in API group "oakestra.io" in the namespace "default": a node may not delete events"#,
            ),
            row(&n1, List, "services").denied(
                r#"services.oakestra.io is forbidden: User "oakestra:node:n1" cannot list resource "services" in API group "oakestra.io" in the namespace "default": a node may not list services"#,
            ),
            row(&n1, Get, "clusters").name("a"),
            row(&n1, Patch, "clusters").name("a").denied(
                r#"clusters.oakestra.io "a" is forbidden: User "oakestra:node:n1" cannot patch resource "clusters" in API group "oakestra.io" at the cluster scope: a node may not patch clusters"#,
            ),
        ];
        assert!(rows.len() > 80, "{} rows", rows.len());
        for (i, r) in rows.iter().enumerate() {
            let kind = kind(r.plural);
            let request = RequestAttributes {
                verb: r.verb,
                kind,
                subresource: r.sub,
                namespace: kind.namespaced.then_some("default"),
                name: r.name,
                field_selector: r.selector,
                users: &r.users,
            };
            let got = authorize(&r.who, &request, r.stored.as_ref(), r.new.as_ref());
            let got = got.as_ref().map_err(|f| f.message.as_str()).copied();
            assert_eq!(
                got,
                r.want,
                "row {i}: {} {} {}{} {:?}",
                r.who,
                r.verb.name(),
                r.plural,
                r.sub.map(|s| format!("/{}", s.name())).unwrap_or_default(),
                r.name
            );
        }
    }

    #[test]
    fn forbidden_names_the_object_group_and_resource() {
        let request = RequestAttributes {
            verb: Verb::Get,
            kind: kind("instances"),
            subresource: None,
            namespace: Some("default"),
            name: Some("x"),
            field_selector: "",
            users: &[],
        };
        let f = authorize(&Identity::Node { name: "n1".into() }, &request, None, None).unwrap_err();
        assert_eq!(
            (f.name.as_str(), f.group.as_str(), f.plural.as_str()),
            ("x", "oakestra.io", "instances")
        );
    }

    #[test]
    fn only_administrators_read_the_snapshot() {
        let cases = [
            (Identity::System, true),
            (Identity::admin(), true),
            (Identity::Cluster { name: "a".into() }, false),
            (Identity::Node { name: "n1".into() }, false),
            (Identity::Root, false),
            (Identity::Anonymous, false),
        ];
        for (who, allowed) in cases {
            let got = authorize_snapshot(&who);
            assert_eq!(got.is_ok(), allowed, "{who:?}: {got:?}");
            if let Err(f) = got {
                assert!(
                    f.message
                        .contains(&format!("User {:?} cannot get path", who.user())),
                    "{}",
                    f.message
                );
            }
        }
    }
}
